//! Loading the programs into the kernel and attaching them to their hooks, and detaching
//! them again: each detach waits for an RCU grace period (~70 ms), so they run in parallel,
//! and in the background when nothing can produce events any more.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aya::Ebpf;
use aya::programs::tp_btf::BtfTracePointLink;
use aya::programs::trace_point::TracePointLink;
use aya::programs::{BtfTracePoint, TracePoint};

use crate::TraceError;
use crate::btf;
use crate::error::{aya_error, chain_message};

/// Attach the tracer's programs, pushing each link and its hook's name (`category/name`) as
/// it is made, so that what is already attached is detached if a later one fails. Scheduler
/// events come first so that the process tree is complete.
pub(crate) fn attach_programs(
    ebpf: &mut Ebpf,
    links: &mut Vec<Link>,
    attached: &mut Vec<String>,
) -> Result<(), TraceError> {
    for (prog, name) in [
        ("sched_fork", "sched_process_fork"),
        ("sched_exit", "sched_process_exit"),
    ] {
        let tp = tracepoint(ebpf, prog)?;
        links.push(Link::Tracepoint(attach(tp, prog, "sched", name)?));
        attached.push(format!("sched/{name}"));
    }
    let aya_btf = aya::Btf::from_sys_fs().map_err(|e| TraceError::Btf {
        path: btf::VMLINUX.into(),
        detail: chain_message(&e),
    })?;
    for (prog, name) in [
        ("sched_exec", "sched_process_exec"),
        ("sys_exit", "sys_exit"),
    ] {
        links.push(attach_tp_btf(ebpf, &aya_btf, prog, name)?);
        attached.push(format!("tp_btf/{name}"));
    }
    Ok(())
}

/// The program `name` of the object, as its program type `T`.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, TraceError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or_else(|| TraceError::Load {
        program: name.into(),
        detail: "not in the eBPF object".into(),
        verifier_log: String::new(),
    })?;
    prog.try_into()
        .map_err(|e: aya::programs::ProgramError| aya_error("loading", name, &e))
}

fn tracepoint<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut TracePoint, TraceError> {
    let tp: &mut TracePoint = program(ebpf, name)?;
    tp.load().map_err(|e| aya_error("loading", name, &e))?;
    Ok(tp)
}

fn attach(
    tp: &mut TracePoint,
    program: &str,
    category: &str,
    name: &str,
) -> Result<TracePointLink, TraceError> {
    let id = tp
        .attach(category, name)
        .map_err(|e| attach_error(program, &format!("{category}/{name}"), &e))?;
    tp.take_link(id)
        .map_err(|e| aya_error("attaching", program, &e))
}

/// An attach that failed: the hook named, unless it was a matter of rights.
fn attach_error(program: &str, hook: &str, e: &(dyn std::error::Error + 'static)) -> TraceError {
    match aya_error("attaching", program, e) {
        TraceError::Load { detail, .. } => TraceError::Attach {
            program: program.into(),
            hook: hook.into(),
            detail,
        },
        other => other,
    }
}

/// An attached program; dropping it detaches.
pub(crate) enum Link {
    /// The scheduler tracepoints.
    Tracepoint(#[allow(dead_code)] TracePointLink),
    /// `sys_exit`, `sched_process_exec`.
    TpBtf(#[allow(dead_code)] BtfTracePointLink),
}

/// Load the BTF tracepoint program `prog` for the raw tracepoint `name` and attach it.
fn attach_tp_btf(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    prog: &str,
    name: &str,
) -> Result<Link, TraceError> {
    let tp: &mut BtfTracePoint = program(ebpf, prog)?;
    tp.load(name, btf)
        .map_err(|e| aya_error("loading", prog, &e))?;
    let id = tp
        .attach()
        .map_err(|e| attach_error(prog, &format!("tp_btf/{name}"), &e))?;
    let link = tp
        .take_link(id)
        .map_err(|e| aya_error("attaching", prog, &e))?;
    Ok(Link::TpBtf(link))
}

/// Background detaches still running (see [`detach`]).
static PENDING_DETACH: AtomicUsize = AtomicUsize::new(0);

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
pub(crate) fn detach_all(links: Vec<Link>) {
    const THREADS: usize = 16;
    if links.is_empty() {
        return;
    }
    let per = links.len().div_ceil(THREADS);
    let mut links = links;
    std::thread::scope(|s| {
        while !links.is_empty() {
            let chunk: Vec<Link> = links.drain(..per.min(links.len())).collect();
            s.spawn(move || drop(chunk));
        }
    });
}

/// Detach `links` and unload `ebpf`: at once, or, with `background`, on a thread of its
/// own that [`wait_for_detach`] waits for.
pub(crate) fn detach(links: Vec<Link>, ebpf: Option<Ebpf>, background: bool) {
    if background {
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
}
