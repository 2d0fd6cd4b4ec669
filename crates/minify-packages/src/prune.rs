//! The pruned package database of an output: what scanners (Trivy, Grype, Syft) read must
//! name exactly the units the output still holds files of.
//!
//! A unit is kept when the output holds at least one of its files (not a link to a
//! directory such as `/lib`, which many packages list; for a Python distribution, not one of
//! its own metadata directory). Then:
//! - dpkg: `/var/lib/dpkg/status` keeps exactly the paragraphs of kept packages, each with its
//!   bytes unchanged (the first one of a package named twice); `info/<pkg>.list` and
//!   `.md5sums` are cut to the lines naming what the output holds (the list's directories
//!   included), so `dpkg -V` complains only about what is really missing. The status file is
//!   written even when no package is kept (then empty): the image still is a dpkg system.
//!   `info/format` and `arch` (how dpkg names the lists) are kept as they are.
//! - distroless: `status.d/<pkg>` is kept unchanged, its `.md5sums` cut the same way;
//! - Python: the whole `.dist-info`/`.egg-info` directory (`METADATA`, `RECORD`, `INSTALLER`,
//!   ...) unchanged;
//! - npm: the `package.json`, unchanged.
//!
//! Units with no kept file get nothing added. The result is a function of the source and the
//! kept set only (no clock, no host), so the same allowlist and source give the same bytes.
//! Everything is read through the [`Rootfs`] with bounded reads; a database file that is not
//! a regular file is left alone with a warning.

use std::collections::{BTreeMap, HashSet};

use minify_model::{ImagePath, Rootfs, resolve};

use crate::dpkg::{STATUS, field, paragraphs};
use crate::{DbFiles, Kind, MAX_DB_BYTES, PackageDb, PackageId};

/// Files that say how dpkg's database is laid out, kept with the status as they are.
const DPKG_LAYOUT: [&str; 2] = ["/var/lib/dpkg/info/format", "/var/lib/dpkg/arch"];

/// Most entries taken from one Python metadata directory.
const MAX_META_FILES: usize = 10_000;

/// One database file of the output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbFile {
    /// Reviewable, deterministic: which unit, or how much of the status was kept.
    pub detail: String,
    /// The bytes to write instead of the source's (a cut status, list or md5sums); `None`:
    /// kept as the source has it.
    pub content: Option<Vec<u8>>,
}

/// The database files an output should hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Every database file to keep, by path (each a regular file of the source).
    pub files: BTreeMap<ImagePath, DbFile>,
    /// The units kept (in database order).
    pub kept_units: Vec<PackageId>,
    /// Problems met (a status that is not a regular file, a truncated read).
    pub warnings: Vec<String>,
}

impl Pruned {
    /// The generated contents alone, by path.
    pub fn generated(&self) -> BTreeMap<ImagePath, Vec<u8>> {
        self.files
            .iter()
            .filter_map(|(p, f)| Some((p.clone(), f.content.clone()?)))
            .collect()
    }
}

struct Pruner<'a> {
    fs: &'a dyn Rootfs,
    kept: &'a dyn Fn(&ImagePath) -> bool,
    out: Pruned,
}

impl Pruner<'_> {
    /// The bytes of a database file that is a regular file of the image (bounded);
    /// `None` with a warning otherwise.
    fn read(&mut self, path: &ImagePath) -> Option<Vec<u8>> {
        let entry = self.fs.entry(path)?;
        if !entry.is_file() {
            self.out.warnings.push(format!(
                "{path}: not a regular file, left out of the database"
            ));
            return None;
        }
        match self.fs.read(path, Some(MAX_DB_BYTES)) {
            Ok(data) => {
                if entry.size > MAX_DB_BYTES {
                    self.out.warnings.push(format!(
                        "{path}: {} bytes, only the first {MAX_DB_BYTES} kept",
                        entry.size
                    ));
                }
                Some(data)
            }
            Err(e) => {
                self.out.warnings.push(format!(
                    "{path}: unreadable ({e}), left out of the database"
                ));
                None
            }
        }
    }

    /// Whether the output holds `raw` (an absolute path as a list names it) as the image
    /// does: its directory part resolved through the image's links, the last component not
    /// followed, and every link on the way kept too (`dpkg -V` looks the path up as listed).
    fn holds(&self, raw: &str) -> bool {
        match resolve(self.fs, raw, false) {
            Ok(r) => (r.path.is_root() || (self.kept)(&r.path)) && r.via.iter().all(self.kept),
            Err(_) => false,
        }
    }

    /// A file list cut to the lines naming what the output holds. `md5sums`: lines are
    /// `<hash>  <path without the leading slash>`; else one absolute path a line (`/.` kept).
    fn cut(&mut self, path: &ImagePath, md5sums: bool, label: &str) {
        let Some(data) = self.read(path) else {
            return;
        };
        let mut out = Vec::with_capacity(data.len() / 4);
        let (mut total, mut kept) = (0usize, 0usize);
        for line in data.split_inclusive(|&b| b == b'\n') {
            let text = String::from_utf8_lossy(line);
            let text = text.trim_end_matches(['\n', '\r']);
            if text.is_empty() {
                continue;
            }
            total += 1;
            let keep = if md5sums {
                text.split_once("  ")
                    .is_some_and(|(_, p)| self.holds(&format!("/{p}")))
            } else {
                text == "/." || self.holds(text)
            };
            if keep {
                kept += 1;
                out.extend_from_slice(line);
            }
        }
        self.out.files.insert(
            path.clone(),
            DbFile {
                detail: format!("{label}: {kept} of {total} lines"),
                content: Some(out),
            },
        );
    }

    fn unchanged(&mut self, path: &ImagePath, label: &str) {
        if self
            .fs
            .entry(path)
            .is_some_and(minify_model::Entry::is_file)
        {
            self.out.files.insert(
                path.clone(),
                DbFile {
                    detail: label.to_owned(),
                    content: None,
                },
            );
        }
    }

    /// `/var/lib/dpkg/status` with the paragraphs of `keep` ((name, arch) pairs), each once.
    fn status(&mut self, keep: &HashSet<(String, String)>) {
        let path = ImagePath::new(STATUS);
        if self.fs.entry(&path).is_none() {
            return;
        }
        let Some(data) = self.read(&path) else {
            return;
        };
        let mut out = Vec::with_capacity(data.len() / 4);
        let mut done: HashSet<(String, String)> = HashSet::new();
        let mut total = 0usize;
        for range in paragraphs(&data) {
            let para = String::from_utf8_lossy(&data[range.clone()]);
            let Some(name) = field(&para, "Package").filter(|n| !n.is_empty()) else {
                continue;
            };
            total += 1;
            let key = (
                name.to_owned(),
                field(&para, "Architecture").unwrap_or_default().to_owned(),
            );
            if keep.contains(&key) && done.insert(key) {
                out.extend_from_slice(&data[range]);
            }
        }
        self.out.files.insert(
            path,
            DbFile {
                detail: format!("dpkg status: {} of {total} paragraphs", done.len()),
                content: Some(out),
            },
        );
        // How dpkg reads the rest: without `info/format` (`1`: multiarch) it looks for
        // `info/libc6.list`, not `info/libc6:amd64.list`, and finds no files.
        for extra in DPKG_LAYOUT {
            self.unchanged(&ImagePath::new(extra), "dpkg database layout");
        }
    }
}

/// Below `dir`, every non-directory entry (bounded).
fn files_below(fs: &dyn Rootfs, dir: &ImagePath) -> Vec<ImagePath> {
    let mut out = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for c in fs.children(&d) {
            if out.len() >= MAX_META_FILES {
                return out;
            }
            match fs.entry(&c) {
                Some(e) if e.is_dir() => stack.push(c),
                Some(_) => out.push(c),
                None => {}
            }
        }
    }
    out.sort();
    out
}

/// The database files an output holding the non-directory entries for which `kept` is true
/// (and the directories above them) should have. `db` is the model of `fs`, the source.
pub fn prune(fs: &dyn Rootfs, db: &PackageDb, kept: &dyn Fn(&ImagePath) -> bool) -> Pruned {
    let mut pr = Pruner {
        fs,
        kept,
        out: Pruned::default(),
    };
    let mut status_keep: HashSet<(String, String)> = HashSet::new();
    for (id, pkg) in db.packages.iter().enumerate() {
        let meta = match &pkg.db_files {
            DbFiles::Python { meta_dir } => Some(meta_dir),
            _ => None,
        };
        // Links to directories (`/lib`) are no evidence (as in `PackageDb::owners`).
        let used = pkg.files.iter().any(|f| {
            kept(f)
                && !db.owners(f).is_empty()
                && !meta.is_some_and(|m| {
                    f.as_str()
                        .strip_prefix(m.as_str())
                        .is_some_and(|r| r.starts_with('/'))
                })
        });
        if !used {
            continue;
        }
        pr.out.kept_units.push(id);
        let label = pkg.label();
        match &pkg.db_files {
            DbFiles::Dpkg { list, md5sums } => {
                if pkg.kind == Kind::Deb {
                    status_keep.insert((pkg.name.clone(), pkg.arch.clone()));
                }
                if let Some(l) = list {
                    pr.cut(l, false, &label);
                }
                if let Some(m) = md5sums {
                    pr.cut(m, true, &label);
                }
            }
            DbFiles::StatusD { stanza, md5sums } => {
                pr.unchanged(stanza, &label);
                if let Some(m) = md5sums {
                    pr.cut(m, true, &label);
                }
            }
            DbFiles::Python { meta_dir } => {
                for f in files_below(fs, meta_dir) {
                    pr.unchanged(&f, &label);
                }
            }
            DbFiles::Npm { manifest } => pr.unchanged(manifest, &label),
            DbFiles::None => {}
        }
    }
    pr.status(&status_keep);
    pr.out
}
