//! The registry transport against a real registry (Debian's docker-registry, started per
//! test on 127.0.0.1): an image pushed there with skopeo is minified registry to registry,
//! and what minify pushed is read back with skopeo (its digest, its image run with
//! `docker run` and answering). Failures (a wrong password, an unknown tag, a blob whose
//! bytes are not its digest, the registry killed mid-pull) each give one error line and
//! leave no temporary directory behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use minify_fixtures::{
    REGISTRY_PASSWORD, REGISTRY_USER, Registry, Security, TestContext, docker_config, fixture,
    require_docker, require_ebpf, require_registry, require_root,
};

use crate::common;

/// Each test pushes the nginx fixture and pulls it again: one at a time on two cores.
static SERIAL: Mutex<()> = Mutex::new(());

const NAME: &str = "fixture/nginx:1";

/// The one `minify: error:` line of a run that exited with `code`.
fn one_error(o: &Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("minify: error:"))
        .collect();
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert_eq!(lines.len(), 1, "stderr: {err}");
    lines[0].to_owned()
}

/// A fresh `TMPDIR` for minify, to see that it leaves nothing there.
fn tmpdir(ctx: &TestContext, name: &str) -> PathBuf {
    let d = ctx.temp_dir().join(name);
    fs_err::create_dir_all(&d).unwrap();
    d
}

fn assert_empty(dir: &Path) {
    let left: Vec<_> = fs_err::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "left behind in {}: {left:?}",
        dir.display()
    );
}

/// `minify ARGS` with `TMPDIR` and `DOCKER_CONFIG` set.
fn minify(tmp: &Path, config: Option<&Path>, args: &[String]) -> Command {
    let mut c = common::minify();
    c.env("TMPDIR", tmp).args(args);
    match config {
        Some(d) => c.env("DOCKER_CONFIG", d),
        // An empty config: no credentials, whatever the machine's ~/.docker holds.
        None => c.env("DOCKER_CONFIG", tmp.join("no-docker-config")),
    };
    c
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

#[test]
fn tls_and_auth_registry_to_registry_and_back() {
    if !(require_root() && require_docker() && require_ebpf() && require_registry()) {
        return;
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ctx = TestContext::new().unwrap();
    let reg = Registry::start(Security::TlsWithAuth).unwrap();
    reg.push_from_daemon(&fixture("nginx").unwrap(), NAME)
        .unwrap();
    let good = docker_config(ctx.temp_dir(), &reg.addr, REGISTRY_USER, REGISTRY_PASSWORD);
    let bad = docker_config(ctx.temp_dir(), &reg.addr, REGISTRY_USER, "wrong-password");
    let access = reg.access_args("");
    let src = reg.reference(NAME);

    // A wrong password: one line that says the registry refused, nothing left.
    let tmp = tmpdir(&ctx, "tmp-denied");
    let mut args = s(&["inspect", &src]);
    args.extend(access.clone());
    let o = common::run(&mut minify(&tmp, Some(&bad), &args));
    let line = one_error(&o, 2);
    assert!(line.contains("refused access"), "{line}");
    assert!(!line.contains("wrong-password"), "{line}");
    assert_empty(&tmp);
    // No credentials at all: refused the same way.
    let o = common::run(&mut minify(&tmp, None, &args));
    assert!(one_error(&o, 2).contains("refused access"));
    assert_empty(&tmp);

    // Registry to registry, over TLS with the CA from --cert-dir and the password from
    // DOCKER_CONFIG.
    let out = reg.reference("fixture/nginx:1-min");
    let report = ctx.temp_dir().join("report.json");
    let allowlist = ctx.temp_dir().join("allowlist.json");
    let mut args = s(&["run", &src, "-o", &out, "--probe-http", "/", "--report"]);
    args.push(report.display().to_string());
    args.push("--allowlist-out".into());
    args.push(allowlist.display().to_string());
    args.extend(access.clone());
    let tmp = tmpdir(&ctx, "tmp-run");
    let o = common::run(&mut minify(&tmp, Some(&good), &args));
    assert_eq!(o.status.code(), Some(0));
    assert_empty(&tmp);
    let doc: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(doc["status"], "verified", "{doc}");
    let pushed = reg.digest_of("fixture/nginx:1-min").unwrap();
    assert!(pushed.starts_with("sha256:"), "{pushed}");
    assert_eq!(doc["output_digest"], pushed.as_str(), "{doc}");

    // What the registry holds, pulled by skopeo and run by docker, serves the page.
    let back = ctx.unique_image_ref("registry-back");
    reg.pull_to_daemon("fixture/nginx:1-min", &back).unwrap();
    minify_fixtures::check_fixture("nginx", &back).unwrap();

    // build from the registry to the registry: the same allowlist gives the same image, so
    // the same manifest digest.
    let mut args = s(&["build", &src, "--allowlist"]);
    args.push(allowlist.display().to_string());
    args.extend(s(&["--tag", &reg.reference("fixture/nginx:built")]));
    args.extend(access);
    let o = common::run(&mut minify(&tmp, Some(&good), &args));
    assert_eq!(o.status.code(), Some(0));
    assert_empty(&tmp);
    let built = reg.digest_of("fixture/nginx:built").unwrap();
    assert_eq!(built, pushed);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!("as {built}")),
        "build names the pushed digest"
    );
}

#[test]
fn registry_failures_give_one_line_and_leave_nothing() {
    if !(require_docker() && require_registry()) {
        return;
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ctx = TestContext::new().unwrap();
    let mut reg = Registry::start(Security::Plain).unwrap();
    let nginx = fixture("nginx").unwrap();
    reg.push_from_daemon(&nginx, NAME).unwrap();
    let tmp = tmpdir(&ctx, "tmp");
    let inspect = |reg: &Registry, name: &str| {
        let mut args = s(&["inspect", "--json", &reg.reference(name)]);
        args.extend(reg.access_args(""));
        minify(&tmp, None, &args)
    };

    // Pulled over plain HTTP, the image is the daemon's: the same id.
    let o = common::run(&mut inspect(&reg, NAME));
    assert_eq!(o.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = minify_fixtures::docker(["image", "inspect", "--format", "{{.Id}}", &nginx]).unwrap();
    assert_eq!(doc["id"], id.trim());
    assert_empty(&tmp);

    // A multi-platform index (made here: the fixture is one platform) resolves to this
    // machine's image; a platform it lacks is one line that lists what it has.
    // The other platform's entry names another image (the static fixture), so taking the
    // wrong entry gives another id.
    reg.push_from_daemon(&fixture("static").unwrap(), "fixture/nginx:other")
        .unwrap();
    let entry = |name: &str, platform: serde_json::Value| {
        let manifest = reg.raw_manifest(name).unwrap();
        let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        serde_json::json!({
            "mediaType": m["mediaType"],
            "digest": format!("sha256:{}", minify_fixtures::sha256_hex(&manifest)),
            "size": manifest.len(), "platform": platform,
        })
    };
    let host_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let other = if host_arch == "amd64" {
        "arm64"
    } else {
        "amd64"
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            entry(
                "fixture/nginx:other",
                serde_json::json!({"os": "linux", "architecture": other})
            ),
            entry(NAME, serde_json::json!({"os": "linux", "architecture": host_arch})),
        ],
    });
    reg.put_manifest(
        "fixture/nginx",
        "multi",
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let o = common::run(&mut inspect(&reg, "fixture/nginx:multi"));
    assert_eq!(o.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["id"], id.trim());
    let mut cmd = inspect(&reg, "fixture/nginx:multi");
    cmd.args(["--platform", "linux/s390x"]);
    let line = one_error(&common::run(&mut cmd), 2);
    assert!(line.contains("no image for linux/s390x"), "{line}");
    assert!(line.contains(&format!("linux/{host_arch}")), "{line}");
    assert_empty(&tmp);

    // Without --tls-verify=false, HTTPS to a plain HTTP registry: unreachable, exit 3.
    let o = common::run(&mut minify(
        &tmp,
        None,
        &s(&["inspect", &reg.reference(NAME)]),
    ));
    let line = one_error(&o, 3);
    assert!(line.contains("cannot reach the registry"), "{line}");
    assert!(line.contains("--tls-verify=false"), "{line}");
    assert_empty(&tmp);

    // An unknown tag.
    let o = common::run(&mut inspect(&reg, "fixture/nginx:no-such-tag"));
    assert!(one_error(&o, 2).contains("does not exist"));
    assert_empty(&tmp);

    // The registry killed while minify streams the biggest layer: exit 3, and the partial
    // download is gone. Loopback is fast, so the kill can come after the last byte; such an
    // attempt (exit 0) is retried.
    let mut caught = false;
    for _ in 0..8 {
        let mut child = inspect(&reg, NAME)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !has_partial(&tmp) && start.elapsed() < Duration::from_secs(30) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        reg.kill();
        let o = child.wait_with_output().unwrap();
        reg.restart().unwrap();
        if o.status.code() == Some(0) {
            continue;
        }
        let line = one_error(&o, 3);
        eprintln!("killed mid-pull: {line}");
        assert!(line.contains("127.0.0.1"), "{line}");
        assert_empty(&tmp);
        caught = true;
        break;
    }
    assert!(caught, "the registry was never killed mid-pull in 8 tries");

    // A blob whose bytes are not its digest (one byte changed in the registry's storage).
    let layers = reg.layers_of(NAME).unwrap();
    let biggest = layers
        .iter()
        .max_by_key(|d| fs_err::metadata(reg.blob_path(d)).unwrap().len())
        .unwrap();
    let path = reg.blob_path(biggest);
    let mut bytes = fs_err::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs_err::write(&path, &bytes).unwrap();
    let o = common::run(&mut inspect(&reg, NAME));
    let line = one_error(&o, 2);
    assert!(line.contains(biggest.as_str()), "{line}");
    assert!(line.contains("refusing the image"), "{line}");
    assert_empty(&tmp);
}

/// Whether a minify pull under `tmp` is writing a blob now.
fn has_partial(tmp: &Path) -> bool {
    let Ok(dirs) = fs_err::read_dir(tmp) else {
        return false;
    };
    dirs.flatten().any(|d| {
        fs_err::read_dir(d.path().join("blobs/sha256")).is_ok_and(|blobs| {
            blobs.flatten().any(|b| {
                b.file_name().to_string_lossy().ends_with(".partial")
                    && b.metadata().is_ok_and(|m| m.len() > 0)
            })
        })
    })
}
