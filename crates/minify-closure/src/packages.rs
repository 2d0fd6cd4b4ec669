//! `--granularity package`: keep whole every unit of the image's package model
//! ([`minify_packages`]) that owns a kept non-directory entry, so code paths the probe did not
//! walk (a lazily imported module, `java.security`, a gconv module) still find their files.
//!
//! A separate pass over the kept set, run after the default sets and before parents and
//! excludes. What it does not add, whatever the package holds:
//! - documentation: `/usr/share/doc`, `man`, `info`, `lintian` (nothing runs from there);
//! - locales (`/usr/share/locale`, `/usr/lib/locale`, `/usr/share/i18n`) unless the `locale`
//!   set is on;
//! - executables and links under any `bin/` or `sbin/` directory: a shell, `apt` or `dd` stays
//!   out unless the workload (or a user rule) already kept it, so the attack surface is the
//!   same in both granularities.
//!
//! Packages that are only dependencies (`Depends:`) of a used one are not added: a used
//! package's dependencies that the workload really reached own a kept file themselves.
//!
//! glibc's gconv modules (8-10 MB of `libc6`) are loaded by name, only by a program that
//! converts charsets with `iconv`, and such a program reads the directory's
//! `gconv-modules.cache` first (PHP and Python do at start, nginx and redis never): they are
//! kept only when something in their directory was used.
//!
//! A Python distribution is a bundle of top-level parts of its `site-packages` (setuptools
//! ships `setuptools/`, `pkg_resources/` and `_distutils_hack/`, and every interpreter start
//! in a venv imports the last through a `.pth` hook): only the parts something was used from
//! are kept whole, with the distribution's metadata. A part imported lazily from another part
//! of the same distribution is the price (none of the fixtures has one).

use std::collections::{BTreeMap, BTreeSet};

use minify_model::{EntryKind, ImagePath, Reason, Rootfs, resolve};
use minify_packages::{PackageDb, PackageId};

use crate::{ClosureError, Kept};

/// How much of the image a used file brings with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Granularity {
    /// Exactly the files the workload used and their closure (the default).
    #[default]
    File,
    /// Every package owning a kept file, whole (see the module docs for what stays out).
    Package,
}

impl Granularity {
    pub fn name(self) -> &'static str {
        match self {
            Granularity::File => "file",
            Granularity::Package => "package",
        }
    }
}

impl std::str::FromStr for Granularity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "file" => Ok(Granularity::File),
            "package" => Ok(Granularity::Package),
            other => Err(format!("unknown granularity {other:?} (file, package)")),
        }
    }
}

/// The package rule's switches.
#[derive(Clone, Debug, Default)]
pub struct PackageOptions {
    pub granularity: Granularity,
    /// `--include-package NAME`: keep this package whole even if nothing of it was used
    /// (implies package granularity for it alone).
    pub include: Vec<String>,
    /// `--exclude-package NAME`: never add this package's files by the package rule (what
    /// the workload used of it stays).
    pub exclude: Vec<String>,
}

/// One package kept whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageReport {
    /// `deb`, `python`, `npm` or `jdk`.
    pub kind: &'static str,
    pub name: String,
    pub version: String,
    /// Its non-directory entries in the kept set (before excludes), used or added.
    pub files: usize,
    /// Bytes of the regular files among them.
    pub bytes: u64,
    /// Bytes the package rule added (the price of keeping it whole).
    pub added_bytes: u64,
    /// The kept path that made it used (the first in path order), or `--include-package`.
    pub pulled_by: String,
}

/// What the pass wants kept, and what it has to say.
pub(crate) struct Expansion {
    pub(crate) keep: Vec<(ImagePath, Reason, String)>,
    pub(crate) reports: Vec<PackageReport>,
    pub(crate) warnings: Vec<String>,
}

const DOC_DIRS: [&str; 7] = [
    "/usr/share/doc",
    "/usr/share/doc-base",
    "/usr/share/man",
    "/usr/share/info",
    "/usr/share/lintian",
    "/usr/local/share/doc",
    "/usr/local/share/man",
];
const LOCALE_DIRS: [&str; 3] = ["/usr/share/locale", "/usr/lib/locale", "/usr/share/i18n"];

fn under(p: &ImagePath, dir: &str) -> bool {
    p.as_str()
        .strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn in_bin_dir(p: &ImagePath) -> bool {
    p.parent()
        .is_some_and(|d| d.components().any(|c| c == "bin" || c == "sbin"))
}

/// Whether the package rule leaves `p` out.
fn left_out(fs: &dyn Rootfs, p: &ImagePath, locale: bool) -> bool {
    if DOC_DIRS.iter().any(|d| under(p, d)) {
        return true;
    }
    if !locale && LOCALE_DIRS.iter().any(|d| under(p, d)) {
        return true;
    }
    if in_bin_dir(p) {
        return match fs.entry(p).map(|e| (&e.kind, e.mode)) {
            Some((EntryKind::Symlink { .. }, _)) => true,
            Some((EntryKind::File | EntryKind::Hardlink { .. }, mode)) => mode & 0o111 != 0,
            _ => false,
        };
    }
    false
}

/// The `.../gconv` directory `p` lies in, if any.
fn gconv_dir(p: &ImagePath) -> Option<ImagePath> {
    let s = p.as_str();
    let i = s.find("/gconv/")?;
    Some(ImagePath::new(&s[..i + "/gconv".len()]))
}

/// The first component of `p` below `site` (`jinja2` for `SITE/jinja2/ext.py`), with a
/// module's extension kept (`six.py`); `None` outside `site`.
fn top_part<'p>(site: &ImagePath, p: &'p ImagePath) -> Option<&'p str> {
    let rest = p.as_str().strip_prefix(site.as_str())?.strip_prefix('/')?;
    rest.split('/').next().filter(|t| !t.is_empty())
}

fn file_size(fs: &dyn Rootfs, p: &ImagePath) -> u64 {
    fs.entry(p)
        .filter(|e| matches!(e.kind, EntryKind::File))
        .map_or(0, |e| e.size)
}

/// The error [`expand`] gives for an `--include-package` that names no package of the
/// image, without expanding anything.
pub(crate) fn check_included(fs: &dyn Rootfs, opts: &PackageOptions) -> Result<(), ClosureError> {
    if opts.include.is_empty() {
        return Ok(());
    }
    let db = PackageDb::read(fs);
    match opts
        .include
        .iter()
        .find(|name| !db.packages.iter().any(|p| &p.name == *name))
    {
        Some(name) => Err(ClosureError::PackageNotFound {
            rule: "--include-package",
            name: name.clone(),
        }),
        None => Ok(()),
    }
}

/// Run the package rule over `kept`.
pub(crate) fn expand(
    fs: &dyn Rootfs,
    db: &PackageDb,
    kept: &BTreeMap<ImagePath, Kept>,
    opts: &PackageOptions,
    locale: bool,
) -> Result<Expansion, ClosureError> {
    if opts.granularity == Granularity::File && opts.include.is_empty() {
        return Ok(Expansion {
            keep: Vec::new(),
            reports: Vec::new(),
            warnings: Vec::new(),
        });
    }
    let mut warnings: Vec<String> = db
        .warnings
        .iter()
        .map(|w| format!("package model: {w}"))
        .collect();
    let named = |name: &str| -> Vec<PackageId> {
        (0..db.packages.len())
            .filter(|&i| db.packages[i].name == name)
            .collect()
    };

    // Used: owns a kept non-directory entry (directories and links to them are never
    // evidence: the model does not own them).
    let mut used: BTreeMap<PackageId, String> = BTreeMap::new();
    // Python distributions: the top-level parts of their site-packages that were used.
    let mut parts: BTreeMap<PackageId, BTreeSet<String>> = BTreeMap::new();
    if opts.granularity == Granularity::Package {
        for (p, k) in kept {
            if k.reason == Reason::Parent {
                continue;
            }
            for &id in db.owners(p) {
                used.entry(id).or_insert_with(|| p.to_string());
                if let Some(top) = db.packages[id].site.as_ref().and_then(|s| top_part(s, p)) {
                    parts.entry(id).or_default().insert(top.to_owned());
                }
            }
        }
    }
    for name in &opts.include {
        let ids = named(name);
        if ids.is_empty() {
            return Err(ClosureError::PackageNotFound {
                rule: "--include-package",
                name: name.clone(),
            });
        }
        for id in ids {
            used.insert(id, "--include-package".to_owned());
        }
    }
    for name in &opts.exclude {
        let ids = named(name);
        if ids.is_empty() {
            warnings.push(format!(
                "--exclude-package {name}: no such package in the image"
            ));
        }
        for id in ids {
            used.remove(&id);
        }
    }

    // gconv directories the workload used (it read `gconv-modules.cache`: it calls iconv).
    let used_gconv: BTreeSet<ImagePath> = kept
        .iter()
        .filter(|(_, k)| k.reason != Reason::Parent)
        .filter_map(|(p, _)| gconv_dir(p))
        .collect();

    let mut keep = Vec::new();
    let mut reports = Vec::new();
    let mut added: BTreeSet<ImagePath> = BTreeSet::new();
    for (id, pulled_by) in used {
        let pkg = &db.packages[id];
        let label = pkg.label();
        warnings.extend(pkg.warnings.iter().map(|w| format!("package {label}: {w}")));
        let mut files = 0usize;
        let mut bytes = 0u64;
        let mut added_bytes = 0u64;
        // `--include-package` keeps every part; otherwise a Python distribution's parts that
        // nothing used stay out (its metadata and files outside site-packages stay in).
        let included = pulled_by == "--include-package";
        let used_parts = if included { None } else { parts.get(&id) };
        for f in &pkg.files {
            let already = kept.contains_key(f);
            if !already && left_out(fs, f, locale) {
                continue;
            }
            if !already && !included && gconv_dir(f).is_some_and(|g| !used_gconv.contains(&g)) {
                continue;
            }
            if !already
                && let (Some(site), Some(used_parts)) = (&pkg.site, used_parts)
                && let Some(top) = top_part(site, f)
                && !top.ends_with(".dist-info")
                && !top.ends_with(".egg-info")
                && !used_parts.contains(top)
            {
                continue;
            }
            files += 1;
            let size = file_size(fs, f);
            bytes += size;
            if !already && added.insert(f.clone()) {
                added_bytes += size;
                keep.push((f.clone(), Reason::Package, label.clone()));
            }
            // What a link of the package points to, inside the image, is part of it
            // (`conf/security/java.security -> /etc/java-17-openjdk/security/...`).
            if fs.entry(f).is_some_and(minify_model::Entry::is_symlink)
                && let Ok(r) = resolve(fs, f.as_str(), true)
            {
                let detail = format!("{label}: target of {f}");
                for v in &r.via {
                    if !kept.contains_key(v) && added.insert(v.clone()) {
                        keep.push((v.clone(), Reason::Package, detail.clone()));
                    }
                }
                if !kept.contains_key(&r.path)
                    && !left_out(fs, &r.path, locale)
                    && added.insert(r.path.clone())
                {
                    added_bytes += file_size(fs, &r.path);
                    keep.push((r.path.clone(), Reason::Package, detail));
                }
            }
        }
        reports.push(PackageReport {
            kind: pkg.kind.name(),
            name: pkg.name.clone(),
            version: pkg.version.clone(),
            files,
            bytes,
            added_bytes,
            pulled_by,
        });
    }
    // Most costly first, so the report's head says where the bytes went.
    reports.sort_by(|a, b| {
        b.added_bytes
            .cmp(&a.added_bytes)
            .then_with(|| (a.kind, &a.name).cmp(&(b.kind, &b.name)))
    });
    Ok(Expansion {
        keep,
        reports,
        warnings,
    })
}
