//! minify-runtime against a real Docker engine and real fixture images: container lifecycle,
//! every probe kind, timeouts, and that nothing (container, cgroup directory) is left behind.

use std::path::Path;
use std::time::{Duration, Instant};

use minify_fixtures::{fixture, require_docker, require_root};
use minify_runtime::{Probe, ProbeOutcome, Readiness, RunSpec, Runtime, RuntimeError};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Whether the engine knows this container; any other Docker failure than "no such
/// container" panics, so "it is gone" is never concluded from an engine error.
fn container_exists(id: &str) -> bool {
    match minify_fixtures::docker(["container", "inspect", "--format", "{{.Id}}", id]) {
        Ok(_) => true,
        Err(e) if minify_fixtures::is_no_such(&e) => false,
        Err(e) => panic!("could not ask Docker about container {id}: {e:#}"),
    }
}

fn v1_dirs(parent: &str) -> Vec<String> {
    let mut out = Vec::new();
    for m in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        if m.file_name() == "unified" {
            continue;
        }
        let d = m.path().join(parent);
        if d.exists() {
            out.push(d.display().to_string());
        }
    }
    out
}

/// The v2 directory is the tracer's to make and remove; in these tests there is no tracer,
/// so make it first (as the tracer would) and remove it afterwards.
struct V2Dir(std::path::PathBuf);
impl V2Dir {
    fn new(parent: &str) -> Self {
        let p = Path::new("/sys/fs/cgroup/unified").join(parent);
        let _ = std::fs::create_dir(&p);
        V2Dir(p)
    }
}
impl Drop for V2Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn nginx_lifecycle_probes_and_cleanup() -> anyhow::Result<()> {
    if !require_docker() || !require_root() {
        return Ok(());
    }
    let image = fixture("nginx")?;
    let parent = format!("minify-rt-test-{}", std::process::id());
    let _v2 = V2Dir::new(&parent);
    rt().block_on(async {
        let runtime = Runtime::connect().await?;
        let info = runtime.inspect_image(&image).await?;
        assert_eq!(info.tcp_ports(), vec![80]);
        let mut spec = RunSpec::new(&image);
        spec.cgroup_parent = Some(parent.clone());
        let c = runtime.start(&spec).await?;
        let id = c.id().to_owned();
        assert!(c.name().starts_with("minify-"));
        assert!(c.ip().is_some());
        assert!(
            !v1_dirs(&parent).is_empty(),
            "docker made v1 dirs for the parent"
        );
        let ready = c.wait_ready(Duration::from_secs(30)).await?;
        assert!(
            matches!(ready, Readiness::Ready { ref ports, .. } if ports == &[80]),
            "{ready:?}"
        );

        let t = Duration::from_secs(20);
        let http = c.run_probe(&Probe::Http("/".into()), t).await;
        assert!(http.passed, "{}\n{}", http.summary(), http.output);
        assert_eq!(
            http.outcome,
            ProbeOutcome::Http {
                statuses: vec![(80, 200)]
            }
        );

        let missing = c.run_probe(&Probe::Http("/no-such-page".into()), t).await;
        assert!(missing.passed, "404 is an answer: {}", missing.summary());

        let exec = c.run_probe(&Probe::Exec("nginx -v".into()), t).await;
        assert!(exec.passed && !exec.used_shell, "{}", exec.summary());
        assert!(exec.output.contains("nginx version"), "{}", exec.output);

        let shell = c
            .run_probe(&Probe::Exec("echo hi | tr a-z A-Z".into()), t)
            .await;
        assert!(shell.passed && shell.used_shell, "{}", shell.summary());
        assert_eq!(shell.output.trim(), "HI");

        let fails = c.run_probe(&Probe::Exec("false".into()), t).await;
        assert_eq!(fails.outcome, ProbeOutcome::Exited { code: 1 });
        assert!(!fails.passed);

        let not_found = c.run_probe(&Probe::Exec("no-such-binary".into()), t).await;
        assert!(!not_found.passed, "{}", not_found.summary());

        let host = c
            .run_probe(
                &Probe::Cmd(format!(
                    "test \"$MINIFY_CONTAINER\" = {id} && echo \"host=$MINIFY_HOST\""
                )),
                t,
            )
            .await;
        assert!(host.passed, "{}: {}", host.summary(), host.output);
        assert_eq!(host.output.trim(), format!("host={}", c.ip().unwrap()));

        // A hanging probe is killed at its timeout, with everything it started. The sleeps
        // have odd lengths: the leftover check looks host-wide, and a `sleep 300` of anyone
        // else on the machine must not fail it.
        let start = Instant::now();
        let hang = c
            .run_probe(
                &Probe::Cmd("sleep 3917 & sleep 3919".into()),
                Duration::from_secs(1),
            )
            .await;
        assert_eq!(hang.outcome, ProbeOutcome::TimedOut { secs: 1 });
        // A watchdog, not a measurement: returning at all within a minute shows the probe
        // did not wait for the sleeps it started (they would hold it for an hour).
        assert!(
            start.elapsed() < Duration::from_mins(1),
            "watchdog (not a timing measurement): a 1 s probe timeout returned after {:?}",
            start.elapsed()
        );
        let hang = c
            .run_probe(&Probe::Exec("sleep 3917".into()), Duration::from_secs(1))
            .await;
        assert_eq!(hang.outcome, ProbeOutcome::TimedOut { secs: 1 });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ps = c
            .run_probe(&Probe::Exec("cat /proc/loadavg".into()), t)
            .await;
        assert!(ps.passed);
        let pgrep = std::process::Command::new("pgrep")
            .args(["-f", "sleep 391[79]"])
            .output()?;
        assert!(
            pgrep.stdout.is_empty(),
            "leftover sleeps: {}",
            String::from_utf8_lossy(&pgrep.stdout)
        );

        // nginx's StopSignal is SIGQUIT: a graceful stop well inside the timeout.
        let code = c.stop().await?;
        assert_eq!(code, Some(0), "nginx stopped cleanly on its stop signal");
        c.remove().await?;
        assert!(!container_exists(&id));
        assert_eq!(v1_dirs(&parent), Vec::<String>::new());
        anyhow::Ok(())
    })
}

/// Containers, in any state, whose owner label is `owner` (this test process, shared by
/// the tests running beside each other) and whose cgroup parent is `parent` (this test's).
fn containers_owned_by(owner: &str, parent: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--no-trunc", "--filter"])
        .arg(format!("label={}={owner}", minify_runtime::OWNER_LABEL))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|id| {
            std::process::Command::new("docker")
                .args(["inspect", "--format", "{{.HostConfig.CgroupParent}}", id])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == parent)
        })
        .map(str::to_owned)
        .collect()
}

/// `start` abandoned at 50 moments spread over its create request and the start that
/// follows, the way Ctrl-C drops the pipeline's future: no container is left, in any state,
/// and no v1 cgroup directory; not right away, and not after the daemon had time to finish
/// a request that was in flight. (Before the create request had a guard, a drop while the
/// daemon was creating left a `created` container in about a third of these.)
#[test]
fn start_abandoned_at_any_moment_leaves_nothing() -> anyhow::Result<()> {
    if !require_docker() || !require_root() {
        return Ok(());
    }
    let image = fixture("nginx")?;
    let parent = format!("minify-rt-abandon-{}", std::process::id());
    let _v2 = V2Dir::new(&parent);
    let result = rt().block_on(async {
        let runtime = Runtime::connect().await?;
        let owner = runtime.owner().to_string();
        let mut spec = RunSpec::new(&image);
        spec.cgroup_parent = Some(parent.clone());
        // Warm: the image's config is cached by the daemon, so the moments below fall in
        // the create and start requests rather than in the inspect before them.
        drop(runtime.start(&spec).await?);
        let mut finished = 0;
        let mut left = std::collections::BTreeMap::new();
        for i in 0..50u64 {
            let delay = Duration::from_millis(i * 7);
            match tokio::time::timeout(delay, runtime.start(&spec)).await {
                // Finished first: dropped here, as the pipeline's guard would be.
                Ok(c) => {
                    drop(c?);
                    finished += 1;
                }
                Err(_elapsed) => {}
            }
            for c in containers_owned_by(&owner, &parent) {
                left.entry(c).or_insert(delay);
            }
            assert_eq!(v1_dirs(&parent), Vec::<String>::new(), "after {delay:?}");
        }
        anyhow::Ok((owner, finished, left))
    })?;
    let (owner, finished, mut left) = result;
    // A request still in flight would have ended by now.
    std::thread::sleep(Duration::from_secs(2));
    for c in containers_owned_by(&owner, &parent) {
        left.entry(c).or_insert(Duration::MAX);
    }
    for c in left.keys() {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", c])
            .output();
    }
    assert!(
        left.is_empty(),
        "{} of 50 left a container behind (abandoned after, MAX: seen only later): {left:?}",
        left.len()
    );
    assert!(
        finished < 45,
        "only {finished} of 50 starts were abandoned before they finished: the moments miss the create request"
    );
    Ok(())
}

#[test]
fn drop_removes_the_container() -> anyhow::Result<()> {
    if !require_docker() || !require_root() {
        return Ok(());
    }
    let image = fixture("redis")?;
    let parent = format!("minify-rt-drop-{}", std::process::id());
    let _v2 = V2Dir::new(&parent);
    let id = rt().block_on(async {
        let runtime = Runtime::connect().await?;
        let mut spec = RunSpec::new(&image);
        spec.cgroup_parent = Some(parent.clone());
        let c = runtime.start(&spec).await?;
        c.wait_ready(Duration::from_secs(30)).await?;
        let ping = c
            .run_probe(
                &Probe::Exec("redis-cli ping".into()),
                Duration::from_secs(10),
            )
            .await;
        assert!(
            ping.passed && ping.output.contains("PONG"),
            "{}",
            ping.summary()
        );
        let id = c.id().to_owned();
        assert!(container_exists(&id));
        // Dropped inside the runtime, as a cancelled pipeline future would be.
        drop(c);
        anyhow::Ok(id)
    })?;
    assert!(!container_exists(&id));
    assert_eq!(v1_dirs(&parent), Vec::<String>::new());
    Ok(())
}

#[test]
fn missing_image_and_early_exit() -> anyhow::Result<()> {
    if !require_docker() {
        return Ok(());
    }
    let image = fixture("python-http")?;
    rt().block_on(async {
        let runtime = Runtime::connect().await?;
        let err = runtime
            .start(&RunSpec::new("minify-no-such/image:1"))
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::ImageNotFound { .. }), "{err}");
        assert!(!err.is_environment());
        assert_eq!(
            err.to_string(),
            "image minify-no-such/image:1 is not in the Docker daemon"
        );

        // An entrypoint that exits at once: wait_ready reports the exit, not a timeout.
        let mut spec = RunSpec::new(&image);
        spec.overrides.cmd = Some(vec![
            "python3".into(),
            "-c".into(),
            "raise SystemExit(3)".into(),
        ]);
        let c = runtime.start(&spec).await?;
        let r = c.wait_ready(Duration::from_secs(30)).await?;
        assert_eq!(r, Readiness::Exited { code: 3 });
        assert_eq!(c.wait_exit(Duration::from_secs(5)).await?, Some(3));
        c.remove().await?;
        anyhow::Ok(())
    })
}
