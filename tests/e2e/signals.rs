//! Ctrl-C and SIGTERM landing at many moments of a real nginx run leave nothing behind: no
//! container (created or running), no trace cgroup or Docker's v1 cgroup directories under
//! it, no temporary image, no output. The signals are real and sent to the real process;
//! the moments are spread over the create request and the start of the container (where a
//! signal used to leave a `created` container behind: the request was dropped while the
//! daemon went on creating) and over the phases before it. Leftovers are looked up in Docker
//! and `/sys/fs/cgroup`, not in minify's own words.

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use minify_fixtures::{TestContext, fixture};

use crate::common::minify;
use crate::run::{logged_trace_cgroup, verify_images_of};

/// When each run is signalled, alternating SIGINT and SIGTERM: `(marker, d)` is `d` after
/// minify logs a line containing `marker` (`"creating container"`: during the request,
/// between create and start, during start and the first readiness polls; `"indexing the
/// layers"`: while the image is indexed), `("", d)` is `d` after the process started (opening
/// the image, loading the tracer). Moments are tied to log lines, not to a clock: a fixed 4 s
/// after the start once landed after a faster build had finished the whole run (exit 0).
/// Few, because each run indexes the whole nginx image first; the same moments 50 times
/// over, without the process around them, are `minify-runtime`'s
/// `start_abandoned_at_any_moment_leaves_nothing`.
const MOMENTS: [(&str, u64); 8] = [
    ("", 300),
    ("creating container", 0),
    ("creating container", 10),
    ("creating container", 25),
    ("indexing the layers", 100),
    ("creating container", 50),
    ("creating container", 100),
    ("creating container", 250),
];

/// Containers whose owner label names the minify process `pid`, in any state.
fn containers_of(pid: u32) -> Vec<String> {
    minify_fixtures::docker([
        "ps",
        "-a",
        "--no-trunc",
        "--filter",
        &format!("label={}=1", minify_runtime::LABEL),
        "--format",
        &format!(
            "{{{{.ID}}}} {{{{.State}}}} {{{{.Label \"{}\"}}}}",
            minify_runtime::OWNER_LABEL
        ),
    ])
    .unwrap()
    .lines()
    .filter(|l| {
        l.rsplit_once(' ')
            .is_some_and(|(_, o)| o.starts_with(&format!("{pid}-")))
    })
    .map(str::to_owned)
    .collect()
}

/// Cgroup directories of this name in any hierarchy.
fn cgroup_dirs(name: &str) -> Vec<String> {
    let root = Path::new("/sys/fs/cgroup");
    let dirs = fs_err::read_dir(root).unwrap().flatten().map(|m| m.path());
    std::iter::once(root.to_path_buf())
        .chain(dirs)
        .map(|d| d.join(name))
        .filter(|d| d.exists())
        .map(|d| d.display().to_string())
        .collect()
}

/// Read `child`'s stderr on a thread, a line at a time.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `minify -v run IMAGE --probe-http / --tag OUT`, its stderr read a line at a time, and
/// the signal (alternating SIGINT and SIGTERM by `i`) and exit code it is to be stopped with.
fn spawn_run(
    image: &str,
    out: &str,
    i: usize,
) -> (Child, mpsc::Receiver<String>, &'static str, i32) {
    let (signal, code) = if i.is_multiple_of(2) {
        ("INT", 130)
    } else {
        ("TERM", 143)
    };
    let mut child = minify()
        .args(["-v", "run", image, "--probe-http", "/", "--tag", out])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut child);
    (child, lines, signal, code)
}

/// Read `lines` into `log` until one contains `marker` (bounded: two minutes).
fn wait_for_line(lines: &mpsc::Receiver<String>, marker: &str, log: &mut String, run: usize) {
    let deadline = Instant::now() + Duration::from_mins(2);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("run {run}: no {marker:?} logged:\n{log}"));
        let seen = line.contains(marker);
        log.push_str(&line);
        log.push('\n');
        if seen {
            return;
        }
    }
}

#[test]
fn a_signal_at_any_moment_of_a_run_leaves_nothing() {
    let Some(_serial) = crate::run::serial_if_run() else {
        return;
    };
    let image = fixture("nginx").unwrap();
    let ctx = TestContext::new().unwrap();
    let mut failures = Vec::new();
    let mut during_create = 0;
    let mut pids = Vec::new();
    for (i, &(marker, delay)) in MOMENTS.iter().enumerate() {
        let after_create = marker == "creating container";
        let delay = Duration::from_millis(delay);
        let out = ctx.unique_image_ref("signalled");
        let (mut child, lines, signal, code) = spawn_run(&image, &out, i);
        let pid = child.id();
        pids.push(pid);
        let mut log = String::new();
        if !marker.is_empty() {
            wait_for_line(&lines, marker, &mut log, i);
            if after_create {
                during_create += 1;
            }
        }
        std::thread::sleep(delay);
        let sent = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(sent.success());
        let status = child.wait().unwrap();
        log.extend(lines.iter().map(|l| l + "\n"));
        let mut left = Vec::new();
        if status.code() != Some(code) {
            left.push(format!("exit {status}, not {code}"));
        }
        left.extend(containers_of(pid));
        left.extend(verify_images_of(pid));
        // Signalled after the create request began, the run had made its trace cgroup (the
        // container's parent): without its name in the log this check would test nothing.
        match logged_trace_cgroup(&log) {
            Some(cg) => left.extend(cgroup_dirs(&cg)),
            None if after_create => left.push("no trace cgroup named in the log".to_owned()),
            None => {}
        }
        if minify_fixtures::image_exists(&out) {
            left.push(format!("output {out}"));
        }
        eprintln!(
            "run {i}: SIG{signal} {} ms after {}: {}",
            delay.as_millis(),
            if marker.is_empty() {
                "the start"
            } else {
                marker
            },
            if left.is_empty() {
                "nothing left".to_owned()
            } else {
                format!("LEFT {left:?}")
            }
        );
        if !left.is_empty() {
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            failures.push(format!(
                "run {i} (SIG{signal} after {delay:?}): {left:?}\n{tail:?}"
            ));
            // Clean up for the next run (and the machine).
            for c in containers_of(pid) {
                let id = c.split(' ').next().unwrap_or_default().to_owned();
                let _ = minify_fixtures::docker(["rm", "-f", &id]);
            }
        }
    }
    // A create request that was still in flight when a run ended would have made its
    // container by now.
    std::thread::sleep(Duration::from_secs(2));
    for &pid in &pids {
        let late = containers_of(pid);
        if !late.is_empty() {
            failures.push(format!("minify {pid} left, seen only later: {late:?}"));
            for c in late {
                let id = c.split(' ').next().unwrap_or_default().to_owned();
                let _ = minify_fixtures::docker(["rm", "-f", &id]);
            }
        }
    }
    eprintln!(
        "{} runs ({during_create} signalled around the create request): {} left something",
        MOMENTS.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Ctrl-C while a daemon output is being verified: the output was written before
/// verification began and stays (as documented), and so does the allowlist; the message
/// says so instead of claiming everything was removed. The verify container and the probe
/// are gone. The probe (on the host) passes at once on the original image and hangs on the
/// minified one, which is when the signal is sent.
#[test]
fn ctrl_c_during_verify_says_what_stays() {
    let Some(_serial) = crate::run::serial_if_run() else {
        return;
    };
    let image = fixture("nginx").unwrap();
    let ctx = TestContext::new().unwrap();
    let out = ctx.unique_image_ref("interrupted-verify");
    let allowlist = ctx.temp_dir().join("allowlist.json");
    let marker = ctx.temp_dir().join("original-probed");
    let verifying = ctx.temp_dir().join("verifying");
    // `sleep 3931`: an odd length, so no one else's sleep is taken for the probe's.
    let probe = format!(
        "if [ -e {m} ]; then touch {v}; exec sleep 3931; fi; touch {m}",
        m = marker.display(),
        v = verifying.display()
    );
    let child = minify()
        .args(["run", &image, "--probe-cmd", &probe, "--tag", &out])
        .arg("--allowlist-out")
        .arg(&allowlist)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_mins(3);
    while !verifying.exists() {
        assert!(Instant::now() < deadline, "verification never began");
        std::thread::sleep(Duration::from_millis(100));
    }
    let stderr = crate::common::signal_and_wait(child, "INT", 130);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("minify: error: interrupted (Ctrl-C)"),
        "{stderr}"
    );
    assert!(
        !last.contains("everything this run made was removed"),
        "{last}"
    );
    assert!(
        last.contains(&format!(
            "the output {out} (written before verification, not verified)"
        )) && last.contains(&format!("the allowlist {}", allowlist.display()))
            && last.contains("kept"),
        "{last}"
    );
    // What it says stays, stays; everything else went.
    assert!(minify_fixtures::image_exists(&out), "{out} was removed");
    assert!(allowlist.exists());
    assert_eq!(containers_of(pid), Vec::<String>::new());
    assert_eq!(verify_images_of(pid), Vec::<String>::new());
    let sleeps = std::process::Command::new("pgrep")
        .args(["-f", "^sleep 3931$"])
        .output()
        .unwrap();
    assert!(sleeps.stdout.is_empty(), "the probe survived");
}

/// Temporary load tags (`<LOAD_REPO>:<short id>-<pid>`) of the minify process `pid`.
fn load_tags_of(pid: u32) -> Vec<String> {
    minify_fixtures::docker([
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}}",
        minify_image::LOAD_REPO,
    ])
    .unwrap()
    .lines()
    .filter(|r| r.ends_with(&format!("-{pid}")))
    .map(str::to_owned)
    .collect()
}

/// Ctrl-C and SIGTERM while a file source is being loaded into the daemon leave no
/// temporary image: neither the run's `minify-verify/...` copy nor the [`minify_image::LOAD_REPO`] tag the
/// load goes through (one run in twelve left that tag: the load future was dropped while the
/// daemon went on loading). The source is an image the daemon does not hold (nginx plus a
/// label, saved, then removed), so every run really loads it.
#[test]
fn a_signal_during_a_file_load_leaves_no_temporary_image() {
    let Some(_serial) = crate::run::serial_if_run() else {
        return;
    };
    let nginx = fixture("nginx").unwrap();
    let ctx = TestContext::new().unwrap();
    let tagged = ctx.unique_image_ref("load-src");
    let dockerfile = ctx.temp_dir().join("Dockerfile");
    fs_err::write(
        &dockerfile,
        format!("FROM {nginx}\nLABEL org.minify.test.load=\"{tagged}\"\n"),
    )
    .unwrap();
    minify_fixtures::docker([
        "build",
        "-q",
        "-t",
        &tagged,
        ctx.temp_dir().to_str().unwrap(),
    ])
    .unwrap();
    let archive = ctx.temp_dir().join("src.tar");
    minify_fixtures::docker(["save", "-o", archive.to_str().unwrap(), &tagged]).unwrap();
    minify_fixtures::docker(["rmi", &tagged]).unwrap();
    let source = format!("docker-archive:{}", archive.display());
    let mut failures = Vec::new();
    for (i, delay) in [0u64, 20, 60, 150, 300, 600].into_iter().enumerate() {
        let out = ctx.unique_image_ref("load-signalled");
        let (mut child, lines, signal, code) = spawn_run(&source, &out, i);
        let pid = child.id();
        let mut log = String::new();
        wait_for_line(&lines, "into the Docker daemon as", &mut log, i);
        std::thread::sleep(Duration::from_millis(delay));
        let sent = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(sent.success());
        let status = child.wait().unwrap();
        let mut left = Vec::new();
        if status.code() != Some(code) {
            left.push(format!("exit {status}, not {code}"));
        }
        left.extend(load_tags_of(pid));
        left.extend(verify_images_of(pid));
        left.extend(containers_of(pid));
        eprintln!(
            "run {i}: SIG{signal} {delay} ms into the load: {}",
            if left.is_empty() {
                "nothing left".to_owned()
            } else {
                format!("LEFT {left:?}")
            }
        );
        if !left.is_empty() {
            failures.push(format!("run {i} (SIG{signal} after {delay} ms): {left:?}"));
            for tag in load_tags_of(pid).into_iter().chain(verify_images_of(pid)) {
                let _ = minify_fixtures::docker(["rmi", &tag]);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
