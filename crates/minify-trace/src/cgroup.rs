//! [`TraceCgroup`]: a fresh cgroup v2 directory that marks "the workload" for the tracer.
//!
//! The programs keep an event only when the current task's cgroup at `level` is this one
//! (`bpf_get_current_ancestor_cgroup_id`), so anything started inside it, or inside a cgroup
//! created below it (Docker's `--cgroup-parent`), is traced from its first instruction.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use minify_host::cgroup::{self, CgroupError, CgroupLayout};

use crate::TraceError;

/// How long [`Drop`] waits for the cgroup to empty (processes exiting, Docker removing the
/// container's child cgroup) before giving up and leaving it behind with a warning.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A cgroup v2 directory `minify-<random>` at the top of the v2 hierarchy, removed on drop.
/// Finding the hierarchy, naming, making, killing and removing are minify-host's
/// ([`minify_host::cgroup`]); this adds what the tracer needs: the id the eBPF filter
/// compares, moving a process in, and removal on drop.
#[derive(Debug)]
pub struct TraceCgroup {
    name: String,
    path: PathBuf,
    id: u64,
    level: u32,
    /// The v1 hierarchies, where Docker also makes `<name>` on hybrid hosts.
    v1: Vec<PathBuf>,
}

impl TraceCgroup {
    /// Create `minify-<random>` at the top of the cgroup v2 hierarchy (found through
    /// `/proc/self/mountinfo`: `/sys/fs/cgroup` on pure v2 hosts, `/sys/fs/cgroup/unified` on
    /// hybrid ones). Needs root (or write access to the hierarchy's root).
    pub fn create() -> Result<TraceCgroup, TraceError> {
        let layout = CgroupLayout::detect();
        let made = cgroup::make_trace_cgroup(&layout).map_err(|e| match e {
            CgroupError::Make { path, source } => {
                TraceError::from_io(format!("creating cgroup {}", path.display()), source)
            }
            other => TraceError::NoCgroup2(other),
        })?;
        let meta = fs_err::metadata(&made.path).map_err(|e| TraceError::Cgroup {
            path: made.path.clone(),
            source: e,
        })?;
        tracing::debug!(path = %made.path.display(), id = meta.ino(), level = made.level, "created trace cgroup");
        Ok(TraceCgroup {
            name: made.name,
            path: made.path,
            id: meta.ino(),
            level: made.level,
            v1: layout.v1,
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
        for pid in cgroup::pids_below(&self.path) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_populated() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Err(e) = cgroup::kill(&self.path) {
            tracing::warn!(
                "could not kill what is left in {}: {e}",
                self.path.display()
            );
        }
        false
    }

    /// Whether no process is in this cgroup or any cgroup below it.
    pub fn is_populated(&self) -> bool {
        cgroup::v2_populated(&self.path).unwrap_or(false)
    }

    /// Remove the cgroup now (its empty child cgroups first: a container's cgroup lingers
    /// briefly after the container exits), waiting up to `timeout` for it to empty.
    /// Idempotent.
    fn remove(&self, timeout: Duration) -> Result<(), TraceError> {
        cgroup::remove_tree(&self.path, timeout).map_err(|e| match e {
            CgroupError::Remove { path, source } => TraceError::Cgroup { path, source },
            other => TraceError::Cgroup {
                path: self.path.clone(),
                source: std::io::Error::other(other),
            },
        })?;
        // On hybrid hosts Docker also makes `<name>` in every cgroup v1 hierarchy it uses;
        // those are ours to clean up too (empty once the container is gone).
        for dir in &self.v1 {
            if let Err(e) = cgroup::remove_tree(&dir.join(&self.name), Duration::ZERO) {
                tracing::warn!("{e}");
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
