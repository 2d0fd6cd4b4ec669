//! The allowlist: the reviewable, reusable product of a run.
//!
//! Format (JSON, deterministic, sorted by path, one path per line so diffs review well):
//! ```json
//! {
//!   "minify_allowlist": 1,
//!   "tool": "minify 0.1.0",
//!   "source": {"image": "nginx:fixture", "digest": "sha256:..."},
//!   "paths": [
//!     {"path": "/", "reason": "parent"},
//!     {"path": "/usr/sbin/nginx", "reason": "traced"},
//!     {"path": "/etc/ssl/certs", "reason": "default-set", "detail": "ca-certificates"},
//!     {"path": "/usr/lib/x86_64-linux-gnu/gconv/ISO8859-1.so", "reason": "package", "detail": "libc6 2.36-9+deb12u13 (deb)"}
//!   ]
//! }
//! ```
//! Each listed path is exactly one image entry (a directory entry means the directory
//! itself, not its contents: `--include DIR` is expanded when the allowlist is made).
//! Building from the same image and the same allowlist gives the same image digest.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::ImagePath;

/// Current format version, the value of `minify_allowlist`.
pub const FORMAT_VERSION: u32 = 1;

/// Why a path is kept. The order is the priority when one path has several reasons (the
/// first one wins, so "traced" beats "parent").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The workload opened/exec'd/stat'ed it.
    Traced,
    /// A user `--include` rule.
    Include,
    /// An ELF interpreter or DT_NEEDED library of a kept binary (or `ld.so.cache`).
    Elf,
    /// The `#!` interpreter of a kept script.
    Interpreter,
    /// A default support set (CA certificates, NSS, passwd/group, ...).
    DefaultSet,
    /// `--granularity package`: part of a package (dpkg, Python, npm, JDK) that owns a kept
    /// file; the detail is `NAME VERSION (KIND)`.
    Package,
    /// The pruned package database (`/var/lib/dpkg/status`, `info/<pkg>.list`/`.md5sums`, a
    /// kept Python distribution's `dist-info`, a kept npm package's `package.json`): always
    /// derived from the rest of the kept set; some of these files' bytes are generated (cut
    /// to what is kept), deterministically.
    PackageDb,
    /// A symlink met on the way to a kept path.
    Symlink,
    /// A directory above a kept path.
    Parent,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::Traced => "traced",
            Reason::Include => "include",
            Reason::Elf => "elf",
            Reason::Interpreter => "interpreter",
            Reason::DefaultSet => "default-set",
            Reason::Package => "package",
            Reason::PackageDb => "package-db",
            Reason::Symlink => "symlink",
            Reason::Parent => "parent",
        }
    }
}

/// One kept path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowlistEntry {
    pub path: ImagePath,
    pub reason: Reason,
    /// Free text that makes the reason reviewable: the set name, the binary that needs a
    /// library, the script whose interpreter this is. Must be deterministic.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The image an allowlist was made from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceImage {
    /// The reference as the user gave it (informative).
    pub image: String,
    /// The image id (`sha256:` of its config), which `minify build` checks.
    pub digest: String,
}

/// A whole allowlist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowlist {
    pub minify_allowlist: u32,
    pub tool: String,
    pub source: SourceImage,
    pub paths: Vec<AllowlistEntry>,
}

/// Problems reading or merging allowlists.
#[derive(Debug, thiserror::Error)]
pub enum AllowlistError {
    /// Not JSON or not the allowlist shape.
    #[error("{file}: not a minify allowlist: {source}")]
    Parse {
        file: String,
        source: serde_json::Error,
    },
    /// A format version this build does not know.
    #[error(
        "{file}: allowlist format {found} is not supported (this minify reads {FORMAT_VERSION})"
    )]
    Version { file: String, found: u32 },
    /// Merging allowlists made from different images.
    #[error(
        "cannot merge allowlists of different images: {a} is from {a_digest}, {b} is from {b_digest}"
    )]
    DifferentImages {
        a: String,
        a_digest: String,
        b: String,
        b_digest: String,
    },
}

impl Allowlist {
    /// An allowlist from `(path, reason, detail)` triples; duplicates keep the highest
    /// priority reason; the result is sorted by path.
    pub fn new(
        source: SourceImage,
        tool: impl Into<String>,
        entries: impl IntoIterator<Item = AllowlistEntry>,
    ) -> Self {
        let mut map: BTreeMap<ImagePath, AllowlistEntry> = BTreeMap::new();
        for e in entries {
            match map.get(&e.path) {
                Some(old) if (old.reason, &old.detail) <= (e.reason, &e.detail) => {}
                _ => {
                    map.insert(e.path.clone(), e);
                }
            }
        }
        Allowlist {
            minify_allowlist: FORMAT_VERSION,
            tool: tool.into(),
            source,
            paths: map.into_values().collect(),
        }
    }

    /// Parse an allowlist; `file` names it in errors.
    pub fn from_json(file: &str, text: &str) -> Result<Self, AllowlistError> {
        let al: Allowlist = serde_json::from_str(text).map_err(|source| AllowlistError::Parse {
            file: file.to_owned(),
            source,
        })?;
        if al.minify_allowlist != FORMAT_VERSION {
            return Err(AllowlistError::Version {
                file: file.to_owned(),
                found: al.minify_allowlist,
            });
        }
        // Re-normalise: hand-edited files may be unsorted or hold duplicates.
        Ok(Allowlist::new(al.source, al.tool, al.paths))
    }

    /// The deterministic text form: sorted, one path per line, trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = String::new();
        s.push_str("{\n");
        let _ = writeln!(s, "  \"minify_allowlist\": {},", self.minify_allowlist);
        let _ = writeln!(s, "  \"tool\": {},", json_str(&self.tool));
        let _ = writeln!(
            s,
            "  \"source\": {{\"image\": {}, \"digest\": {}}},",
            json_str(&self.source.image),
            json_str(&self.source.digest)
        );
        s.push_str("  \"paths\": [\n");
        for (i, e) in self.paths.iter().enumerate() {
            let comma = if i + 1 == self.paths.len() { "" } else { "," };
            // serde_json of a flat struct is a single line with a stable field order.
            let line = serde_json::to_string(e).expect("allowlist entry serialises");
            let _ = writeln!(s, "    {line}{comma}");
        }
        s.push_str("  ]\n}\n");
        s
    }

    /// Union of several allowlists of the same image (`minify merge`). `names` are used in
    /// the error when two were made from different images.
    pub fn merge(items: &[(String, Allowlist)]) -> Result<Allowlist, AllowlistError> {
        let Some((first_name, first)) = items.first() else {
            return Ok(Allowlist::new(SourceImage::default(), "", []));
        };
        for (name, al) in &items[1..] {
            if al.source.digest != first.source.digest {
                return Err(AllowlistError::DifferentImages {
                    a: first_name.clone(),
                    a_digest: first.source.digest.clone(),
                    b: name.clone(),
                    b_digest: al.source.digest.clone(),
                });
            }
        }
        Ok(Allowlist::new(
            first.source.clone(),
            first.tool.clone(),
            items.iter().flat_map(|(_, a)| a.paths.iter().cloned()),
        ))
    }

    /// Just the paths.
    pub fn path_set(&self) -> Vec<ImagePath> {
        self.paths.iter().map(|e| e.path.clone()).collect()
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("string serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(p: &str, r: Reason) -> AllowlistEntry {
        AllowlistEntry {
            path: ImagePath::new(p),
            reason: r,
            detail: String::new(),
        }
    }

    #[test]
    fn roundtrip_sorted_dedup() {
        let src = SourceImage {
            image: "x".into(),
            digest: "sha256:ab".into(),
        };
        let al = Allowlist::new(
            src,
            "minify 0.1.0",
            [
                e("/usr/bin/ls", Reason::Traced),
                e("/usr", Reason::Parent),
                e("/usr/bin/ls", Reason::Parent),
            ],
        );
        assert_eq!(al.paths.len(), 2);
        assert_eq!(al.paths[1].reason, Reason::Traced);
        let text = al.to_json();
        assert!(text.contains("    {\"path\":\"/usr\",\"reason\":\"parent\"},\n"));
        let back = Allowlist::from_json("t.json", &text).unwrap();
        assert_eq!(back, al);
        assert_eq!(back.to_json(), text);
    }

    #[test]
    fn merge_rejects_other_images() {
        let a = Allowlist::new(
            SourceImage {
                image: "a".into(),
                digest: "sha256:1".into(),
            },
            "t",
            [e("/a", Reason::Traced)],
        );
        let mut b = a.clone();
        b.paths = vec![e("/b", Reason::Traced)];
        let m = Allowlist::merge(&[("a".into(), a.clone()), ("b".into(), b.clone())]).unwrap();
        assert_eq!(m.paths.len(), 2);
        b.source.digest = "sha256:2".into();
        let err = Allowlist::merge(&[("a".into(), a), ("b".into(), b)]).unwrap_err();
        assert!(err.to_string().contains("different images"), "{err}");
    }

    #[test]
    fn bad_input() {
        assert!(Allowlist::from_json("f", "{").is_err());
        let err = Allowlist::from_json(
            "f",
            r#"{"minify_allowlist":9,"tool":"","source":{"image":"","digest":""},"paths":[]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("format 9"), "{err}");
        assert!(
            Allowlist::from_json(
                "f",
                r#"{"minify_allowlist":1,"tool":"","source":{"image":"","digest":""},"paths":[{"path":"rel","reason":"traced"}]}"#
            )
            .is_err()
        );
    }
}
