//! Requests `minify run` can see cannot work are refused at once, before any container
//! exists: one line, exit 2. Whether a container was made is read from the run's own debug
//! log line that precedes every create request, and from Docker (no container of the
//! process is left).

use std::io::Write as _;
use std::process::{Command, Stdio};

use minify_fixtures::{TestContext, fixture, require_docker, require_ebpf, require_root};

use crate::common;

/// `FROM image` plus `lines`, built and tagged `tag` (tracked for removal).
fn derived(ctx: &TestContext, image: &str, lines: &str, tag: &str) {
    ctx.track_image(tag);
    let mut child = Command::new("docker")
        .args(["build", "-q", "-t", tag, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("FROM {image}\n{lines}\n").as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `--probe-http` on an image that exposes `0/tcp` (no server can listen there) or no TCP
/// port at all. Before, the first waited out the whole readiness timeout with a container
/// running, and the second ran the container only to fail the probe.
#[test]
fn probe_http_without_a_usable_port_is_refused_before_any_container() {
    if !(require_root() && require_docker() && require_ebpf()) {
        return;
    }
    let _serial = crate::run::SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ctx = TestContext::new().unwrap();
    let nginx = fixture("nginx").unwrap();
    let port0 = ctx.unique_image_ref("port-0");
    derived(&ctx, &nginx, "EXPOSE 0", &port0);
    let none = ctx.unique_image_ref("no-port");
    derived(
        &ctx,
        &fixture("base").unwrap(),
        "CMD [\"sleep\", \"60\"]",
        &none,
    );
    for (image, why) in [
        (&port0, "exposes port 0/tcp"),
        (&none, "exposes no TCP port"),
    ] {
        let out = ctx.unique_image_ref("never");
        // A short readiness timeout, so that the old behaviour fails this test quickly
        // instead of after a minute.
        let mut cmd = common::minify();
        cmd.args([
            "-v",
            "run",
            image,
            "--probe-http",
            "/",
            "--ready-timeout",
            "5",
        ])
        .args(["--tag", &out])
        .env("NO_COLOR", "1");
        let o = common::run(&mut cmd);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{image}: {stderr}");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("minify: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(
            errors[0].contains(why) && errors[0].contains("--probe-http"),
            "{}",
            errors[0]
        );
        assert!(
            !stderr.contains("creating container"),
            "{image}: a container was created first: {stderr}"
        );
        assert!(!minify_fixtures::image_exists(&out));
    }
}
