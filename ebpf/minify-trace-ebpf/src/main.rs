//! The minify tracer's eBPF programs: a BTF tracepoint on `sys_exit` (every syscall) and the
//! scheduler's exec/fork/exit, recording the paths a workload looks up, opens, lists, creates
//! and removes, filtered to one cgroup v2 subtree.
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
    EbpfContext as _,
    helpers::{
        bpf_get_current_comm,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_task_btf, bpf_get_smp_processor_id,
            bpf_loop, bpf_probe_read_kernel, bpf_probe_read_kernel_str, bpf_probe_read_user_str,
            bpf_ringbuf_output,
        },
    },
    macros::{btf_tracepoint, fentry, kprobe, lsm, map, raw_tracepoint, tracepoint},
    maps::{Array, PerCpuArray, RingBuf},
    programs::{
        BtfTracePointContext, FEntryContext, LsmContext, ProbeContext, RawTracePointContext,
        TracePointContext,
    },
};
use minify_trace_common::{
    BATCH_BUF, BATCH_LIMIT, Batch, COMM_LEN, EV_EXEC, EV_FORK, EV_PROC_EXIT, EV_SYSCALL,
    EXIT_FLAG_CREATED,
    EventHeader, FLAG_TRUNCATED, FRAME_HEADER, HEADER_LEN, KFUNC_RDONLY_CAST, KernelConfig,
    NAME_MAX, PAYLOAD_CAP, SYS_NR_SLOTS, SysCfg, TAG_ARGV0, TAG_COMPONENT, TAG_DIR_DEF,
    TAG_COMM, TAG_DIR_REF, TAG_END_ERROR, TAG_END_ROOT, TAG_END_TRUNCATED, TAG_END_UNREACHABLE,
    TAG_USER_PATH, TAG_USER_PATH2, TAG_WALK_BASE, TAG_WALK_BASE2, TAG_WALK_EXE, TAG_WALK_FD,
    USER_PATH_MAX, WALK_MAX_STEPS, frame_len, op,
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
    bprm_filename: 0,
    task_pid: 0,
    task_tgid: 0,
    regs_nr: 0,
    regs_arg: [0; 6],
    compat_off: 0,
    compat_mask: 0,
    wakeup_mask: 0,
    no_batching: 0,
    task_self_exec_id: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    rdonly_cast: 0,
    fd_slot_btf_id: 0,
    pad: 0,
};

/// Events to userspace. The loader sets the size (`TraceOptions::ring_bytes`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Syscall number -> which arguments of the syscall to send (see `SysCfg`). All zeros
/// (`op` 0): not traced.
#[map]
static SYS_CFG: Array<SysCfg> = Array::with_max_entries(SYS_NR_SLOTS, 0);

/// Events that did not fit in the ring buffer, per `op` slot.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(op::OP_SLOTS, 0);

const MASK: usize = PAYLOAD_CAP - 1;

/// The event being built on this CPU. Its header and payload are written in place in this
/// CPU's batch (`BATCH`), right after the frames already there: a copy into the batch would
/// cost a helper call per event. An event given up half way is simply not counted in the
/// batch's length.
#[repr(C)]
struct Cur {
    /// Where the event's frame starts in the batch's `buf` (at most `BATCH_LIMIT`).
    at: u64,
    /// Directories walked for this event, to remember once the event is delivered (never
    /// before: a reference to a definition userspace did not get would be unresolvable).
    pending: [DirKey; MAX_PENDING],
    pending_id: [u64; MAX_PENDING],
    n_pending: u64,
}

#[map]
static CUR: PerCpuArray<Cur> = PerCpuArray::with_max_entries(1, 0);

/// An event being built: this CPU's batch, its `Cur`, and where the event's frame starts in
/// the batch (bounded by `BATCH_LIMIT`, which the verifier must see wherever it is used).
#[derive(Clone, Copy)]
struct Ev {
    b: *mut Batch,
    c: *mut Cur,
    at: usize,
}

impl Ev {
    /// This CPU's event in progress (for the `bpf_loop` callback).
    #[inline(always)]
    fn current() -> Option<Ev> {
        let b = BATCH.get_ptr_mut(0)?;
        let c = CUR.get_ptr_mut(0)?;
        // SAFETY: this CPU's value.
        let at = unsafe { (*c).at } as usize;
        (at <= BATCH_LIMIT).then_some(Ev { b, c, at })
    }

    /// The event's header.
    #[inline(always)]
    fn hdr(self) -> *mut EventHeader {
        // SAFETY: `at + FRAME_HEADER + HEADER_LEN` is inside `buf` (`BATCH_BUF`).
        unsafe {
            (&raw mut (*self.b).buf)
                .cast::<u8>()
                .add(self.at + FRAME_HEADER)
                .cast()
        }
    }

    /// Payload byte `off` (masked below `PAYLOAD_CAP`; `BATCH_BUF` has room for a string of
    /// `USER_PATH_MAX` written there).
    #[inline(always)]
    fn pay(self, off: usize) -> *mut u8 {
        // SAFETY: as above.
        unsafe {
            (&raw mut (*self.b).buf)
                .cast::<u8>()
                .add(self.at + FRAME_HEADER + HEADER_LEN + (off & MASK))
        }
    }

    /// Mark the event truncated.
    #[inline(always)]
    fn truncated(self) {
        // SAFETY: the header of this CPU's event.
        unsafe { (*self.hdr()).flags |= FLAG_TRUNCATED };
    }

    #[inline(always)]
    fn set_ret(self, ret: i64) {
        // SAFETY: as above.
        unsafe { (*self.hdr()).ret = ret };
    }
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

/// Directories already sent to userspace (see `TAG_DIR_DEF`), per CPU: a direct-mapped
/// cache, slot chosen by a hash of the key. A lookup is an inlined array access and four
/// compares (an LRU hash map costs a hash function call and its bookkeeping on every
/// event); a collision only evicts, and the next walk of that directory defines it again.
/// Per CPU because a slot is written in several stores: another CPU could read it half
/// written. An event's definitions are remembered on the CPU that delivered it.
#[map]
static DIRS: PerCpuArray<DirSlot> = PerCpuArray::with_max_entries(DIR_SLOTS, 0);

const DIR_SLOTS: u32 = 4096;

#[repr(C)]
#[derive(Clone, Copy)]
struct DirSlot {
    key: DirKey,
    id: u64,
}

#[inline(always)]
fn dir_index(k: &DirKey) -> u32 {
    // Dentries are allocated from a slab: the low bits are alignment, the rest varies.
    let h = (k.dentry >> 6) ^ (k.dentry >> 18) ^ (k.mnt >> 6) ^ k.generation;
    (h as u32) & (DIR_SLOTS - 1)
}

/// The id under which directory `k` was sent, if this CPU remembers it.
#[inline(always)]
fn dir_get(k: &DirKey) -> Option<u64> {
    let slot = DIRS.get_ptr(dir_index(k))?;
    // SAFETY: this CPU's slot; no concurrent writer.
    let slot = unsafe { &*slot };
    (slot.key.dentry == k.dentry
        && slot.key.mnt == k.mnt
        && slot.key.root_dentry == k.root_dentry
        && slot.key.generation == k.generation)
        .then_some(slot.id)
}

/// `*dst = *src`, eight bytes at a time (a struct copy compiles to a byte-by-byte
/// `memmove` loop).
#[inline(always)]
unsafe fn copy_key(dst: *mut DirKey, src: *const DirKey) {
    // SAFETY: the caller passes valid, 8-aligned map memory.
    unsafe {
        let (d, s) = (dst.cast::<u64>(), src.cast::<u64>());
        for i in 0..4 {
            ptr::write_volatile(d.add(i), ptr::read_volatile(s.add(i)));
        }
    }
}

/// Remember that directory `k` was sent as `id`.
#[inline(always)]
fn dir_put(k: &DirKey, id: u64) {
    if let Some(slot) = DIRS.get_ptr_mut(dir_index(k)) {
        // SAFETY: as above.
        unsafe { *slot = DirSlot { key: *k, id } };
    }
}

/// Bumped by every successful rename or delete in the workload: cached directory paths
/// made before it are not reused.
#[map]
static GENERATION: Array<u64> = Array::with_max_entries(1, 0);

/// Per-CPU counter for directory ids (the CPU number goes in the high bits).
#[map]
static NEXT_ID: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

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

/// One field of [`CONFIG`], read where it is used (a load from the frozen map value, which
/// the verifier knows as a constant). Volatile so the compiler does not fold the zeros above;
/// field by field because a copy of the whole struct costs ~80 instructions on every event.
macro_rules! cf {
    ($field:ident) => {{
        // SAFETY: a field of a frozen global.
        #[allow(unused_unsafe)]
        let v = unsafe { ptr::read_volatile(&raw const CONFIG.$field) };
        v
    }};
}

/// The last answer of [`in_scope`] on this CPU: for which cgroup (v2 id), and whether it is
/// in the traced subtree.
#[repr(C)]
#[derive(Clone, Copy)]
struct Verdict {
    cgroup: u64,
    inside: u64,
}

#[map]
static VERDICT: PerCpuArray<Verdict> = PerCpuArray::with_max_entries(1, 0);

/// Whether `task` (the current one) is in the traced cgroup subtree. Checked before
/// anything else: `sys_exit` runs on every syscall of every process on the machine, and
/// nearly all of them are not ours. The answer for a cgroup never changes (a cgroup cannot
/// move, and ids are not reused), so the last one is kept per CPU, keyed by the task's
/// cgroup id (`task->cgroups->dfl_cgrp->kn->id`, four direct loads): a workload busy on a
/// CPU then pays no helper call for it.
#[inline(always)]
fn in_scope(task: u64) -> bool {
    let css_set: u64 = bload(task, cf!(task_cgroups));
    let cgrp: u64 = bload(css_set, cf!(css_set_dfl_cgrp));
    let kn: u64 = bload(cgrp, cf!(cgroup_kn));
    let id: u64 = bload(kn, cf!(kernfs_node_id));
    let Some(v) = VERDICT.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's value; no program nests on one CPU.
    unsafe {
        if id != 0 && (*v).cgroup == id {
            return (*v).inside != 0;
        }
        let inside = bpf_get_current_ancestor_cgroup_id(cf!(cgroup_level) as i32) == cf!(cgroup_id);
        *v = Verdict {
            cgroup: id,
            inside: u64::from(inside),
        };
        inside
    }
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

/// Load a `T` at `base + off` where `base` is a BTF-typed kernel pointer the verifier knows
/// (`bpf_get_current_task_btf()`, a tp_btf argument, or a pointer member loaded from one)
/// and `off` one of the frozen [`CONFIG`] offsets (a constant to the verifier): a plain load
/// that the verifier checks against the kernel's BTF and the JIT guards against faults, with
/// no helper call (what `bpf_probe_read_kernel` costs on every step is most of an event's
/// price). A faulting load reads 0. Pointers loaded this way keep their BTF type, so chains
/// (`task->fs->root.dentry`) stay direct; pointers to pointers and anything that went
/// through a map are plain numbers to the verifier and need [`kread`].
#[inline(always)]
fn bload<T: Copy>(base: u64, off: u32) -> T {
    // SAFETY: see above; the verifier rejects the program if `base + off` is not a member
    // of `base`'s type of this size.
    unsafe { ptr::read_volatile((base + u64::from(off)) as *const T) }
}

/// The current task as a BTF pointer (for [`bload`]).
#[inline(always)]
fn task_btf() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_current_task_btf() as u64 }
}

/// Start an event in this CPU's batch, after the frames already there; the batch is sent
/// first when it holds another task's events or is full (see [`emit`]). Thread and process
/// ids come from the task with direct loads (not `bpf_get_current_pid_tgid`: every helper
/// call counts on the hot path). `comm` is not in the header: scheduler events put it first
/// in their payload ([`put_comm`]), userspace keeps it per process.
#[inline(always)]
fn begin(task: u64, kind: u32, op: u32) -> Option<Ev> {
    let b = BATCH.get_ptr_mut(0)?;
    let c = CUR.get_ptr_mut(0)?;
    let tid: u32 = bload(task, cf!(task_pid));
    // SAFETY: `b` and `c` are this CPU's map values; programs do not nest on one CPU for
    // these hooks. Header fields one by one with volatile stores: a struct assignment
    // becomes a call to a byte-at-a-time `memset` for the zeroed fields.
    unsafe {
        if (*b).len != 0 && (*b).tid != u64::from(tid) {
            flush(b);
        }
        let mut at = (*b).len as usize;
        if at > BATCH_LIMIT {
            flush(b);
            at = 0;
        }
        (*c).at = at as u64;
        (*c).n_pending = 0;
        let e = Ev { b, c, at };
        let h = e.hdr();
        ptr::write_volatile(&raw mut (*h).kind, kind as u16);
        ptr::write_volatile(&raw mut (*h).op, op as u16);
        ptr::write_volatile(&raw mut (*h).flags, 0);
        ptr::write_volatile(&raw mut (*h).pid, bload(task, cf!(task_tgid)));
        ptr::write_volatile(&raw mut (*h).tid, tid);
        ptr::write_volatile(&raw mut (*h).ret, 0);
        ptr::write_volatile(&raw mut (*h).payload_len, 0);
        ptr::write_volatile(&raw mut (*h).exec_id, bload(task, cf!(task_self_exec_id)));
        Some(e)
    }
}

// Wake-ups: the reader is woken once every `CONFIG.wakeup_mask + 1` records per CPU (the
// loader sizes it to about an eighth of the ring). A wake-up per record (the default) costs
// an irq_work per syscall, asking the ring how full it is costs a helper call per record,
// and, measured here, a reader that drains as records arrive slows every record down: it
// keeps pulling the ring's head cache lines (positions, the record being written) over to
// its own core. Woken rarely, it drains a big batch at once and sleeps again.
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Records sent on this CPU (for the wake-ups).
#[map]
static SENT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's batch of frames not yet sent (see `minify_trace_common::Batch`).
#[map]
static BATCH: PerCpuArray<Batch> = PerCpuArray::with_max_entries(1, 0);

/// Close the event (its frame header, the batch's length), and send the batch when it is
/// full, when `now` (a scheduler event: the process tree must reach userspace before what
/// the new process does), when the event defined directories (a later event may refer to
/// them only once they are delivered), or when batching is off. A batch holds consecutive
/// events of one task: [`begin`] sends it first when another task's event starts.
///
/// Why batches: one ring-buffer write costs as much as the rest of a stat event together
/// (a lock, the reservation, the commit); one write per batch of a few hundred events is
/// nearly free per event. Batches of different CPUs reach userspace out of order; the
/// events that must keep their order are all sent at once (above), and `exec_id` in each
/// header tells userspace on which side of an exec a late event of a task falls.
#[inline(always)]
fn emit(e: Ev, off: usize, slot: u32, now: bool) {
    let off = if off > PAYLOAD_CAP { PAYLOAD_CAP } else { off };
    let b = e.b;
    // SAFETY: `e` is this CPU's event in its batch; no program nests on one CPU.
    unsafe {
        let h = e.hdr();
        (*h).payload_len = off as u32;
        let rec = HEADER_LEN + off;
        let frame = (&raw mut (*b).buf).cast::<u8>().add(e.at).cast::<u32>();
        ptr::write_volatile(frame, rec as u32);
        ptr::write_volatile(frame.add(1), 0);
        (*b).len = (e.at + frame_len(rec)) as u64;
        (*b).tid = u64::from((*h).tid);
        let counted = &raw mut (*b).n_by_op[(slot & (op::OP_SLOTS - 1)) as usize];
        *counted += 1;
        let c = e.c;
        let n = (*c).n_pending as usize;
        if now || n != 0 || (*b).len as usize > BATCH_LIMIT || cf!(no_batching) != 0 {
            // Delivered: the directories it defined may now be referred to.
            if flush(b) {
                for i in 0..MAX_PENDING {
                    if i < n {
                        dir_put(&(*c).pending[i], (*c).pending_id[i]);
                    }
                }
            }
        }
    }
}

/// Send this CPU's batch; count its events as lost if the ring buffer is full. Returns
/// whether it was delivered.
#[inline(always)]
fn flush(b: *mut Batch) -> bool {
    // SAFETY: this CPU's batch.
    unsafe {
        let len = (*b).len as usize;
        if len == 0 {
            return true;
        }
        let mut wake = BPF_RB_NO_WAKEUP;
        if let Some(n) = SENT.get_ptr_mut(0) {
            *n += 1;
            if *n & u64::from(cf!(wakeup_mask)) == 0 {
                wake = BPF_RB_FORCE_WAKEUP;
            }
        }
        let len = if len > BATCH_BUF { BATCH_BUF } else { len };
        let r = bpf_ringbuf_output(
            (&raw const EVENTS).cast_mut().cast(),
            (&raw mut (*b).buf).cast(),
            len as u64,
            wake,
        );
        if r != 0 {
            for i in 0..op::OP_SLOTS {
                let counted = (*b).n_by_op[i as usize];
                if counted != 0
                    && let Some(c) = LOST.get_ptr_mut(i)
                {
                    *c += u64::from(counted);
                }
            }
        }
        // Zeroed eight bytes at a time: plain stores of zero compile to a byte-by-byte
        // `memset` loop.
        let counts = (&raw mut (*b).n_by_op).cast::<u64>();
        for i in 0..(op::OP_SLOTS / 2) as usize {
            ptr::write_volatile(counts.add(i), 0);
        }
        (*b).len = 0;
        r == 0
    }
}

/// Append a one-byte tag; returns the new offset.
#[inline(always)]
fn put_tag(e: Ev, off: usize, tag: u8) -> usize {
    if off >= PAYLOAD_CAP {
        return off;
    }
    // SAFETY: a masked payload byte of this CPU's event.
    unsafe { *e.pay(off) = tag };
    off + 1
}

/// Append the current task's `comm` ([`TAG_COMM`] and 16 bytes; first in a scheduler
/// event's payload, so always in room).
#[inline(always)]
fn put_comm(e: Ev, off: usize) -> usize {
    let off = put_tag(e, off, TAG_COMM);
    let name = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
    // SAFETY: a masked payload offset of this CPU's event, with room after it.
    unsafe { ptr::write_unaligned(e.pay(off).cast::<[u8; COMM_LEN]>(), name) };
    off + COMM_LEN
}

/// Append a tagged NUL-terminated string from user memory.
#[inline(always)]
fn put_user_str(e: Ev, off: usize, tag: u8, user: u64) -> usize {
    put_str(e, off, tag, user, false)
}

/// Append a tagged NUL-terminated string from user (or, with `kernel`, kernel) memory.
#[inline(always)]
fn put_str(e: Ev, off: usize, tag: u8, user: u64, kernel: bool) -> usize {
    if user == 0 {
        return off;
    }
    if off + 1 + USER_PATH_MAX > PAYLOAD_CAP {
        e.truncated();
        return off;
    }
    let start = put_tag(e, off, tag);
    // SAFETY: destination masked below PAYLOAD_CAP, with room for USER_PATH_MAX after it.
    let n = unsafe {
        let dst = e.pay(start).cast();
        if kernel {
            bpf_probe_read_kernel_str(dst, USER_PATH_MAX as u32, user as *const c_void)
        } else {
            bpf_probe_read_user_str(dst, USER_PATH_MAX as u32, user as *const c_void)
        }
    };
    if n <= 0 {
        // Unreadable pointer: drop the tag again.
        return off;
    }
    start + n as usize
}

// Pointers here are returned as plain values with 0 for "none", not as `Option`s: LLVM
// moves the undefined payload of a `None` between registers and stack, which is legal for it
// and rejected by the verifier ("R5 !read_ok").

/// `bpf_rdonly_cast(p, btf_id)`: `p` as a read-only pointer to the vmlinux struct
/// `btf_id` (a constant to the verifier: a frozen [`CONFIG`] field), so that what it points
/// to can be read with [`bload`]. The verifier turns the call into a register move. Only
/// reachable when `CONFIG.rdonly_cast` is 1 (see `KFUNC_RDONLY_CAST`).
#[inline(always)]
fn rdonly_cast(p: u64, btf_id: u32) -> u64 {
    // SAFETY: an ordinary helper call to a made-up number that the loader rewrites into the
    // kfunc call before loading (or into a move on a path the verifier never takes).
    unsafe {
        let f: unsafe extern "C" fn(u64, u32) -> u64 =
            core::mem::transmute(KFUNC_RDONLY_CAST as usize);
        f(p, btf_id)
    }
}

/// Whether files are read through [`rdonly_cast`] (the kernel has the kfunc).
#[inline(always)]
fn direct_files() -> bool {
    cf!(rdonly_cast) != 0
}

/// The `struct file *` behind `fd` in the current task; 0 when `fd` is not open. With
/// [`direct_files`] a BTF pointer: the fd array's entry (a pointer to pointers, which the
/// verifier types as a number) is cast to a struct whose first member is a `struct file *`,
/// and read with a direct load. Otherwise a plain number, read with a probe read.
#[inline(always)]
fn fd_file(task: u64, fd: i64) -> u64 {
    if fd < 0 {
        return 0;
    }
    let files: u64 = bload(task, cf!(task_files));
    let fdt: u64 = bload(files, cf!(files_fdt));
    let max: u32 = bload(fdt, cf!(fdt_max_fds));
    if fd as u64 >= u64::from(max) {
        return 0;
    }
    let arr: u64 = bload(fdt, cf!(fdt_fd));
    if direct_files() {
        let slot = rdonly_cast(arr + ((fd as u64) << 3), cf!(fd_slot_btf_id));
        return bload(slot, 0);
    }
    kread(arr, (fd as u32).wrapping_mul(8)).unwrap_or(0)
}

/// `(vfsmount, dentry)` of a file's `f_path` (`file` from [`fd_file`]; 0: none).
#[inline(always)]
fn file_path(file: u64) -> (u64, u64) {
    if direct_files() {
        if file == 0 {
            return (0, 0);
        }
        return bload_path(file, cf!(file_f_path));
    }
    read_path(file, cf!(file_f_path))
}

/// `file->f_mode` (`file` from [`fd_file`], not 0).
#[inline(always)]
fn file_mode(file: u64) -> u32 {
    if direct_files() {
        return bload(file, cf!(file_f_mode));
    }
    kread::<u32>(file, cf!(file_f_mode)).unwrap_or(0)
}

/// `(vfsmount, dentry)` of the `struct path` at `base + off`, `base` a plain number (0:
/// none): one probe read of both pointers (the loader checks that `dentry` follows `mnt`).
#[inline(always)]
fn read_path(base: u64, off: u32) -> (u64, u64) {
    if base == 0 {
        return (0, 0);
    }
    let [mnt, dentry]: [u64; 2] = kread(base, off + cf!(path_mnt)).unwrap_or([0; 2]);
    (mnt, dentry)
}

/// `(vfsmount, dentry)` of the `struct path` at `base + off`, `base` a BTF pointer.
#[inline(always)]
fn bload_path(base: u64, off: u32) -> (u64, u64) {
    (
        bload(base, off + cf!(path_mnt)),
        bload(base, off + cf!(path_dentry)),
    )
}

/// The current task's root directory.
#[inline(always)]
fn task_root(task: u64) -> (u64, u64) {
    let fs: u64 = bload(task, cf!(task_fs));
    bload_path(fs, cf!(fs_root))
}

/// Append a walk of `(vfsmnt, dentry)` up to the current task's root: start tag, components
/// leaf first, end tag.
#[inline(always)]
fn put_walk(
    task: u64,
    e: Ev,
    off: usize,
    tag: u8,
    (mnt, dentry): (u64, u64),
    cache_at: u64,
) -> usize {
    if off + 2 > PAYLOAD_CAP {
        e.truncated();
        return off;
    }
    let off = put_tag(e, off, tag);
    let Some(w) = WALK.get_ptr_mut(0) else {
        return put_tag(e, off, TAG_END_ERROR);
    };
    let (root_mnt, root_dentry) = task_root(task);
    // The pointers may be BTF pointers (direct loads), on which the verifier allows no
    // arithmetic; written to a map value and read back they are numbers, which the
    // directory cache can hash.
    // SAFETY: this CPU's walk state.
    let [dentry, mnt, root_dentry, root_mnt] = unsafe {
        let p = (&raw mut (*w).dentry).cast::<[u64; 4]>();
        ptr::write_volatile(p, [dentry, mnt, root_dentry, root_mnt]);
        ptr::read_volatile(p)
    };
    if mnt == 0 || dentry == 0 || root_mnt == 0 || root_dentry == 0 {
        return put_tag(e, off, TAG_END_ERROR);
    }
    // The common case of a relative lookup, its directory already sent: answer it here,
    // without setting up a loop.
    if cache_at == 0 {
        if dentry == root_dentry && mnt == root_mnt {
            return put_tag(e, off, TAG_END_ROOT);
        }
        let key = DirKey {
            dentry,
            mnt,
            root_dentry,
            generation: generation(),
        };
        if let Some(id) = dir_get(&key) {
            // SAFETY: this CPU's scratch value.
            return unsafe { put_tag_id(e, off, TAG_DIR_REF, id) };
        }
    }
    // SAFETY: this CPU's walk state.
    unsafe {
        // The four pointers are in place (above); `pend_key`/`pend_id` count only once
        // `pend` is set. Field by field: a struct assignment compiles to a byte-by-byte
        // `memset` loop for the zeros.
        ptr::write_volatile(&raw mut (*w).off, off as u64);
        ptr::write_volatile(&raw mut (*w).done, 0);
        ptr::write_volatile(&raw mut (*w).step, 0);
        ptr::write_volatile(&raw mut (*w).cache_at, cache_at);
        ptr::write_volatile(&raw mut (*w).end_tag, 0);
        ptr::write_volatile(&raw mut (*w).pend, 0);
        bpf_loop(WALK_MAX_STEPS, walk_step as *mut c_void, ptr::null_mut(), 0);
        let off = (*w).off as usize;
        if (*w).done == 0 {
            return put_tag(e, off, TAG_END_TRUNCATED);
        }
        // Only a walk that got to an answer defines its directory.
        let answered = (*w).end_tag == u64::from(TAG_END_ROOT)
            || (*w).end_tag == u64::from(TAG_END_UNREACHABLE);
        if (*w).pend != 0 && answered {
            let c = e.c;
            let n = (*c).n_pending as usize;
            if n < MAX_PENDING {
                copy_key(&raw mut (*c).pending[n], &raw const (*w).pend_key);
                (*c).pending_id[n] = (*w).pend_id;
                (*c).n_pending = n as u64 + 1;
            }
        }
        off
    }
}

/// Write the walk's end tag and stop the loop.
#[inline(always)]
unsafe fn walk_end(w: *mut Walk, e: Ev, off: usize, tag: u8) -> i64 {
    // SAFETY: the caller passes this CPU's map values.
    unsafe {
        (*w).off = put_tag(e, off, tag) as u64;
        (*w).done = 1;
        (*w).end_tag = u64::from(tag);
    }
    1
}

/// Append a tag followed by an 8-byte id.
#[inline(always)]
unsafe fn put_tag_id(e: Ev, off: usize, tag: u8, id: u64) -> usize {
    let off = put_tag(e, off, tag);
    // SAFETY: a masked payload offset of this CPU's event, with room after it.
    unsafe { ptr::write_unaligned(e.pay(off).cast::<[u8; 8]>(), id.to_le_bytes()) };
    off + 8
}

#[inline(always)]
fn generation() -> u64 {
    GENERATION.get(0).copied().unwrap_or(0)
}

/// One step of the path walk (a `bpf_loop` callback): returns 1 to stop.
extern "C" fn walk_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let (Some(w), Some(e)) = (WALK.get_ptr_mut(0), Ev::current()) else {
        return 1;
    };
    // SAFETY: this CPU's map values; payload offsets are masked.
    unsafe {
        let off = (*w).off as usize;
        if off + 2 + NAME_MAX > PAYLOAD_CAP {
            e.truncated();
            return walk_end(w, e, off, TAG_END_TRUNCATED);
        }
        let dentry = (*w).dentry;
        let vfsmnt = (*w).vfsmnt;
        if dentry == (*w).root_dentry && vfsmnt == (*w).root_mnt {
            return walk_end(w, e, off, TAG_END_ROOT);
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
            if let Some(id) = dir_get(&key) {
                (*w).off = put_tag_id(e, off, TAG_DIR_REF, id) as u64;
                (*w).done = 1;
                (*w).end_tag = u64::from(TAG_DIR_REF);
                return 1;
            }
            let Some(counter) = NEXT_ID.get_ptr_mut(0) else {
                return walk_end(w, e, off, TAG_END_ERROR);
            };
            let id = (u64::from(bpf_get_smp_processor_id()) << 48) | *counter;
            *counter += 1;
            (*w).pend = 1;
            (*w).pend_key = key;
            (*w).pend_id = id;
            (*w).off = put_tag_id(e, off, TAG_DIR_DEF, id) as u64;
            // Go on with this same directory in the next iteration (the check is done).
            return 0;
        }
        let Some(mnt_root) = kread::<u64>(vfsmnt, cf!(vfsmount_mnt_root)) else {
            return walk_end(w, e, off, TAG_END_ERROR);
        };
        if dentry == mnt_root {
            // At the root of a mount: continue from where it is mounted.
            let mount = vfsmnt - u64::from(cf!(mount_mnt));
            let Some(parent) = kread::<u64>(mount, cf!(mount_mnt_parent)) else {
                return walk_end(w, e, off, TAG_END_ERROR);
            };
            if parent == mount {
                // The namespace's root mount and not the task's root: outside the root
                // (a chroot escapee or an internal mount such as pipefs).
                return walk_end(w, e, off, TAG_END_UNREACHABLE);
            }
            let Some(mp) = kread::<u64>(mount, cf!(mount_mnt_mountpoint)) else {
                return walk_end(w, e, off, TAG_END_ERROR);
            };
            (*w).dentry = mp;
            (*w).vfsmnt = parent + u64::from(cf!(mount_mnt));
            return 0;
        }
        let Some(parent) = kread::<u64>(dentry, cf!(dentry_d_parent)) else {
            return walk_end(w, e, off, TAG_END_ERROR);
        };
        if parent == dentry {
            return walk_end(w, e, off, TAG_END_UNREACHABLE);
        }
        let Some(name) = kread::<u64>(dentry, cf!(dentry_d_name_name)) else {
            return walk_end(w, e, off, TAG_END_ERROR);
        };
        *e.pay(off) = TAG_COMPONENT;
        let start = off + 1;
        let n =
            bpf_probe_read_kernel_str(e.pay(start).cast(), NAME_MAX as u32, name as *const c_void);
        if n <= 0 {
            return walk_end(w, e, off, TAG_END_ERROR);
        }
        (*w).off = (start + n as usize) as u64;
        (*w).dentry = parent;
        0
    }
}

/// Whether the first byte of the user string at `payload[start]` is not `/`.
#[inline(always)]
fn is_relative(e: Ev, start: usize) -> bool {
    // SAFETY: a masked payload byte of this CPU's event.
    unsafe { *e.pay(start) != b'/' }
}

/// The directory a relative path is resolved against: `dfd`'s file or the cwd.
#[inline(always)]
fn base_dir(task: u64, dfd: i32) -> (u64, u64) {
    if dfd == AT_FDCWD {
        let fs: u64 = bload(task, cf!(task_fs));
        bload_path(fs, cf!(fs_pwd))
    } else {
        file_path(fd_file(task, i64::from(dfd)))
    }
}

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
fn rec<T>(ctx: &TracePointContext, off: u32) -> Option<T> {
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
