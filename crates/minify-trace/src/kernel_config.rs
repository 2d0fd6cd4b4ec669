//! What the eBPF programs must know about the running kernel, gathered once per trace into
//! their frozen `CONFIG` global: struct member offsets from BTF (Rust eBPF has no CO-RE),
//! tracepoint record layouts from tracefs, the registers holding syscall arguments, and
//! whether the `bpf_rdonly_cast` kfunc is there.

use minify_trace_common::KernelConfig;

use crate::btf::{self, Btf};
use crate::tracefs::Format;
use crate::{TraceError, TraceOptions};

/// `FMODE_CREATED` (include/linux/fs.h): set in `file->f_mode` when an open created the file.
/// A `#define`, so not in BTF; it has been bit 20 since it was introduced in 4.19.
const FMODE_CREATED: u32 = 1 << 20;

/// What the programs need to call `bpf_rdonly_cast` (see `patch`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RdonlyCast {
    /// The kfunc's id in the kernel's BTF.
    pub(crate) func: u32,
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

/// The programs' `CONFIG`: kernel offsets from BTF plus the scheduler tracepoint layouts,
/// the cgroup subtree to trace (`cgroup_id` at depth `cgroup_level`) and the options that
/// change what the programs do.
pub(crate) fn kernel_config(
    btf: &Btf,
    (cgroup_id, cgroup_level): (u64, u32),
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
        cgroup_id,
        cgroup_level,
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
/// `reader::POLL_INTERVAL` without being woken.
fn wakeup_every(ring_bytes: u32) -> u32 {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as u32;
    wakeup_every_on(ring_bytes, cpus)
}

/// [`wakeup_every`] on a machine of `cpus` CPUs.
fn wakeup_every_on(ring_bytes: u32, cpus: u32) -> u32 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_ups_are_a_power_of_two_about_an_eighth_of_the_ring() {
        // 16 MiB on 2 CPUs: 2 MiB of batches, 1 MiB per CPU, 64 batches of 16 KiB.
        assert_eq!(wakeup_every_on(16 << 20, 2), 64);
        // Not a power of two in between: rounded down.
        assert_eq!(wakeup_every_on(16 << 20, 3), 32);
        // A small ring wakes the reader on every write; a huge one at most every 65536.
        assert_eq!(wakeup_every_on(4096, 1), 1);
        assert_eq!(wakeup_every_on(1 << 31, 1), 16384);
        assert_eq!(wakeup_every_on(u32::MAX, 0), 16384);
        for cpus in [1, 2, 7, 64, 512] {
            let mut last = 0;
            for shift in 12..32 {
                let w = wakeup_every_on(1 << shift, cpus);
                assert!(w.is_power_of_two() && (1..=65536).contains(&w));
                assert!(w >= last, "shrinks at 2^{shift} bytes on {cpus} CPUs");
                last = w;
            }
        }
    }

    /// The whole `CONFIG` from this machine's BTF and tracefs, checked against what is known
    /// independently of BTF: the x86_64 `pt_regs` layout is user ABI
    /// (arch/x86/include/uapi/asm/ptrace.h), `struct path` is two pointers.
    #[test]
    fn config_from_this_kernel() {
        let Ok(btf) = Btf::from_sys() else {
            minify_fixtures::skip(&format!("no readable {}", btf::VMLINUX));
            return;
        };
        if !crate::tracefs::is_mounted() {
            minify_fixtures::skip(&format!(
                "tracefs not mounted at {}",
                crate::tracefs::TRACEFS
            ));
            return;
        }
        let options = TraceOptions {
            live: true,
            ..TraceOptions::default()
        };
        let kfunc = RdonlyCast::find(&btf, options);
        let c = kernel_config(&btf, (12345, 3), options, kfunc).unwrap();
        assert_eq!((c.cgroup_id, c.cgroup_level), (12345, 3));
        assert_eq!((c.path_mnt, c.path_dentry), (0, 8));
        assert_eq!(c.fmode_created, 1 << 20);
        assert_eq!(c.no_batching, 1);
        assert!((c.wakeup_mask + 1).is_power_of_two());
        assert_eq!(c.rdonly_cast, u32::from(kfunc.is_some()));
        assert_eq!(c.fd_slot_btf_id, kfunc.map_or(0, |k| k.fd_slot));
        assert_eq!(c.file_f_path, btf.offset("file", "f_path").unwrap());
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(c.regs_nr, 120, "orig_ax");
            assert_eq!(c.regs_arg, [112, 104, 96, 56, 72, 64], "di si dx r10 r8 r9");
            assert_eq!(c.compat_mask, 2, "TS_COMPAT");
            assert!(c.compat_off > 0);
        }
        // Without the kfunc (forced), the programs are told so.
        let forced = TraceOptions {
            probe_reads_only: true,
            ..options
        };
        assert!(RdonlyCast::find(&btf, forced).is_none());
        let c = kernel_config(&btf, (1, 1), forced, None).unwrap();
        assert_eq!((c.rdonly_cast, c.fd_slot_btf_id), (0, 0));
    }
}
