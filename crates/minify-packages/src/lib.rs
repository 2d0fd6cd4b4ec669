//! minify-packages: the package model of an image, i.e. which installed unit owns each path.
//!
//! `--granularity package` keeps whole every unit that owns a file the workload used, so code
//! paths the probe did not walk still find their files. The units are:
//! - dpkg packages: `/var/lib/dpkg/status` with `info/<pkg>[:arch].list` (and the status'
//!   `Conffiles:`), or distroless' `status.d/<pkg>` with `status.d/<pkg>.md5sums`;
//! - Python distributions: `*.dist-info/RECORD` and `*.egg-info/installed-files.txt` in every
//!   `site-packages`/`dist-packages` directory (venvs included);
//! - npm packages: each `node_modules/[@scope/]NAME` directory with a `package.json`;
//! - JDK homes: a directory with a `release` file naming `JAVA_VERSION` and a `lib/`; its
//!   `lib/` and `conf/` are one unit.
//!
//! Everything is read through [`Rootfs`], never the host, and with bounded reads: a huge,
//! truncated or malformed database is a warning in [`PackageDb::warnings`], never a panic or an
//! error. Listed paths are mapped to the entries that really hold them by resolving their
//! directory part through the image's own symlinks (dpkg lists `/lib/x86_64-linux-gnu/...`,
//! which usrmerge images hold under `/usr/lib`); only non-directory entries are recorded, since
//! every package lists `/usr` or `/etc` and a directory says nothing about which one is used.

mod account;
mod dpkg;
mod jdk;
mod npm;
mod prune;
mod python;

use std::collections::HashMap;
use std::fmt;

use minify_model::{ImagePath, ResolveError, Rootfs, resolve};

pub use account::{Account, State, Totals, account};
pub use dpkg::{StatusEntry, parse_status};
pub use prune::{DbFile, Pruned, prune};
pub use python::{parse_installed_files, parse_record};

/// Most bytes read of one database file (a dpkg status, a `.list`, a RECORD). Real ones are
/// at most a few MB; the rest of a bigger one is not read (and a warning says so).
pub const MAX_DB_BYTES: u64 = 32 << 20;
/// Most paths taken from one unit's file list.
pub const MAX_FILES_PER_UNIT: usize = 200_000;
/// Most units read from one image (beyond this the model is incomplete and says so).
pub const MAX_UNITS: usize = 50_000;

/// Where a unit comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Deb,
    Python,
    Npm,
    Jdk,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Deb => "deb",
            Kind::Python => "python",
            Kind::Npm => "npm",
            Kind::Jdk => "jdk",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One installed unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub kind: Kind,
    pub name: String,
    /// As the database gives it; empty when it does not say.
    pub version: String,
    /// dpkg's `Architecture:` (`amd64`, `all`); empty for the other kinds. An SBOM's
    /// package URL carries it (`pkg:deb/debian/libc6@2.36-9?arch=amd64`).
    pub arch: String,
    /// The non-directory entries it owns, as real image paths (directory part resolved
    /// through the image's links), sorted, each existing in the image.
    pub files: Vec<ImagePath>,
    /// Problems with its own file list (paths not in the image, `..`, a truncated list).
    pub warnings: Vec<String>,
    /// Python distributions: the `site-packages` directory its RECORD is relative to. Each
    /// top-level entry of it the distribution owns (`setuptools/`, `_distutils_hack/`,
    /// `six.py`) is a part a caller may keep alone.
    pub site: Option<ImagePath>,
    /// The unit's own entries in its database, which a pruned database keeps or cuts.
    pub db_files: DbFiles,
}

/// Where a unit's own database entries are (see [`prune`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DbFiles {
    /// None known (a JDK home; a unit with no list).
    #[default]
    None,
    /// dpkg with the shared `/var/lib/dpkg/status`: its `info/<pkg>[:arch].list` and
    /// `.md5sums` (each when the image has it).
    Dpkg {
        list: Option<ImagePath>,
        md5sums: Option<ImagePath>,
    },
    /// distroless: `status.d/<pkg>`, the package's own status paragraph, and its `.md5sums`.
    StatusD {
        stanza: ImagePath,
        md5sums: Option<ImagePath>,
    },
    /// A Python distribution's `.dist-info` or `.egg-info` directory.
    Python { meta_dir: ImagePath },
    /// An npm package's `package.json`.
    Npm { manifest: ImagePath },
}

impl Package {
    /// `name version (kind)`, the allowlist's detail for paths kept for this unit.
    pub fn label(&self) -> String {
        if self.version.is_empty() {
            format!("{} ({})", self.name, self.kind)
        } else {
            format!("{} {} ({})", self.name, self.version, self.kind)
        }
    }
}

/// Index of a package in [`PackageDb::packages`].
pub type PackageId = usize;

/// The package model of one image.
#[derive(Clone, Debug, Default)]
pub struct PackageDb {
    pub packages: Vec<Package>,
    owners: HashMap<ImagePath, Vec<PackageId>>,
    /// Problems with the image's databases that belong to no one unit (a status paragraph
    /// without a name, an unreadable status file, the unit cap), deterministic order.
    pub warnings: Vec<String>,
}

impl PackageDb {
    /// Read every package database the image holds.
    pub fn read(fs: &dyn Rootfs) -> PackageDb {
        let mut b = Collector {
            fs,
            db: PackageDb::default(),
        };
        dpkg::read(&mut b);
        let paths = fs.paths();
        python::read(&mut b, &paths);
        npm::read(&mut b, &paths);
        jdk::read(&mut b, &paths);
        let mut db = b.db;
        for ids in db.owners.values_mut() {
            ids.sort_unstable();
            ids.dedup();
        }
        db
    }

    /// The units that own the entry at `path` (a real path, as kept), in database order.
    /// Links to directories are never owned here (they are still in [`Package::files`]).
    pub fn owners(&self, path: &ImagePath) -> &[PackageId] {
        self.owners.get(path).map_or(&[], Vec::as_slice)
    }
}

/// Accumulates units and warnings while the readers run.
pub(crate) struct Collector<'a> {
    pub(crate) fs: &'a dyn Rootfs,
    pub(crate) db: PackageDb,
}

/// How a unit's listed paths map onto the image.
#[derive(Default)]
pub(crate) struct ListStats {
    missing: usize,
    first_missing: Option<String>,
    dotdot: usize,
}

impl Collector<'_> {
    pub(crate) fn warn(&mut self, w: String) {
        self.db.warnings.push(w);
    }

    /// Read at most [`MAX_DB_BYTES`] of a database file as text (lossy UTF-8). `None` (with a
    /// warning) when unreadable; a truncated read warns and returns what was read.
    pub(crate) fn read_text(&mut self, path: &ImagePath) -> Option<String> {
        let entry = self.fs.entry(path)?;
        if !entry.is_file() {
            self.warn(format!("{path}: not a regular file, not read"));
            return None;
        }
        match self.fs.read(path, Some(MAX_DB_BYTES)) {
            Ok(data) => {
                if data.len() as u64 >= MAX_DB_BYTES && entry.size > MAX_DB_BYTES {
                    self.warn(format!(
                        "{path}: {} bytes, only the first {MAX_DB_BYTES} read",
                        entry.size
                    ));
                }
                Some(String::from_utf8_lossy(&data).into_owned())
            }
            Err(e) => {
                self.warn(format!("{path}: unreadable: {e}"));
                None
            }
        }
    }

    /// Map one listed path to the non-directory entry that holds it: `raw` is taken from
    /// `base` when relative; its directory part is resolved through the image's links (inside
    /// the image root), its last component is not followed. `None` for directories and for
    /// paths not in the image (counted in `stats`).
    pub(crate) fn locate(
        &self,
        base: &ImagePath,
        raw: &str,
        stats: &mut ListStats,
    ) -> Option<ImagePath> {
        if raw.split('/').any(|c| c == "..") {
            stats.dotdot += 1;
        }
        let joined = base.join(raw);
        match resolve(self.fs, joined.as_str(), false) {
            Ok(r) => {
                let e = self.fs.entry(&r.path)?;
                if e.is_dir() || r.path.is_root() {
                    None
                } else {
                    Some(r.path)
                }
            }
            Err(ResolveError::NotFound { .. } | ResolveError::NotADirectory { .. }) => {
                stats.missing += 1;
                if stats.first_missing.is_none() {
                    stats.first_missing = Some(joined.to_string());
                }
                None
            }
            Err(ResolveError::Loop { .. }) => None,
        }
    }

    /// Add a unit; `source` names its database file in warnings about its list.
    pub(crate) fn add(
        &mut self,
        kind: Kind,
        name: String,
        version: String,
        mut files: Vec<ImagePath>,
        source: &str,
        stats: &ListStats,
    ) -> Option<PackageId> {
        let mut warnings = Vec::new();
        if stats.missing > 0 {
            warnings.push(format!(
                "{source}: {} listed path(s) are not in the image (first: {})",
                stats.missing,
                stats.first_missing.as_deref().unwrap_or("?")
            ));
        }
        if stats.dotdot > 0 && kind != Kind::Python {
            // RECORDs name `../../../bin/x` legitimately; elsewhere `..` is suspicious.
            warnings.push(format!(
                "{source}: {} listed path(s) contain `..` (taken inside the image root)",
                stats.dotdot
            ));
        }
        if self.db.packages.len() >= MAX_UNITS {
            if self.db.packages.len() == MAX_UNITS {
                self.warn(format!(
                    "more than {MAX_UNITS} packages: the rest are not in the model"
                ));
            }
            return None;
        }
        files.sort();
        files.dedup();
        let id = self.db.packages.len();
        for f in &files {
            // A link to a directory (`/lib -> usr/lib`, a JDK's `docs`) is listed by many
            // packages and says nothing about which one is used: it is the unit's file, but
            // keeping it does not make the unit used.
            let to_dir = self
                .fs
                .entry(f)
                .is_some_and(minify_model::Entry::is_symlink)
                && resolve(self.fs, f.as_str(), true)
                    .ok()
                    .and_then(|r| self.fs.entry(&r.path))
                    .is_some_and(minify_model::Entry::is_dir);
            if !to_dir {
                self.db.owners.entry(f.clone()).or_default().push(id);
            }
        }
        self.db.packages.push(Package {
            kind,
            name,
            version,
            arch: String::new(),
            files,
            warnings,
            site: None,
            db_files: DbFiles::None,
        });
        Some(id)
    }
}

/// The entries of a sorted path list that lie strictly below `dir`.
pub(crate) fn below<'p>(paths: &'p [ImagePath], dir: &ImagePath) -> &'p [ImagePath] {
    let prefix = if dir.is_root() {
        "/".to_owned()
    } else {
        format!("{dir}/")
    };
    let start = paths.partition_point(|p| p.as_str() < prefix.as_str());
    let len = paths[start..].partition_point(|p| p.as_str().starts_with(&prefix));
    &paths[start..start + len]
}

#[cfg(test)]
mod tests;
