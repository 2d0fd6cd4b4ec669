//! `cargo xtask bench run`: `minify run` end to end on every fixture, side by side in one run.
//! Writes `bench/results/run.md`: per image the original and minified sizes, the factor, the
//! lower bound (bytes of the regular files the trace and the ELF closure require), the time of
//! each phase, and the tracing overhead (the probe phase on the original image traced vs
//! untraced, from the same `minify run` via its hidden `--measure-untraced`), and each image
//! minified again with `--granularity package`, side by side with `file` (issue 14's targets:
//! the size ratio, the extra closure time, and the packages that cost most).

use std::fmt::Write as _;
use std::process::{Command, Stdio};

use anyhow::Context as _;

use crate::util::{cargo, mb, run_status, step, workspace_root};

/// The fixture set and the probe each is minified with (the same as tests/e2e/run.rs).
const SET: &[(&str, &[&str])] = &[
    ("nginx", &["--probe-http", "/"]),
    ("python-http", &["--probe-http", "/"]),
    ("flask", &["--probe-http", "/"]),
    ("redis", &["--probe-exec", "redis-cli ping"]),
    ("node", &["--probe-http", "/"]),
    ("java", &["--probe-http", "/"]),
    // The data directory is the server's state, not code: which relation files a connection
    // reads depends on the query and on a cache file the first connection writes, so a trace
    // of one probe keeps an image that serves that one query once (the e2e test's own check
    // found it; tests/e2e/run.rs includes it the same way).
    (
        "postgres",
        &[
            "--probe-exec",
            POSTGRES_PROBE,
            "--include",
            "/var/lib/postgresql/data",
        ],
    ),
    ("php", &["--probe-http", "/"]),
    ("numpy", &["--probe-http", "/"]),
    ("static", &["--probe-http", "/"]),
];

/// The postgres fixture's probe: a table written and read back over TCP.
const POSTGRES_PROBE: &str = "psql -h 127.0.0.1 -v ON_ERROR_STOP=1 -c 'create table t(x int); insert into t values (1); select count(*) from t'";

const PHASES: [&str; 6] = ["open", "trace", "closure", "pack", "write", "verify"];

struct Row {
    name: String,
    report: serde_json::Value,
    /// The same image minified with `--granularity package` (when that run wrote a report).
    package: Option<serde_json::Value>,
}

pub fn run() -> anyhow::Result<()> {
    let root = workspace_root();
    step("building minify (release)");
    run_status(Command::new(cargo()).current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "minify",
    ]))?;
    let bin = crate::util::target_dir().join("release/minify");
    let dir = std::env::temp_dir().join(format!("minify-bench-run-{}", std::process::id()));
    fs_err::create_dir_all(&dir)?;
    let result = measure_all(&bin, &dir);
    let _ = fs_err::remove_dir_all(&dir);
    let (rows, failures) = result?;
    super::write_results("run", &markdown(&rows, &failures))?;
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{} of {} images failed: {}",
            failures.len(),
            SET.len(),
            failures.join("; ")
        )
    }
}

fn measure_all(
    bin: &std::path::Path,
    dir: &std::path::Path,
) -> anyhow::Result<(Vec<Row>, Vec<String>)> {
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (name, probe) in SET {
        step(&format!("minify run {name}"));
        let image = minify_fixtures::fixture(name)?;
        let out = format!("minify-bench/{name}:min");
        let report_path = dir.join(format!("{name}.json"));
        let (o, report) = minify_run(bin, &image, probe, &out, &report_path, "file")?;
        let stderr = String::from_utf8_lossy(&o.stderr);
        eprint!("{stderr}");
        let verify = first_verify_failure(report.as_ref());
        // Exit 1 (verify failed) still writes a report worth showing.
        if let Some(report) = report {
            rows.push(Row {
                name: (*name).to_owned(),
                report,
                package: None,
            });
        }
        if !o.status.success() {
            failures.push(failure(name, "file", &o, &stderr, verify));
        }
        step(&format!("minify run {name} --granularity package"));
        let package_path = dir.join(format!("{name}.package.json"));
        let (o, package) = minify_run(bin, &image, probe, &out, &package_path, "package")?;
        let stderr = String::from_utf8_lossy(&o.stderr);
        eprint!("{stderr}");
        if !o.status.success() {
            let verify = first_verify_failure(package.as_ref());
            failures.push(failure(name, "package", &o, &stderr, verify));
        }
        if let Some(row) = rows.last_mut().filter(|r| r.name == *name) {
            row.package = package;
        }
        let _ = Command::new("docker")
            .args(["image", "rm", &out])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    Ok((rows, failures))
}

/// One `minify run` with `granularity`; the file run also measures the untraced probe phase.
fn minify_run(
    bin: &std::path::Path,
    image: &str,
    probe: &[&str],
    out: &str,
    report_path: &std::path::Path,
    granularity: &str,
) -> anyhow::Result<(std::process::Output, Option<serde_json::Value>)> {
    let mut cmd = Command::new(bin);
    cmd.arg("run").arg(image).args(probe).args([
        "--tag",
        out,
        "--force",
        "--granularity",
        granularity,
    ]);
    if granularity == "file" {
        cmd.arg("--measure-untraced");
    }
    let o = cmd
        .arg("--report")
        .arg(report_path)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let report = if report_path.exists() {
        let text = fs_err::read_to_string(report_path)?;
        Some(
            serde_json::from_str(&text)
                .with_context(|| format!("report {}", report_path.display()))?,
        )
    } else {
        None
    };
    Ok((o, report))
}

/// The first line of a report's first verification failure.
fn first_verify_failure(report: Option<&serde_json::Value>) -> Option<String> {
    report
        .and_then(|r| r["verify_failures"][0].as_str())
        .and_then(|f| f.lines().next())
        .map(str::to_owned)
}

/// The error line, or for a failed verification the first failure it names.
fn failure(
    name: &str,
    granularity: &str,
    o: &std::process::Output,
    stderr: &str,
    verify: Option<String>,
) -> String {
    let why = stderr
        .lines()
        .find(|l| l.starts_with("minify: error"))
        .map(str::to_owned)
        .or(verify)
        .unwrap_or_default();
    format!("{name} ({granularity}): {}: {why}", o.status)
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn phase_ms(r: &serde_json::Value, phase: &str) -> Option<u64> {
    r["timings_ms"]
        .as_array()?
        .iter()
        .find(|p| p[0] == phase)
        .map(|p| u(&p[1]))
}

fn secs(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |ms| format!("{:.2}", ms as f64 / 1000.0))
}

fn markdown(rows: &[Row], failures: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# `minify run` on the fixtures\n");
    let _ = writeln!(
        s,
        "Written by `cargo xtask bench run` (release build, one run per image, measured side by side).\n\
         Machine: {}.\n",
        machine()
    );
    let _ = writeln!(s, "## Size\n");
    let _ = writeln!(
        s,
        "Sizes are what the Docker daemon reports (uncompressed layers). *Lower bound*: bytes of the regular files the trace, the ELF closure and `#!` interpreters require; *kept*: bytes of all kept regular files (adds default sets, includes). Verify re-runs every probe on the minified image.\n"
    );
    let _ = writeln!(
        s,
        "| image | original | minified | factor | lower bound | kept files | files | events (lost) | verify |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for row in rows {
        let r = &row.report;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1}x | {} | {} | {} -> {} | {} ({}) | {} |",
            row.name,
            mb(u(&r["size_before"])),
            mb(u(&r["size_after"])),
            r["factor"].as_f64().unwrap_or(0.0),
            mb(u(&r["required_bytes"])),
            mb(u(&r["kept_bytes"])),
            u(&r["files_before"]),
            u(&r["files_after"]),
            u(&r["events"]),
            u(&r["events_lost_total"]),
            r["verify"].as_str().unwrap_or("-"),
        );
    }
    let _ = writeln!(s, "\n## Time per phase (seconds)\n");
    let _ = writeln!(
        s,
        "*open*: export and index the image; *trace*: cgroup + tracer, container start, readiness, probes, stop, drain; *closure*: kept set + allowlist; *pack*: new layer; *write*: load into the daemon; *verify*: run the minified image and its probes.\n"
    );
    let _ = writeln!(s, "| image | {} | total |", PHASES.join(" | "));
    let _ = writeln!(s, "|---|{}---:|", "---:|".repeat(PHASES.len()));
    for row in rows {
        let r = &row.report;
        let cells: Vec<String> = PHASES.iter().map(|p| secs(phase_ms(r, p))).collect();
        let total: u64 = PHASES.iter().filter_map(|p| phase_ms(r, p)).sum();
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            row.name,
            cells.join(" | "),
            secs(Some(total))
        );
    }
    let _ = writeln!(s, "\n## Tracing overhead\n");
    let _ = writeln!(
        s,
        "Wall time of the probe phase on the *original* image (container start, wait for the ports, every probe), untraced (a warm-up run, then the median of three) and then traced, in the same `minify run`, so both start from warm caches. The traced time includes the eBPF programs handling every syscall of container start-up (runc, the entrypoint), not only the probes.\n"
    );
    let _ = writeln!(
        s,
        "| image | traced (s) | untraced (s) | traced / untraced |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|");
    for row in rows {
        let r = &row.report;
        let traced = u(&r["probe_phase_ms"]);
        let untraced = r["untraced_probe_phase_ms"].as_u64();
        let ratio = untraced.filter(|u| *u > 0).map_or_else(
            || "-".to_owned(),
            |u| format!("{:.2}", traced as f64 / u as f64),
        );
        let _ = writeln!(
            s,
            "| {} | {} | {} | {ratio} |",
            row.name,
            secs(Some(traced)),
            secs(untraced)
        );
    }
    granularity_table(&mut s, rows);
    let _ = writeln!(s, "\n## Notes\n");
    let _ = writeln!(
        s,
        "- The traced probe phase is one sample: differences of a few hundred milliseconds are container start-up noise, not tracing cost (see `bench/results/trace.md` for the tracer's own overhead under load).\n\
         - *trace* and *verify* include stopping the container with the image's stop signal; a process that ignores it (Python as PID 1 ignores SIGTERM) is killed after `--stop-timeout` (10 s)."
    );
    for row in rows {
        let r = &row.report;
        let before = u(&r["size_before"]) as f64;
        let bound = u(&r["required_bytes"]) as f64;
        if before > 0.0 && bound > 0.2 * before {
            let _ = writeln!(
                s,
                "- {}: the files the workload needs are already {:.0}% of the original ({} of {}), so no minifier can reach 20% on this image.",
                row.name,
                100.0 * bound / before,
                mb(bound as u64),
                mb(before as u64)
            );
        }
    }
    if !failures.is_empty() {
        let _ = writeln!(s, "\n## Failures\n");
        for f in failures {
            let _ = writeln!(s, "- {f}");
        }
    }
    s
}

/// `file` and `package` side by side: sizes, the ratio (issue 14's target: at most 1.5x), the
/// closure phase of each (target: under 1 s more on the largest image), and the packages the
/// rule added most bytes for.
fn granularity_table(s: &mut String, rows: &[Row]) {
    let _ = writeln!(s, "\n## Granularity: `file` and `package`\n");
    let _ = writeln!(
        s,
        "The same image and probe minified twice in this run. *closure*: the closure phase of each run; *added by the rule*: the bytes `--granularity package` kept beyond `file`'s closure, by package (the three largest). The target is a package image at most 1.5x the file image; where it is more, the last column says which packages cost it.\n"
    );
    let _ = writeln!(
        s,
        "| image | file | package | package / file | closure file (s) | closure package (s) | packages kept whole | added by the rule (largest) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---|");
    for row in rows {
        let Some(p) = &row.package else {
            let _ = writeln!(
                s,
                "| {} | {} | - | - | - | - | - | (no report) |",
                row.name,
                mb(u(&row.report["size_after"]))
            );
            continue;
        };
        let file = u(&row.report["size_after"]);
        let package = u(&p["size_after"]);
        let mut pkgs: Vec<&serde_json::Value> = p["packages"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        pkgs.sort_by_key(|x| std::cmp::Reverse(u(&x["added_bytes"])));
        let largest: Vec<String> = pkgs
            .iter()
            .filter(|x| u(&x["added_bytes"]) > 0)
            .take(3)
            .map(|x| {
                format!(
                    "{} ({}) +{}",
                    x["name"].as_str().unwrap_or("?"),
                    x["kind"].as_str().unwrap_or("?"),
                    mb(u(&x["added_bytes"]))
                )
            })
            .collect();
        let ratio = if file > 0 {
            format!("{:.2}x", package as f64 / file as f64)
        } else {
            "-".to_owned()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {ratio} | {} | {} | {} | {} |",
            row.name,
            mb(file),
            mb(package),
            secs(phase_ms(&row.report, "closure")),
            secs(phase_ms(p, "closure")),
            pkgs.len(),
            if largest.is_empty() {
                "-".to_owned()
            } else {
                largest.join(", ")
            },
        );
    }
}

fn machine() -> String {
    let kernel = crate::util::output_of("uname", &["-r"]).unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let docker = crate::util::output_of("docker", &["version", "--format", "{{.Server.Version}}"])
        .unwrap_or_default();
    format!(
        "kernel {}, {cpus} CPUs, Docker {}",
        kernel.trim(),
        docker.trim()
    )
}
