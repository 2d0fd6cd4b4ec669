//! `--sbom FILE` end to end (issue 15): the CycloneDX SBOM of a real minified fixture is
//! checked by the official schema validator (the CycloneDX Python library, installed by
//! `cargo xtask setup`), its packages against what the image itself says (`dpkg-query`,
//! `/etc/os-release` run inside the source image, not minify's reading of them) and against
//! what was kept; the copy stored in an OCI output is an OCI 1.1 artifact whose subject is the
//! image, and the layout stays readable; the same inputs give the same bytes. A bad `--sbom`
//! path is refused before anything runs.

use std::path::Path;
use std::process::Command;

use minify_fixtures::{fixture, require_cyclonedx_validator, validate_cyclonedx_1_5};
use serde_json::Value;

use crate::common::{minify, run};
use crate::run::serial_if_run;

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs_err::read(path).unwrap()).unwrap()
}

/// `sh -c script` in `image` (the source image, which has a shell), its stdout.
fn in_image(image: &str, script: &str) -> String {
    let o = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "sh",
            image,
        ])
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{script}: {o:?}");
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

fn component<'a>(sbom: &'a Value, name: &str) -> Option<&'a Value> {
    sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
}

#[test]
fn nginx_sbom_is_valid_cyclonedx_attached_to_the_oci_output_and_deterministic() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let Some(python) = require_cyclonedx_validator() else {
        return;
    };
    let ctx = minify_fixtures::TestContext::new().unwrap();
    let image = fixture("nginx").unwrap();
    let dir = ctx.temp_dir().join("out");
    let out = format!("oci:{}:min", dir.display());
    let sbom_path = ctx.temp_dir().join("run.cdx.json");
    let allowlist = ctx.temp_dir().join("allowlist.json");
    let report = ctx.temp_dir().join("report.json");
    let o = run(minify()
        .args(["run", &image, "--probe-http", "/", "--tag", &out])
        .arg("--sbom")
        .arg(&sbom_path)
        .arg("--allowlist-out")
        .arg(&allowlist)
        .arg("--report")
        .arg(&report));
    assert_eq!(o.status.code(), Some(0));
    let report = read_json(&report);
    assert_eq!(report["verify"], "passed", "{report:#}");

    // The official schema says it is CycloneDX 1.5.
    validate_cyclonedx_1_5(&python, &sbom_path).unwrap_or_else(|e| panic!("{e}"));

    // What it says, against the image's own word.
    let sbom = read_json(&sbom_path);
    let os_version = in_image(&image, ". /etc/os-release && echo \"$ID-$VERSION_ID\"");
    let arch = in_image(&image, "dpkg --print-architecture");
    // Bookworm's nginx-light is a metapackage: `nginx` owns /usr/sbin/nginx, nginx-light
    // only its docs (not kept), so the SBOM lists `nginx` and not nginx-light.
    for pkg in ["nginx", "libc6"] {
        let version = in_image(&image, &format!("dpkg-query -W -f '${{Version}}' {pkg}"));
        let c = component(&sbom, pkg).unwrap_or_else(|| panic!("{pkg} missing: {sbom:#}"));
        assert_eq!(c["version"], version.as_str());
        assert_eq!(
            c["purl"],
            format!("pkg:deb/debian/{pkg}@{version}?arch={arch}&distro={os_version}"),
            "{c:#}"
        );
    }
    // Nothing of the packages the workload never touched.
    for pkg in ["nginx-light", "apt", "bash", "dpkg", "perl-base"] {
        assert!(component(&sbom, pkg).is_none(), "{pkg} is listed");
    }
    // Each component's files are kept ones (in the allowlist), and really its own: dpkg's
    // list of the package in the source image names each (through usrmerge's links).
    let al = minify_model::Allowlist::from_json(
        "allowlist",
        &fs_err::read_to_string(&allowlist).unwrap(),
    )
    .unwrap();
    let kept: std::collections::HashSet<&str> = al.paths.iter().map(|e| e.path.as_str()).collect();
    for c in sbom["components"].as_array().unwrap() {
        let occ = c["evidence"]["occurrences"].as_array().unwrap();
        assert!(!occ.is_empty(), "{c:#}");
        for o in occ {
            let loc = o["location"].as_str().unwrap();
            assert!(kept.contains(loc), "{loc} is not kept: {c:#}");
        }
    }
    let nginx_files = in_image(&image, "dpkg -L nginx");
    let listed = component(&sbom, "nginx").unwrap()["evidence"]["occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["location"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert!(listed.contains(&"/usr/sbin/nginx".to_owned()), "{listed:?}");
    for l in &listed {
        let unmerged = l.strip_prefix("/usr").unwrap_or(l);
        assert!(
            nginx_files.lines().any(|f| f == l || f == unmerged),
            "{l} is not nginx's"
        );
    }
    // The same packages, with the same figures, as the report's audit of the output.
    let mut audited: Vec<(String, String, String)> = report["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] != "absent")
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["state"].as_str().unwrap().to_owned(),
                p["kept_files"].to_string(),
            )
        })
        .collect();
    let prop = |c: &Value, name: &str| {
        c["properties"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["value"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let mut listed_pkgs: Vec<(String, String, String)> = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                prop(c, "minify:state"),
                prop(c, "minify:kept-files"),
            )
        })
        .collect();
    audited.sort();
    listed_pkgs.sort();
    assert_eq!(listed_pkgs, audited);
    // The metadata names both images and the tool.
    let m = &sbom["metadata"];
    assert_eq!(m["component"]["type"], "container");
    assert_eq!(m["component"]["version"], report["output_id"]);
    assert_eq!(
        m["component"]["pedigree"]["ancestors"][0]["version"],
        al.source.digest.as_str()
    );
    assert_eq!(m["tools"]["components"][0]["name"], "minify");

    // The layout holds it as a referrer of the image, and stays readable.
    let index = read_json(&dir.join("index.json"));
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{index:#}");
    let blob = |digest: &Value| {
        dir.join("blobs/sha256")
            .join(&digest.as_str().unwrap()[7..])
    };
    let artifact = read_json(&blob(&manifests[1]["digest"]));
    assert_eq!(artifact["artifactType"], "application/vnd.cyclonedx+json");
    assert_eq!(manifests[1]["artifactType"], artifact["artifactType"]);
    assert_eq!(artifact["subject"]["digest"], manifests[0]["digest"]);
    assert_eq!(
        fs_err::read(blob(&artifact["layers"][0]["digest"])).unwrap(),
        fs_err::read(&sbom_path).unwrap()
    );
    let image_manifest = read_json(&blob(&manifests[0]["digest"]));
    assert_eq!(image_manifest["config"]["digest"], report["output_id"]);
    for r in [format!("oci:{}", dir.display()), out.clone()] {
        let o = run(minify().args(["inspect", "--json", &r]));
        assert_eq!(o.status.code(), Some(0), "minify inspect {r}");
    }
    if which("skopeo") {
        // skopeo (containers/image) picks the image by its ref name among the manifests.
        let o = Command::new("skopeo")
            .args(["inspect", &out])
            .output()
            .unwrap();
        assert!(o.status.success(), "skopeo inspect {out}: {o:?}");
        let shown: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(shown["Digest"], manifests[0]["digest"], "{shown:#}");
    } else {
        eprintln!("NOTE: skopeo is not installed; the layout was read by minify inspect only");
    }

    // Deterministic: `minify build` from the allowlist to the same output writes the same
    // bytes, twice.
    for n in 0..2 {
        let again = ctx.temp_dir().join(format!("build-{n}.cdx.json"));
        let o = run(minify()
            .args(["build", &image, "--force", "--tag", &out, "--allowlist"])
            .arg(&allowlist)
            .arg("--sbom")
            .arg(&again));
        assert_eq!(o.status.code(), Some(0));
        assert!(
            fs_err::read(&again).unwrap() == fs_err::read(&sbom_path).unwrap(),
            "build {n} wrote another SBOM than the run"
        );
    }
}

/// Python distributions in a venv are `pkg:pypi` components, versions as the venv's own
/// `importlib.metadata` gives them; one the workload never imported (pip) is not listed.
#[test]
fn flask_sbom_lists_the_venvs_distributions_as_pypi() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let Some(python) = require_cyclonedx_validator() else {
        return;
    };
    let ctx = minify_fixtures::TestContext::new().unwrap();
    let image = fixture("flask").unwrap();
    let out = format!("oci:{}", ctx.temp_dir().join("out").display());
    let sbom_path = ctx.temp_dir().join("flask.cdx.json");
    let o = run(minify()
        .args([
            "run",
            &image,
            "--probe-http",
            "/",
            "--no-verify",
            "--tag",
            &out,
        ])
        .arg("--sbom")
        .arg(&sbom_path));
    assert_eq!(o.status.code(), Some(0));
    validate_cyclonedx_1_5(&python, &sbom_path).unwrap_or_else(|e| panic!("{e}"));
    let sbom = read_json(&sbom_path);
    let purls: Vec<&str> = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["purl"].as_str())
        .collect();
    for (dist, purl_name) in [
        ("flask", "flask"),
        ("werkzeug", "werkzeug"),
        ("jinja2", "jinja2"),
    ] {
        let version = in_image(
            &image,
            &format!(
                "/app/venv/bin/python -c \"import importlib.metadata as m; print(m.version('{dist}'))\""
            ),
        );
        let want = format!("pkg:pypi/{purl_name}@{version}");
        assert!(purls.contains(&want.as_str()), "{want} not in {purls:#?}");
    }
    assert!(
        !purls.iter().any(|p| p.starts_with("pkg:pypi/pip@")),
        "{purls:#?}"
    );
    // The interpreter is Debian's.
    assert!(
        purls
            .iter()
            .any(|p| p.starts_with("pkg:deb/debian/libpython3.11-minimal@")),
        "{purls:#?}"
    );
}

fn which(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A directory, a path under a missing directory, or a device as `--sbom`: one error line
/// naming it, exit 2, before anything runs (the image named does not even exist: the
/// refusal comes before it is looked up), and nothing written.
#[test]
fn bad_sbom_paths_are_refused_before_anything_runs() {
    let ctx = minify_fixtures::TestContext::new().unwrap();
    let dir = ctx.temp_dir().join("a-dir");
    fs_err::create_dir(&dir).unwrap();
    let missing = ctx.temp_dir().join("no/such/dir/sbom.json");
    let allowlist = ctx.temp_dir().join("allowlist.json");
    for (path, says) in [
        (dir.as_path(), "is a directory"),
        (missing.as_path(), "does not exist"),
        (Path::new("/dev/null"), "is not a regular file"),
    ] {
        for args in [
            vec!["run", "minify-test/never-there:1", "--probe-http", "/"],
            vec!["build", "minify-test/never-there:1", "--allowlist"],
        ] {
            let mut cmd = minify();
            cmd.args(&args);
            if args[0] == "build" {
                cmd.arg(&allowlist);
            }
            let o = run(cmd.arg("--sbom").arg(path));
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{stderr}");
            let lines: Vec<&str> = stderr.lines().collect();
            assert_eq!(lines.len(), 1, "{stderr}");
            assert!(
                lines[0].contains(&format!("--sbom {}: ", path.display()))
                    && lines[0].contains(says),
                "{stderr}"
            );
        }
    }
    // Nothing was made: the directory is still empty, the missing one still missing.
    assert_eq!(fs_err::read_dir(&dir).unwrap().count(), 0);
    assert!(!ctx.temp_dir().join("no").exists());
    assert_eq!(fs_err::read_dir(ctx.temp_dir()).unwrap().count(), 1);
}
