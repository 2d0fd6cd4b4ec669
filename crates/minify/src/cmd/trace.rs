//! `minify trace [--root DIR] [--json|--events] [--follow] [--ring-bytes N] -- CMD...`: run
//! one command under the eBPF tracer (in a fresh cgroup, optionally chrooted into an image
//! rootfs) and print every path it touched. For debugging what `minify run` would keep, and
//! for tests.

use std::fmt::Write as _;

use minify_trace::{Recording, SpawnSpec, TraceCgroup, TraceOptions, Tracer};

use crate::cli::TraceArgs;

/// How long a command told to stop by a forwarded SIGTERM may take before it is killed.
const TERM_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

pub fn run(args: &TraceArgs) -> anyhow::Result<u8> {
    let mut spec = SpawnSpec::new(args.command.iter().cloned());
    if let Some(root) = &args.root {
        spec = spec.in_root(root);
    }
    // With --json our stdout is the document; the command's output must not interleave.
    spec.stdout_to_stderr = args.json;
    // Ctrl-C goes to the whole foreground process group: the command gets it and ends, and
    // we must live on to detach, report and remove the cgroup. A handler (rather than
    // SIG_IGN) is reset to the default by exec, so the command still sees a normal SIGINT.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (sigint, mut sigterm) = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        anyhow::Ok((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;

    let cgroup = TraceCgroup::create()?;
    let options = TraceOptions {
        ring_bytes: args.ring_bytes,
        live: args.follow,
        probe_reads_only: args.probe_reads_only,
        ..TraceOptions::default()
    };
    let tracer = Tracer::start(&cgroup, options)?;
    // --follow: the tracer's live stream, printed by a task of its own while the command
    // runs here; the stream ends when the tracer finishes.
    let printer = if args.follow {
        let mut events = tracer.subscribe();
        Some(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().build()?;
            rt.block_on(async {
                while let Some(e) = events.recv().await {
                    errln!("{e}");
                }
            });
            anyhow::Ok(())
        }))
    } else {
        None
    };
    // SIGTERM (a cancelled CI job) is for us alone, not our process group: pass it on to
    // the command and everything it started, then detach and clean up as usual.
    let (done, done_rx) = tokio::sync::oneshot::channel::<()>();
    let (status, terminated) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let term = rt.block_on(async {
                tokio::select! {
                    _ = sigterm.recv() => true,
                    _ = done_rx => false,
                }
            });
            if term {
                cgroup.terminate(TERM_GRACE);
            }
            term
        });
        let status = spec.run(&cgroup);
        let _ = done.send(());
        (status, watcher.join().unwrap_or(false))
    });
    let status = status?;
    let rec = tracer.finish_recording()?;
    if let Some(p) = printer {
        p.join()
            .map_err(|_| anyhow::anyhow!("the --follow printer panicked"))??;
    }
    drop(sigint);
    drop(cgroup);
    if terminated {
        report_loss(&rec);
        return Err(crate::with_code(
            anyhow::anyhow!(
                "terminated (SIGTERM); the command was stopped and the tracer and its cgroup removed"
            ),
            crate::exit::TERMINATED,
        ));
    }

    let code = status.code();
    if args.json {
        print_json(&rec, code)?;
    } else if args.events {
        print_events(&rec);
    } else {
        print_paths(&rec);
    }
    let paths = rec.trace.paths().len();
    errln!(
        "minify: traced {} events on {paths} paths from {} processes; command {}",
        rec.trace.events.len(),
        rec.processes.len(),
        match (code, std::os::unix::process::ExitStatusExt::signal(&status)) {
            (Some(c), _) => format!("exited with {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "ended".to_owned(),
        }
    );
    report_loss(&rec);
    Ok(0)
}

/// A trace that lost events is incomplete: say so where nobody can miss it.
fn report_loss(rec: &Recording) {
    let total = rec.trace.lost_total();
    if total == 0 {
        return;
    }
    let mut per = String::new();
    for (k, n) in &rec.trace.lost {
        let _ = write!(
            per,
            "{}{}: {n}",
            if per.is_empty() { "" } else { ", " },
            k.name()
        );
    }
    errln!(
        "minify: WARNING: {total} events LOST ({per}); this trace is INCOMPLETE. Raise --ring-bytes (now the ring was too small for the burst)."
    );
}

fn print_paths(rec: &Recording) {
    let mut out = String::new();
    for (path, s) in rec.trace.paths() {
        let kinds: Vec<&str> = s.kinds.iter().map(|k| k.name()).collect();
        let state = match (s.ok, s.failed) {
            (true, false) => "ok",
            (false, true) => "failed",
            _ => "ok+failed",
        };
        let _ = writeln!(out, "{:<10} {:<28} {path}", state, kinds.join(","));
    }
    out!("{out}");
}

fn print_events(rec: &Recording) {
    let mut out = String::new();
    for e in &rec.trace.events {
        let _ = writeln!(out, "{e}");
    }
    out!("{out}");
}

fn print_json(rec: &Recording, code: Option<i32>) -> anyhow::Result<()> {
    let doc = serde_json::json!({
        "exit_code": code,
        "events": rec.trace.events,
        "lost": rec.trace.lost,
        "lost_total": rec.trace.lost_total(),
        "processes": rec.processes,
        "records": rec.records,
        "unreachable": rec.unreachable,
    });
    outln!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}
