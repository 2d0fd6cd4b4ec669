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
use std::ops::Bound;
use std::sync::Arc;

use minify_model::{Entry, EntryKind, ImagePath, Rootfs};

use crate::Digest;
use crate::hashio::{HashReader, RangeReader, SharedHashReader};
use crate::source::{Compression, LayerInfo, SourceImage};

/// Where a regular file's bytes are: `offset` into data file number `file`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DataLoc {
    pub file: u32,
    pub offset: u64,
}

#[derive(Clone, Debug)]
struct Node {
    path: ImagePath,
    entry: Entry,
    /// Bytes of a regular file or hardlink: where, and how many.
    data: Option<(DataLoc, u64)>,
    /// The layer that last defined (or needed) this entry; whiteouts only remove entries
    /// of lower layers.
    layer: usize,
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
    #[error("layer {index} ({name}, {compression}): {source}")]
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
    #[error("layer {index} ({name}): hardlink {entry} points to {target:?}, {why}")]
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
    #[error("layer {index} ({name}): entry {entry} has unsupported tar type {kind:?}")]
    Unsupported {
        index: usize,
        name: String,
        entry: ImagePath,
        kind: String,
    },
    /// The private temp dir for decompressed layers.
    #[error("temporary file {path}: {source}")]
    Temp { path: String, source: io::Error },
}

/// An image's flattened filesystem (implements [`Rootfs`]).
pub struct RootfsView {
    nodes: BTreeMap<String, Node>,
    files: Vec<Arc<File>>,
    layers: Vec<LayerStats>,
    env: Vec<String>,
    tmp: tempfile::TempDir,
}

impl std::fmt::Debug for RootfsView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootfsView")
            .field("entries", &self.nodes.len())
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
        path: ImagePath::root(),
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
        // Named after this process, so `minify gc` can remove it if we are killed.
        let tmp = minify_model::owner::temp_dir_prefix("view")
            .and_then(|prefix| tempfile::Builder::new().prefix(&prefix).tempdir())
            .map_err(|source| ViewError::Temp {
                path: "minify-view.*".into(),
                source,
            })?;
        let mut view = RootfsView {
            nodes: BTreeMap::new(),
            files: Vec::new(),
            layers: Vec::new(),
            env: image.config().env.clone(),
            tmp,
        };
        view.nodes.insert("/".into(), synthetic_dir(0));
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
        let mut ar = tar::Archive::new(reader);
        let mut count = 0u64;
        {
            let entries = ar.entries().map_err(|e| ctx.read_err(e))?;
            for entry in entries {
                let mut entry = entry.map_err(|e| ctx.read_err(e))?;
                count += 1;
                let raw_name = entry.path_bytes().into_owned();
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
                        self.remove_below(parent.as_str(), layer, false);
                        self.ensure_dir(&parent, layer);
                    } else if !hidden.starts_with(".wh.") {
                        let target = parent.join(hidden);
                        self.remove_below(target.as_str(), layer, true);
                        self.ensure_dir(&parent, layer);
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
                            xattrs.insert(x.to_owned(), ext.value_bytes().to_vec());
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
                            .nodes
                            .get(target.as_str())
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
                let node = Node {
                    path: path.clone(),
                    entry,
                    data,
                    layer,
                };
                self.insert(node);
            }
        }
        Ok((count, ar.into_inner()))
    }

    /// Make `dir` (and its parents) a directory present in `layer`: create missing ones,
    /// turn a non-directory in the way into one (overlayfs: an upper directory hides a
    /// lower file), and mark existing ones as needed by this layer so a later opaque marker
    /// in the same layer does not drop them.
    fn ensure_dir(&mut self, dir: &ImagePath, layer: usize) {
        if let Some(n) = self.nodes.get_mut(dir.as_str())
            && n.entry.is_dir()
        {
            n.layer = n.layer.max(layer);
            if let Some(p) = dir.parent() {
                self.ensure_dir(&p, layer);
            }
            return;
        }
        if let Some(p) = dir.parent() {
            self.ensure_dir(&p, layer);
        }
        let mut n = synthetic_dir(layer);
        n.path = dir.clone();
        self.nodes.insert(dir.as_str().to_owned(), n);
    }

    fn insert(&mut self, node: Node) {
        let layer = node.layer;
        if let Some(p) = node.path.parent() {
            self.ensure_dir(&p, layer);
        }
        let key = node.path.as_str().to_owned();
        let replacing_dir = self.nodes.get(&key).is_some_and(|n| n.entry.is_dir());
        if replacing_dir && !node.entry.is_dir() {
            // A file over a directory hides everything the directory held.
            self.remove_below(&key, usize::MAX, false);
        }
        self.nodes.insert(key, node);
    }

    /// Remove entries strictly below `path` (and `path` itself with `inclusive`) that come
    /// from layers below `layer`.
    fn remove_below(&mut self, path: &str, layer: usize, inclusive: bool) {
        if inclusive && path != "/" && self.nodes.get(path).is_some_and(|n| n.layer < layer) {
            self.nodes.remove(path);
        }
        let prefix = child_prefix(path);
        let doomed: Vec<String> = self
            .nodes
            .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(_, n)| n.layer < layer)
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    /// Make every hardlink point at a regular file that is still in the view: members of a
    /// group (same bytes location) are sorted, the first becomes the file and the others link
    /// to it. A link whose original target was later replaced or deleted thus still reads
    /// its own bytes, and the result does not depend on which layer spelled the link.
    fn normalise_hardlinks(&mut self) {
        let mut groups: HashMap<DataLoc, Vec<String>> = HashMap::new();
        for (k, n) in &self.nodes {
            if let Some((loc, _)) = n.data
                && matches!(n.entry.kind, EntryKind::Hardlink { .. })
            {
                groups.entry(loc).or_default().push(k.clone());
            }
        }
        if groups.is_empty() {
            return;
        }
        for (k, n) in &self.nodes {
            if let Some((loc, _)) = n.data
                && matches!(n.entry.kind, EntryKind::File)
                && let Some(g) = groups.get_mut(&loc)
            {
                g.push(k.clone());
            }
        }
        for (_, mut members) in groups {
            members.sort();
            let first = members[0].clone();
            let primary_path = self.nodes[&first].path.clone();
            for (i, k) in members.iter().enumerate() {
                let n = self.nodes.get_mut(k).expect("member is in the index");
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
        self.nodes.len()
    }

    /// Number of regular files (hardlinks included).
    pub fn file_count(&self) -> usize {
        self.nodes.values().filter(|n| n.entry.is_file()).count()
    }

    /// Bytes of regular file content (hardlinked content counted once).
    pub fn content_size(&self) -> u64 {
        self.nodes.values().map(|n| n.entry.size).sum()
    }

    /// The `n` directories with the most file bytes below them (the root left out),
    /// largest first, ties by path.
    pub fn largest_dirs(&self, n: usize) -> Vec<DirSize> {
        let mut sizes: HashMap<&str, (u64, u64)> = HashMap::new();
        for node in self.nodes.values() {
            if !node.entry.is_file() {
                continue;
            }
            let mut p = node.path.as_str();
            while let Some(i) = p.rfind('/') {
                p = &p[..i];
                if p.is_empty() {
                    break;
                }
                let s = sizes.entry(p).or_default();
                s.0 += node.entry.size;
                s.1 += 1;
            }
        }
        let mut v: Vec<DirSize> = sizes
            .into_iter()
            .map(|(p, (bytes, files))| DirSize {
                path: self.nodes[p].path.clone(),
                bytes,
                files,
            })
            .collect();
        v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
        v.truncate(n);
        v
    }

    /// A reader over a regular file's (or hardlink's) bytes, streaming from the layer.
    pub fn open(&self, path: &ImagePath) -> io::Result<impl Read + '_> {
        let (loc, size) = self.data_of(path)?;
        Ok(self.range(loc, size))
    }

    fn data_of(&self, path: &ImagePath) -> io::Result<(DataLoc, u64)> {
        let node = self.nodes.get(path.as_str()).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{path}: not in the image"))
        })?;
        node.data.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path}: not a regular file"),
            )
        })
    }

    pub(crate) fn range(&self, loc: DataLoc, size: u64) -> RangeReader<'_> {
        RangeReader::new(&self.files[loc.file as usize], loc.offset, size)
    }

    /// The entry and where its bytes are, for packing.
    pub(crate) fn node(&self, path: &ImagePath) -> Option<(&Entry, Option<(DataLoc, u64)>)> {
        self.nodes.get(path.as_str()).map(|n| (&n.entry, n.data))
    }
}

impl Rootfs for RootfsView {
    fn entry(&self, path: &ImagePath) -> Option<&Entry> {
        self.nodes.get(path.as_str()).map(|n| &n.entry)
    }

    fn read(&self, path: &ImagePath, limit: Option<u64>) -> io::Result<Vec<u8>> {
        let (loc, size) = self.data_of(path)?;
        let n = limit.map_or(size, |l| l.min(size));
        let mut out = Vec::with_capacity(n as usize);
        self.range(loc, n).read_to_end(&mut out)?;
        Ok(out)
    }

    fn children(&self, dir: &ImagePath) -> Vec<ImagePath> {
        if !self
            .nodes
            .get(dir.as_str())
            .is_some_and(|n| n.entry.is_dir())
        {
            return Vec::new();
        }
        let prefix = child_prefix(dir.as_str());
        let mut out = Vec::new();
        let mut from = Bound::Included(prefix.clone());
        loop {
            let next = self
                .nodes
                .range::<str, _>((from.as_ref().map(String::as_str), Bound::Unbounded))
                .next();
            let Some((k, n)) = next else { break };
            if !k.starts_with(&prefix) {
                break;
            }
            let rest = &k[prefix.len()..];
            if let Some(i) = rest.find('/') {
                // A grandchild: skip the whole subtree of that child ('0' follows '/').
                from = Bound::Included(format!("{prefix}{}0", &rest[..i]));
            } else {
                out.push(n.path.clone());
                from = Bound::Excluded(k.clone());
            }
        }
        out
    }

    fn paths(&self) -> Vec<ImagePath> {
        self.nodes.values().map(|n| n.path.clone()).collect()
    }

    fn env(&self) -> &[String] {
        &self.env
    }
}
