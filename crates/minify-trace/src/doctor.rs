//! Self-checks for `minify doctor`: what this kernel and this process allow, each with a
//! one-line fix. The attach-type table is measured, not assumed: each probe program in the
//! eBPF object is loaded (and attached where that is the part that fails) for real.

use aya::programs::{BtfTracePoint, FEntry, KProbe, Lsm, RawTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};
use minify_trace_common::KernelConfig;

use crate::error::{aya_error, chain_message};
use crate::tracer::EBPF_OBJECT;
use crate::{TraceError, btf, tracefs};

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    /// Not available, but the tracer does not need it.
    Unavailable,
    /// The tracer cannot work until this is fixed.
    Fail,
}

/// One line of the doctor's report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &str, status: Status, detail: impl Into<String>, fix: Option<&str>) -> Check {
        Check {
            name: name.into(),
            status,
            detail: detail.into(),
            fix: fix.map(Into::into),
        }
    }
}

/// Effective capability bits from `/proc/self/status`.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Privileges, BTF, tracefs, cgroup v2 (does not change anything).
pub fn check_environment() -> Vec<Check> {
    let mut out = Vec::new();
    let caps = effective_caps();
    let has = |bit: u32| caps & (1 << bit) != 0;
    // CAP_SYS_ADMIN 21, CAP_PERFMON 38, CAP_BPF 39.
    let root = nix::unistd::geteuid().is_root();
    let (bpf, perfmon, admin) = (has(39), has(38), has(21));
    let detail = format!(
        "euid {}{}; CAP_BPF {}, CAP_PERFMON {}, CAP_SYS_ADMIN {}",
        nix::unistd::geteuid(),
        if root { " (root)" } else { "" },
        yes(bpf),
        yes(perfmon),
        yes(admin)
    );
    out.push(if (bpf && perfmon) || admin {
        Check::new("privileges", Status::Ok, detail, None)
    } else {
        Check::new(
            "privileges",
            Status::Fail,
            detail,
            Some("run as root (sudo minify ...)"),
        )
    });

    let btf_path = std::path::Path::new(btf::VMLINUX);
    let kbtf = btf::Btf::from_sys();
    let layout = match &kbtf {
        Ok(b) => b.offset("dentry", "d_name.name").map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    out.push(match layout {
        Ok(_) => Check::new(
            "btf",
            Status::Ok,
            format!("{} parsed", btf_path.display()),
            None,
        ),
        Err(e) => Check::new(
            "btf",
            Status::Fail,
            e,
            Some("use a kernel with CONFIG_DEBUG_INFO_BTF=y"),
        ),
    });
    if let Ok(b) = &kbtf {
        // The same lookup the tracer makes.
        out.push(if crate::kernel_config::RdonlyCast::find(b, crate::TraceOptions::default()).is_some() {
            Check::new(
                "kfuncs",
                Status::Ok,
                "bpf_rdonly_cast: files are read with direct loads",
                None,
            )
        } else {
            Check::new(
                "kfuncs",
                Status::Unavailable,
                "no bpf_rdonly_cast (kernel before 6.2): files are read with probe reads, ~10% more time per event",
                None,
            )
        });
    }

    out.push(if tracefs::is_mounted() {
        Check::new(
            "tracefs",
            Status::Ok,
            format!("mounted at {}", tracefs::TRACEFS),
            None,
        )
    } else {
        Check::new(
            "tracefs",
            Status::Unavailable,
            format!(
                "not mounted at {} (minify trace mounts it when run as root)",
                tracefs::TRACEFS
            ),
            Some("mount -t tracefs tracefs /sys/kernel/tracing"),
        )
    });

    // The same lookup `TraceCgroup::create` makes.
    out.push(if minify_host::CgroupLayout::detect().v2.is_some() {
        Check::new("cgroup2", Status::Ok, "cgroup v2 hierarchy mounted", None)
    } else {
        Check::new(
            "cgroup2",
            Status::Fail,
            "no cgroup v2 hierarchy mounted",
            Some("mount -t cgroup2 none /sys/fs/cgroup/unified"),
        )
    });
    out
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Load each probe program of the eBPF object (and attach where attaching is the test) and
/// report which attach types work here. Needs privileges; without them every line says so.
pub fn check_attach_types() -> Vec<Check> {
    let mut out = Vec::new();
    if EBPF_OBJECT.is_empty() {
        out.push(Check::new(
            "ebpf-object",
            Status::Fail,
            "built with AYA_BUILD_SKIP=1: no eBPF object in this binary",
            Some("rebuild without AYA_BUILD_SKIP (needs nightly rust-src and bpf-linker)"),
        ));
        return out;
    }
    let mut ebpf = match EbpfLoader::new()
        .override_global("CONFIG", &KernelConfig::default(), true)
        .map_max_entries("EVENTS", 4096)
        .load(EBPF_OBJECT)
    {
        Ok(e) => e,
        Err(e) => {
            let err = aya_error("loading", "eBPF object", &e);
            out.push(Check::new(
                "ebpf-object",
                Status::Fail,
                err.to_string(),
                Some(fix_for(&err)),
            ));
            return out;
        }
    };
    let kbtf = aya::Btf::from_sys_fs().ok();
    let tracefs_ok = tracefs::is_mounted();
    out.push(probe(&mut ebpf, "tracepoint", "used by the tracer", |e| {
        let p: &mut TracePoint = e
            .program_mut("probe_tracepoint")
            .ok_or("missing")?
            .try_into()
            .map_err(str_err)?;
        p.load().map_err(str_err)?;
        if tracefs_ok {
            p.attach("syscalls", "sys_enter_getpid").map_err(str_err)?;
        }
        Ok(())
    }));
    out.push(probe(&mut ebpf, "raw_tracepoint", "", |e| {
        let p: &mut RawTracePoint = e
            .program_mut("probe_raw_tracepoint")
            .ok_or("missing")?
            .try_into()
            .map_err(str_err)?;
        p.load().map_err(str_err)?;
        p.attach("sched_process_exec").map_err(str_err)?;
        Ok(())
    }));
    let btf_ref = kbtf.as_ref();
    out.push(probe(&mut ebpf, "tp_btf", "", |e| {
        let btf = btf_ref.ok_or("no kernel BTF")?;
        let p: &mut BtfTracePoint = e
            .program_mut("probe_tp_btf")
            .ok_or("missing")?
            .try_into()
            .map_err(str_err)?;
        p.load("sched_process_exec", btf).map_err(str_err)?;
        p.attach().map_err(str_err)?;
        Ok(())
    }));
    out.push(probe(
        &mut ebpf,
        "fentry",
        "would allow the fentry + bpf_d_path backend (not implemented yet)",
        |e| {
            let btf = btf_ref.ok_or("no kernel BTF")?;
            let p: &mut FEntry = e
                .program_mut("probe_fentry")
                .ok_or("missing")?
                .try_into()
                .map_err(str_err)?;
            p.load("do_sys_openat2", btf).map_err(str_err)?;
            p.attach().map_err(str_err)?;
            Ok(())
        },
    ));
    out.push(probe(&mut ebpf, "lsm", "", |e| {
        let btf = btf_ref.ok_or("no kernel BTF")?;
        let p: &mut Lsm = e
            .program_mut("probe_lsm")
            .ok_or("missing")?
            .try_into()
            .map_err(str_err)?;
        p.load("file_open", btf).map_err(str_err)?;
        p.attach().map_err(str_err)?;
        Ok(())
    }));
    out.push(probe(&mut ebpf, "kprobe", "", |e| {
        let p: &mut KProbe = e
            .program_mut("probe_kprobe")
            .ok_or("missing")?
            .try_into()
            .map_err(str_err)?;
        p.load().map_err(str_err)?;
        p.attach("do_sys_openat2", 0).map_err(str_err)?;
        Ok(())
    }));
    out
}

fn str_err(e: impl std::error::Error) -> String {
    chain_message(&e)
}

fn probe(
    ebpf: &mut Ebpf,
    name: &str,
    note: &str,
    f: impl FnOnce(&mut Ebpf) -> Result<(), String>,
) -> Check {
    match f(ebpf) {
        Ok(()) => Check::new(
            name,
            Status::Ok,
            if note.is_empty() {
                "loads and attaches".to_owned()
            } else {
                format!("loads and attaches; {note}")
            },
            None,
        ),
        Err(e) => {
            // The tracer needs tracepoints (scheduler fork/exit) and tp_btf (sys_exit,
            // sched_process_exec).
            let required = matches!(name, "tracepoint" | "tp_btf");
            let fix = if name == "tracepoint" {
                Some("run as root on a kernel with CONFIG_FTRACE_SYSCALLS=y and tracefs mounted")
            } else if name == "tp_btf" {
                Some("run as root on a kernel with BTF (CONFIG_DEBUG_INFO_BTF=y), 5.17 or newer")
            } else if name == "kprobe" {
                Some("kernel built without CONFIG_KPROBES; not needed")
            } else if matches!(name, "fentry" | "lsm") {
                Some(
                    "BPF trampolines are blocked on this kernel/VM; not needed (tracepoints are used)",
                )
            } else {
                Some(
                    "not needed (BTF tracepoints are used); needs a kernel with BTF and CONFIG_BPF_EVENTS",
                )
            };
            Check::new(
                name,
                if required {
                    Status::Fail
                } else {
                    Status::Unavailable
                },
                e.lines().next().unwrap_or_default().to_owned(),
                fix,
            )
        }
    }
}

fn fix_for(e: &TraceError) -> &'static str {
    match e {
        TraceError::NotPermitted { .. } => "run as root (sudo minify ...)",
        _ => "see the error; rebuild on this kernel",
    }
}
