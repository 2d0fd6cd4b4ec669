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
