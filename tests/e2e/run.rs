//! `minify run` end to end: real fixture images, the real Docker engine and real kernel eBPF.
//! Each fixture is traced with its probe, packed, verified by minify itself, checked here
//! for size and for the absence of a shell, and rebuilt with `minify build` from the written
//! allowlist to the same image id. Plus the failure paths: a hanging probe, a missing image,
//! a probe that fails on the original.
//!
//! The tests in this module run one at a time (a shared lock): each one keeps both cores
//! busy, and the cleanup checks look for leftovers by name.

use std::path::Path;
use std::process::Command;

use crate::common::{minify, run};
use std::sync::Mutex;

use minify_fixtures::{TestContext, fixture, require_docker, require_ebpf, require_root};

/// Held by every test here and in `gc.rs`: each keeps both cores busy, and the cleanup checks
/// look for leftovers by name.
pub(crate) static SERIAL: Mutex<()> = Mutex::new(());

fn can_run() -> bool {
    require_root() && require_docker() && require_ebpf()
}

/// The lock these tests share, when this machine can run them (`None`: skip; the reason
/// was printed).
pub(crate) fn serial_if_run() -> Option<std::sync::MutexGuard<'static, ()>> {
    can_run().then(|| {
        SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    })
}

fn image_id(reference: &str) -> String {
    minify_fixtures::docker(["image", "inspect", "--format", "{{.Id}}", reference])
        .unwrap_or_else(|e| panic!("inspect {reference}: {e:#}"))
}

pub(crate) use minify_fixtures::has_working_shell;

const SHELLS: [&str; 5] = [
    "/bin/sh",
    "/usr/bin/sh",
    "/usr/bin/dash",
    "/bin/bash",
    "/usr/bin/bash",
];

/// Minify one fixture with `probes` (and any other flags), and check everything the issue
/// asks of the result.
/// Returns the report and the allowlist.
fn minify_fixture(
    name: &str,
    probes: &[&str],
    max_ratio: f64,
) -> (serde_json::Value, minify_model::Allowlist) {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let image = fixture(name).expect("fixture image");
    let ctx = TestContext::new().unwrap();
    let out = ctx.unique_image_ref(&format!("run-{name}"));
    let rebuilt = ctx.unique_image_ref(&format!("build-{name}"));
    let allowlist = ctx.temp_dir().join("allowlist.json");
    let report_path = ctx.temp_dir().join("report.json");

    let mut cmd = minify();
    cmd.arg("run")
        .arg(&image)
        .args(probes)
        .args(["--tag", &out]);
    cmd.arg("--allowlist-out").arg(&allowlist);
    cmd.arg("--report").arg(&report_path);
    let o = run(&mut cmd);
    assert_eq!(o.status.code(), Some(0), "minify run {name} failed");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("verify: passed"), "{stderr}");

    let report: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["verify"], "passed", "{report:#}");
    // A daemon output is verified in place.
    assert_eq!(report["output_written"], true, "{report:#}");
    assert_eq!(report["verified_image"], out.as_str(), "{report:#}");
    assert_eq!(
        report["verified_image_id"],
        image_id(&out).as_str(),
        "{report:#}"
    );
    assert_eq!(report["events_lost_total"], 0);
    assert!(
        report["events"].as_u64().unwrap() > 0,
        "nothing traced: {report:#}"
    );
    let probes_json = report["probes"].as_array().unwrap();
    let probe_flags = probes.iter().filter(|a| a.starts_with("--probe-")).count();
    assert_eq!(probes_json.len(), probe_flags);
    for p in probes_json {
        assert_eq!(p["original"]["passed"], true, "{p:#}");
        assert_eq!(p["minified"]["passed"], true, "{p:#}");
    }

    // Size: measured by the daemon, independent of the report.
    let before = minify_fixtures::image_size(&image).unwrap();
    let after = minify_fixtures::image_size(&out).unwrap();
    assert!(
        after as f64 <= before as f64 * max_ratio,
        "{name}: {after} bytes is more than {max_ratio} of {before} (lower bound: {} bytes required by the trace and ELF closure)",
        report["required_bytes"]
    );
    assert_eq!(report["size_after"].as_u64().unwrap(), after);

    // No shell: every fixture's probe is a simple command, exec'd without one.
    let text = fs_err::read_to_string(&allowlist).unwrap();
    let al = minify_model::Allowlist::from_json("allowlist", &text).unwrap();
    assert_eq!(report["shell_probes"], serde_json::json!([]), "{report:#}");
    // The attack-surface report agrees: no shell left (what `has_working_shell` below
    // checks in the image itself).
    assert_eq!(
        report["attack_surface"]["shells"],
        serde_json::json!([]),
        "{report:#}"
    );
    assert!(stderr.contains("attack surface: no shell, "), "{stderr}");
    for sh in SHELLS {
        assert!(
            !al.paths.iter().any(|e| e.path.as_str() == sh),
            "{name}: {sh} is in the allowlist"
        );
    }
    assert!(!has_working_shell(&out), "{name}: {out} still runs /bin/sh");
    assert_eq!(al.source.digest, image_id(&image));

    // The output works, checked here and not by minify's verifier: run as its config says,
    // it gives the fixture's own answer (a body, a value written and read back).
    let checked = minify_fixtures::check_fixture(name, &out)
        .unwrap_or_else(|e| panic!("minified {name} ({out}) does not work: {e:#}"));
    eprintln!("{name}: {out}: {checked}");

    // The same allowlist through `minify build` gives the same image.
    // `--fail-on-shell` lets it through: no fixture's output keeps a shell.
    let o = run(minify()
        .args(["build", &image, "--fail-on-shell", "--allowlist"])
        .arg(&allowlist)
        .args(["--tag", &rebuilt]));
    assert_eq!(o.status.code(), Some(0), "minify build {name} failed");
    let build_err = String::from_utf8_lossy(&o.stderr);
    assert!(
        build_err.contains("minify: attack surface: no shell, "),
        "{build_err}"
    );
    assert_eq!(image_id(&rebuilt), image_id(&out), "build and run disagree");
    assert_eq!(report["output_id"].as_str().unwrap(), image_id(&out));
    (report, al)
}

#[test]
fn run_nginx() {
    if can_run() {
        // `--fail-on-shell` as a CI gate: nginx keeps no shell, so it passes (exit 0, checked
        // in minify_fixture).
        let (report, _) = minify_fixture("nginx", &["--probe-http", "/", "--fail-on-shell"], 0.2);
        let surface = &report["attack_surface"];
        assert_eq!(
            surface["package_managers"],
            serde_json::json!([]),
            "{surface:#}"
        );
        assert_eq!(surface["setuid"], serde_json::json!([]), "{surface:#}");
        // The fixture sets no USER (nginx drops to www-data itself): root, as Docker runs it.
        let user = minify_fixtures::docker([
            "image",
            "inspect",
            "--format",
            "{{.Config.User}}",
            &fixture("nginx").unwrap(),
        ])
        .unwrap();
        assert_eq!(surface["user"]["user"], user.as_str(), "{surface:#}");
        assert_eq!(
            surface["user"]["root"],
            user.is_empty() || user == "root" || user == "0",
            "{surface:#}"
        );
        assert_eq!(surface["user"]["root"], true, "{surface:#}");
    }
}

#[test]
fn run_python_http() {
    if can_run() {
        minify_fixture("python-http", &["--probe-http", "/"], 0.2);
    }
}

#[test]
fn run_flask_venv() {
    if can_run() {
        minify_fixture("flask", &["--probe-http", "/"], 0.2);
    }
}

/// A JVM (Debian's OpenJDK): its libraries need `libjvm.so`, which only the already loaded
/// `lib/server/libjvm.so` provides (by soname): the closure must not call it missing.
#[test]
fn run_java() {
    if can_run() {
        let (report, _) = minify_fixture("java", &["--probe-http", "/"], 0.5);
        let warnings = report["warnings"].as_array().unwrap();
        assert!(
            !warnings
                .iter()
                .any(|w| w.as_str().unwrap().contains("not found in the image")),
            "{warnings:#?}"
        );
    }
}

#[test]
fn run_redis_exec_probe() {
    if can_run() {
        minify_fixture("redis", &["--probe-exec", "redis-cli ping"], 0.2);
    }
}

/// Docker's view of a container's health after up to `secs` seconds: the first of
/// `healthy`/`unhealthy` it reports, or the last status seen.
fn health_after(image: &str, secs: u64) -> String {
    let id = minify_fixtures::docker(["run", "-d", image]).unwrap();
    let id = id.trim();
    let mut status = String::new();
    for _ in 0..secs * 4 {
        std::thread::sleep(std::time::Duration::from_millis(250));
        minify_fixtures::docker(["inspect", "--format", "{{.State.Health.Status}}", id])
            .unwrap()
            .trim()
            .clone_into(&mut status);
        if status == "healthy" || status == "unhealthy" {
            break;
        }
    }
    let _ = minify_fixtures::docker(["rm", "-f", id]);
    status
}

/// The image's HEALTHCHECK runs as a probe (after the others; with no probe, at the end), so
/// what it uses is kept and the minified container is healthy in Docker's own eyes. Without
/// it (`--no-healthcheck`), the check's program is gone and Docker marks the container
/// unhealthy: what orchestrators restart.
#[test]
fn healthcheck_is_run_kept_and_healthy() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let redis = fixture("redis").expect("redis fixture");
    let ctx = TestContext::new().unwrap();
    let image = ctx.unique_image_ref("healthcheck");
    derived_image_with(
        &redis,
        "HEALTHCHECK --interval=1s --timeout=5s --retries=2 CMD [\"redis-cli\", \"ping\"]",
        &image,
        "healthcheck",
    );
    let redis_cli = |al: &Path| {
        let text = fs_err::read_to_string(al).unwrap();
        minify_model::Allowlist::from_json("allowlist", &text)
            .unwrap()
            .paths
            .iter()
            .any(|e| e.path.as_str() == "/usr/bin/redis-cli")
    };
    let tmp = ctx.temp_dir();
    for (case, args) in [
        ("after the probes", &["--probe-cmd", "true"][..]),
        ("with no probe", &["--timeout", "2"][..]),
        ("left out", &["--probe-cmd", "true", "--no-healthcheck"][..]),
    ] {
        let out = ctx.unique_image_ref("healthcheck-min");
        let al = tmp.join("allowlist.json");
        let report_path = tmp.join("report.json");
        let o = run(minify()
            .args(["run", &image, "--tag", &out, "--force"])
            .args(args)
            .arg("--allowlist-out")
            .arg(&al)
            .arg("--report")
            .arg(&report_path));
        assert_eq!(o.status.code(), Some(0), "{case}");
        let report: serde_json::Value =
            serde_json::from_str(&fs_err::read_to_string(&report_path).unwrap()).unwrap();
        let names: Vec<&str> = report["probes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        if case == "left out" {
            assert_eq!(names, ["--probe-cmd \"true\""], "{case}");
            assert!(!redis_cli(&al), "{case}: redis-cli kept");
            assert!(
                report["warnings"][0]
                    .as_str()
                    .unwrap()
                    .contains("HEALTHCHECK (\"redis-cli ping\") was not run"),
                "{report:#}"
            );
            assert_eq!(health_after(&out, 20), "unhealthy", "{case}");
        } else {
            assert_eq!(
                names.last(),
                Some(&"HEALTHCHECK \"redis-cli ping\""),
                "{case}"
            );
            for p in report["probes"].as_array().unwrap() {
                assert_eq!(p["original"]["passed"], true, "{case}: {p:#}");
                assert_eq!(p["minified"]["passed"], true, "{case}: {p:#}");
            }
            assert!(redis_cli(&al), "{case}: redis-cli not kept");
            assert_eq!(health_after(&out, 20), "healthy", "{case}");
            if case == "after the probes" {
                minify_fixtures::check_fixture("redis", &out).unwrap();
            }
            // The check itself is kept in the config, and `minify inspect` shows it.
            let o = run(minify().args(["inspect", &out]));
            let shown = String::from_utf8_lossy(&o.stdout);
            assert!(
                shown.contains("health   CMD redis-cli ping"),
                "{case}: {shown}"
            );
        }
    }

    // A service that opens its ports before it is healthy: Docker lets the check fail
    // during StartPeriod and for Retries x Interval after, and so does minify (it used to
    // give up after three attempts a second apart, exit 2 on a healthy image).
    let slow = ctx.unique_image_ref("healthcheck-slow");
    derived_image_with(
        &redis,
        "HEALTHCHECK --interval=2s --start-period=8s --retries=2 CMD test -e /tmp/ready && redis-cli ping\n\
         CMD [\"sh\", \"-c\", \"(sleep 5; touch /tmp/ready) & exec redis-server --bind 0.0.0.0 --protected-mode no\"]",
        &slow,
        "healthcheck-slow",
    );
    let out = ctx.unique_image_ref("healthcheck-slow-min");
    let report_path = tmp.join("slow.json");
    let o = run(minify()
        .args([
            "run",
            &slow,
            "--probe-exec",
            "redis-cli ping",
            "--tag",
            &out,
        ])
        .arg("--report")
        .arg(&report_path));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let report: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(&report_path).unwrap()).unwrap();
    let check = &report["probes"][1];
    assert_eq!(
        check["name"], "HEALTHCHECK \"test -e /tmp/ready && redis-cli ping\"",
        "{report:#}"
    );
    assert_eq!(check["minified"]["passed"], true, "{report:#}");
    assert_eq!(health_after(&out, 30), "healthy");

    // A health check that fails on the original stops the run before anything is built,
    // naming the check and the way out.
    let broken = ctx.unique_image_ref("healthcheck-broken");
    derived_image_with(
        &redis,
        "HEALTHCHECK --interval=1s --retries=1 CMD [\"redis-cli\", \"-p\", \"1\", \"ping\"]",
        &broken,
        "healthcheck-broken",
    );
    let never = ctx.unique_image_ref("never");
    let o = run(minify().args(["run", &broken, "--probe-cmd", "true", "--tag", &never]));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("HEALTHCHECK \"redis-cli -p 1 ping\": FAILED")
            && err.contains("--no-healthcheck"),
        "{err}"
    );
    assert!(!minify_fixtures::image_exists(&never));
}

/// PostgreSQL creates its lock file and socket through Debian's `/var/run -> /run` link in
/// `/run/postgresql`: files that are not in the image, whose way there must be kept (the
/// minified server used to exit at start, "could not create lock file"). The probe writes a
/// table and reads it back through Debian's Perl `psql` wrapper.
///
/// The cluster's data directory is included whole: it is the server's state, and which of
/// its relation files a later query or connection opens depends on the query and on the
/// relation cache file the first connection writes. Without it the output passes minify's
/// verify (one connection, the probe's query) and fails the independent check: a second
/// connection needs `global/2676`, `select 40 + 2` needs `base/5/2689`.
#[test]
fn run_postgres() {
    if can_run() {
        let probe = "psql -h 127.0.0.1 -v ON_ERROR_STOP=1 -c 'create table t(x int); insert into t values (1); select count(*) from t'";
        let (_, al) = minify_fixture(
            "postgres",
            &[
                "--probe-exec",
                probe,
                "--include",
                "/var/lib/postgresql/data",
            ],
            0.3,
        );
        let kept = |p: &str| al.paths.iter().any(|e| e.path.as_str() == p);
        assert!(kept("/var/run") && kept("/run/postgresql"));
        assert!(!kept("/run/postgresql/.s.PGSQL.5432.lock"));
    }
}

#[test]
fn run_node() {
    if can_run() {
        minify_fixture("node", &["--probe-http", "/"], 0.2);
    }
}

#[test]
fn run_static_scratch() {
    // FROM scratch with one static binary: nothing to remove, and it must still work.
    if can_run() {
        minify_fixture("static", &["--probe-http", "/"], 1.0);
    }
}

/// Names in a failure message: `container minify-<hex>` and `cgroup minify-<hex>`.
fn named(stderr: &str, what: &str) -> String {
    let at = stderr
        .find(&format!("{what} minify-"))
        .unwrap_or_else(|| panic!("no {what} named in: {stderr}"));
    stderr[at + what.len() + 1..]
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .next()
        .unwrap()
        .to_owned()
}

fn assert_nothing_left(stderr: &str) {
    let container = named(stderr, "container");
    let cgroup = named(stderr, "cgroup");
    let left =
        minify_fixtures::docker(["ps", "-aq", "--filter", &format!("name=^{container}$")]).unwrap();
    assert!(left.is_empty(), "container {container} left behind");
    assert_no_cgroup(&cgroup);
}

#[test]
fn hanging_probe_times_out_and_cleans_up() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("nginx").unwrap();
    let ctx = TestContext::new().unwrap();
    let out = ctx.unique_image_ref("hang");
    let start = std::time::Instant::now();
    let o = run(minify().args([
        "run",
        &image,
        "--probe-cmd",
        "sleep 600",
        "--probe-timeout",
        "2",
        "--tag",
        &out,
    ]));
    assert_eq!(o.status.code(), Some(2));
    // A watchdog, not a measurement: the probe sleeps 600 s, a 2 s timeout ends it long
    // before that.
    assert!(
        start.elapsed().as_secs() < 300,
        "watchdog (not a timing measurement): the run took {:?}; was the 2 s probe timeout ignored?",
        start.elapsed()
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("--probe-cmd \"sleep 600\": FAILED (timed out after 2 s)"),
        "{stderr}"
    );
    assert_nothing_left(&stderr);
    assert!(
        !minify_fixtures::image_exists(&out),
        "no output after a failed run"
    );
}

#[test]
fn failing_probe_on_original_stops_the_run() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("python-http").unwrap();
    let ctx = TestContext::new().unwrap();
    let out = ctx.unique_image_ref("failing");
    let allowlist = ctx.temp_dir().join("never.json");
    let o = run(minify()
        .args([
            "run",
            &image,
            "--probe-http",
            "/",
            "--probe-exec",
            "ls /definitely-not-there",
            "--probe-http",
            "/never-reached",
            "--tag",
            &out,
            "--allowlist-out",
        ])
        .arg(&allowlist));
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("--probe-exec \"ls /definitely-not-there\": FAILED (exit code 2)"),
        "{stderr}"
    );
    // The probe's own output is shown.
    assert!(stderr.contains("No such file or directory"), "{stderr}");
    assert!(!stderr.contains("never-reached\": passed"), "{stderr}");
    assert_nothing_left(&stderr);
    assert!(!allowlist.exists());
    assert!(!minify_fixtures::image_exists(&out));
}

#[test]
fn missing_image_is_one_line_exit_2() {
    if !require_docker() {
        return;
    }
    let o = run(minify().args(["run", "minify-no-such/image:1", "--probe-http", "/"]));
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("minify: error: ") && stderr.contains("minify-no-such/image:1"),
        "{stderr}"
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    let o = run(minify().args(["run", "x:1", "--no-default-set", "bogus"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown set"));
    let o = run(minify().args(["run", "x:1", "--cmd", "a | b"]));
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn probe_that_fails_only_on_the_minified_image_exits_1() {
    // A host-side probe reads a file through the daemon (`docker cp`): that read is not the
    // workload's, is not traced, so the file is not kept and the probe fails on the new image.
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("python-http").unwrap();
    let ctx = TestContext::new().unwrap();
    let out = ctx.unique_image_ref("verify-fail");
    let report_path = ctx.temp_dir().join("report.json");
    let probe = "docker cp \"$MINIFY_CONTAINER:/etc/issue\" - >/dev/null";
    let o = run(minify()
        .args([
            "run",
            &image,
            "--probe-http",
            "/",
            "--probe-cmd",
            probe,
            "--tag",
            &out,
        ])
        .arg("--report")
        .arg(&report_path));
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("verify: FAILED"), "{stderr}");
    assert!(
        stderr.contains(&format!("--probe-cmd {probe:?}: FAILED (exit code 1)")),
        "{stderr}"
    );
    assert!(
        stderr.contains("/etc/issue"),
        "the probe's output is shown: {stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["verify"], "failed");
    assert_eq!(report["probes"][0]["minified"]["passed"], true);
    assert_eq!(report["probes"][1]["original"]["passed"], true);
    assert_eq!(report["probes"][1]["minified"]["passed"], false);
}

/// Waits (up to two minutes) until a process whose command line matches `pattern`
/// (`pgrep -f`) runs on the host.
pub(crate) fn wait_for_process(pattern: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(2);
    loop {
        let o = Command::new("pgrep")
            .args(["-f", pattern])
            .output()
            .unwrap();
        if !o.stdout.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no process matching {pattern:?} within 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn labelled_containers() -> Vec<String> {
    minify_fixtures::docker([
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label={}=1", minify_runtime::LABEL),
    ])
    .unwrap()
    .lines()
    .map(str::to_owned)
    .collect()
}

#[test]
fn ctrl_c_leaves_nothing_behind() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("nginx").unwrap();
    let ctx = TestContext::new().unwrap();
    let out = ctx.unique_image_ref("ctrl-c");
    let before = labelled_containers();
    let child = minify()
        .args(["run", &image, "--probe-cmd", "sleep 3923", "--tag", &out])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the traced container to exist, and learn its cgroup parent.
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(2);
    let (container, parent) = loop {
        let new: Vec<String> = labelled_containers()
            .into_iter()
            .filter(|c| !before.contains(c))
            .collect();
        if let Some(c) = new.first() {
            let parent =
                minify_fixtures::docker(["inspect", "--format", "{{.HostConfig.CgroupParent}}", c])
                    .unwrap();
            break (c.clone(), parent);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no container appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(parent.starts_with("minify-"), "{parent}");
    // Once the probe runs, interrupt as a terminal would: the "probe survived" check below
    // means something only if it had started.
    wait_for_process("^sleep 3923$");
    let stderr = crate::common::signal_and_wait(child, "INT", 130);
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        !labelled_containers().contains(&container),
        "container {container} left behind"
    );
    assert_no_cgroup(&parent);
    let sleeps = Command::new("pgrep")
        .args(["-f", "^sleep 3923$"]) // an odd length: nobody else's sleep matches
        .output()
        .unwrap();
    assert!(sleeps.stdout.is_empty(), "the probe's process survived");
    assert!(!minify_fixtures::image_exists(&out));
}

/// The trace cgroup a `minify -v` run names in its log (`created trace cgroup path=...`).
pub(crate) fn logged_trace_cgroup(log: &str) -> Option<String> {
    let at = log.find("created trace cgroup")?;
    let rest = &log[at..];
    let start = rest.find("minify-")?;
    let name: String = rest[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    minify_runtime::is_trace_cgroup_name(&name).then_some(name)
}

/// No cgroup directory of this name in any hierarchy (v1 controllers, and the v2 tree
/// under `/sys/fs/cgroup` itself or its `unified` directory).
fn assert_no_cgroup(name: &str) {
    let root = Path::new("/sys/fs/cgroup");
    let dirs = fs_err::read_dir(root).unwrap().flatten().map(|m| m.path());
    for d in std::iter::once(root.to_path_buf()).chain(dirs) {
        let d = d.join(name);
        assert!(!d.exists(), "cgroup directory {} left behind", d.display());
    }
}

/// stderr closed half way (`minify run ... 2>&1 | head`): the run goes on and ends as it
/// would have (no panic on the failed writes, which would leave its container and cgroup
/// behind), and leaves nothing. And a run that fails while the tracer is still being loaded
/// (it loads while the image is opened) removes the tracer's cgroup too.
#[test]
fn closed_stderr_and_early_failure_leave_nothing() {
    use std::io::BufRead as _;
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("nginx").unwrap();
    let ctx = TestContext::new().unwrap();
    let out = ctx.unique_image_ref("closed-stderr");
    let mut child = minify()
        .args(["-v", "run", &image, "--probe-http", "/", "--tag", &out])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let cgroup = loop {
        let line = lines
            .next()
            .expect("stderr ended before the cgroup was named")
            .unwrap();
        log.push_str(&line);
        log.push('\n');
        if let Some(c) = logged_trace_cgroup(&log) {
            break c;
        }
    };
    drop(lines); // the reading end closes: every later write to stderr fails
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "after stderr closed");
    assert_left_nothing(pid);
    assert_no_cgroup(&cgroup);
    minify_fixtures::check_fixture("nginx", &out).unwrap();

    let never = ctx.unique_image_ref("never");
    let o = run(minify()
        .args(["-v", "run", &image, "--probe-http", "/", "--tag", &never])
        .args(["--exclude", "[unclosed"])
        .env("NO_COLOR", "1"));
    assert_eq!(o.status.code(), Some(2));
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("[unclosed"), "{log}");
    // The tracer loads while the image is opened, and the bad glob is found after that:
    // its cgroup existed, and must be gone.
    let cgroup = logged_trace_cgroup(&log)
        .unwrap_or_else(|| panic!("no trace cgroup named in the log: {log}"));
    assert_no_cgroup(&cgroup);
    assert!(!minify_fixtures::image_exists(&never));
}

#[test]
fn no_probe_traces_until_the_entrypoint_exits() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("base").unwrap();
    let ctx = TestContext::new().unwrap();
    let out = ctx.unique_image_ref("no-probe");
    let report_path = ctx.temp_dir().join("report.json");
    let o = run(minify()
        .args(["run", &image, "--cmd", "cat /etc/os-release", "--tag", &out])
        .args(["--json", "--report"])
        .arg(&report_path));
    assert_eq!(o.status.code(), Some(0));
    // --json: the same report on stdout, and nothing else there.
    let stdout: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(stdout["output"], out.as_str());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("the entrypoint exited with code 0"),
        "{stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["main_process"]["code"], 0);
    assert_eq!(report["main_process_minified"]["code"], 0);
    assert_eq!(report["verify"], "passed");
    // The override is for the runs only: the image keeps its config, and says so.
    assert!(
        stderr.contains("overrides applied to the traced and verify runs only"),
        "{stderr}"
    );
    let shown = minify_fixtures::docker([
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        &out,
        "/etc/os-release",
    ])
    .unwrap();
    assert!(shown.contains("bookworm"), "{shown}");
    assert!(!has_working_shell(&out));
}

#[test]
fn bad_include_fails_before_tracing() {
    if !require_docker() {
        return;
    }
    let image = fixture("static").unwrap();
    let o = run(minify().args([
        "run",
        &image,
        "--probe-http",
        "/",
        "--include",
        "/not/in/the/image",
    ]));
    assert_eq!(o.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--include /not/in/the/image"), "{stderr}");
    // Nothing was run: no probe result was printed.
    assert!(!stderr.contains("passed"), "{stderr}");
}

/// `(copy name, copy id)` from the line a run prints about a temporary copy in the daemon:
/// the one that verifies a file output (`marker` "on a temporary copy in the Docker daemon,
/// ") or the one a file source runs from ("from a temporary copy in the Docker daemon, ").
fn temporary_copy(stderr: &str, marker: &str) -> (String, String) {
    let line = stderr
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no line with {marker:?} in: {stderr}"));
    let rest = &line[line.find(marker).unwrap() + marker.len()..];
    let (name, id) = rest.split_once(" (").unwrap();
    (name.to_owned(), id.trim_end_matches(')').to_owned())
}

/// The image a file output was verified on, `(name, id)`: a temporary copy, or, when the
/// daemon already held the identical image (an earlier run, `cargo xtask demo`), that image
/// by id (`(id, id)`), which a run leaves alone.
fn verify_copy(stderr: &str) -> (String, String) {
    let marker = "on the identical image already in the Docker daemon (";
    if let Some(line) = stderr.lines().find(|l| l.contains(marker)) {
        let id = line[line.find(marker).unwrap() + marker.len()..].trim_end_matches(')');
        return (id.to_owned(), id.to_owned());
    }
    temporary_copy(stderr, "on a temporary copy in the Docker daemon, ")
}

/// Whether the image `verify_copy` names was a temporary copy (gone after the run) rather
/// than one the daemon already held (still there).
fn assert_verify_image_handled(copy: &str) {
    if copy.starts_with("sha256:") {
        assert!(minify_fixtures::image_exists(copy), "{copy} was removed");
    } else {
        assert!(copy.starts_with("minify-verify/"), "{copy}");
        assert!(!minify_fixtures::image_exists(copy), "{copy} left behind");
    }
}

/// `minify run SOURCE --probe-http / -o OUTPUT` with an allowlist and a report, as a child
/// (its pid names what it may leave behind); it must pass verification. Returns the pid,
/// stderr and the report.
fn run_with_report(
    source: &str,
    output: &str,
    allowlist: &Path,
    report: &Path,
) -> (u32, String, serde_json::Value) {
    let (pid, o) = run_child(
        minify()
            .args(["run", source, "--probe-http", "/", "-o", output])
            .arg("--allowlist-out")
            .arg(allowlist)
            .arg("--report")
            .arg(report),
    );
    assert_eq!(o.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(stderr.contains("verify: passed"), "{stderr}");
    let report = serde_json::from_str(&fs_err::read_to_string(report).unwrap()).unwrap();
    (pid, stderr, report)
}

/// Temporary verify images whose tag (their owner) starts with `pid-`.
pub(crate) fn verify_images_of(pid: u32) -> Vec<String> {
    minify_fixtures::docker(["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .unwrap()
        .lines()
        .filter(|r| {
            r.starts_with(&format!("{}/", minify_runtime::VERIFY_REPO))
                && r.rsplit_once(':')
                    .is_some_and(|(_, tag)| tag.starts_with(&format!("{pid}-")))
        })
        .map(str::to_owned)
        .collect()
}

/// `minify run` as a child, to learn its pid; waits for it and echoes like `run`.
pub(crate) fn run_child(cmd: &mut Command) -> (u32, std::process::Output) {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "--- {:?}: {}\n{}",
        cmd.get_args().collect::<Vec<_>>(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (pid, out)
}

/// The config digest an oci-archive's only manifest names, checked against the config blob's
/// own sha256.
fn oci_archive_config_digest(archive: &Path, scratch: &Path) -> String {
    fs_err::create_dir_all(scratch).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(scratch)
        .status()
        .unwrap();
    assert!(st.success(), "tar -xf {}", archive.display());
    let json = |p: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_str(&fs_err::read_to_string(p).unwrap()).unwrap()
    };
    let blob = |digest: &str| {
        scratch
            .join("blobs/sha256")
            .join(&digest["sha256:".len()..])
    };
    let index = json(scratch.join("index.json"));
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index:#}");
    let manifest = json(blob(manifests[0]["digest"].as_str().unwrap()));
    let config = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let sum = Command::new("sha256sum")
        .arg(blob(&config))
        .output()
        .unwrap();
    let sum = String::from_utf8_lossy(&sum.stdout);
    assert_eq!(
        format!("sha256:{}", sum.split_whitespace().next().unwrap()),
        config,
        "the config blob does not hash to its digest"
    );
    config
}

#[test]
fn file_output_is_verified_on_a_temporary_copy() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("nginx").unwrap();
    let ctx = TestContext::new().unwrap();
    let archive = ctx.temp_dir().join("nginx-min.oci.tar");
    let allowlist = ctx.temp_dir().join("allowlist.json");
    let report_path = ctx.temp_dir().join("report.json");
    let output = format!("oci-archive:{}", archive.display());
    let (pid, stderr, report) = run_with_report(&image, &output, &allowlist, &report_path);
    assert_eq!(report["verify"], "passed", "{report:#}");
    assert_eq!(
        report["probes"][0]["minified"]["passed"], true,
        "{report:#}"
    );

    // The copy ran was the file's image: the daemon's id for it is the archive's config
    // digest, and the copy is gone.
    let (copy, copy_id) = verify_copy(&stderr);
    let config = oci_archive_config_digest(&archive, &ctx.temp_dir().join("unpacked"));
    assert_eq!(copy_id, config);
    assert_eq!(report["output_id"], config.as_str());
    // The report says the same for CI: written, and verified on that copy with that id.
    assert_eq!(report["output_written"], true, "{report:#}");
    assert_eq!(report["verified_image"], copy.as_str(), "{report:#}");
    assert_eq!(report["verified_image_id"], config.as_str(), "{report:#}");
    // The layer is stored gzip-compressed (the OCI default), as the report and summary say.
    assert_eq!(report["output_layer_media"], "tar+gzip", "{report:#}");
    let stored = report["output_layer_bytes"].as_u64().unwrap();
    let after = report["size_after"].as_u64().unwrap();
    assert!(stored > 0 && stored * 2 < after, "{stored} of {after}");
    assert!(stderr.contains("  stored: "), "{stderr}");
    assert!(
        stderr.contains(&format!("verify: passed (on a temporary copy, {copy})"))
            || stderr.contains(&format!(
                "verify: passed (on the identical image already in the daemon, {copy})"
            )),
        "{stderr}"
    );
    assert_verify_image_handled(&copy);
    assert!(
        verify_images_of(pid).is_empty(),
        "temporary images left: {:?}",
        verify_images_of(pid)
    );

    // Byte for byte what it is without verify: `minify build` (which never verifies) from
    // the same allowlist.
    let unverified = ctx.temp_dir().join("built.oci.tar");
    let o = run(minify()
        .args(["build", &image, "--allowlist"])
        .arg(&allowlist)
        .arg("--tag")
        .arg(format!("oci-archive:{}", unverified.display())));
    assert_eq!(o.status.code(), Some(0));
    assert!(
        fs_err::read(&archive).unwrap() == fs_err::read(&unverified).unwrap(),
        "the verified run wrote another archive than minify build"
    );
    // Other compressions on request; each output reads back as the same image.
    for (format, media) in [("zstd", "tar+zstd"), ("none", "tar")] {
        let out = format!("oci:{}", ctx.temp_dir().join(format).display());
        let o = run(minify()
            .args([
                "build",
                &image,
                "--compression",
                format,
                "--tag",
                &out,
                "--allowlist",
            ])
            .arg(&allowlist));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{err}");
        assert!(err.contains(&format!("as {media}")), "{err}");
        let o = run(minify().args(["inspect", &out]));
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let shown = String::from_utf8_lossy(&o.stdout);
        assert!(shown.contains(&config), "{shown}");
        assert!(shown.contains(&format!("{media} ")), "{shown}");
    }
    // Asked of an output that does not compress, it is said, and the tar stays as it is.
    let da = ctx.temp_dir().join("da.tar");
    let o = run(minify()
        .args(["build", &image, "--compression", "zstd", "--allowlist"])
        .arg(&allowlist)
        .arg("--tag")
        .arg(format!("docker-archive:{}", da.display())));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains(
            "--compression zstd: only oci:, oci-archive: and docker:// outputs compress the layer"
        ) && err.contains("as tar"),
        "{err}"
    );
    // The image written is checked here, not on minify's word: this Docker cannot load an
    // OCI archive, but the docker-archive of the same allowlist loads under the same id (the
    // OCI config's digest, whose diff_ids Docker checks against the layer), and it serves.
    let loaded = docker_load(&da);
    ctx.track_image(&loaded);
    assert_eq!(loaded, config, "the docker-archive is another image");
    minify_fixtures::check_fixture("nginx", &loaded).unwrap();
    let o = run(minify()
        .args(["build", &image, "--compression", "brotli", "--allowlist"])
        .arg(&allowlist));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("use gzip, zstd or none"), "{err}");
}

#[test]
fn file_output_failing_verification_is_not_written() {
    // As in probe_that_fails_only_on_the_minified_image_exits_1: a host-side read of a file
    // the workload never touches passes on the original only.
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("nginx").unwrap();
    let ctx = TestContext::new().unwrap();
    let archive = ctx.temp_dir().join("never.tar");
    // The report goes elsewhere: the output's directory must stay empty.
    let report_dir = TestContext::new().unwrap();
    let report_path = report_dir.temp_dir().join("report.json");
    let probe = "docker cp \"$MINIFY_CONTAINER:/etc/issue\" - >/dev/null";
    let (pid, o) = run_child(
        minify()
            .args(["run", &image, "--probe-cmd", probe, "--tag"])
            .arg(format!("docker-archive:{}", archive.display()))
            .arg("--report")
            .arg(&report_path),
    );
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("verify: FAILED"), "{stderr}");
    assert!(
        stderr.contains("was not written, because verification failed"),
        "{stderr}"
    );
    let (copy, copy_id) = verify_copy(&stderr);
    assert!(!archive.exists(), "{} written", archive.display());
    let report: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["verify"], "failed", "{report:#}");
    assert_eq!(report["output_written"], false, "{report:#}");
    assert_eq!(report["verified_image"], copy.as_str(), "{report:#}");
    assert_eq!(report["verified_image_id"], copy_id.as_str(), "{report:#}");
    assert_eq!(report["output_id"], copy_id.as_str(), "{report:#}");
    // Nor a temporary sibling of it.
    let names: Vec<String> = fs_err::read_dir(ctx.temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.is_empty(), "{names:?}");
    assert_verify_image_handled(&copy);
    assert!(verify_images_of(pid).is_empty());
}

// --- File sources: `minify run docker-archive:|oci:|oci-archive:`.

/// sha256 of a file, hex (to show a source file is never changed, and to name blobs).
fn sha256_file(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(o.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// `docker save` of `image` into `path`.
fn docker_save(image: &str, path: &Path) {
    minify_fixtures::docker([
        "save".as_ref(),
        "-o".as_ref(),
        path.as_os_str(),
        image.as_ref(),
    ])
    .unwrap_or_else(|e| panic!("docker save {image}: {e:#}"));
}

/// `FROM image` plus the label `org.minify.test=<label>` (no new layer): a new image id,
/// tagged `tag`. Returns its id.
fn derived_image(image: &str, tag: &str, label: &str) -> String {
    derived_image_with(image, "", tag, label)
}

/// [`derived_image`] with more Dockerfile lines after the `FROM`.
fn derived_image_with(image: &str, lines: &str, tag: &str, label: &str) -> String {
    let mut child = Command::new("docker")
        .args(["build", "-q", "-t", tag, "--label"])
        .arg(format!("org.minify.test={label}"))
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        format!("FROM {image}\n{lines}\n").as_bytes(),
    )
    .unwrap();
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "docker build FROM {image}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    image_id(tag)
}

/// A `docker save` archive at `path` of an image derived from `image` that the daemon does
/// not hold (built, saved, removed): running it needs a real load. Returns its id.
fn docker_archive_not_in_the_daemon(ctx: &TestContext, image: &str, path: &Path) -> String {
    let tag = ctx.unique_image_ref("minify-test/derived");
    let id = derived_image(image, &tag, &tag);
    docker_save(&tag, path);
    minify_fixtures::docker(["rmi", tag.as_str()]).unwrap();
    assert!(
        !minify_fixtures::image_exists(&id),
        "{id} is still in the daemon"
    );
    id
}

/// An OCI archive made from the `docker save` tarball `saved` the way other tools write them
/// (gzip layers, blobs by digest, one manifest with a ref name), with the label
/// `org.minify.test=<label>` added to the config: an image id no daemon has. Returns it.
fn oci_archive_from(
    saved: &Path,
    scratch: &Path,
    out: &Path,
    ref_name: &str,
    label: &str,
) -> String {
    let src = scratch.join("saved");
    let layout = scratch.join("layout");
    let blobs = layout.join("blobs/sha256");
    fs_err::create_dir_all(&src).unwrap();
    fs_err::create_dir_all(&blobs).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(saved)
        .arg("-C")
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    // Store a file as a blob; its descriptor's digest and size.
    let put = |file: &Path| -> (String, u64) {
        let hex = sha256_file(file);
        let size = fs_err::metadata(file).unwrap().len();
        fs_err::rename(file, blobs.join(&hex)).unwrap();
        (format!("sha256:{hex}"), size)
    };
    let put_json = |v: &serde_json::Value| {
        let tmp = scratch.join("blob.json");
        fs_err::write(&tmp, serde_json::to_vec(v).unwrap()).unwrap();
        put(&tmp)
    };
    let json = |p: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_str(&fs_err::read_to_string(p).unwrap()).unwrap()
    };
    let manifest = json(src.join("manifest.json"));
    let mut config = json(src.join(manifest[0]["Config"].as_str().unwrap()));
    config["config"]["Labels"]["org.minify.test"] = label.into();
    let mut layers = Vec::new();
    for layer in manifest[0]["Layers"].as_array().unwrap() {
        let gz = scratch.join("layer.tar.gz");
        let o = Command::new("gzip")
            .arg("-nc")
            .arg(src.join(layer.as_str().unwrap()))
            .output()
            .unwrap();
        assert!(o.status.success());
        fs_err::write(&gz, o.stdout).unwrap();
        let (digest, size) = put(&gz);
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest, "size": size,
        }));
    }
    let (config_digest, config_size) = put_json(&config);
    let (manifest_digest, manifest_size) = put_json(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest, "size": config_size,
        },
        "layers": layers,
    }));
    fs_err::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest, "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": ref_name},
            }],
        }))
        .unwrap(),
    )
    .unwrap();
    fs_err::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let st = Command::new("tar")
        .arg("-cf")
        .arg(out)
        .arg("-C")
        .arg(&layout)
        .args(["oci-layout", "index.json", "blobs"])
        .status()
        .unwrap();
    assert!(st.success());
    config_digest
}

/// `docker load -i archive` of an untagged image; its id.
pub(crate) fn docker_load(archive: &Path) -> String {
    let loaded =
        minify_fixtures::docker(["load".as_ref(), "-i".as_ref(), archive.as_os_str()]).unwrap();
    loaded
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image ID: "))
        .unwrap_or_else(|| panic!("docker load said: {loaded}"))
        .to_owned()
}

/// The temporary copy a run from a file ran.
fn source_copy(stderr: &str) -> (String, String) {
    temporary_copy(stderr, "from a temporary copy in the Docker daemon, ")
}

/// No temporary image and no container of the (ended) minify process `pid` is left.
pub(crate) fn assert_left_nothing(pid: u32) {
    assert!(
        verify_images_of(pid).is_empty(),
        "{:?}",
        verify_images_of(pid)
    );
    assert!(containers_of(pid).is_empty(), "{:?}", containers_of(pid));
}

/// Containers of the minify process `pid` (by the owner label), running or not.
fn containers_of(pid: u32) -> Vec<String> {
    minify_fixtures::docker([
        "ps",
        "-a",
        "--no-trunc",
        "--filter",
        &format!("label={}=1", minify_runtime::LABEL),
        "--format",
        &format!(
            "{{{{.ID}}}} {{{{.Label \"{}\"}}}}",
            minify_runtime::OWNER_LABEL
        ),
    ])
    .unwrap()
    .lines()
    .filter(|l| {
        l.split_once(' ')
            .is_some_and(|(_, o)| o.starts_with(&format!("{pid}-")))
    })
    .map(str::to_owned)
    .collect()
}

fn repo_tags(image: &str) -> String {
    minify_fixtures::docker(["image", "inspect", "--format", "{{json .RepoTags}}", image]).unwrap()
}

#[test]
fn docker_archive_source_runs_from_a_temporary_copy() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("nginx").unwrap();
    let ctx = TestContext::new().unwrap();
    let saved = ctx.temp_dir().join("nginx.tar");
    let saved_id = docker_archive_not_in_the_daemon(&ctx, &image, &saved);
    let saved_sum = sha256_file(&saved);
    let tags_before = repo_tags(&image);
    let source = format!("docker-archive:{}", saved.display());
    let out = ctx.temp_dir().join("nginx-min.tar");
    let allowlist = ctx.temp_dir().join("allowlist.json");
    let report_path = ctx.temp_dir().join("report.json");
    let output = format!("docker-archive:{}", out.display());
    let (pid, stderr, report) = run_with_report(&source, &output, &allowlist, &report_path);

    // The report and the allowlist name the file as given, with the image's own id.
    assert_eq!(report["image"], source.as_str(), "{report:#}");
    assert_eq!(report["image_id"], saved_id.as_str(), "{report:#}");
    assert_eq!(report["output"], output.as_str(), "{report:#}");
    assert_eq!(report["output_written"], true, "{report:#}");
    let al = minify_model::Allowlist::from_json(
        "allowlist",
        &fs_err::read_to_string(&allowlist).unwrap(),
    )
    .unwrap();
    assert_eq!(al.source.image, source);
    assert_eq!(al.source.digest, saved_id);

    // The copy ran was the file's image (same id), and it is gone with the image it loaded;
    // the fixture it shares layers with kept exactly its names; nothing of this run is
    // left; the file is unchanged.
    let (copy, copy_id) = source_copy(&stderr);
    assert!(copy.starts_with("minify-verify/"), "{copy}");
    assert_eq!(copy_id, saved_id);
    assert!(!minify_fixtures::image_exists(&copy), "{copy} left behind");
    assert!(
        !minify_fixtures::image_exists(&saved_id),
        "{saved_id} left behind"
    );
    assert_left_nothing(pid);
    assert_eq!(repo_tags(&image), tags_before);
    assert_eq!(sha256_file(&saved), saved_sum, "the source file changed");

    // The output loads, runs and answers the probe.
    let id = docker_load(&out);
    ctx.track_image(&id);
    assert_eq!(report["output_id"], id.as_str(), "{report:#}");
    minify_fixtures::check_fixture("nginx", &id).unwrap();
    let before = minify_fixtures::image_size(&image).unwrap();
    let after = minify_fixtures::image_size(&id).unwrap();
    eprintln!("nginx from docker-archive: {before} -> {after} bytes");
    assert!(after * 5 < before, "{after} of {before}");
}

#[test]
fn oci_archive_source_not_in_the_daemon() {
    // An image only the file has: loading it is a real load, and removing the copy removes
    // the image. No --tag: the output is named after the archive's ref name.
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("static").unwrap();
    let ctx = TestContext::new().unwrap();
    let saved = ctx.temp_dir().join("static.tar");
    docker_save(&image, &saved);
    let name = ctx.unique_name("minify-test/oci-source");
    let expected_out = format!("{name}:1-min");
    ctx.track_image(&expected_out);
    let archive = ctx.temp_dir().join("static.oci.tar");
    let id = oci_archive_from(
        &saved,
        &ctx.temp_dir().join("convert"),
        &archive,
        &format!("{name}:1"),
        &name,
    );
    assert!(!minify_fixtures::image_exists(&id), "{id} is in the daemon");
    let sum = sha256_file(&archive);
    let source = format!("oci-archive:{}", archive.display());
    let report_path = ctx.temp_dir().join("report.json");
    let (pid, o) = run_child(
        minify()
            .args(["run", &source, "--probe-http", "/", "--report"])
            .arg(&report_path),
    );
    assert_eq!(o.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("verify: passed"), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["image"], source.as_str(), "{report:#}");
    assert_eq!(report["image_id"], id.as_str(), "{report:#}");
    assert_eq!(report["output"], expected_out.as_str(), "{report:#}");
    let (copy, copy_id) = source_copy(&stderr);
    assert_eq!(copy_id, id);
    assert!(!minify_fixtures::image_exists(&copy), "{copy} left behind");
    assert!(
        !minify_fixtures::image_exists(&id),
        "the loaded image {id} left behind"
    );
    assert_left_nothing(pid);
    assert_eq!(sha256_file(&archive), sum, "the source file changed");
    minify_fixtures::check_fixture("static", &expected_out).unwrap();
}

#[test]
fn file_source_already_in_the_daemon_runs_as_it_is() {
    // The daemon already holds the file's image, untagged (a build moved its tag away).
    // The run uses that image by id, and it is still there afterwards: a temporary tag on
    // it, once removed, would have deleted it.
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("static").unwrap();
    let ctx = TestContext::new().unwrap();
    let tag = ctx.unique_image_ref("minify-test/moved");
    let first = derived_image(&image, &tag, "first");
    ctx.track_image(&first);
    let saved = ctx.temp_dir().join("first.tar");
    docker_save(&tag, &saved);
    let second = derived_image(&image, &tag, "second");
    ctx.track_image(&second);
    assert_ne!(first, second);
    assert_eq!(repo_tags(&first), "[]", "the first build still has a name");
    let out = ctx.unique_image_ref("minify-test/moved-min");
    ctx.track_image(&out);
    let source = format!("docker-archive:{}", saved.display());
    let (pid, o) = run_child(minify().args(["run", &source, "--probe-http", "/", "--tag", &out]));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("verify: passed"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "as the identical image already in the Docker daemon ({first})"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("from a temporary copy"), "{stderr}");
    assert!(
        minify_fixtures::image_exists(&first),
        "the untagged image was removed"
    );
    assert_eq!(repo_tags(&first), "[]");
    assert_eq!(image_id(&tag), second, "the tag moved");
    assert_left_nothing(pid);
    minify_fixtures::check_fixture("static", &out).unwrap();
}

#[test]
fn bad_file_sources_are_one_line_exit_2() {
    if !require_docker() {
        return;
    }
    let image = fixture("static").unwrap();
    let ctx = TestContext::new().unwrap();
    let saved = ctx.temp_dir().join("static.tar");
    docker_save(&image, &saved);
    let sum = sha256_file(&saved);
    let garbage = ctx.temp_dir().join("garbage.tar");
    fs_err::write(&garbage, "this is not a tarball\n".repeat(100)).unwrap();
    let truncated = ctx.temp_dir().join("truncated.tar");
    let bytes = fs_err::read(&saved).unwrap();
    fs_err::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    // Bytes in the middle of the only layer overwritten: the archive reads, the layer does not.
    let damaged = ctx.temp_dir().join("damaged.tar");
    let mut copy = bytes.clone();
    let mid = copy.len() / 2;
    copy[mid..mid + 64].fill(b'x');
    fs_err::write(&damaged, copy).unwrap();
    let missing = ctx.temp_dir().join("missing.tar");
    let cases = [
        (
            format!("docker-archive:{}", missing.display()),
            None,
            "missing.tar",
        ),
        (
            format!("docker-archive:{}", garbage.display()),
            None,
            "garbage.tar",
        ),
        (
            format!("docker-archive:{}", truncated.display()),
            None,
            "truncated.tar",
        ),
        (
            format!("docker-archive:{}", damaged.display()),
            None,
            "damaged.tar",
        ),
        (
            format!("oci-archive:{}", saved.display()),
            None,
            "static.tar",
        ),
        (format!("oci:{}", missing.display()), None, "missing.tar"),
        // The output may not replace the source file, even with --force.
        (
            format!("docker-archive:{}", saved.display()),
            Some(format!("docker-archive:{}", saved.display())),
            "would replace the source",
        ),
    ];
    for (source, out, named) in cases {
        let mut cmd = minify();
        cmd.args(["run", &source, "--probe-http", "/"]);
        match &out {
            Some(o) => cmd.args(["--force", "--tag", o]),
            None => cmd.args(["--tag", &ctx.unique_image_ref("never")]),
        };
        let (pid, o) = run_child(&mut cmd);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{source}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{source}: {stderr}");
        assert!(
            stderr.starts_with("minify: error: ") && stderr.contains(named),
            "{source}: {stderr}"
        );
        assert!(verify_images_of(pid).is_empty(), "{source}");
        assert!(containers_of(pid).is_empty(), "{source}");
    }
    assert_eq!(sha256_file(&saved), sum, "the source file changed");
}

#[test]
fn file_source_copy_goes_on_sigterm_and_after_sigkill_with_gc() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("static").unwrap();
    let ctx = TestContext::new().unwrap();
    let saved = ctx.temp_dir().join("static.tar");
    docker_archive_not_in_the_daemon(&ctx, &image, &saved);
    let source = format!("docker-archive:{}", saved.display());
    // Start a run whose probe sleeps, and wait until its traced container and its copy exist.
    let start = |sleep: &str| {
        let out = ctx.unique_image_ref("signalled");
        let child = minify()
            .args(["run", &source, "--probe-cmd", sleep, "--tag", &out])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_mins(2);
        while containers_of(pid).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "no container appeared"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        assert_eq!(verify_images_of(pid).len(), 1, "no temporary copy");
        // The probe runs: the later "probe survived" check then tests something.
        wait_for_process(&format!("^{sleep}$"));
        (child, pid, out)
    };

    let (child, pid, out) = start("sleep 3931");
    let stderr = crate::common::signal_and_wait(child, "TERM", 143);
    assert!(stderr.contains("terminated (SIGTERM)"), "{stderr}");
    assert_left_nothing(pid);
    assert!(!minify_fixtures::image_exists(&out));
    let sleeps = Command::new("pgrep")
        .args(["-f", "^sleep 3931$"])
        .output()
        .unwrap();
    assert!(sleeps.stdout.is_empty(), "the probe's process survived");

    // SIGKILL runs no cleanup: the copy stays, and `minify gc` knows it for a leftover. (The
    // probe is orphaned then; a short one ends by itself.)
    let (mut child, pid, _) = start("sleep 23");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(verify_images_of(pid).len(), 1);
    let o = run(minify().arg("gc"));
    assert_eq!(o.status.code(), Some(0));
    assert_left_nothing(pid);
}
