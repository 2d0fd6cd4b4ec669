//! The minify tracer's eBPF programs: syscall tracepoints that record the paths a workload
//! looks up, opens, lists, creates and removes, filtered to one cgroup v2 subtree.
//!
//! Rust eBPF has no CO-RE, so nothing about kernel struct layout is compiled in: the loader
//! reads every offset from the running kernel's BTF and tracefs and hands them over in the
//! frozen global [`CONFIG`] and the [`SYS_CFG`] map (see `minify-trace-common` for the wire
//! format). Paths of files are rebuilt here like the kernel's `d_path` does, walking
//! `dentry->d_parent` and `mount->mnt_parent`/`mnt_mountpoint` up to the task's root, inside a
//! `bpf_loop` callback with its state in a per-CPU map: an unrolled or bounded loop of that
//! size exceeds the verifier's 1M-instruction budget, and the stack is too small for the state.
#![no_std]
#![no_main]
#![allow(unsafe_code, static_mut_refs)]

use core::ffi::c_void;
use core::ptr;

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_task, bpf_get_current_task_btf,
            bpf_get_smp_processor_id, bpf_loop, bpf_probe_read_kernel, bpf_probe_read_kernel_str,
            bpf_probe_read_user_str, bpf_ringbuf_output, bpf_task_pt_regs,
        },
    },
    macros::{btf_tracepoint, fentry, kprobe, lsm, map, raw_tracepoint, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::{
        BtfTracePointContext, FEntryContext, LsmContext, ProbeContext, RawTracePointContext,
        TracePointContext,
    },
};
use minify_trace_common::{
    EV_ENTER, EV_EXEC, EV_EXIT, EV_FORK, EV_PROC_EXIT, EV_SYSCALL, EXIT_FLAG_CREATED, EventHeader,
    FLAG_TRUNCATED, KernelConfig, NAME_MAX, PAYLOAD_CAP, ROLE_ENTER, ROLE_EXIT, SYS_NR_SLOTS,
    SysCfg, TAG_ARGV0, TAG_COMPONENT, TAG_DIR_DEF, TAG_DIR_REF, TAG_END_ERROR, TAG_END_ROOT,
    TAG_END_TRUNCATED, TAG_END_UNREACHABLE, TAG_USER_PATH, TAG_USER_PATH2, TAG_WALK_BASE,
    TAG_WALK_BASE2, TAG_WALK_EXE, TAG_WALK_FD, USER_PATH_MAX, WALK_MAX_STEPS, op, sys_cfg_key,
};

/// Kernel layout and the cgroup to trace. Overridden (and frozen) by the loader.
#[unsafe(no_mangle)]
static CONFIG: KernelConfig = KernelConfig {
    cgroup_id: 0,
    cgroup_level: 0,
    fmode_created: 0,
    task_fs: 0,
    task_files: 0,
    task_mm: 0,
    task_exit_code: 0,
    fs_root: 0,
    fs_pwd: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_f_path: 0,
    file_f_mode: 0,
    path_mnt: 0,
    path_dentry: 0,
    dentry_d_parent: 0,
    dentry_d_name_name: 0,
    vfsmount_mnt_root: 0,
    mount_mnt: 0,
    mount_mnt_parent: 0,
    mount_mnt_mountpoint: 0,
    mm_exe_file: 0,
    mm_arg_start: 0,
    fork_child_pid_off: 0,
    exec_old_pid_off: 0,
    syscall_nr_off: 0,
};

/// Events to userspace. The loader sets the size (`TraceOptions::ring_bytes`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// `sys_cfg_key(role, syscall nr)` -> what the syscall's tracepoint record (or, for syscalls
/// sent whole at their exit, its saved user registers) holds. All zeros (`role` 0): not traced.
#[map]
static SYS_CFG: Array<SysCfg> = Array::with_max_entries(2 * SYS_NR_SLOTS, 0);

/// Events that did not fit in the ring buffer, per `op` slot.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(op::OP_SLOTS, 0);

const MASK: usize = PAYLOAD_CAP - 1;

/// The event being built: header plus payload, with `PAYLOAD_CAP` of slack so that a
/// bounded write at any masked offset below `PAYLOAD_CAP` stays inside the value.
#[repr(C)]
struct Scratch {
    header: EventHeader,
    payload: [u8; 2 * PAYLOAD_CAP],
    /// Directories walked for this event, to remember once the event is delivered (never
    /// before: a reference to a definition userspace did not get would be unresolvable).
    pending: [DirKey; MAX_PENDING],
    pending_id: [u64; MAX_PENDING],
    n_pending: u64,
}

const MAX_PENDING: usize = 3;

/// A directory as a walk sees it: the same dentry on the same mount, under the same root,
/// since the last rename/delete by the workload (`generation`). Pointers alone could be
/// reused by another directory after the first is freed; renames change paths.
#[repr(C)]
#[derive(Clone, Copy)]
struct DirKey {
    dentry: u64,
    mnt: u64,
    root_dentry: u64,
    generation: u64,
}

/// Directories already sent to userspace -> their id (see `TAG_DIR_DEF`).
#[map]
static DIRS: LruHashMap<DirKey, u64> = LruHashMap::with_max_entries(65536, 0);

/// Bumped by every successful rename or delete in the workload: cached directory paths
/// made before it are not reused.
#[map]
static GENERATION: Array<u64> = Array::with_max_entries(1, 0);

/// Per-CPU counter for directory ids (the CPU number goes in the high bits).
#[map]
static NEXT_ID: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// State of one path walk, shared between the caller and the `bpf_loop` callback.
#[repr(C)]
struct Walk {
    dentry: u64,
    vfsmnt: u64,
    root_dentry: u64,
    root_mnt: u64,
    /// Next free payload offset.
    off: u64,
    /// Set once an end tag was written.
    done: u64,
    /// Loop iterations so far.
    step: u64,
    /// At which iteration to look the current directory up in `DIRS` (u64::MAX: never).
    cache_at: u64,
    /// The end tag written.
    end_tag: u64,
    /// A directory defined by this walk (`TAG_DIR_DEF`), to remember if the event goes out.
    pend: u64,
    pend_key: DirKey,
    pend_id: u64,
}

#[map]
static WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

const AT_FDCWD: i32 = -100;

#[inline(always)]
fn cfg() -> KernelConfig {
    // SAFETY: a frozen global; volatile so the compiler does not fold the zeros above.
    unsafe { ptr::read_volatile(&raw const CONFIG) }
}

#[inline(always)]
fn in_scope(c: &KernelConfig) -> bool {
    // SAFETY: helper call without pointers.
    unsafe { bpf_get_current_ancestor_cgroup_id(c.cgroup_level as i32) == c.cgroup_id }
}

/// Read a `T` at `base + off` in kernel memory; `None` when it faults.
#[inline(always)]
fn kread<T: Copy>(base: u64, off: u32) -> Option<T> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: probe read into our own stack slot of the right size.
    let r = unsafe {
        bpf_probe_read_kernel(
            v.as_mut_ptr().cast(),
            core::mem::size_of::<T>() as u32,
            (base + u64::from(off)) as *const c_void,
        )
    };
    // SAFETY: the helper filled it when it returned 0.
    (r == 0).then(|| unsafe { v.assume_init() })
}

/// Start an event in the scratch buffer.
#[inline(always)]
fn begin(kind: u32, op: u32) -> Option<*mut Scratch> {
    let s = SCRATCH.get_ptr_mut(0)?;
    let id = bpf_get_current_pid_tgid();
    // SAFETY: `s` is this CPU's scratch value; programs do not nest on one CPU for these hooks.
    unsafe {
        (*s).header = EventHeader {
            kind,
            op,
            pid: (id >> 32) as u32,
            tid: id as u32,
            ret: 0,
            flags: 0,
            comm: bpf_get_current_comm().unwrap_or([0; 16]),
            payload_len: 0,
            pad: 0,
        };
        (*s).n_pending = 0;
    }
    Some(s)
}

/// Wake the reader only once this much is waiting: a wake-up per record (the default) costs
/// an irq_work per syscall; the reader also polls every few milliseconds, so nothing waits
/// longer than that.
const WAKEUP_BYTES: u64 = 256 * 1024;
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Send the event; count it as lost under `slot` if the ring buffer is full.
#[inline(always)]
fn emit(s: *mut Scratch, off: usize, slot: u32) {
    let off = if off > PAYLOAD_CAP { PAYLOAD_CAP } else { off };
    let wake = if EVENTS.query(BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    // SAFETY: `s` points to a live map value of `HEADER_LEN + 2 * PAYLOAD_CAP` bytes.
    let r = unsafe {
        (*s).header.payload_len = off as u32;
        bpf_ringbuf_output(
            (&raw const EVENTS).cast_mut().cast(),
            s.cast(),
            (minify_trace_common::HEADER_LEN + off) as u64,
            wake,
        )
    };
    if r != 0 {
        if let Some(c) = LOST.get_ptr_mut(slot) {
            // SAFETY: per-CPU counter, no concurrent writer.
            unsafe { *c += 1 };
        }
        return;
    }
    // Delivered: the directories it defined may now be referred to.
    // SAFETY: this CPU's scratch value.
    unsafe {
        let n = (*s).n_pending as usize;
        for i in 0..MAX_PENDING {
            if i < n {
                let _ = DIRS.insert(&(*s).pending[i], &(*s).pending_id[i], 0);
            }
        }
    }
}

/// Append a one-byte tag; returns the new offset.
#[inline(always)]
fn put_tag(s: *mut Scratch, off: usize, tag: u8) -> usize {
    if off >= PAYLOAD_CAP {
        return off;
    }
    // SAFETY: index masked below PAYLOAD_CAP inside a 2 * PAYLOAD_CAP array.
    unsafe { (*s).payload[off & MASK] = tag };
    off + 1
}

/// Append a tagged NUL-terminated string from user memory.
#[inline(always)]
fn put_user_str(s: *mut Scratch, off: usize, tag: u8, user: u64) -> usize {
    if user == 0 {
        return off;
    }
    if off + 1 + USER_PATH_MAX > PAYLOAD_CAP {
        // SAFETY: header of a live map value.
        unsafe { (*s).header.flags |= FLAG_TRUNCATED };
        return off;
    }
    let start = put_tag(s, off, tag);
    // SAFETY: destination masked below PAYLOAD_CAP, size USER_PATH_MAX <= PAYLOAD_CAP slack.
    let n = unsafe {
        bpf_probe_read_user_str(
            (&raw mut (*s).payload[start & MASK]).cast(),
            USER_PATH_MAX as u32,
            user as *const c_void,
        )
    };
    if n <= 0 {
        // Unreadable pointer: drop the tag again.
        return off;
    }
    start + n as usize
}

/// The `struct file *` behind `fd` in the current task.
#[inline(always)]
fn fd_file(c: &KernelConfig, fd: i64) -> Option<u64> {
    if fd < 0 {
        return None;
    }
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = kread(task, c.task_files)?;
    let fdt: u64 = kread(files, c.files_fdt)?;
    let max: u32 = kread(fdt, c.fdt_max_fds)?;
    if fd as u64 >= u64::from(max) {
        return None;
    }
    let arr: u64 = kread(fdt, c.fdt_fd)?;
    let file: u64 = kread(arr, (fd as u32).wrapping_mul(8))?;
    (file != 0).then_some(file)
}

/// `(vfsmount, dentry)` of a `struct path` at `base + off`.
#[inline(always)]
fn read_path(c: &KernelConfig, base: u64, off: u32) -> Option<(u64, u64)> {
    let mnt: u64 = kread(base, off + c.path_mnt)?;
    let dentry: u64 = kread(base, off + c.path_dentry)?;
    Some((mnt, dentry))
}

/// Append a walk of `(vfsmnt, dentry)` up to the current task's root: start tag, components
/// leaf first, end tag.
#[inline(always)]
fn put_walk(
    c: &KernelConfig,
    s: *mut Scratch,
    off: usize,
    tag: u8,
    target: Option<(u64, u64)>,
    cache_at: u64,
) -> usize {
    if off + 2 > PAYLOAD_CAP {
        // SAFETY: header of a live map value.
        unsafe { (*s).header.flags |= FLAG_TRUNCATED };
        return off;
    }
    let off = put_tag(s, off, tag);
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let root = kread::<u64>(task, c.task_fs).and_then(|fs| read_path(c, fs, c.fs_root));
    let (Some((mnt, dentry)), Some((root_mnt, root_dentry))) = (target, root) else {
        return put_tag(s, off, TAG_END_ERROR);
    };
    // The common case of a relative lookup, its directory already sent: answer it here,
    // without setting up a loop.
    if cache_at == 0 {
        if dentry == root_dentry && mnt == root_mnt {
            return put_tag(s, off, TAG_END_ROOT);
        }
        let key = DirKey {
            dentry,
            mnt,
            root_dentry,
            generation: generation(),
        };
        // SAFETY: a copy of the value is taken at once.
        if let Some(id) = unsafe { DIRS.get(&key) }.copied() {
            // SAFETY: this CPU's scratch value.
            return unsafe { put_tag_id(s, off, TAG_DIR_REF, id) };
        }
    }
    let Some(w) = WALK.get_ptr_mut(0) else {
        return put_tag(s, off, TAG_END_ERROR);
    };
    // SAFETY: this CPU's walk state.
    unsafe {
        *w = Walk {
            dentry,
            vfsmnt: mnt,
            root_dentry,
            root_mnt,
            off: off as u64,
            done: 0,
            step: 0,
            cache_at,
            end_tag: 0,
            pend: 0,
            pend_key: DirKey {
                dentry: 0,
                mnt: 0,
                root_dentry: 0,
                generation: 0,
            },
            pend_id: 0,
        };
        bpf_loop(WALK_MAX_STEPS, walk_step as *mut c_void, ptr::null_mut(), 0);
        let off = (*w).off as usize;
        if (*w).done == 0 {
            return put_tag(s, off, TAG_END_TRUNCATED);
        }
        // Only a walk that got to an answer defines its directory.
        let answered = (*w).end_tag == u64::from(TAG_END_ROOT)
            || (*w).end_tag == u64::from(TAG_END_UNREACHABLE);
        if (*w).pend != 0 && answered {
            let n = (*s).n_pending as usize;
            if n < MAX_PENDING {
                (*s).pending[n] = (*w).pend_key;
                (*s).pending_id[n] = (*w).pend_id;
                (*s).n_pending = n as u64 + 1;
            }
        }
        off
    }
}

/// Write the walk's end tag and stop the loop.
#[inline(always)]
unsafe fn walk_end(w: *mut Walk, s: *mut Scratch, off: usize, tag: u8) -> i64 {
    // SAFETY: the caller passes this CPU's map values.
    unsafe {
        (*w).off = put_tag(s, off, tag) as u64;
        (*w).done = 1;
        (*w).end_tag = u64::from(tag);
    }
    1
}

/// Append a tag followed by an 8-byte id.
#[inline(always)]
unsafe fn put_tag_id(s: *mut Scratch, off: usize, tag: u8, id: u64) -> usize {
    let off = put_tag(s, off, tag);
    // SAFETY: masked offset below PAYLOAD_CAP, 8 bytes of the 2 * PAYLOAD_CAP array.
    unsafe {
        ptr::write_unaligned(
            (&raw mut (*s).payload[off & MASK]).cast::<[u8; 8]>(),
            id.to_le_bytes(),
        );
    }
    off + 8
}

#[inline(always)]
fn generation() -> u64 {
    GENERATION.get(0).copied().unwrap_or(0)
}

/// One step of the path walk (a `bpf_loop` callback): returns 1 to stop.
extern "C" fn walk_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let c = cfg();
    let (Some(w), Some(s)) = (WALK.get_ptr_mut(0), SCRATCH.get_ptr_mut(0)) else {
        return 1;
    };
    // SAFETY: both are this CPU's map values; offsets into `payload` are masked.
    unsafe {
        let off = (*w).off as usize;
        if off + 2 + NAME_MAX > PAYLOAD_CAP {
            (*s).header.flags |= FLAG_TRUNCATED;
            return walk_end(w, s, off, TAG_END_TRUNCATED);
        }
        let dentry = (*w).dentry;
        let vfsmnt = (*w).vfsmnt;
        if dentry == (*w).root_dentry && vfsmnt == (*w).root_mnt {
            return walk_end(w, s, off, TAG_END_ROOT);
        }
        let step = (*w).step;
        (*w).step = step + 1;
        if step == (*w).cache_at {
            let key = DirKey {
                dentry,
                mnt: vfsmnt,
                root_dentry: (*w).root_dentry,
                generation: generation(),
            };
            if let Some(id) = DIRS.get(&key) {
                let id = *id;
                (*w).off = put_tag_id(s, off, TAG_DIR_REF, id) as u64;
                (*w).done = 1;
                (*w).end_tag = u64::from(TAG_DIR_REF);
                return 1;
            }
            let Some(counter) = NEXT_ID.get_ptr_mut(0) else {
                return walk_end(w, s, off, TAG_END_ERROR);
            };
            let id = (u64::from(bpf_get_smp_processor_id()) << 48) | *counter;
            *counter += 1;
            (*w).pend = 1;
            (*w).pend_key = key;
            (*w).pend_id = id;
            (*w).off = put_tag_id(s, off, TAG_DIR_DEF, id) as u64;
            // Go on with this same directory in the next iteration (the check is done).
            return 0;
        }
        let Some(mnt_root) = kread::<u64>(vfsmnt, c.vfsmount_mnt_root) else {
            return walk_end(w, s, off, TAG_END_ERROR);
        };
        if dentry == mnt_root {
            // At the root of a mount: continue from where it is mounted.
            let mount = vfsmnt - u64::from(c.mount_mnt);
            let Some(parent) = kread::<u64>(mount, c.mount_mnt_parent) else {
                return walk_end(w, s, off, TAG_END_ERROR);
            };
            if parent == mount {
                // The namespace's root mount and not the task's root: outside the root
                // (a chroot escapee or an internal mount such as pipefs).
                return walk_end(w, s, off, TAG_END_UNREACHABLE);
            }
            let Some(mp) = kread::<u64>(mount, c.mount_mnt_mountpoint) else {
                return walk_end(w, s, off, TAG_END_ERROR);
            };
            (*w).dentry = mp;
            (*w).vfsmnt = parent + u64::from(c.mount_mnt);
            return 0;
        }
        let Some(parent) = kread::<u64>(dentry, c.dentry_d_parent) else {
            return walk_end(w, s, off, TAG_END_ERROR);
        };
        if parent == dentry {
            return walk_end(w, s, off, TAG_END_UNREACHABLE);
        }
        let Some(name) = kread::<u64>(dentry, c.dentry_d_name_name) else {
            return walk_end(w, s, off, TAG_END_ERROR);
        };
        (*s).payload[off & MASK] = TAG_COMPONENT;
        let start = off + 1;
        let n = bpf_probe_read_kernel_str(
            (&raw mut (*s).payload[start & MASK]).cast(),
            NAME_MAX as u32,
            name as *const c_void,
        );
        if n <= 0 {
            return walk_end(w, s, off, TAG_END_ERROR);
        }
        (*w).off = (start + n as usize) as u64;
        (*w).dentry = parent;
        0
    }
}

/// Read a field of the tracepoint record.
#[inline(always)]
fn rec<T>(ctx: &TracePointContext, off: u32) -> Option<T> {
    // SAFETY: bounded probe read of the record.
    unsafe { ctx.read_at::<T>(off as usize).ok() }
}

/// Whether the first byte of the user string at `payload[start]` is not `/`.
#[inline(always)]
fn is_relative(s: *mut Scratch, start: usize) -> bool {
    // SAFETY: masked index into a live map value.
    unsafe { (*s).payload[start & MASK] != b'/' }
}

/// The directory a relative path is resolved against: `dfd`'s file or the cwd.
#[inline(always)]
fn base_dir(c: &KernelConfig, dfd: i32) -> Option<(u64, u64)> {
    if dfd == AT_FDCWD {
        // SAFETY: helper without arguments.
        let task = unsafe { bpf_get_current_task() };
        let fs: u64 = kread(task, c.task_fs)?;
        read_path(c, fs, c.fs_pwd)
    } else {
        let file = fd_file(c, i64::from(dfd))?;
        read_path(c, file, c.file_f_path)
    }
}

/// A syscall's arguments, kept from its entry to its exit (see `sys_enter`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Args {
    op: u32,
    pad: u32,
    path: u64,
    dfd: i64,
    path2: u64,
    dfd2: i64,
    fd: i64,
}

/// Append a requested path and, when it is relative, its base directory's walk.
#[inline(always)]
fn put_path_arg(
    c: &KernelConfig,
    s: *mut Scratch,
    off: usize,
    (tag, walk_tag): (u8, u8),
    user: u64,
    dfd: i64,
) -> usize {
    let new = put_user_str(s, off, tag, user);
    if new == off || !is_relative(s, off + 1) {
        return new;
    }
    put_walk(c, s, new, walk_tag, base_dir(c, dfd as i32), 0)
}

/// Read the arguments `sc` describes from a syscall entry record.
#[inline(always)]
fn read_args(ctx: &TracePointContext, sc: &SysCfg) -> Args {
    let at = |off: u32| -> i64 {
        if off == 0 {
            i64::from(AT_FDCWD)
        } else {
            rec::<i64>(ctx, off).unwrap_or(i64::from(AT_FDCWD))
        }
    };
    let ptr = |off: u32| -> u64 {
        if off == 0 {
            0
        } else {
            rec::<u64>(ctx, off).unwrap_or(0)
        }
    };
    Args {
        op: sc.op,
        pad: 0,
        path: ptr(sc.path_off),
        dfd: at(sc.dfd_off),
        path2: ptr(sc.path2_off),
        dfd2: at(sc.dfd2_off),
        fd: if sc.fd_off == 0 {
            -1
        } else {
            rec::<i64>(ctx, sc.fd_off).unwrap_or(-1)
        },
    }
}

/// Read the arguments `sc` describes from the current task's saved user registers, at the
/// syscall's exit (`sc` holds `pt_regs` offsets). On the architectures we support a syscall
/// leaves its argument registers as the caller set them (arm64 keeps the first in
/// `orig_x0`, which is what the loader points at).
#[inline(always)]
fn read_args_regs(sc: &SysCfg) -> Args {
    // SAFETY: helpers that take no pointer from us (the task pointer is the kernel's own).
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    // An `int` argument is the low half of its register.
    let int = |off: u32, none: i64| -> i64 {
        if off == 0 || regs == 0 {
            none
        } else {
            kread::<u64>(regs, off).map_or(none, |v| i64::from(v as i32))
        }
    };
    let ptr = |off: u32| -> u64 {
        if off == 0 || regs == 0 {
            0
        } else {
            kread::<u64>(regs, off).unwrap_or(0)
        }
    };
    Args {
        op: sc.op,
        pad: 0,
        path: ptr(sc.path_off),
        dfd: int(sc.dfd_off, i64::from(AT_FDCWD)),
        path2: ptr(sc.path2_off),
        dfd2: int(sc.dfd2_off, i64::from(AT_FDCWD)),
        fd: int(sc.fd_off, -1),
    }
}

/// Append the requested paths (and the fd's path) of `a`.
#[inline(always)]
fn put_args(c: &KernelConfig, s: *mut Scratch, a: &Args) -> usize {
    let mut off = 0;
    if a.path != 0 {
        off = put_path_arg(c, s, off, (TAG_USER_PATH, TAG_WALK_BASE), a.path, a.dfd);
    }
    if a.path2 != 0 {
        off = put_path_arg(c, s, off, (TAG_USER_PATH2, TAG_WALK_BASE2), a.path2, a.dfd2);
    }
    if a.fd >= 0 {
        let target = fd_file(c, a.fd).and_then(|f| read_path(c, f, c.file_f_path));
        off = put_walk(c, s, off, TAG_WALK_FD, target, 0);
    }
    off
}

/// Entry of `execve`, `execveat` and `chdir`, the only syscalls with an entry program: after
/// a successful exec the old memory is gone, and after chdir a relative path would resolve
/// against the new cwd, so their paths are sent now. Every other traced syscall is sent
/// whole at its exit, its arguments read back from the saved user registers: no entry
/// tracepoint, no per-thread stash.
#[tracepoint]
pub fn sys_enter(ctx: TracePointContext) -> u32 {
    let c = cfg();
    if in_scope(&c) {
        let _ = try_enter(&c, &ctx);
    }
    0
}

#[inline(always)]
fn try_enter(c: &KernelConfig, ctx: &TracePointContext) -> Option<()> {
    let nr = rec::<i32>(ctx, c.syscall_nr_off)?;
    // SAFETY: read-only lookup; the loader never changes entries while attached.
    if nr < 0 || nr as u32 >= SYS_NR_SLOTS {
        return None;
    }
    let sc = *SYS_CFG.get(sys_cfg_key(ROLE_ENTER, nr as u32))?;
    if sc.role != ROLE_ENTER {
        return None;
    }
    let args = read_args(ctx, &sc);
    let s = begin(EV_ENTER, sc.op)?;
    let off = put_args(c, s, &args);
    emit(s, off, sc.op);
    Some(())
}

/// Exit of every traced syscall: the result; for opens also the opened file's real path
/// (after symlinks) and whether this open created it.
#[tracepoint]
pub fn sys_exit(ctx: TracePointContext) -> u32 {
    let c = cfg();
    if in_scope(&c) {
        let _ = try_exit(&c, &ctx);
    }
    0
}

#[inline(always)]
fn try_exit(c: &KernelConfig, ctx: &TracePointContext) -> Option<()> {
    let nr = rec::<i32>(ctx, c.syscall_nr_off)?;
    if nr < 0 || nr as u32 >= SYS_NR_SLOTS {
        return None;
    }
    let sc = *SYS_CFG.get(sys_cfg_key(ROLE_EXIT, nr as u32))?;
    if sc.role != ROLE_EXIT {
        return None;
    }
    let ret = rec::<i64>(ctx, sc.ret_off)?;
    let stashed = sc.has_args().then(|| read_args_regs(&sc));
    if ret == 0 && (sc.op == op::RENAME || sc.op == op::DELETE) {
        // Paths of cached directories may have changed (or their dentries may be freed).
        if let Some(g) = GENERATION.get_ptr_mut(0) {
            // SAFETY: a map value; a lost increment between CPUs still changes it.
            unsafe { *g += 1 };
        }
    }
    let s = begin(
        if stashed.is_some() {
            EV_SYSCALL
        } else {
            EV_EXIT
        },
        sc.op,
    )?;
    // SAFETY: header of a live map value.
    unsafe { (*s).header.ret = ret };
    let mut off = match &stashed {
        Some(a) => put_args(c, s, a),
        None => 0,
    };
    if sc.op == op::OPEN && ret >= 0 {
        let file = fd_file(c, ret);
        if let Some(f) = file {
            if let Some(mode) = kread::<u32>(f, c.file_f_mode) {
                if mode & c.fmode_created != 0 {
                    // SAFETY: as above.
                    unsafe { (*s).header.flags |= EXIT_FLAG_CREATED };
                }
            }
        }
        off = put_walk(
            c,
            s,
            off,
            TAG_WALK_FD,
            file.and_then(|f| read_path(c, f, c.file_f_path)),
            1,
        );
    }
    emit(s, off, sc.op);
    Some(())
}

/// A successful exec: the binary really run (`mm->exe_file`, after symlinks) and argv\[0\].
#[tracepoint]
pub fn sched_exec(ctx: TracePointContext) -> u32 {
    let c = cfg();
    if in_scope(&c) {
        let _ = try_exec(&c, &ctx);
    }
    0
}

#[inline(always)]
fn try_exec(c: &KernelConfig, ctx: &TracePointContext) -> Option<()> {
    let s = begin(EV_EXEC, 0)?;
    let old_pid = rec::<i32>(ctx, c.exec_old_pid_off).unwrap_or(0);
    // SAFETY: header of a live map value; helper without arguments.
    let task = unsafe {
        (*s).header.ret = i64::from(old_pid);
        bpf_get_current_task()
    };
    let mm: Option<u64> = kread(task, c.task_mm);
    let exe = mm
        .and_then(|mm| kread::<u64>(mm, c.mm_exe_file))
        .and_then(|f| read_path(c, f, c.file_f_path));
    let mut off = put_walk(c, s, 0, TAG_WALK_EXE, exe, 1);
    if let Some(arg_start) = mm.and_then(|mm| kread::<u64>(mm, c.mm_arg_start)) {
        off = put_user_str(s, off, TAG_ARGV0, arg_start);
    }
    emit(s, off, op::SCHED);
    Some(())
}

/// A fork (or thread creation) by a traced task: `ret` is the child's pid.
#[tracepoint]
pub fn sched_fork(ctx: TracePointContext) -> u32 {
    let c = cfg();
    if in_scope(&c) {
        if let Some(s) = begin(EV_FORK, 0) {
            let child = rec::<i32>(&ctx, c.fork_child_pid_off).unwrap_or(0);
            // SAFETY: header of a live map value.
            unsafe { (*s).header.ret = i64::from(child) };
            emit(s, 0, op::SCHED);
        }
    }
    0
}

/// A traced task exits: `ret` is its exit code (wait status).
#[tracepoint]
pub fn sched_exit(_ctx: TracePointContext) -> u32 {
    let c = cfg();
    if in_scope(&c) {
        if let Some(s) = begin(EV_PROC_EXIT, 0) {
            // SAFETY: helper without arguments; header of a live map value.
            unsafe {
                let task = bpf_get_current_task();
                (*s).header.ret = i64::from(kread::<i32>(task, c.task_exit_code).unwrap_or(0));
            }
            emit(s, 0, op::SCHED);
        }
    }
    0
}

// ---- Capability probes for `minify doctor`: the smallest program of each attach type. ----
// They are never attached by the tracer; the doctor loads each and reports what the kernel
// says. `probe_fentry`/`probe_lsm` are where a bpf_d_path backend would start.

#[tracepoint]
pub fn probe_tracepoint(_ctx: TracePointContext) -> u32 {
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn probe_raw_tracepoint(_ctx: RawTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn probe_tp_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[fentry(function = "do_sys_openat2")]
pub fn probe_fentry(_ctx: FEntryContext) -> u32 {
    0
}

#[lsm(hook = "file_open")]
pub fn probe_lsm(_ctx: LsmContext) -> i32 {
    0
}

#[kprobe]
pub fn probe_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
