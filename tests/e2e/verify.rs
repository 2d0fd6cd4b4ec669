//! minify's verifier, tested against an image that really is broken: a server whose
//! allowlist, on purpose, lacks the files it reads per request. Each kind of probe (HTTP that
//! answers 500, closes without an answer, or is refused; `--probe-exec`; `--probe-cmd`;
//! HEALTHCHECK) passes on the original and must fail on the minified image, `minify run` must
//! exit 1 naming each, and the output must really be broken when run by hand: the verifier's
//! verdict is checked against the image itself, not taken on its word.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use minify_fixtures::{TestContext, fixture, http_get, wait_for_http};

use crate::common::{minify, run};

/// A server for port 8000 (Python, from the python-http fixture). `GET /NAME` answers 200
/// with the file `/srv/needs/NAME`; when that file cannot be read it answers by the name:
/// `close` closes the connection without a word, `refuse` stops listening and closes it (the
/// process stays, so later connections are refused), anything else answers 500.
const SERVER: &str = r#"
import os, signal, socket
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 8000))
srv.listen(16)
while True:
    c, _ = srv.accept()
    try:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = c.recv(4096)
            if not chunk:
                break
            head += chunk
        words = head.split(b" ")
        if len(words) < 2:
            continue  # a readiness check: connected, sent nothing
        name = words[1].decode().strip("/")
        try:
            with open("/srv/needs/" + name, "rb") as f:
                body = f.read()
        except OSError:
            if name == "close":
                continue
            if name == "refuse":
                # The listener first: the client, seeing this connection close, may
                # connect again at once, and must find nothing listening.
                srv.close()
                c.close()
                signal.pause()
            c.sendall(b"HTTP/1.0 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
            continue
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    except OSError:
        pass
    finally:
        c.close()
"#;

const NEEDS: [&str; 7] = ["500", "close", "refuse", "after", "exec", "cmd", "health"];

/// Builds the server image on top of the python-http fixture; tagged `tag`.
fn build_server_image(ctx: &TestContext, tag: &str) {
    let python = fixture("python-http").expect("python-http fixture");
    let dir = ctx.temp_dir().join("server-image");
    fs_err::create_dir_all(&dir).unwrap();
    fs_err::write(dir.join("server.py"), SERVER).unwrap();
    let files = NEEDS
        .iter()
        .map(|n| format!("echo '{n} is here' > /srv/needs/{n}"))
        .collect::<Vec<_>>()
        .join(" && ");
    fs_err::write(
        dir.join("Dockerfile"),
        format!(
            "FROM {python}\n\
             COPY server.py /srv/server.py\n\
             RUN mkdir -p /srv/needs && {files}\n\
             HEALTHCHECK --interval=1s --timeout=5s --retries=1 CMD [\"cat\", \"/srv/needs/health\"]\n\
             CMD [\"python3\", \"/srv/server.py\"]\n"
        ),
    )
    .unwrap();
    minify_fixtures::docker([
        "build".as_ref(),
        "-q".as_ref(),
        "-t".as_ref(),
        tag.as_ref(),
        dir.as_os_str(),
    ])
    .unwrap_or_else(|e| panic!("build the server image: {e:#}"));
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&fs_err::read_to_string(path).unwrap()).unwrap()
}

/// Every probe kind passes on the original and fails on an image whose allowlist lacks the
/// files they need; the run exits 1, names each failure on stderr and in the report's
/// `verify_failures`, and leaves the daemon output in place (it is written before verify).
/// Run by hand, that output is as broken as the verifier said, and the original works.
#[test]
fn every_probe_kind_fails_verification_on_a_broken_image() {
    let Some(_serial) = crate::run::serial_if_run() else {
        return;
    };
    let ctx = TestContext::new().unwrap();
    let image = ctx.unique_image_ref("verify-server");
    build_server_image(&ctx, &image);
    let out = ctx.unique_image_ref("verify-server-min");
    let report_path = ctx.temp_dir().join("report.json");
    let allowlist = ctx.temp_dir().join("allowlist.json");
    let cmd_probe = "docker exec \"$MINIFY_CONTAINER\" cat /srv/needs/cmd";
    let o = run(minify()
        .args(["run", &image, "--tag", &out])
        .args(["--probe-http", "/500", "--probe-http", "/close"])
        .args(["--probe-http", "/refuse", "--probe-http", "/after"])
        .args([
            "--probe-exec",
            "cat /srv/needs/exec",
            "--probe-cmd",
            cmd_probe,
        ])
        .args(["--exclude", "/srv/needs/*", "--probe-timeout", "20"])
        // A 5xx or a refused connection is retried within --ready-timeout before it counts
        // (issue 22): keep that short, the failures here are for good.
        .args(["--ready-timeout", "10"])
        .arg("--report")
        .arg(&report_path)
        .arg("--allowlist-out")
        .arg(&allowlist));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("verify: FAILED"), "{stderr}");

    // Each probe, by name, with what it saw.
    let expected = [
        ("--probe-http \"/500\"", "port 8000: HTTP 500"),
        ("--probe-http \"/close\"", "not an HTTP answer"),
        ("--probe-http \"/refuse\"", "not an HTTP answer"),
        ("--probe-http \"/after\"", "Connection refused"),
        ("--probe-exec \"cat /srv/needs/exec\"", "exit code 1"),
        (&format!("--probe-cmd {cmd_probe:?}"), "exit code 1"),
        ("HEALTHCHECK \"cat /srv/needs/health\"", "exit code 1"),
    ];
    let r = report(&report_path);
    assert_eq!(r["verify"], "failed", "{r:#}");
    let failures: Vec<&str> = r["verify_failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let probes = r["probes"].as_array().unwrap();
    assert_eq!(probes.len(), expected.len(), "{r:#}");
    for ((name, saw), p) in expected.iter().zip(probes) {
        assert_eq!(p["name"], *name, "{r:#}");
        assert_eq!(
            p["original"]["passed"], true,
            "{name} on the original: {p:#}"
        );
        assert_eq!(
            p["minified"]["passed"], false,
            "{name} on the minified: {p:#}"
        );
        let line = format!("{name}: FAILED (");
        assert!(
            failures
                .iter()
                .any(|f| f.starts_with(&line) && f.lines().next().unwrap().contains(saw)),
            "no verify failure {line}...{saw}...: {failures:#?}"
        );
        assert!(
            stderr
                .lines()
                .any(|l| l.trim_start().starts_with(&line) && l.contains(saw)),
            "{line}...{saw} not on stderr: {stderr}"
        );
    }

    // The files were left out, as asked.
    let al = minify_model::Allowlist::from_json(
        "allowlist",
        &fs_err::read_to_string(&allowlist).unwrap(),
    )
    .unwrap();
    assert!(al.paths.iter().any(|e| e.path.as_str() == "/srv/server.py"));
    assert!(
        !al.paths
            .iter()
            .any(|e| e.path.as_str().starts_with("/srv/needs/")),
        "excluded files kept"
    );

    // A daemon output is written before verification and stays after it failed; the report
    // says so, and names the image verified.
    assert!(minify_fixtures::image_exists(&out), "{out} was removed");
    assert_eq!(r["output_written"], true, "{r:#}");
    assert_eq!(r["verified_image"], out.as_str(), "{r:#}");

    // The verdict, checked by hand: the output really answers 500 where the original
    // answers 200, and the exec probe's file is really missing.
    for (img, status) in [(&image, 200), (&out, 500)] {
        let c = ctx.run_detached(img, &[]).unwrap();
        let addr = SocketAddr::new(ctx.container_ip(&c).unwrap(), 8000);
        let answer = wait_for_http(addr, "/500", Duration::from_mins(1), || {
            ctx.container_running(&c)
        })
        .unwrap();
        assert_eq!(answer.status, status, "{img}: {answer:?}");
        match ctx.exec(&c, &["cat", "/srv/needs/exec"]) {
            Ok(said) => assert!(status == 200 && said == "exec is here", "{img}: {said}"),
            Err(e) => assert!(
                status == 500 && format!("{e:#}").contains("No such file or directory"),
                "{img}: {e:#}"
            ),
        }
        // The 500 is not a fluke of the server: the same GET again.
        let again = http_get(addr, "/500", Duration::from_secs(10)).unwrap();
        assert_eq!(again.status, status, "{img}: {again:?}");
    }
}
