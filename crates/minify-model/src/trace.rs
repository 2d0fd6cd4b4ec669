//! What a trace is, independent of how it was recorded: the tracer (`minify-trace`) produces
//! a [`Trace`]; the closure (`minify-closure`) consumes it.
//!
//! Paths are absolute as the *workload* saw them (container/chroot-relative), never host
//! paths. Relative lookups have already been resolved against the process's cwd or dirfd.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What the workload did with a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccessKind {
    /// Opened (openat/openat2/open/creat); the path is the real file after symlinks.
    Open,
    /// The path as the open call requested it (may go through symlinks).
    OpenRequested,
    /// stat family (stat, lstat, newfstatat, statx).
    Stat,
    /// access family (access, faccessat, faccessat2).
    Access,
    /// readlink/readlinkat.
    Readlink,
    /// execve/execveat: the path as requested.
    Exec,
    /// The executable actually run (after symlinks), from `sched_process_exec`.
    ExecBinary,
    /// chdir.
    Chdir,
    /// Directory listed (getdents64).
    ListDir,
    /// Created by the workload (O_CREAT that made a new file, mkdir, mknod, symlink, link).
    Create,
    /// Renamed away from this path.
    RenameFrom,
    /// Renamed onto this path.
    RenameTo,
    /// Deleted (unlink, rmdir).
    Delete,
}

impl AccessKind {
    /// Every kind, in a stable order (for tables and per-kind loss counters).
    pub const ALL: [AccessKind; 13] = [
        AccessKind::Open,
        AccessKind::OpenRequested,
        AccessKind::Stat,
        AccessKind::Access,
        AccessKind::Readlink,
        AccessKind::Exec,
        AccessKind::ExecBinary,
        AccessKind::Chdir,
        AccessKind::ListDir,
        AccessKind::Create,
        AccessKind::RenameFrom,
        AccessKind::RenameTo,
        AccessKind::Delete,
    ];

    /// The kebab-case name used in JSON and in `minify trace` output.
    pub fn name(self) -> &'static str {
        match self {
            AccessKind::Open => "open",
            AccessKind::OpenRequested => "open-requested",
            AccessKind::Stat => "stat",
            AccessKind::Access => "access",
            AccessKind::Readlink => "readlink",
            AccessKind::Exec => "exec",
            AccessKind::ExecBinary => "exec-binary",
            AccessKind::Chdir => "chdir",
            AccessKind::ListDir => "list-dir",
            AccessKind::Create => "create",
            AccessKind::RenameFrom => "rename-from",
            AccessKind::RenameTo => "rename-to",
            AccessKind::Delete => "delete",
        }
    }
}

/// Where a path lives, for paths the image does not provide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Special {
    Proc,
    Sys,
    Dev,
}

impl Special {
    /// `/proc`, `/sys` and `/dev` (and below) are provided by the runtime, not the image.
    pub fn of(path: &str) -> Option<Special> {
        let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
        if under("/proc") {
            Some(Special::Proc)
        } else if under("/sys") {
            Some(Special::Sys)
        } else if under("/dev") {
            Some(Special::Dev)
        } else {
            None
        }
    }
}

/// One thing the workload did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// Host pid of the process.
    pub pid: u32,
    /// The process's command name (`comm`), for humans.
    pub comm: String,
    pub kind: AccessKind,
    /// Absolute path as the workload saw it.
    pub path: String,
    /// Whether the call succeeded (a failed stat means the path did not exist).
    pub ok: bool,
    /// `/proc`, `/sys`, `/dev`: provided by the runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub special: Option<Special>,
    /// For exec: argv[0]; otherwise empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One line for humans: pid, comm, kind, `ok`/`failed`, path, and the detail in brackets
/// (what `minify trace --events` prints).
impl std::fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>7} {:<15} {:<14} {:<6} {}",
            self.pid,
            self.comm,
            self.kind.name(),
            if self.ok { "ok" } else { "failed" },
            self.path
        )?;
        if !self.detail.is_empty() {
            write!(f, "  [{}]", self.detail)?;
        }
        Ok(())
    }
}

/// A whole recording.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// Events in the order they were received.
    pub events: Vec<TraceEvent>,
    /// Events the kernel side could not deliver (ring buffer full), per kind. A trace with
    /// any loss is incomplete: `minify run` refuses to build from it unless told to.
    pub lost: BTreeMap<AccessKind, u64>,
}

impl Trace {
    /// Total events lost.
    pub fn lost_total(&self) -> u64 {
        self.lost.values().sum()
    }

    /// Every path with the kinds of access it saw and whether any of them succeeded,
    /// sorted by path.
    pub fn paths(&self) -> BTreeMap<&str, PathSummary> {
        let mut out: BTreeMap<&str, PathSummary> = BTreeMap::new();
        for ev in &self.events {
            let s = out.entry(ev.path.as_str()).or_default();
            if !s.kinds.contains(&ev.kind) {
                s.kinds.push(ev.kind);
                s.kinds.sort();
            }
            if ev.ok {
                s.ok = true;
            } else {
                s.failed = true;
            }
        }
        out
    }
}

/// What happened to one path over the whole trace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathSummary {
    pub kinds: Vec<AccessKind>,
    /// At least one access succeeded.
    pub ok: bool,
    /// At least one access failed.
    pub failed: bool,
}
