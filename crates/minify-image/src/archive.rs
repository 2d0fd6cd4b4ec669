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
    pub(crate) fn open_archive(path: &Path) -> io::Result<Container> {
        let file = fs_err::File::open(path)?.into_parts().0;
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
                open_plain(&root.join(name), name)
            }
        }
    }

    /// A content-addressed blob, `blobs/sha256/<hex>`.
    pub(crate) fn blob(&self, digest: &Digest) -> io::Result<Option<Blob>> {
        self.member(&format!("blobs/sha256/{}", digest.hex()))
    }
}

fn open_plain(path: &Path, name: &str) -> io::Result<Option<Blob>> {
    match fs_err::File::open(path) {
        Ok(f) => {
            let f = f.into_parts().0;
            let meta = f.metadata()?;
            if !meta.is_file() {
                return Ok(None);
            }
            Ok(Some(Blob {
                file: Arc::new(f),
                offset: 0,
                len: meta.len(),
                name: name.to_owned(),
            }))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
