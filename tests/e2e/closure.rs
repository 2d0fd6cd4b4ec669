//! The closure on real Debian images read through `RootfsView`: library sets checked against
//! the image's own loader (`ldd` run inside the image), `$ORIGIN` RUNPATH/RPATH, `#!/usr/bin/env
//! python3`, links to host-only paths, a minified image that really runs, and `minify merge`.

use std::collections::BTreeSet;

use crate::common::minify;
use minify_closure::{ClosureOptions, DefaultSets, compute};
use minify_fixtures::{TestContext, docker, fixture, require_docker, require_root};
use minify_image::{ImageRef, PackOptions, RootfsView, SourceImage, pack};
use minify_model::allowlist::SourceImage as AllowlistSource;
use minify_model::{AccessKind, ImagePath, Reason, Trace, TraceEvent};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn open(image: &str) -> (SourceImage, RootfsView) {
    let rt = runtime();
    let r: ImageRef = image.parse().unwrap();
    let src = rt
        .block_on(SourceImage::open(&r))
        .unwrap_or_else(|e| panic!("open {image}: {e}"));
    let view = RootfsView::build(&src).unwrap_or_else(|e| panic!("view of {image}: {e}"));
    (src, view)
}

fn no_sets() -> ClosureOptions {
    ClosureOptions {
        default_sets: DefaultSets::none(),
        ..ClosureOptions::default()
    }
}

/// What the image's own loader maps for `program`, as real paths inside the image.
fn image_ldd(image: &str, program: &str) -> BTreeSet<String> {
    let script =
        format!("ldd {program} | grep -o '/[^ ]*' | while read -r f; do readlink -f \"$f\"; done");
    docker(["run", "--rm", "--entrypoint", "sh", image, "-c", &script])
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn reason(c: &minify_closure::Closure, p: &str) -> Option<Reason> {
    c.entries.get(&ImagePath::new(p)).map(|k| k.reason)
}

#[test]
fn nginx_binary_alone_holds_its_libraries_and_loader() {
    if !require_root() || !require_docker() {
        return;
    }
    let image = fixture("nginx").unwrap();
    let (_src, view) = open(&image);
    let c = compute(
        &view,
        &Trace::default(),
        &["/usr/sbin/nginx".into()],
        &no_sets(),
    )
    .unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(reason(&c, "/usr/sbin/nginx"), Some(Reason::Traced));
    assert_eq!(reason(&c, "/lib64"), Some(Reason::Symlink));
    assert_eq!(
        reason(&c, "/usr/lib64/ld-linux-x86-64.so.2"),
        Some(Reason::Symlink)
    );
    assert_eq!(
        reason(&c, "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        Some(Reason::Elf)
    );
    assert_eq!(reason(&c, "/etc/ld.so.cache"), Some(Reason::Elf));
    let want = image_ldd(&image, "/usr/sbin/nginx");
    assert!(want.len() >= 5, "ldd in the image: {want:?}");
    for lib in &want {
        assert_eq!(
            reason(&c, lib),
            Some(Reason::Elf),
            "{lib} (from the image's ldd) not kept as elf"
        );
    }
    let elf_files: BTreeSet<String> = c
        .entries
        .iter()
        .filter(|(p, k)| k.reason == Reason::Elf && p.as_str() != "/etc/ld.so.cache")
        .map(|(p, _)| p.to_string())
        .collect();
    assert_eq!(
        elf_files, want,
        "the closure's libraries are exactly what the loader maps"
    );
    // Only the binary, its libraries, links and parents: a few dozen paths of 10k+.
    assert!(c.len() < 60, "{} paths: {:?}", c.len(), c.entries.keys());
    assert!(c.required_bytes > 1_000_000, "{}", c.required_bytes);
}

#[test]
fn env_python3_script_pulls_python_and_its_libraries() {
    if !require_root() || !require_docker() {
        return;
    }
    let image = fixture("closure-origin").unwrap();
    let (_src, view) = open(&image);
    let trace = Trace {
        events: vec![TraceEvent {
            pid: 1,
            comm: "hello".into(),
            kind: AccessKind::Exec,
            path: "/usr/local/bin/hello".into(),
            ok: true,
            special: None,
            detail: "hello".into(),
        }],
        ..Trace::default()
    };
    let c = compute(&view, &trace, &[], &no_sets()).unwrap();
    assert_eq!(reason(&c, "/usr/local/bin/hello"), Some(Reason::Traced));
    assert_eq!(reason(&c, "/usr/bin/env"), Some(Reason::Interpreter));
    assert_eq!(reason(&c, "/usr/bin/python3"), Some(Reason::Symlink));
    assert_eq!(reason(&c, "/usr/bin/python3.11"), Some(Reason::Interpreter));
    for lib in image_ldd(&image, "/usr/bin/python3.11")
        .into_iter()
        .chain(image_ldd(&image, "/usr/bin/env"))
    {
        assert_eq!(reason(&c, &lib), Some(Reason::Elf), "{lib}");
    }
}

#[test]
fn origin_runpath_and_rpath_resolve_and_the_minified_image_runs() {
    if !require_root() || !require_docker() {
        return;
    }
    let image = fixture("closure-origin").unwrap();
    let (src, view) = open(&image);
    for prog in ["/opt/app/bin/app", "/opt/app/bin/app-rpath"] {
        let c = compute(&view, &Trace::default(), &[prog.into()], &no_sets()).unwrap();
        assert!(c.warnings.is_empty(), "{prog}: {:?}", c.warnings);
        assert_eq!(
            reason(&c, "/opt/app/lib/libgreet.so.1"),
            Some(Reason::Symlink),
            "{prog}"
        );
        assert_eq!(
            reason(&c, "/opt/app/lib/libgreet.so.1.0"),
            Some(Reason::Elf),
            "{prog}"
        );
        assert_eq!(
            reason(&c, "/opt/app/lib/libgreet.so"),
            None,
            "only the soname link is used"
        );
    }

    // Pack exactly the allowlist (minify-image's packer, as `minify build` does) and run
    // it: the loader must find everything it needs in the minified image.
    let c = compute(
        &view,
        &Trace::default(),
        &["/opt/app/bin/app".into()],
        &no_sets(),
    )
    .unwrap();
    let ctx = TestContext::new().unwrap();
    let allowlist = c.to_allowlist(
        AllowlistSource {
            image: image.clone(),
            digest: src.id().as_str().to_owned(),
        },
        "minify e2e",
    );
    let packed = pack(&view, &src, &allowlist.path_set(), &PackOptions::default()).unwrap();
    let out = ctx.unique_image_ref("closure-origin-min");
    ctx.track_image(&out);
    let out_ref: ImageRef = out.parse().unwrap();
    runtime()
        .block_on(packed.write_to(&out_ref, &minify_image::WriteOptions::default()))
        .unwrap();
    let name = ctx.unique_name("closure-origin-run");
    ctx.track_container(&name);
    let said = docker(["run", "--name", &name, &out]).unwrap();
    assert_eq!(said, "hello from libgreet");
    // And the minified image holds no shell: only what the closure kept.
    assert!(
        !minify_fixtures::has_working_shell(&out),
        "{out} runs /bin/sh"
    );
}

#[test]
fn a_link_to_a_host_only_path_is_never_followed_on_the_host() {
    if !require_root() || !require_docker() {
        return;
    }
    let image = fixture("closure-origin").unwrap();
    let (_src, view) = open(&image);
    // The image links /opt/app/lib/libhost.so -> /var/tmp/minify-host-only.so, which the
    // image lacks; put a real library there on the host to tempt a host lookup.
    let host_only = std::path::Path::new("/var/tmp/minify-host-only.so");
    fs_err::copy("/lib/x86_64-linux-gnu/libc.so.6", host_only).unwrap();
    let trace = Trace {
        events: vec![TraceEvent {
            pid: 1,
            comm: "app".into(),
            kind: AccessKind::OpenRequested,
            path: "/opt/app/lib/libhost.so".into(),
            ok: true,
            special: None,
            detail: String::new(),
        }],
        ..Trace::default()
    };
    let opts = ClosureOptions {
        include: vec!["/opt/app/lib".into()],
        ..no_sets()
    };
    let c = compute(&view, &trace, &["/opt/app/bin/app-host".into()], &opts).unwrap();
    let _ = std::fs::remove_file(host_only);
    assert!(!c.contains("/var/tmp/minify-host-only.so"));
    assert_eq!(
        reason(&c, "/opt/app/lib/libhost.so"),
        Some(Reason::Traced),
        "the dangling link itself"
    );
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("libhost.so needed by /opt/app/bin/app-host not found")),
        "{:?}",
        c.warnings
    );
    for p in c.entries.keys() {
        assert!(
            minify_model::Rootfs::entry(&view, p).is_some(),
            "{p} is not in the image"
        );
    }
}

#[test]
fn merge_unions_allowlists_of_one_image_and_refuses_two_images() {
    if !require_root() || !require_docker() {
        return;
    }
    let image = fixture("closure-origin").unwrap();
    let (src, view) = open(&image);
    let source = AllowlistSource {
        image: image.clone(),
        digest: src.id().as_str().to_owned(),
    };
    let a = compute(
        &view,
        &Trace::default(),
        &["/opt/app/bin/app".into()],
        &no_sets(),
    )
    .unwrap();
    let b = compute(
        &view,
        &Trace::default(),
        &["/usr/bin/python3".into()],
        &no_sets(),
    )
    .unwrap();
    let ctx = TestContext::new().unwrap();
    let fa = ctx.temp_dir().join("a.json");
    let fb = ctx.temp_dir().join("b.json");
    let fo = ctx.temp_dir().join("out.json");
    fs_err::write(&fa, a.to_allowlist(source.clone(), "minify e2e").to_json()).unwrap();
    fs_err::write(&fb, b.to_allowlist(source.clone(), "minify e2e").to_json()).unwrap();
    let out = minify()
        .arg("merge")
        .args([&fa, &fb])
        .arg("-o")
        .arg(&fo)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let merged =
        minify_model::Allowlist::from_json("out.json", &fs_err::read_to_string(&fo).unwrap())
            .unwrap();
    let got: BTreeSet<ImagePath> = merged.path_set().into_iter().collect();
    let want: BTreeSet<ImagePath> = a.entries.keys().chain(b.entries.keys()).cloned().collect();
    assert_eq!(got, want);
    assert_eq!(merged.source.digest, source.digest);
    // The merge of the same inputs is byte-identical.
    let again = ctx.temp_dir().join("again.json");
    let st = minify()
        .arg("merge")
        .args([&fb, &fa])
        .arg("-o")
        .arg(&again)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(fs_err::read(&fo).unwrap(), fs_err::read(&again).unwrap());

    // Another image's allowlist: a clear error naming both files, exit code 2.
    let other = AllowlistSource {
        image: "other".into(),
        digest: "sha256:0000000000000000000000000000000000000000000000000000000000000000".into(),
    };
    let fx = ctx.temp_dir().join("other.json");
    fs_err::write(&fx, a.to_allowlist(other, "minify e2e").to_json()).unwrap();
    let out = minify()
        .arg("merge")
        .args([&fa, &fx])
        .arg("-o")
        .arg(ctx.temp_dir().join("bad.json"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("different images") && stderr.contains("other.json"),
        "{stderr}"
    );
    assert!(!ctx.temp_dir().join("bad.json").exists());
}
