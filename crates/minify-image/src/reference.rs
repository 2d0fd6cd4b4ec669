//! `ImageRef`: where an image is read from or written to, in the transport syntax skopeo and
//! podman use (`docker-archive:PATH`, `oci:DIR[:TAG]`, `oci-archive:PATH`), with a bare
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
    /// write).
    DockerArchive(PathBuf),
    /// An OCI image layout directory, optionally naming one image of its index by its
    /// `org.opencontainers.image.ref.name` annotation.
    OciDir { dir: PathBuf, tag: Option<String> },
    /// An OCI image layout in a tarball.
    OciArchive(PathBuf),
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
    /// A daemon reference with characters Docker never accepts.
    #[error(
        "image reference {0:?} is not a valid Docker image name (expected name[:tag] or name@sha256:<hex>, or docker-archive:PATH, oci:DIR[:TAG], oci-archive:PATH)"
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

    /// Whether this names a file or directory output (not the daemon).
    pub fn is_file(&self) -> bool {
        !matches!(self, ImageRef::Daemon(_))
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
            return Ok(ImageRef::DockerArchive(path(rest, "docker-archive")?));
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            return Ok(ImageRef::OciArchive(path(rest, "oci-archive")?));
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            // `oci:DIR:TAG`: the tag is what follows the last colon when it looks like a tag
            // (no slash), so directories with colons still work.
            let (dir, tag) = match rest.rsplit_once(':') {
                Some((d, t)) if !d.is_empty() && valid_tag(t) => (d, Some(t.to_owned())),
                _ => (rest, None),
            };
            return Ok(ImageRef::OciDir {
                dir: path(dir, "oci")?,
                tag,
            });
        }
        if let Some(rest) = s.strip_prefix("docker-daemon:") {
            return rest.parse();
        }
        if !valid_daemon_name(s) {
            return Err(RefError::BadName(s.to_owned()));
        }
        Ok(ImageRef::Daemon(s.to_owned()))
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Daemon(n) => f.write_str(n),
            ImageRef::DockerArchive(p) => write!(f, "docker-archive:{}", p.display()),
            ImageRef::OciDir { dir, tag: None } => write!(f, "oci:{}", dir.display()),
            ImageRef::OciDir { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
            ImageRef::OciArchive(p) => write!(f, "oci-archive:{}", p.display()),
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
            "oci:/tmp/layout",
            "oci:/tmp/layout:v1",
            "oci-archive:out.tar",
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
        ] {
            let err = s.parse::<ImageRef>().unwrap_err();
            assert!(!err.to_string().is_empty());
        }
    }
}
