//! Packing: one new layer holding exactly a set of paths from a [`RootfsView`], and a config
//! that is the source's with new diff_ids.
//!
//! Determinism is the contract (`minify build` twice gives the same image id): entries are
//! written sorted by path, every header field comes from the source entry (never from the
//! clock or the host), headers are GNU format with PAX records only for xattrs, and the
//! history entry reuses the source's `created` time.
//!
//! Generated files ([`PackOptions::generated`]) are the one way content other than the
//! source's enters an output: a path of the source whose bytes are given (a pruned package
//! database), written with the source entry's metadata and the new size. Their bytes come
//! from the caller's deterministic computation, so determinism holds for them too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use minify_model::{EntryKind, ImagePath};
use serde_json::{Value, json};

use crate::hashio::HashWriter;
use crate::leftovers::TempKind;
use crate::view::DataLoc;
use crate::view::one_line;
use crate::{Digest, RootfsView, SOURCE_DIGEST_LABEL, SourceImage};

/// Knobs for [`pack`].
#[derive(Clone, Debug)]
pub struct PackOptions {
    /// The history entry's `created_by`.
    pub created_by: String,
    /// Generated files: paths whose content is these bytes instead of the source's. Each must
    /// be a regular file (or hardlink) of the source; it is packed (with its parents) even if
    /// `paths` does not list it, with the source entry's mode, owner, mtime and xattrs.
    pub generated: BTreeMap<ImagePath, Vec<u8>>,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            created_by: format!("minify {} build", env!("CARGO_PKG_VERSION")),
            generated: BTreeMap::new(),
        }
    }
}

/// Why packing failed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// A requested path is not in the image.
    #[error("{path} is not in the image {image}")]
    NotInImage { path: ImagePath, image: Digest },
    /// A generated file's path is not a regular file of the image.
    #[error("{path}: generated content for what is not a regular file of the image {image}")]
    GeneratedNotAFile { path: ImagePath, image: Digest },
    /// Reading a file's bytes from the source layers failed.
    #[error("reading {path} from the image: {}", one_line(source))]
    Read { path: ImagePath, source: io::Error },
    /// Writing the new layer failed.
    #[error("writing {what} {path}: {source}")]
    Write {
        what: &'static str,
        path: String,
        source: io::Error,
    },
    /// The source config is not a JSON object.
    #[error("the source image config is not a JSON object")]
    Config,
}

/// A packed image, held in a private temp dir until written with [`PackedImage::write_to`].
#[derive(Debug)]
pub struct PackedImage {
    pub(crate) id: Digest,
    pub(crate) config: Vec<u8>,
    pub(crate) layer_path: PathBuf,
    pub(crate) diff_id: Digest,
    pub(crate) layer_size: u64,
    pub(crate) entries: usize,
    pub(crate) content_size: u64,
    pub(crate) tmp: tempfile::TempDir,
}

impl PackedImage {
    /// The new image's id (sha256 of its config).
    pub fn id(&self) -> &Digest {
        &self.id
    }
    /// The config blob.
    pub fn config_bytes(&self) -> &[u8] {
        &self.config
    }
    /// The new layer's diff_id: the digest of its uncompressed tar (also its digest in the
    /// daemon and in a docker-archive; an OCI output stores it compressed, see
    /// [`crate::Written`]).
    pub fn layer_digest(&self) -> &Digest {
        &self.diff_id
    }
    /// Bytes of the new layer's uncompressed tar.
    pub fn layer_size(&self) -> u64 {
        self.layer_size
    }
    /// Entries written into the layer (parents included).
    pub fn entry_count(&self) -> usize {
        self.entries
    }
    /// Bytes of file content in the layer.
    pub fn content_size(&self) -> u64 {
        self.content_size
    }
    /// The layer tar on disk (private temp file, valid while `self` lives).
    pub fn layer_path(&self) -> &Path {
        &self.layer_path
    }
}

/// Pack `paths` (each must be in `view`; their parent directories are added with their
/// original metadata) into one new layer and a config derived from `source`'s.
pub fn pack(
    view: &RootfsView,
    source: &SourceImage,
    paths: &[ImagePath],
    options: &PackOptions,
) -> Result<PackedImage, PackError> {
    let mut set: BTreeSet<ImagePath> = BTreeSet::new();
    for p in options.generated.keys() {
        if !view.node(p).is_some_and(|(e, _)| e.is_file()) {
            return Err(PackError::GeneratedNotAFile {
                path: p.clone(),
                image: source.id().clone(),
            });
        }
    }
    for p in paths.iter().chain(options.generated.keys()) {
        if view.node(p).is_none() {
            return Err(PackError::NotInImage {
                path: p.clone(),
                image: source.id().clone(),
            });
        }
        for a in p.ancestors() {
            set.insert(a);
        }
        set.insert(p.clone());
    }
    let tmp = TempKind::Pack.make().map_err(|source| PackError::Write {
        what: "temporary directory",
        path: TempKind::Pack.pattern(),
        source,
    })?;
    let layer_path = tmp.path().join("layer.tar");
    let werr = |source| PackError::Write {
        what: "layer",
        path: layer_path.display().to_string(),
        source,
    };
    let file = File::create(&layer_path).map_err(werr)?;
    let mut builder = tar::Builder::new(HashWriter::new(BufWriter::with_capacity(1 << 20, file)));
    let mut first_of: HashMap<DataLoc, ImagePath> = HashMap::new();
    let mut content_size = 0u64;
    for path in &set {
        let (entry, data) = view
            .node(path)
            .expect("every path and parent is in the view");
        if !entry.xattrs.is_empty() {
            let records: Vec<(String, &[u8])> = entry
                .xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                .collect();
            builder
                .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
                .map_err(werr)?;
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(entry.mode);
        h.set_uid(entry.uid);
        h.set_gid(entry.gid);
        h.set_mtime(entry.mtime);
        h.set_size(0);
        let name = path.tar_name();
        if let Some(bytes) = options.generated.get(path) {
            // Never a hardlink, nor the target of one: its bytes are its own.
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(bytes.len() as u64);
            content_size += bytes.len() as u64;
            builder
                .append_data(&mut h, name, bytes.as_slice())
                .map_err(werr)?;
            continue;
        }
        match (&entry.kind, data) {
            (EntryKind::Dir, _) => {
                h.set_entry_type(tar::EntryType::Directory);
                let dir_name = if path.is_root() {
                    "./".to_owned()
                } else {
                    format!("{name}/")
                };
                builder
                    .append_data(&mut h, dir_name, io::empty())
                    .map_err(werr)?;
            }
            (EntryKind::File | EntryKind::Hardlink { .. }, Some((loc, size))) => {
                if let Some(first) = first_of.get(&loc) {
                    h.set_entry_type(tar::EntryType::Link);
                    builder
                        .append_link(&mut h, name, first.tar_name())
                        .map_err(werr)?;
                } else {
                    first_of.insert(loc, path.clone());
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(size);
                    content_size += size;
                    let mut reader = CheckedRead {
                        inner: view.range(loc, size),
                        path,
                        err: None,
                    };
                    let r = builder.append_data(&mut h, name, &mut reader);
                    if let Some(source) = reader.err.take() {
                        return Err(PackError::Read {
                            path: path.clone(),
                            source,
                        });
                    }
                    r.map_err(werr)?;
                }
            }
            (EntryKind::File | EntryKind::Hardlink { .. }, None) => {
                return Err(PackError::Read {
                    path: path.clone(),
                    source: io::Error::other("no data recorded for a regular file"),
                });
            }
            (EntryKind::Symlink { target }, _) => {
                h.set_entry_type(tar::EntryType::Symlink);
                builder.append_link(&mut h, name, target).map_err(werr)?;
            }
            (
                EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor },
                _,
            ) => {
                h.set_entry_type(if matches!(entry.kind, EntryKind::CharDevice { .. }) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                });
                h.set_device_major(*major).map_err(werr)?;
                h.set_device_minor(*minor).map_err(werr)?;
                builder
                    .append_data(&mut h, name, io::empty())
                    .map_err(werr)?;
            }
            (EntryKind::Fifo, _) => {
                h.set_entry_type(tar::EntryType::Fifo);
                builder
                    .append_data(&mut h, name, io::empty())
                    .map_err(werr)?;
            }
        }
    }
    let hw = builder.into_inner().map_err(werr)?;
    let (diff_id, layer_size, bw) = hw.finish().map_err(werr)?;
    bw.into_inner()
        .map_err(|e| werr(e.into_error()))?
        .sync_all()
        .map_err(werr)?;

    let config = new_config(source, &diff_id, set.len(), options)?;
    let id = Digest::of_bytes(&config);
    Ok(PackedImage {
        id,
        config,
        layer_path,
        diff_id,
        layer_size,
        entries: set.len(),
        content_size,
        tmp,
    })
}

/// The source config with only what describes the image kept (not the legacy
/// `container_config` of whatever built it), the label, the one layer and one history entry.
fn new_config(
    source: &SourceImage,
    diff_id: &Digest,
    entries: usize,
    options: &PackOptions,
) -> Result<Vec<u8>, PackError> {
    let old: Value =
        serde_json::from_slice(source.config_bytes()).map_err(|_| PackError::Config)?;
    let Value::Object(old) = old else {
        return Err(PackError::Config);
    };
    let mut new = serde_json::Map::new();
    for key in [
        "architecture",
        "os",
        "variant",
        "os.version",
        "os.features",
        "author",
        "created",
    ] {
        if let Some(v) = old.get(key) {
            new.insert(key.to_owned(), v.clone());
        }
    }
    let mut run = match old.get("config") {
        Some(Value::Object(c)) => c.clone(),
        _ => serde_json::Map::new(),
    };
    let mut labels = match run.get("Labels") {
        Some(Value::Object(l)) => l.clone(),
        _ => serde_json::Map::new(),
    };
    labels.insert(
        SOURCE_DIGEST_LABEL.to_owned(),
        Value::String(source.id().to_string()),
    );
    run.insert("Labels".into(), Value::Object(labels));
    new.insert("config".into(), Value::Object(run));
    new.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": [diff_id.as_str()]}),
    );
    let mut history = serde_json::Map::new();
    if let Some(c) = old.get("created") {
        history.insert("created".into(), c.clone());
    }
    history.insert(
        "created_by".into(),
        Value::String(options.created_by.clone()),
    );
    history.insert(
        "comment".into(),
        Value::String(format!("minified from {} ({entries} entries)", source.id())),
    );
    new.insert("history".into(), Value::Array(vec![Value::Object(history)]));
    serde_json::to_vec(&Value::Object(new)).map_err(|_| PackError::Config)
}

/// Remembers a read error so it is reported as the image's fault (naming the path), not as
/// a write error of the new layer.
struct CheckedRead<'a, R> {
    inner: R,
    path: &'a ImagePath,
    err: Option<io::Error>,
}

impl<R: io::Read> io::Read for CheckedRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            self.err = Some(io::Error::new(e.kind(), format!("{}: {e}", self.path)));
        })
    }
}
