//! Types shared by the eBPF programs (`ebpf/minify-trace-ebpf`) and their loader
//! (`crates/minify-trace`): the wire format of events in the ring buffer and the read-only
//! configuration the loader hands to the programs.
//!
//! Everything here is `#[repr(C)]`, `Copy`, made only of integers and without hidden padding,
//! because the same bytes are read on both sides of the kernel boundary.
//!
//! # Event wire format
//! Each ring-buffer record is a *batch*: a sequence of frames, each an 8-byte frame header
//! (`u32` record length, little-endian, then 4 zero bytes), the record, and zero padding to a
//! multiple of 8 ([`frame_len`]). The programs collect a task's consecutive events in a
//! per-CPU [`Batch`] and send it in one ring-buffer write (see the eBPF crate for when).
//! Each record is an [`EventHeader`] followed by `payload_len` bytes of payload.
//! The payload is a sequence of *pieces*, each one tag byte; string pieces
//! ([`TAG_USER_PATH`], [`TAG_USER_PATH2`], [`TAG_COMPONENT`], [`TAG_ARGV0`]) are followed by a
//! NUL-terminated string. A kernel-side path walk starts with a `TAG_WALK_*` piece, then gives
//! the path's components **leaf first** ([`TAG_COMPONENT`]), and ends with [`TAG_END_ROOT`]
//! (reached the process's root), [`TAG_END_UNREACHABLE`] (the file is outside the process's
//! root) or [`TAG_END_TRUNCATED`] (too deep or out of room). Building leaf-first keeps the
//! eBPF side to appends at a growing offset, which the verifier can bound; the loader reverses.
#![no_std]

/// Bytes of payload room per event. A power of two: the eBPF side masks offsets with
/// `PAYLOAD_CAP - 1` and keeps a second `PAYLOAD_CAP` of slack after it for the last write.
pub const PAYLOAD_CAP: usize = 8192;
/// The most one user string read may write (Linux `PATH_MAX`).
pub const USER_PATH_MAX: usize = 4096;
/// The most one component read may write (`NAME_MAX` + NUL).
pub const NAME_MAX: usize = 256;
/// Upper bound on loop iterations of one path walk (components plus mount crossings).
pub const WALK_MAX_STEPS: u32 = 512;

/// [`EventHeader::kind`]: `sched_process_exec`; `ret` = the pid before the exec (a thread
/// that execs takes its leader's pid); payload = exe path walk, argv\[0\], and the path as
/// requested ([`TAG_USER_PATH`], with a [`TAG_WALK_BASE`] walk of the cwd when relative).
pub const EV_EXEC: u32 = 3;
/// [`EventHeader::kind`]: `sched_process_fork`; `ret` = child pid (thread-group id of the child).
pub const EV_FORK: u32 = 4;
/// [`EventHeader::kind`]: `sched_process_exit` of a thread; `ret` = exit code (wait status).
pub const EV_PROC_EXIT: u32 = 5;
/// [`EventHeader::kind`]: a whole syscall, sent at its exit: `ret`, the requested paths
/// ([`TAG_USER_PATH`], [`TAG_USER_PATH2`], each with a walk of the directory it is relative
/// to), and a [`TAG_WALK_FD`] walk: for opens the opened file (`flags` has
/// [`EXIT_FLAG_CREATED`] when the open created it), for getdents64 the listed directory, for
/// a successful chdir the new cwd (its requested path then has no base walk: the cwd it was
/// relative to is gone). A successful exec is not sent this way (see [`EV_EXEC`]).
pub const EV_SYSCALL: u32 = 6;

/// Set in a syscall's `flags` when the opened file was created by this open (`FMODE_CREATED`).
pub const EXIT_FLAG_CREATED: u32 = 1;
/// Set in an event's `flags` when the payload ran out of room (a path is incomplete).
pub const FLAG_TRUNCATED: u32 = 1 << 31;

/// Piece: the first path argument, as the caller passed it.
pub const TAG_USER_PATH: u8 = b'p';
/// Piece: the second path argument (the new name of a rename).
pub const TAG_USER_PATH2: u8 = b'q';
/// Piece: one path component (leaf first).
pub const TAG_COMPONENT: u8 = b'c';
/// Piece: argv\[0\] of an exec.
pub const TAG_ARGV0: u8 = b'a';
/// Walk start: directory the first path is relative to (its dirfd or the cwd).
pub const TAG_WALK_BASE: u8 = b'b';
/// Walk start: directory the second path is relative to.
pub const TAG_WALK_BASE2: u8 = b'B';
/// Walk start: the file behind a file descriptor (opened file, listed directory).
pub const TAG_WALK_FD: u8 = b'f';
/// Walk start: the executable (`mm->exe_file`).
pub const TAG_WALK_EXE: u8 = b'x';
/// Walk end: reached the process's root.
pub const TAG_END_ROOT: u8 = b'r';
/// Walk end: the file is not below the process's root (or on an internal mount).
pub const TAG_END_UNREACHABLE: u8 = b'u';
/// Walk end: out of steps or payload room.
pub const TAG_END_TRUNCATED: u8 = b't';
/// Walk end: the descriptor was not open or a kernel pointer could not be read.
pub const TAG_END_ERROR: u8 = b'e';
/// Walk end, followed by 8 bytes (little-endian id): the rest of the path is that of a
/// directory sent earlier with [`TAG_DIR_DEF`] (the eBPF side caches directories it has
/// walked, so a stat storm in one directory walks it once, not once per file).
pub const TAG_DIR_REF: u8 = b'R';
/// Followed by 8 bytes (id): the components after this piece, up to the walk's end, are the
/// path of a directory that later events may refer to with [`TAG_DIR_REF`].
pub const TAG_DIR_DEF: u8 = b'D';
/// Piece: the task's `comm`, 16 bytes, NUL-padded (first in scheduler events only; syscall
/// events take their process's).
pub const TAG_COMM: u8 = b'n';
/// Bytes of `comm` after [`TAG_COMM`].
pub const COMM_LEN: usize = 16;

/// Syscall families ([`EventHeader::op`], [`SysCfg::op`]). The loader maps each traced
/// syscall to one of these; the eBPF side only needs to know which ones open files.
pub mod op {
    /// open, openat, openat2, creat.
    pub const OPEN: u32 = 1;
    /// stat, lstat, newfstatat, statx.
    pub const STAT: u32 = 2;
    /// access, faccessat, faccessat2.
    pub const ACCESS: u32 = 3;
    /// readlink, readlinkat.
    pub const READLINK: u32 = 4;
    /// execve, execveat.
    pub const EXEC: u32 = 5;
    /// chdir.
    pub const CHDIR: u32 = 6;
    /// getdents64 (path comes from the fd).
    pub const GETDENTS: u32 = 7;
    /// mkdir(at), mknod(at), symlink(at), link(at): path 1 is the path created (the new
    /// name; a symlink's text and a link's source are not recorded).
    pub const CREATE: u32 = 8;
    /// rename, renameat, renameat2.
    pub const RENAME: u32 = 9;
    /// unlink, unlinkat, rmdir.
    pub const DELETE: u32 = 10;
    /// Number of slots in the per-op loss counter (ops are `1..OP_SLOTS`).
    pub const OP_SLOTS: u32 = 16;
    /// Loss-counter slot for exec/fork/exit scheduler events.
    pub const SCHED: u32 = 15;
}

/// Syscall numbers below this have a slot in the `SYS_CFG` array, indexed by number (an
/// array lookup is inlined by the verifier, a hash lookup is a helper call on every syscall;
/// every syscall we trace on x86_64 and arm64 is far below it).
pub const SYS_NR_SLOTS: u32 = 1024;

/// Fixed part of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
///
/// 32 bytes, written by every event: what a syscall event needs and nothing more (the
/// task's `comm` goes in the payload of scheduler events, [`TAG_COMM`]; every byte here is
/// copied into the ring buffer and read again on each of the stat storm's events).
pub struct EventHeader {
    /// `EV_*`.
    pub kind: u16,
    /// `op::*` for syscall events, 0 otherwise.
    pub op: u16,
    /// `EXIT_FLAG_*`, `FLAG_TRUNCATED`.
    pub flags: u32,
    /// Thread-group id (what userspace calls the pid), host pid namespace.
    pub pid: u32,
    /// Thread id, host pid namespace.
    pub tid: u32,
    /// Exit: syscall result. Fork: child pid. Process exit: exit code.
    pub ret: i64,
    /// Bytes of payload following this header.
    pub payload_len: u32,
    /// The task's `self_exec_id` (how many execs it has done, inherited over fork) when the
    /// event happened: batches of different CPUs can reach userspace out of order, and this
    /// tells an event from before a task's exec from one after it.
    pub exec_id: u32,
}

/// Bytes a batch collects before it is sent (it may end up to one frame longer).
pub const BATCH_LIMIT: usize = 16 * 1024;
/// Size of a frame header in a batch.
pub const FRAME_HEADER: usize = 8;
/// Room in a batch: the limit plus one more frame of the largest record, so that a frame
/// started at any offset up to the limit stays inside. The programs build each event in
/// place there and write payload bytes at offsets masked below `PAYLOAD_CAP`, strings of up
/// to `USER_PATH_MAX` bytes at the last of them: hence that much more room (what the
/// verifier checks). A per-CPU map value may not exceed 32 KiB.
pub const BATCH_BUF: usize = BATCH_LIMIT + FRAME_HEADER + HEADER_LEN + PAYLOAD_CAP + USER_PATH_MAX;

const _: () = assert!(core::mem::size_of::<Batch>() <= 32 * 1024);

/// Length of a frame holding a record of `record_len` bytes.
#[inline]
pub const fn frame_len(record_len: usize) -> usize {
    (FRAME_HEADER + record_len + 7) & !7
}

/// A per-CPU batch of frames not yet sent (the `BATCH` map). Userspace reads what is left in
/// them after the programs are detached.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Batch {
    /// Bytes of frames in `buf`.
    pub len: u64,
    /// Thread id of the task whose events are in it (a batch holds one task's events).
    pub tid: u64,
    /// Events in it per `op` slot, counted as lost if sending it fails.
    pub n_by_op: [u32; op::OP_SLOTS as usize],
    /// The frames.
    pub buf: [u8; BATCH_BUF],
}

/// Size of [`EventHeader`] on the wire.
pub const HEADER_LEN: usize = core::mem::size_of::<EventHeader>();

/// Per-syscall configuration, at the syscall's number in the `SYS_CFG` array: which of its
/// arguments (1-based, 0 = none) hold what. The syscall program is a BTF tracepoint on the
/// raw `sys_exit` tracepoint (one program for every syscall); it reads the arguments from
/// the task's saved user registers (`struct pt_regs`, offsets of the argument registers in
/// [`KernelConfig::regs_arg`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SysCfg {
    /// `op::*`.
    pub op: u32,
    /// Explicit padding (always 0).
    pub pad0: u32,
    /// Directory fd of path 1 (`AT_FDCWD` when 0).
    pub dfd_arg: u32,
    /// User pointer to path 1.
    pub path_arg: u32,
    /// Directory fd of path 2.
    pub dfd2_arg: u32,
    /// User pointer to path 2.
    pub path2_arg: u32,
    /// A file descriptor whose file is the subject (getdents64).
    pub fd_arg: u32,
    /// Explicit padding (always 0).
    pub pad: u32,
}

impl SysCfg {
    /// Whether this entry carries arguments to send.
    #[inline]
    pub const fn has_args(&self) -> bool {
        self.path_arg != 0 || self.path2_arg != 0 || self.fd_arg != 0
    }
}

/// Kernel layout the programs need, read by the loader from the running kernel's BTF and
/// tracefs, and given to the programs as the frozen global `CONFIG` (constants to the
/// verifier). Offsets are in bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelConfig {
    /// Cgroup v2 id (inode) of the trace cgroup.
    pub cgroup_id: u64,
    /// Its level in the v2 hierarchy (root = 0).
    pub cgroup_level: u32,
    /// `FMODE_CREATED` bit in `file.f_mode`.
    pub fmode_created: u32,
    pub task_fs: u32,
    pub task_files: u32,
    pub task_mm: u32,
    pub task_exit_code: u32,
    pub fs_root: u32,
    pub fs_pwd: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_f_path: u32,
    pub file_f_mode: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub dentry_d_parent: u32,
    /// `dentry.d_name.name` (offset of `d_name` plus offset of `name` in `qstr`).
    pub dentry_d_name_name: u32,
    pub vfsmount_mnt_root: u32,
    /// Offset of the embedded `struct vfsmount mnt` inside `struct mount`.
    pub mount_mnt: u32,
    pub mount_mnt_parent: u32,
    pub mount_mnt_mountpoint: u32,
    pub mm_exe_file: u32,
    pub mm_arg_start: u32,
    /// `sched_process_fork` record: `child_pid` field.
    pub fork_child_pid_off: u32,
    /// `linux_binprm.filename`.
    pub bprm_filename: u32,
    /// `task_struct.pid` (the thread id).
    pub task_pid: u32,
    /// `task_struct.tgid` (the process id).
    pub task_tgid: u32,
    /// `pt_regs`: where the syscall number is kept (`orig_ax`, arm64 `syscallno`); its low
    /// 32 bits are read.
    pub regs_nr: u32,
    /// `pt_regs`: the registers that carry syscall arguments 1..=6, as they are at exit.
    pub regs_arg: [u32; 6],
    /// `task_struct`: the 32-bit word that says whether the current syscall is a 32-bit
    /// compat one (x86 `thread_info.status`, arm64 `thread_info.flags`); 0: no check.
    /// Compat syscalls have other numbers and are skipped, as syscall tracepoints do.
    pub compat_off: u32,
    /// The bit(s) of that word that mean compat (x86 `TS_COMPAT`, arm64 `TIF_32BIT`).
    pub compat_mask: u32,
    /// The reader is woken when a CPU's count of batches sent has these bits all zero (a
    /// power of two minus one).
    pub wakeup_mask: u32,
    /// 1: send every event at once (a live subscriber is watching); 0: batch.
    pub no_batching: u32,
    /// `task_struct.self_exec_id`.
    pub task_self_exec_id: u32,
    /// `task_struct.cgroups` (the task's `css_set`).
    pub task_cgroups: u32,
    /// `css_set.dfl_cgrp` (its cgroup v2).
    pub css_set_dfl_cgrp: u32,
    /// `cgroup.kn`.
    pub cgroup_kn: u32,
    /// `kernfs_node.id` (the cgroup v2 id).
    pub kernfs_node_id: u32,
    /// 1: the `bpf_rdonly_cast` kfunc is there (Linux 6.2+) and the loader turned the
    /// programs' [`KFUNC_RDONLY_CAST`] calls into calls of it; the programs then read a file
    /// and its path with direct loads. 0: the loader made those calls dead code, and the
    /// programs use `bpf_probe_read_kernel` instead.
    pub rdonly_cast: u32,
    /// BTF id (vmlinux) of a struct whose first member is a `struct file *` (`kiocb`): an
    /// entry of a task's fd array, cast to it, reads as a typed `struct file` pointer.
    pub fd_slot_btf_id: u32,
    /// Explicit padding (always 0).
    pub pad: u32,
}

/// The helper number the programs call for the `bpf_rdonly_cast` kfunc. aya cannot link
/// kfunc calls, so the programs make an ordinary helper call to this made-up number and the
/// loader rewrites each such instruction in the object before loading it: into a kfunc call
/// (`BPF_PSEUDO_KFUNC_CALL` with the kfunc's vmlinux BTF id) where the kernel has it, or into
/// a plain move (the call is then unreachable: [`KernelConfig::rdonly_cast`] is 0).
pub const KFUNC_RDONLY_CAST: u32 = 0x6d6b_6601;

#[cfg(feature = "user")]
#[allow(unsafe_code)]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers without padding; any bit pattern is valid.
    unsafe impl aya::Pod for super::EventHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SysCfg {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Batch {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_hidden_padding() {
        assert_eq!(HEADER_LEN, 2 + 2 + 4 + 4 + 4 + 8 + 4 + 4);
        assert_eq!(core::mem::size_of::<SysCfg>(), 8 * 4);
        assert_eq!(core::mem::size_of::<KernelConfig>(), 8 + 46 * 4);
        assert_eq!(core::mem::size_of::<Batch>(), 16 + 64 + BATCH_BUF);
        assert_eq!(BATCH_BUF % 8, 0);
    }
}
