//! The tracer's programs: the exit of every syscall (`sys_exit`) and the scheduler's exec,
//! fork and exit, each checking the cgroup first and then sending one event.

use aya_ebpf::{
    EbpfContext as _,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use minify_trace_common::{
    EV_EXEC, EV_FORK, EV_PROC_EXIT, EV_SYSCALL, EXIT_FLAG_CREATED, SYS_NR_SLOTS, SysCfg, TAG_ARGV0,
    TAG_USER_PATH, TAG_USER_PATH2, TAG_WALK_BASE, TAG_WALK_BASE2, TAG_WALK_EXE, TAG_WALK_FD, op,
};

use crate::batch::{Ev, begin, emit, is_relative, put_comm, put_str, put_user_str};
use crate::maps::{GENERATION, SYS_CFG, cf};
use crate::task::{
    AT_FDCWD, base_dir, bload, bload_path, fd_file, file_mode, file_path, in_scope, task_btf,
};
use crate::walk::put_walk;

/// A syscall's arguments as `SysCfg` selects them.
#[derive(Clone, Copy)]
struct Args {
    path: u64,
    dfd: i64,
    path2: u64,
    dfd2: i64,
    fd: i64,
}

/// Append a requested path and, when it is relative, its base directory's walk.
#[inline(always)]
fn put_path_arg(
    task: u64,
    e: Ev,
    off: usize,
    (tag, walk_tag): (u8, u8),
    user: u64,
    dfd: i64,
) -> usize {
    let new = put_user_str(e, off, tag, user);
    if new == off || !is_relative(e, off + 1) {
        return new;
    }
    put_walk(task, e, new, walk_tag, base_dir(task, dfd as i32), 0)
}

/// Syscall argument `n` (1-based; 0 or out of range: `None`) from the saved user registers
/// `regs` (a BTF `struct pt_regs *`). Each arm loads at a constant offset, which direct loads
/// need. On the architectures we support a syscall leaves its argument registers as the
/// caller set them (arm64 keeps the first in `orig_x0`, which is what the loader points at).
#[inline(always)]
fn reg_arg(regs: u64, n: u32) -> Option<u64> {
    Some(match n {
        1 => bload(regs, cf!(regs_arg)[0]),
        2 => bload(regs, cf!(regs_arg)[1]),
        3 => bload(regs, cf!(regs_arg)[2]),
        4 => bload(regs, cf!(regs_arg)[3]),
        5 => bload(regs, cf!(regs_arg)[4]),
        6 => bload(regs, cf!(regs_arg)[5]),
        _ => return None,
    })
}

/// Read the arguments `sc` selects. An `int` argument is the low half of its register.
#[inline(always)]
fn read_args(regs: u64, sc: &SysCfg) -> Args {
    let int = |n: u32, none: i64| reg_arg(regs, n).map_or(none, |v| i64::from(v as i32));
    Args {
        path: reg_arg(regs, sc.path_arg).unwrap_or(0),
        dfd: int(sc.dfd_arg, i64::from(AT_FDCWD)),
        path2: reg_arg(regs, sc.path2_arg).unwrap_or(0),
        dfd2: int(sc.dfd2_arg, i64::from(AT_FDCWD)),
        fd: int(sc.fd_arg, -1),
    }
}

/// Append the requested paths (and the fd's path) of `a`.
#[inline(always)]
fn put_args(task: u64, e: Ev, a: &Args) -> usize {
    let mut off = 0;
    if a.path != 0 {
        off = put_path_arg(task, e, off, (TAG_USER_PATH, TAG_WALK_BASE), a.path, a.dfd);
    }
    if a.path2 != 0 {
        off = put_path_arg(
            task,
            e,
            off,
            (TAG_USER_PATH2, TAG_WALK_BASE2),
            a.path2,
            a.dfd2,
        );
    }
    if a.fd >= 0 {
        let target = file_path(fd_file(task, a.fd));
        off = put_walk(task, e, off, TAG_WALK_FD, target, 0);
    }
    off
}

/// Whether the current syscall is a 32-bit compat one: its number means another syscall
/// (syscall tracepoints skip these too).
#[inline(always)]
fn is_compat(task: u64) -> bool {
    cf!(compat_off) != 0 && bload::<u32>(task, cf!(compat_off)) & cf!(compat_mask) != 0
}

/// The `SysCfg` of syscall `nr`, if it is traced.
#[inline(always)]
fn sys_cfg(nr: i64) -> Option<SysCfg> {
    if nr < 0 || nr >= i64::from(SYS_NR_SLOTS) {
        return None;
    }
    let sc = *SYS_CFG.get(nr as u32)?;
    (sc.op != 0).then_some(sc)
}

/// The `n`th argument of a BTF tracepoint (a direct context load).
#[inline(always)]
fn tp_arg(ctx: &BtfTracePointContext, n: usize) -> u64 {
    // SAFETY: the context is an array of the tracepoint's u64 arguments; `n` is a constant.
    unsafe { *ctx.as_ptr().cast::<u64>().add(n) }
}

/// Exit of every syscall (the raw `sys_exit` tracepoint: `regs`, result). A traced syscall
/// is sent whole: its result, its requested paths (read back from the saved user registers,
/// which still hold the arguments, and from user memory, which is still there), and for
/// opens the opened file's real path (after symlinks) and whether this open created it.
///
/// There is no program on `sys_enter`: it would run on every syscall of every process, and
/// nothing needs it. The two syscalls whose paths cannot be read at exit are handled
/// otherwise: a successful exec has replaced the memory its path was in, so
/// `sched_exec` sends the path as the kernel kept it (`bprm->filename`); a successful chdir
/// has moved the cwd a relative path was resolved against, so the new cwd is sent as a walk.
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    let task = task_btf();
    if in_scope(task) {
        let _ = try_exit(&ctx, task);
    }
    0
}

#[inline(always)]
fn try_exit(ctx: &BtfTracePointContext, task: u64) -> Option<()> {
    let regs = tp_arg(ctx, 0);
    let ret = tp_arg(ctx, 1) as i64;
    let nr = bload::<u32>(regs, cf!(regs_nr)) as i32;
    let sc = sys_cfg(i64::from(nr))?;
    if is_compat(task) || (sc.op == op::EXEC && ret == 0) {
        return None;
    }
    let args = read_args(regs, &sc);
    if ret == 0 && (sc.op == op::RENAME || sc.op == op::DELETE) {
        // Paths of cached directories may have changed (or their dentries may be freed).
        if let Some(g) = GENERATION.get_ptr_mut(0) {
            // SAFETY: a map value; a lost increment between CPUs still changes it.
            unsafe { *g += 1 };
        }
    }
    let e = begin(task, EV_SYSCALL, sc.op)?;
    e.set_ret(ret);
    if sc.op == op::CHDIR && ret == 0 {
        // The requested path as given, and where it led (the new cwd, after symlinks).
        let off = put_user_str(e, 0, TAG_USER_PATH, args.path);
        let fs: u64 = bload(task, cf!(task_fs));
        let off = put_walk(task, e, off, TAG_WALK_FD, bload_path(fs, cf!(fs_pwd)), 1);
        emit(e, off, sc.op, false);
        return Some(());
    }
    let mut off = put_args(task, e, &args);
    if sc.op == op::OPEN && ret >= 0 {
        let file = fd_file(task, ret);
        if file != 0 && file_mode(file) & cf!(fmode_created) != 0 {
            // SAFETY: the header of this CPU's event.
            unsafe { (*e.hdr()).flags |= EXIT_FLAG_CREATED };
        }
        off = put_walk(task, e, off, TAG_WALK_FD, file_path(file), 1);
    }
    emit(e, off, sc.op, false);
    Some(())
}

/// Read a field of a (scheduler) tracepoint record.
#[inline(always)]
pub(crate) fn rec<T>(ctx: &TracePointContext, off: u32) -> Option<T> {
    // SAFETY: bounded probe read of the record.
    unsafe { ctx.read_at::<T>(off as usize).ok() }
}

/// A successful exec (`sched_process_exec(task, old_pid, bprm)`): the binary really run
/// (`mm->exe_file`, after symlinks), the path as the caller asked for it (`bprm->filename`,
/// with the cwd's walk when it is relative: exec does not change the cwd) and argv\[0\].
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_exec(ctx: BtfTracePointContext) -> i32 {
    let task = task_btf();
    if in_scope(task) {
        let _ = try_exec(&ctx, task);
    }
    0
}

#[inline(always)]
fn try_exec(ctx: &BtfTracePointContext, task: u64) -> Option<()> {
    let e = begin(task, EV_EXEC, 0)?;
    let old_pid = tp_arg(ctx, 1) as i32;
    let bprm = tp_arg(ctx, 2);
    e.set_ret(i64::from(old_pid));
    let mm: u64 = bload(task, cf!(task_mm));
    let exe_file: u64 = bload(mm, cf!(mm_exe_file));
    let exe = bload_path(exe_file, cf!(file_f_path));
    let mut off = put_comm(e, 0);
    off = put_walk(task, e, off, TAG_WALK_EXE, exe, 1);
    let arg_start: u64 = bload(mm, cf!(mm_arg_start));
    off = put_user_str(e, off, TAG_ARGV0, arg_start);
    let filename: u64 = bload(bprm, cf!(bprm_filename));
    let new = put_str(e, off, TAG_USER_PATH, filename, true);
    if new != off && is_relative(e, off + 1) {
        off = put_walk(task, e, new, TAG_WALK_BASE, base_dir(task, AT_FDCWD), 0);
    } else {
        off = new;
    }
    emit(e, off, op::SCHED, true);
    Some(())
}

/// A fork (or thread creation) by a traced task: `ret` is the child's pid.
#[tracepoint]
pub fn sched_fork(ctx: TracePointContext) -> u32 {
    let task = task_btf();
    if in_scope(task) {
        if let Some(e) = begin(task, EV_FORK, 0) {
            let child = rec::<i32>(&ctx, cf!(fork_child_pid_off)).unwrap_or(0);
            e.set_ret(i64::from(child));
            emit(e, put_comm(e, 0), op::SCHED, true);
        }
    }
    0
}

/// A traced task exits: `ret` is its exit code (wait status).
#[tracepoint]
pub fn sched_exit(_ctx: TracePointContext) -> u32 {
    let task = task_btf();
    if in_scope(task) {
        if let Some(e) = begin(task, EV_PROC_EXIT, 0) {
            let code: i32 = bload(task, cf!(task_exit_code));
            e.set_ret(i64::from(code));
            emit(e, put_comm(e, 0), op::SCHED, true);
        }
    }
    0
}
