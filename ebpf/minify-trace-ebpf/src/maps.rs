//! Everything the programs share: the frozen [`CONFIG`] global the loader fills with this
//! kernel's layout, read field by field with [`cf!`], and every map, in the order the
//! object has always declared them.

use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, PerCpuArray, RingBuf};
use minify_trace_common::{Batch, KernelConfig, SYS_NR_SLOTS, SysCfg, op};

use crate::batch::Cur;
use crate::task::Verdict;
use crate::walk::{DIR_SLOTS, DirSlot, Walk};

/// Kernel layout and the cgroup to trace. Overridden (and frozen) by the loader.
#[unsafe(no_mangle)]
pub(crate) static CONFIG: KernelConfig = KernelConfig {
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

/// One field of [`CONFIG`], read where it is used (a load from the frozen map value, which
/// the verifier knows as a constant). Volatile so the compiler does not fold the zeros above;
/// field by field because a copy of the whole struct costs ~80 instructions on every event.
macro_rules! cf {
    ($field:ident) => {{
        // SAFETY: a field of a frozen global.
        #[allow(unused_unsafe)]
        let v = unsafe { core::ptr::read_volatile(&raw const $crate::maps::CONFIG.$field) };
        v
    }};
}
pub(crate) use cf;

/// Events to userspace. The loader sets the size (`TraceOptions::ring_bytes`).
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Syscall number -> which arguments of the syscall to send (see `SysCfg`). All zeros
/// (`op` 0): not traced.
#[map]
pub(crate) static SYS_CFG: Array<SysCfg> = Array::with_max_entries(SYS_NR_SLOTS, 0);

/// Events that did not fit in the ring buffer, per `op` slot.
#[map]
pub(crate) static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(op::OP_SLOTS, 0);

/// The event being built on this CPU (see [`Cur`]).
#[map]
pub(crate) static CUR: PerCpuArray<Cur> = PerCpuArray::with_max_entries(1, 0);

/// Directories already sent to userspace (see `TAG_DIR_DEF`), per CPU: a direct-mapped
/// cache, slot chosen by a hash of the key. A lookup is an inlined array access and four
/// compares (an LRU hash map costs a hash function call and its bookkeeping on every
/// event); a collision only evicts, and the next walk of that directory defines it again.
/// Per CPU because a slot is written in several stores: another CPU could read it half
/// written. An event's definitions are remembered on the CPU that delivered it.
#[map]
pub(crate) static DIRS: PerCpuArray<DirSlot> = PerCpuArray::with_max_entries(DIR_SLOTS, 0);

/// Bumped by every successful rename or delete in the workload: cached directory paths
/// made before it are not reused.
#[map]
pub(crate) static GENERATION: Array<u64> = Array::with_max_entries(1, 0);

/// Per-CPU counter for directory ids (the CPU number goes in the high bits).
#[map]
pub(crate) static NEXT_ID: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's path walk in progress (see [`Walk`]).
#[map]
pub(crate) static WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's last cgroup verdict (see [`Verdict`]).
#[map]
pub(crate) static VERDICT: PerCpuArray<Verdict> = PerCpuArray::with_max_entries(1, 0);

/// Records sent on this CPU (for the wake-ups).
#[map]
pub(crate) static SENT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's batch of frames not yet sent (see `minify_trace_common::Batch`).
#[map]
pub(crate) static BATCH: PerCpuArray<Batch> = PerCpuArray::with_max_entries(1, 0);
