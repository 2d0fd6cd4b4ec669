//! CI ergonomics (issue 22): `--report FILE` is written on every exit, atomically and
//! replacing an older one, with a `status` a CI step can read; `--json` prints the same.
//! The runs are real (the `static` fixture, a real engine, the real tracer) and the reports
//! are read from the files, not from minify's messages.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use minify_fixtures::{
    HttpResponse, TestContext, fixture, http_get, require_docker, wait_for_http,
};

use crate::common::{minify, run, signal_and_wait};
use crate::run::serial_if_run;

/// What an earlier, successful run left at the report's path: a CI step must never read it
/// after a later run.
const STALE: &str = "{\"status\": \"verified\", \"verify\": \"passed\", \"stale\": true}\n";

/// A traced run's set-up: the serial lock (`None` when this machine cannot run it: skip),
/// the fixture, a context, an output name and the report's path.
struct Case {
    _serial: std::sync::MutexGuard<'static, ()>,
    image: String,
    ctx: TestContext,
    out: String,
    report: std::path::PathBuf,
}

impl Case {
    fn new(fixture_name: &str, prefix: &str) -> Option<Case> {
        let serial = serial_if_run()?;
        let image = fixture(fixture_name).unwrap();
        let ctx = TestContext::new().unwrap();
        let out = ctx.unique_image_ref(prefix);
        let report = ctx.temp_dir().join("r.json");
        Some(Case {
            _serial: serial,
            image,
            ctx,
            out,
            report,
        })
    }
}

fn read_report(path: &Path) -> serde_json::Value {
    let text = fs_err::read_to_string(path).unwrap();
    assert!(
        !text.contains("\"stale\""),
        "the old report is still there: {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The report file and `--json`'s stdout are the same report, with the given status, exit
/// code and phase; the error line is the one on stderr.
fn check_report(
    o: &Output,
    path: &Path,
    status: &str,
    code: i32,
    phase: &str,
) -> serde_json::Value {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{err}");
    let r = read_report(path);
    assert_eq!(r["status"], status, "{r:#}");
    assert_eq!(r["exit_code"], code, "{r:#}");
    assert_eq!(r["phase"], phase, "{r:#}");
    let stdout: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("--json: {e}: {}", String::from_utf8_lossy(&o.stdout)));
    assert_eq!(stdout, r, "--json and --report differ");
    if code > 1 {
        let line = r["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error: {r:#}"));
        assert!(
            err.lines().any(|l| l == format!("minify: error: {line}")),
            "report error {line:?} is not the printed line:\n{err}"
        );
    } else {
        assert!(r["error"].is_null(), "{r:#}");
    }
    r
}

/// A probe that fails on the original image: exit 2, and the report says so (status, the
/// probe and its output, the phase, the timings so far), replacing the report an earlier
/// run left at the same path. Broken by hand: with the error path's report writing removed
/// from `cmd/run.rs`, the stale report stays and this fails.
#[test]
fn probe_failed_on_original_replaces_an_older_report() {
    let Some(Case {
        _serial,
        image,
        ctx,
        out,
        report,
    }) = Case::new("static", "ci")
    else {
        return;
    };
    fs_err::write(&report, STALE).unwrap();
    let o = run(minify()
        .args(["run", &image, "--tag", &out, "--json"])
        .args([
            "--probe-cmd",
            "echo first-ok",
            "--probe-cmd",
            "echo broken; exit 7",
        ])
        .arg("--report")
        .arg(&report));
    let r = check_report(&o, &report, "probe_failed_on_original", 2, "trace");
    let probes = r["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 2, "{r:#}");
    assert_eq!(probes[0]["original"]["passed"], true, "{r:#}");
    assert_eq!(probes[1]["original"]["passed"], false, "{r:#}");
    assert_eq!(probes[1]["original"]["outcome"]["code"], 7, "{r:#}");
    assert!(
        probes[1]["original"]["output"]
            .as_str()
            .unwrap()
            .contains("broken"),
        "{r:#}"
    );
    assert!(probes[1]["minified"].is_null(), "{r:#}");
    assert_eq!(r["timings_ms"][0][0], "open", "{r:#}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("on the original image"),
        "{r:#}"
    );
    assert!(!minify_fixtures::image_exists(&out), "{out} was written");
    // No temporary file is left beside it.
    let names: Vec<_> = fs_err::read_dir(ctx.temp_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["r.json"], "{names:?}");
}

/// Ctrl-C while a probe runs: exit 130, and the report says `interrupted`, in the trace
/// phase, with the probe that had finished.
#[test]
fn interrupted_run_reports_interrupted() {
    let Some(Case {
        _serial,
        image,
        ctx,
        out,
        report,
    }) = Case::new("static", "ci")
    else {
        return;
    };
    let started = ctx.temp_dir().join("started");
    fs_err::write(&report, STALE).unwrap();
    let child = minify()
        .args([
            "run",
            &image,
            "--tag",
            &out,
            "--json",
            "--probe-cmd",
            "true",
        ])
        .arg("--probe-cmd")
        .arg(format!("touch {}; sleep 60", started.display()))
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_mins(3);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the second probe never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let stderr = signal_and_wait(child, "INT", 130);
    let r = read_report(&report);
    assert_eq!(r["status"], "interrupted", "{r:#}\n{stderr}");
    assert_eq!(r["exit_code"], 130, "{r:#}");
    assert_eq!(r["phase"], "trace", "{r:#}");
    assert!(
        r["error"].as_str().unwrap().contains("interrupted"),
        "{r:#}"
    );
    let probes = r["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 1, "{r:#}");
    assert_eq!(probes[0]["name"], "--probe-cmd \"true\"", "{r:#}");
    assert_eq!(probes[0]["original"]["passed"], true, "{r:#}");
    assert!(!minify_fixtures::image_exists(&out), "{out} was written");
}

/// An image that does not exist, and arguments refused before anything runs: exit 2,
/// `input_error`.
#[test]
fn missing_image_and_bad_arguments_report_input_error() {
    if !require_docker() {
        return;
    }
    let ctx = TestContext::new().unwrap();
    let report = ctx.temp_dir().join("r.json");
    let missing = format!("{}:none", ctx.unique_name("minify-ci-missing"));
    fs_err::write(&report, STALE).unwrap();
    let o = run(minify()
        .args(["run", &missing, "--probe-http", "/", "--json", "--report"])
        .arg(&report));
    let r = check_report(&o, &report, "input_error", 2, "open");
    assert_eq!(r["image"], missing, "{r:#}");
    assert!(r["error"].as_str().unwrap().contains(&missing), "{r:#}");

    fs_err::write(&report, STALE).unwrap();
    let o = run(minify()
        .args(["run", &missing, "--env", "NOEQUALS", "--json", "--report"])
        .arg(&report));
    let r = check_report(&o, &report, "input_error", 2, "arguments");
    assert!(r["error"].as_str().unwrap().contains("--env"), "{r:#}");
}

/// No engine behind `DOCKER_HOST`: exit 3, `environment_error`.
#[test]
fn dead_docker_socket_reports_environment_error() {
    let ctx = TestContext::new().unwrap();
    let report = ctx.temp_dir().join("r.json");
    fs_err::write(&report, STALE).unwrap();
    let host = format!("unix://{}", ctx.temp_dir().join("no-docker.sock").display());
    let o = run(Command::new(env!("CARGO_BIN_EXE_minify"))
        .args([
            "run",
            "minify-fixture/static:1",
            "--probe-http",
            "/",
            "--json",
        ])
        .arg("--report")
        .arg(&report)
        .env("DOCKER_HOST", &host));
    let r = check_report(&o, &report, "environment_error", 3, "open");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("docker"),
        "{r:#}"
    );
}

/// `--no-verify`: exit 0 and `not_verified`; a successful run replaces an older report too.
#[test]
fn no_verify_reports_not_verified() {
    let Some(Case {
        _serial,
        image,
        ctx: _ctx,
        out,
        report,
    }) = Case::new("static", "ci")
    else {
        return;
    };
    fs_err::write(&report, STALE).unwrap();
    let o = run(minify()
        .args(["run", &image, "--tag", &out, "--json", "--no-verify"])
        .args(["--probe-http", "/", "--report"])
        .arg(&report));
    let r = check_report(&o, &report, "not_verified", 0, "done");
    assert_eq!(r["verify"], "skipped", "{r:#}");
    assert!(minify_fixtures::image_exists(&out), "{out} was not written");
}

/// Runs `image` with `docker run` (not through minify) and returns its first HTTP answer on
/// 8080 and the first 200 after it (within a minute).
fn first_and_ready_answer(image: &str) -> (HttpResponse, HttpResponse) {
    let ctx = TestContext::new().unwrap();
    let container = ctx.run_detached(image, &[]).unwrap();
    let addr = SocketAddr::new(ctx.container_ip(&container).unwrap(), 8080);
    let first = wait_for_http(addr, "/", Duration::from_mins(1), || {
        ctx.container_running(&container)
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let r = http_get(addr, "/", Duration::from_secs(5)).unwrap();
        if r.status == 200 {
            return (first, r);
        }
        assert!(
            Instant::now() < deadline,
            "{image} never answered 200: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The two-process fixture: its front listens at once and answers 502 for about 4 s, until
/// its backend is up (checked here first, with `docker run`, so the test's premise holds). A
/// plain `--probe-http /` passes on it: the 502s are retried within `--ready-timeout`, and
/// the report says how long each image took to become ready. Three runs, not the issue's
/// ten: each run waits out the backend twice (trace and verify, about 4 s each) on a
/// machine shared by the whole suite, and a flaky readiness would show within three as the
/// 502 comes back on every run (it is not a race: the front answers 502 for seconds, every
/// time). The minified image is checked by running it: 502 first, then the backend's
/// answer. Broken by hand: with the retry loop in `exercise` disabled, the first run exits
/// 2 (`probe_failed_on_original`, HTTP 502).
#[test]
fn plain_probe_http_waits_for_an_app_behind_its_port() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("slow-app").unwrap();
    let (first, ready) = first_and_ready_answer(&image);
    assert_eq!(
        first.status, 502,
        "the fixture's front no longer answers 502 first: {first:?}"
    );
    assert_eq!(ready.body, "hello from the minify slow-app backend\n");
    let ctx = TestContext::new().unwrap();
    for round in 0..3 {
        let out = ctx.unique_image_ref("ci-slow");
        let report = ctx.temp_dir().join(format!("r{round}.json"));
        let o = run(minify()
            .args(["run", &image, "--tag", &out, "--json", "--probe-http", "/"])
            .arg("--report")
            .arg(&report));
        let r = check_report(&o, &report, "verified", 0, "done");
        // Ready means the app answered: well after the port accepted.
        let port_ms = r["readiness"]["after_ms"].as_u64().unwrap();
        for key in ["ready_ms", "ready_ms_minified"] {
            let ms = r[key].as_u64().unwrap_or_else(|| panic!("{key}: {r:#}"));
            assert!(
                ms >= 2000 && ms > port_ms,
                "{key} {ms} (port {port_ms}): {r:#}"
            );
        }
        assert_eq!(r["readiness_minified"]["state"], "ready", "{r:#}");
        let probe = &r["probes"][0];
        assert_eq!(r["probes"].as_array().unwrap().len(), 1, "{r:#}");
        for side in ["original", "minified"] {
            let output = probe[side]["output"].as_str().unwrap();
            assert!(
                output.contains("200") && output.contains("retried"),
                "{side}: {output}"
            );
        }
        let (first, ready) = first_and_ready_answer(&out);
        assert_eq!(first.status, 502, "{first:?}");
        assert_eq!(
            ready.body, "hello from the minify slow-app backend\n",
            "{out}"
        );
    }
}

/// `--ready-http` and `--ready-cmd` wait before the probes without counting as probes; a
/// minified image that never becomes ready fails verification and says so. The never-ready
/// image is made by the readiness command itself (a fault a real image cannot be made to
/// have on purpose here, while its original passes): it passes once, on the original, and
/// fails from then on.
#[test]
fn ready_checks_are_not_probes_and_a_never_ready_output_fails_verification() {
    let Some(Case {
        _serial,
        image,
        ctx,
        out,
        report,
    }) = Case::new("slow-app", "ci-ready")
    else {
        return;
    };
    let seen = ctx.temp_dir().join("seen");
    let once = format!(
        "test ! -e {0} && touch {0} && echo ready-cmd ran",
        seen.display()
    );
    let o = run(minify()
        .args([
            "run",
            &image,
            "--tag",
            &out,
            "--json",
            "--ready-timeout",
            "15",
        ])
        .args([
            "--ready-http",
            "/",
            "--ready-cmd",
            &once,
            "--probe-http",
            "/",
        ])
        .arg("--report")
        .arg(&report));
    let r = check_report(&o, &report, "verify_failed", 1, "done");
    assert_eq!(r["probes"].as_array().unwrap().len(), 1, "{r:#}");
    let probe = &r["probes"][0];
    assert_eq!(probe["name"], "--probe-http \"/\"", "{r:#}");
    // The original waited for --ready-http (the backend) before the probe: no retry.
    let output = probe["original"]["output"].as_str().unwrap();
    assert!(
        output.contains("200") && !output.contains("retried"),
        "{output}"
    );
    assert!(r["ready_ms"].as_u64().unwrap() >= 2000, "{r:#}");
    assert!(r["ready_ms_minified"].is_null(), "{r:#}");
    let failures = r["verify_failures"].to_string();
    assert!(
        failures.contains("not ready: --ready-cmd") && failures.contains("--ready-timeout 15 s"),
        "{failures}"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not ready: --ready-cmd"), "{err}");
}
