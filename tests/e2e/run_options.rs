//! `minify run`'s container and tracer options end to end, each checked by something other
//! than minify: `--user` by the kernel (the container's main process's `/proc/PID/status`,
//! read on the host), `--stop-timeout` by Docker's own event log (the signals it sent and
//! when), `--ring-bytes`/`--allow-lossy` by a workload whose accesses are known by
//! construction, counted in the raw trace.

use std::collections::BTreeMap;
use std::path::Path;

use minify_fixtures::{TestContext, docker, fixture, image_exists};

use crate::common::{container_events, minify, now_secs};
use crate::run::{assert_left_nothing, run_child, serial_if_run};

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&fs_err::read_to_string(path).unwrap()).unwrap()
}

/// What Docker's event log says happened to one container: the signals it was sent, with the
/// daemon's time of each (ns), and its exit code.
#[derive(Debug, Default)]
struct Lifecycle {
    kills: Vec<(String, u64)>,
    exit_code: Option<String>,
    destroyed: bool,
}

/// Docker's events between `since` and `until` (seconds) for the containers the minify
/// process `pid` made (found by their owner label), by container id.
fn docker_lifecycles(pid: u32, since: u64, until: u64) -> BTreeMap<String, Lifecycle> {
    let lines = container_events(
        since,
        until,
        &[&format!("label={}=1", minify_runtime::LABEL)],
        "{{json .}}",
    );
    let mut out: BTreeMap<String, Lifecycle> = BTreeMap::new();
    for line in lines.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        let attrs = &e["Actor"]["Attributes"];
        let owner = attrs[minify_runtime::OWNER_LABEL].as_str().unwrap_or("");
        if !owner.starts_with(&format!("{pid}-")) {
            continue;
        }
        let id = e["Actor"]["ID"].as_str().unwrap().to_owned();
        let at = e["timeNano"].as_u64().unwrap();
        let l = out.entry(id).or_default();
        match e["Action"].as_str().unwrap() {
            "kill" => l
                .kills
                .push((attrs["signal"].as_str().unwrap().to_owned(), at)),
            "die" => l.exit_code = attrs["exitCode"].as_str().map(str::to_owned),
            "destroy" => l.destroyed = true,
            _ => {}
        }
    }
    out
}

/// `--user` runs the workload as that uid and gid (the traced run and the verify run alike;
/// the output keeps the source's user), and `--stop-timeout` is how long Docker waits after
/// SIGTERM before SIGKILL: a workload that ignores SIGTERM (`sleep` as PID 1 has no handler)
/// is killed after it, and the run finishes.
#[test]
fn user_and_stop_timeout_on_base() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let base = fixture("base").unwrap();
    let ctx = TestContext::new().unwrap();
    let out = ctx.unique_image_ref("user");
    let ids = ctx.temp_dir().join("ids");
    // The host's view of the container's main process: its real, effective, saved and fs ids.
    let probe = format!(
        "pid=$(docker inspect --format '{{{{.State.Pid}}}}' \"$MINIFY_CONTAINER\") && test \"$pid\" -gt 0 && grep -E '^(Uid|Gid):' /proc/$pid/status >> {}",
        ids.display()
    );
    let since = now_secs() - 1;
    let (pid, o) = run_child(
        minify()
            .args(["run", &base, "--tag", &out])
            .args(["--entrypoint", "sleep", "--cmd", "infinity"])
            .args(["--user", "4321:4322", "--stop-timeout", "2"])
            .args(["--probe-cmd", &probe]),
    );
    let until = now_secs() + 1;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");

    // Both runs' main process had uid 4321 and gid 4322, every one of the four ids.
    let seen = fs_err::read_to_string(&ids).unwrap();
    let ids_seen: Vec<Vec<&str>> = seen
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        ids_seen,
        [
            ["Uid:", "4321", "4321", "4321", "4321"],
            ["Gid:", "4322", "4322", "4322", "4322"],
            ["Uid:", "4321", "4321", "4321", "4321"],
            ["Gid:", "4322", "4322", "4322", "4322"],
        ],
        "the traced and the verify run, as the kernel saw them"
    );
    // The override was for the runs: the output's config keeps the base's user (none).
    let user = |i: &str| docker(["image", "inspect", "--format", "{{json .Config.User}}", i]);
    assert_eq!(user(&out).unwrap(), user(&base).unwrap());
    assert!(
        err.contains("overrides applied to the traced and verify runs only"),
        "{err}"
    );

    // Docker's log: each of the two containers got SIGTERM, ignored it, got SIGKILL no
    // sooner than --stop-timeout later, died of it (137) and was removed.
    let lives = docker_lifecycles(pid, since, until);
    assert_eq!(
        lives.len(),
        2,
        "the traced and the verify container: {lives:#?}"
    );
    for (id, l) in &lives {
        let signals: Vec<&str> = l.kills.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(signals, ["15", "9"], "{id}: {l:?}");
        assert_eq!(l.exit_code.as_deref(), Some("137"), "{id}: {l:?}");
        assert!(l.destroyed, "{id} not removed: {l:?}");
        let waited_ms = (l.kills[1].1 - l.kills[0].1) / 1_000_000;
        assert!(
            waited_ms >= 2_000,
            "{id}: SIGKILL {waited_ms} ms after SIGTERM, before --stop-timeout 2"
        );
        // Docker's SIGKILL comes 2 s after SIGTERM plus its own latency; 10 s, Docker's
        // default, would mean the flag was not passed on.
        assert!(
            waited_ms < 10_000,
            "{id}: watchdog (not a timing measurement): SIGKILL {waited_ms} ms after SIGTERM, Docker's default 10 s, not --stop-timeout 2"
        );
    }
    // The output runs as that user by hand too.
    let by_hand = docker([
        "run",
        "--rm",
        "--user",
        "4321:4322",
        "--entrypoint",
        "sleep",
        &out,
        "0",
    ]);
    assert!(by_hand.is_ok(), "{by_hand:?}");
}

/// A burst of stats whose paths are known (`/nonexistent-0` .. `-19999`), traced through a
/// one-page ring (`--ring-bytes 4096`): the raw trace holds fewer of them than the workload
/// made, so events really were lost (a ring smaller than one batch of events, 16 KiB, takes only
/// the events sent alone: the exec and the loader's first files). Without `--allow-lossy` the run stops with exit 3 (an
/// environment limit: the ring is too small for this machine's burst), one error line that
/// says what to do, and no output; with it, the run builds and verifies and says the image
/// may lack files.
#[test]
fn small_ring_loses_events_and_allow_lossy_builds_anyway() {
    const STATS: usize = 20_000;
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let base = fixture("base").unwrap();
    let ctx = TestContext::new().unwrap();
    let out = ctx.unique_image_ref("lossy");
    let script =
        format!("i=0; while [ $i -lt {STATS} ]; do test -e /nonexistent-$i; i=$((i+1)); done");
    let cmd = serde_json::to_string(&["-c", &script]).unwrap();
    let minify_lossy = |extra: &[&str], name: &str| {
        let trace = ctx.temp_dir().join(format!("{name}.trace.json"));
        let report_path = ctx.temp_dir().join(format!("{name}.report.json"));
        let (pid, o) = run_child(
            minify()
                .args(["run", &base, "--tag", &out, "--ring-bytes", "4096"])
                .args(["--entrypoint", "sh", "--cmd", &cmd])
                .args(extra)
                .arg("--trace-out")
                .arg(&trace)
                .arg("--report")
                .arg(&report_path),
        );
        let t: serde_json::Value = serde_json::from_slice(&fs_err::read(&trace).unwrap()).unwrap();
        let traced: std::collections::BTreeSet<&str> = t["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["path"].as_str())
            .filter(|p| p.starts_with("/nonexistent-"))
            .collect();
        let traced = traced.len();
        (pid, o, traced, report(&report_path))
    };

    // Without --allow-lossy: exit 3, one error line naming the loss and both ways out.
    let (pid, o, traced, r) = minify_lossy(&[], "strict");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(traced < STATS, "all {STATS} stats traced: nothing was lost");
    let lost = r["events_lost_total"].as_u64().unwrap();
    assert!(lost > 0, "{r:#}");
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    for said in [
        &format!("lost {lost} events"),
        "--ring-bytes",
        "--allow-lossy",
    ] {
        assert!(errors[0].contains(said), "{said:?} not in {}", errors[0]);
    }
    assert_eq!(r["exit_code"], 3, "{r:#}");
    assert!(!image_exists(&out), "{out} was made from a lossy trace");
    assert_left_nothing(pid);

    // With it: built, verified, and said.
    let (_, o, traced, r) = minify_lossy(&["--allow-lossy"], "lossy");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(traced < STATS, "all {STATS} stats traced: nothing was lost");
    let lost = r["events_lost_total"].as_u64().unwrap();
    let warning = format!("--allow-lossy: the trace lost {lost} events");
    assert!(err.contains(&warning), "{err}");
    let warnings = r["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().starts_with(&warning)),
        "{r:#}"
    );
    // The output exists and runs the workload by hand.
    let by_hand = docker([
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        &out,
        "-c",
        "test -e /nonexistent-1 || echo ran",
    ])
    .unwrap();
    assert_eq!(by_hand, "ran");
}
