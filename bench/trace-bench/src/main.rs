//! `cargo xtask bench trace` (this binary, `minify-bench-trace`): what the eBPF tracer costs and whether it keeps up, measured side
//! by side in one run on this machine (root, real kernel), written to `bench/results/trace.md`.
//!
//! - Overhead: wall time of a workload traced / untraced, alternating runs, medians. Two
//!   workloads: Python importing a few dozen stdlib modules (many stats and opens), and a
//!   stat storm (`du` over a tree of 50,000 files: a relative `newfstatat` per file, each
//!   with its directory's path rebuilt in eBPF). Target: at most 1.2x.
//! - Loss: two workers at once, about a million file operations in total (`find -printf %s`
//!   passes over the same tree), at the default ring size. Target: 0 lost.
//!
//! - Time in the syscall program per event, from the kernel's BPF run-time statistics
//!   (`BPF_ENABLE_STATS`) during extra traced runs: far less disturbed by the VM's drift
//!   than wall time, and what the eBPF side's work costs.
//!
//! The untraced runs go through the same spawn path (fork, move into a cgroup, exec) so the
//! ratio is the tracer's cost alone; attach/detach time is reported separately.
//!
//! A binary of its own rather than a module of xtask: it links the tracer, whose build needs
//! the eBPF toolchain, and xtask must build on a fresh machine before `cargo xtask setup` has
//! installed that toolchain (issue 11). xtask runs it with `cargo run -p minify-bench-trace`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use minify_trace::{SpawnSpec, TraceCgroup, TraceOptions, Tracer};

const TREE: &str = "/var/tmp/minify-bench-tree";
const DIRS: usize = 200;
const FILES_PER_DIR: usize = 250;
const RUNS: usize = 21;
const FIND_PASSES: usize = 10;

const PY_IMPORTS: &str = "import json, email.mime.multipart, http.client, xml.etree.ElementTree, \
    unittest, argparse, asyncio, decimal, logging, subprocess, sqlite3, csv, zipfile, tarfile, \
    urllib.request, html.parser, ssl, pathlib, dataclasses, typing, statistics, fractions, \
    configparser, shutil, tempfile, uuid, hashlib, base64, pickle, pprint";

/// A tree of `DIRS * FILES_PER_DIR` small files, made once.
fn ensure_tree() -> anyhow::Result<PathBuf> {
    let root = PathBuf::from(TREE);
    let done = root.join(".complete");
    if done.exists() {
        return Ok(root);
    }
    eprintln!("    making {TREE} ({} files, once)", DIRS * FILES_PER_DIR);
    let _ = fs_err::remove_dir_all(&root);
    for d in 0..DIRS {
        let dir = root.join(format!("d{d:03}"));
        fs_err::create_dir_all(&dir)?;
        for f in 0..FILES_PER_DIR {
            fs_err::write(dir.join(format!("f{f:03}.txt")), b"x")?;
        }
    }
    fs_err::write(&done, b"")?;
    Ok(root)
}

struct Measured {
    wall: Duration,
    /// User + system CPU time of the workload (all its processes): what the tracer adds in
    /// the workload's own context, much less disturbed by other load than wall time.
    cpu: Duration,
    events: usize,
    lost: u64,
    attach: Duration,
    /// From `Tracer::finish` until the last tracepoint is detached (0 untraced).
    detach: Duration,
    /// Tracepoints attached (0 untraced).
    hooks: usize,
}

/// Run `argv` once in a fresh cgroup, traced or not.
fn once(argv: &[&str], tracer: Option<TraceOptions>) -> anyhow::Result<Measured> {
    let with_tracer = tracer.is_some();
    let cgroup = TraceCgroup::create()?;
    let t0 = Instant::now();
    let tracer = match tracer {
        Some(options) => Some(Tracer::start(&cgroup, options)?),
        None => None,
    };
    let attach = t0.elapsed();
    let spec = SpawnSpec::new(argv.iter().copied());
    let cpu0 = children_cpu();
    let t1 = Instant::now();
    let status = spec.run(&cgroup)?;
    let wall = t1.elapsed();
    let cpu = children_cpu().saturating_sub(cpu0);
    anyhow::ensure!(status.success(), "{argv:?} failed: {status}");
    let t2 = Instant::now();
    let (events, lost, hooks) = match tracer {
        Some(t) => {
            let hooks = t.attached().len();
            let trace = t.finish()?;
            (trace.events.len(), trace.lost_total(), hooks)
        }
        None => (0, 0, 0),
    };
    // The next run must not overlap the kernel unregistering this one's tracepoints.
    drop(cgroup);
    minify_trace::wait_for_detach(Duration::from_secs(30));
    let detach = if with_tracer {
        t2.elapsed()
    } else {
        Duration::ZERO
    };
    Ok(Measured {
        wall,
        cpu,
        events,
        lost,
        attach,
        detach,
        hooks,
    })
}

/// CPU time of all reaped children so far.
#[allow(unsafe_code)]
fn children_cpu() -> Duration {
    // SAFETY: an all-zero rusage is valid; getrusage fills the struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &raw mut ru) } != 0 {
        return Duration::ZERO;
    }
    let t = |tv: libc::timeval| {
        Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64)
    };
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Row {
    name: String,
    untraced: Duration,
    traced: Duration,
    /// Median of traced / untraced over each pair of neighbouring runs.
    paired: f64,
    /// First and third quartiles of those ratios: how far single pairs spread.
    quartiles: (f64, f64),
    /// Whether the second run of each pair was traced (false: the A/A noise row).
    traced_side: bool,
    untraced_cpu: Duration,
    traced_cpu: Duration,
    events: usize,
    lost: u64,
}

/// Alternate untraced and traced runs (after one warm-up of each). With `options` `None`
/// both runs of each pair are untraced: the measurement's own noise (an A/A comparison).
fn overhead(
    name: &str,
    argv: &[&str],
    options: Option<TraceOptions>,
) -> anyhow::Result<(Row, AttachCost)> {
    once(argv, None)?;
    once(argv, options)?;
    let (mut u, mut t, mut attach, mut detach) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut hooks = 0;
    let (mut ucpu, mut tcpu) = (Vec::new(), Vec::new());
    let (mut events, mut lost) = (0, 0);
    for _ in 0..RUNS {
        let m = once(argv, None)?;
        u.push(m.wall);
        ucpu.push(m.cpu);
        let m = once(argv, options)?;
        t.push(m.wall);
        tcpu.push(m.cpu);
        attach.push(m.attach);
        detach.push(m.detach);
        hooks = m.hooks;
        events = m.events;
        lost += m.lost;
    }
    let row = Row {
        name: name.into(),
        untraced_cpu: median(ucpu),
        traced_cpu: median(tcpu),
        paired: paired_ratio(&u, &t),
        quartiles: paired_quartiles(&u, &t),
        traced_side: options.is_some(),
        untraced: median(u),
        traced: median(t),
        events,
        lost,
    };
    eprintln!(
        "    {name}: untraced {:?}, traced {:?} ({:.2}x wall, {:.2}x cpu), {events} events",
        row.untraced,
        row.traced,
        ratio(&row),
        cpu_ratio(&row)
    );
    let a = AttachCost {
        attach: median(attach),
        detach: median(detach),
        hooks,
    };
    Ok((row, a))
}

/// Medians of the tracer's set-up and tear-down.
struct AttachCost {
    attach: Duration,
    detach: Duration,
    hooks: usize,
}

/// Runs for the program-time measurement (per mode).
const STATS_RUNS: usize = 7;

/// Time spent in the `sys_exit` program (all of its runs, on every CPU, while `argv` runs
/// traced) per event recorded: the median over `STATS_RUNS` runs, in ns. The kernel keeps
/// run-time statistics while the `BPF_ENABLE_STATS` fd is open.
fn program_ns_per_event(argv: &[&str], options: TraceOptions) -> anyhow::Result<f64> {
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("enabling BPF run-time statistics")?;
    let sys_exit_time = || {
        aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .filter(|p| p.name_as_str() == Some("sys_exit"))
            .map(|p| p.run_time())
            .sum::<Duration>()
    };
    let mut per_event = Vec::new();
    for _ in 0..STATS_RUNS {
        let cgroup = TraceCgroup::create()?;
        let tracer = Tracer::start(&cgroup, options)?;
        let before = sys_exit_time();
        let status = SpawnSpec::new(argv.iter().copied()).run(&cgroup)?;
        let spent = sys_exit_time().saturating_sub(before);
        anyhow::ensure!(status.success(), "{argv:?} failed: {status}");
        let events = tracer.finish()?.events.len().max(1);
        drop(cgroup);
        minify_trace::wait_for_detach(Duration::from_secs(30));
        per_event.push(spent.as_nanos() as f64 / events as f64);
    }
    per_event.sort_by(f64::total_cmp);
    Ok(per_event[per_event.len() / 2])
}

/// `MINIFY_BENCH_STAT_ONLY=1 cargo xtask bench trace`: the stat storm's overhead and program
/// time alone, printed and not written (a quick check of a change to the eBPF side; the
/// results file always comes from a whole run).
fn stat_storm_only(tree: &str, options: TraceOptions) -> anyhow::Result<()> {
    let du_cmd = format!("du -s {tree} >/dev/null");
    let du_argv = ["sh", "-c", du_cmd.as_str()];
    let (du, _) = overhead("stat storm: du over 50,000 files", &du_argv, Some(options))?;
    let ns = program_ns_per_event(&du_argv, options)?;
    eprintln!(
        "    paired median {:.2}x, sys_exit program {ns:.0} ns per event (not written: \
         MINIFY_BENCH_STAT_ONLY)",
        du.paired
    );
    Ok(())
}

/// The median of `t[i] / u[i]`: each traced run against the untraced run just before it.
/// This VM's speed drifts over seconds (the same untraced `du` takes 89-144 ms from one run
/// to the next); neighbouring runs share the drift, so their ratio carries less of it than
/// the ratio of two medians does.
fn paired_ratio(u: &[Duration], t: &[Duration]) -> f64 {
    let r = pair_ratios(u, t);
    r.get(r.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The ratios `t[i] / u[i]`, sorted.
fn pair_ratios(u: &[Duration], t: &[Duration]) -> Vec<f64> {
    let mut r: Vec<f64> = u
        .iter()
        .zip(t)
        .map(|(u, t)| t.as_secs_f64() / u.as_secs_f64())
        .collect();
    r.sort_by(f64::total_cmp);
    r
}

/// First and third quartiles of the paired ratios.
fn paired_quartiles(u: &[Duration], t: &[Duration]) -> (f64, f64) {
    let r = pair_ratios(u, t);
    let at = |q: usize| r.get(r.len() * q / 4).copied().unwrap_or(f64::NAN);
    (at(1), at(3))
}

fn ratio(r: &Row) -> f64 {
    r.traced.as_secs_f64() / r.untraced.as_secs_f64()
}

fn cpu_ratio(r: &Row) -> f64 {
    r.traced_cpu.as_secs_f64() / r.untraced_cpu.as_secs_f64().max(1e-9)
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("minify-bench-trace: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "the trace benchmark needs root (eBPF)"
    );
    let tree = ensure_tree()?;
    let tree_s = tree.to_str().context("tree path")?;
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };

    let mut rows = Vec::new();
    let default = TraceOptions::default();
    if std::env::var_os("MINIFY_BENCH_STAT_ONLY").is_some() {
        return stat_storm_only(tree_s, default);
    }
    let (py, attach) = overhead(
        "python: import 30 stdlib modules",
        &[python, "-I", "-c", PY_IMPORTS],
        Some(default),
    )?;
    rows.push(py);
    let du_cmd = format!("du -s {tree_s} >/dev/null");
    let du_argv = ["sh", "-c", du_cmd.as_str()];
    let (du, _) = overhead("stat storm: du over 50,000 files", &du_argv, Some(default))?;
    rows.push(du);
    let (aa, _) = overhead(
        "stat storm, untraced against untraced (the measurement's own noise)",
        &du_argv,
        None,
    )?;
    rows.push(aa);
    // What kernels before 6.2 (no `bpf_rdonly_cast`) run: files read with probe reads.
    let probe_reads = TraceOptions {
        probe_reads_only: true,
        ..default
    };
    let (du, _) = overhead(
        "stat storm, files read with probe reads (as on kernels before 6.2)",
        &du_argv,
        Some(probe_reads),
    )?;
    rows.push(du);
    let ns_direct = program_ns_per_event(&du_argv, default)?;
    let ns_probe = program_ns_per_event(&du_argv, probe_reads)?;
    eprintln!(
        "    sys_exit program per stat-storm event: {ns_direct:.0} ns (direct loads), \
         {ns_probe:.0} ns (probe reads)"
    );

    // Loss: two workers at once, ~1M file operations at the default ring size.
    let script = format!(
        "w() {{ i=0; while [ $i -lt {FIND_PASSES} ]; do find {tree_s} -printf '%s\\n' >/dev/null; i=$((i+1)); done; }}; w & w & wait"
    );
    let loss_argv = ["sh", "-c", script.as_str()];
    let untraced = once(&loss_argv, None)?;
    let traced = once(&loss_argv, Some(default))?;
    let ops = 2 * FIND_PASSES * (DIRS * FILES_PER_DIR + DIRS + 1);
    eprintln!(
        "    loss: {} events from ~{ops} file ops by 2 workers in {:?} (untraced {:?}), {} lost",
        traced.events, traced.wall, untraced.wall, traced.lost
    );

    let mut md = String::new();
    let _ = writeln!(md, "# Trace benchmark (`cargo xtask bench trace`)\n");
    let _ = writeln!(
        md,
        "Machine: {} cores, kernel {}. Backend: one BTF tracepoint on raw `sys_exit` plus the \
         scheduler's exec/fork/exit, paths rebuilt in eBPF, events sent in per-CPU batches. \
         {RUNS} alternating untraced/traced runs after one warm-up each; the untraced runs take \
         the same fork/cgroup/exec path. Default ring buffer ({} MiB).\n",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        minify_trace::DEFAULT_RING_BYTES >> 20
    );
    let _ = writeln!(md, "## Overhead (target: traced / untraced <= 1.2x)\n");
    let _ = writeln!(
        md,
        "The headline ratio is the median of the {RUNS} ratios of each traced run to the untraced \
         run just before it: this VM's speed drifts over seconds (the same untraced `du` takes \
         89-144 ms from one run to the next), and neighbouring runs share the drift. The ratio \
         of the two medians is shown too, and the quartiles of the pairs' ratios. The A/A row \
         runs the stat storm untraced on both sides of every pair: how far this machine's \
         noise alone moves the ratio.\n\n\
         | workload | untraced (median) | traced (median) | wall ratio (median of pairs) | pairs' quartiles | wall ratio (of medians) | CPU ratio (medians) | events | lost |\n|---|---|---|---|---|---|---|---|---|"
    );
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {:.1} ms | {:.1} ms | **{:.2}x** {} | {:.2}-{:.2}x | {:.2}x | {:.2}x ({:.0} -> {:.0} ms) | {} | {} |",
            r.name,
            r.untraced.as_secs_f64() * 1e3,
            r.traced.as_secs_f64() * 1e3,
            r.paired,
            match (r.traced_side, r.paired <= 1.2) {
                (false, _) => "(noise only)",
                (true, true) => "(ok)",
                (true, false) => "(over target)",
            },
            r.quartiles.0,
            r.quartiles.1,
            ratio(r),
            cpu_ratio(r),
            r.untraced_cpu.as_secs_f64() * 1e3,
            r.traced_cpu.as_secs_f64() * 1e3,
            r.events,
            r.lost
        );
    }
    let _ = writeln!(
        md,
        "\nTime in the `sys_exit` program per stat-storm event (kernel BPF run-time statistics, \
         all its runs while `du` runs / events recorded, median of {STATS_RUNS} runs): \
         **{ns_direct:.0} ns** with the file pointer read by direct loads (`bpf_rdonly_cast`), \
         {ns_probe:.0} ns with probe reads (kernels before 6.2)."
    );
    let _ = writeln!(
        md,
        "\nAttach (load, BTF offsets, {} hooks): {:.0} ms median. Detach (from \
         `Tracer::finish` until every link is closed; each waits for an RCU grace period, \
         `Tracer::finish` does it in the background once the traced cgroup is empty): {:.2} s \
         median.\n",
        attach.hooks,
        attach.attach.as_secs_f64() * 1e3,
        attach.detach.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "Load average when the run ended: {} (other work on the machine makes single runs \
         noisy).\n",
        fs_err::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = writeln!(md, "## Loss (target: 0 at the default ring size)\n");
    let _ = writeln!(
        md,
        "| workload | file ops | events recorded | lost | traced wall | untraced wall |\n|---|---|---|---|---|---|\n\
         | 2 workers x {FIND_PASSES} passes of `find -printf %s` over 50,000 files | ~{ops} | {} | **{}** {} | {:.2} s | {:.2} s |",
        traced.events,
        traced.lost,
        if traced.lost == 0 {
            "(ok)"
        } else {
            "(over target)"
        },
        traced.wall.as_secs_f64(),
        untraced.wall.as_secs_f64()
    );
    write_results(&md)
}

/// Writes the report to `bench/results/trace.md` in this workspace and says where.
fn write_results(markdown: &str) -> anyhow::Result<()> {
    // `cargo run` sets CARGO_MANIFEST_DIR at run time: prefer it, as xtask does, so a binary
    // built from another checkout that shares the target dir writes into this one.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        std::path::PathBuf::from,
    );
    let dir = manifest.join("../results");
    fs_err::create_dir_all(&dir)?;
    let path = dir.join("trace.md");
    fs_err::write(&path, markdown)?;
    eprintln!("    wrote {}", path.display());
    Ok(())
}
