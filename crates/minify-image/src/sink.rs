//! Writing a [`PackedImage`] out: into the Docker daemon, as `docker-archive:`, `oci:`
//! or `oci-archive:`, or pushed to a registry (`docker://`). And loading a [`SourceImage`] read from a file into the daemon, so it
//! can be run ([`SourceImage::load_into_daemon`]).
//!
//! No half-written output is ever visible: files and directories are written under a
//! temporary sibling name and renamed into place; the daemon gets the image under a
//! temporary tag that is only renamed to the requested one once the load succeeded.
//! An existing file or directory output is an error unless `force` is given.

use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use futures_util::StreamExt as _;
use serde_json::json;

use crate::archive::Blob;
use crate::hashio::HashWriter;
use crate::leftovers::load_tag;
use crate::view::one_line;
use crate::{ArchiveImage, Compression, Digest, ImageRef, PackedImage, SourceImage};

/// Why `docker-archive:PATH:@INDEX` cannot be an output.
pub const ARCHIVE_INDEX_OUTPUT: &str =
    "@INDEX picks an image to read; name a docker-archive output with :NAME:TAG";

const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_LAYER_PREFIX: &str = "application/vnd.oci.image.layer.v1.";
/// The empty config of an artifact manifest (image-spec 1.1, manifest.md "Guidelines for
/// Artifact Usage"): the two bytes `{}`.
const MT_EMPTY: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_JSON: &[u8] = b"{}";

/// A document stored beside the image in an OCI layout as an OCI 1.1 artifact whose
/// `subject` is the image's manifest (what the referrers API of a registry lists for it): an
/// SBOM, a signature. The artifact manifest's config is the empty descriptor and its one
/// layer is the document; index.json lists it with its `artifactType`.
#[derive(Clone, Debug)]
pub struct Referrer {
    /// The artifact's type, also the media type of its one blob
    /// (`application/vnd.cyclonedx+json`).
    pub artifact_type: String,
    pub bytes: Vec<u8>,
}

/// How [`PackedImage::write_to`] writes, beyond where.
#[derive(Clone, Copy, Debug)]
pub struct WriteOptions {
    /// Replace an existing output file or directory.
    pub force: bool,
    /// How the new layer is stored in an `oci:` or `oci-archive:` output (gzip by default,
    /// as registries and `docker buildx` expect). A docker-archive holds it uncompressed,
    /// as `docker save` writes one, and the daemon is always given it uncompressed.
    pub compression: Compression,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            force: false,
            compression: Compression::Gzip,
        }
    }
}

/// What [`PackedImage::write_to`] wrote.
#[derive(Clone, Debug)]
pub struct Written {
    /// The image id (sha256 of its config).
    pub id: Digest,
    /// The new layer as stored in the output: its digest, bytes and compression (for the
    /// daemon, the uncompressed tar it was given).
    pub layer_digest: Digest,
    pub layer_bytes: u64,
    pub compression: Compression,
    /// For a registry output: the digest of the manifest pushed (`NAME@DIGEST` pulls it).
    pub manifest_digest: Option<Digest>,
}

/// The new layer as one output stores it.
struct StoredLayer {
    path: PathBuf,
    digest: Digest,
    bytes: u64,
    compression: Compression,
}

/// Why the image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The output exists and `force` was not given.
    #[error("output {path} already exists (use --force to replace it)")]
    Exists { path: String },
    /// Writing files failed.
    #[error("writing {path}: {source}")]
    Io { path: String, source: io::Error },
    /// The output reference cannot be written to.
    #[error("cannot write an image to {reference}: {reason}")]
    BadTarget {
        reference: String,
        reason: &'static str,
    },
    /// The daemon did not answer (environment problem).
    #[error(
        "cannot reach the Docker daemon to load {reference}: {}",
        one_line(source)
    )]
    DaemonUnreachable {
        reference: String,
        source: bollard::errors::Error,
    },
    /// The daemon refused the image.
    #[error("the Docker daemon failed to {what} {reference}: {reason}")]
    Daemon {
        what: &'static str,
        reference: String,
        reason: String,
    },
    /// Pushing to a registry.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
}

impl SinkError {
    /// The daemon is missing: exit code 3, not 2.
    pub fn is_environment(&self) -> bool {
        match self {
            SinkError::DaemonUnreachable { .. } => true,
            SinkError::Registry(e) => e.is_environment(),
            _ => false,
        }
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What goes into an output archive or directory: name -> bytes or a file to copy.
enum Member<'a> {
    Dir,
    Bytes(&'a [u8]),
    File(&'a Path),
    /// A blob of a source image, copied as stored.
    Blob(&'a Blob),
}

impl PackedImage {
    /// Write the image to `out`: the daemon, a docker-archive, or an OCI layout (directory
    /// or archive) with the layer compressed as `options` says.
    pub async fn write_to(
        &self,
        out: &ImageRef,
        options: &WriteOptions,
    ) -> Result<Written, SinkError> {
        self.write_with_referrers(out, options, &[]).await
    }

    /// [`Self::write_to`], and in an `oci:` or `oci-archive:` output also `referrers`, each as
    /// an artifact whose subject is the image (in the same atomic write). Other outputs have
    /// no place for them: they are not written there.
    pub async fn write_with_referrers(
        &self,
        out: &ImageRef,
        options: &WriteOptions,
        referrers: &[Referrer],
    ) -> Result<Written, SinkError> {
        let force = options.force;
        let mut manifest_digest = None;
        let stored = match out {
            ImageRef::Registry(r) => {
                let stored = self.stored_layer(options.compression)?;
                let manifest = self.oci_manifest(&stored);
                let image = crate::registry::PushImage {
                    config: &self.config,
                    config_digest: &self.id,
                    layer_path: &stored.path,
                    layer_digest: &stored.digest,
                    layer_bytes: stored.bytes,
                    manifest: &manifest,
                };
                manifest_digest = Some(crate::registry::push(r, &image).await?);
                stored
            }
            ImageRef::Daemon(name) => {
                self.load_into_daemon(name).await?;
                self.uncompressed()
            }
            ImageRef::DockerArchive { path, image } => {
                let name = match image {
                    None => None,
                    Some(i @ ArchiveImage::Name(_)) => i.repo_tag(),
                    Some(ArchiveImage::Index(_)) => {
                        return Err(SinkError::BadTarget {
                            reference: out.to_string(),
                            reason: ARCHIVE_INDEX_OUTPUT,
                        });
                    }
                };
                let members = self.docker_archive_members(name.as_deref());
                write_file_atomically(path, force, |tmp| write_tar(tmp, &members.borrowed()))?;
                self.uncompressed()
            }
            ImageRef::OciArchive { path, tag } => {
                check_exists(path, force)?;
                let stored = self.stored_layer(options.compression)?;
                let layout = self.oci_layout(tag.as_deref(), &stored, referrers);
                write_file_atomically(path, force, |tmp| write_tar(tmp, &layout.borrowed()))?;
                stored
            }
            ImageRef::OciDir { dir, tag } => {
                check_exists(dir, force)?;
                let stored = self.stored_layer(options.compression)?;
                let layout = self.oci_layout(tag.as_deref(), &stored, referrers);
                write_dir_atomically(dir, force, &layout.borrowed())?;
                stored
            }
        };
        Ok(Written {
            id: self.id.clone(),
            layer_digest: stored.digest,
            layer_bytes: stored.bytes,
            compression: stored.compression,
            manifest_digest,
        })
    }

    fn uncompressed(&self) -> StoredLayer {
        StoredLayer {
            path: self.layer_path.clone(),
            digest: self.diff_id.clone(),
            bytes: self.layer_size,
            compression: Compression::None,
        }
    }

    /// The layer compressed as asked, in this image's temp dir, digested as it is written.
    /// Deterministic: the same tar and compression give the same bytes (gzip without a
    /// name or time in its header, zstd without a checksum, both single-threaded).
    fn stored_layer(&self, compression: Compression) -> Result<StoredLayer, SinkError> {
        let name = match compression {
            Compression::None => return Ok(self.uncompressed()),
            Compression::Gzip => "layer.tar.gz",
            Compression::Zstd => "layer.tar.zst",
        };
        let path = self.tmp.path().join(name);
        let result = (|| -> io::Result<(Digest, u64)> {
            let mut input =
                io::BufReader::with_capacity(1 << 20, fs_err::File::open(&self.layer_path)?);
            let out = HashWriter::new(io::BufWriter::with_capacity(
                1 << 20,
                fs_err::File::create(&path)?,
            ));
            let out = if compression == Compression::Gzip {
                let mut e = flate2::GzBuilder::new()
                    .mtime(0)
                    .write(out, flate2::Compression::default());
                io::copy(&mut input, &mut e)?;
                e.finish()?
            } else {
                let mut e = zstd::Encoder::new(out, 3)?;
                io::copy(&mut input, &mut e)?;
                e.finish()?
            };
            let (digest, bytes, _) = out.finish()?;
            Ok((digest, bytes))
        })();
        let (digest, bytes) = result.map_err(io_at(&path))?;
        Ok(StoredLayer {
            path,
            digest,
            bytes,
            compression,
        })
    }

    fn docker_archive_members(&self, tag: Option<&str>) -> Owned<'_> {
        let config_name = format!("{}.json", self.id.hex());
        let layer_dir = self.diff_id.hex().to_owned();
        let manifest = json!([{
            "Config": config_name,
            "RepoTags": tag.map(|t| vec![t.to_owned()]),
            "Layers": [format!("{layer_dir}/layer.tar")],
        }]);
        Owned {
            bytes: vec![
                (
                    "manifest.json".into(),
                    serde_json::to_vec(&manifest).expect("json"),
                ),
                (config_name, self.config.clone()),
            ],
            dirs: vec![format!("{layer_dir}/")],
            files: vec![(format!("{layer_dir}/layer.tar"), &self.layer_path)],
        }
    }

    /// The OCI manifest of this image with `layer` as stored.
    fn oci_manifest(&self, layer: &StoredLayer) -> Vec<u8> {
        // `tar`, `tar+gzip`, `tar+zstd`: the media type's last part.
        let media_type = format!("{MT_LAYER_PREFIX}{}", layer.compression);
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": self.id.as_str(), "size": self.config.len()},
            "layers": [{"mediaType": media_type, "digest": layer.digest.as_str(), "size": layer.bytes}],
        }))
        .expect("json")
    }

    fn oci_layout<'a>(
        &'a self,
        tag: Option<&str>,
        layer: &'a StoredLayer,
        referrers: &[Referrer],
    ) -> Owned<'a> {
        let manifest = self.oci_manifest(layer);
        let mdigest = Digest::of_bytes(&manifest);
        let mut desc =
            json!({"mediaType": MT_MANIFEST, "digest": mdigest.as_str(), "size": manifest.len()});
        if let Some(t) = tag {
            desc["annotations"] = json!({"org.opencontainers.image.ref.name": t});
        }
        let subject =
            json!({"mediaType": MT_MANIFEST, "digest": mdigest.as_str(), "size": manifest.len()});
        let mut manifests = vec![desc];
        let mut bytes = vec![
            (
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            (format!("blobs/sha256/{}", mdigest.hex()), manifest),
            (
                format!("blobs/sha256/{}", self.id.hex()),
                self.config.clone(),
            ),
        ];
        if !referrers.is_empty() {
            let empty = Digest::of_bytes(EMPTY_JSON);
            bytes.push((format!("blobs/sha256/{}", empty.hex()), EMPTY_JSON.to_vec()));
            for r in referrers {
                let blob = Digest::of_bytes(&r.bytes);
                let artifact = serde_json::to_vec(&json!({
                    "schemaVersion": 2,
                    "mediaType": MT_MANIFEST,
                    "artifactType": r.artifact_type,
                    "config": {"mediaType": MT_EMPTY, "digest": empty.as_str(), "size": EMPTY_JSON.len()},
                    "layers": [{"mediaType": r.artifact_type, "digest": blob.as_str(), "size": r.bytes.len()}],
                    "subject": subject,
                }))
                .expect("json");
                let adigest = Digest::of_bytes(&artifact);
                manifests.push(json!({
                    "mediaType": MT_MANIFEST,
                    "artifactType": r.artifact_type,
                    "digest": adigest.as_str(),
                    "size": artifact.len(),
                }));
                bytes.push((format!("blobs/sha256/{}", adigest.hex()), artifact));
                bytes.push((format!("blobs/sha256/{}", blob.hex()), r.bytes.clone()));
            }
            // The same blob twice (two identical documents) is one file.
            bytes.sort_by(|a, b| a.0.cmp(&b.0));
            bytes.dedup_by(|a, b| a.0 == b.0);
        }
        let index = json!({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": manifests});
        bytes.push((
            "index.json".into(),
            serde_json::to_vec(&index).expect("json"),
        ));
        Owned {
            bytes,
            dirs: vec!["blobs/".into(), "blobs/sha256/".into()],
            files: vec![(format!("blobs/sha256/{}", layer.digest.hex()), &layer.path)],
        }
    }

    async fn load_into_daemon(&self, name: &str) -> Result<Digest, SinkError> {
        let (repo, tag) = daemon_target(name)?;
        let docker = connect_daemon(name).await?;
        // Load under a unique temporary tag, so a failed load never leaves the requested
        // name pointing at a half-loaded image.
        let tmp_tag = load_tag(&self.id);
        let members = self.docker_archive_members(Some(&tmp_tag));
        let archive = self.tmp.path().join("load.tar");
        write_tar(&archive, &members.borrowed())?;
        let file = tokio::fs::File::open(&archive)
            .await
            .map_err(io_at(&archive))?;
        let body = file_chunks(file);
        load_and_tag(&docker, name, (&repo, &tag), &tmp_tag, &self.id, body).await
    }
}

impl SourceImage {
    /// Load this image into the Docker daemon under `name` (`name:tag`), to run it. Like
    /// `docker load` of a docker-archive, except that the image gets only that name: the
    /// names a file carries (a docker-archive's RepoTags) would move tags the user has in
    /// the daemon. The stored config and layer blobs are streamed to the daemon as they are
    /// (it unpacks compressed layers itself), so the file is only read, nothing is copied on
    /// disk, and the daemon gives the image this image's id, which is checked. Returns it.
    pub async fn load_into_daemon(&self, name: &str) -> Result<Digest, SinkError> {
        let (repo, tag) = daemon_target(name)?;
        let docker = connect_daemon(name).await?;
        let tmp_tag = load_tag(self.id());
        let config_name = format!("{}.json", self.id().hex());
        // One member per distinct layer (two layers may be byte-identical).
        let mut layer_names = Vec::new();
        let mut blobs: Vec<(String, Blob)> = Vec::new();
        for layer in self.layers() {
            let member = format!("{}/layer.tar", layer.diff_id.hex());
            if !blobs.iter().any(|(n, _)| *n == member) {
                blobs.push((member.clone(), layer.blob.clone()));
            }
            layer_names.push(member);
        }
        let manifest = serde_json::to_vec(&json!([{
            "Config": config_name,
            "RepoTags": [tmp_tag],
            "Layers": layer_names,
        }]))
        .expect("json");
        let config = self.config_bytes().to_vec();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let writer = tokio::task::spawn_blocking(move || {
            let mut members = vec![
                ("manifest.json", Member::Bytes(&manifest)),
                (config_name.as_str(), Member::Bytes(&config)),
            ];
            for (n, b) in &blobs {
                members.push((n.as_str(), Member::Blob(b)));
            }
            let mut w = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::new(),
            };
            let r = write_tar_into(&mut w, &members).and_then(ChannelWriter::send);
            if let Err(e) = &r {
                // Cut the body short with the error, so the daemon does not load a part.
                let _ = tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
            }
            r
        });
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let loaded = load_and_tag(&docker, name, (&repo, &tag), &tmp_tag, self.id(), body).await;
        match writer.await {
            // Reading the file failed: that is the error, not what the daemon made of the
            // cut stream. (A broken pipe only means the daemon stopped reading.)
            Ok(Err(e)) if e.kind() != io::ErrorKind::BrokenPipe => Err(SinkError::Io {
                path: self.reference().to_string(),
                source: e,
            }),
            Err(e) if loaded.is_ok() => Err(SinkError::Io {
                path: self.reference().to_string(),
                source: io::Error::other(e),
            }),
            _ => loaded,
        }
    }
}

/// A file as a stream of 1 MiB chunks, for a request body (a daemon load, a registry push).
pub(crate) fn file_chunks(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = io::Result<bytes::Bytes>> + Send + 'static {
    futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
}

/// The repository and tag of a daemon output name; digests and ids cannot be written.
fn daemon_target(name: &str) -> Result<(String, String), SinkError> {
    let target: ImageRef = name.parse().map_err(|_| SinkError::BadTarget {
        reference: name.to_owned(),
        reason: "not a valid image name",
    })?;
    let Some((repo, tag)) = target.daemon_repo_tag() else {
        return Err(SinkError::BadTarget {
            reference: name.to_owned(),
            reason: "not a name in the Docker daemon",
        });
    };
    if name.contains('@') || name.starts_with("sha256:") {
        return Err(SinkError::BadTarget {
            reference: name.to_owned(),
            reason: "an output needs a name:tag, not a digest",
        });
    }
    Ok((repo.to_owned(), tag.unwrap_or("latest").to_owned()))
}

async fn connect_daemon(name: &str) -> Result<bollard::Docker, SinkError> {
    let unreachable = |source| SinkError::DaemonUnreachable {
        reference: name.to_owned(),
        source,
    };
    let docker = bollard::Docker::connect_with_local_defaults().map_err(unreachable)?;
    docker.ping().await.map_err(unreachable)?;
    Ok(docker)
}

/// Stream a docker-archive `body` whose manifest names the image `tmp_tag` into the daemon,
/// give it the name `repo:tag`, drop `tmp_tag`, and check the daemon's id is `expected`.
async fn load_and_tag<S>(
    docker: &bollard::Docker,
    name: &str,
    (repo, tag): (&str, &str),
    tmp_tag: &str,
    expected: &Digest,
    body: S,
) -> Result<Digest, SinkError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, io::Error>> + Send + 'static,
{
    // The load runs as a task of its own, under a guard: dropping this future (Ctrl-C,
    // SIGTERM) while the daemon is still loading would otherwise leave the image under
    // `tmp_tag` once the daemon finishes, with nobody left to remove it (1 run in 12 with a
    // signal in the first 200 ms of a load did). The guard cuts the body short, waits for the
    // daemon's answer, and removes the temporary tag.
    let (cut, cut_rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let body = body.take_until(cut_rx);
    let task_docker = docker.clone();
    let task_name = name.to_owned();
    let task = tokio::spawn(async move {
        let r = import(&task_docker, &task_name, body).await;
        let _ = done_tx.send(());
        r
    });
    let mut guard = LoadGuard {
        cut: Some(cut),
        done: done_rx,
        tmp_tag: tmp_tag.to_owned(),
        armed: true,
    };
    let imported = task.await.map_err(|e| SinkError::Daemon {
        what: "load",
        reference: name.to_owned(),
        reason: e.to_string(),
    });
    guard.cut = None;
    let imported = imported.and_then(|r| r);
    if let Err(e) = imported {
        // A load that failed can still have made the tag (an error after the last layer).
        drop(guard);
        return Err(e);
    }
    let tag_opts = bollard::query_parameters::TagImageOptionsBuilder::default()
        .repo(repo)
        .tag(tag)
        .build();
    let tagged = docker.tag_image(tmp_tag, Some(tag_opts)).await;
    // Drop the temporary tag whatever happened (the image stays under its real name).
    let rm = bollard::query_parameters::RemoveImageOptionsBuilder::default()
        .noprune(true)
        .build();
    let _ = docker.remove_image(tmp_tag, Some(rm), None).await;
    guard.armed = false;
    tagged.map_err(|e| SinkError::Daemon {
        what: "tag",
        reference: name.to_owned(),
        reason: e.to_string(),
    })?;
    let inspect = docker
        .inspect_image(name)
        .await
        .map_err(|e| SinkError::Daemon {
            what: "inspect",
            reference: name.to_owned(),
            reason: e.to_string(),
        })?;
    let id = inspect.id.unwrap_or_default();
    if id != expected.as_str() {
        return Err(SinkError::Daemon {
            what: "load",
            reference: name.to_owned(),
            reason: format!("it reports id {id}, expected {expected}"),
        });
    }
    Ok(expected.clone())
}

/// Stream `body` into the daemon's image load and wait for its answer.
async fn import<S>(docker: &bollard::Docker, name: &str, body: S) -> Result<(), SinkError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, io::Error>> + Send + 'static,
{
    let opts = bollard::query_parameters::ImportImageOptionsBuilder::default()
        .quiet(true)
        .build();
    let mut progress = docker.import_image_stream(opts, body, None);
    while let Some(item) = progress.next().await {
        let info = item.map_err(|e| SinkError::Daemon {
            what: "load",
            reference: name.to_owned(),
            reason: e.to_string(),
        })?;
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(SinkError::Daemon {
                what: "load",
                reference: name.to_owned(),
                reason: err,
            });
        }
    }
    Ok(())
}

/// Owns a load in progress until it has an answer: see [`load_and_tag`]. Dropped, it cuts
/// the body (the daemon then refuses a truncated archive), waits for the load task to end
/// (bounded: the task ends with the daemon's answer, or at once when the runtime is shutting
/// down), and removes the temporary tag from a thread of its own with its own runtime and
/// client, since a `Drop` cannot await and the caller's runtime may be going away.
struct LoadGuard {
    cut: Option<tokio::sync::oneshot::Sender<()>>,
    done: std::sync::mpsc::Receiver<()>,
    tmp_tag: String,
    armed: bool,
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        drop(self.cut.take());
        let _ = self.done.recv_timeout(std::time::Duration::from_mins(1));
        let tag = std::mem::take(&mut self.tmp_tag);
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(docker) = bollard::Docker::connect_with_local_defaults() else {
                    return;
                };
                let rm = bollard::query_parameters::RemoveImageOptionsBuilder::default()
                    .noprune(true)
                    .build();
                match docker.remove_image(&tag, Some(rm), None).await {
                    Ok(_) => tracing::debug!("cleanup: removed the temporary tag {tag}"),
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }) => {}
                    Err(e) => tracing::warn!(
                        "cleanup: could not remove the temporary tag {tag} ({e}); `minify gc` removes it"
                    ),
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A `Write` that hands the bytes to an async body stream in chunks of about 1 MiB.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    const CHUNK: usize = 1 << 20;

    /// Hand over what is buffered.
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(Self::CHUNK));
        self.tx.blocking_send(Ok(chunk.into())).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the Docker daemon stopped reading",
            )
        })
    }
}

impl io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Members with owned names (built per output).
struct Owned<'a> {
    bytes: Vec<(String, Vec<u8>)>,
    dirs: Vec<String>,
    files: Vec<(String, &'a PathBuf)>,
}

impl Owned<'_> {
    /// Sorted by name, so archives are deterministic.
    fn borrowed(&self) -> Vec<(&str, Member<'_>)> {
        let mut v: Vec<(&str, Member<'_>)> = Vec::new();
        for d in &self.dirs {
            v.push((d, Member::Dir));
        }
        for (n, b) in &self.bytes {
            v.push((n, Member::Bytes(b)));
        }
        for (n, f) in &self.files {
            v.push((n, Member::File(f)));
        }
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }
}

fn write_tar(path: &Path, members: &[(&str, Member<'_>)]) -> Result<(), SinkError> {
    let file = fs_err::File::create(path).map_err(io_at(path))?;
    let result = (|| -> io::Result<()> {
        let w = write_tar_into(io::BufWriter::with_capacity(1 << 20, file), members)?;
        w.into_inner()
            .map_err(io::IntoInnerError::into_error)?
            .sync_all()
    })();
    result.map_err(io_at(path))
}

/// The members as a deterministic tar (fixed mtimes, owners and modes) into `w`.
fn write_tar_into<W: io::Write>(out: W, members: &[(&str, Member<'_>)]) -> io::Result<W> {
    let mut builder = tar::Builder::new(out);
    for (name, m) in members {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match m {
            Member::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, name, io::empty())?;
            }
            Member::Bytes(bytes) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(bytes.len() as u64);
                builder.append_data(&mut header, name, *bytes)?;
            }
            Member::File(p) => {
                let f = fs_err::File::open(p)?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(f.metadata()?.len());
                builder.append_data(&mut header, name, f.take(u64::MAX))?;
            }
            Member::Blob(blob) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(blob.len);
                builder.append_data(&mut header, name, blob.reader())?;
            }
        }
    }
    builder.into_inner()
}

/// Removes a temporary output on drop unless it was renamed into place.
struct TempGuard(Option<PathBuf>);
impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(&p);
            } else {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

fn temp_sibling(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".{name}.minify-tmp-{}", std::process::id()))
}

fn check_exists(path: &Path, force: bool) -> Result<bool, SinkError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) if !force => Err(SinkError::Exists {
            path: path.display().to_string(),
        }),
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_at(path)(e)),
    }
}

fn write_file_atomically(
    path: &Path,
    force: bool,
    write: impl FnOnce(&Path) -> Result<(), SinkError>,
) -> Result<(), SinkError> {
    let exists = check_exists(path, force)?;
    if exists && std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(SinkError::BadTarget {
            reference: path.display().to_string(),
            reason: "it is a directory",
        });
    }
    let tmp = temp_sibling(path);
    let mut guard = TempGuard(Some(tmp.clone()));
    write(&tmp)?;
    fs_err::rename(&tmp, path).map_err(io_at(path))?;
    guard.0 = None;
    Ok(())
}

fn write_dir_atomically(
    dir: &Path,
    force: bool,
    members: &[(&str, Member<'_>)],
) -> Result<(), SinkError> {
    let exists = check_exists(dir, force)?;
    let tmp = temp_sibling(dir);
    let mut guard = TempGuard(Some(tmp.clone()));
    fs_err::create_dir(&tmp).map_err(io_at(&tmp))?;
    for (name, m) in members {
        let p = tmp.join(name);
        match m {
            Member::Dir => fs_err::create_dir_all(&p).map_err(io_at(&p))?,
            Member::Bytes(b) => fs_err::write(&p, b).map_err(io_at(&p))?,
            Member::File(src) => {
                fs_err::copy(src, &p).map_err(io_at(&p))?;
            }
            Member::Blob(b) => {
                let mut f = fs_err::File::create(&p).map_err(io_at(&p))?;
                io::copy(&mut b.reader(), &mut f).map_err(io_at(&p))?;
            }
        }
    }
    if exists {
        // Move the old output aside first: rename cannot replace a non-empty directory.
        let old = temp_sibling(dir).with_extension("old");
        fs_err::rename(dir, &old).map_err(io_at(dir))?;
        let r = fs_err::rename(&tmp, dir).map_err(io_at(dir));
        if r.is_err() {
            let _ = std::fs::rename(&old, dir);
            return r;
        }
        let _ = std::fs::remove_dir_all(&old).or_else(|_| std::fs::remove_file(&old));
    } else {
        fs_err::rename(&tmp, dir).map_err(io_at(dir))?;
    }
    guard.0 = None;
    Ok(())
}
