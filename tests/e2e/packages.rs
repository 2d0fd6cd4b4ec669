//! `--granularity package` end to end (issue 14): real fixture images, the real tracer and the
//! real engine. Each test minifies a fixture with its plain probe twice, with `--granularity
//! file` and `package`, then runs in the minified image a code path the probe never walked,
//! checked by the program's own output (not by minify's verifier): it must fail with `file`
//! and work with `package`. And the package rule must add no shell, package manager or other
//! `bin/` executable.
//!
//! The tests share `run.rs`'s lock: each keeps both cores busy.

use std::path::PathBuf;
use std::process::Command;

use minify_fixtures::{TestContext, fixture};
use minify_model::Allowlist;

use crate::common::{minify, run};
use crate::run::serial_if_run;

/// Never added by the package rule (the workload of these fixtures runs none of them).
const NEVER_ADDED: [&str; 9] = [
    "/bin/sh",
    "/usr/bin/sh",
    "/usr/bin/dash",
    "/bin/bash",
    "/usr/bin/bash",
    "/usr/bin/dpkg",
    "/usr/bin/apt",
    "/usr/bin/apt-get",
    "/usr/bin/iconv",
];

struct Minified {
    out: String,
    report: serde_json::Value,
    allowlist: Allowlist,
    allowlist_path: PathBuf,
}

/// `minify run IMAGE PROBES --granularity G`, verified by minify (the probe passes on the
/// output) and written to the daemon.
fn minify_with(ctx: &TestContext, image: &str, probes: &[&str], granularity: &str) -> Minified {
    let out = ctx.unique_image_ref(&format!("pkg-{granularity}"));
    let allowlist_path = ctx.temp_dir().join(format!("{granularity}.allowlist.json"));
    let report_path = ctx.temp_dir().join(format!("{granularity}.report.json"));
    let o = run(minify()
        .args(["run", image])
        .args(probes)
        .args(["--granularity", granularity, "--tag", &out])
        .arg("--allowlist-out")
        .arg(&allowlist_path)
        .arg("--report")
        .arg(&report_path));
    assert_eq!(
        o.status.code(),
        Some(0),
        "minify run --granularity {granularity}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["verify"], "passed", "{report:#}");
    assert_eq!(report["granularity"], granularity);
    let allowlist = Allowlist::from_json(
        "allowlist",
        &fs_err::read_to_string(&allowlist_path).unwrap(),
    )
    .unwrap();
    Minified {
        out,
        report,
        allowlist,
        allowlist_path,
    }
}

/// Run `entrypoint args...` in `image` (`docker run --rm --entrypoint`), with `mounts`
/// (`-v` specs); returns (exit code, stdout + stderr).
fn exec_in(image: &str, mounts: &[String], entrypoint: &str, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new("docker");
    cmd.args([
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        entrypoint,
    ]);
    for m in mounts {
        cmd.args(["-v", m]);
    }
    let o = cmd.arg(image).args(args).output().expect("docker run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!(
        "--- docker run {image} {entrypoint} {args:?}: {}\n{text}",
        o.status
    );
    (o.status.code().unwrap_or(-1), text)
}

fn has(al: &Allowlist, path: &str) -> bool {
    al.paths.iter().any(|e| e.path.as_str() == path)
}

/// The package rule added no shell, package manager or `bin/` executable: whatever of
/// `NEVER_ADDED` the package output holds, the file output (the workload's own use) holds
/// too; no `package` entry lies under a `bin/` or `sbin/` directory; and no shell runs.
fn assert_no_executables_added(file: &Minified, package: &Minified) {
    for p in NEVER_ADDED {
        assert!(
            !has(&package.allowlist, p) || has(&file.allowlist, p),
            "the package rule added {p}"
        );
    }
    for e in &package.allowlist.paths {
        if e.reason == minify_model::Reason::Package {
            let parent = e.path.parent().unwrap();
            assert!(
                !parent.components().any(|c| c == "bin" || c == "sbin"),
                "the package rule added {} ({})",
                e.path,
                e.detail
            );
        }
    }
    let (code, _) = exec_in(&package.out, &[], "/bin/sh", &["-c", "exit 0"]);
    assert_ne!(code, 0, "{} runs /bin/sh", package.out);
}

/// The report names `name` as kept whole, of `kind`, pulled in by a path for which
/// `pulled_by` holds.
fn assert_reported(m: &Minified, kind: &str, name: &str, pulled_by: impl Fn(&str) -> bool) {
    let pkgs = m.report["packages"].as_array().unwrap();
    let p = pkgs
        .iter()
        // Every package of the source has an entry; those the rule kept whole name why.
        .find(|p| p["name"] == name && p["kind"] == kind && p["pulled_by"] != "")
        .unwrap_or_else(|| panic!("{kind} {name} not among the kept packages: {pkgs:#?}"));
    assert!(p["files"].as_u64().unwrap() > 0, "{p:#}");
    assert!(!p["version"].as_str().unwrap().is_empty(), "{p:#}");
    let by = p["pulled_by"].as_str().unwrap();
    assert!(pulled_by(by), "{name} pulled in by {by}");
    let label = format!("{name} {} ({kind})", p["version"].as_str().unwrap());
    assert!(
        m.allowlist
            .paths
            .iter()
            .any(|e| e.reason == minify_model::Reason::Package && e.detail.starts_with(&label)),
        "no allowlist entry says {label}"
    );
}

/// `minify build` from the package allowlist gives the same image.
fn assert_build_reproduces(image: &str, ctx: &TestContext, m: &Minified) {
    let rebuilt = ctx.unique_image_ref("pkg-build");
    let o = run(minify()
        .args(["build", image, "--allowlist"])
        .arg(&m.allowlist_path)
        .args(["--tag", &rebuilt]));
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        image_id(&rebuilt),
        image_id(&m.out),
        "build and run disagree"
    );
}

fn image_id(reference: &str) -> String {
    minify_fixtures::docker(["image", "inspect", "--format", "{{.Id}}", reference])
        .unwrap_or_else(|e| panic!("inspect {reference}: {e:#}"))
}

/// python-http's probe serves a file with `http.server`; `json`, `csv`, `fractions`, ...
/// are never imported. Debian's whole `libpython3.11-stdlib` comes with `package`.
#[test]
fn python_stdlib_module_not_imported_by_the_probe() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("python-http").expect("fixture");
    let ctx = TestContext::new().unwrap();
    let script = "import json, csv, fractions, statistics, zipfile; print(json.dumps({'sum': str(fractions.Fraction(1, 3) + fractions.Fraction(1, 6))}))";
    let expected = r#"{"sum": "1/2"}"#;
    // The original does it.
    let (code, text) = exec_in(&image, &[], "python3", &["-c", script]);
    assert_eq!((code, text.trim()), (0, expected));

    let file = minify_with(&ctx, &image, &["--probe-http", "/"], "file");
    let (code, text) = exec_in(&file.out, &[], "python3", &["-c", script]);
    assert_ne!(code, 0, "file granularity kept json: {text}");
    assert!(text.contains("ModuleNotFoundError"), "{text}");

    let package = minify_with(&ctx, &image, &["--probe-http", "/"], "package");
    let (code, text) = exec_in(&package.out, &[], "python3", &["-c", script]);
    assert_eq!((code, text.trim()), (0, expected));
    assert_reported(&package, "deb", "libpython3.11-stdlib", |p| {
        p.starts_with("/usr/lib/python3.11/")
    });
    assert_no_executables_added(&file, &package);
    assert_build_reproduces(&image, &ctx, &package);

    // `minify build --granularity package` from the file allowlist adds the same units.
    let rebuilt = ctx.unique_image_ref("pkg-build-expanded");
    let o = run(minify()
        .args(["build", &image, "--granularity", "package", "--allowlist"])
        .arg(&file.allowlist_path)
        .args(["--tag", &rebuilt]));
    assert_eq!(o.status.code(), Some(0));
    let (code, text) = exec_in(&rebuilt, &[], "python3", &["-c", script]);
    assert_eq!((code, text.trim()), (0, expected));
}

/// The java fixture's probe is a GET served by `Hello.java`. `MessageDigest`/`SecureRandom`
/// read `java.security` (the JDK's `conf/security/java.security`, a link into
/// `/etc/java-17-openjdk/security/`), and `ProcessBuilder` spawns through
/// `lib/jspawnhelper`, which the probe never ran.
#[test]
fn java_security_and_process_builder_off_the_probe() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("java").expect("fixture");
    let ctx = TestContext::new().unwrap();
    let dir = ctx.temp_dir().join("check");
    fs_err::create_dir_all(&dir).unwrap();
    fs_err::write(dir.join("Check.java"), CHECK_JAVA).unwrap();
    let mount = vec![format!("{}:/check:ro", dir.display())];
    let expected = "sha256=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\nsecurerandom=16\nspawn=0";
    let (code, text) = exec_in(&image, &mount, "java", &["/check/Check.java"]);
    assert_eq!((code, text.trim()), (0, expected));

    let file = minify_with(&ctx, &image, &["--probe-http", "/"], "file");
    let (code, text) = exec_in(&file.out, &mount, "java", &["/check/Check.java"]);
    // Measured: the probe's run reads java.security already (the digest works), but
    // `lib/jspawnhelper` was never run, so the spawn fails with error=2.
    assert_ne!(code, 0, "file granularity passed the java checks: {text}");
    assert!(text.contains("Cannot run program"), "{text}");
    assert!(!has(
        &file.allowlist,
        "/usr/lib/jvm/java-17-openjdk-amd64/lib/jspawnhelper"
    ));

    let package = minify_with(&ctx, &image, &["--probe-http", "/"], "package");
    let (code, text) = exec_in(&package.out, &mount, "java", &["/check/Check.java"]);
    assert_eq!((code, text.trim()), (0, expected));
    assert!(has(
        &package.allowlist,
        "/etc/java-17-openjdk/security/java.security"
    ));
    assert_reported(&package, "deb", "openjdk-17-jre-headless", |p| {
        p.starts_with("/usr/lib/jvm/java-17-openjdk-amd64/")
            || p.starts_with("/etc/java-17-openjdk/")
    });
    assert_reported(&package, "jdk", "java-17-openjdk-amd64", |p| {
        p.starts_with("/usr/lib/jvm/java-17-openjdk-amd64/")
    });
    assert_no_executables_added(&file, &package);
    assert_build_reproduces(&image, &ctx, &package);
}

const CHECK_JAVA: &str = r#"
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.util.HexFormat;

public class Check {
    public static void main(String[] args) throws Exception {
        byte[] d = MessageDigest.getInstance("SHA-256").digest("abc".getBytes("UTF-8"));
        System.out.println("sha256=" + HexFormat.of().formatHex(d));
        byte[] r = new byte[16];
        SecureRandom.getInstanceStrong().nextBytes(r);
        System.out.println("securerandom=" + r.length);
        String java = System.getProperty("java.home") + "/bin/java";
        Process p = new ProcessBuilder(java, "-version").redirectErrorStream(true).start();
        p.getInputStream().readAllBytes();
        System.out.println("spawn=" + p.waitFor());
    }
}
"#;

/// The php fixture's probe is a GET of a page that converts no charset. PHP's `iconv()` is
/// glibc's `iconv_open`/`iconv`, which loads its converter (`gconv/ISO8859-1.so`, named by
/// `gconv-modules`) only when asked: libc6 whole brings the gconv modules with `package`.
/// (Python's codecs and Java's charsets are their own code, not gconv; the `iconv` program
/// is a `bin/` executable the package rule leaves out, so PHP is the honest way in.)
#[test]
fn php_iconv_through_glibc_gconv_off_the_probe() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("php").expect("fixture");
    let ctx = TestContext::new().unwrap();
    let code = r#"$s = iconv("UTF-8", "ISO-8859-1", "\u{e9}t\u{e9}"); echo $s === false ? "false" : bin2hex($s), "\n";"#;
    let (rc, text) = exec_in(&image, &[], "php", &["-r", code]);
    assert_eq!((rc, text.trim()), (0, "e974e9"));

    let file = minify_with(&ctx, &image, &["--probe-http", "/"], "file");
    let (_, text) = exec_in(&file.out, &[], "php", &["-r", code]);
    assert!(
        !text.contains("e974e9"),
        "file granularity converted: {text}"
    );
    assert!(
        !has(
            &file.allowlist,
            "/usr/lib/x86_64-linux-gnu/gconv/ISO8859-1.so"
        ),
        "the probe loaded the converter: this test walks nothing new"
    );

    let package = minify_with(&ctx, &image, &["--probe-http", "/"], "package");
    let (rc, text) = exec_in(&package.out, &[], "php", &["-r", code]);
    assert_eq!((rc, text.trim()), (0, "e974e9"));
    assert_reported(&package, "deb", "libc6", |p| {
        p.starts_with("/usr/lib/x86_64-linux-gnu/")
    });
    assert_no_executables_added(&file, &package);
    assert_build_reproduces(&image, &ctx, &package);
}

/// The flask fixture installs Flask from the package index into a venv: its distributions
/// have `*.dist-info/RECORD`s. The probe's GET never imports `jinja2.ext` or
/// `werkzeug.debug` (slim-toolkit's users hit the first), so `file` drops them.
#[test]
fn flask_venv_distribution_submodules_off_the_probe() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("flask").expect("fixture");
    let ctx = TestContext::new().unwrap();
    let python = "/app/venv/bin/python";
    let script = "import jinja2.ext, werkzeug.debug; print(jinja2.ext.i18n.__name__, werkzeug.debug.DebuggedApplication.__name__)";
    let expected = "InternationalizationExtension DebuggedApplication";
    let (code, text) = exec_in(&image, &[], python, &["-c", script]);
    assert_eq!((code, text.trim()), (0, expected));

    let file = minify_with(&ctx, &image, &["--probe-http", "/"], "file");
    let (code, text) = exec_in(&file.out, &[], python, &["-c", script]);
    assert_ne!(code, 0, "file granularity kept jinja2.ext: {text}");
    assert!(text.contains("ModuleNotFoundError"), "{text}");

    let package = minify_with(&ctx, &image, &["--probe-http", "/"], "package");
    let (code, text) = exec_in(&package.out, &[], python, &["-c", script]);
    assert_eq!((code, text.trim()), (0, expected));
    assert_reported(&package, "python", "jinja2", |p| {
        p.starts_with("/app/venv/lib/python3.11/site-packages/jinja2")
    });
    assert_reported(&package, "python", "werkzeug", |p| {
        p.starts_with("/app/venv/lib/python3.11/site-packages/werkzeug")
    });
    assert_no_executables_added(&file, &package);
    assert_build_reproduces(&image, &ctx, &package);
}

/// numpy from a PyPI wheel in a venv (the `numpy` fixture): the probe's GET sums an array with
/// numpy's core, and numpy imports `numpy.random` and `numpy.fft` only when asked, so `file`
/// drops them (slim-toolkit's users hit exactly this). With `package` the whole `numpy`
/// distribution (its RECORD) comes, OpenBLAS in `numpy.libs` included.
#[test]
fn numpy_submodules_off_the_probe() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("numpy").expect("fixture");
    let ctx = TestContext::new().unwrap();
    let python = "/app/venv/bin/python";
    let script = "import numpy.random, numpy.fft, numpy.polynomial; print(numpy.random.default_rng(1).integers(0, 10, 3).tolist(), numpy.fft.fft([1, 0, 0, 0]).real.tolist(), numpy.polynomial.Polynomial([1, 2]).deriv().coef.tolist())";
    let expected = "[4, 5, 7] [1.0, 1.0, 1.0, 1.0] [2.0]";
    let (code, text) = exec_in(&image, &[], python, &["-c", script]);
    assert_eq!((code, text.trim()), (0, expected));

    let file = minify_with(&ctx, &image, &["--probe-http", "/"], "file");
    let (code, text) = exec_in(&file.out, &[], python, &["-c", script]);
    assert_ne!(code, 0, "file granularity kept numpy.random: {text}");
    assert!(text.contains("ModuleNotFoundError"), "{text}");

    let package = minify_with(&ctx, &image, &["--probe-http", "/"], "package");
    let (code, text) = exec_in(&package.out, &[], python, &["-c", script]);
    assert_eq!((code, text.trim()), (0, expected));
    assert_reported(&package, "python", "numpy", |p| {
        p.starts_with("/app/venv/lib/python3.11/site-packages/numpy")
    });
    minify_fixtures::check_fixture("numpy", &package.out).expect("the package output serves");
    assert_no_executables_added(&file, &package);
    assert_build_reproduces(&image, &ctx, &package);
}
