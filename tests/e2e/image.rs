//! Image formats end to end: the nginx fixture read from the daemon and from every file
//! transport, packed by `minify build` from an allowlist, loaded into Docker, run, and
//! asked for its page; the same inputs give the same image id; bad input exits 2 with one
//! line naming what is wrong.
//!
//! The allowlist is not traced here (that is `minify run`'s job) but derived from the image
//! by one written-down rule, [`nginx_allowlist`], so it follows fixture rebuilds.

use std::path::Path;
use std::process::Output;
use std::sync::Mutex;

use minify_fixtures::{TestContext, docker_run_http_check, fixture, require_docker, require_root};
use minify_image::{ImageRef, PackOptions, RootfsView, SourceImage, pack};
use minify_model::{Allowlist, AllowlistEntry, ImagePath, Reason, Rootfs, resolve};

use crate::common;

/// These tests keep both cores busy; running them one at a time keeps them fast enough.
static SERIAL: Mutex<()> = Mutex::new(());

/// What nginx-light opens to serve its default site, as it asks for it (through symlinks
/// such as `/lib` and `/lib64`): the binary, its ELF interpreter and DT_NEEDED libraries
/// (`ldd /usr/sbin/nginx` in the image), the user database for `user www-data`, the page,
/// and the directories it writes to.
const NGINX_PATHS: &[&str] = &[
    "/usr/sbin/nginx",
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/x86_64-linux-gnu/libcrypt.so.1",
    "/lib/x86_64-linux-gnu/libpcre2-8.so.0",
    "/lib/x86_64-linux-gnu/libssl.so.3",
    "/lib/x86_64-linux-gnu/libcrypto.so.3",
    "/lib/x86_64-linux-gnu/libz.so.1",
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/var/www/html/index.html",
    "/var/log/nginx/access.log",
    "/var/log/nginx/error.log",
    "/var/lib/nginx",
    "/run",
    "/tmp",
];

/// Directories nginx reads whole (its config with includes, its dynamic modules).
const NGINX_TREES: &[&str] = &["/etc/nginx", "/usr/lib/nginx", "/usr/share/nginx"];

/// The rule: every listed path and every entry under the listed trees, each with every
/// symlink on the way to it and the file it finally names (resolved inside the image).
fn nginx_allowlist(view: &RootfsView, image: &SourceImage) -> Allowlist {
    let mut wanted: Vec<String> = NGINX_PATHS.iter().map(ToString::to_string).collect();
    for tree in NGINX_TREES {
        let root = ImagePath::new(tree);
        wanted.extend(
            view.paths()
                .into_iter()
                .filter(|p| p.starts_with(&root))
                .map(|p| p.to_string()),
        );
    }
    let mut entries = Vec::new();
    for w in &wanted {
        let r = resolve(view, w, true).unwrap_or_else(|e| panic!("{w} in the nginx image: {e}"));
        for link in r.via {
            entries.push(entry(link, Reason::Symlink));
        }
        entries.push(entry(r.path, Reason::Include));
    }
    Allowlist::new(
        minify_model::allowlist::SourceImage {
            image: "minify-fixture/nginx:1".into(),
            digest: image.id().to_string(),
        },
        "minify e2e",
        entries,
    )
}

fn entry(path: ImagePath, reason: Reason) -> AllowlistEntry {
    AllowlistEntry {
        path,
        reason,
        detail: String::new(),
    }
}

/// `minify ARGS`, echoed into the test log.
fn minify(args: &[&str]) -> Output {
    common::run(common::minify().args(args))
}

/// `minify build`, expected to succeed; returns the printed image id.
fn build(source: &str, allowlist: &Path, out: &str) -> String {
    let o = minify(&[
        "build",
        source,
        "--allowlist",
        &allowlist.display().to_string(),
        "--tag",
        out,
    ]);
    assert!(o.status.success(), "minify build {source} failed");
    let id = String::from_utf8(o.stdout).unwrap().trim().to_owned();
    assert!(
        id.starts_with("sha256:") && id.len() == 71,
        "printed id {id:?}"
    );
    id
}

/// Exit code 2 and one line on stderr that contains every `needles`.
fn assert_input_error(o: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("minify: error:"))
        .collect();
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(lines.len(), 1, "stderr: {err}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} not in {:?}", lines[0]);
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn nginx_from_every_transport_is_packed_loaded_and_serves() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !require_root() || !require_docker() {
        return;
    }
    let nginx = fixture("nginx").expect("nginx fixture");
    let ctx = TestContext::new().unwrap();
    let tmp = ctx.temp_dir();

    // The allowlist, from the image read out of the daemon.
    let rt = rt();
    let source: ImageRef = nginx.parse().unwrap();
    let image = rt.block_on(SourceImage::open(&source)).unwrap();
    let view = RootfsView::build(&image).unwrap();
    let allowlist = nginx_allowlist(&view, &image);
    let al_path = tmp.join("nginx.allowlist.json");
    std::fs::write(&al_path, allowlist.to_json()).unwrap();

    // File transports: `docker save`, and an OCI layout / OCI archive written by our own
    // sink (a repack of the whole view, so it is a different image with the same files).
    let saved = tmp.join("saved.tar");
    minify_fixtures::docker(["save", "-o", &saved.display().to_string(), &nginx]).unwrap();
    let all = pack(&view, &image, &view.paths(), &PackOptions::default()).unwrap();
    let oci_dir = format!("oci:{}:full", tmp.join("layout").display());
    let oci_ar = format!("oci-archive:{}", tmp.join("full-oci.tar").display());
    for out in [&oci_dir, &oci_ar] {
        let id = rt
            .block_on(all.write_to(
                &out.parse().unwrap(),
                &minify_image::WriteOptions::default(),
            ))
            .unwrap()
            .id;
        assert_eq!(&id, all.id());
    }
    drop((view, image));

    let sources = [
        nginx.clone(),
        format!("docker-archive:{}", saved.display()),
        oci_dir.clone(),
        oci_ar.clone(),
    ];
    let mut ids = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        let out = ctx.unique_image_ref(&format!("nginx-min-{i}"));
        let id = build(src, &al_path, &out);
        let answer = docker_run_http_check(&out, 80)
            .unwrap_or_else(|e| panic!("minified nginx from {src} does not serve: {e:#}"));
        assert_eq!(answer.status, 200, "from {src}: {}", answer.body);
        assert!(
            answer.body.contains("minify nginx fixture"),
            "from {src}: {}",
            answer.body
        );
        // Much smaller than the source, and without a shell.
        let size = minify_fixtures::image_size(&out).unwrap();
        assert!(
            size * 4 < minify_fixtures::image_size(&nginx).unwrap(),
            "{out}: {size} bytes"
        );
        assert!(
            !minify_fixtures::has_working_shell(&out),
            "{out} still runs /bin/sh"
        );
        ids.push(id);
    }
    // The daemon and `docker save` are the same source image: same output id.
    assert_eq!(ids[0], ids[1]);
    // Building again gives the same id, also into a file output.
    let again = ctx.unique_image_ref("nginx-min-again");
    assert_eq!(build(&nginx, &al_path, &again), ids[0]);
    let ar = format!("docker-archive:{}", tmp.join("min.tar").display());
    assert_eq!(build(&nginx, &al_path, &ar), ids[0]);
    // The file output loads with plain `docker load` to the same id.
    let loaded = minify_fixtures::docker([
        "load",
        "-q",
        "-i",
        &tmp.join("min.tar").display().to_string(),
    ])
    .unwrap();
    assert!(loaded.contains(&ids[0]), "docker load said {loaded:?}");
    // A named docker-archive output loads under that name.
    let named = ctx.unique_image_ref("nginx-min-named");
    let named_tar = tmp.join("min-named.tar").display().to_string();
    let named_out = format!("docker-archive:{named_tar}:{named}");
    assert_eq!(build(&nginx, &al_path, &named_out), ids[0]);
    minify_fixtures::docker(["load", "-q", "-i", &named_tar]).unwrap();
    let tagged =
        minify_fixtures::docker(["image", "inspect", "--format", "{{.Id}}", &named]).unwrap();
    assert_eq!(tagged.trim(), ids[0], "{named} after docker load");

    // `docker save` of two images: read the one named, or the one at a position; without
    // either, refused with both names.
    let statik = fixture("static").expect("static fixture");
    let both = tmp.join("both.tar").display().to_string();
    minify_fixtures::docker(["save", "-o", &both, &nginx, &statik]).unwrap();
    let from_both = ctx.unique_image_ref("nginx-min-both");
    assert_eq!(
        build(
            &format!("docker-archive:{both}:{nginx}"),
            &al_path,
            &from_both
        ),
        ids[0]
    );
    let never = ctx.unique_image_ref("never");
    let o = minify(&[
        "build",
        &format!("docker-archive:{both}"),
        "--allowlist",
        &al_path.display().to_string(),
        "--tag",
        &never,
    ]);
    assert_input_error(&o, &["holds 2 images", &nginx, &statik, "say which"]);
    let tags_at = |i: usize| {
        let o = minify(&["inspect", "--json", &format!("docker-archive:{both}:@{i}")]);
        assert!(o.status.success(), "inspect @{i}");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["repo_tags"].clone()
    };
    let mut at: Vec<String> = (0..2).map(|i| tags_at(i).to_string()).collect();
    at.sort();
    let mut want = vec![
        serde_json::json!([nginx]).to_string(),
        serde_json::json!([statik]).to_string(),
    ];
    want.sort();
    assert_eq!(at, want);
    // And it records where it came from.
    let label = minify_fixtures::docker([
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"org.minify.source-digest\"}}",
        &again,
    ])
    .unwrap();
    assert_eq!(label.trim(), allowlist.source.digest);
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !require_root() || !require_docker() {
        return;
    }
    let nginx = fixture("nginx").expect("nginx fixture");
    let ctx = TestContext::new().unwrap();
    let tmp = ctx.temp_dir();
    let al = tmp.join("a.json");
    std::fs::write(
        &al,
        r#"{"minify_allowlist":1,"tool":"t","source":{"image":"x","digest":""},"paths":[
            {"path":"/usr/sbin/nginx","reason":"traced"},{"path":"/no/such/file","reason":"traced"}]}"#,
    )
    .unwrap();
    let al_s = al.display().to_string();
    let out = ctx.unique_image_ref("never");

    // An image that does not exist, in the daemon and as a file.
    let o = minify(&[
        "build",
        "minify-test/does-not-exist:1",
        "--allowlist",
        &al_s,
        "--tag",
        &out,
    ]);
    assert_input_error(&o, &["minify-test/does-not-exist:1", "does not exist"]);
    let o = minify(&["inspect", "docker-archive:/nonexistent/image.tar"]);
    assert_input_error(&o, &["/nonexistent/image.tar", "does not exist"]);
    // A listed path the image does not have.
    let o = minify(&["build", &nginx, "--allowlist", &al_s, "--tag", &out]);
    assert_input_error(&o, &["/no/such/file", "is not in the image"]);
    assert!(!minify_fixtures::image_exists(&out), "{out} was created");

    // An output that already exists is left alone.
    std::fs::write(
        &al,
        r#"{"minify_allowlist":1,"tool":"t","source":{"image":"x","digest":""},"paths":[
            {"path":"/etc/passwd","reason":"traced"}]}"#,
    )
    .unwrap();
    let existing = tmp.join("exists.tar");
    std::fs::write(&existing, b"precious").unwrap();
    let target = format!("docker-archive:{}", existing.display());
    let o = minify(&["build", &nginx, "--allowlist", &al_s, "--tag", &target]);
    assert_input_error(&o, &[&existing.display().to_string(), "already exists"]);
    assert_eq!(std::fs::read(&existing).unwrap(), b"precious");
    let o = minify(&[
        "build",
        &nginx,
        "--allowlist",
        &al_s,
        "--tag",
        &target,
        "--force",
    ]);
    assert!(o.status.success());
    // Nothing else was written next to the output.
    let names: Vec<String> = std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("minify-tmp")), "{names:?}");

    // A docker-archive whose layer does not match its diff_id (one byte flipped in a copy).
    let saved = tmp.join("saved.tar");
    minify_fixtures::docker(["save", "-o", &saved.display().to_string(), &nginx]).unwrap();
    let corrupt = tmp.join("corrupt.tar");
    flip_in_last_layer(&saved, &corrupt);
    let o = minify(&["inspect", &format!("docker-archive:{}", corrupt.display())]);
    assert_input_error(&o, &["layer", "does not match the config's diff_id"]);
}

/// Copy a `docker save` archive with one byte of file content in its last layer changed.
fn flip_in_last_layer(src: &Path, dst: &Path) {
    let mut bytes = std::fs::read(src).unwrap();
    // The index.html copied by the fixture's Dockerfile lives in the last layer.
    let needle = b"minify nginx fixture";
    let pos = bytes
        .windows(needle.len())
        .rposition(|w| w == needle)
        .expect("page text in the archive");
    bytes[pos] ^= 0x20;
    std::fs::write(dst, bytes).unwrap();
}

/// Ctrl-C while `minify build` exports and indexes an image from the daemon: exit 130, one
/// line, and no temp dir left (the child's TMPDIR is a directory of this test, so other
/// tests' temp dirs cannot hide or fake a leftover).
#[test]
fn ctrl_c_during_build_leaves_no_temp_dir() {
    if !(require_root() && require_docker()) {
        return;
    }
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let image = fixture("fat").expect("fat fixture");
    let ctx = TestContext::new().unwrap();
    let tmp = ctx.temp_dir().join("tmp");
    fs_err::create_dir_all(&tmp).unwrap();
    let allowlist = ctx.temp_dir().join("allowlist.json");
    fs_err::write(
        &allowlist,
        r#"{"minify_allowlist":1,"tool":"t","source":{"image":"","digest":""},"paths":[{"path":"/etc/hostname","reason":"include"}]}"#,
    )
    .unwrap();
    let out = ctx.unique_image_ref("ctrl-c");
    let child = common::minify()
        .args(["build", &image, "--allowlist"])
        .arg(&allowlist)
        .args(["--tag", &out])
        .env("TMPDIR", &tmp)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the export has started writing into TMPDIR, then interrupt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while fs_err::read_dir(&tmp).unwrap().next().is_none() {
        assert!(std::time::Instant::now() < deadline, "no temp dir appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let err = crate::common::signal_and_wait(child, "INT", 130);
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("minify: error:"))
            .count(),
        1,
        "{err}"
    );
    let left: Vec<_> = fs_err::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind in TMPDIR: {left:?}");
    assert!(
        !minify_fixtures::image_exists(&out),
        "an interrupted build wrote {out}"
    );
}
