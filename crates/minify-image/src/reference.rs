//! `ImageRef`: where an image is read from or written to, in the transport syntax skopeo and
//! podman use (`docker-archive:PATH[:NAME:TAG|:@INDEX]`, `oci:DIR[:TAG]`,
//! `oci-archive:PATH[:TAG]`, `docker://HOST[:PORT]/NAME[:TAG|@DIGEST]`), with a bare
//! `name:tag` / `name@sha256:..` meaning the Docker daemon.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// An image location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    /// In the Docker daemon: `name`, `name:tag`, `name@sha256:..`, or an image id
    /// `sha256:..`.
    Daemon(String),
    /// A `docker save` tarball (legacy `manifest.json` layout or the OCI one newer engines
    /// write), optionally naming one of its images: read, the image of a `docker save a b`
    /// to use; written, the name `docker load` gives the image (its `RepoTags`).
    DockerArchive {
        path: PathBuf,
        image: Option<ArchiveImage>,
    },
    /// An OCI image layout directory, optionally naming one image of its index by its
    /// `org.opencontainers.image.ref.name` annotation.
    OciDir { dir: PathBuf, tag: Option<String> },
    /// An OCI image layout in a tarball, optionally naming one image like [`ImageRef::OciDir`].
    OciArchive { path: PathBuf, tag: Option<String> },
    /// In a registry: `docker://HOST[:PORT]/NAME[:TAG|@DIGEST]`.
    Registry(RegistryRef),
}

/// An image in a registry, and how to reach it (skopeo's `--tls-verify`, `--cert-dir`; the
/// platform to pick from a multi-platform index).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryRef {
    /// `host[:port]`; `docker.io` for Docker Hub.
    pub registry: String,
    /// `team/app` (`library/x` on Docker Hub for a one-part name).
    pub repository: String,
    /// The tag; `latest` when neither a tag nor a digest was given.
    pub tag: Option<String>,
    /// The manifest digest (it wins over a tag when both are given, as in Docker).
    pub digest: Option<crate::Digest>,
    /// How to reach it: set from the command line, not part of the reference's text.
    pub access: RegistryAccess,
}

/// How to talk to a registry (skopeo's flags of the same names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryAccess {
    /// `--tls-verify=false`: HTTPS without checking the certificate, or plain HTTP.
    pub tls_verify: bool,
    /// `--cert-dir DIR`: its `*.crt` files are trusted CAs besides the system's.
    pub cert_dir: Option<PathBuf>,
    /// `--platform os/arch[/variant]`: the image to take from a multi-platform index (this
    /// machine's by default).
    pub platform: Option<String>,
}

impl Default for RegistryAccess {
    fn default() -> Self {
        RegistryAccess {
            tls_verify: true,
            cert_dir: None,
            platform: None,
        }
    }
}

impl RegistryRef {
    /// `host/name:tag` (or `host/name@digest`) as Docker names the image once pulled.
    pub fn docker_name(&self) -> String {
        let mut s = format!("{}/{}", self.registry, self.repository);
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_str());
        }
        s
    }

    /// Whether two references name the same tag or digest of the same repository.
    pub fn same_image(&self, other: &RegistryRef) -> bool {
        self.registry == other.registry
            && self.repository == other.repository
            && self.tag == other.tag
            && self.digest == other.digest
    }
}

/// Which image of a docker-archive (skopeo's `docker-archive:PATH:NAME:TAG` and
/// `docker-archive:PATH:@INDEX`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArchiveImage {
    /// A `name:tag` among the archive's `RepoTags`, as given (a name without a tag means
    /// `:latest`, as in Docker).
    Name(String),
    /// The image at this position of the archive's `manifest.json` (from 0; reading only).
    Index(usize),
}

impl ArchiveImage {
    /// For a name: in the form `docker save` writes RepoTags (`name:tag`, no
    /// `docker.io/library/` prefix, `:latest` when no tag was given).
    pub fn repo_tag(&self) -> Option<String> {
        let ArchiveImage::Name(n) = self else {
            return None;
        };
        Some(normalize_repo_tag(n))
    }
}

/// `name[:tag]` in the familiar form Docker writes in RepoTags: `:latest` added when there
/// is no tag, Docker Hub's `docker.io/` and `library/` prefixes removed.
pub fn normalize_repo_tag(name: &str) -> String {
    let short = name
        .strip_prefix("docker.io/")
        .or_else(|| name.strip_prefix("index.docker.io/"))
        .unwrap_or(name);
    let short = match short.strip_prefix("library/") {
        Some(rest) if !rest.contains('/') => rest,
        _ => short,
    };
    let daemon = ImageRef::Daemon(short.to_owned());
    let (repo, tag) = daemon.daemon_repo_tag().unwrap_or((short, None));
    format!("{repo}:{}", tag.unwrap_or("latest"))
}

impl fmt::Display for ArchiveImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArchiveImage::Name(n) => f.write_str(n),
            ArchiveImage::Index(i) => write!(f, "@{i}"),
        }
    }
}

/// A reference that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// Nothing given.
    #[error("empty image reference")]
    Empty,
    /// A transport with no path after it.
    #[error("image reference {0:?}: the {1}: transport needs a path")]
    MissingPath(String, &'static str),
    /// What follows `docker://` is not `HOST[:PORT]/NAME[:TAG|@DIGEST]`.
    #[error(
        "image reference {0:?}: expected docker://HOST[:PORT]/NAME[:TAG|@sha256:<hex>] after docker://"
    )]
    BadRegistryRef(String),
    /// What follows a docker-archive's path is neither `name:tag` nor `@INDEX`.
    #[error(
        "image reference {0:?}: after the docker-archive path, expected :NAME[:TAG] (a name in the archive, no digest) or :@INDEX (its position, from 0), got {1:?}"
    )]
    BadArchiveImage(String, String),
    /// A daemon reference with characters Docker never accepts.
    #[error(
        "image reference {0:?} is not a valid Docker image name (expected name[:tag] or name@sha256:<hex>, or docker-archive:PATH[:NAME:TAG|:@INDEX], oci:DIR[:TAG], oci-archive:PATH[:TAG])"
    )]
    BadName(String),
}

impl ImageRef {
    /// For a daemon reference: the repository and the tag (`nginx:1.2` gives `nginx`,
    /// `Some("1.2")`; `nginx` gives `nginx`, `None`; `nginx@sha256:..` gives `nginx`, `None`).
    pub fn daemon_repo_tag(&self) -> Option<(&str, Option<&str>)> {
        let ImageRef::Daemon(name) = self else {
            return None;
        };
        let name = name.split('@').next().unwrap_or(name);
        let slash = name.rfind('/').map_or(0, |i| i + 1);
        match name[slash..].rfind(':') {
            Some(i) => Some((&name[..slash + i], Some(&name[slash + i + 1..]))),
            None => Some((name, None)),
        }
    }

    /// For a daemon reference: the fully qualified form the daemon resolves it to, so two
    /// spellings of one reference compare equal: `x`, `x:latest`, `library/x`,
    /// `docker.io/library/x:latest` and `index.docker.io/library/x` all give
    /// `docker.io/library/x:latest`; `team/app:1` gives `docker.io/team/app:1`. A digest
    /// is kept (`name@sha256:..` gains no `:latest`), an image id is returned as it is.
    /// Docker's own rules (its `ParseNormalizedNamed`): the first component names a registry
    /// only when it holds a `.` or a `:` or is `localhost`.
    pub fn normalized_daemon_name(&self) -> Option<String> {
        let ImageRef::Daemon(name) = self else {
            return None;
        };
        if name.starts_with("sha256:") {
            return Some(name.clone());
        }
        let (named, digest) = match name.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (name.as_str(), None),
        };
        let (repo, tag) = ImageRef::Daemon(named.to_owned())
            .daemon_repo_tag()
            .map(|(r, t)| (r.to_owned(), t.map(str::to_owned)))?;
        let (domain, path) = match repo.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (first, rest.to_owned())
            }
            _ => ("docker.io", repo.clone()),
        };
        let domain = if domain == "index.docker.io" {
            "docker.io"
        } else {
            domain
        };
        let path = if domain == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let mut out = format!("{domain}/{path}");
        match (tag, digest) {
            (Some(t), _) => {
                out.push(':');
                out.push_str(&t);
            }
            (None, None) => out.push_str(":latest"),
            (None, Some(_)) => {}
        }
        if let Some(d) = digest {
            out.push('@');
            out.push_str(d);
        }
        Some(out)
    }

    /// Whether this is not in the Docker daemon: a file, a directory or a registry. Such a
    /// source runs from a temporary copy in the daemon, and such an output is written once
    /// it has been verified.
    pub fn is_file(&self) -> bool {
        !matches!(self, ImageRef::Daemon(_))
    }

    /// Set how registries are reached (no effect on other transports).
    #[must_use]
    pub fn with_access(mut self, access: &RegistryAccess) -> ImageRef {
        if let ImageRef::Registry(r) = &mut self {
            r.access = access.clone();
        }
        self
    }
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn valid_daemon_name(s: &str) -> bool {
    if let Some(id) = s.strip_prefix("sha256:") {
        return crate::digest::is_hex64(id);
    }
    let (name, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest
        && crate::Digest::parse(d).is_err()
    {
        return false;
    }
    !name.is_empty()
        && !name.starts_with(['-', '/', ':', '.'])
        && !name.ends_with(['/', ':'])
        && name.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'.' | b'_' | b'-' | b'/' | b':')
                // Tags may hold capitals.
                || b.is_ascii_uppercase()
        })
        && name.split('/').all(|c| !c.is_empty())
}

impl FromStr for ImageRef {
    type Err = RefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(RefError::Empty);
        }
        let path = |rest: &str, t: &'static str| {
            if rest.is_empty() {
                Err(RefError::MissingPath(s.to_owned(), t))
            } else {
                Ok(PathBuf::from(rest))
            }
        };
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            // As skopeo: the path ends at the first colon; what follows names the image.
            let (file, image) = match rest.split_once(':') {
                None => (rest, None),
                Some((file, which)) => {
                    let bad = || RefError::BadArchiveImage(s.to_owned(), which.to_owned());
                    let image = if let Some(n) = which.strip_prefix('@') {
                        ArchiveImage::Index(n.parse().map_err(|_| bad())?)
                    } else if which.contains('@')
                        || which.starts_with("sha256:")
                        || !valid_daemon_name(which)
                    {
                        return Err(bad());
                    } else {
                        ArchiveImage::Name(which.to_owned())
                    };
                    (file, Some(image))
                }
            };
            return Ok(ImageRef::DockerArchive {
                path: path(file, "docker-archive")?,
                image,
            });
        }
        // `oci:DIR:TAG` and `oci-archive:PATH:TAG`: the tag is what follows the last colon
        // when it looks like a tag (no slash), so paths with colons still work.
        let path_tag = |rest: &str, t: &'static str| {
            let (p, tag) = match rest.rsplit_once(':') {
                Some((d, t)) if !d.is_empty() && valid_tag(t) => (d, Some(t.to_owned())),
                _ => (rest, None),
            };
            Ok::<_, RefError>((path(p, t)?, tag))
        };
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (path, tag) = path_tag(rest, "oci-archive")?;
            return Ok(ImageRef::OciArchive { path, tag });
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = path_tag(rest, "oci")?;
            return Ok(ImageRef::OciDir { dir, tag });
        }
        if let Some(rest) = s.strip_prefix("docker-daemon:") {
            return rest.parse();
        }
        if let Some(rest) = s.strip_prefix("docker://") {
            return parse_registry(s, rest);
        }
        if !valid_daemon_name(s) {
            return Err(RefError::BadName(s.to_owned()));
        }
        Ok(ImageRef::Daemon(s.to_owned()))
    }
}

/// `HOST[:PORT]/NAME[:TAG|@DIGEST]` (or a Docker Hub name), normalised as Docker does.
fn parse_registry(whole: &str, rest: &str) -> Result<ImageRef, RefError> {
    let bad = || RefError::BadRegistryRef(whole.to_owned());
    if rest.starts_with("sha256:") || !valid_daemon_name(rest) {
        return Err(bad());
    }
    let full = ImageRef::Daemon(rest.to_owned())
        .normalized_daemon_name()
        .ok_or_else(bad)?;
    let (named, digest) = match full.split_once('@') {
        Some((n, d)) => (n, Some(crate::Digest::parse(d).map_err(|_| bad())?)),
        None => (full.as_str(), None),
    };
    let (registry, path) = named.split_once('/').ok_or_else(bad)?;
    let slash = path.rfind('/').map_or(0, |i| i + 1);
    let (repository, tag) = match path[slash..].rfind(':') {
        Some(i) => (&path[..slash + i], Some(path[slash + i + 1..].to_owned())),
        None => (path, None),
    };
    // Registries take lower-case repository names only.
    if repository.is_empty() || repository.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad());
    }
    Ok(ImageRef::Registry(RegistryRef {
        registry: registry.to_owned(),
        repository: repository.to_owned(),
        tag,
        digest,
        access: RegistryAccess::default(),
    }))
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Daemon(n) => f.write_str(n),
            ImageRef::DockerArchive { path, image: None } => {
                write!(f, "docker-archive:{}", path.display())
            }
            ImageRef::DockerArchive {
                path,
                image: Some(i),
            } => write!(f, "docker-archive:{}:{i}", path.display()),
            ImageRef::OciDir { dir, tag: None } => write!(f, "oci:{}", dir.display()),
            ImageRef::OciDir { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
            ImageRef::OciArchive { path, tag: None } => {
                write!(f, "oci-archive:{}", path.display())
            }
            ImageRef::OciArchive { path, tag: Some(t) } => {
                write!(f, "oci-archive:{}:{t}", path.display())
            }
            ImageRef::Registry(r) => write!(f, "docker://{}", r.docker_name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_transport_and_round_trips() {
        let hex = "a".repeat(64);
        for s in [
            "nginx",
            "nginx:fixture",
            "localhost:5000/team/app:v1.2",
            &format!("nginx@sha256:{hex}"),
            &format!("sha256:{hex}"),
            "docker-archive:/tmp/x.tar",
            "docker-archive:/tmp/x.tar:app:1.2-min",
            "docker-archive:/tmp/x.tar:localhost:5000/team/app:v1",
            "docker-archive:/tmp/x.tar:nginx",
            "docker-archive:x.tar:@1",
            "oci:/tmp/layout",
            "oci:/tmp/layout:v1",
            "oci-archive:out.tar",
            "oci-archive:out.tar:v1",
            "docker://127.0.0.1:5000/team/app:v1",
            "docker://localhost:5000/app:latest",
            &format!("docker://registry.example:443/app@sha256:{hex}"),
        ] {
            let r: ImageRef = s.parse().unwrap();
            assert_eq!(r.to_string(), s);
        }
        assert_eq!(
            "oci:/tmp/a:b/dir".parse::<ImageRef>().unwrap(),
            ImageRef::OciDir {
                dir: "/tmp/a:b/dir".into(),
                tag: None
            }
        );
        let r: ImageRef = "localhost:5000/app:v1".parse().unwrap();
        assert_eq!(
            r.daemon_repo_tag(),
            Some(("localhost:5000/app", Some("v1")))
        );
        let r: ImageRef = "localhost:5000/app".parse().unwrap();
        assert_eq!(r.daemon_repo_tag(), Some(("localhost:5000/app", None)));
        assert_eq!(
            "docker-archive:/tmp/two.tar:redis:7"
                .parse::<ImageRef>()
                .unwrap(),
            ImageRef::DockerArchive {
                path: "/tmp/two.tar".into(),
                image: Some(ArchiveImage::Name("redis:7".into()))
            }
        );
        assert_eq!(
            "docker-archive:two.tar:@0".parse::<ImageRef>().unwrap(),
            ImageRef::DockerArchive {
                path: "two.tar".into(),
                image: Some(ArchiveImage::Index(0))
            }
        );
    }

    #[test]
    fn registry_references_parse_as_skopeo_reads_them() {
        let reg = |s: &str| match s.parse::<ImageRef>().unwrap() {
            ImageRef::Registry(r) => r,
            other => panic!("{s}: {other:?}"),
        };
        let r = reg("docker://127.0.0.1:5000/team/app:v1");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "team/app", Some("v1"))
        );
        assert!(r.access.tls_verify);
        let r = reg("docker://localhost:5000/app");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        // A Docker Hub name, as skopeo takes it.
        let r = reg("docker://nginx");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "library/nginx")
        );
        let hex = "c".repeat(64);
        let r = reg(&format!("docker://h:1/a@sha256:{hex}"));
        assert_eq!(
            (r.tag, r.digest.map(|d| d.hex().to_owned())),
            (None, Some(hex))
        );
        for bad in [
            "docker://",
            "docker://h:1/",
            "docker://h:1/Upper/x:1",
            "docker://h:1/a@sha256:12",
            &format!("docker://sha256:{}", "d".repeat(64)),
            "docker://has space/x",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn archive_names_compare_in_the_form_docker_save_writes() {
        for (given, written) in [
            ("nginx", "nginx:latest"),
            ("nginx:1.25", "nginx:1.25"),
            ("docker.io/library/nginx:1", "nginx:1"),
            ("docker.io/team/app", "team/app:latest"),
            ("localhost:5000/app", "localhost:5000/app:latest"),
            ("localhost:5000/app:v2", "localhost:5000/app:v2"),
        ] {
            assert_eq!(
                ArchiveImage::Name(given.into()).repo_tag().as_deref(),
                Some(written),
                "{given}"
            );
        }
        assert_eq!(ArchiveImage::Index(3).repo_tag(), None);
    }

    #[test]
    fn spellings_of_one_daemon_reference_normalise_alike() {
        let norm = |s: &str| s.parse::<ImageRef>().unwrap().normalized_daemon_name();
        let hex = "b".repeat(64);
        for (spellings, canonical) in [
            (
                &[
                    "x",
                    "x:latest",
                    "library/x",
                    "docker.io/x",
                    "docker.io/library/x:latest",
                    "index.docker.io/library/x",
                    "docker-daemon:x",
                ][..],
                "docker.io/library/x:latest",
            ),
            (
                &[
                    "team/app:1",
                    "docker.io/team/app:1",
                    "index.docker.io/team/app:1",
                ][..],
                "docker.io/team/app:1",
            ),
            (
                &["localhost/app", "localhost/app:latest"][..],
                "localhost/app:latest",
            ),
            (
                &[
                    "localhost:5000/app:v1",
                    "docker-daemon:localhost:5000/app:v1",
                ][..],
                "localhost:5000/app:v1",
            ),
        ] {
            for s in spellings {
                assert_eq!(norm(s).as_deref(), Some(canonical), "{s}");
            }
        }
        // Different references stay different.
        assert_ne!(norm("x:1"), norm("x:2"));
        assert_ne!(norm("team/x"), norm("x"));
        assert_ne!(norm("localhost/x"), norm("x"));
        assert_ne!(norm("quay.io/x"), norm("x"));
        // A digest is kept and gains no tag; an id is left as it is.
        assert_eq!(
            norm(&format!("x@sha256:{hex}")).unwrap(),
            format!("docker.io/library/x@sha256:{hex}")
        );
        assert_eq!(
            norm(&format!("sha256:{hex}")).unwrap(),
            format!("sha256:{hex}")
        );
        assert_eq!(norm("oci:dir"), None);
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "docker-archive:",
            "oci:",
            "has space",
            "a@sha256:12",
            "-x",
            "a//b",
            "docker-archive::app:1",
            "docker-archive:x.tar:",
            "docker-archive:x.tar:@",
            "docker-archive:x.tar:@-1",
            "docker-archive:x.tar:@one",
            "docker-archive:x.tar:app@sha256:0000",
            "docker-archive:x.tar:Has Space",
        ] {
            let err = s.parse::<ImageRef>().unwrap_err();
            assert!(!err.to_string().is_empty());
        }
    }
}
