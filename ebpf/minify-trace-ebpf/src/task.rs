//! Reading the kernel from the programs: whether the current task is in the traced cgroup
//! subtree, and its files, root and cwd, through BTF-checked direct loads where the verifier
//! can follow the pointer and probe reads where it cannot.

use core::ffi::c_void;
use core::ptr;

use aya_ebpf::helpers::generated::{
    bpf_get_current_ancestor_cgroup_id, bpf_get_current_task_btf, bpf_probe_read_kernel,
};
use minify_trace_common::KFUNC_RDONLY_CAST;

use crate::maps::{VERDICT, cf};

/// `AT_FDCWD` (include/uapi/linux/fcntl.h): a dirfd that means the cwd.
pub(crate) const AT_FDCWD: i32 = -100;

/// The last answer of [`in_scope`] on this CPU: for which cgroup (v2 id), and whether it is
/// in the traced subtree.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Verdict {
    cgroup: u64,
    inside: u64,
}

/// Whether `task` (the current one) is in the traced cgroup subtree. Checked before
/// anything else: `sys_exit` runs on every syscall of every process on the machine, and
/// nearly all of them are not ours. The answer for a cgroup never changes (a cgroup cannot
/// move, and ids are not reused), so the last one is kept per CPU, keyed by the task's
/// cgroup id (`task->cgroups->dfl_cgrp->kn->id`, four direct loads): a workload busy on a
/// CPU then pays no helper call for it.
#[inline(always)]
pub(crate) fn in_scope(task: u64) -> bool {
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
pub(crate) fn kread<T: Copy>(base: u64, off: u32) -> Option<T> {
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
pub(crate) fn bload<T: Copy>(base: u64, off: u32) -> T {
    // SAFETY: see above; the verifier rejects the program if `base + off` is not a member
    // of `base`'s type of this size.
    unsafe { ptr::read_volatile((base + u64::from(off)) as *const T) }
}

/// The current task as a BTF pointer (for [`bload`]).
#[inline(always)]
pub(crate) fn task_btf() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_get_current_task_btf() as u64 }
}

// Pointers here are returned as plain values with 0 for "none", not as `Option`s: LLVM
// moves the undefined payload of a `None` between registers and stack, which is legal for it
// and rejected by the verifier ("R5 !read_ok").

/// `bpf_rdonly_cast(p, btf_id)`: `p` as a read-only pointer to the vmlinux struct
/// `btf_id` (a constant to the verifier: a frozen [`CONFIG`] field), so that what it points
/// to can be read with [`bload`]. The verifier turns the call into a register move. Only
/// reachable when `CONFIG.rdonly_cast` is 1 (see `KFUNC_RDONLY_CAST`).
#[inline(always)]
pub(crate) fn rdonly_cast(p: u64, btf_id: u32) -> u64 {
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
pub(crate) fn fd_file(task: u64, fd: i64) -> u64 {
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
pub(crate) fn file_path(file: u64) -> (u64, u64) {
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
pub(crate) fn file_mode(file: u64) -> u32 {
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
pub(crate) fn bload_path(base: u64, off: u32) -> (u64, u64) {
    (
        bload(base, off + cf!(path_mnt)),
        bload(base, off + cf!(path_dentry)),
    )
}

/// The current task's root directory.
#[inline(always)]
pub(crate) fn task_root(task: u64) -> (u64, u64) {
    let fs: u64 = bload(task, cf!(task_fs));
    bload_path(fs, cf!(fs_root))
}

/// The directory a relative path is resolved against: `dfd`'s file or the cwd.
#[inline(always)]
pub(crate) fn base_dir(task: u64, dfd: i32) -> (u64, u64) {
    if dfd == AT_FDCWD {
        let fs: u64 = bload(task, cf!(task_fs));
        bload_path(fs, cf!(fs_pwd))
    } else {
        file_path(fd_file(task, i64::from(dfd)))
    }
}
