//! [`Tracer`]: load the eBPF object with this kernel's offsets, attach it to `sys_exit` and
//! the scheduler's exec/fork/exit, and drain the ring buffer with a tokio task of its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya::maps::{Array as BpfArray, MapData, PerCpuArray, RingBuf};
use aya::programs::tp_btf::BtfTracePointLink;
use aya::programs::trace_point::TracePointLink;
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};
use minify_model::TraceEvent;
use minify_trace_common::{Batch, KernelConfig, SYS_NR_SLOTS, SysCfg, op};

use crate::btf::{self, Btf};
use crate::decode::Decoder;
use crate::ring::Ring;
use crate::tracefs::{self, Format};
use crate::{Recording, TraceCgroup, TraceError, TraceOptions};

/// The compiled eBPF object (empty when built with `AYA_BUILD_SKIP=1`).
pub(crate) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/minify-trace-ebpf"));

/// `FMODE_CREATED` (include/linux/fs.h): set in `file->f_mode` when an open created the file.
/// A `#define`, so not in BTF; it has been bit 20 since it was introduced in 4.19.
const FMODE_CREATED: u32 = 1 << 20;

/// How file accesses are observed.
///
/// Only [`Backend::Tracepoints`] is implemented: it is what works on every kernel we target,
/// including ours where fentry/LSM programs fail with EPERM and kprobes do not exist
/// (shared/KERNEL.md). A `Fentry` backend (fentry on `security_file_open` / `vfs_statx` /
/// `do_renameat2` ..., paths from `bpf_d_path`) would be cheaper and would also see opens made
/// through io_uring; it belongs here as a second variant, chosen by `Tracer::start` when
/// `doctor::check_attach_types()` reports fentry as loadable, and must be tested on a kernel
/// that allows trampolines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// A BTF tracepoint on raw `sys_exit` and on `sched_process_exec`, tracepoints on
    /// `sched_process_{fork,exit}`; paths rebuilt in eBPF from dentries and mounts.
    Tracepoints,
}

/// One traced syscall: its family and the record fields holding its arguments.
struct Syscall {
    name: &'static str,
    op: u32,
    path: Option<&'static str>,
    dfd: Option<&'static str>,
    path2: Option<&'static str>,
    dfd2: Option<&'static str>,
    fd: Option<&'static str>,
}

const fn sc(name: &'static str, op: u32, path: &'static str, dfd: Option<&'static str>) -> Syscall {
    Syscall {
        name,
        op,
        path: Some(path),
        dfd,
        path2: None,
        dfd2: None,
        fd: None,
    }
}

/// This arch's number for a syscall (the tracepoint records carry it, not the name).
/// Syscalls that only exist on x86_64 are compiled in there only.
fn syscall_nr(name: &str) -> Option<i64> {
    Some(match name {
        "openat" => libc::SYS_openat,
        "openat2" => libc::SYS_openat2,
        "newfstatat" => libc::SYS_newfstatat,
        "statx" => libc::SYS_statx,
        "faccessat" => libc::SYS_faccessat,
        "faccessat2" => libc::SYS_faccessat2,
        "readlinkat" => libc::SYS_readlinkat,
        "execve" => libc::SYS_execve,
        "execveat" => libc::SYS_execveat,
        "chdir" => libc::SYS_chdir,
        "getdents64" => libc::SYS_getdents64,
        "mkdirat" => libc::SYS_mkdirat,
        "mknodat" => libc::SYS_mknodat,
        "symlinkat" => libc::SYS_symlinkat,
        "linkat" => libc::SYS_linkat,
        "renameat" => libc::SYS_renameat,
        "renameat2" => libc::SYS_renameat2,
        "unlinkat" => libc::SYS_unlinkat,
        #[cfg(target_arch = "x86_64")]
        "open" => libc::SYS_open,
        #[cfg(target_arch = "x86_64")]
        "creat" => libc::SYS_creat,
        #[cfg(target_arch = "x86_64")]
        "newstat" => libc::SYS_stat,
        #[cfg(target_arch = "x86_64")]
        "newlstat" => libc::SYS_lstat,
        #[cfg(target_arch = "x86_64")]
        "access" => libc::SYS_access,
        #[cfg(target_arch = "x86_64")]
        "readlink" => libc::SYS_readlink,
        #[cfg(target_arch = "x86_64")]
        "mkdir" => libc::SYS_mkdir,
        #[cfg(target_arch = "x86_64")]
        "mknod" => libc::SYS_mknod,
        #[cfg(target_arch = "x86_64")]
        "symlink" => libc::SYS_symlink,
        #[cfg(target_arch = "x86_64")]
        "link" => libc::SYS_link,
        #[cfg(target_arch = "x86_64")]
        "rename" => libc::SYS_rename,
        #[cfg(target_arch = "x86_64")]
        "unlink" => libc::SYS_unlink,
        #[cfg(target_arch = "x86_64")]
        "rmdir" => libc::SYS_rmdir,
        _ => return None,
    })
}

/// Every syscall we trace. Field names are the kernel's (`SYSCALL_DEFINE` argument names, as
/// they appear in tracefs `format` files). Syscalls missing on this arch are skipped: arm64 has
/// no `open`, `creat`, `stat`, `access`, `readlink`, `mkdir`, `rename`... only the `*at` forms.
const SYSCALLS: &[Syscall] = &[
    sc("openat", op::OPEN, "filename", Some("dfd")),
    sc("openat2", op::OPEN, "filename", Some("dfd")),
    sc("open", op::OPEN, "filename", None),
    sc("creat", op::OPEN, "pathname", None),
    sc("newfstatat", op::STAT, "filename", Some("dfd")),
    sc("statx", op::STAT, "filename", Some("dfd")),
    sc("newstat", op::STAT, "filename", None),
    sc("newlstat", op::STAT, "filename", None),
    sc("faccessat", op::ACCESS, "filename", Some("dfd")),
    sc("faccessat2", op::ACCESS, "filename", Some("dfd")),
    sc("access", op::ACCESS, "filename", None),
    sc("readlinkat", op::READLINK, "pathname", Some("dfd")),
    sc("readlink", op::READLINK, "path", None),
    sc("execve", op::EXEC, "filename", None),
    sc("execveat", op::EXEC, "filename", Some("fd")),
    sc("chdir", op::CHDIR, "filename", None),
    Syscall {
        name: "getdents64",
        op: op::GETDENTS,
        path: None,
        dfd: None,
        path2: None,
        dfd2: None,
        fd: Some("fd"),
    },
    sc("mkdir", op::CREATE, "pathname", None),
    sc("mkdirat", op::CREATE, "pathname", Some("dfd")),
    sc("mknod", op::CREATE, "filename", None),
    sc("mknodat", op::CREATE, "filename", Some("dfd")),
    sc("symlink", op::CREATE, "newname", None),
    sc("symlinkat", op::CREATE, "newname", Some("newdfd")),
    sc("link", op::CREATE, "newname", None),
    sc("linkat", op::CREATE, "newname", Some("newdfd")),
    Syscall {
        name: "rename",
        op: op::RENAME,
        path: Some("oldname"),
        dfd: None,
        path2: Some("newname"),
        dfd2: None,
        fd: None,
    },
    Syscall {
        name: "renameat",
        op: op::RENAME,
        path: Some("oldname"),
        dfd: Some("olddfd"),
        path2: Some("newname"),
        dfd2: Some("newdfd"),
        fd: None,
    },
    Syscall {
        name: "renameat2",
        op: op::RENAME,
        path: Some("oldname"),
        dfd: Some("olddfd"),
        path2: Some("newname"),
        dfd2: Some("newdfd"),
        fd: None,
    },
    sc("unlink", op::DELETE, "pathname", None),
    sc("unlinkat", op::DELETE, "pathname", Some("dfd")),
    sc("rmdir", op::DELETE, "pathname", None),
];

/// A running trace. Programs are attached while it lives; [`Tracer::finish`] detaches them
/// and returns what was recorded. Dropping it detaches too (and discards the events).
pub struct Tracer {
    /// Owned links: dropped in parallel on finish (each detach waits for an RCU grace
    /// period, ~70 ms).
    links: Vec<Link>,
    ebpf: Option<Ebpf>,
    lost: PerCpuArray<MapData, u64>,
    /// The per-CPU batches: what is left in them is read once the programs are detached.
    batches: PerCpuArray<MapData, Batch>,
    stop: Arc<Stop>,
    /// Where the decoder sends live events, once someone subscribes.
    live: Arc<std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<TraceEvent>>>>,
    reader: Option<JoinHandle<Decoder>>,
    attached: Vec<String>,
    started: Instant,
    /// `cgroup.events` of the traced cgroup: once it says "populated 0" nothing can add
    /// events, and detaching need not hold up `finish`.
    cgroup_events: std::path::PathBuf,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("attached", &self.attached.len())
            .finish_non_exhaustive()
    }
}

/// Find an `io::Error` in an error's source chain (aya nests them).
fn io_in_chain<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = err.source();
    }
    None
}

/// An error and its sources, `outer: inner: ...` (aya's own messages omit the cause).
pub(crate) fn chain_message(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Turn an aya error into ours: EPERM/EACCES anywhere in the chain means "not permitted".
pub(crate) fn aya_error(
    what: &str,
    program: &str,
    e: &(dyn std::error::Error + 'static),
) -> TraceError {
    let detail = chain_message(e);
    let verifier_log = match e.downcast_ref::<aya::programs::ProgramError>() {
        Some(aya::programs::ProgramError::LoadError { verifier_log, .. }) => {
            verifier_log.to_string()
        }
        _ => String::new(),
    };
    // The verifier rejects a program with EACCES too; with a log that is not about rights.
    if let Some(io) = io_in_chain(e)
        && crate::error::is_permission(io)
        && verifier_log.trim().is_empty()
    {
        return TraceError::NotPermitted {
            what: format!("{what} {program}"),
            source: std::io::Error::from_raw_os_error(io.raw_os_error().unwrap_or(libc::EPERM)),
        };
    }
    TraceError::Load {
        program: program.to_owned(),
        detail,
        verifier_log,
    }
}

/// Kernel offsets from BTF plus the scheduler tracepoint layouts.
/// What the programs need to call `bpf_rdonly_cast` (see `patch`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RdonlyCast {
    /// The kfunc's id in the kernel's BTF.
    func: u32,
    /// A struct whose first member is a `struct file *`.
    fd_slot: u32,
}

impl RdonlyCast {
    pub(crate) fn find(btf: &Btf, options: TraceOptions) -> Option<RdonlyCast> {
        if options.probe_reads_only {
            return None;
        }
        Some(RdonlyCast {
            func: btf.func_id("bpf_rdonly_cast")?,
            fd_slot: btf.file_slot_struct()?,
        })
    }
}

fn kernel_config(
    btf: &Btf,
    cgroup: &TraceCgroup,
    options: TraceOptions,
    kfunc: Option<RdonlyCast>,
) -> Result<KernelConfig, TraceError> {
    let fork = Format::read("sched", "sched_process_fork")?.ok_or_else(|| TraceError::Format {
        path: "sched/sched_process_fork".into(),
        detail: "tracepoint missing".into(),
    })?;
    let (path_mnt, path_dentry) = (btf.offset("path", "mnt")?, btf.offset("path", "dentry")?);
    if path_dentry != path_mnt + 8 {
        // The programs read both pointers of a `struct path` in one go.
        return Err(TraceError::Btf {
            path: btf::VMLINUX.into(),
            detail: format!(
                "struct path: dentry at {path_dentry}, mnt at {path_mnt}; expected dentry right after mnt"
            ),
        });
    }
    let (compat_off, compat_mask) = compat_check(btf)?;
    Ok(KernelConfig {
        cgroup_id: cgroup.id(),
        cgroup_level: cgroup.level(),
        fmode_created: FMODE_CREATED,
        task_fs: btf.offset("task_struct", "fs")?,
        task_files: btf.offset("task_struct", "files")?,
        task_mm: btf.offset("task_struct", "mm")?,
        task_exit_code: btf.offset("task_struct", "exit_code")?,
        fs_root: btf.offset("fs_struct", "root")?,
        fs_pwd: btf.offset("fs_struct", "pwd")?,
        files_fdt: btf.offset("files_struct", "fdt")?,
        fdt_max_fds: btf.offset("fdtable", "max_fds")?,
        fdt_fd: btf.offset("fdtable", "fd")?,
        file_f_path: btf.offset("file", "f_path")?,
        file_f_mode: btf.offset("file", "f_mode")?,
        path_mnt,
        path_dentry,
        dentry_d_parent: btf.offset("dentry", "d_parent")?,
        dentry_d_name_name: btf.offset("dentry", "d_name.name")?,
        vfsmount_mnt_root: btf.offset("vfsmount", "mnt_root")?,
        mount_mnt: btf.offset("mount", "mnt")?,
        mount_mnt_parent: btf.offset("mount", "mnt_parent")?,
        mount_mnt_mountpoint: btf.offset("mount", "mnt_mountpoint")?,
        mm_exe_file: btf.offset("mm_struct", "exe_file")?,
        mm_arg_start: btf.offset("mm_struct", "arg_start")?,
        fork_child_pid_off: fork.field("child_pid")?,
        bprm_filename: btf.offset("linux_binprm", "filename")?,
        task_pid: btf.offset("task_struct", "pid")?,
        task_tgid: btf.offset("task_struct", "tgid")?,
        regs_nr: syscall_nr_register(btf)?,
        regs_arg: arg_registers(btf)?,
        compat_off,
        compat_mask,
        wakeup_mask: wakeup_every(options.ring_bytes) - 1,
        no_batching: u32::from(options.live),
        task_self_exec_id: btf.offset("task_struct", "self_exec_id")?,
        task_cgroups: btf.offset("task_struct", "cgroups")?,
        css_set_dfl_cgrp: btf.offset("css_set", "dfl_cgrp")?,
        cgroup_kn: btf.offset("cgroup", "kn")?,
        kernfs_node_id: btf.offset("kernfs_node", "id")?,
        rdonly_cast: u32::from(kfunc.is_some()),
        fd_slot_btf_id: kfunc.map_or(0, |k| k.fd_slot),
        pad: 0,
    })
}

/// How many ring-buffer writes (batches of up to `BATCH_LIMIT` bytes, or single events when
/// batching is off) each CPU makes between two wake-ups of the reader: about an eighth of the
/// ring in all, a power of two between 1 and 65536. The reader also looks every
/// [`POLL_INTERVAL`] without being woken.
fn wakeup_every(ring_bytes: u32) -> u32 {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as u32;
    let writes = ring_bytes / 8 / minify_trace_common::BATCH_LIMIT as u32 / cpus.max(1);
    let pow2 = if writes == 0 { 1 } else { 1 << writes.ilog2() };
    pow2.clamp(1, 65536)
}

/// Byte offset inside `struct pt_regs` of the syscall number (what `syscall_get_nr` reads).
fn syscall_nr_register(btf: &Btf) -> Result<u32, TraceError> {
    #[cfg(target_arch = "x86_64")]
    return btf.offset("pt_regs", "orig_ax");
    #[cfg(target_arch = "aarch64")]
    return btf.offset("pt_regs", "syscallno");
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = btf;
        Err(TraceError::Btf {
            path: btf::VMLINUX.into(),
            detail: "the syscall number in pt_regs is only known for x86_64 and aarch64".into(),
        })
    }
}

/// Where in `task_struct` the programs find whether the current syscall is a 32-bit compat
/// one, and which bit says so. The raw `sys_enter`/`sys_exit` tracepoints fire for those too,
/// with numbers from the compat table (32-bit `open` is 5, which is `fstat` on x86_64).
/// `TS_COMPAT` (x86) and `TIF_32BIT` (arm64) are `#define`s, not in BTF; both have had these
/// values since compat support began.
fn compat_check(btf: &Btf) -> Result<(u32, u32), TraceError> {
    #[cfg(target_arch = "x86_64")]
    return Ok((btf.offset("task_struct", "thread_info.status")?, 0x0002));
    #[cfg(target_arch = "aarch64")]
    return Ok((btf.offset("task_struct", "thread_info.flags")?, 1 << 22));
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = btf;
        Ok((0, 0))
    }
}

/// Byte offsets inside the kernel's `struct pt_regs` of the registers holding syscall
/// arguments 0..6 as they are at the syscall's exit (from BTF).
fn arg_registers(btf: &Btf) -> Result<[u32; 6], TraceError> {
    #[cfg(target_arch = "x86_64")]
    let offs = {
        let mut o = [0; 6];
        for (slot, reg) in o.iter_mut().zip(["di", "si", "dx", "r10", "r8", "r9"]) {
            *slot = btf.offset("pt_regs", reg)?;
        }
        o
    };
    #[cfg(target_arch = "aarch64")]
    let offs = {
        // x0 is overwritten by the return value; the kernel keeps the argument in orig_x0.
        let regs = btf.offset("pt_regs", "regs")?;
        [
            btf.offset("pt_regs", "orig_x0")?,
            regs + 8,
            regs + 16,
            regs + 24,
            regs + 32,
            regs + 40,
        ]
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let offs: [u32; 6] = {
        let _ = btf;
        return Err(TraceError::Btf {
            path: "/sys/kernel/btf/vmlinux".into(),
            detail: "syscall argument registers in pt_regs are only known for x86_64 and aarch64"
                .into(),
        });
    };
    Ok(offs)
}

/// The `SysCfg` of one syscall, or `None` when this kernel lacks it. Which argument is which
/// comes from the syscall's entry tracepoint format in tracefs (`SYSCALL_DEFINE` names), so a
/// missing syscall is skipped, not guessed.
fn syscall_cfg(s: &Syscall) -> Result<Option<SysCfg>, TraceError> {
    if syscall_nr(s.name).is_none() {
        return Ok(None);
    }
    let Some(enter) = Format::read("syscalls", &format!("sys_enter_{}", s.name))? else {
        return Ok(None);
    };
    // Arguments follow `__syscall_nr`, one 8-byte slot each.
    let first = (enter.field("__syscall_nr")? + 4).next_multiple_of(8);
    let arg = |name: Option<&str>| -> Result<u32, TraceError> {
        let Some(name) = name else { return Ok(0) };
        let off = enter.field(name)?;
        match off.checked_sub(first).map(|d| (d / 8, d % 8)) {
            Some((i, 0)) if i < 6 => Ok(i + 1),
            _ => Err(TraceError::Format {
                path: enter.path.clone(),
                detail: format!("field {name:?} at offset {off} is not a syscall argument slot"),
            }),
        }
    };
    let cfg = SysCfg {
        op: s.op,
        pad0: 0,
        dfd_arg: arg(s.dfd)?,
        path_arg: arg(s.path)?,
        dfd2_arg: arg(s.dfd2)?,
        path2_arg: arg(s.path2)?,
        fd_arg: arg(s.fd)?,
        pad: 0,
    };
    if !cfg.has_args() {
        return Err(TraceError::Format {
            path: enter.path.clone(),
            detail: format!("syscall {} has no path or fd argument to record", s.name),
        });
    }
    Ok(Some(cfg))
}

/// The program `name` of the object, as its program type `T`.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, TraceError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or_else(|| TraceError::Load {
        program: name.into(),
        detail: "not in the eBPF object".into(),
        verifier_log: String::new(),
    })?;
    prog.try_into()
        .map_err(|e: aya::programs::ProgramError| aya_error("loading", name, &e))
}

fn tracepoint<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut TracePoint, TraceError> {
    let tp: &mut TracePoint = program(ebpf, name)?;
    tp.load().map_err(|e| aya_error("loading", name, &e))?;
    Ok(tp)
}

fn attach(
    tp: &mut TracePoint,
    program: &str,
    category: &str,
    name: &str,
) -> Result<TracePointLink, TraceError> {
    let id = tp
        .attach(category, name)
        .map_err(|e| attach_error(program, &format!("{category}/{name}"), &e))?;
    tp.take_link(id)
        .map_err(|e| aya_error("attaching", program, &e))
}

/// An attach that failed: the hook named, unless it was a matter of rights.
fn attach_error(program: &str, hook: &str, e: &(dyn std::error::Error + 'static)) -> TraceError {
    match aya_error("attaching", program, e) {
        TraceError::Load { detail, .. } => TraceError::Attach {
            program: program.into(),
            hook: hook.into(),
            detail,
        },
        other => other,
    }
}

/// An attached program; dropping it detaches.
enum Link {
    /// The scheduler tracepoints.
    Tracepoint(#[allow(dead_code)] TracePointLink),
    /// `sys_exit`, `sched_process_exec`.
    TpBtf(#[allow(dead_code)] BtfTracePointLink),
}

/// Load the BTF tracepoint program `prog` for the raw tracepoint `name` and attach it.
fn attach_tp_btf(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    prog: &str,
    name: &str,
) -> Result<Link, TraceError> {
    let tp: &mut BtfTracePoint = program(ebpf, prog)?;
    tp.load(name, btf)
        .map_err(|e| aya_error("loading", prog, &e))?;
    let id = tp
        .attach()
        .map_err(|e| attach_error(prog, &format!("tp_btf/{name}"), &e))?;
    let link = tp
        .take_link(id)
        .map_err(|e| aya_error("attaching", prog, &e))?;
    Ok(Link::TpBtf(link))
}

/// Live trace events (see [`Tracer::subscribe`]): a `futures` `Stream`, or
/// [`TraceEvents::recv`] in async code.
#[derive(Debug)]
pub struct TraceEvents(tokio::sync::mpsc::UnboundedReceiver<TraceEvent>);

impl TraceEvents {
    /// The next event; `None` once the tracer has finished and everything was delivered.
    pub async fn recv(&mut self) -> Option<TraceEvent> {
        self.0.recv().await
    }
}

impl futures_core::Stream for TraceEvents {
    type Item = TraceEvent;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<TraceEvent>> {
        self.0.poll_recv(cx)
    }
}

/// Background detaches still running (see [`Tracer::finish_recording`]).
static PENDING_DETACH: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Wait (up to `timeout`) until tracers finished in the background are fully detached.
/// Returns whether they are. Useful before timing something without the tracer: while
/// tracepoints are being unregistered the kernel waits for RCU grace periods.
pub fn wait_for_detach(timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while PENDING_DETACH.load(Ordering::Acquire) > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Detach links concurrently: the grace periods they wait for overlap.
fn detach_all(links: Vec<Link>) {
    const THREADS: usize = 16;
    if links.is_empty() {
        return;
    }
    let per = links.len().div_ceil(THREADS);
    let mut links = links;
    std::thread::scope(|s| {
        while !links.is_empty() {
            let chunk: Vec<Link> = links.drain(..per.min(links.len())).collect();
            s.spawn(move || drop(chunk));
        }
    });
}

impl Tracer {
    /// Load and attach the programs for `cgroup`, and start draining the ring buffer.
    /// When this returns, every process in (or below) the cgroup is being traced.
    pub fn start(cgroup: &TraceCgroup, options: TraceOptions) -> Result<Tracer, TraceError> {
        let ring = options.ring_bytes;
        if !ring.is_power_of_two() || ring < 4096 {
            return Err(TraceError::Options(format!(
                "ring buffer size {ring} must be a power of two of at least 4096 bytes"
            )));
        }
        if EBPF_OBJECT.is_empty() {
            return Err(TraceError::Load {
                program: "minify-trace-ebpf".into(),
                detail: "this binary was built with AYA_BUILD_SKIP=1 and carries no eBPF object; rebuild without it".into(),
                verifier_log: String::new(),
            });
        }
        let t0 = Instant::now();
        tracefs::ensure_mounted(options.mount_tracefs)?;
        let btf = Btf::from_sys()?;
        let kfunc = RdonlyCast::find(&btf, options);
        let config = kernel_config(&btf, cgroup, options, kfunc)?;
        tracing::debug!(?config, ?kfunc, "kernel layout");
        let (object, calls) = crate::patch::rewrite_kfunc_calls(EBPF_OBJECT, kfunc.map(|k| k.func))
            .map_err(|detail| TraceError::Load {
                program: "minify-trace-ebpf".into(),
                detail,
                verifier_log: String::new(),
            })?;
        tracing::debug!(
            calls,
            "files read with {}",
            if kfunc.is_some() {
                "direct loads (bpf_rdonly_cast)"
            } else {
                "probe reads"
            }
        );

        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", ring)
            .load(object.bytes())
            .map_err(|e| aya_error("loading", "eBPF object", &e))?;

        // Which syscalls exist here, and which of their arguments to send.
        {
            let mut cfg_map: BpfArray<_, SysCfg> =
                BpfArray::try_from(ebpf.map_mut("SYS_CFG").expect("SYS_CFG is in the object"))
                    .map_err(|e| aya_error("opening map", "SYS_CFG", &e))?;
            for s in SYSCALLS {
                let Some(cfg) = syscall_cfg(s)? else {
                    tracing::debug!("syscall {} does not exist here; skipped", s.name);
                    continue;
                };
                let nr = syscall_nr(s.name).unwrap_or_default() as u32;
                if nr >= SYS_NR_SLOTS {
                    return Err(TraceError::Load {
                        program: "SYS_CFG".into(),
                        detail: format!(
                            "syscall {} has number {nr}, beyond the {SYS_NR_SLOTS} slots",
                            s.name
                        ),
                        verifier_log: String::new(),
                    });
                }
                cfg_map
                    .set(nr, cfg, 0)
                    .map_err(|e| aya_error("filling map", "SYS_CFG", &e))?;
            }
        }
        let lost = PerCpuArray::try_from(ebpf.take_map("LOST").expect("LOST is in the object"))
            .map_err(|e| aya_error("opening map", "LOST", &e))?;
        let events = RingBuf::try_from(ebpf.take_map("EVENTS").expect("EVENTS is in the object"))
            .map_err(|e| aya_error("opening map", "EVENTS", &e))?;
        let batches =
            PerCpuArray::try_from(ebpf.take_map("BATCH").expect("BATCH is in the object"))
                .map_err(|e| aya_error("opening map", "BATCH", &e))?;
        let events = Ring::new(events, ring)
            .map_err(|e| TraceError::from_io("mapping the ring buffer", e))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| TraceError::from_io("starting the trace reader's runtime", e))?;
        let readable = {
            let _in_runtime = runtime.enter();
            // SAFETY: the fd belongs to `events`, which `read_loop` keeps open and unchanged
            // until after it has dropped this `AsyncFd`.
            #[allow(unsafe_code)]
            unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    RingFd(std::os::fd::AsRawFd::as_raw_fd(&events)),
                    tokio::io::Interest::READABLE,
                )
            }
            .map_err(|e| TraceError::from_io("watching the ring buffer", e.into_parts().1))?
        };

        // The reader runs before the first attach so that nothing queues up unread.
        let stop = Arc::new(Stop::default());
        let live = Arc::new(std::sync::Mutex::new(None));
        let reader = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("minify-trace-reader".into())
                .spawn({
                    let live = Arc::clone(&live);
                    move || {
                        read_loop(
                            events,
                            &runtime,
                            readable,
                            &stop,
                            options.from_first_exec,
                            live,
                        )
                    }
                })?
        };
        let mut tracer = Tracer {
            links: Vec::new(),
            ebpf: None,
            lost,
            batches,
            stop,
            live,
            reader: Some(reader),
            attached: Vec::new(),
            started: t0,
            cgroup_events: cgroup.path().join("cgroup.events"),
        };

        // Scheduler events first so the process tree is complete.
        for (prog, name) in [
            ("sched_fork", "sched_process_fork"),
            ("sched_exit", "sched_process_exit"),
        ] {
            let tp = tracepoint(&mut ebpf, prog)?;
            tracer
                .links
                .push(Link::Tracepoint(attach(tp, prog, "sched", name)?));
            tracer.attached.push(format!("sched/{name}"));
        }
        let aya_btf = aya::Btf::from_sys_fs().map_err(|e| TraceError::Btf {
            path: btf::VMLINUX.into(),
            detail: chain_message(&e),
        })?;
        for (prog, name) in [
            ("sched_exec", "sched_process_exec"),
            ("sys_exit", "sys_exit"),
        ] {
            tracer
                .links
                .push(attach_tp_btf(&mut ebpf, &aya_btf, prog, name)?);
            tracer.attached.push(format!("tp_btf/{name}"));
        }
        tracer.ebpf = Some(ebpf);
        tracing::debug!(
            "attached {} tracepoints in {:?}",
            tracer.attached.len(),
            t0.elapsed()
        );
        Ok(tracer)
    }

    /// A live stream of the events decoded from now on, for watching a trace as it runs
    /// (`minify trace --follow`, progress displays). The complete trace is still what
    /// [`Tracer::finish`] returns; the stream ends when the tracer finishes or is dropped.
    /// Subscribing again replaces the earlier stream. Start the tracer with
    /// [`TraceOptions::live`](crate::TraceOptions::live) for events as they happen; without
    /// it they come in per-CPU batches.
    pub fn subscribe(&self) -> TraceEvents {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tx);
        TraceEvents(rx)
    }

    /// Which backend is recording.
    pub fn backend(&self) -> Backend {
        Backend::Tracepoints
    }

    /// The hooks attached (`category/name`), for diagnostics.
    pub fn attached(&self) -> &[String] {
        &self.attached
    }

    /// Events lost so far, per `op` slot.
    fn lost_by_op(&self) -> BTreeMap<u32, u64> {
        let mut out = BTreeMap::new();
        for slot in 0..op::OP_SLOTS {
            if let Ok(values) = self.lost.get(&slot, 0) {
                let n: u64 = values.iter().sum();
                if n > 0 {
                    out.insert(slot, n);
                }
            }
        }
        out
    }

    /// Detach everything, drain the ring buffer and return the trace.
    pub fn finish(self) -> Result<minify_model::Trace, TraceError> {
        self.finish_recording().map(|r| r.trace)
    }

    /// Like [`Tracer::finish`], with the process tree and counters.
    pub fn finish_recording(mut self) -> Result<Recording, TraceError> {
        let t0 = Instant::now();
        // Detach first: after this no new records arrive, so the drain below is complete.
        // When the cgroup is already empty nothing can add records any more, and the detach
        // (seconds: each tracepoint waits for an RCU grace period) runs in the background.
        let links = std::mem::take(&mut self.links);
        let ebpf = self.ebpf.take();
        let empty = fs_err::read_to_string(&self.cgroup_events)
            .is_ok_and(|t| t.lines().any(|l| l.trim() == "populated 0"));
        if empty {
            PENDING_DETACH.fetch_add(1, Ordering::AcqRel);
            std::thread::spawn(move || {
                detach_all(links);
                drop(ebpf);
                PENDING_DETACH.fetch_sub(1, Ordering::AcqRel);
            });
        } else {
            detach_all(links);
            drop(ebpf);
        }
        let detach = t0.elapsed();
        // The last events of each CPU are still in its batch. Nothing adds to them any more:
        // the programs are detached, or the cgroup is empty (every program starts with the
        // cgroup check).
        let mut tail = Vec::new();
        if let Ok(per_cpu) = self.batches.get(&0, 0) {
            for b in per_cpu.iter() {
                let len = (b.len as usize).min(b.buf.len());
                tail.extend_from_slice(&b.buf[..len]);
            }
        }
        *self
            .stop
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = tail;
        self.stop.now();
        let decoder = self
            .reader
            .take()
            .expect("reader present until finish")
            .join()
            .map_err(|_| TraceError::Reader("reader thread panicked".into()))?;
        let lost = self.lost_by_op();
        let rec = decoder.finish(&lost);
        tracing::debug!(
            records = rec.records,
            events = rec.trace.events.len(),
            lost = rec.trace.lost_total(),
            ?detach,
            total = ?self.started.elapsed(),
            "trace finished"
        );
        Ok(rec)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        detach_all(std::mem::take(&mut self.links));
        drop(self.ebpf.take());
        self.stop.now();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// How often the reader looks at the ring without being woken: the eBPF side wakes it only
/// every few thousand records (see `wakeup_every`).
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How many bytes of raw records wait before the decoder works through them (unless a live
/// subscriber is watching): about half a million records.
const DECODE_BACKLOG_BYTES: usize = 64 << 20;

/// Tells the reader to take what is left and stop, at once (not at its next poll).
#[derive(Default)]
struct Stop {
    flag: AtomicBool,
    notify: tokio::sync::Notify,
    /// What was left in the per-CPU batches, decoded after the ring.
    tail: std::sync::Mutex<Vec<u8>>,
}

impl Stop {
    fn now(&self) {
        self.flag.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

/// Run the calling thread only when a CPU would otherwise be idle (`SCHED_IDLE`). The
/// decoder has no deadline (records wait in memory, nothing is lost), and on a small machine
/// a decoder at normal priority takes CPU time from the very workload being traced.
fn idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on the calling thread with a valid parameter.
    #[allow(unsafe_code)]
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &raw const param) };
    if r != 0 {
        tracing::debug!(
            "could not lower the trace decoder's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The ring buffer's fd, for tokio's `AsyncFd` (the ring itself stays with the reader).
struct RingFd(std::os::fd::RawFd);

impl std::os::fd::AsRawFd for RingFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

/// Drain the ring buffer until told to stop, then drain what is left; returns the decoder
/// with everything decoded.
///
/// The reader is a tokio task on a current-thread runtime of its own thread, woken by the
/// ring buffer's fd becoming readable (epoll through `AsyncFd`, `readable`), by a timer, or
/// by [`Stop`]. It only copies records out: the kernel side drops
/// events when the ring is full, so emptying it must not wait on anything. Decoding runs on
/// its own thread at idle priority and may lag behind under a burst without losing
/// anything; it also feeds live subscribers (see `Tracer::subscribe`).
fn read_loop(
    mut ring: Ring,
    runtime: &tokio::runtime::Runtime,
    readable: tokio::io::unix::AsyncFd<RingFd>,
    stop: &Stop,
    from_first_exec: bool,
    live: Arc<std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<TraceEvent>>>>,
) -> Decoder {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let decoder = std::thread::Builder::new()
        .name("minify-trace-decode".into())
        .spawn(move || {
            idle_priority();
            let mut decoder = Decoder::new(from_first_exec);
            // Raw batches wait here until there are many of them (or someone watches live,
            // or the trace ends): decoding while the workload runs competes with it for the
            // machine (on a 2-vCPU VM the other vCPU may well be its hyper-thread sibling),
            // and measured on the stat-storm benchmark that was a good part of the overhead.
            let mut backlog: Vec<Vec<u8>> = Vec::new();
            let mut backlog_bytes = 0;
            let decode = |decoder: &mut Decoder, batches: &mut Vec<Vec<u8>>| {
                let before = decoder.event_count();
                for batch in batches.drain(..) {
                    decoder.feed_frames(&batch);
                }
                let live = live
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(sender) = live.as_ref() {
                    for e in decoder.events_since(before) {
                        let _ = sender.send(e.clone());
                    }
                }
            };
            for batch in rx {
                backlog_bytes += batch.len();
                backlog.push(batch);
                let watched = live
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .is_some();
                if watched || backlog_bytes >= DECODE_BACKLOG_BYTES {
                    decode(&mut decoder, &mut backlog);
                    backlog_bytes = 0;
                }
            }
            decode(&mut decoder, &mut backlog);
            decoder
        });
    let drain = |ring: &mut Ring, keep_back: u64| {
        let mut batch = Vec::new();
        ring.drain_into(&mut batch, keep_back);
        if !batch.is_empty() {
            let _ = tx.send(batch);
        }
    };
    let keep_back = ring.keep_back();
    runtime.block_on(async {
        // After a wake-up from the kernel (the producer is busy) the newest records are left
        // alone; after a quiet timer tick everything is taken, so a live subscriber never
        // waits longer than that for an event.
        let mut keep = keep_back;
        while !stop.flag.load(Ordering::Acquire) {
            drain(&mut ring, keep);
            keep = tokio::select! {
                r = readable.readable() => {
                    if let Ok(mut g) = r {
                        g.clear_ready();
                    }
                    keep_back
                }
                () = tokio::time::sleep(POLL_INTERVAL) => 0,
                () = stop.notify.notified() => 0,
            };
        }
    });
    drop(readable);
    // Stopped: everything, including the newest records, then what was never sent.
    drain(&mut ring, 0);
    let tail = std::mem::take(
        &mut *stop
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    if !tail.is_empty() {
        let _ = tx.send(tail);
    }
    drop(tx);
    match decoder {
        Ok(h) => h.join().unwrap_or_else(|_| {
            tracing::error!("trace decoder thread panicked; the trace is empty");
            Decoder::new(from_first_exec)
        }),
        Err(e) => {
            tracing::error!("could not start the trace decoder thread: {e}");
            Decoder::new(from_first_exec)
        }
    }
}
