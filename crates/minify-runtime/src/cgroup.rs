//! The cgroup directories Docker makes for a `CgroupParent`, and removing them afterwards.
//!
//! With the cgroupfs driver on a cgroup v1/v2 hybrid host, Docker 20.10 creates
//! `/sys/fs/cgroup/<controller>/<parent>/<id>` for every v1 controller (and runc puts the
//! process in `/<parent>/<id>` of the v2 tree). runc removes the `<id>` leaves with the
//! container; the `<parent>` directories stay behind forever unless someone removes them.
//!
//! `minify gc` also looks for the tracer's own cgroups (`minify-<12 hex>`, named by
//! minify-trace's `TraceCgroup`) that a killed run left in the v2 tree and the v1 hierarchies:
//! [`CgroupLayout`] finds the hierarchies, [`trace_cgroups`] the candidates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The root of the cgroup mounts.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Problems with a cgroup parent name or its directories.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The name would leave the cgroup tree or is not a plain relative name.
    #[error(
        "cgroup parent {name:?} is not a plain relative cgroup name (no `..`, no leading `/`, no empty components)"
    )]
    BadName { name: String },
    /// A directory could not be removed (still busy after the container was removed).
    #[error("cannot remove cgroup directory {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Processes still run in the cgroup, so it is not removed.
    #[error("cgroup directory {path} still has processes; not removed")]
    Populated { path: PathBuf },
}

/// Check that `name` is a relative cgroup path that stays inside the tree: components are
/// non-empty, not `.`/`..`. The name ends up in `rmdir` calls as root, so this is the guard
/// against removing anything but our own directory.
pub fn validate_cgroup_parent(name: &str) -> Result<(), CgroupError> {
    let ok = !name.is_empty()
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'));
    if ok {
        Ok(())
    } else {
        Err(CgroupError::BadName {
            name: name.to_owned(),
        })
    }
}

/// Remove `/sys/fs/cgroup/<controller>/<parent>` for every v1 controller mount (everything
/// under `/sys/fs/cgroup` but the v2 `unified` mount), deepest component first, only where
/// empty (`rmdir`, never recursive). Missing directories are fine. Retries briefly, because
/// runc's removal of the container's leaf can lag the API's answer.
pub fn remove_v1_controller_dirs(parent: &str) -> Result<(), CgroupError> {
    validate_cgroup_parent(parent)?;
    remove_v1_under(Path::new(CGROUP_ROOT), parent)
}

fn remove_v1_under(root: &Path, parent: &str) -> Result<(), CgroupError> {
    let Ok(mounts) = std::fs::read_dir(root) else {
        return Ok(());
    };
    let mut first_error = None;
    for m in mounts.flatten() {
        let name = m.file_name();
        if name == "unified" || !m.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        // Remove `<parent>` then each ancestor component that is ours (a/b/c: a/b/c, a/b, a).
        let comps: Vec<&str> = parent.split('/').collect();
        for depth in (1..=comps.len()).rev() {
            let dir = m.path().join(comps[..depth].join("/"));
            if let Err(e) = rmdir_retry(&dir)
                && first_error.is_none()
            {
                first_error = Some(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Remove an empty cgroup directory, retrying for about a second while it is busy (killed
/// processes take a moment to leave it).
fn rmdir_retry(dir: &Path) -> Result<(), CgroupError> {
    rmdir_retry_for(dir, Duration::from_secs(1))
}

/// [`rmdir_retry`], retrying for about `wait`.
pub(crate) fn rmdir_retry_for(dir: &Path, wait: Duration) -> Result<(), CgroupError> {
    let mut last = None;
    let tries = (wait.as_millis() / 50).max(1);
    for _ in 0..tries {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(CgroupError::Remove {
                    path: dir.to_owned(),
                    source: e,
                });
            }
        }
    }
    Err(CgroupError::Remove {
        path: dir.to_owned(),
        source: last.unwrap_or_else(|| std::io::Error::other("busy")),
    })
}

/// Where the cgroup hierarchies are mounted: the conventional places only (`/sys/fs/cgroup`
/// for a pure v2 host; `/sys/fs/cgroup/unified` and `/sys/fs/cgroup/<controller>` for a
/// hybrid one), told apart by their filesystem type.
#[derive(Clone, Debug, Default)]
pub struct CgroupLayout {
    /// The cgroup v2 mount.
    pub v2: Option<PathBuf>,
    /// The cgroup v1 hierarchies (real directories only; `cpu -> cpu,cpuacct` style links
    /// are skipped, their target is listed).
    pub v1: Vec<PathBuf>,
}

impl CgroupLayout {
    /// The hierarchies of this host.
    pub fn detect() -> CgroupLayout {
        use nix::sys::statfs::{CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, FsType, statfs};
        let is = |p: &Path, magic: FsType| statfs(p).is_ok_and(|s| s.filesystem_type() == magic);
        let root = Path::new(CGROUP_ROOT);
        if is(root, CGROUP2_SUPER_MAGIC) {
            return CgroupLayout {
                v2: Some(root.to_owned()),
                v1: Vec::new(),
            };
        }
        let unified = root.join("unified");
        let mut v1: Vec<PathBuf> = std::fs::read_dir(root)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .filter(|p| p != &unified && is(p, CGROUP_SUPER_MAGIC))
                    .collect()
            })
            .unwrap_or_default();
        v1.sort();
        CgroupLayout {
            v2: is(&unified, CGROUP2_SUPER_MAGIC).then_some(unified),
            v1,
        }
    }

    /// Every hierarchy root, v2 first.
    pub fn roots(&self) -> impl Iterator<Item = &Path> {
        self.v2.iter().chain(&self.v1).map(PathBuf::as_path)
    }
}

pub use minify_model::trace::is_trace_cgroup_name;

/// One trace cgroup as found on the host: its directories in every hierarchy.
#[derive(Clone, Debug)]
pub struct TraceCgroupDirs {
    /// The v2 directory, when there is one.
    pub v2: Option<PathBuf>,
    /// `/sys/fs/cgroup/<controller>/<name>` for every v1 hierarchy that has it.
    pub v1: Vec<PathBuf>,
}

impl TraceCgroupDirs {
    /// Every directory, v2 first.
    pub fn all(&self) -> impl Iterator<Item = &Path> {
        self.v2.iter().chain(&self.v1).map(PathBuf::as_path)
    }

    /// Whether any process runs in it or below it. A directory that cannot be read counts as
    /// populated: nothing is removed on a guess.
    pub fn is_populated(&self) -> bool {
        self.v2.as_deref().is_some_and(v2_populated) || self.v1.iter().any(|d| v1_populated(d))
    }

    /// The latest modification time of its directories (creation, or a child cgroup added or
    /// removed since; kernfs keeps those times). `None` when none could be read.
    pub fn modified(&self) -> Option<SystemTime> {
        self.all()
            .filter_map(|d| std::fs::metadata(d).and_then(|m| m.modified()).ok())
            .max()
    }

    /// Remove every directory (child cgroups first, `rmdir` only: a cgroup with processes
    /// cannot be removed, and is not tried). Missing directories are fine; a cgroup that is
    /// still emptying (a container just removed) gets a moment to finish.
    pub fn remove(&self) -> Result<(), CgroupError> {
        for _ in 0..40 {
            if !self.is_populated() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let busy = (self.v2.iter().find(|d| v2_populated(d)))
            .or_else(|| self.v1.iter().find(|d| v1_populated(d)));
        if let Some(busy) = busy {
            return Err(CgroupError::Populated { path: busy.clone() });
        }
        let mut first_error = None;
        for d in self.all() {
            if let Err(e) = rmdir_tree(d)
                && first_error.is_none()
            {
                first_error = Some(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The trace cgroups (see [`is_trace_cgroup_name`]) at the top of every hierarchy of
/// `layout`, by name.
pub fn trace_cgroups(layout: &CgroupLayout) -> BTreeMap<String, TraceCgroupDirs> {
    let mut out: BTreeMap<String, TraceCgroupDirs> = BTreeMap::new();
    let mut scan = |root: &Path, v2: bool| {
        let Ok(rd) = std::fs::read_dir(root) else {
            return;
        };
        for e in rd.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !is_trace_cgroup_name(&name) || !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let slot = out.entry(name).or_insert_with(|| TraceCgroupDirs {
                v2: None,
                v1: Vec::new(),
            });
            if v2 {
                slot.v2 = Some(e.path());
            } else {
                slot.v1.push(e.path());
            }
        }
    };
    if let Some(v2) = &layout.v2 {
        scan(v2, true);
    }
    for v1 in &layout.v1 {
        scan(v1, false);
    }
    out
}

/// v2: `populated 1` in `cgroup.events` covers the whole subtree.
fn v2_populated(dir: &Path) -> bool {
    match std::fs::read_to_string(dir.join("cgroup.events")) {
        Ok(t) => !t.lines().any(|l| l.trim() == "populated 0"),
        // Gone is empty; there but unreadable is in use.
        Err(_) => dir.exists(),
    }
}

/// v1 has no such summary: any `cgroup.procs` in the subtree with a pid in it.
fn v1_populated(dir: &Path) -> bool {
    if !dir.exists() {
        return false;
    }
    let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
        return true;
    };
    if procs.lines().any(|l| !l.trim().is_empty()) {
        return true;
    }
    std::fs::read_dir(dir).map_or(true, |rd| {
        rd.flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .any(|e| v1_populated(&e.path()))
    })
}

/// `rmdir` a cgroup directory after its child cgroups, deepest first. Never recursive
/// deletion of files: a cgroup directory holds only the kernel's control files, which go
/// with the `rmdir`.
fn rmdir_tree(dir: &Path) -> Result<(), CgroupError> {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path())?;
            }
        }
    }
    rmdir_retry(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_cgroup_names() {
        assert!(is_trace_cgroup_name("minify-0123456789ab"));
        for other in [
            "minify-0123456789AB",
            "minify-0123456789a",
            "minify-0123456789abc",
            "minify-rt-test-42",
            "docker",
            "minify-",
        ] {
            assert!(!is_trace_cgroup_name(other), "{other}");
        }
    }

    #[test]
    fn finds_trace_cgroups_in_every_hierarchy() {
        let tmp = crate::gc::tests::TempDir::new("cg-find");
        let layout = CgroupLayout {
            v2: Some(tmp.path().join("unified")),
            v1: vec![tmp.path().join("memory"), tmp.path().join("pids")],
        };
        for d in [
            "unified/minify-aaaaaaaaaaaa",
            "memory/minify-aaaaaaaaaaaa",
            "pids/minify-bbbbbbbbbbbb/child",
            "pids/minify-rt-test-1",
            "pids/docker",
        ] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        let found = trace_cgroups(&layout);
        assert_eq!(
            found.keys().collect::<Vec<_>>(),
            ["minify-aaaaaaaaaaaa", "minify-bbbbbbbbbbbb"]
        );
        let a = &found["minify-aaaaaaaaaaaa"];
        assert_eq!(a.all().count(), 2);
        assert!(a.v2.is_some());
        // No control files: a v1 directory without `cgroup.procs` cannot be read, so it
        // counts as in use. A v2 one without `cgroup.events` too.
        assert!(a.is_populated());
        let b = &found["minify-bbbbbbbbbbbb"];
        assert!(b.v2.is_none());
        std::fs::write(b.v1[0].join("cgroup.procs"), "").unwrap();
        std::fs::write(b.v1[0].join("child/cgroup.procs"), "").unwrap();
        assert!(!b.is_populated());
        std::fs::write(b.v1[0].join("child/cgroup.procs"), "4242\n").unwrap();
        assert!(b.is_populated());
        assert!(matches!(b.remove(), Err(CgroupError::Populated { .. })));
        assert!(b.modified().is_some());
    }

    #[test]
    fn names() {
        for good in ["minify-ab12", "minify/x", "a.b"] {
            validate_cgroup_parent(good).unwrap();
        }
        for bad in ["", "/abs", "..", "a/../b", "a//b", "./a", "a/"] {
            assert!(validate_cgroup_parent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn removes_only_empty_dirs_outside_unified() {
        let tmp = std::env::temp_dir().join(format!("minify-cg-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        for ctrl in ["memory", "pids", "unified"] {
            std::fs::create_dir_all(tmp.join(ctrl).join("p/q")).unwrap();
        }
        // A file makes `pids/p/q` non-empty: rmdir must refuse, never recurse.
        std::fs::write(tmp.join("pids/p/q/keep"), b"x").unwrap();
        let err = remove_v1_under(&tmp, "p/q").unwrap_err();
        assert!(err.to_string().contains("pids/p/q"), "{err}");
        assert!(!tmp.join("memory/p").exists());
        assert!(tmp.join("pids/p/q/keep").exists());
        assert!(tmp.join("unified/p/q").exists());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
