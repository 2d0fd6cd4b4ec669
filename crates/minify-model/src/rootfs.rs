//! The read-only view of an image's flattened root filesystem, and symlink resolution that
//! never leaves it.
//!
//! `minify-image` builds the real view from layers ([`Rootfs`] is implemented there); the
//! closure and ELF crates only see this trait. Resolution is done here once, so every crate
//! confines paths the same way: an absolute link target or a `..` restarts from / stops at
//! the *image* root, exactly as the kernel does inside a chroot. The host filesystem is never
//! consulted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ImagePath;

/// Most symlinks followed in one resolution; Linux's own limit is 40 (`MAXSYMLINKS`).
pub const MAX_SYMLINKS: usize = 40;

/// What kind of filesystem object an entry is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link with its target exactly as stored (may be absolute or relative).
    Symlink { target: String },
    /// A hard link to another regular file of the image (already normalised).
    Hardlink { target: ImagePath },
    /// A character device node.
    CharDevice { major: u32, minor: u32 },
    /// A block device node.
    BlockDevice { major: u32, minor: u32 },
    /// A named pipe.
    Fifo,
}

/// One entry of the flattened image: metadata exactly as the top-most layer that defines it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub kind: EntryKind,
    /// Permission bits and set-id/sticky bits (`0o7777`), without the file-type bits.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch, as in the layer's tar header.
    pub mtime: u64,
    /// Size in bytes of a regular file's content (0 for everything else).
    pub size: u64,
    /// Extended attributes (`security.capability`, ...), sorted by name.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, EntryKind::Dir)
    }
    pub fn is_file(&self) -> bool {
        matches!(self.kind, EntryKind::File | EntryKind::Hardlink { .. })
    }
    pub fn is_symlink(&self) -> bool {
        matches!(self.kind, EntryKind::Symlink { .. })
    }
}

/// A read-only image filesystem. Paths are image paths; nothing here follows symlinks except
/// [`resolve`].
pub trait Rootfs {
    /// The entry at exactly `path`, without following a symlink at its last component, and
    /// without following symlinks in its parents either (it is an index lookup).
    fn entry(&self, path: &ImagePath) -> Option<&Entry>;

    /// Up to `limit` bytes of a regular file's content (`None`: the whole file). Hardlinks
    /// read their target's content.
    fn read(&self, path: &ImagePath, limit: Option<u64>) -> std::io::Result<Vec<u8>>;

    /// The direct children of a directory, sorted. Empty for non-directories.
    fn children(&self, dir: &ImagePath) -> Vec<ImagePath>;

    /// Every path in the view, sorted.
    fn paths(&self) -> Vec<ImagePath>;

    /// The image config's environment (`KEY=value`), used for `PATH` and `LD_LIBRARY_PATH`.
    fn env(&self) -> &[String];
}

/// The result of resolving a path inside the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The final path with every symlink followed; it exists in the image.
    pub path: ImagePath,
    /// Every symlink that was followed on the way, in order (including ones in parent
    /// components, such as `/lib` for `/lib/x86_64-linux-gnu/libc.so.6`).
    pub via: Vec<ImagePath>,
}

/// Why a path did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// A component does not exist in the image (the symlinks followed so far are given, so a
    /// caller can still keep a dangling link if it wants to).
    #[error("{path} does not exist in the image (looking up {missing})")]
    NotFound {
        path: String,
        missing: ImagePath,
        via: Vec<ImagePath>,
    },
    /// A non-final component is not a directory.
    #[error("{path}: {component} is not a directory")]
    NotADirectory { path: String, component: ImagePath },
    /// More than [`MAX_SYMLINKS`] links, i.e. a loop.
    #[error("{path}: too many levels of symbolic links (a loop?)")]
    Loop { path: String },
}

/// Resolve `path` inside the image: every symlink, in any component, is followed with the
/// image root as `/`; `..` at the root stays at the root. With `follow_last = false` a
/// symlink in the last component is not followed (like `lstat`).
pub fn resolve(fs: &dyn Rootfs, path: &str, follow_last: bool) -> Result<Resolved, ResolveError> {
    let mut via = Vec::new();
    // Pending components, in reverse so we can push a link's target components on top.
    let mut pending: Vec<String> = Vec::new();
    push_components(&mut pending, path);
    let mut cur = ImagePath::root();
    let mut links = 0usize;

    while let Some(comp) = pending.pop() {
        match comp.as_str() {
            "" | "." => continue,
            ".." => {
                cur = cur.parent().unwrap_or_else(ImagePath::root);
                continue;
            }
            _ => {}
        }
        let next = cur.join(&comp);
        let Some(entry) = fs.entry(&next) else {
            return Err(ResolveError::NotFound {
                path: path.to_owned(),
                missing: next,
                via,
            });
        };
        let is_last = pending.iter().all(|c| c.is_empty() || c == ".");
        match &entry.kind {
            EntryKind::Symlink { target } if follow_last || !is_last => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(ResolveError::Loop {
                        path: path.to_owned(),
                    });
                }
                via.push(next);
                if target.starts_with('/') {
                    cur = ImagePath::root();
                }
                push_components(&mut pending, target);
            }
            EntryKind::Dir => cur = next,
            _ if is_last => cur = next,
            _ => {
                return Err(ResolveError::NotADirectory {
                    path: path.to_owned(),
                    component: next,
                });
            }
        }
    }
    Ok(Resolved { path: cur, via })
}

fn push_components(pending: &mut Vec<String>, path: &str) {
    for c in path.rsplit('/') {
        pending.push(c.to_owned());
    }
}

/// A tiny in-memory [`Rootfs`] for unit tests of crates that consume the trait. Real images
/// go through `minify-image`; this only lets pure logic be tested without tarballs.
#[doc(hidden)]
pub mod memfs {
    use super::{Entry, EntryKind, ImagePath, Rootfs};
    use std::collections::BTreeMap;

    #[derive(Default)]
    pub struct MemFs {
        pub entries: BTreeMap<ImagePath, Entry>,
        pub data: BTreeMap<ImagePath, Vec<u8>>,
        pub env: Vec<String>,
    }

    fn meta(kind: EntryKind, mode: u32, size: u64) -> Entry {
        Entry {
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            size,
            xattrs: BTreeMap::new(),
        }
    }

    impl MemFs {
        pub fn dir(&mut self, p: &str) -> &mut Self {
            self.entries
                .insert(ImagePath::new(p), meta(EntryKind::Dir, 0o755, 0));
            self
        }
        pub fn file(&mut self, p: &str, content: &[u8]) -> &mut Self {
            let path = ImagePath::new(p);
            self.entries.insert(
                path.clone(),
                meta(EntryKind::File, 0o644, content.len() as u64),
            );
            self.data.insert(path, content.to_vec());
            self
        }
        pub fn symlink(&mut self, p: &str, target: &str) -> &mut Self {
            self.entries.insert(
                ImagePath::new(p),
                meta(
                    EntryKind::Symlink {
                        target: target.to_owned(),
                    },
                    0o777,
                    0,
                ),
            );
            self
        }
    }

    impl Rootfs for MemFs {
        fn entry(&self, path: &ImagePath) -> Option<&Entry> {
            if path.is_root() && !self.entries.contains_key(path) {
                static ROOT: std::sync::OnceLock<Entry> = std::sync::OnceLock::new();
                return Some(ROOT.get_or_init(|| meta(EntryKind::Dir, 0o755, 0)));
            }
            self.entries.get(path)
        }
        fn read(&self, path: &ImagePath, limit: Option<u64>) -> std::io::Result<Vec<u8>> {
            let d = self.data.get(path).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, path.to_string())
            })?;
            let n = limit.map_or(d.len(), |l| d.len().min(l as usize));
            Ok(d[..n].to_vec())
        }
        fn children(&self, dir: &ImagePath) -> Vec<ImagePath> {
            self.entries
                .keys()
                .filter(|p| p.parent().as_ref() == Some(dir))
                .cloned()
                .collect()
        }
        fn paths(&self) -> Vec<ImagePath> {
            self.entries.keys().cloned().collect()
        }
        fn env(&self) -> &[String] {
            &self.env
        }
    }
}

#[cfg(test)]
mod tests {
    use super::memfs::MemFs;
    use super::*;

    fn fs() -> MemFs {
        let mut fs = MemFs::default();
        fs.dir("/usr")
            .dir("/usr/lib")
            .dir("/usr/lib/x86_64-linux-gnu")
            .file("/usr/lib/x86_64-linux-gnu/libc.so.6", b"elf")
            .symlink("/lib", "usr/lib")
            .symlink("/lib64", "/usr/lib")
            .dir("/usr/bin")
            .file("/usr/bin/dash", b"x")
            .symlink("/usr/bin/sh", "dash")
            .symlink("/escape", "../../../../etc/shadow")
            .symlink("/loop1", "loop2")
            .symlink("/loop2", "loop1")
            .symlink("/usr/bin/up", "../../lib");
        fs
    }

    #[test]
    fn follows_parent_and_last_links() {
        let fs = fs();
        let r = resolve(&fs, "/lib/x86_64-linux-gnu/libc.so.6", true).unwrap();
        assert_eq!(r.path.as_str(), "/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(r.via, vec![ImagePath::new("/lib")]);
        let r = resolve(&fs, "/usr/bin/sh", true).unwrap();
        assert_eq!(r.path.as_str(), "/usr/bin/dash");
        let r = resolve(&fs, "/usr/bin/sh", false).unwrap();
        assert_eq!(r.path.as_str(), "/usr/bin/sh");
        let r = resolve(&fs, "/usr/bin/up/x86_64-linux-gnu", true).unwrap();
        assert_eq!(r.path.as_str(), "/usr/lib/x86_64-linux-gnu");
        assert_eq!(
            r.via,
            vec![ImagePath::new("/usr/bin/up"), ImagePath::new("/lib")]
        );
    }

    #[test]
    fn never_leaves_root() {
        let fs = fs();
        // /escape -> ../../../../etc/shadow: clamps at the image root, /etc/shadow is absent.
        match resolve(&fs, "/escape", true) {
            Err(ResolveError::NotFound { missing, via, .. }) => {
                assert_eq!(missing.as_str(), "/etc");
                assert_eq!(via, vec![ImagePath::new("/escape")]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn loops_and_non_dirs() {
        let fs = fs();
        assert!(matches!(
            resolve(&fs, "/loop1", true),
            Err(ResolveError::Loop { .. })
        ));
        assert!(matches!(
            resolve(&fs, "/usr/bin/dash/x", true),
            Err(ResolveError::NotADirectory { .. })
        ));
    }
}
