//! The source image is never changed: `minify run` and `minify build` refuse every spelling
//! of "write over the source", with or without `--force` (exit 2, one line), and the source
//! is checked afterwards independently of minify: its image id through `docker image
//! inspect`, its files by their bytes and the directory listing around them.
//!
//! The source here is a tiny image packed from the nginx fixture (`/etc/passwd` and its
//! parents), so each refused command costs well under a second of export; a bug would move
//! only this test's own tags.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;

use minify_fixtures::{TestContext, fixture, require_docker, require_ebpf, require_root};

use crate::common;

/// The two tests share the machine's two cores with nothing else of theirs.
static SERIAL: Mutex<()> = Mutex::new(());

fn image_id(reference: &str) -> String {
    minify_fixtures::docker(["image", "inspect", "--format", "{{.Id}}", reference])
        .unwrap_or_else(|e| panic!("inspect {reference}: {e:#}"))
}

/// Exit code 2 and one error line, which says the output would replace the source.
fn assert_refused(o: &Output) {
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("minify: error:"))
        .collect();
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(lines.len(), 1, "stderr: {err}");
    assert!(
        lines[0].contains("would replace the source image"),
        "{}",
        lines[0]
    );
}

/// An allowlist of `paths`, for a tiny image.
fn allowlist(dir: &Path, name: &str, paths: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let entries: Vec<String> = paths
        .iter()
        .map(|p| format!(r#"{{"path":"{p}","reason":"include"}}"#))
        .collect();
    fs_err::write(
        &path,
        format!(
            r#"{{"minify_allowlist":1,"tool":"minify e2e","source":{{"image":"","digest":""}},"paths":[{}]}}"#,
            entries.join(",")
        ),
    )
    .unwrap();
    path
}

/// The allowlist the refused commands are given: one file fewer than the source has, so
/// an output written over the source would differ from it (in id, or in bytes).
fn tiny_allowlist(dir: &Path) -> PathBuf {
    allowlist(dir, "tiny.json", &["/etc/passwd"])
}

/// `minify build SOURCE --allowlist A --tag OUT [--force]` in `cwd`.
fn build(cwd: &Path, allowlist: &Path, source: &str, out: &str, force: bool) -> Output {
    let mut cmd = common::minify();
    cmd.current_dir(cwd)
        .args(["build", source, "--allowlist"])
        .arg(allowlist)
        .args(["--tag", out]);
    if force {
        cmd.arg("--force");
    }
    common::run(&mut cmd)
}

/// `minify run SOURCE --probe-cmd true --tag OUT --force` in `cwd`: refused before anything
/// runs, or (the bug) traced, packed and written.
fn run_forced(cwd: &Path, source: &str, out: &str) -> Output {
    common::run(
        common::minify()
            .current_dir(cwd)
            .args(["run", source, "--probe-cmd", "true", "--no-verify"])
            .args(["--tag", out, "--force"]),
    )
}

/// The tiny source image in the daemon under `tag` (two files); returns its id.
fn tiny_image(ctx: &TestContext, tag: &str) -> String {
    let nginx = fixture("nginx").unwrap();
    ctx.track_image(tag);
    let two = allowlist(
        ctx.temp_dir(),
        "source.json",
        &["/etc/passwd", "/etc/group"],
    );
    let o = build(ctx.temp_dir(), &two, &nginx, tag, false);
    assert_eq!(o.status.code(), Some(0), "building the tiny source");
    image_id(tag)
}

#[test]
fn daemon_spellings_of_the_source_are_refused() {
    if !(require_root() && require_docker() && require_ebpf()) {
        return;
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ctx = TestContext::new().unwrap();
    let allowlist = tiny_allowlist(ctx.temp_dir());
    // One repository with a namespace, one with a single component (Docker Hub's
    // `library/`), and a second tag on the same image.
    let team = format!("minify-test/{}", ctx.unique_name("src"));
    let single = ctx.unique_name("minify-src");
    let id = tiny_image(&ctx, &format!("{team}:1"));
    for extra in [format!("{single}:latest"), format!("{team}:other")] {
        ctx.track_image(&extra);
        minify_fixtures::docker(["tag", &format!("{team}:1"), &extra]).unwrap();
    }
    let tags = [
        format!("{team}:1"),
        format!("{single}:latest"),
        format!("{team}:other"),
    ];
    let cases: Vec<(String, String)> = vec![
        (format!("{team}:1"), format!("{team}:1")),
        (format!("docker.io/{team}:1"), format!("{team}:1")),
        (
            format!("index.docker.io/{team}:1"),
            format!("docker.io/{team}:1"),
        ),
        (single.clone(), format!("docker.io/library/{single}:latest")),
        (format!("library/{single}:latest"), single.clone()),
        (
            format!("index.docker.io/library/{single}"),
            format!("{single}:latest"),
        ),
        (
            format!("docker.io/{single}"),
            format!("docker-daemon:{single}"),
        ),
        // By id, and through another name: the output names the source's image now.
        (id.clone(), format!("{team}:1")),
        (format!("{team}:1"), format!("{team}:other")),
        (format!("{single}:latest"), format!("{team}:other")),
    ];
    let dir = ctx.temp_dir();
    for (source, out) in &cases {
        // build: without --force (it used to move the tag even then) and with it.
        assert_refused(&build(dir, &allowlist, source, out, false));
        assert_refused(&build(dir, &allowlist, source, out, true));
        for t in &tags {
            assert_eq!(image_id(t), id, "{t} moved by build {source} --tag {out}");
        }
    }
    // run, forced: the same check.
    for (source, out) in &cases {
        assert_refused(&run_forced(dir, source, out));
        for t in &tags {
            assert_eq!(image_id(t), id, "{t} moved by run {source} --tag {out}");
        }
    }
    // A different name is still fine.
    let fine = ctx.unique_image_ref("src-min");
    let o = build(dir, &allowlist, &format!("{team}:1"), &fine, false);
    assert_eq!(o.status.code(), Some(0));
}

/// Every file under `dir` (or `dir` itself), with its bytes, in path order: what must not
/// change.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = fs_err::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            for e in fs_err::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if meta.is_symlink() {
            out.push((
                p.clone(),
                fs_err::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes(),
            ));
        } else {
            out.push((p.clone(), fs_err::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn file_spellings_of_the_source_are_refused() {
    if !(require_root() && require_docker() && require_ebpf()) {
        return;
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ctx = TestContext::new().unwrap();
    let allowlist = tiny_allowlist(ctx.temp_dir());
    let tag = ctx.unique_image_ref("src-files");
    tiny_image(&ctx, &tag);
    // The sources live in their own directory, with other spellings of them around.
    let d = ctx.temp_dir().join("w");
    fs_err::create_dir_all(d.join("sub")).unwrap();
    let p = |s: &str| d.join(s).display().to_string();
    let two = ctx.temp_dir().join("source.json");
    for out in [
        format!("docker-archive:{}", p("src.tar")),
        format!("oci:{}:v1", p("layout")),
    ] {
        let o = build(&d, &two, &tag, &out, false);
        assert_eq!(o.status.code(), Some(0), "writing the source {out}");
    }
    std::os::unix::fs::symlink(d.join("src.tar"), d.join("link.tar")).unwrap();
    fs_err::hard_link(d.join("src.tar"), d.join("hard.tar")).unwrap();
    std::os::unix::fs::symlink("layout", d.join("layout-link")).unwrap();
    let before = snapshot(&d);
    let cases = [
        (
            format!("docker-archive:{}", p("src.tar")),
            format!("docker-archive:{}", p("src.tar")),
        ),
        // Relative to the working directory, and through `..`.
        (
            "docker-archive:src.tar".to_owned(),
            format!("docker-archive:{}", p("src.tar")),
        ),
        (
            "docker-archive:./src.tar".to_owned(),
            "docker-archive:sub/../src.tar".to_owned(),
        ),
        // A symlink, a hardlink, another transport.
        (
            format!("docker-archive:{}", p("src.tar")),
            "oci-archive:link.tar".to_owned(),
        ),
        (
            "docker-archive:link.tar".to_owned(),
            "docker-archive:hard.tar:app:1".to_owned(),
        ),
        // The layout: as an archive path, through a symlink, another tag into it, a file
        // inside it, and a directory output that would replace it.
        (
            format!("oci:{}:v1", p("layout")),
            format!("oci-archive:{}", p("layout-link")),
        ),
        ("oci:layout:v1".to_owned(), "oci:layout:min".to_owned()),
        ("oci:layout-link".to_owned(), "oci:./layout".to_owned()),
        (
            "oci:layout:v1".to_owned(),
            "oci-archive:layout/new.tar".to_owned(),
        ),
        (
            "oci:layout:v1".to_owned(),
            "docker-archive:layout/index.json".to_owned(),
        ),
        ("oci:layout:v1".to_owned(), format!("oci:{}", d.display())),
        (
            "docker-archive:src.tar".to_owned(),
            format!("oci:{}", d.display()),
        ),
    ];
    for (source, out) in &cases {
        assert_refused(&build(&d, &allowlist, source, out, true));
        assert!(
            snapshot(&d) == before,
            "build {source} --tag {out} changed {}",
            d.display()
        );
        assert_refused(&run_forced(&d, source, out));
        assert!(
            snapshot(&d) == before,
            "run {source} --tag {out} changed {}",
            d.display()
        );
    }
    // Next to the source is fine.
    let o = build(
        &d,
        &allowlist,
        "oci:layout:v1",
        "oci-archive:layout.tar",
        false,
    );
    assert_eq!(o.status.code(), Some(0));
}
