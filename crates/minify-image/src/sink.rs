//! Writing a [`PackedImage`] out: into the Docker daemon, or as `docker-archive:`, `oci:`
//! or `oci-archive:`.
//!
//! No half-written output is ever visible: files and directories are written under a
//! temporary sibling name and renamed into place; the daemon gets the image under a
//! temporary tag that is only renamed to the requested one once the load succeeded.
//! An existing file or directory output is an error unless `force` is given.

use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use futures_util::StreamExt as _;
use serde_json::json;

use crate::{Digest, ImageRef, PackedImage};

const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

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
    #[error("cannot reach the Docker daemon to load {reference}: {source}")]
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
}

impl SinkError {
    /// The daemon is missing: exit code 3, not 2.
    pub fn is_environment(&self) -> bool {
        matches!(self, SinkError::DaemonUnreachable { .. })
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
}

impl PackedImage {
    /// Write the image to `out`; returns the written image id.
    pub async fn write_to(&self, out: &ImageRef, force: bool) -> Result<Digest, SinkError> {
        match out {
            ImageRef::Daemon(name) => self.load_into_daemon(name).await,
            ImageRef::DockerArchive(path) => {
                let members = self.docker_archive_members(None);
                write_file_atomically(path, force, |tmp| write_tar(tmp, &members.borrowed()))?;
                Ok(self.id.clone())
            }
            ImageRef::OciArchive(path) => {
                let layout = self.oci_layout(None);
                write_file_atomically(path, force, |tmp| write_tar(tmp, &layout.borrowed()))?;
                Ok(self.id.clone())
            }
            ImageRef::OciDir { dir, tag } => {
                let layout = self.oci_layout(tag.as_deref());
                write_dir_atomically(dir, force, &layout.borrowed())?;
                Ok(self.id.clone())
            }
        }
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

    fn oci_layout(&self, tag: Option<&str>) -> Owned<'_> {
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": self.id.as_str(), "size": self.config.len()},
            "layers": [{"mediaType": MT_LAYER, "digest": self.diff_id.as_str(), "size": self.layer_size}],
        }))
        .expect("json");
        let mdigest = Digest::of_bytes(&manifest);
        let mut desc =
            json!({"mediaType": MT_MANIFEST, "digest": mdigest.as_str(), "size": manifest.len()});
        if let Some(t) = tag {
            desc["annotations"] = json!({"org.opencontainers.image.ref.name": t});
        }
        let index = json!({"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": [desc]});
        Owned {
            bytes: vec![
                (
                    "oci-layout".into(),
                    br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
                ),
                (
                    "index.json".into(),
                    serde_json::to_vec(&index).expect("json"),
                ),
                (format!("blobs/sha256/{}", mdigest.hex()), manifest),
                (
                    format!("blobs/sha256/{}", self.id.hex()),
                    self.config.clone(),
                ),
            ],
            dirs: vec!["blobs/".into(), "blobs/sha256/".into()],
            files: vec![(
                format!("blobs/sha256/{}", self.diff_id.hex()),
                &self.layer_path,
            )],
        }
    }

    async fn load_into_daemon(&self, name: &str) -> Result<Digest, SinkError> {
        let target: ImageRef = name.parse().map_err(|_| SinkError::BadTarget {
            reference: name.to_owned(),
            reason: "not a valid image name",
        })?;
        let Some((repo, tag)) = target.daemon_repo_tag() else {
            unreachable!("a daemon reference")
        };
        if name.contains('@') || name.starts_with("sha256:") {
            return Err(SinkError::BadTarget {
                reference: name.to_owned(),
                reason: "an output needs a name:tag, not a digest",
            });
        }
        let tag = tag.unwrap_or("latest");
        let unreachable = |source| SinkError::DaemonUnreachable {
            reference: name.to_owned(),
            source,
        };
        let docker = bollard::Docker::connect_with_local_defaults().map_err(unreachable)?;
        docker.ping().await.map_err(unreachable)?;

        // Load under a unique temporary tag, so a failed load never leaves the requested
        // name pointing at a half-loaded image.
        let tmp_tag = format!("minify-load:{}-{}", self.id.short(), std::process::id());
        let members = self.docker_archive_members(Some(&tmp_tag));
        let archive = self.tmp.path().join("load.tar");
        write_tar(&archive, &members.borrowed())?;
        let file = tokio::fs::File::open(&archive)
            .await
            .map_err(io_at(&archive))?;
        let body = futures_util::stream::unfold(file, |mut f| async move {
            use tokio::io::AsyncReadExt as _;
            let mut buf = vec![0u8; 1 << 20];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, io::Error>(bytes::Bytes::from(buf)), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        });
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
        let tag_opts = bollard::query_parameters::TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(tag)
            .build();
        let tagged = docker.tag_image(&tmp_tag, Some(tag_opts)).await;
        // Drop the temporary tag whatever happened (the image stays under its real name).
        let rm = bollard::query_parameters::RemoveImageOptionsBuilder::default()
            .noprune(true)
            .build();
        let _ = docker.remove_image(&tmp_tag, Some(rm), None).await;
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
        if id != self.id.as_str() {
            return Err(SinkError::Daemon {
                what: "load",
                reference: name.to_owned(),
                reason: format!("it reports id {id}, expected {}", self.id),
            });
        }
        Ok(self.id.clone())
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
    let mut b = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, file));
    let result = (|| -> io::Result<()> {
        for (name, m) in members {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            match m {
                Member::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, name, io::empty())?;
                }
                Member::Bytes(bytes) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    h.set_size(bytes.len() as u64);
                    b.append_data(&mut h, name, *bytes)?;
                }
                Member::File(p) => {
                    let f = fs_err::File::open(p)?;
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    h.set_size(f.metadata()?.len());
                    b.append_data(&mut h, name, f.take(u64::MAX))?;
                }
            }
        }
        let w = b.into_inner()?;
        w.into_inner()
            .map_err(io::IntoInnerError::into_error)?
            .sync_all()
    })();
    result.map_err(io_at(path))
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
