//! Cgroups, in one place: where the hierarchies are mounted (v2, and the v1 ones of a hybrid
//! host), the trace cgroups' names, and making, killing and removing cgroup directories.
//!
//! The tracer's [`make_trace_cgroup`], the runtime's cleanup of the directories Docker makes
//! for a `CgroupParent` ([`remove_v1_controller_dirs`]), the probes' own cgroups and
//! `minify gc` ([`trace_cgroups`]) all find the hierarchies through [`CgroupLayout::detect`],
//! so they cannot disagree on where they are.
//!
//! With the cgroupfs driver on a cgroup v1/v2 hybrid host, Docker 20.10 creates
//! `/sys/fs/cgroup/<controller>/<parent>/<id>` for every v1 controller (and runc puts the
//! process in `/<parent>/<id>` of the v2 tree). runc removes the `<id>` leaves with the
//! container; the `<parent>` directories stay behind forever unless someone removes them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::mountinfo::{self, Mount};

/// Problems with a cgroup name or its directories.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The name would leave the cgroup tree or is not a plain relative name.
    #[error(
        "cgroup parent {name:?} is not a plain relative cgroup name (no `..`, no leading `/`, no empty components)"
    )]
    BadName { name: String },
    /// No cgroup v2 hierarchy is mounted.
    #[error(
        "no cgroup v2 hierarchy mounted (looked in /proc/self/mountinfo); mount one: `mount -t cgroup2 none /sys/fs/cgroup/unified`"
    )]
    NoV2,
    /// A cgroup directory could not be made (not root?).
    #[error("cannot create cgroup {path}: {source}")]
    Make {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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

/// Where the cgroup hierarchies of this host are mounted, from `/proc/self/mountinfo`.
#[derive(Clone, Debug, Default)]
pub struct CgroupLayout {
    /// The cgroup v2 mount (`/sys/fs/cgroup` on a pure v2 host, `/sys/fs/cgroup/unified` on
    /// a hybrid one).
    pub v2: Option<PathBuf>,
    /// Depth of the v2 mount's root inside the hierarchy (0 unless in a cgroup namespace or
    /// a bind mount of a sub-tree): the eBPF filter counts levels from the real root.
    pub v2_level: u32,
    /// The cgroup v1 hierarchies, sorted (one entry per mount point; co-mounted controllers
    /// such as `cpu,cpuacct` appear once, under their real directory).
    pub v1: Vec<PathBuf>,
}

impl CgroupLayout {
    /// The hierarchies of this host (none when the mount table cannot be read).
    pub fn detect() -> CgroupLayout {
        Self::from_mounts(&mountinfo::mounts())
    }

    /// The hierarchies in a mount table: the first `cgroup2` mount, preferring the
    /// conventional places, and every `cgroup` one.
    pub fn from_mounts(mounts: &[Mount]) -> CgroupLayout {
        let v2s: Vec<&Mount> = mounts.iter().filter(|m| m.fstype == "cgroup2").collect();
        let preferred = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];
        let v2 = v2s
            .iter()
            .find(|m| preferred.iter().any(|p| m.point == Path::new(p)))
            .or_else(|| v2s.first());
        let mut v1: Vec<PathBuf> = mounts
            .iter()
            .filter(|m| m.fstype == "cgroup")
            .map(|m| m.point.clone())
            .collect();
        v1.sort();
        v1.dedup();
        CgroupLayout {
            v2: v2.map(|m| m.point.clone()),
            v2_level: v2.map_or(0, |m| {
                m.root.split('/').filter(|c| !c.is_empty()).count() as u32
            }),
            v1,
        }
    }

    /// Every hierarchy root, v2 first.
    pub fn roots(&self) -> impl Iterator<Item = &Path> {
        self.v2.iter().chain(&self.v1).map(PathBuf::as_path)
    }
}

/// What every trace cgroup's name starts with.
const TRACE_PREFIX: &str = "minify-";

/// Name of a trace cgroup for `suffix` (12 lowercase hex digits, random).
fn trace_cgroup_name(suffix: &str) -> String {
    format!("{TRACE_PREFIX}{suffix}")
}

/// Whether `name` is a trace cgroup's (see [`make_trace_cgroup`]): `minify-` and 12
/// lowercase hex digits. Nothing else at the top of a hierarchy is ever touched by `minify gc`.
pub fn is_trace_cgroup_name(name: &str) -> bool {
    name.strip_prefix(TRACE_PREFIX).is_some_and(|hex| {
        hex.len() == 12
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A cgroup v2 directory made by [`make_trace_cgroup`]. Nothing removes it on drop: its
/// maker decides when (the tracer waits for it to empty, a probe kills it first).
#[derive(Debug, Clone)]
pub struct MadeCgroup {
    /// `minify-<12 hex>`.
    pub name: String,
    /// The directory in the v2 filesystem.
    pub path: PathBuf,
    /// Its depth in the v2 hierarchy (the root is 0).
    pub level: u32,
}

/// Make `minify-<12 random hex>` at the top of `layout`'s v2 hierarchy. Every cgroup minify
/// makes is named so (the tracer's, and a host probe's), which is how `minify gc` knows them
/// ([`trace_cgroups`]). Needs root (or write access to the hierarchy's root).
pub fn make_trace_cgroup(layout: &CgroupLayout) -> Result<MadeCgroup, CgroupError> {
    let v2 = layout.v2.as_ref().ok_or(CgroupError::NoV2)?;
    let name = trace_cgroup_name(&crate::random_hex(6));
    let path = v2.join(&name);
    // std, not fs-err: the error carries the path itself.
    std::fs::create_dir(&path).map_err(|source| CgroupError::Make {
        path: path.clone(),
        source,
    })?;
    Ok(MadeCgroup {
        name,
        path,
        level: layout.v2_level + 1,
    })
}

/// Kill every process in the v2 cgroup `dir` and below it (`cgroup.kill`, Linux 5.14+).
pub fn kill(dir: &Path) -> std::io::Result<()> {
    std::fs::write(dir.join("cgroup.kill"), "1")
}

/// Whether a process runs in the v2 cgroup `dir` or below it (`populated` in
/// `cgroup.events`, which covers the whole subtree); `None` when that cannot be read (gone,
/// or not a v2 cgroup).
pub fn v2_populated(dir: &Path) -> Option<bool> {
    let text = std::fs::read_to_string(dir.join("cgroup.events")).ok()?;
    Some(text.lines().any(|l| l.trim() == "populated 1"))
}

/// Pids in the cgroup at `dir` and in every cgroup below it.
pub fn pids_below(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for child in child_dirs(dir) {
        pids.extend(pids_below(&child));
    }
    pids
}

fn child_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Remove an empty cgroup directory (`rmdir`, never recursive), retrying for about `wait`
/// while it is busy (killed processes, or runc's removal of a container's leaf, take a
/// moment). Missing is fine.
pub fn rmdir_retry(dir: &Path, wait: Duration) -> Result<(), CgroupError> {
    let deadline = Instant::now() + wait;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) && Instant::now() < deadline => {
                tracing::trace!(path = %dir.display(), "cgroup busy yet: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_owned(),
                    source,
                });
            }
        }
    }
}

/// Remove a cgroup directory with the empty cgroups below it (deepest first; a busy child
/// keeps its parent busy, and the parent's `rmdir` is what is retried for about `wait`).
/// Never a recursive deletion of files: a cgroup directory holds only the kernel's control
/// files, which go with the `rmdir`.
pub fn remove_tree(dir: &Path, wait: Duration) -> Result<(), CgroupError> {
    let deadline = Instant::now() + wait;
    loop {
        remove_empty_children(dir);
        match rmdir_retry(dir, Duration::ZERO) {
            Err(CgroupError::Remove { source, .. })
                if source.raw_os_error() == Some(nix::libc::EBUSY) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            res => return res,
        }
    }
}

/// Remove the empty child cgroups of `dir`, depth-first; busy ones stay.
fn remove_empty_children(dir: &Path) {
    for child in child_dirs(dir) {
        remove_empty_children(&child);
        let _ = std::fs::remove_dir(&child);
    }
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

/// Remove `<hierarchy>/<parent>` in every v1 hierarchy, then each ancestor component that
/// is ours (a/b/c: a/b/c, a/b, a), only where empty (`rmdir`, never recursive). Missing
/// directories are fine. Retries briefly, because runc's removal of the container's leaf can
/// lag the API's answer.
pub fn remove_v1_controller_dirs(parent: &str) -> Result<(), CgroupError> {
    validate_cgroup_parent(parent)?;
    remove_v1_under(&CgroupLayout::detect().v1, parent)
}

fn remove_v1_under(hierarchies: &[PathBuf], parent: &str) -> Result<(), CgroupError> {
    let mut first_error = None;
    let comps: Vec<&str> = parent.split('/').collect();
    for h in hierarchies {
        for depth in (1..=comps.len()).rev() {
            let dir = h.join(comps[..depth].join("/"));
            if let Err(e) = rmdir_retry(&dir, Duration::from_secs(1))
                && first_error.is_none()
            {
                first_error = Some(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// One trace cgroup as found on the host: its directories in every hierarchy.
#[derive(Clone, Debug)]
pub struct TraceCgroupDirs {
    /// The v2 directory, when there is one.
    pub v2: Option<PathBuf>,
    /// `<hierarchy>/<name>` for every v1 hierarchy that has it.
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
        self.busy().is_some()
    }

    /// The first directory with a process in it or below it (or that cannot be read).
    fn busy(&self) -> Option<&PathBuf> {
        let v2_busy = |d: &&PathBuf| v2_populated(d).unwrap_or_else(|| d.exists());
        (self.v2.iter().find(v2_busy)).or_else(|| self.v1.iter().find(|d| v1_populated(d)))
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
        if let Some(busy) = self.busy() {
            return Err(CgroupError::Populated { path: busy.clone() });
        }
        let mut first_error = None;
        for d in self.all() {
            if let Err(e) = remove_tree(d, Duration::from_secs(1))
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

/// An open handle on a trace cgroup directory: while a process holds one, `minify gc` knows
/// the cgroup is in use even when no process runs in it (before its container starts, or
/// after the workload exited). It does not keep the directory from being removed.
#[derive(Debug)]
pub struct CgroupPin {
    _dir: fs_err::File,
}

impl CgroupPin {
    /// Open `dir` (the trace cgroup's v2 directory) and hold it until dropped.
    pub fn open(dir: &Path) -> std::io::Result<CgroupPin> {
        Ok(CgroupPin {
            _dir: fs_err::File::open(dir)?,
        })
    }
}

/// Trace cgroups some other process holds open (a [`CgroupPin`], or a shell whose working
/// directory is there), by name, with one such pid.
pub fn pinned_trace_cgroups(layout: &CgroupLayout) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let mut links: Vec<PathBuf> = std::fs::read_dir(p.path().join("fd"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        links.extend(std::fs::read_link(p.path().join("cwd")));
        for link in links {
            for root in layout.roots() {
                if let Ok(rest) = link.strip_prefix(root)
                    && let Some(first) = rest.components().next()
                    && let Some(name) = first.as_os_str().to_str()
                    && is_trace_cgroup_name(name)
                {
                    out.entry(name.to_owned()).or_insert(pid);
                }
            }
        }
    }
    out
}

/// v1 has no summary like v2's `populated`: any `cgroup.procs` in the subtree with a pid in
/// it. One that cannot be read counts as in use.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_and_pure_v2() {
        let hybrid = "30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n\
                      33 30 0:29 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n\
                      32 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                      34 1 0:28 / /mnt/again rw - cgroup2 cgroup2 rw\n";
        let l = CgroupLayout::from_mounts(&mountinfo::parse(hybrid));
        assert_eq!(l.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(l.v2_level, 0);
        assert_eq!(
            l.v1,
            [
                Path::new("/sys/fs/cgroup/cpu,cpuacct"),
                Path::new("/sys/fs/cgroup/pids")
            ]
        );
        let ns = "40 1 0:30 /user.slice/x /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let l = CgroupLayout::from_mounts(&mountinfo::parse(ns));
        assert_eq!(l.v2.as_deref(), Some(Path::new("/sys/fs/cgroup")));
        assert_eq!(l.v2_level, 2);
        assert!(l.v1.is_empty());
        let none =
            CgroupLayout::from_mounts(&mountinfo::parse("1 0 0:1 / / rw - ext4 /dev/sda rw\n"));
        assert!(none.v2.is_none());
        assert!(matches!(make_trace_cgroup(&none), Err(CgroupError::NoV2)));
    }

    #[test]
    fn trace_cgroup_names() {
        assert!(is_trace_cgroup_name("minify-0123456789ab"));
        assert!(is_trace_cgroup_name(&trace_cgroup_name(
            &crate::random_hex(6)
        )));
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
    fn makes_a_named_cgroup_at_the_top_of_v2() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = CgroupLayout {
            v2: Some(tmp.path().to_owned()),
            v2_level: 1,
            v1: vec![],
        };
        let made = make_trace_cgroup(&layout).unwrap();
        assert!(is_trace_cgroup_name(&made.name), "{}", made.name);
        assert_eq!(made.path, tmp.path().join(&made.name));
        assert!(made.path.is_dir());
        assert_eq!(made.level, 2);
        let found = trace_cgroups(&layout);
        assert_eq!(found.keys().collect::<Vec<_>>(), [&made.name]);
    }

    #[test]
    fn finds_trace_cgroups_in_every_hierarchy() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = CgroupLayout {
            v2: Some(tmp.path().join("unified")),
            v2_level: 0,
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
        assert_eq!(pids_below(&b.v1[0]), [4242]);
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
    fn removes_only_empty_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let h = |c: &str| tmp.path().join(c);
        for ctrl in ["memory", "pids", "unified"] {
            std::fs::create_dir_all(h(ctrl).join("p/q")).unwrap();
        }
        // A file makes `pids/p/q` non-empty: rmdir must refuse, never recurse.
        std::fs::write(h("pids/p/q/keep"), b"x").unwrap();
        let err = remove_v1_under(&[h("memory"), h("pids")], "p/q").unwrap_err();
        assert!(err.to_string().contains("pids/p/q"), "{err}");
        assert!(!h("memory/p").exists());
        assert!(h("pids/p/q/keep").exists());
        assert!(h("unified/p/q").exists());
        // A tree of empty directories goes, children first; one with a file stays.
        remove_tree(&h("unified/p"), Duration::ZERO).unwrap();
        assert!(!h("unified/p").exists());
        assert!(remove_tree(&h("pids/p"), Duration::ZERO).is_err());
        assert!(h("pids/p/q/keep").exists());
    }
}
