//! The eBPF file-access tracer: loads the programs from `ebpf/minify-trace-ebpf`, filters them
//! to one cgroup v2 subtree, and turns the ring buffer into a [`minify_model::Trace`].
//!
//! # How it is used
//! ```no_run
//! use minify_trace::{TraceCgroup, TraceOptions, Tracer};
//! # fn main() -> Result<(), minify_trace::TraceError> {
//! // 1. A fresh cgroup v2 directory; everything that runs in it (or below it) is traced.
//! let cgroup = TraceCgroup::create()?;
//! // 2. Attach before the workload starts: `start` returns once the programs are attached
//! //    and the ring buffer is being drained, so the workload's first exec is seen.
//! let tracer = Tracer::start(&cgroup, TraceOptions::default())?;
//! // 3. Start the workload inside the cgroup, e.g. a Docker container with
//! //    `HostConfig.CgroupParent = cgroup.name()`, or a command with `cgroup.spawn(..)`.
//! // 4. When it is done: detach, drain, and get the trace (with per-kind loss counts).
//! let trace = tracer.finish()?;
//! if trace.lost_total() > 0 { /* incomplete: say so */ }
//! # drop(cgroup); Ok(()) }
//! ```
//! Dropping a [`Tracer`] detaches every program (closing the process does too: nothing is
//! pinned), dropping a [`TraceCgroup`] waits for it to empty and removes it.
//!
//! # Why cgroups, and why tracepoints
//! Filtering on `bpf_get_current_ancestor_cgroup_id(level) == id` catches a container from its
//! very first exec (Docker creates the container's cgroup *below* the parent we made, before
//! runc execs anything) and nothing else on the host, with no pid bookkeeping race.
//!
//! Where the kernel allows fentry/`bpf_d_path` those would be cheaper and see opens made by
//! io_uring; on our machines they fail with EPERM (docs/KERNEL.md), so the programs hook
//! tracepoints and rebuild paths themselves by walking dentries and mounts up to the task's
//! root. [`Backend`] names the choice; [`doctor`] reports what this kernel allows.
//!
//! # How events flow
//! - One BTF tracepoint program on the raw `sys_exit` tracepoint sees every syscall's exit.
//!   After the cgroup check it looks the syscall number up in a table (which arguments of
//!   which syscalls to send, from tracefs formats) and sends the syscall whole: its result,
//!   its arguments read back from the saved user registers, its paths from the caller's
//!   memory, relative ones made absolute in-kernel from the dirfd or cwd, an opened file's
//!   real path from the new fd. Kernel structs are read with BTF-checked direct loads (task,
//!   `pt_regs`), offsets from the running kernel's BTF. An fd array slot has no type the
//!   verifier can follow; on Linux 6.2+ it is cast with the `bpf_rdonly_cast` kfunc so the
//!   file and its path are direct loads too (aya cannot link kfuncs: the loader rewrites a
//!   placeholder call in the object, `patch.rs`); older kernels get `bpf_probe_read_kernel`
//!   there, through the same object (`TraceOptions::probe_reads_only` forces that path).
//! - The cgroup check's answer is kept per CPU for the last cgroup id seen (read with direct
//!   loads from the task), so a busy workload pays no helper call for it.
//! - There is no `sys_enter` program: it would run on every syscall of the host for two
//!   syscalls' sake. A successful exec comes from `sched_process_exec` (the path the kernel
//!   kept in `bprm->filename`); a successful chdir sends where it led.
//! - Directories already sent are cached in-kernel per CPU (keyed by dentry, mount, root and
//!   a counter bumped by every rename/delete of the workload), so a stat storm in one
//!   directory walks it once.
//! - Events are built in place in per-CPU batches of one task's events, one ring-buffer
//!   write per batch; scheduler events and directory definitions are sent at once. [`TraceOptions::live`]
//!   sends every event at once, for [`Tracer::subscribe`].
//! - A tokio task drains the ring (woken through `AsyncFd` every few thousand writes), with
//!   its own consumer that stays clear of the producer's cache lines; decoding runs in bulk at
//!   idle priority.
//!
//! # Limits (see docs/KERNEL.md)
//! - Not seen: the ELF interpreter and binary the kernel opens during exec (the ELF resolver
//!   covers them), opens made through io_uring, 32-bit (compat) syscalls.
//! - A directory renamed by a process *outside* the cgroup while the workload uses it may be
//!   reported under its old path (the in-kernel cache only hears of the workload's renames).
//! - A successful `chdir` to a relative path is recorded as where it led (symlinks
//!   resolved): the cwd it was relative to is gone by the exit.
//! - While attached, every syscall on the host runs the exit program up to the cgroup check
//!   (that alone slows a syscall-bound workload outside the cgroup by a few percent); a
//!   traced stat costs about 0.25-0.3 us in the program, about half of it the user-string
//!   read (`cargo xtask bench trace` measures it with BPF run-time statistics, and the
//!   wall-time ratios, bench/results/trace.md; docs/STATUS.md has the A/B runs that split
//!   it up).
//! - Detaching takes ~0.15 s (5 links, an RCU grace period each, overlapped);
//!   [`Tracer::finish`] does it in the background once the traced cgroup is empty.

mod attach;
mod btf;
mod cgroup;
mod decode;
pub mod doctor;
mod error;
mod kernel_config;
mod patch;
mod reader;
mod ring;
mod spawn;
mod syscalls;
mod tracefs;
mod tracer;

pub use attach::wait_for_detach;
pub use cgroup::TraceCgroup;
pub use error::TraceError;
pub use minify_model::Trace;
pub use reader::TraceEvents;
pub use spawn::{Sandbox, SpawnSpec};
pub use tracer::{Backend, Tracer};

/// Default ring buffer size: 16 MiB. Measured on our machines: two workers doing ~800k file
/// operations in 0.8 s lose nothing at 16 MiB and 12.6 % at 1 MiB (docs/KERNEL.md).
pub const DEFAULT_RING_BYTES: u32 = 16 << 20;

/// How to trace.
#[derive(Clone, Copy, Debug)]
#[allow(clippy::struct_excessive_bools)] // independent switches, not a state machine
pub struct TraceOptions {
    /// Ring buffer size in bytes: a power of two, at least one page. Bigger rings lose fewer
    /// events under bursts at the cost of locked kernel memory.
    pub ring_bytes: u32,
    /// Mount tracefs at `/sys/kernel/tracing` when it is not mounted (needed to attach
    /// tracepoints). The mount is logged; without it `start` fails with the one-line fix.
    pub mount_tracefs: bool,
    /// Keep a process's events only once it (or an ancestor) has exec'd inside the cgroup.
    /// A container runtime's own set-up runs in the container's cgroup too (runc init
    /// mounting `/proc` and `/dev` under `/var/lib/docker/...`, before `pivot_root`): those
    /// are host paths, not the workload. The workload starts at its first exec of a binary
    /// inside its root (runc may first re-exec a copy of itself that no path reaches, see
    /// `Decoder::exec`). Default on.
    pub from_first_exec: bool,
    /// Deliver each event at once, for a live subscriber ([`Tracer::subscribe`]). Off, the
    /// programs collect a task's events in per-CPU batches (much cheaper for the workload),
    /// and a quiet CPU's last events may wait in its batch until the trace ends.
    pub live: bool,
    /// Read files with `bpf_probe_read_kernel` even where the kernel has the
    /// `bpf_rdonly_cast` kfunc (Linux 6.2+), as the programs do on older kernels. For tests
    /// and comparisons; off by default.
    pub probe_reads_only: bool,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            ring_bytes: DEFAULT_RING_BYTES,
            mount_tracefs: true,
            from_first_exec: true,
            live: false,
            probe_reads_only: false,
        }
    }
}

/// One process seen during the trace (host pids).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProcessInfo {
    pub pid: u32,
    /// Parent pid, when the fork was seen (the first traced process has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    /// Last `comm` seen.
    pub comm: String,
    /// Executables run by this process, in order (after symlinks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub execs: Vec<String>,
    /// Exit code (wait status `>> 8`), when its exit was seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// A finished recording: the trace the closure needs, plus the process tree and counters
/// useful for debugging and for `minify trace`.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    pub trace: minify_model::Trace,
    /// Processes in the order they were first seen.
    pub processes: Vec<ProcessInfo>,
    /// Ring-buffer records received.
    pub records: u64,
    /// Paths dropped because they lie outside the process's root (e.g. a file descriptor
    /// inherited from the host) or on an internal mount (pipes, sockets).
    pub unreachable: u64,
}
