//! The `skeleton` default set end to end: the directories every container needs, whatever its
//! probe did. Real fixture images are minified by a real traced run, then the output is
//! checked without minify: run directly with `docker run` as another user, and read from its
//! `docker save` archive with `tar`.
//!
//! The tests share `run.rs`'s lock: each keeps both cores busy.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use minify_fixtures::{TestContext, fixture};

use crate::common::{minify, run};
use crate::run::serial_if_run;

/// `minify run IMAGE --probe-http / --tag OUT` plus `extra`; returns the report and the
/// allowlist's paths with their reasons.
fn minify_http(
    ctx: &TestContext,
    image: &str,
    out: &str,
    extra: &[&str],
) -> (serde_json::Value, BTreeMap<String, String>) {
    let report = ctx
        .temp_dir()
        .join(format!("{}.report.json", ctx.unique_name("r")));
    let allowlist = ctx
        .temp_dir()
        .join(format!("{}.allow.json", ctx.unique_name("a")));
    let o = run(minify()
        .args(["run", image, "--probe-http", "/", "--tag", out])
        .args(extra)
        .arg("--report")
        .arg(&report)
        .arg("--allowlist-out")
        .arg(&allowlist));
    assert_eq!(o.status.code(), Some(0), "minify run {image}");
    let report: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(&report).unwrap()).unwrap();
    let text = fs_err::read_to_string(&allowlist).unwrap();
    let al = minify_model::Allowlist::from_json("allowlist", &text).unwrap();
    let paths = al
        .paths
        .iter()
        .map(|e| (e.path.to_string(), e.reason.name().to_owned()))
        .collect();
    (report, paths)
}

/// `docker run --rm --user USER --entrypoint PROG IMAGE ARGS...`: exit status and output.
fn docker_run(image: &str, user: &str, prog: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new("docker")
        .args(["run", "--rm", "--network", "none", "--user", user])
        .args(["--entrypoint", prog, image])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

const MKSTEMP: &str = "import os, tempfile\n\
    fd, path = tempfile.mkstemp()\n\
    os.write(fd, b'x')\n\
    os.close(fd)\n\
    print('made', path, os.path.getsize(path))\n";

/// A fixture whose probe never makes a temporary file, minified, then run as nobody (uid
/// 65534, what Kubernetes' `runAsNonRoot` asks for) straight from Docker: the standard
/// library's `tempfile.mkstemp()` makes its file in `/tmp`. Without the skeleton set the
/// output has no `/tmp` and Python says "No usable temporary directory found".
#[test]
fn temporary_files_work_as_nobody_in_minified_python_images() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    // (fixture, its python, what else the check needs): the module `tempfile` is code the
    // probe never imports in python-http, so it is included (a file, not a directory: it
    // brings no /tmp with it); Flask's Werkzeug imports it already.
    let cases: [(&str, &str, &[&str]); 2] = [
        (
            "python-http",
            "python3",
            &["--include", "/usr/lib/python3.11/tempfile.py"],
        ),
        ("flask", "/app/venv/bin/python", &[]),
    ];
    for (name, python, extra) in cases {
        let image = fixture(name).expect("fixture image");
        let ctx = TestContext::new().unwrap();
        let out = ctx.unique_image_ref(&format!("skeleton-{name}"));
        let (report, paths) = minify_http(&ctx, &image, &out, extra);
        assert_eq!(report["verify"], "passed", "{report:#}");
        // The probe did not make /tmp necessary: the skeleton set is what kept it.
        assert_eq!(
            paths.get("/tmp").map(String::as_str),
            Some("default-set"),
            "{name}: /tmp not kept by a default set: {paths:#?}"
        );

        let (ok, text) = docker_run(&out, "65534", python, &["-c", MKSTEMP]);
        assert!(ok, "{name}: mkstemp as uid 65534 in {out}: {text}");
        assert!(
            text.starts_with("made /tmp/tmp") && text.trim_end().ends_with(" 1"),
            "{text}"
        );
    }
}

/// One entry of a layer tar as `tar -tv --numeric-owner` lists it.
#[derive(Debug)]
struct TarEntry {
    mode: String,
    owner: String,
}

/// The entries of the single layer of `image`, read from its `docker save` archive with the
/// system's `tar`, by path without the leading `/` and trailing `/`.
fn layer_entries(ctx: &TestContext, image: &str) -> BTreeMap<String, TarEntry> {
    let dir = ctx.temp_dir().join(ctx.unique_name("save"));
    fs_err::create_dir_all(&dir).unwrap();
    let archive = dir.join("image.tar");
    minify_fixtures::docker(["save", "-o", &archive.display().to_string(), image]).unwrap();
    untar(&archive, &dir);
    let manifest: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let layers = manifest[0]["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest:#}");
    let layer = dir.join(layers[0].as_str().unwrap());
    let o = Command::new("tar")
        .args(["-tvf"])
        .arg(&layer)
        .arg("--numeric-owner")
        .output()
        .unwrap();
    assert!(o.status.success(), "tar -tvf {}", layer.display());
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            // drwxrwx--- 1234/1234         0 2026-12-07 21:40 srv/data/
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = f.get(5)?.trim_start_matches("./").trim_end_matches('/');
            Some((
                name.to_owned(),
                TarEntry {
                    mode: f[0].to_owned(),
                    owner: f[1].to_owned(),
                },
            ))
        })
        .collect()
}

fn untar(archive: &Path, into: &Path) {
    let st = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap();
    assert!(st.success(), "tar -xf {}", archive.display());
}

/// The fixture runs as `USER app:app` (uid 1234) with home `/home/app` (0750, holding
/// `/etc/skel`'s files), `WORKDIR /srv/site` and `VOLUME /srv/data` (0770, holding a file).
/// Its probe reads none of the home, the volume or `/tmp`. The output holds each as its
/// directory alone, with the source's mode and owner; `--no-default-set skeleton` leaves
/// them out.
#[test]
fn home_volume_and_tmp_are_kept_as_empty_directories() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("skeleton").expect("fixture image");
    let ctx = TestContext::new().unwrap();
    let out = ctx.unique_image_ref("skeleton");
    let (report, paths) = minify_http(&ctx, &image, &out, &[]);
    assert_eq!(report["verify"], "passed", "{report:#}");

    let entries = layer_entries(&ctx, &out);
    let mode_owner = |p: &str| {
        let e = entries
            .get(p)
            .unwrap_or_else(|| panic!("{p} is not in {out}: {:#?}", entries.keys()));
        (e.mode.as_str(), e.owner.as_str())
    };
    assert_eq!(mode_owner("home/app"), ("drwxr-x---", "1234/1234"));
    assert_eq!(mode_owner("srv/data"), ("drwxrwx---", "1234/1234"));
    assert_eq!(mode_owner("tmp"), ("drwxrwxrwt", "0/0"));
    assert_eq!(mode_owner("var/tmp"), ("drwxrwxrwt", "0/0"));
    assert_eq!(mode_owner("root"), ("drwx------", "0/0"));
    assert_eq!(mode_owner("srv/site").1, "0/0");
    // Directories only: the volume's file and the home's skeleton files stay out.
    for dir in ["home/app/", "srv/data/", "tmp/", "var/tmp/", "root/"] {
        let inside: Vec<&String> = entries.keys().filter(|k| k.starts_with(dir)).collect();
        assert!(inside.is_empty(), "{dir} is not empty in {out}: {inside:?}");
    }

    let skeleton = report["default_sets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["set"] == "skeleton")
        .unwrap_or_else(|| panic!("no skeleton set in the report: {report:#}"));
    let added: Vec<&str> = skeleton["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for p in ["/home/app", "/srv/data", "/tmp", "/var/tmp", "/root"] {
        assert!(
            added.contains(&p),
            "{p} not reported as added: {skeleton:#}"
        );
    }
    assert_eq!(
        paths.get("/srv/data").map(String::as_str),
        Some("default-set")
    );

    // The image user's home is usable as the image user: a file can be made in it.
    let (ok, text) = docker_run(
        &out,
        "app",
        "python3",
        &[
            "-c",
            "import os; open(os.path.expanduser('~/f'), 'w').write('x'); print(os.path.expanduser('~'))",
        ],
    );
    assert!(ok && text.trim() == "/home/app", "{text}");

    // Off: none of it unless the trace needed it.
    let off = ctx.unique_image_ref("skeleton-off");
    let (report, paths) = minify_http(
        &ctx,
        &image,
        &off,
        &["--no-default-set", "skeleton", "--no-verify"],
    );
    for p in ["/home/app", "/srv/data", "/tmp", "/var/tmp", "/root"] {
        assert!(!paths.contains_key(p), "{p} kept with skeleton off");
    }
    assert!(
        report["default_sets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["set"] != "skeleton"),
        "{report:#}"
    );
}
