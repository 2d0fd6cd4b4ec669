//! The minify tracer's eBPF programs: a BTF tracepoint on `sys_exit` (every syscall) and the
//! scheduler's exec/fork/exit, recording the paths a workload looks up, opens, lists, creates
//! and removes, filtered to one cgroup v2 subtree.
//!
//! Rust eBPF has no CO-RE, so nothing about kernel struct layout is compiled in: the loader
//! reads every offset from the running kernel's BTF and tracefs and hands them over in the
//! frozen global [`CONFIG`](maps::CONFIG) and the [`SYS_CFG`](maps::SYS_CFG) map (see `minify-trace-common` for the wire
//! format). Paths of files are rebuilt here like the kernel's `d_path` does, walking
//! `dentry->d_parent` and `mount->mnt_parent`/`mnt_mountpoint` up to the task's root, inside a
//! `bpf_loop` callback with its state in a per-CPU map: an unrolled or bounded loop of that
//! size exceeds the verifier's 1M-instruction budget, and the stack is too small for the state.
#![no_std]
#![no_main]
#![allow(unsafe_code, static_mut_refs)]

mod batch;
mod maps;
mod probes;
mod programs;
mod task;
mod walk;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
