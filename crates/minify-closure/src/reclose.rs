//! Re-closing a kept allowlist on the image being built (`minify build`): the allowlist's
//! roots are the input, everything derived from them is computed again on this image with the
//! same [`crate::build::Builder`] `run` uses, so `run` and `build` cannot drift apart.
//!
//! Roots are the entries the workload or the user asked for: `traced` (the access kinds in
//! their detail become a synthetic trace, so exec'd programs get their ELF closure and `#!`
//! interpreters, opened ELF files their libraries, exactly as in `run`) and `include`
//! (`--include-bin NAME` again as an `include_bin` rule, other includes as the entry alone,
//! since `--include DIR` was expanded when the allowlist was made). Symlink entries are kept
//! when the image still has them: one may be the path the workload used (`/etc/localtime`),
//! which the allowlist no longer tells apart from a link met while resolving a library.
//! Everything else (`elf`, `interpreter`, `parent`, `default-set`, `package`) is derived: the
//! default sets named in the allowlist and the package rule (when it has `package` entries)
//! are run again on this image.
//!
//! On the image the allowlist was made from this gives the allowlist's own paths back, so the
//! same image and allowlist still give the same image id.

use std::collections::{BTreeMap, BTreeSet};

use minify_model::trace::TraceEvent;
use minify_model::{AccessKind, Allowlist, ImagePath, Reason, Rootfs, Trace, resolve};

use minify_packages::PackageDb;

use crate::{Closure, ClosureError, ClosureOptions, DefaultSet, DefaultSets, Granularity};

/// What happened to one root of the allowlist on this image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootState {
    /// The image has the path.
    Same,
    /// The path is gone; a rename rule found its successor.
    Renamed { to: ImagePath, rule: &'static str },
    /// The path is gone and no rename rule applies.
    Missing,
}

/// One root and what became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootReport {
    pub path: ImagePath,
    pub reason: Reason,
    pub state: RootState,
}

/// The re-closed kept set and how it differs from the allowlist.
#[derive(Clone, Debug, Default)]
pub struct Reclosure {
    /// The kept set computed on this image.
    pub closure: Closure,
    /// Every root of the allowlist, sorted by path.
    pub roots: Vec<RootReport>,
    /// Paths kept now that the allowlist does not list (other than renamed roots), sorted.
    pub added: Vec<ImagePath>,
    /// Derived paths the allowlist lists that are not kept now, sorted.
    pub dropped: Vec<ImagePath>,
}

impl Reclosure {
    /// The roots that are gone with no successor.
    pub fn missing(&self) -> impl Iterator<Item = &RootReport> {
        self.roots
            .iter()
            .filter(|r| matches!(r.state, RootState::Missing))
    }
}

/// Whether an entry with this reason is a root (input) rather than derived.
pub fn is_root(reason: Reason) -> bool {
    matches!(reason, Reason::Traced | Reason::Include)
}

/// Re-close `allowlist` on `fs`. `entrypoint` and `workdir` are the image's run config (the
/// entrypoint's program is kept with its closure, as in `run`); `opts` supplies the skeleton
/// input, the user's `exclude` globs and granularity; its default sets and includes are
/// replaced by what the allowlist records.
pub fn reclose(
    fs: &dyn Rootfs,
    allowlist: &Allowlist,
    entrypoint: &[String],
    workdir: &str,
    opts: &ClosureOptions,
) -> Result<Reclosure, ClosureError> {
    let mut opts = opts.clone();
    opts.include.clear();
    opts.include_bin.clear();
    opts.default_sets = DefaultSets::none();
    let mut events = Vec::new();
    let mut pre: Vec<(ImagePath, Reason, String)> = Vec::new();
    let mut roots = Vec::new();
    // The image's package model, read only if some root is gone (the debian-package rule).
    let db = std::cell::OnceCell::new();
    for e in &allowlist.paths {
        if e.reason == Reason::DefaultSet {
            for set in DefaultSet::ALL {
                let name = set.name();
                if e.detail == name
                    || e.detail
                        .strip_prefix(name)
                        .is_some_and(|r| r.starts_with(':'))
                {
                    opts.default_sets.set(set, true);
                }
            }
        }
        if e.reason == Reason::Package {
            opts.packages.granularity = Granularity::Package;
        }
        if e.reason == Reason::Symlink && present(fs, &e.path) {
            pre.push((e.path.clone(), e.reason, e.detail.clone()));
        }
        if !is_root(e.reason) {
            continue;
        }
        let state = if present(fs, &e.path) {
            RootState::Same
        } else {
            match renamed_with(fs, &e.path, &|| db.get_or_init(|| PackageDb::read(fs))) {
                Some((to, rule)) => RootState::Renamed { to, rule },
                None => RootState::Missing,
            }
        };
        let now = match &state {
            RootState::Same => Some(&e.path),
            RootState::Renamed { to, .. } => Some(to),
            RootState::Missing => None,
        };
        if let Some(now) = now {
            match e.reason {
                Reason::Traced => events.extend(synthetic_events(now, &e.detail)),
                _ => match e.detail.strip_prefix("--include-bin ") {
                    Some(bin) if now == &e.path => opts.include_bin.push(bin.to_owned()),
                    _ => pre.push((now.clone(), e.reason, e.detail.clone())),
                },
            }
        }
        roots.push(RootReport {
            path: e.path.clone(),
            reason: e.reason,
            state,
        });
    }
    // An include_bin program is looked up again; one that is gone is reported as its path.
    opts.include_bin.sort();
    opts.include_bin.dedup();

    let trace = Trace {
        events,
        lost: BTreeMap::new(),
    };
    let mut b = crate::build::Builder::new(fs, workdir);
    for (p, r, d) in &pre {
        b.keep_entry(p, *r, d);
    }
    let closure = b.run(&trace, entrypoint, &opts)?;

    // Roots are reported by state; added and dropped are about the derived paths.
    let before: BTreeSet<&ImagePath> = allowlist.paths.iter().map(|e| &e.path).collect();
    let renamed_to: BTreeSet<&ImagePath> = roots
        .iter()
        .filter_map(|r| match &r.state {
            RootState::Renamed { to, .. } => Some(to),
            _ => None,
        })
        .collect();
    let added = closure
        .entries
        .keys()
        .filter(|p| !before.contains(p) && !renamed_to.contains(p))
        .cloned()
        .collect();
    let dropped = allowlist
        .paths
        .iter()
        .filter(|e| !is_root(e.reason) && !closure.entries.contains_key(&e.path))
        .map(|e| e.path.clone())
        .collect();
    Ok(Reclosure {
        closure,
        roots,
        added,
        dropped,
    })
}

/// The successor of a root the image no longer has, by the rules that cover real upgrades:
/// - a versioned shared object (`libpcre2-8.so.0.11.2`) is found through its soname link in
///   the same directory (`libpcre2-8.so.0`, then shorter versions), when that link now names
///   another version of the same library;
/// - a path inside `NAME-VERSION.dist-info` / `.egg-info` is found in the one directory of
///   the same distribution beside it (another version);
/// - `__pycache__/MOD.cpython-3XY[.opt-N].pyc` is found as the same module compiled for
///   another Python 3, else as its source `MOD.py`;
/// - a file of a Debian package whose directories carry a version (`/usr/lib/python3.11/`,
///   `/usr/lib/postgresql/15/`, `/usr/lib/jvm/java-17-openjdk-amd64/`) is found under the one
///   sibling directory of the same shape with another version (`python3.12`), the same
///   version replaced in the rest of the path too (`cpython-311` -> `cpython-312`), when a
///   Debian package of this image owns the result.
pub fn renamed(fs: &dyn Rootfs, path: &ImagePath) -> Option<(ImagePath, &'static str)> {
    let db = std::cell::OnceCell::new();
    renamed_with(fs, path, &|| db.get_or_init(|| PackageDb::read(fs)))
}

fn renamed_with<'a>(
    fs: &dyn Rootfs,
    path: &ImagePath,
    db: &dyn Fn() -> &'a PackageDb,
) -> Option<(ImagePath, &'static str)> {
    let dir = path.parent()?;
    let name = path.file_name()?;
    if let Some(to) = by_soname(fs, &dir, name) {
        return Some((to, "soname"));
    }
    if let Some(to) = by_distribution(fs, path) {
        return Some((to, "distribution"));
    }
    if let Some(to) = by_pyc(fs, &dir, name) {
        return Some((to, "pyc"));
    }
    if let Some(to) = by_package_version(fs, path, db) {
        return Some((to, "debian-package"));
    }
    None
}

/// A component's shape: each run of digits as `#` (`python3.11` -> `python#.#`).
fn shape(component: &str) -> String {
    let mut out = String::with_capacity(component.len());
    let mut in_digits = false;
    for c in component.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

/// The digit runs of a component, joined by what separates them (`java-17-openjdk` -> `17`,
/// `python3.11` -> `3.11`): its version.
fn version_of(component: &str) -> Option<&str> {
    let start = component.find(|c: char| c.is_ascii_digit())?;
    let end = component.rfind(|c: char| c.is_ascii_digit())? + 1;
    Some(&component[start..end])
}

fn by_package_version<'a>(
    fs: &dyn Rootfs,
    path: &ImagePath,
    db: &dyn Fn() -> &'a PackageDb,
) -> Option<ImagePath> {
    let comps: Vec<&str> = path.components().collect();
    // The first versioned directory whose parent has exactly one sibling of its shape.
    for i in 0..comps.len().saturating_sub(1) {
        let c = comps[i];
        let Some(old) = version_of(c) else {
            continue;
        };
        let parent = ImagePath::new(&format!("/{}", comps[..i].join("/")));
        let want = shape(c);
        let mut found = fs.children(&parent).into_iter().filter(|p| {
            p.file_name()
                .is_some_and(|n| n != c && shape(n) == want && version_of(n).is_some())
        });
        let Some(sibling) = found.next() else {
            continue;
        };
        if found.next().is_some() {
            return None; // two other versions side by side: no way to tell which one
        }
        let new_name = sibling.file_name()?;
        let new = version_of(new_name)?;
        // The same version in the rest of the path, dotted (`3.11`) or not (`311`).
        let (old_flat, new_flat) = (old.replace('.', ""), new.replace('.', ""));
        let rest: Vec<String> = comps[i + 1..]
            .iter()
            .map(|r| {
                if r.contains(old) {
                    r.replace(old, new)
                } else if old_flat.len() > 1 && r.contains(&old_flat) {
                    r.replace(&old_flat, &new_flat)
                } else {
                    (*r).to_owned()
                }
            })
            .collect();
        let to = sibling.join(&rest.join("/"));
        let real = resolve(fs, to.as_str(), false).ok()?.path;
        let owned = db()
            .owners(&real)
            .iter()
            .any(|&id| db().packages[id].kind == minify_packages::Kind::Deb);
        return (owned && fs.entry(&real).is_some()).then_some(to);
    }
    None
}

fn by_soname(fs: &dyn Rootfs, dir: &ImagePath, name: &str) -> Option<ImagePath> {
    let at = name.find(".so.")?;
    let stem = &name[..at + 3];
    let versions: Vec<&str> = name[at + 4..].split('.').collect();
    for k in (1..versions.len()).rev() {
        let link = dir.join(&format!("{stem}.{}", versions[..k].join(".")));
        let Ok(r) = resolve(fs, link.as_str(), true) else {
            continue;
        };
        let same_library = r
            .path
            .file_name()
            .is_some_and(|n| n.starts_with(&format!("{stem}.")));
        if same_library && fs.entry(&r.path).is_some_and(minify_model::Entry::is_file) {
            return Some(r.path);
        }
    }
    None
}

/// `Flask-2.2.2.dist-info` -> (`flask`, `.dist-info`).
fn distribution(component: &str) -> Option<(String, &'static str)> {
    let suffix = [".dist-info", ".egg-info"]
        .into_iter()
        .find(|s| component.ends_with(s))?;
    let (dist, _version) = component[..component.len() - suffix.len()].split_once('-')?;
    Some((dist.to_ascii_lowercase().replace(['-', '.'], "_"), suffix))
}

fn by_distribution(fs: &dyn Rootfs, path: &ImagePath) -> Option<ImagePath> {
    let comps: Vec<&str> = path.components().collect();
    let (i, (dist, suffix)) = comps
        .iter()
        .enumerate()
        .find_map(|(i, c)| distribution(c).map(|d| (i, d)))?;
    let parent = ImagePath::new(&format!("/{}", comps[..i].join("/")));
    let mut found = fs.children(&parent).into_iter().filter(|c| {
        c.file_name().and_then(distribution) == Some((dist.clone(), suffix)) && c != &parent
    });
    let new_dir = found.next()?;
    if found.next().is_some() {
        return None; // two versions side by side: no way to tell which one
    }
    let rest = &comps[i + 1..];
    let to = if rest.is_empty() {
        new_dir
    } else {
        new_dir.join(&rest.join("/"))
    };
    (to != *path && present(fs, &to)).then_some(to)
}

fn by_pyc(fs: &dyn Rootfs, dir: &ImagePath, name: &str) -> Option<ImagePath> {
    if dir.file_name() != Some("__pycache__") {
        return None;
    }
    let (module, tag_rest) = name.split_once(".cpython-3")?;
    let rest = tag_rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let mut other: Vec<ImagePath> = fs
        .children(dir)
        .into_iter()
        .filter(|c| {
            c.file_name()
                .and_then(|n| n.strip_prefix(&format!("{module}.cpython-3")))
                .is_some_and(|t| t.trim_start_matches(|c: char| c.is_ascii_digit()) == rest)
        })
        .collect();
    other.sort();
    if let Some(p) = other.pop() {
        return Some(p);
    }
    let source = dir.parent()?.join(&format!("{module}.py"));
    present(fs, &source).then_some(source)
}

/// Whether the image has an entry at `path` itself (not following a final symlink).
fn present(fs: &dyn Rootfs, path: &ImagePath) -> bool {
    fs.entry(path).is_some() || resolve(fs, path.as_str(), false).is_ok()
}

/// The trace events a `traced` entry stands for. Its detail is the access kinds that
/// succeeded (`open,stat`); other details (`image entrypoint`, `directory the workload
/// created in`, a hard link target, ...) are kept as a plain lookup, since the entrypoint is
/// looked up again from the image config anyway.
fn synthetic_events(path: &ImagePath, detail: &str) -> Vec<TraceEvent> {
    let kinds: Option<Vec<AccessKind>> = detail.split(',').map(kind_by_name).collect();
    let kinds = match kinds {
        Some(k) if !k.is_empty() => k,
        _ => vec![AccessKind::Stat],
    };
    kinds
        .into_iter()
        .map(|kind| TraceEvent {
            pid: 0,
            comm: String::new(),
            kind,
            path: path.to_string(),
            ok: true,
            special: None,
            detail: String::new(),
        })
        .collect()
}

fn kind_by_name(name: &str) -> Option<AccessKind> {
    AccessKind::ALL.into_iter().find(|k| k.name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use minify_model::rootfs::memfs::MemFs;

    fn renamed_to(fs: &MemFs, path: &str) -> Option<(String, &'static str)> {
        renamed(fs, &ImagePath::new(path)).map(|(p, r)| (p.to_string(), r))
    }

    #[test]
    fn soname_rule_follows_the_moved_link() {
        let mut fs = MemFs::default();
        fs.dir("/")
            .dir("/usr")
            .dir("/usr/lib")
            .file("/usr/lib/libpcre2-8.so.0.11.3", b"\x7fELF")
            .symlink("/usr/lib/libpcre2-8.so.0", "libpcre2-8.so.0.11.3")
            .file("/usr/lib/libother.so.1.0.0", b"x")
            .symlink("/usr/lib/libgone.so.1", "libother.so.1.0.0");
        assert_eq!(
            renamed_to(&fs, "/usr/lib/libpcre2-8.so.0.11.2"),
            Some(("/usr/lib/libpcre2-8.so.0.11.3".into(), "soname"))
        );
        // A link of that name now naming another library is no successor.
        assert_eq!(renamed_to(&fs, "/usr/lib/libgone.so.1.2.3"), None);
    }

    #[test]
    fn distribution_rule_finds_the_new_version() {
        let mut fs = MemFs::default();
        fs.dir("/site")
            .dir("/site/flask-3.0.1.dist-info")
            .file("/site/flask-3.0.1.dist-info/METADATA", b"x")
            .dir("/site/werkzeug-3.0.0.dist-info");
        assert_eq!(
            renamed_to(&fs, "/site/Flask-2.2.2.dist-info/METADATA"),
            Some((
                "/site/flask-3.0.1.dist-info/METADATA".into(),
                "distribution"
            ))
        );
        assert_eq!(
            renamed_to(&fs, "/site/Jinja2-3.1.2.dist-info/METADATA"),
            None
        );
        // Two versions side by side: no guess.
        fs.dir("/site/flask-3.0.2.dist-info")
            .file("/site/flask-3.0.2.dist-info/METADATA", b"x");
        assert_eq!(
            renamed_to(&fs, "/site/Flask-2.2.2.dist-info/METADATA"),
            None
        );
    }

    #[test]
    fn debian_package_rule_follows_a_versioned_directory() {
        let status = b"Package: libpython3.12-stdlib\nStatus: install ok installed\nVersion: 3.12.1-1\nArchitecture: amd64\n\n";
        let list = b"/usr/lib/python3.12\n/usr/lib/python3.12/json\n/usr/lib/python3.12/json/decoder.py\n/usr/lib/python3.12/lib-dynload\n/usr/lib/python3.12/lib-dynload/_json.cpython-312-x86_64-linux-gnu.so\n";
        let mut fs = MemFs::default();
        fs.dir("/usr")
            .dir("/usr/lib")
            .dir("/usr/lib/python3.12")
            .dir("/usr/lib/python3.12/json")
            .file("/usr/lib/python3.12/json/decoder.py", b"x")
            .dir("/usr/lib/python3.12/lib-dynload")
            .file(
                "/usr/lib/python3.12/lib-dynload/_json.cpython-312-x86_64-linux-gnu.so",
                b"x",
            )
            .dir("/usr/lib/unowned-2")
            .file("/usr/lib/unowned-2/a", b"x")
            .dir("/var")
            .dir("/var/lib")
            .dir("/var/lib/dpkg")
            .file("/var/lib/dpkg/status", status)
            .dir("/var/lib/dpkg/info")
            .file("/var/lib/dpkg/info/libpython3.12-stdlib:amd64.list", list);
        assert_eq!(
            renamed_to(&fs, "/usr/lib/python3.11/json/decoder.py"),
            Some((
                "/usr/lib/python3.12/json/decoder.py".into(),
                "debian-package"
            ))
        );
        assert_eq!(
            renamed_to(
                &fs,
                "/usr/lib/python3.11/lib-dynload/_json.cpython-311-x86_64-linux-gnu.so"
            ),
            Some((
                "/usr/lib/python3.12/lib-dynload/_json.cpython-312-x86_64-linux-gnu.so".into(),
                "debian-package"
            ))
        );
        // Not in the new version, or not a Debian package's file: no successor.
        assert_eq!(renamed_to(&fs, "/usr/lib/python3.11/json/gone.py"), None);
        assert_eq!(renamed_to(&fs, "/usr/lib/unowned-1/a"), None);
        // Two other versions side by side: no guess.
        fs.dir("/usr/lib/python3.13")
            .dir("/usr/lib/python3.13/json")
            .file("/usr/lib/python3.13/json/decoder.py", b"x");
        assert_eq!(renamed_to(&fs, "/usr/lib/python3.11/json/decoder.py"), None);
    }

    #[test]
    fn pyc_rule_takes_another_python_or_the_source() {
        let mut fs = MemFs::default();
        fs.dir("/app")
            .file("/app/views.py", b"x")
            .dir("/app/__pycache__")
            .file("/app/__pycache__/models.cpython-312.pyc", b"x");
        assert_eq!(
            renamed_to(&fs, "/app/__pycache__/models.cpython-311.pyc"),
            Some(("/app/__pycache__/models.cpython-312.pyc".into(), "pyc"))
        );
        assert_eq!(
            renamed_to(&fs, "/app/__pycache__/views.cpython-311.pyc"),
            Some(("/app/views.py".into(), "pyc"))
        );
        assert_eq!(
            renamed_to(&fs, "/app/__pycache__/gone.cpython-311.pyc"),
            None
        );
    }
}
