//! [`TraceCgroup`]: a fresh cgroup v2 directory that marks "the workload" for the tracer.
//!
//! The programs keep an event only when the current task's cgroup at `level` is this one
//! (`bpf_get_current_ancestor_cgroup_id`), so anything started inside it, or inside a cgroup
//! created below it (Docker's `--cgroup-parent`), is traced from its first instruction.

use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::TraceError;
use crate::mountinfo::{self, Mount};

/// How long [`Drop`] waits for the cgroup to empty (processes exiting, Docker removing the
/// container's child cgroup) before giving up and leaving it behind with a warning.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A cgroup v2 directory `minify-<random>` at the top of the v2 hierarchy, removed on drop.
#[derive(Debug)]
pub struct TraceCgroup {
    name: String,
    path: PathBuf,
    id: u64,
    level: u32,
}

impl TraceCgroup {
    /// Create `minify-<random>` at the top of the cgroup v2 hierarchy (found through
    /// `/proc/self/mountinfo`: `/sys/fs/cgroup` on pure v2 hosts, `/sys/fs/cgroup/unified` on
    /// hybrid ones). Needs root (or write access to the hierarchy's root).
    pub fn create() -> Result<TraceCgroup, TraceError> {
        let mount = Cgroup2Mount::find()?;
        let name = minify_model::trace::trace_cgroup_name(&random_hex(6)?);
        let path = mount.mount_point.join(&name);
        fs_err::create_dir(&path)
            .map_err(|e| TraceError::from_io(format!("creating cgroup {}", path.display()), e))?;
        let meta = fs_err::metadata(&path).map_err(|e| TraceError::Cgroup {
            path: path.clone(),
            source: e,
        })?;
        let level = mount.root_level + 1;
        tracing::debug!(path = %path.display(), id = meta.ino(), level, "created trace cgroup");
        Ok(TraceCgroup {
            name,
            path,
            id: meta.ino(),
            level,
        })
    }

    /// The directory's name, `minify-<random>`: pass it as Docker's `HostConfig.CgroupParent`
    /// (cgroupfs driver) so the container's cgroup is created below this one.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory in the cgroup v2 filesystem.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup id (the directory's inode number), what `bpf_get_current_cgroup_id` returns.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Depth in the v2 hierarchy (the root is 0).
    pub fn level(&self) -> u32 {
        self.level
    }

    /// Move a process (and the threads of its thread group) into this cgroup.
    pub fn add_pid(&self, pid: u32) -> Result<(), TraceError> {
        let procs = self.path.join("cgroup.procs");
        fs_err::write(&procs, pid.to_string()).map_err(|e| TraceError::Cgroup {
            path: procs,
            source: e,
        })
    }

    /// Send `SIGTERM` to every process in this cgroup and the cgroups below it, then, if any
    /// is still there after `grace`, kill them all (`cgroup.kill`). Returns whether the
    /// cgroup emptied within `grace`.
    pub fn terminate(&self, grace: Duration) -> bool {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        for pid in procs_below(&self.path) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_populated() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Err(e) = std::fs::write(self.path.join("cgroup.kill"), "1") {
            tracing::warn!(
                "could not kill what is left in {}: {e}",
                self.path.display()
            );
        }
        false
    }

    /// Whether no process is in this cgroup or any cgroup below it.
    pub fn is_populated(&self) -> bool {
        let events = self.path.join("cgroup.events");
        fs_err::read_to_string(events).is_ok_and(|t| t.lines().any(|l| l.trim() == "populated 1"))
    }

    /// Remove the cgroup now, waiting up to `timeout` for it to empty. Idempotent.
    fn remove(&self, timeout: Duration) -> Result<(), TraceError> {
        let deadline = Instant::now() + timeout;
        // Children first: a container's cgroup lingers briefly after the container exits.
        loop {
            remove_children(&self.path);
            match std::fs::remove_dir(&self.path) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if Instant::now() < deadline => {
                    tracing::trace!(path = %self.path.display(), "cgroup not empty yet: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(TraceError::Cgroup {
                        path: self.path.clone(),
                        source: e,
                    });
                }
            }
        }
        // On hybrid hosts Docker also makes `<name>` in every cgroup v1 hierarchy it uses;
        // those are ours to clean up too (empty once the container is gone).
        for dir in v1_hierarchies() {
            let p = dir.join(&self.name);
            if p.is_dir() {
                remove_children(&p);
                if let Err(e) = std::fs::remove_dir(&p) {
                    tracing::warn!("could not remove cgroup {}: {e}", p.display());
                }
            }
        }
        Ok(())
    }
}

impl Drop for TraceCgroup {
    fn drop(&mut self) {
        if let Err(e) = self.remove(DRAIN_TIMEOUT) {
            tracing::warn!("leaving cgroup behind: {e}");
        }
    }
}

/// Pids in the cgroup at `dir` and in every cgroup below it.
fn procs_below(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for ent in rd.flatten() {
            if ent.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(procs_below(&ent.path()));
            }
        }
    }
    pids
}

/// Remove empty child cgroups (depth-first); busy ones stay and make the parent's rmdir fail.
fn remove_children(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for ent in rd.flatten() {
        if ent.file_type().is_ok_and(|t| t.is_dir()) {
            let p = ent.path();
            remove_children(&p);
            let _ = std::fs::remove_dir(&p);
        }
    }
}

/// Where the cgroup v2 hierarchy is mounted.
pub(crate) struct Cgroup2Mount {
    mount_point: PathBuf,
    /// Depth of the mount's root inside the hierarchy (0 unless we are in a cgroup namespace
    /// or a bind mount of a sub-tree).
    root_level: u32,
}

impl Cgroup2Mount {
    pub(crate) fn find() -> Result<Cgroup2Mount, TraceError> {
        let text = fs_err::read_to_string("/proc/self/mountinfo")?;
        cgroup2_mount(&mountinfo::parse(&text)).ok_or(TraceError::NoCgroup2)
    }
}

/// The first `cgroup2` mount, preferring the conventional places.
fn cgroup2_mount(mounts: &[Mount]) -> Option<Cgroup2Mount> {
    let mut found: Vec<&Mount> = mounts.iter().filter(|m| m.fstype == "cgroup2").collect();
    let preferred = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];
    let idx = found
        .iter()
        .position(|m| preferred.iter().any(|p| m.point == Path::new(p)))
        .unwrap_or(0);
    (idx < found.len()).then(|| {
        let m = found.swap_remove(idx);
        Cgroup2Mount {
            mount_point: m.point.clone(),
            root_level: m.root.split('/').filter(|c| !c.is_empty()).count() as u32,
        }
    })
}

/// Mount points of cgroup v1 hierarchies.
fn v1_hierarchies() -> Vec<PathBuf> {
    mountinfo::mounts()
        .into_iter()
        .filter(|m| m.fstype == "cgroup")
        .map(|m| m.point)
        .collect()
}

/// `n` random bytes from the kernel, as hex.
fn random_hex(n: usize) -> Result<String, TraceError> {
    let mut buf = vec![0u8; n];
    fs_err::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_and_pure_v2() {
        let hybrid = "30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n\
                      32 30 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        let m = cgroup2_mount(&mountinfo::parse(hybrid)).unwrap();
        assert_eq!(m.mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(m.root_level, 0);
        let ns = "40 1 0:30 /user.slice/x /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let m = cgroup2_mount(&mountinfo::parse(ns)).unwrap();
        assert_eq!(m.mount_point, Path::new("/sys/fs/cgroup"));
        assert_eq!(m.root_level, 2);
        assert!(cgroup2_mount(&mountinfo::parse("1 0 0:1 / / rw - ext4 /dev/sda rw\n")).is_none());
    }
}
