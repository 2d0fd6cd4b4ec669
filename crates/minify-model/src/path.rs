//! `ImagePath`: an absolute, normalised path inside an image's root filesystem.
//!
//! Normalisation is purely lexical (`.` dropped, empty components dropped, `..` pops but never
//! above `/`), which is exactly what "resolve against the image root" means for paths that
//! contain no symlinks. Symlinks are handled by [`crate::rootfs::resolve`].

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An absolute path inside an image, always starting with `/`, never with `.`/`..`/empty
/// components or a trailing slash (except the root itself, `/`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImagePath(String);

impl ImagePath {
    /// The image root, `/`.
    pub fn root() -> Self {
        ImagePath("/".to_owned())
    }

    /// Normalise any path string (absolute or relative; relative is taken from `/`).
    /// `..` never climbs above the root: `/../../etc` is `/etc`.
    pub fn new(raw: &str) -> Self {
        Self::root().join(raw)
    }

    /// Normalise a tar entry name (`./usr/bin/`, `usr/bin`) into an image path.
    /// Returns `None` for names that try to leave the root with `..` or that are
    /// absolute: a well-formed layer never has them, so the caller rejects the layer.
    pub fn from_tar_name(raw: &str) -> Option<Self> {
        if raw.starts_with('/') {
            return None;
        }
        let mut parts: Vec<&str> = Vec::new();
        for comp in raw.split('/') {
            match comp {
                "" | "." => {}
                ".." => return None,
                c => parts.push(c),
            }
        }
        Some(Self::from_parts(&parts))
    }

    fn from_parts(parts: &[&str]) -> Self {
        if parts.is_empty() {
            return Self::root();
        }
        let mut s = String::new();
        for p in parts {
            s.push('/');
            s.push_str(p);
        }
        ImagePath(s)
    }

    /// Join `rel` onto this path. An absolute `rel` starts again from the image root.
    #[must_use]
    pub fn join(&self, rel: &str) -> Self {
        let mut parts: Vec<&str> = if rel.starts_with('/') {
            Vec::new()
        } else {
            self.components().collect()
        };
        for comp in rel.split('/') {
            match comp {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                c => parts.push(c),
            }
        }
        Self::from_parts(&parts)
    }

    /// The path as a string, e.g. `/usr/bin/ls`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `/`.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The components, without the leading root: `/usr/bin` gives `usr`, `bin`.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// The parent directory; `None` for the root.
    pub fn parent(&self) -> Option<ImagePath> {
        if self.is_root() {
            return None;
        }
        let idx = self.0.rfind('/').unwrap_or(0);
        if idx == 0 {
            Some(Self::root())
        } else {
            Some(ImagePath(self.0[..idx].to_owned()))
        }
    }

    /// All ancestors from the root down, excluding `self`: `/a/b/c` gives `/`, `/a`, `/a/b`.
    pub fn ancestors(&self) -> Vec<ImagePath> {
        let mut out = Vec::new();
        let mut cur = self.parent();
        while let Some(p) = cur {
            cur = p.parent();
            out.push(p);
        }
        out.reverse();
        out
    }

    /// The last component; `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        if self.is_root() {
            None
        } else {
            self.0.rsplit('/').next()
        }
    }

    /// Whether `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &ImagePath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// The name to use inside a layer tar: `usr/bin/ls` (no leading slash), `.` for the root.
    pub fn tar_name(&self) -> &str {
        if self.is_root() { "." } else { &self.0[1..] }
    }
}

impl fmt::Display for ImagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ImagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for ImagePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ImagePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if !s.starts_with('/') {
            return Err(serde::de::Error::custom(format!(
                "image path {s:?} is not absolute"
            )));
        }
        Ok(ImagePath::new(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        assert_eq!(ImagePath::new("/usr//bin/./ls").as_str(), "/usr/bin/ls");
        assert_eq!(ImagePath::new("/../../etc/passwd").as_str(), "/etc/passwd");
        assert_eq!(ImagePath::new("usr/lib/").as_str(), "/usr/lib");
        assert_eq!(ImagePath::new("").as_str(), "/");
        assert_eq!(ImagePath::new("/usr/lib").join("../../../x").as_str(), "/x");
        assert_eq!(ImagePath::new("/usr/lib").join("/etc").as_str(), "/etc");
    }

    #[test]
    fn tar_names() {
        assert_eq!(
            ImagePath::from_tar_name("./usr/bin/").unwrap().as_str(),
            "/usr/bin"
        );
        assert_eq!(ImagePath::from_tar_name("./").unwrap().as_str(), "/");
        assert!(ImagePath::from_tar_name("../etc/passwd").is_none());
        assert!(ImagePath::from_tar_name("a/../../b").is_none());
        assert!(ImagePath::from_tar_name("/etc/passwd").is_none());
        assert_eq!(ImagePath::new("/usr/bin/ls").tar_name(), "usr/bin/ls");
    }

    #[test]
    fn relations() {
        let p = ImagePath::new("/usr/lib/x86_64-linux-gnu");
        assert!(p.starts_with(&ImagePath::new("/usr")));
        assert!(!ImagePath::new("/usrx").starts_with(&ImagePath::new("/usr")));
        assert_eq!(p.parent().unwrap().as_str(), "/usr/lib");
        assert_eq!(
            p.ancestors()
                .iter()
                .map(ImagePath::as_str)
                .collect::<Vec<_>>(),
            ["/", "/usr", "/usr/lib"]
        );
        assert_eq!(p.file_name(), Some("x86_64-linux-gnu"));
    }
}
