//! Where an image's blobs are: members of an (uncompressed) outer tarball, indexed by offset
//! so they are read in place, or files of an OCI layout directory.
//!
//! Member names come from untrusted manifests: in an archive they are only keys of the
//! member index; in a directory only digest-derived names (`blobs/sha256/<64 hex>`) and the
//! fixed layout files are ever opened, so a manifest cannot name a host file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minify_model::ImagePath;

use crate::Digest;
use crate::hashio::RangeReader;

/// One blob: `len` bytes of `file` at `offset`.
#[derive(Clone, Debug)]
pub(crate) struct Blob {
    pub file: Arc<File>,
    pub offset: u64,
    pub len: u64,
    /// The name it was found under, for error messages.
    pub name: String,
}

impl Blob {
    pub(crate) fn reader(&self) -> RangeReader<'_> {
        RangeReader::new(&self.file, self.offset, self.len)
    }

    /// The whole blob in memory, for the small JSON ones; `limit` guards against a manifest
    /// pointing "config" at a layer.
    pub(crate) fn read_small(&self, limit: u64) -> io::Result<Vec<u8>> {
        if self.len > limit {
            return Err(io::Error::other(format!(
                "{} is {} bytes, more than the {limit} a JSON document may have",
                self.name, self.len
            )));
        }
        let mut v = Vec::with_capacity(self.len as usize);
        self.reader().read_to_end(&mut v)?;
        Ok(v)
    }

    /// The first bytes, to sniff the compression.
    pub(crate) fn head(&self) -> io::Result<[u8; 4]> {
        use std::os::unix::fs::FileExt as _;
        let mut b = [0u8; 4];
        let n = (self.len.min(4)) as usize;
        self.file.read_exact_at(&mut b[..n], self.offset)?;
        Ok(b)
    }
}

/// A set of named blobs.
pub(crate) enum Container {
    Archive {
        path: PathBuf,
        file: Arc<File>,
        /// Normalised member name -> (offset, size) of its data.
        members: HashMap<String, (u64, u64)>,
        /// Normalised member name -> normalised target of a symlink member (`docker save`
        /// links identical layers to each other).
        links: HashMap<String, String>,
    },
    Dir {
        root: PathBuf,
    },
}

fn normalise(name: &str) -> Option<String> {
    ImagePath::from_tar_name(name).map(|p| p.tar_name().to_owned())
}

impl Container {
    /// Index an archive's members (headers only: data is skipped by seeking).
    pub(crate) fn open_archive(file: File, path: &Path) -> io::Result<Container> {
        let mut members = HashMap::new();
        let mut links = HashMap::new();
        {
            let mut ar = tar::Archive::new(&file);
            for entry in ar.entries_with_seek()? {
                let entry = entry?;
                let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                // A member we could not name safely is simply not addressable.
                let Some(key) = normalise(&name) else {
                    continue;
                };
                match entry.header().entry_type() {
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        members.insert(key, (entry.raw_file_position(), entry.size()));
                    }
                    tar::EntryType::Symlink => {
                        if let Some(target) = entry.link_name_bytes() {
                            let target = String::from_utf8_lossy(&target).into_owned();
                            let base = ImagePath::new(&key)
                                .parent()
                                .unwrap_or_else(ImagePath::root);
                            links.insert(key, base.join(&target).tar_name().to_owned());
                        }
                    }
                    tar::EntryType::Link => {
                        if let Some(target) = entry.link_name_bytes()
                            && let Some(t) = normalise(&String::from_utf8_lossy(&target))
                        {
                            links.insert(key, t);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(Container::Archive {
            path: path.to_owned(),
            file: Arc::new(file),
            members,
            links,
        })
    }

    pub(crate) fn dir(root: &Path) -> Container {
        Container::Dir {
            root: root.to_owned(),
        }
    }

    /// Where this container is, for messages.
    pub(crate) fn location(&self) -> &Path {
        match self {
            Container::Archive { path, .. } => path,
            Container::Dir { root } => root,
        }
    }

    /// A member of an archive by name (following member symlinks). Directories only
    /// answer for the fixed layout files; blobs go through [`Container::blob`].
    pub(crate) fn member(&self, name: &str) -> io::Result<Option<Blob>> {
        match self {
            Container::Archive {
                file,
                members,
                links,
                ..
            } => {
                let Some(mut key) = normalise(name) else {
                    return Ok(None);
                };
                for _ in 0..16 {
                    if let Some(&(offset, len)) = members.get(&key) {
                        return Ok(Some(Blob {
                            file: file.clone(),
                            offset,
                            len,
                            name: name.to_owned(),
                        }));
                    }
                    match links.get(&key) {
                        Some(t) => key.clone_from(t),
                        None => return Ok(None),
                    }
                }
                Ok(None)
            }
            Container::Dir { root } => {
                debug_assert!(
                    matches!(name, "index.json" | "oci-layout")
                        || name.starts_with("blobs/sha256/")
                );
                open_in_layout(root, name)
            }
        }
    }

    /// A content-addressed blob, `blobs/sha256/<hex>`.
    pub(crate) fn blob(&self, digest: &Digest) -> io::Result<Option<Blob>> {
        self.member(&format!("blobs/sha256/{}", digest.hex()))
    }
}

/// Open `rel` (`index.json`, `oci-layout` or `blobs/sha256/<hex>`) inside the layout at
/// `root`, one component at a time with `O_NOFOLLOW`: a symlink anywhere below the root (the
/// blob, `blobs/` or `sha256/`) is refused, so a layout from an untrusted place cannot make
/// minify read a host file such as `/etc/shadow`. The file must be regular: its type is
/// checked before it is opened (a device is never opened) and again after; `O_NONBLOCK`
/// keeps a FIFO from blocking the open. Returns `None` when it does not exist.
fn open_in_layout(root: &Path, rel: &str) -> io::Result<Option<Blob>> {
    use nix::errno::Errno;
    use nix::fcntl::{AtFlags, OFlag, open, openat};
    use nix::sys::stat::{Mode, fstatat};

    let shown = root.join(rel);
    let refuse = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is {what}; a layout's files must be regular files inside it",
                shown.display()
            ),
        )
    };
    let sys = |e: Errno| io::Error::other(format!("{}: {}", shown.display(), e.desc()));
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut dir = open(root, dir_flags, Mode::empty()).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("{}: {}", root.display(), e.desc()),
        )
    })?;
    let mut parts = rel.split('/').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_some() {
            dir = match openat(&dir, part, dir_flags | OFlag::O_NOFOLLOW, Mode::empty()) {
                Ok(d) => d,
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    let kind = fstatat(&dir, part, AtFlags::AT_SYMLINK_NOFOLLOW)
                        .ok()
                        .and_then(|st| kind_of(st.st_mode))
                        .unwrap_or("not a directory");
                    return Err(refuse(&format!("under {kind}")));
                }
                Err(e) => return Err(sys(e)),
            };
            continue;
        }
        let st = match fstatat(&dir, part, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(sys(e)),
        };
        if let Some(kind) = kind_of(st.st_mode) {
            return Err(refuse(kind));
        }
        let fd = openat(
            &dir,
            part,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ELOOP => refuse("a symbolic link"),
            e => sys(e),
        })?;
        let file = File::from(fd);
        let meta = file
            .metadata()
            .map_err(|e| io::Error::other(format!("{}: {e}", shown.display())))?;
        if !meta.is_file() {
            return Err(refuse("not a regular file"));
        }
        return Ok(Some(Blob {
            file: Arc::new(file),
            offset: 0,
            len: meta.len(),
            name: rel.to_owned(),
        }));
    }
    Ok(None)
}

/// What a non-regular `st_mode` is, for messages; `None` for a regular file.
fn kind_of(mode: u32) -> Option<&'static str> {
    Some(match mode & 0o170_000 {
        0o100_000 => return None,
        0o040_000 => "a directory",
        0o010_000 => "a FIFO",
        0o020_000 => "a character device",
        0o060_000 => "a block device",
        0o140_000 => "a socket",
        0o120_000 => "a symbolic link",
        _ => "not a regular file",
    })
}
