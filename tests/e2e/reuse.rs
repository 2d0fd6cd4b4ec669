//! A kept allowlist reused by `minify build` (issue 21): the allowlist's roots are the input
//! and everything derived from them is computed again on the image being built. Each test
//! traces a real fixture with `minify run`, edits the written allowlist the way a CI
//! pipeline's later builds see it, builds with `minify build`, and checks the result by
//! running it with Docker and asking it for its page here (not through minify's verifier).

use std::path::{Path, PathBuf};

use minify_fixtures::{TestContext, docker_run_http_check, fixture};
use minify_model::{Allowlist, Reason};

use crate::common::{minify, run};
use crate::run::serial_if_run;

/// `minify run` of the nginx fixture with its HTTP probe; returns the allowlist it wrote.
fn trace_nginx(ctx: &TestContext, image: &str) -> (PathBuf, Allowlist) {
    let out = ctx.unique_image_ref("reuse-run");
    let path = ctx.temp_dir().join("allowlist.json");
    let o = run(minify()
        .args(["run", image, "--probe-http", "/", "--tag", &out])
        .arg("--allowlist-out")
        .arg(&path));
    assert_eq!(o.status.code(), Some(0), "minify run {image} failed");
    let al = Allowlist::from_json("allowlist", &fs_err::read_to_string(&path).unwrap()).unwrap();
    (path, al)
}

fn write_allowlist(dir: &Path, name: &str, al: &Allowlist) -> PathBuf {
    let p = dir.join(name);
    fs_err::write(&p, al.to_json()).unwrap();
    p
}

/// GET / of `image` run as its config says, checked here.
fn serves(image: &str) -> String {
    let answer = docker_run_http_check(image, 80)
        .unwrap_or_else(|e| panic!("{image} does not serve: {e:#}"));
    assert_eq!(answer.status, 200, "{image}: {}", answer.body);
    answer.body
}

/// An allowlist cut down to its roots, the `traced` entries and the symlinks the workload
/// went through (`on the way to` links: how the allowlist records the paths the workload
/// used, such as `/etc/nginx/sites-enabled/default`), with no loader, no ELF libraries or
/// soname links, no parents and no default sets, still builds an nginx that starts and
/// serves: all of that comes from the image being built. Before the re-closure the same
/// allowlist built an image that failed with `exec /usr/sbin/nginx: no such file or
/// directory` (checked with the previous `minify build`).
#[test]
fn roots_alone_build_a_serving_nginx() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("nginx").expect("fixture");
    let ctx = TestContext::new().unwrap();
    let (_, full) = trace_nginx(&ctx, &image);

    let mut cut = full.clone();
    cut.paths.retain(|e| {
        e.reason == Reason::Traced
            || (e.reason == Reason::Symlink && e.detail.starts_with("on the way to "))
    });
    assert!(
        full.paths.iter().any(|e| e.reason == Reason::Elf),
        "the traced allowlist has no elf entries to drop"
    );
    assert!(
        !cut.paths
            .iter()
            .any(|e| e.path.as_str().contains("ld-linux") || e.path.as_str() == "/lib64"),
        "the loader is a root; the cut does not test the ELF re-closure"
    );
    let cut_path = write_allowlist(ctx.temp_dir(), "traced-only.json", &cut);

    let out = ctx.unique_image_ref("reuse-traced-only");
    let o = run(minify()
        .args(["build", &image, "--allowlist"])
        .arg(&cut_path)
        .args(["--tag", &out]));
    assert_eq!(o.status.code(), Some(0), "minify build failed");
    assert_eq!(
        serves(&out),
        serves(&image),
        "another page than the original's"
    );
}

/// `docker build` of `FROM base` plus one `RUN` line, in a temp dir of the test; the image is
/// removed with the context.
fn derive_image(ctx: &TestContext, base: &str, run_line: &str, prefix: &str) -> String {
    let tag = ctx.unique_image_ref(prefix);
    let dir = ctx.temp_dir().join(prefix);
    fs_err::create_dir_all(&dir).unwrap();
    fs_err::write(
        dir.join("Dockerfile"),
        format!("FROM {base}\nRUN {run_line}\n"),
    )
    .unwrap();
    minify_fixtures::docker(["build", "-q", "-t", &tag, &dir.display().to_string()])
        .unwrap_or_else(|e| panic!("docker build {prefix}: {e:#}"));
    tag
}

fn build(image: &str, allowlist: &Path, out: &str, extra: &[&str]) -> std::process::Output {
    run(minify()
        .args(["build", image, "--allowlist"])
        .arg(allowlist)
        .args(["--tag", out])
        .args(extra))
}

/// The next pipeline's image: the app's page changed and a library was upgraded (nginx's
/// `libpcre2-8.so.0.X.Y` renamed to a new patch version, its soname link moved). The
/// allowlist made on v1 builds v2 (the traced library found through its soname, reported as
/// renamed), and the output serves v2's page. A v3 that lost a traced file fails with exit 2
/// naming it and saying to trace again; with `--on-missing warn` it builds and serves.
#[test]
fn allowlist_of_v1_builds_upgraded_v2() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("nginx").expect("fixture");
    let ctx = TestContext::new().unwrap();
    let (al_path, al) = trace_nginx(&ctx, &image);
    let old_lib = al
        .paths
        .iter()
        .find(|e| {
            e.reason == Reason::Traced
                && e.path
                    .file_name()
                    .is_some_and(|n| n.starts_with("libpcre2-8.so.0."))
        })
        .unwrap_or_else(|| panic!("no traced libpcre2-8 in {}", al.to_json()))
        .path
        .to_string();

    let v2 = derive_image(
        &ctx,
        &image,
        "cd /usr/lib/x86_64-linux-gnu && f=$(readlink libpcre2-8.so.0) && mv \"$f\" \"${f%.*}.99\" && ln -sfn \"${f%.*}.99\" libpcre2-8.so.0 && echo '<h1>v2 of the app</h1>' > /var/www/html/index.html",
        "reuse-v2",
    );
    let new_lib = format!("{}.99", &old_lib[..old_lib.rfind('.').unwrap()]);
    let out = ctx.unique_image_ref("reuse-v2-min");
    let o = build(&v2, &al_path, &out, &[]);
    assert_eq!(o.status.code(), Some(0), "minify build of v2 failed");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("renamed {old_lib} -> {new_lib} (soname)")),
        "{err}"
    );
    let page = serves(&out);
    assert!(page.contains("v2 of the app"), "{page}");

    let v3 = derive_image(&ctx, &image, "rm /usr/share/zoneinfo/Etc/UTC", "reuse-v3");
    let out3 = ctx.unique_image_ref("reuse-v3-min");
    let o = build(&v3, &al_path, &out3, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("missing /usr/share/zoneinfo/Etc/UTC"), "{err}");
    assert!(err.contains("trace the image again"), "{err}");
    assert!(
        !minify_fixtures::image_exists(&out3),
        "{out3} written anyway"
    );
    let o = build(&v3, &al_path, &out3, &["--on-missing", "warn"]);
    assert_eq!(o.status.code(), Some(0), "--on-missing warn");
    assert_eq!(serves(&out3), serves(&image));
}
