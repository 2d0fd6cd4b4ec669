//! [`Tracer`]: load the eBPF object with this kernel's offsets, attach it to the syscall and
//! scheduler tracepoints, and drain the ring buffer on a background thread.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya::maps::{Array as BpfArray, MapData, PerCpuArray, RingBuf};
use aya::programs::TracePoint;
use aya::programs::trace_point::TracePointLink;
use aya::{Ebpf, EbpfLoader};
use minify_trace_common::{
    KernelConfig, ROLE_ENTER, ROLE_EXIT, SYS_NR_SLOTS, SysCfg, op, sys_cfg_key,
};

use crate::btf::Btf;
use crate::decode::Decoder;
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
    /// Syscall enter/exit tracepoints plus `sched_process_{exec,fork,exit}`; paths rebuilt
    /// in eBPF from dentries and mounts.
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
    /// period, ~70 ms; one after the other that is seconds for ~65 tracepoints).
    links: Vec<TracePointLink>,
    ebpf: Option<Ebpf>,
    lost: PerCpuArray<MapData, u64>,
    stop: Arc<AtomicBool>,
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
    if let Some(io) = io_in_chain(e)
        && crate::error::is_permission(io)
    {
        return TraceError::NotPermitted {
            what: format!("{what} {program}"),
            source: std::io::Error::from_raw_os_error(io.raw_os_error().unwrap_or(libc::EPERM)),
        };
    }
    let verifier_log = match e.downcast_ref::<aya::programs::ProgramError>() {
        Some(aya::programs::ProgramError::LoadError { verifier_log, .. }) => {
            verifier_log.to_string()
        }
        _ => String::new(),
    };
    TraceError::Load {
        program: program.to_owned(),
        detail,
        verifier_log,
    }
}

/// Kernel offsets from BTF plus the scheduler tracepoint layouts.
fn kernel_config(btf: &Btf, cgroup: &TraceCgroup) -> Result<KernelConfig, TraceError> {
    let fork = Format::read("sched", "sched_process_fork")?.ok_or_else(|| TraceError::Format {
        path: "sched/sched_process_fork".into(),
        detail: "tracepoint missing".into(),
    })?;
    let exec = Format::read("sched", "sched_process_exec")?.ok_or_else(|| TraceError::Format {
        path: "sched/sched_process_exec".into(),
        detail: "tracepoint missing".into(),
    })?;
    let openat =
        Format::read("syscalls", "sys_enter_openat")?.ok_or_else(|| TraceError::Format {
            path: "syscalls/sys_enter_openat".into(),
            detail: "tracepoint missing (kernel without CONFIG_FTRACE_SYSCALLS?)".into(),
        })?;
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
        path_mnt: btf.offset("path", "mnt")?,
        path_dentry: btf.offset("path", "dentry")?,
        dentry_d_parent: btf.offset("dentry", "d_parent")?,
        dentry_d_name_name: btf.offset("dentry", "d_name.name")?,
        vfsmount_mnt_root: btf.offset("vfsmount", "mnt_root")?,
        mount_mnt: btf.offset("mount", "mnt")?,
        mount_mnt_parent: btf.offset("mount", "mnt_parent")?,
        mount_mnt_mountpoint: btf.offset("mount", "mnt_mountpoint")?,
        mm_exe_file: btf.offset("mm_struct", "exe_file")?,
        mm_arg_start: btf.offset("mm_struct", "arg_start")?,
        fork_child_pid_off: fork.field("child_pid")?,
        exec_old_pid_off: exec.field("old_pid")?,
        syscall_nr_off: openat.field("__syscall_nr")?,
    })
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
    if offs.contains(&0) {
        return Err(TraceError::Btf {
            path: "/sys/kernel/btf/vmlinux".into(),
            detail: format!(
                "pt_regs argument registers at {offs:?}: offset 0 is reserved for 'no argument'"
            ),
        });
    }
    Ok(offs)
}

/// The tracepoints to attach for one syscall and their `SysCfg`s, or `None` when this kernel
/// lacks it. Exec and chdir get both tracepoints (their paths are read at entry); every
/// other syscall gets only its exit, whose `SysCfg` points at the saved user registers that
/// held the arguments (which argument is which comes from the entry tracepoint's format).
fn syscall_cfgs(s: &Syscall, regs: &[u32; 6]) -> Result<Option<Vec<(Format, SysCfg)>>, TraceError> {
    if syscall_nr(s.name).is_none() {
        return Ok(None);
    }
    let enter = Format::read("syscalls", &format!("sys_enter_{}", s.name))?;
    let exit = Format::read("syscalls", &format!("sys_exit_{}", s.name))?;
    let (Some(enter), Some(exit)) = (enter, exit) else {
        return Ok(None);
    };
    let field = |f: &Format, name: Option<&str>| name.map_or(Ok(0), |n| f.field(n));
    let ret_off = exit.field("ret")?;
    if s.op == op::EXEC || s.op == op::CHDIR {
        let enter_cfg = SysCfg {
            op: s.op,
            role: ROLE_ENTER,
            dfd_off: field(&enter, s.dfd)?,
            path_off: field(&enter, s.path)?,
            dfd2_off: field(&enter, s.dfd2)?,
            path2_off: field(&enter, s.path2)?,
            fd_off: field(&enter, s.fd)?,
            ret_off: 0,
        };
        let exit_cfg = SysCfg {
            op: s.op,
            role: ROLE_EXIT,
            ret_off,
            ..SysCfg::default()
        };
        return Ok(Some(vec![(enter, enter_cfg), (exit, exit_cfg)]));
    }
    // Arguments follow `__syscall_nr`, one 8-byte slot each.
    let first = (enter.field("__syscall_nr")? + 4).next_multiple_of(8);
    let reg = |name: Option<&str>| -> Result<u32, TraceError> {
        let Some(name) = name else { return Ok(0) };
        let off = enter.field(name)?;
        let idx = off.checked_sub(first).map(|d| (d / 8, d % 8));
        match idx {
            Some((i, 0)) if (i as usize) < regs.len() => Ok(regs[i as usize]),
            _ => Err(TraceError::Format {
                path: enter.path.clone(),
                detail: format!("field {name:?} at offset {off} is not a syscall argument slot"),
            }),
        }
    };
    let exit_cfg = SysCfg {
        op: s.op,
        role: ROLE_EXIT,
        dfd_off: reg(s.dfd)?,
        path_off: reg(s.path)?,
        dfd2_off: reg(s.dfd2)?,
        path2_off: reg(s.path2)?,
        fd_off: reg(s.fd)?,
        ret_off,
    };
    if !exit_cfg.has_args() {
        return Err(TraceError::Format {
            path: enter.path.clone(),
            detail: format!("syscall {} has no path or fd argument to record", s.name),
        });
    }
    Ok(Some(vec![(exit, exit_cfg)]))
}

fn tracepoint<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut TracePoint, TraceError> {
    let prog = ebpf.program_mut(name).ok_or_else(|| TraceError::Load {
        program: name.into(),
        detail: "not in the eBPF object".into(),
        verifier_log: String::new(),
    })?;
    let tp: &mut TracePoint = prog
        .try_into()
        .map_err(|e: aya::programs::ProgramError| aya_error("loading", name, &e))?;
    tp.load().map_err(|e| aya_error("loading", name, &e))?;
    Ok(tp)
}

fn attach(
    tp: &mut TracePoint,
    program: &str,
    category: &str,
    name: &str,
) -> Result<TracePointLink, TraceError> {
    let id = tp.attach(category, name).map_err(|e| {
        let err = aya_error("attaching", program, &e);
        match err {
            TraceError::Load { detail, .. } => TraceError::Attach {
                program: program.into(),
                hook: format!("{category}/{name}"),
                detail,
            },
            other => other,
        }
    })?;
    tp.take_link(id)
        .map_err(|e| aya_error("attaching", program, &e))
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
fn detach_all(links: Vec<TracePointLink>) {
    const THREADS: usize = 16;
    if links.is_empty() {
        return;
    }
    let per = links.len().div_ceil(THREADS);
    let mut links = links;
    std::thread::scope(|s| {
        while !links.is_empty() {
            let chunk: Vec<TracePointLink> = links.drain(..per.min(links.len())).collect();
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
        let config = kernel_config(&btf, cgroup)?;
        tracing::debug!(?config, "kernel layout");

        let mut ebpf = EbpfLoader::new()
            .override_global("CONFIG", &config, true)
            .map_max_entries("EVENTS", ring)
            .load(EBPF_OBJECT)
            .map_err(|e| aya_error("loading", "eBPF object", &e))?;

        // Which tracepoints exist here, and what their records hold.
        let mut hooks: Vec<(String, &'static str)> = Vec::new();
        {
            let regs = arg_registers(&btf)?;
            let mut cfg_map: BpfArray<_, SysCfg> =
                BpfArray::try_from(ebpf.map_mut("SYS_CFG").expect("SYS_CFG is in the object"))
                    .map_err(|e| aya_error("opening map", "SYS_CFG", &e))?;
            for s in SYSCALLS {
                let Some(pair) = syscall_cfgs(s, &regs)? else {
                    tracing::debug!("syscall {} has no tracepoints here; skipped", s.name);
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
                for (fmt, cfg) in pair {
                    cfg_map
                        .set(sys_cfg_key(cfg.role, nr), cfg, 0)
                        .map_err(|e| aya_error("filling map", "SYS_CFG", &e))?;
                    let tp_name = fmt
                        .path
                        .parent()
                        .and_then(|p| p.file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let prog = if cfg.role == ROLE_ENTER {
                        "sys_enter"
                    } else {
                        "sys_exit"
                    };
                    hooks.push((tp_name, prog));
                }
            }
        }
        let lost = PerCpuArray::try_from(ebpf.take_map("LOST").expect("LOST is in the object"))
            .map_err(|e| aya_error("opening map", "LOST", &e))?;
        let events = RingBuf::try_from(ebpf.take_map("EVENTS").expect("EVENTS is in the object"))
            .map_err(|e| aya_error("opening map", "EVENTS", &e))?;

        // The reader runs before the first attach so that nothing queues up unread.
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("minify-trace-reader".into())
                .spawn(move || read_loop(events, &stop, options.from_first_exec))?
        };
        let mut tracer = Tracer {
            links: Vec::new(),
            ebpf: None,
            lost,
            stop,
            reader: Some(reader),
            attached: Vec::new(),
            started: t0,
            cgroup_events: cgroup.path().join("cgroup.events"),
        };

        // Scheduler events first so the process tree is complete, then exits before entries:
        // an exit attached after its entry could leave the first exec/chdir unpaired.
        for (prog, name) in [
            ("sched_fork", "sched_process_fork"),
            ("sched_exit", "sched_process_exit"),
            ("sched_exec", "sched_process_exec"),
        ] {
            let tp = tracepoint(&mut ebpf, prog)?;
            tracer.links.push(attach(tp, prog, "sched", name)?);
            tracer.attached.push(format!("sched/{name}"));
        }
        for role in ["sys_exit", "sys_enter"] {
            let tp = tracepoint(&mut ebpf, role)?;
            for (name, prog) in &hooks {
                if *prog == role {
                    tracer.links.push(attach(tp, role, "syscalls", name)?);
                    tracer.attached.push(format!("syscalls/{name}"));
                }
            }
        }
        tracer.ebpf = Some(ebpf);
        tracing::debug!(
            "attached {} tracepoints in {:?}",
            tracer.attached.len(),
            t0.elapsed()
        );
        Ok(tracer)
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
        self.stop.store(true, Ordering::Release);
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
        self.stop.store(true, Ordering::Release);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// How often the reader looks at the ring without being woken: the eBPF side only wakes it
/// once 256 KiB are waiting (a wake-up per record would cost an irq_work per syscall).
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// How many bytes of raw records the reader batches before handing them to the decoder.
const BATCH_BYTES: usize = 1 << 20;

/// Drain the ring buffer until told to stop, then drain what is left.
///
/// This thread only copies records out (length-prefixed, in batches): the kernel side drops
/// events when the ring is full, so emptying it must be as cheap as possible. Decoding runs
/// on its own thread and may lag behind under a burst without losing anything.
fn read_loop(mut ring: RingBuf<MapData>, stop: &AtomicBool, from_first_exec: bool) -> Decoder {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let decoder = std::thread::Builder::new()
        .name("minify-trace-decode".into())
        .spawn(move || {
            let mut decoder = Decoder::new(from_first_exec);
            for batch in rx {
                let mut rest = batch.as_slice();
                while let Some((len, tail)) = rest.split_first_chunk::<4>() {
                    let len = u32::from_le_bytes(*len) as usize;
                    let Some((rec, tail)) = tail.split_at_checked(len) else {
                        break;
                    };
                    decoder.feed(rec);
                    rest = tail;
                }
            }
            decoder
        });
    let fd = ring.as_raw_fd();
    let mut batch: Vec<u8> = Vec::with_capacity(BATCH_BYTES + 64 * 1024);
    loop {
        let stopping = stop.load(Ordering::Acquire);
        while let Some(item) = ring.next() {
            batch.extend_from_slice(&(item.len() as u32).to_le_bytes());
            batch.extend_from_slice(&item);
            if batch.len() >= BATCH_BYTES {
                let full =
                    std::mem::replace(&mut batch, Vec::with_capacity(BATCH_BYTES + 64 * 1024));
                let _ = tx.send(full);
            }
        }
        if stopping {
            break;
        }
        if !batch.is_empty() {
            let _ = tx.send(std::mem::take(&mut batch));
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; the ring buffer fd lives as long as `ring`.
        #[allow(unsafe_code)]
        unsafe {
            libc::poll(&raw mut pfd, 1, POLL_INTERVAL.as_millis() as i32);
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(batch);
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
