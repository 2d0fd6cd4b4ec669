//! `RootfsView`: an image's layers flattened into one index path -> entry, the way overlayfs
//! would show them, without extracting anything.
//!
//! Each layer is streamed exactly once: its blob is hashed (checked against the manifest
//! digest), decompressed, hashed again (checked against the config's diff_id) and parsed as
//! tar. For every regular file the index records where its bytes are: inside the blob itself
//! for uncompressed layers (read later by offset), or inside a decompressed copy of the
//! layer written to a private temp file during that same pass. Memory holds only the index.
//!
//! Image paths are keys of the index, never host paths: an entry named `../x` or `/x`
//! is rejected (a well-formed layer never has one), symlink targets are stored as written
//! and only resolved by [`minify_model::resolve`] inside the image root, and a hardlink
//! must point at a file already in the image.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::sync::Arc;

use minify_model::{Entry, EntryKind, ImagePath, Rootfs};

use crate::Digest;
use crate::hashio::{HashReader, RangeReader, SharedHashReader};
use crate::leftovers::TempKind;
use crate::source::{Compression, LayerInfo, SourceImage};
use crate::targuard::TarGuard;

/// Linux's `PATH_MAX`: no container can open a longer path, so no layer needs one. It also
/// bounds a path's depth (2048 components at most) and everything built from one path.
pub const MAX_PATH_BYTES: usize = 4096;
/// Linux's `NAME_MAX`, for one component.
pub const MAX_NAME_BYTES: usize = 255;
/// A pax header, GNU long name or GNU long link record: the tar reader holds each whole.
pub const MAX_EXTENSION_BYTES: u64 = 1 << 20;
/// Linux's `XATTR_SIZE_MAX`, for one xattr value.
pub const MAX_XATTR_VALUE: usize = 64 << 10;
/// All xattrs read from one image together (names and values).
pub const MAX_XATTR_TOTAL: u64 = 16 << 20;
/// Entries in one image's index at a time. Each takes about 350 bytes of memory (a 192-byte
/// node, its name and child list, and the node vector's growth), so the index of any image
/// stays near 350 MB, under the 512 MiB the hostile-input corpus runs in; the largest
/// images seen hold a few hundred thousand files.
pub const MAX_ENTRIES: u64 = 1_000_000;

/// Where a regular file's bytes are: `offset` into data file number `file`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DataLoc {
    pub file: u32,
    pub offset: u64,
}

/// One entry of the index: a node of the path tree. Each node stores only its own name;
/// full paths are built on demand. A flat map keyed by full path stores every ancestor of a
/// deep entry as its own full string, so memory grew with the square of path depth (a 1 MB
/// path of 500k components needed terabytes).
#[derive(Clone, Debug)]
struct Node {
    /// The last component ("" for the root).
    name: Box<str>,
    parent: NodeId,
    /// Components from the root (at most 2048, from [`MAX_PATH_BYTES`]).
    depth: u16,
    children: Children,
    entry: Entry,
    /// Bytes of a regular file or hardlink: where, and how many.
    data: Option<(DataLoc, u64)>,
    /// The layer that last defined (or needed) this entry; whiteouts only remove entries
    /// of lower layers.
    layer: usize,
}

type NodeId = u32;
const ROOT: NodeId = 0;

/// A directory's children by name, sorted. Most directories of a hostile deep tree hold one
/// child, and a `BTreeMap` allocates a whole leaf (some 250 bytes) for it: small sets are a
/// sorted `Vec` sized exactly, large ones a `BTreeMap` (inserting into a big `Vec` in random
/// order would cost its square).
#[derive(Clone, Debug)]
enum Children {
    Small(Vec<(Box<str>, NodeId)>),
    Large(BTreeMap<Box<str>, NodeId>),
}

const SMALL_CHILDREN: usize = 32;

impl Default for Children {
    fn default() -> Self {
        Children::Small(Vec::new())
    }
}

impl Children {
    fn get(&self, name: &str) -> Option<NodeId> {
        match self {
            Children::Small(v) => v
                .binary_search_by(|(n, _)| (**n).cmp(name))
                .ok()
                .map(|i| v[i].1),
            Children::Large(m) => m.get(name).copied(),
        }
    }

    fn insert(&mut self, name: Box<str>, id: NodeId) {
        match self {
            Children::Small(v) => match v.binary_search_by(|(n, _)| (**n).cmp(&name)) {
                Ok(i) => v[i].1 = id,
                Err(i) if v.len() < SMALL_CHILDREN => {
                    v.reserve_exact(1);
                    v.insert(i, (name, id));
                }
                Err(_) => {
                    let mut m: BTreeMap<Box<str>, NodeId> = std::mem::take(v).into_iter().collect();
                    m.insert(name, id);
                    *self = Children::Large(m);
                }
            },
            Children::Large(m) => {
                m.insert(name, id);
            }
        }
    }

    fn remove(&mut self, name: &str) {
        match self {
            Children::Small(v) => {
                if let Ok(i) = v.binary_search_by(|(n, _)| (**n).cmp(name)) {
                    v.remove(i);
                }
            }
            Children::Large(m) => {
                m.remove(name);
            }
        }
    }

    /// Names and ids, sorted by name.
    fn iter(&self) -> Box<dyn Iterator<Item = (&str, NodeId)> + '_> {
        match self {
            Children::Small(v) => Box::new(v.iter().map(|(n, id)| (&**n, *id))),
            Children::Large(m) => Box::new(m.iter().map(|(n, id)| (&**n, *id))),
        }
    }

    fn ids(self) -> Vec<NodeId> {
        match self {
            Children::Small(v) => v.into_iter().map(|(_, id)| id).collect(),
            Children::Large(m) => m.into_values().collect(),
        }
    }
}

/// What one layer held, measured while streaming it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerStats {
    pub index: usize,
    /// The blob digest, as computed (equal to the manifest's when it gave one).
    pub digest: Digest,
    /// The uncompressed digest, as computed (equal to the config's diff_id).
    pub diff_id: Digest,
    /// Bytes as stored.
    pub size: u64,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: u64,
    pub compression: Compression,
    /// Tar entries in the layer (whiteouts included).
    pub entries: u64,
}

/// Bytes of regular files under a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirSize {
    pub path: ImagePath,
    /// Content bytes of the regular files below it (hardlinked content counted once).
    pub bytes: u64,
    /// Regular files below it.
    pub files: u64,
}

/// Why layers could not be flattened.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// Reading or decompressing a layer failed (corrupt or truncated stream, bad tar).
    #[error("layer {index} ({name}, {compression}): {}", one_line(source))]
    LayerRead {
        index: usize,
        name: String,
        compression: Compression,
        source: io::Error,
    },
    /// The blob's digest is not the one the manifest gives.
    #[error("layer {index} ({name}): digest {actual} does not match the manifest's {expected}")]
    DigestMismatch {
        index: usize,
        name: String,
        expected: Digest,
        actual: Digest,
    },
    /// The uncompressed layer's digest is not the config's diff_id.
    #[error(
        "layer {index} ({name}): uncompressed digest {actual} does not match the config's diff_id {expected}"
    )]
    DiffIdMismatch {
        index: usize,
        name: String,
        expected: Digest,
        actual: Digest,
    },
    /// A tar entry named with `..` or an absolute path.
    #[error(
        "layer {index} ({name}): entry {entry:?} escapes the image root (absolute or '..' name)"
    )]
    UnsafeName {
        index: usize,
        name: String,
        entry: String,
    },
    /// A hardlink whose target is outside the image or not (yet) in it.
    #[error("layer {index} ({name}): hardlink {entry:?} points to {target:?}, {why}")]
    BadHardlink {
        index: usize,
        name: String,
        entry: ImagePath,
        target: String,
        why: &'static str,
    },
    /// A name or link target that is not UTF-8.
    #[error("layer {index} ({name}): entry name {entry:?} is not UTF-8")]
    NotUtf8 {
        index: usize,
        name: String,
        entry: String,
    },
    /// An entry type minify does not handle.
    #[error("layer {index} ({name}): entry {entry:?} has unsupported tar type {kind:?}")]
    Unsupported {
        index: usize,
        name: String,
        entry: ImagePath,
        kind: String,
    },
    /// A name or link target longer than Linux allows (so no container could have it).
    #[error(
        "layer {index} ({name}): entry {entry} has {what} of {len} bytes, more than the {limit} Linux allows"
    )]
    TooLong {
        index: usize,
        name: String,
        /// The start of the name, escaped.
        entry: String,
        what: &'static str,
        len: usize,
        limit: usize,
    },
    /// The image needs more of something than minify holds in memory for one image.
    #[error("layer {index} ({name}): {what} exceed the limit of {limit} per image")]
    Limit {
        index: usize,
        name: String,
        what: &'static str,
        limit: u64,
    },
    /// The private temp dir for decompressed layers.
    #[error("temporary file {path}: {source}")]
    Temp { path: String, source: io::Error },
}

/// `e`'s message with control characters escaped: the tar reader quotes a bad header's
/// bytes, newlines and all, and an error must stay one line.
pub(crate) fn one_line(e: &impl std::fmt::Display) -> String {
    let s = e.to_string();
    if !s.chars().any(char::is_control) {
        return s;
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// An image's flattened filesystem (implements [`Rootfs`]).
pub struct RootfsView {
    /// The path tree; slot [`ROOT`] is `/`. Removed nodes are `None` and their slots reused.
    nodes: Vec<Option<Node>>,
    free: Vec<NodeId>,
    live: usize,
    xattr_bytes: u64,
    files: Vec<Arc<File>>,
    layers: Vec<LayerStats>,
    env: Vec<String>,
    tmp: tempfile::TempDir,
}

impl std::fmt::Debug for RootfsView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootfsView")
            .field("entries", &self.live)
            .field("layers", &self.layers)
            .finish_non_exhaustive()
    }
}

/// Passes everything read through into a writer too (the decompressed copy of a layer).
struct Tee<R, W> {
    inner: R,
    out: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

fn child_prefix(p: &str) -> String {
    if p == "/" {
        "/".to_owned()
    } else {
        format!("{p}/")
    }
}

fn synthetic_dir(layer: usize) -> Node {
    Node {
        name: "".into(),
        parent: ROOT,
        depth: 0,
        children: Children::default(),
        entry: Entry {
            kind: EntryKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            xattrs: BTreeMap::new(),
        },
        data: None,
        layer,
    }
}

struct LayerCtx<'a> {
    info: &'a LayerInfo,
    file: u32,
    base: u64,
}

impl LayerCtx<'_> {
    fn read_err(&self, source: io::Error) -> ViewError {
        ViewError::LayerRead {
            index: self.info.index,
            name: self.info.name().to_owned(),
            compression: self.info.compression,
            source,
        }
    }
}

impl RootfsView {
    /// Stream every layer of `image` once and build the index.
    pub fn build(image: &SourceImage) -> Result<RootfsView, ViewError> {
        let tmp = TempKind::View.make().map_err(|source| ViewError::Temp {
            path: TempKind::View.pattern(),
            source,
        })?;
        let mut view = RootfsView {
            nodes: vec![Some(synthetic_dir(0))],
            free: Vec::new(),
            live: 1,
            xattr_bytes: 0,
            files: Vec::new(),
            layers: Vec::new(),
            env: image.config().env.clone(),
            tmp,
        };
        for info in image.layers() {
            let stats = view.apply_layer(info)?;
            view.layers.push(stats);
        }
        view.normalise_hardlinks();
        Ok(view)
    }

    fn apply_layer(&mut self, info: &LayerInfo) -> Result<LayerStats, ViewError> {
        let file_no = self.files.len() as u32;
        let (entries, digest, size, diff_id, usize_) = match info.compression {
            Compression::None => {
                let raw = HashReader::new(info.blob.reader());
                self.files.push(info.blob.file.clone());
                let ctx = LayerCtx {
                    info,
                    file: file_no,
                    base: info.blob.offset,
                };
                let (entries, raw) = self.index_tar(&ctx, raw)?;
                let (d, n, _) = raw.finish().map_err(|e| ctx.read_err(e))?;
                (entries, d.clone(), n, d, n)
            }
            Compression::Gzip | Compression::Zstd => {
                let path = self.tmp.path().join(format!("layer-{}.tar", info.index));
                let tmp_err = |source| ViewError::Temp {
                    path: path.display().to_string(),
                    source,
                };
                let out = File::options()
                    .create_new(true)
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(tmp_err)?;
                let copy = out.try_clone().map_err(tmp_err)?;
                self.files.push(Arc::new(out));
                let ctx = LayerCtx {
                    info,
                    file: file_no,
                    base: 0,
                };
                let (raw, raw_hash) = SharedHashReader::new(info.blob.reader());
                let buffered = BufReader::with_capacity(256 << 10, raw);
                let writer = BufWriter::with_capacity(256 << 10, copy);
                let decoder: Box<dyn Read> = if info.compression == Compression::Gzip {
                    Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
                } else {
                    Box::new(
                        zstd::stream::read::Decoder::with_buffer(buffered)
                            .map_err(|e| ctx.read_err(e))?,
                    )
                };
                let tee = Tee {
                    inner: decoder,
                    out: writer,
                };
                let plain = HashReader::new(tee);
                let (entries, plain) = self.index_tar(&ctx, plain)?;
                let (diff, n, tee) = plain.finish().map_err(|e| ctx.read_err(e))?;
                let Tee { inner, mut out } = tee;
                out.flush().map_err(|e| ctx.read_err(e))?;
                drop(inner);
                // The blob digest covers every stored byte, also any the decoder left
                // unread after the end of its stream.
                let seen = raw_hash.count();
                let rest = RangeReader::new(
                    &info.blob.file,
                    info.blob.offset + seen,
                    info.blob.len - seen,
                );
                let (d, sz) = raw_hash.finish(rest).map_err(|e| ctx.read_err(e))?;
                (entries, d, sz, diff, n)
            }
        };
        if let Some(expected) = &info.digest
            && *expected != digest
        {
            return Err(ViewError::DigestMismatch {
                index: info.index,
                name: info.name().to_owned(),
                expected: expected.clone(),
                actual: digest,
            });
        }
        if diff_id != info.diff_id {
            return Err(ViewError::DiffIdMismatch {
                index: info.index,
                name: info.name().to_owned(),
                expected: info.diff_id.clone(),
                actual: diff_id,
            });
        }
        Ok(LayerStats {
            index: info.index,
            digest,
            diff_id,
            size,
            uncompressed_size: usize_,
            compression: info.compression,
            entries,
        })
    }

    /// Parse one layer's tar stream into the index; returns the entry count and the reader
    /// (so the caller can drain and digest the rest).
    fn index_tar<R: Read>(&mut self, ctx: &LayerCtx<'_>, reader: R) -> Result<(u64, R), ViewError> {
        let layer = ctx.info.index;
        let lname = || ctx.info.name().to_owned();
        let mut ar = tar::Archive::new(TarGuard::new(reader, MAX_EXTENSION_BYTES));
        let mut count = 0u64;
        {
            let entries = ar.entries().map_err(|e| ctx.read_err(e))?;
            for entry in entries {
                let mut entry = entry.map_err(|e| ctx.read_err(e))?;
                count += 1;
                let raw_name = entry.path_bytes().into_owned();
                let too_long = |what, len, limit, raw: &[u8]| ViewError::TooLong {
                    index: layer,
                    name: lname(),
                    entry: format!(
                        "{:?}...",
                        String::from_utf8_lossy(&raw[..raw.len().min(64)])
                    ),
                    what,
                    len,
                    limit,
                };
                if raw_name.len() > MAX_PATH_BYTES {
                    return Err(too_long(
                        "a name",
                        raw_name.len(),
                        MAX_PATH_BYTES,
                        &raw_name,
                    ));
                }
                if let Some(c) = raw_name
                    .split(|&b| b == b'/')
                    .find(|c| c.len() > MAX_NAME_BYTES)
                {
                    return Err(too_long("a component", c.len(), MAX_NAME_BYTES, &raw_name));
                }
                let name = String::from_utf8(raw_name).map_err(|e| ViewError::NotUtf8 {
                    index: layer,
                    name: lname(),
                    entry: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                })?;
                let ty = entry.header().entry_type();
                if matches!(ty, tar::EntryType::XGlobalHeader) {
                    continue;
                }
                let path =
                    ImagePath::from_tar_name(&name).ok_or_else(|| ViewError::UnsafeName {
                        index: layer,
                        name: lname(),
                        entry: name.clone(),
                    })?;

                // Whiteouts (the OCI layer spec's AUFS-style markers).
                if let Some(base) = path.file_name()
                    && let Some(hidden) = base.strip_prefix(".wh.")
                {
                    let parent = path.parent().unwrap_or_else(ImagePath::root);
                    if hidden == ".wh..opq" {
                        self.remove_below(&parent, layer, false);
                        self.ensure_dir(parent.components(), layer);
                    } else if !hidden.starts_with(".wh.") && !matches!(hidden, "" | "." | "..") {
                        // `.wh..` and `.wh...` name no entry: joined, they would whiteout
                        // the directory itself or its parent (up to the whole lower image).
                        let target = parent.join(hidden);
                        self.remove_below(&target, layer, true);
                        self.ensure_dir(parent.components(), layer);
                    }
                    continue;
                }

                let mut xattrs = BTreeMap::new();
                let mut pax_uid = None;
                let mut pax_group = None;
                let mut pax_mtime = None;
                if let Some(exts) = entry.pax_extensions().map_err(|e| ctx.read_err(e))? {
                    for ext in exts {
                        let ext = ext.map_err(|e| ctx.read_err(e))?;
                        let Ok(key) = ext.key() else { continue };
                        if let Some(x) = key.strip_prefix("SCHILY.xattr.") {
                            let value = ext.value_bytes();
                            if value.len() > MAX_XATTR_VALUE {
                                return Err(ViewError::TooLong {
                                    index: layer,
                                    name: lname(),
                                    entry: format!("{name:?}"),
                                    what: "an xattr value",
                                    len: value.len(),
                                    limit: MAX_XATTR_VALUE,
                                });
                            }
                            self.xattr_bytes += (x.len() + value.len()) as u64;
                            if self.xattr_bytes > MAX_XATTR_TOTAL {
                                return Err(ViewError::Limit {
                                    index: layer,
                                    name: lname(),
                                    what: "xattr bytes",
                                    limit: MAX_XATTR_TOTAL,
                                });
                            }
                            xattrs.insert(x.to_owned(), value.to_vec());
                        } else if key == "uid" {
                            pax_uid = ext.value().ok().and_then(|v| v.parse().ok());
                        } else if key == "gid" {
                            pax_group = ext.value().ok().and_then(|v| v.parse().ok());
                        } else if key == "mtime" {
                            pax_mtime = ext
                                .value()
                                .ok()
                                .and_then(|v| v.split('.').next().and_then(|s| s.parse().ok()));
                        }
                    }
                }
                let h = entry.header();
                let mode = h.mode().map_err(|e| ctx.read_err(e))? & 0o7777;
                let uid = match pax_uid {
                    Some(u) => u,
                    None => h.uid().map_err(|e| ctx.read_err(e))?,
                };
                let gid = match pax_group {
                    Some(g) => g,
                    None => h.gid().map_err(|e| ctx.read_err(e))?,
                };
                let mtime = match pax_mtime {
                    Some(m) => m,
                    None => h.mtime().map_err(|e| ctx.read_err(e))?,
                };
                let link = || -> Result<String, ViewError> {
                    let b = entry.link_name_bytes().unwrap_or_default();
                    if b.len() > MAX_PATH_BYTES {
                        return Err(ViewError::TooLong {
                            index: layer,
                            name: lname(),
                            entry: format!("{name:?}"),
                            what: "a link target",
                            len: b.len(),
                            limit: MAX_PATH_BYTES,
                        });
                    }
                    String::from_utf8(b.into_owned()).map_err(|e| ViewError::NotUtf8 {
                        index: layer,
                        name: lname(),
                        entry: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                    })
                };
                let mut data = None;
                let mut size = 0;
                let mut inode_meta = None;
                let kind = match ty {
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        size = entry.size();
                        data = Some((
                            DataLoc {
                                file: ctx.file,
                                offset: ctx.base + entry.raw_file_position(),
                            },
                            size,
                        ));
                        EntryKind::File
                    }
                    tar::EntryType::Directory => EntryKind::Dir,
                    tar::EntryType::Symlink => EntryKind::Symlink { target: link()? },
                    tar::EntryType::Link => {
                        let t = link()?;
                        let bad = |why| ViewError::BadHardlink {
                            index: layer,
                            name: lname(),
                            entry: path.clone(),
                            target: t.clone(),
                            why,
                        };
                        let target = ImagePath::from_tar_name(&t)
                            .ok_or_else(|| bad("which is outside the image"))?;
                        let tnode = self
                            .lookup(target.as_str())
                            .map(|id| self.node_ref(id))
                            .ok_or_else(|| bad("which is not in the image"))?;
                        data = Some(
                            tnode
                                .data
                                .ok_or_else(|| bad("which is not a regular file"))?,
                        );
                        // One inode: the link has its target's metadata, whatever its own
                        // header says.
                        inode_meta = Some(tnode.entry.clone());
                        EntryKind::Hardlink { target }
                    }
                    tar::EntryType::Char | tar::EntryType::Block => {
                        let major = h.device_major().ok().flatten().unwrap_or(0);
                        let minor = h.device_minor().ok().flatten().unwrap_or(0);
                        if ty == tar::EntryType::Char {
                            EntryKind::CharDevice { major, minor }
                        } else {
                            EntryKind::BlockDevice { major, minor }
                        }
                    }
                    tar::EntryType::Fifo => EntryKind::Fifo,
                    other => {
                        return Err(ViewError::Unsupported {
                            index: layer,
                            name: lname(),
                            entry: path,
                            kind: format!("{other:?}"),
                        });
                    }
                };
                let entry = match inode_meta {
                    Some(t) => Entry { kind, size, ..t },
                    None => Entry {
                        kind,
                        mode,
                        uid,
                        gid,
                        mtime,
                        size,
                        xattrs,
                    },
                };
                if self.live as u64 >= MAX_ENTRIES {
                    return Err(ViewError::Limit {
                        index: layer,
                        name: lname(),
                        what: "entries",
                        limit: MAX_ENTRIES,
                    });
                }
                let node = Node {
                    entry,
                    data,
                    layer,
                    ..synthetic_dir(layer)
                };
                self.insert(&path, node);
            }
        }
        Ok((count, ar.into_inner().into_inner()))
    }

    fn node_ref(&self, id: NodeId) -> &Node {
        self.nodes[id as usize].as_ref().expect("a live node")
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes[id as usize].as_mut().expect("a live node")
    }

    /// The node at `path` (an [`ImagePath`] string: no `.`, `..` or empty components).
    fn lookup(&self, path: &str) -> Option<NodeId> {
        let mut id = ROOT;
        for c in path.split('/').filter(|c| !c.is_empty()) {
            id = self.node_ref(id).children.get(c)?;
        }
        Some(id)
    }

    /// The full path of a node, built from its ancestors' names.
    fn path_of(&self, id: NodeId) -> ImagePath {
        let mut names = Vec::new();
        let mut cur = id;
        while cur != ROOT {
            let n = self.node_ref(cur);
            names.push(&*n.name);
            cur = n.parent;
        }
        let mut s = String::with_capacity(names.iter().map(|n| n.len() + 1).sum::<usize>() + 1);
        for n in names.iter().rev() {
            s.push('/');
            s.push_str(n);
        }
        ImagePath::new(&s)
    }

    fn add_child(&mut self, parent: NodeId, name: &str, mut node: Node) -> NodeId {
        node.name = name.into();
        node.parent = parent;
        node.depth = self.node_ref(parent).depth.saturating_add(1);
        self.live += 1;
        let id = if let Some(id) = self.free.pop() {
            self.nodes[id as usize] = Some(node);
            id
        } else {
            self.nodes.push(Some(node));
            NodeId::try_from(self.nodes.len() - 1).expect("entries are limited")
        };
        self.node_mut(parent).children.insert(name.into(), id);
        id
    }

    /// Free nodes and everything below them (they are already detached from their parent).
    /// Iterative: the depth comes from the image.
    fn free_subtrees(&mut self, ids: Vec<NodeId>) {
        let mut stack = ids;
        while let Some(id) = stack.pop() {
            if let Some(n) = self.nodes[id as usize].take() {
                self.live -= 1;
                self.free.push(id);
                stack.extend(n.children.ids());
            }
        }
    }

    /// Make the directory whose components are `dir` present in `layer`: create missing
    /// ones, turn a non-directory in the way into one (overlayfs: an upper directory hides a
    /// lower file), and mark existing ones as needed by this layer so a later opaque marker
    /// in the same layer does not drop them.
    fn ensure_dir<'p>(&mut self, dir: impl Iterator<Item = &'p str>, layer: usize) -> NodeId {
        let mut id = ROOT;
        let root = self.node_mut(ROOT);
        root.layer = root.layer.max(layer);
        for c in dir {
            id = match self.node_ref(id).children.get(c) {
                Some(child) if self.node_ref(child).entry.is_dir() => {
                    let n = self.node_mut(child);
                    n.layer = n.layer.max(layer);
                    child
                }
                Some(child) => {
                    let n = self.node_mut(child);
                    let fresh = synthetic_dir(layer);
                    n.entry = fresh.entry;
                    n.data = None;
                    n.layer = layer;
                    child
                }
                None => self.add_child(id, c, synthetic_dir(layer)),
            };
        }
        id
    }

    fn insert(&mut self, path: &ImagePath, node: Node) {
        let layer = node.layer;
        let comps: Vec<&str> = path.components().collect();
        let id = match comps.split_last() {
            None => ROOT,
            Some((name, parents)) => {
                let parent = self.ensure_dir(parents.iter().copied(), layer);
                if let Some(id) = self.node_ref(parent).children.get(name) {
                    id
                } else {
                    self.add_child(parent, name, node);
                    return;
                }
            }
        };
        let n = self.node_mut(id);
        n.entry = node.entry;
        n.data = node.data;
        n.layer = layer;
        if !n.entry.is_dir() {
            // A file over a directory hides everything the directory held.
            let kids = std::mem::take(&mut n.children).ids();
            self.free_subtrees(kids);
        }
    }

    /// Remove entries strictly below `path` (and `path` itself with `inclusive`) that come
    /// from layers below `layer`. A node of a lower layer has only lower-layer nodes below
    /// it (inserting an entry marks its parents with its layer), so it goes as a whole.
    fn remove_below(&mut self, path: &ImagePath, layer: usize, inclusive: bool) {
        let Some(id) = self.lookup(path.as_str()) else {
            return;
        };
        if inclusive && id != ROOT && self.node_ref(id).layer < layer {
            let n = self.node_ref(id);
            let (parent, name) = (n.parent, n.name.clone());
            self.node_mut(parent).children.remove(&name);
            self.free_subtrees(vec![id]);
            return;
        }
        let mut stack = vec![id];
        while let Some(dir) = stack.pop() {
            let mut doomed = Vec::new();
            for (name, child) in self.node_ref(dir).children.iter() {
                if self.node_ref(child).layer < layer {
                    doomed.push((Box::<str>::from(name), child));
                } else {
                    stack.push(child);
                }
            }
            let ids = doomed
                .into_iter()
                .map(|(name, child)| {
                    self.node_mut(dir).children.remove(&name);
                    child
                })
                .collect();
            self.free_subtrees(ids);
        }
    }

    fn live_nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i as NodeId, n)))
    }

    /// Make every hardlink point at a regular file that is still in the view: members of a
    /// group (same bytes location) are sorted, the first becomes the file and the others link
    /// to it. A link whose original target was later replaced or deleted thus still reads
    /// its own bytes, and the result does not depend on which layer spelled the link.
    fn normalise_hardlinks(&mut self) {
        let mut groups: HashMap<DataLoc, Vec<NodeId>> = HashMap::new();
        for (id, n) in self.live_nodes() {
            if let Some((loc, _)) = n.data
                && matches!(n.entry.kind, EntryKind::Hardlink { .. })
            {
                groups.entry(loc).or_default().push(id);
            }
        }
        if groups.is_empty() {
            return;
        }
        for (id, n) in self.live_nodes() {
            if let Some((loc, _)) = n.data
                && matches!(n.entry.kind, EntryKind::File)
                && let Some(g) = groups.get_mut(&loc)
            {
                g.push(id);
            }
        }
        for (_, ids) in groups {
            let mut members: Vec<(ImagePath, NodeId)> =
                ids.into_iter().map(|id| (self.path_of(id), id)).collect();
            members.sort();
            let primary_path = members[0].0.clone();
            for (i, (_, id)) in members.iter().enumerate() {
                let n = self.node_mut(*id);
                let size = n.data.map_or(0, |(_, s)| s);
                if i == 0 {
                    n.entry.kind = EntryKind::File;
                    n.entry.size = size;
                } else {
                    n.entry.kind = EntryKind::Hardlink {
                        target: primary_path.clone(),
                    };
                    n.entry.size = 0;
                }
            }
        }
    }

    /// Per-layer numbers measured while reading.
    pub fn layer_stats(&self) -> &[LayerStats] {
        &self.layers
    }

    /// Number of entries (every type, the root included).
    pub fn entry_count(&self) -> usize {
        self.live
    }

    /// Number of regular files (hardlinks included).
    pub fn file_count(&self) -> usize {
        self.live_nodes().filter(|(_, n)| n.entry.is_file()).count()
    }

    /// Bytes of regular file content (hardlinked content counted once).
    pub fn content_size(&self) -> u64 {
        self.live_nodes().map(|(_, n)| n.entry.size).sum()
    }

    /// The `n` directories with the most file bytes below them (the root left out),
    /// largest first, ties by depth (a parent before its only child), then by path.
    pub fn largest_dirs(&self, n: usize) -> Vec<DirSize> {
        let mut sizes: HashMap<NodeId, (u64, u64)> = HashMap::new();
        for (_, node) in self.live_nodes() {
            if !node.entry.is_file() {
                continue;
            }
            let mut p = node.parent;
            while p != ROOT {
                let s = sizes.entry(p).or_default();
                s.0 += node.entry.size;
                s.1 += 1;
                p = self.node_ref(p).parent;
            }
        }
        let mut v: Vec<(u64, u16, u64, NodeId)> = sizes
            .into_iter()
            .map(|(id, (bytes, files))| (bytes, self.node_ref(id).depth, files, id))
            .collect();
        v.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        // Paths are built only for the winners, one group of equal size and depth at a time,
        // holding at most `n` paths: building them all costs depth x directories (a deep
        // hostile tree), building one group costs at most the index's size.
        let mut out = Vec::new();
        let mut i = 0;
        while out.len() < n && i < v.len() {
            let (bytes, depth) = (v[i].0, v[i].1);
            let end = i + v[i..]
                .iter()
                .take_while(|x| x.0 == bytes && x.1 == depth)
                .count();
            let need = n - out.len();
            let mut best: std::collections::BinaryHeap<(ImagePath, u64)> =
                std::collections::BinaryHeap::new();
            for &(_, _, files, id) in &v[i..end] {
                best.push((self.path_of(id), files));
                if best.len() > need {
                    best.pop();
                }
            }
            out.extend(
                best.into_sorted_vec()
                    .into_iter()
                    .map(|(path, files)| DirSize { path, bytes, files }),
            );
            i = end;
        }
        out
    }

    /// A reader over a regular file's (or hardlink's) bytes, streaming from the layer.
    pub fn open(&self, path: &ImagePath) -> io::Result<impl Read + '_> {
        let (loc, size) = self.data_of(path)?;
        Ok(self.range(loc, size))
    }

    fn data_of(&self, path: &ImagePath) -> io::Result<(DataLoc, u64)> {
        let node = self
            .lookup(path.as_str())
            .map(|id| self.node_ref(id))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{path:?}: not in the image"),
                )
            })?;
        node.data.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path:?}: not a regular file"),
            )
        })
    }

    pub(crate) fn range(&self, loc: DataLoc, size: u64) -> RangeReader<'_> {
        RangeReader::new(&self.files[loc.file as usize], loc.offset, size)
    }

    /// The entry and where its bytes are, for packing.
    pub(crate) fn node(&self, path: &ImagePath) -> Option<(&Entry, Option<(DataLoc, u64)>)> {
        self.lookup(path.as_str()).map(|id| {
            let n = self.node_ref(id);
            (&n.entry, n.data)
        })
    }
}

impl Rootfs for RootfsView {
    fn entry(&self, path: &ImagePath) -> Option<&Entry> {
        self.lookup(path.as_str())
            .map(|id| &self.node_ref(id).entry)
    }

    fn read(&self, path: &ImagePath, limit: Option<u64>) -> io::Result<Vec<u8>> {
        let (loc, size) = self.data_of(path)?;
        let n = limit.map_or(size, |l| l.min(size));
        let mut out = Vec::with_capacity(n as usize);
        self.range(loc, n).read_to_end(&mut out)?;
        Ok(out)
    }

    fn children(&self, dir: &ImagePath) -> Vec<ImagePath> {
        let Some(id) = self.lookup(dir.as_str()) else {
            return Vec::new();
        };
        let n = self.node_ref(id);
        if !n.entry.is_dir() {
            return Vec::new();
        }
        let prefix = child_prefix(dir.as_str());
        n.children
            .iter()
            .map(|(name, _)| ImagePath::new(&format!("{prefix}{name}")))
            .collect()
    }

    fn paths(&self) -> Vec<ImagePath> {
        let mut out = Vec::with_capacity(self.live);
        let mut stack = vec![(ROOT, String::new())];
        while let Some((id, path)) = stack.pop() {
            let n = self.node_ref(id);
            for (name, child) in n.children.iter() {
                stack.push((child, format!("{path}/{name}")));
            }
            out.push(if path.is_empty() {
                ImagePath::root()
            } else {
                ImagePath::new(&path)
            });
        }
        out.sort();
        out
    }

    fn env(&self) -> &[String] {
        &self.env
    }
}
