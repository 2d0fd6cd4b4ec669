//! `SourceImage`: an image opened for reading, from the Docker daemon or a file transport.
//!
//! Opening reads only the small JSON documents (manifest, index, config) and checks that
//! every blob they name is present with the size they claim. Layer digests are checked when
//! the layers are streamed ([`crate::RootfsView::build`]), so each layer is read once.

use std::fmt;
use std::path::{Path, PathBuf};

use futures_util::StreamExt as _;
use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;

use crate::archive::{Blob, Container};
use crate::leftovers::TempKind;
use crate::reference::normalize_repo_tag;
use crate::view::one_line;
use crate::{ArchiveImage, Digest, ImageConfig, ImageRef};

/// The most a JSON document of an image (manifest, index, config) may weigh.
const JSON_LIMIT: u64 = 64 << 20;

/// How a layer blob is compressed (sniffed from its first bytes, not trusted from media
/// types, which `docker save` leaves out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "tar",
            Compression::Gzip => "tar+gzip",
            Compression::Zstd => "tar+zstd",
        })
    }
}

impl Compression {
    /// The name `--compression` takes for it.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    /// The names `--compression` takes (skopeo's `--dest-compress-format` ones, and `none`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(format!("unknown compression {s:?}: use gzip, zstd or none")),
        }
    }
}

/// One layer as the manifest and config describe it.
#[derive(Clone, Debug)]
pub struct LayerInfo {
    /// Position, bottom layer first.
    pub index: usize,
    /// The digest of the blob as stored, when the manifest gives one (OCI manifests, and
    /// `blobs/sha256/<hex>` names in newer `docker save` output; legacy `docker save`
    /// layers are only checked against their diff_id).
    pub digest: Option<Digest>,
    /// The config's diff_id: sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Bytes of the blob as stored.
    pub size: u64,
    pub compression: Compression,
    pub(crate) blob: Blob,
}

impl LayerInfo {
    /// Where the layer is inside its container (archive member or blob name).
    pub fn name(&self) -> &str {
        &self.blob.name
    }
}

/// An opened image.
#[derive(Debug)]
pub struct SourceImage {
    reference: ImageRef,
    id: Digest,
    config_bytes: Vec<u8>,
    config: ImageConfig,
    layers: Vec<LayerInfo>,
    pub(crate) repo_tags: Vec<String>,
    /// Holds the daemon export (or the registry pull) while the image is in use.
    pub(crate) tmp: Option<tempfile::TempDir>,
}

/// Why an image could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The reference names nothing.
    #[error("image {reference} does not exist{where_}")]
    NotFound {
        reference: String,
        where_: &'static str,
    },
    /// The daemon did not answer (environment problem).
    #[error(
        "cannot reach the Docker daemon while reading {reference}: {}",
        one_line(source)
    )]
    DaemonUnreachable {
        reference: String,
        source: bollard::errors::Error,
    },
    /// The daemon answered with an error.
    #[error("the Docker daemon failed to export {reference}: {}", one_line(source))]
    Daemon {
        reference: String,
        source: bollard::errors::Error,
    },
    /// Reading the image's files failed.
    #[error("reading {path}: {}", one_line(source))]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The file is not an image in the transport's format.
    #[error("{location}: not a {format} image: {reason}")]
    NotAnImage {
        location: String,
        format: &'static str,
        reason: String,
    },
    /// A document names a blob the image does not hold.
    #[error("{location}: the manifest names {what} {name}, which is not in the image")]
    MissingBlob {
        location: String,
        what: &'static str,
        name: String,
    },
    /// A blob's size disagrees with its descriptor.
    #[error("{location}: blob {name} is {actual} bytes but the manifest says {expected}")]
    BlobSize {
        location: String,
        name: String,
        expected: u64,
        actual: u64,
    },
    /// The config blob's digest disagrees with the name it is addressed by.
    #[error("{location}: config {name} has digest {actual}, but the manifest says {expected}")]
    ConfigDigest {
        location: String,
        name: String,
        expected: Digest,
        actual: Digest,
    },
    /// The config cannot be read.
    #[error("{location}: bad image config {name}: {reason}")]
    BadConfig {
        location: String,
        name: String,
        reason: String,
    },
    /// Layer and diff_id counts differ.
    #[error(
        "{location}: the manifest lists {layers} layers but the config has {diff_ids} diff_ids"
    )]
    LayerCount {
        location: String,
        layers: usize,
        diff_ids: usize,
    },
    /// `oci:DIR:TAG` with a tag the index does not hold, or several images and no tag.
    #[error("{location}: {reason}")]
    Ambiguous { location: String, reason: String },
    /// Pulling from a registry.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
}

impl SourceError {
    /// The daemon is missing: exit code 3, not 2.
    pub fn is_environment(&self) -> bool {
        match self {
            SourceError::DaemonUnreachable { .. } => true,
            SourceError::Registry(e) => e.is_environment(),
            _ => false,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SourceError + '_ {
    move |source| SourceError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl SourceImage {
    /// Open an image for reading.
    pub async fn open(reference: &ImageRef) -> Result<SourceImage, SourceError> {
        match reference {
            ImageRef::Daemon(name) => open_daemon(reference, name).await,
            ImageRef::DockerArchive { path, image } => {
                let path = path.clone();
                let image = image.clone();
                let r = reference.clone();
                blocking(move || {
                    let c = open_archive_file(&path, &r)?;
                    read_docker_archive(r, &c, image.as_ref(), None)
                })
                .await
            }
            ImageRef::OciArchive { path, tag } => {
                let path = path.clone();
                let tag = tag.clone();
                let r = reference.clone();
                blocking(move || {
                    let c = open_archive_file(&path, &r)?;
                    read_oci(r, &c, tag.as_deref())
                })
                .await
            }
            ImageRef::Registry(r) => crate::registry::pull(reference, r).await,
            ImageRef::OciDir { dir, tag } => {
                let dir = dir.clone();
                let tag = tag.clone();
                let r = reference.clone();
                blocking(move || {
                    if !dir.is_dir() {
                        return Err(SourceError::NotFound {
                            reference: r.to_string(),
                            where_: " (no such directory)",
                        });
                    }
                    read_oci(r, &Container::dir(&dir), tag.as_deref())
                })
                .await
            }
        }
    }

    /// The reference it was opened from.
    pub fn reference(&self) -> &ImageRef {
        &self.reference
    }
    /// The image id: sha256 of the config blob.
    pub fn id(&self) -> &Digest {
        &self.id
    }
    /// The config, parsed.
    pub fn config(&self) -> &ImageConfig {
        &self.config
    }
    /// The config blob exactly as stored.
    pub fn config_bytes(&self) -> &[u8] {
        &self.config_bytes
    }
    /// Layers, bottom first.
    pub fn layers(&self) -> &[LayerInfo] {
        &self.layers
    }
    /// `name:tag`s the image carries (daemon references and `docker save` RepoTags; OCI
    /// ref names).
    pub fn repo_tags(&self) -> &[String] {
        &self.repo_tags
    }
    /// Bytes of all layer blobs as stored.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SourceError> + Send + 'static,
) -> Result<T, SourceError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(SourceError::Io {
            path: "(reader task)".into(),
            source: std::io::Error::other(e),
        }),
    }
}

fn open_archive_file(path: &Path, r: &ImageRef) -> Result<Container, SourceError> {
    use minify_model::input::{InputError, open_regular};
    let file = match open_regular(path) {
        Ok(f) => f,
        Err(InputError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(SourceError::NotFound {
                reference: r.to_string(),
                where_: " (no such file)",
            });
        }
        Err(InputError::NotRegular { kind, .. }) => {
            return Err(SourceError::NotAnImage {
                location: path.display().to_string(),
                format: "tar archive",
                reason: format!("it is {kind}, not a regular file"),
            });
        }
        Err(InputError::Io { source, .. }) => return Err(io_err(path)(source)),
        Err(e) => return Err(io_err(path)(std::io::Error::other(e.to_string()))),
    };
    // The tar reader's messages quote the bad header's bytes: never show them, the file may
    // be any host file (`docker-archive:/etc/shadow`).
    Container::open_archive(file, path).map_err(|e| SourceError::NotAnImage {
        location: path.display().to_string(),
        format: "tar archive",
        reason: match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "it ends in the middle of a tar entry".into(),
            _ => "it is not a readable tar archive (a header is not valid tar)".into(),
        },
    })
}

/// Export the image from the daemon into a private temp dir, then read it as a
/// docker-archive. The stream goes straight to disk: memory stays flat for any image size.
async fn open_daemon(reference: &ImageRef, name: &str) -> Result<SourceImage, SourceError> {
    let unreachable = |source| SourceError::DaemonUnreachable {
        reference: name.to_owned(),
        source,
    };
    let docker = bollard::Docker::connect_with_local_defaults().map_err(unreachable)?;
    let inspect = match docker.inspect_image(name).await {
        Ok(i) => i,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            return Err(SourceError::NotFound {
                reference: name.to_owned(),
                where_: " in the Docker daemon",
            });
        }
        Err(e @ bollard::errors::Error::DockerResponseServerError { .. }) => {
            return Err(SourceError::Daemon {
                reference: name.to_owned(),
                source: e,
            });
        }
        Err(e) => return Err(unreachable(e)),
    };
    let tmp = TempKind::Image
        .make()
        .map_err(io_err(Path::new("temporary directory")))?;
    let tar_path = tmp.path().join("export.tar");
    let mut out = tokio::fs::File::create(&tar_path)
        .await
        .map_err(io_err(&tar_path))?;
    // Export by id when we have it, so a tag moved meanwhile cannot swap the image under us;
    // the tags come from the inspect answer.
    let export_name = inspect.id.clone().unwrap_or_else(|| name.to_owned());
    let mut stream = docker.export_image(&export_name);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| SourceError::Daemon {
            reference: name.to_owned(),
            source,
        })?;
        out.write_all(&chunk).await.map_err(io_err(&tar_path))?;
    }
    out.flush().await.map_err(io_err(&tar_path))?;
    drop(out);
    let r = reference.clone();
    let mut tags = inspect.repo_tags.unwrap_or_default();
    if let Some((repo, Some(tag))) = reference.daemon_repo_tag() {
        // The name the user gave first: it decides the default output name.
        let given = format!("{repo}:{tag}");
        tags.retain(|t| *t != given);
        tags.insert(0, given);
    }
    let expected_id = inspect.id.and_then(|i| Digest::parse(&i).ok());
    let mut img = blocking(move || {
        let file = fs_err::File::open(&tar_path)
            .map_err(|e| SourceError::Io {
                path: tar_path.display().to_string(),
                source: e,
            })?
            .into_parts()
            .0;
        let c = Container::open_archive(file, &tar_path).map_err(io_err(&tar_path))?;
        read_docker_archive(r, &c, None, Some(tags))
    })
    .await?;
    if let Some(expected) = expected_id
        && expected != img.id
    {
        return Err(SourceError::ConfigDigest {
            location: name.to_owned(),
            name: "(daemon export)".into(),
            expected,
            actual: img.id.clone(),
        });
    }
    img.tmp = Some(tmp);
    Ok(img)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestItem {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn not_image(c: &Container, format: &'static str, reason: impl Into<String>) -> SourceError {
    SourceError::NotAnImage {
        location: c.location().display().to_string(),
        format,
        reason: reason.into(),
    }
}

fn loc(c: &Container) -> String {
    c.location().display().to_string()
}

fn read_json_member(
    c: &Container,
    name: &str,
    format: &'static str,
) -> Result<Vec<u8>, SourceError> {
    let blob = c
        .member(name)
        .map_err(io_err(c.location()))?
        .ok_or_else(|| not_image(c, format, format!("it has no {name}")))?;
    blob.read_small(JSON_LIMIT).map_err(io_err(c.location()))
}

/// The 64-hex digest embedded in a legacy name like `<hex>.json` or `blobs/sha256/<hex>`.
fn digest_in_name(name: &str) -> Option<Digest> {
    let base = name.rsplit('/').next().unwrap_or(name);
    let stem = base.strip_suffix(".json").unwrap_or(base);
    Digest::from_hex(stem).ok()
}

/// Read the image of a docker-archive that `pick` names (by name or position), or its only
/// image. `tags`, when given, replaces the names the archive gives it.
pub(crate) fn read_docker_archive(
    reference: ImageRef,
    c: &Container,
    pick: Option<&ArchiveImage>,
    tags: Option<Vec<String>>,
) -> Result<SourceImage, SourceError> {
    const FMT: &str = "docker-archive";
    let manifest = read_json_member(c, "manifest.json", FMT)?;
    let mut items: Vec<DockerManifestItem> = serde_json::from_slice(&manifest)
        .map_err(|e| not_image(c, FMT, format!("manifest.json: {e}")))?;
    if items.is_empty() {
        return Err(not_image(c, FMT, "manifest.json lists no image"));
    }
    let listing = |items: &[DockerManifestItem]| {
        items
            .iter()
            .enumerate()
            .map(|(n, i)| match &i.repo_tags {
                Some(t) if !t.is_empty() => format!("@{n} {}", t.join(", ")),
                _ => format!("@{n} untagged {}", i.config),
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let (item, tags) = match pick {
        // skopeo asks which too; reading the first would minify whichever `docker save`
        // wrote first.
        None if items.len() > 1 => {
            return Err(not_image(
                c,
                FMT,
                format!(
                    "it holds {} images ({}); say which: {}:NAME:TAG or {}:@INDEX",
                    items.len(),
                    listing(&items),
                    reference,
                    reference
                ),
            ));
        }
        None => (items.swap_remove(0), tags),
        Some(ArchiveImage::Index(n)) => {
            if *n >= items.len() {
                return Err(not_image(
                    c,
                    FMT,
                    format!(
                        "it holds {} image(s), so there is no @{n} ({})",
                        items.len(),
                        listing(&items)
                    ),
                ));
            }
            (items.swap_remove(*n), tags)
        }
        Some(name @ ArchiveImage::Name(_)) => {
            let wanted = name.repo_tag().unwrap_or_default();
            let Some(n) = items.iter().position(|i| {
                i.repo_tags
                    .iter()
                    .flatten()
                    .any(|t| normalize_repo_tag(t) == wanted)
            }) else {
                return Err(not_image(
                    c,
                    FMT,
                    format!("it holds no image named {wanted} ({})", listing(&items)),
                ));
            };
            // The name asked for is the one that matters for naming outputs.
            (items.swap_remove(n), tags.or(Some(vec![wanted])))
        }
    };
    let config_blob = c
        .member(&item.config)
        .map_err(io_err(c.location()))?
        .ok_or_else(|| SourceError::MissingBlob {
            location: loc(c),
            what: "config",
            name: item.config.clone(),
        })?;
    let config_bytes = config_blob
        .read_small(JSON_LIMIT)
        .map_err(io_err(c.location()))?;
    let id = Digest::of_bytes(&config_bytes);
    if let Some(expected) = digest_in_name(&item.config)
        && expected != id
    {
        return Err(SourceError::ConfigDigest {
            location: loc(c),
            name: item.config,
            expected,
            actual: id,
        });
    }
    let config = ImageConfig::parse(&config_bytes).map_err(|reason| SourceError::BadConfig {
        location: loc(c),
        name: item.config.clone(),
        reason,
    })?;
    let mut blobs = Vec::new();
    for name in &item.layers {
        let blob = c
            .member(name)
            .map_err(io_err(c.location()))?
            .ok_or_else(|| SourceError::MissingBlob {
                location: loc(c),
                what: "layer",
                name: name.clone(),
            })?;
        // Newer engines name layers by their blob digest; legacy `<id>/layer.tar` names
        // carry an unrelated v1 id, checked only through the diff_id.
        let digest = if name.starts_with("blobs/") {
            digest_in_name(name)
        } else {
            None
        };
        blobs.push((blob, digest));
    }
    let tags = tags.unwrap_or_else(|| item.repo_tags.unwrap_or_default());
    finish(reference, c, id, config_bytes, config, blobs, tags)
}

/// An OCI content descriptor, as layouts and registries give them (the registry transport
/// reads the same type).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub(crate) media_type: String,
    pub(crate) digest: String,
    pub(crate) size: u64,
    #[serde(default)]
    pub(crate) annotations: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) platform: Option<Platform>,
    /// Set on an OCI 1.1 artifact (an SBOM or a signature whose `subject` is an image): not
    /// an image to read.
    #[serde(default)]
    pub(crate) artifact_type: Option<String>,
}

/// A descriptor's platform.
#[derive(Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    pub(crate) os: String,
    #[serde(default)]
    pub(crate) architecture: String,
    #[serde(default)]
    pub(crate) variant: Option<String>,
}

#[derive(Deserialize)]
struct OciIndex {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct OciManifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// This machine's architecture as OCI names it (`amd64`, `arm64`).
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Fetch a blob named by a descriptor, checking its digest syntax and size.
fn descriptor_blob(
    c: &Container,
    d: &Descriptor,
    what: &'static str,
) -> Result<(Blob, Digest), SourceError> {
    let digest =
        Digest::parse(&d.digest).map_err(|e| not_image(c, "OCI", format!("{what}: {e}")))?;
    let blob = c
        .blob(&digest)
        .map_err(io_err(c.location()))?
        .ok_or_else(|| SourceError::MissingBlob {
            location: loc(c),
            what,
            name: digest.to_string(),
        })?;
    if blob.len != d.size {
        return Err(SourceError::BlobSize {
            location: loc(c),
            name: digest.to_string(),
            expected: d.size,
            actual: blob.len,
        });
    }
    Ok((blob, digest))
}

pub(crate) fn read_oci(
    reference: ImageRef,
    c: &Container,
    tag: Option<&str>,
) -> Result<SourceImage, SourceError> {
    const FMT: &str = "OCI layout";
    let index = read_json_member(c, "index.json", FMT)?;
    let mut index: OciIndex = serde_json::from_slice(&index)
        .map_err(|e| not_image(c, FMT, format!("index.json: {e}")))?;
    // Artifacts attached to an image (OCI 1.1 referrers, like the SBOM minify stores beside
    // its output) are listed in index.json too; they are not images to choose from.
    index.manifests.retain(|d| d.artifact_type.is_none());
    let names: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.annotations.get(REF_NAME).cloned())
        .collect();
    let chosen = match tag {
        Some(t) => index
            .manifests
            .into_iter()
            .find(|d| d.annotations.get(REF_NAME).is_some_and(|n| n == t))
            .ok_or_else(|| SourceError::Ambiguous {
                location: loc(c),
                reason: format!("no image tagged {t:?} in index.json (it has {names:?})"),
            })?,
        None if index.manifests.len() == 1 => index.manifests.remove(0),
        None if index.manifests.is_empty() => {
            return Err(not_image(c, FMT, "index.json lists no image"));
        }
        None => {
            return Err(SourceError::Ambiguous {
                location: loc(c),
                reason: format!(
                    "index.json holds {} images; name one with oci:DIR:TAG (tags: {names:?})",
                    index.manifests.len()
                ),
            });
        }
    };
    let ref_name = chosen.annotations.get(REF_NAME).cloned();
    let mut desc = chosen;
    // A nested index (multi-platform): take this machine's platform, else the first.
    for _ in 0..4 {
        if !desc.media_type.ends_with("image.index.v1+json")
            && !desc.media_type.ends_with("manifest.list.v2+json")
        {
            break;
        }
        let (blob, _) = descriptor_blob(c, &desc, "index")?;
        let bytes = blob.read_small(JSON_LIMIT).map_err(io_err(c.location()))?;
        let mut inner: OciIndex = serde_json::from_slice(&bytes)
            .map_err(|e| not_image(c, FMT, format!("index {}: {e}", desc.digest)))?;
        let pos = inner
            .manifests
            .iter()
            .position(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.architecture == host_arch())
            })
            .unwrap_or(0);
        if inner.manifests.is_empty() {
            return Err(not_image(
                c,
                FMT,
                format!("index {} lists no image", desc.digest),
            ));
        }
        desc = inner.manifests.swap_remove(pos);
    }
    let (mblob, _) = descriptor_blob(c, &desc, "manifest")?;
    let mbytes = mblob.read_small(JSON_LIMIT).map_err(io_err(c.location()))?;
    let manifest: OciManifest = serde_json::from_slice(&mbytes)
        .map_err(|e| not_image(c, FMT, format!("manifest {}: {e}", desc.digest)))?;
    let (cblob, cdigest) = descriptor_blob(c, &manifest.config, "config")?;
    let config_bytes = cblob.read_small(JSON_LIMIT).map_err(io_err(c.location()))?;
    let id = Digest::of_bytes(&config_bytes);
    if id != cdigest {
        return Err(SourceError::ConfigDigest {
            location: loc(c),
            name: cdigest.to_string(),
            expected: cdigest,
            actual: id,
        });
    }
    let config = ImageConfig::parse(&config_bytes).map_err(|reason| SourceError::BadConfig {
        location: loc(c),
        name: cdigest.to_string(),
        reason,
    })?;
    let mut blobs = Vec::new();
    for d in &manifest.layers {
        let (blob, digest) = descriptor_blob(c, d, "layer")?;
        blobs.push((blob, Some(digest)));
    }
    finish(
        reference,
        c,
        id,
        config_bytes,
        config,
        blobs,
        ref_name.into_iter().collect(),
    )
}

fn finish(
    reference: ImageRef,
    c: &Container,
    id: Digest,
    config_bytes: Vec<u8>,
    config: ImageConfig,
    blobs: Vec<(Blob, Option<Digest>)>,
    repo_tags: Vec<String>,
) -> Result<SourceImage, SourceError> {
    if blobs.len() != config.diff_ids.len() {
        return Err(SourceError::LayerCount {
            location: loc(c),
            layers: blobs.len(),
            diff_ids: config.diff_ids.len(),
        });
    }
    let mut layers = Vec::new();
    for (index, ((blob, digest), diff_id)) in
        blobs.into_iter().zip(config.diff_ids.iter()).enumerate()
    {
        let head = blob.head().map_err(io_err(c.location()))?;
        let compression = match head {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
            _ => Compression::None,
        };
        layers.push(LayerInfo {
            index,
            digest,
            diff_id: diff_id.clone(),
            size: blob.len,
            compression,
            blob,
        });
    }
    Ok(SourceImage {
        reference,
        id,
        config_bytes,
        config,
        layers,
        repo_tags,
        tmp: None,
    })
}

/// For tests and tools: the path of a file transport.
pub fn file_path(r: &ImageRef) -> Option<&PathBuf> {
    match r {
        ImageRef::Daemon(_) | ImageRef::Registry(_) => None,
        ImageRef::DockerArchive { path, .. } | ImageRef::OciArchive { path, .. } => Some(path),
        ImageRef::OciDir { dir, .. } => Some(dir),
    }
}
