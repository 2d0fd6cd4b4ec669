//! The closure rules over an in-memory image made of real Debian files copied from the host
//! (programs with their real libraries) plus small synthetic files.

use minify_closure::{
    ClosureError, ClosureOptions, DefaultSet, DefaultSets, SkeletonInput, check_rules, compute,
    compute_with_workdir,
};
use minify_elf::testutil::{copy_host, copy_host_program, exe, parents};
use minify_model::allowlist::SourceImage;
use minify_model::rootfs::memfs::MemFs;
use minify_model::trace::Special;
use minify_model::{AccessKind, ImagePath, Reason, Trace, TraceEvent};

fn ev(kind: AccessKind, path: &str, ok: bool) -> TraceEvent {
    TraceEvent {
        pid: 1,
        comm: "t".into(),
        kind,
        path: path.into(),
        ok,
        special: Special::of(path),
        detail: String::new(),
    }
}

fn trace(events: Vec<TraceEvent>) -> Trace {
    Trace {
        events,
        ..Trace::default()
    }
}

fn no_sets() -> ClosureOptions {
    ClosureOptions {
        default_sets: DefaultSets::none(),
        ..ClosureOptions::default()
    }
}

fn file(fs: &mut MemFs, path: &str, content: &[u8]) {
    parents(fs, path);
    fs.file(path, content);
}

fn image() -> MemFs {
    let mut fs = MemFs::default();
    for p in [
        "/usr/bin/ls",
        "/usr/bin/env",
        "/usr/bin/python3",
        "/usr/bin/dash",
    ] {
        copy_host_program(&mut fs, p);
    }
    copy_host(&mut fs, "/bin/sh");
    copy_host(&mut fs, "/etc/ld.so.cache");
    fs.env = vec!["PATH=/usr/local/bin:/usr/bin:/bin".into()];
    file(&mut fs, "/etc/app.conf", b"x=1\n");
    file(&mut fs, "/usr/share/data/a.txt", b"aaaa");
    file(&mut fs, "/usr/share/data/b.txt", b"bb");
    file(&mut fs, "/usr/share/data/sub/c.bin", b"c");
    file(&mut fs, "/usr/share/doc/pkg/README", b"readme");
    file(&mut fs, "/usr/share/doc/other/README", b"readme2");
    fs.symlink("/etc/alternatives/foo", "/usr/share/data/a.txt");
    parents(&mut fs, "/etc/alternatives/foo");
    fs.symlink("/usr/share/dangling", "/nonexistent");
    fs.symlink("/x", "/etc/shadow"); // exists on the host, not in this image
    fs.symlink("/loop", "/loop");
    // Debian's /var/run -> /run, and a daemon's socket directory in it.
    fs.symlink("/var/run", "/run");
    parents(&mut fs, "/var/run");
    fs.dir("/run/app");
    parents(&mut fs, "/run/app");
    fs
}

#[test]
fn trace_rules() {
    let fs = image();
    let t = trace(vec![
        ev(AccessKind::Exec, "/bin/ls", true),
        ev(AccessKind::ExecBinary, "/usr/bin/ls", true),
        ev(AccessKind::Open, "/etc/app.conf", true),
        ev(AccessKind::Stat, "/usr/share/data", true),
        ev(AccessKind::Stat, "/etc/missing.conf", false),
        ev(AccessKind::Access, "/usr/share/data/b.txt", false),
        ev(AccessKind::Create, "/tmp/new", true),
        ev(AccessKind::Open, "/tmp/new", true),
        ev(
            AccessKind::Create,
            "/usr/share/doc/pkg/made-at-run-time",
            true,
        ),
        ev(AccessKind::Open, "/proc/self/maps", true),
        ev(AccessKind::Readlink, "/etc/alternatives/foo", true),
        ev(AccessKind::Stat, "/usr/share/dangling", true),
        ev(AccessKind::Open, "/x", true),
        ev(AccessKind::Open, "/loop", true),
        ev(AccessKind::Open, "/../../etc/app.conf", true),
        // A lock file made at run time, opened through the /var/run link.
        ev(AccessKind::Create, "/run/app/app.lock", true),
        ev(AccessKind::OpenRequested, "/var/run/app/app.lock", true),
        ev(AccessKind::Open, "/run/app/app.lock", true),
        // Looked up inside a directory the workload made: the deepest one in the image.
        ev(AccessKind::Stat, "/usr/share/data/made/deeper/file", true),
    ]);
    let c = compute(&fs, &t, &[], &no_sets()).unwrap();
    let reason = |p: &str| c.entries.get(&ImagePath::new(p)).map(|k| k.reason);

    assert_eq!(reason("/bin"), Some(Reason::Symlink));
    assert_eq!(reason("/usr/bin/ls"), Some(Reason::Traced));
    assert_eq!(
        reason("/usr/lib/x86_64-linux-gnu/libc.so.6"),
        Some(Reason::Elf)
    );
    assert_eq!(
        reason("/usr/lib/x86_64-linux-gnu/libselinux.so.1"),
        Some(Reason::Elf)
    );
    assert_eq!(reason("/lib64"), Some(Reason::Symlink));
    assert_eq!(
        reason("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        Some(Reason::Elf)
    );
    assert_eq!(reason("/etc/ld.so.cache"), Some(Reason::Elf));
    assert_eq!(reason("/etc/app.conf"), Some(Reason::Traced));
    // A directory lookup keeps the directory entry, not its contents.
    assert_eq!(reason("/usr/share/data"), Some(Reason::Traced));
    assert_eq!(reason("/usr/share/data/a.txt"), None);
    assert_eq!(
        reason("/usr/share/data/b.txt"),
        None,
        "failed lookups are not kept"
    );
    assert_eq!(reason("/etc/missing.conf"), None);
    assert_eq!(reason("/tmp/new"), None, "created at run time");
    assert_eq!(reason("/tmp"), None);
    // The directory a file was created in must exist (nginx mkdirs into /var/lib/nginx).
    assert_eq!(reason("/usr/share/doc/pkg"), Some(Reason::Traced));
    assert_eq!(reason("/usr/share/doc/pkg/made-at-run-time"), None);
    assert_eq!(reason("/usr/share/doc/pkg/README"), None);
    // The way to what the workload made at run time: the link it went through, the
    // directory it reached (not its other contents).
    assert_eq!(reason("/var/run"), Some(Reason::Symlink));
    assert_eq!(reason("/run/app"), Some(Reason::Traced));
    assert_eq!(reason("/run/app/app.lock"), None);
    assert_eq!(reason("/usr/share/data/made"), None);
    assert!(!c.entries.keys().any(|p| p.as_str().starts_with("/proc")));
    // readlink keeps the link, not its target.
    assert_eq!(reason("/etc/alternatives/foo"), Some(Reason::Traced));
    // A dangling link that was looked at is kept as itself.
    assert_eq!(reason("/usr/share/dangling"), Some(Reason::Traced));
    // Nothing from the host.
    assert_eq!(reason("/etc/shadow"), None);
    assert_eq!(
        reason("/x"),
        Some(Reason::Traced),
        "the link exists in the image"
    );
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("/loop") && w.contains("too many levels")),
        "{:?}",
        c.warnings
    );
    // Parents.
    for p in ["/", "/usr", "/usr/share", "/usr/lib/x86_64-linux-gnu"] {
        assert_eq!(reason(p), Some(Reason::Parent), "{p}");
    }
    // The image's /etc is where /x led (to a file the workload found there at run time),
    // which ranks above being a parent.
    assert_eq!(reason("/etc"), Some(Reason::Traced));
    // Every kept path exists in the image.
    for p in c.entries.keys() {
        assert!(
            fs.entries.contains_key(p) || p.is_root(),
            "{p} is not in the image"
        );
    }
    // The lower bound counts the traced and ELF files.
    let libc = fs.entries[&ImagePath::new("/usr/lib/x86_64-linux-gnu/libc.so.6")].size;
    assert!(c.required_bytes > libc, "{}", c.required_bytes);
    assert_eq!(
        c.required_bytes, c.kept_bytes,
        "no default sets, no includes"
    );
}

#[test]
fn opened_shared_objects_bring_their_own_needs() {
    // A dlopen'd library shows up as a plain open; its DT_NEEDED must come along.
    let fs = image();
    let t = trace(vec![ev(
        AccessKind::Open,
        "/usr/lib/x86_64-linux-gnu/libselinux.so.1",
        true,
    )]);
    let c = compute(&fs, &t, &[], &no_sets()).unwrap();
    assert_eq!(
        c.entries[&ImagePath::new("/usr/lib/x86_64-linux-gnu/libselinux.so.1")].reason,
        Reason::Traced
    );
    let pcre = &c.entries[&ImagePath::new("/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0")];
    assert_eq!(pcre.reason, Reason::Symlink);
    assert_eq!(
        pcre.detail,
        "libpcre2-8.so.0 needed by /usr/lib/x86_64-linux-gnu/libselinux.so.1"
    );
    assert!(c.contains("/usr/lib/x86_64-linux-gnu/libc.so.6"));
    // Opening a text file is not an ELF closure.
    let t = trace(vec![ev(AccessKind::Open, "/etc/app.conf", true)]);
    let c = compute(&fs, &t, &[], &no_sets()).unwrap();
    assert!(!c.contains("/etc/ld.so.cache"));
}

#[test]
fn scripts_and_env_interpreters() {
    let mut fs = image();
    exe(
        &mut fs,
        "/app/run.py",
        b"#!/usr/bin/env python3\nprint(1)\n",
    );
    exe(&mut fs, "/app/run.sh", b"#!/bin/sh -e\nexec /app/run.py\n");
    file(&mut fs, "/app/notexec.sh", b"#!/usr/bin/perl\n");
    let t = trace(vec![
        ev(AccessKind::Exec, "/app/run.sh", true),
        ev(AccessKind::Open, "/app/notexec.sh", true),
    ]);
    let c = compute(&fs, &t, &["/app/run.py".into()], &no_sets()).unwrap();
    let reason = |p: &str| c.entries.get(&ImagePath::new(p)).map(|k| k.reason);
    assert_eq!(reason("/app/run.sh"), Some(Reason::Traced));
    assert_eq!(reason("/usr/bin/dash"), Some(Reason::Interpreter));
    assert_eq!(reason("/app/run.py"), Some(Reason::Traced));
    assert_eq!(reason("/usr/bin/env"), Some(Reason::Interpreter));
    assert_eq!(reason("/usr/bin/python3"), Some(Reason::Symlink));
    assert_eq!(reason("/usr/bin/python3.11"), Some(Reason::Interpreter));
    assert_eq!(
        reason("/usr/lib/x86_64-linux-gnu/libexpat.so.1"),
        Some(Reason::Symlink)
    );
    assert!(
        c.entries.keys().any(|p| p
            .as_str()
            .starts_with("/usr/lib/x86_64-linux-gnu/libexpat.so.1.")),
        "python3's libexpat missing"
    );
    assert_eq!(
        c.entries[&ImagePath::new("/usr/bin/python3.11")].detail,
        "#! interpreter of /app/run.py (through env)"
    );
    // A non-executable file's #! line is not followed.
    assert!(
        !c.warnings.iter().any(|w| w.contains("perl")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn entrypoint_is_kept_with_its_closure() {
    let fs = image();
    let c = compute(
        &fs,
        &Trace::default(),
        &["ls".into(), "-l".into()],
        &no_sets(),
    )
    .unwrap();
    assert_eq!(
        c.entries[&ImagePath::new("/usr/bin/ls")].reason,
        Reason::Traced
    );
    assert!(c.contains("/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0"));

    let argv = ["/bin/sh".into(), "-c".into(), "exec ls -l /".into()];
    let c = compute(&fs, &Trace::default(), &argv, &no_sets()).unwrap();
    assert!(
        c.contains("/usr/bin/dash")
            && c.contains("/usr/bin/sh")
            && c.contains("/bin")
            && c.contains("/usr/bin/ls")
    );

    let c = compute(&fs, &Trace::default(), &["nope".into()], &no_sets()).unwrap();
    assert!(
        c.warnings.iter().any(|w| w.contains("entrypoint nope")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn relative_entrypoint_runs_from_the_working_dir() {
    let mut fs = image();
    let ls = fs.data[&ImagePath::new("/usr/bin/ls")].clone();
    exe(&mut fs, "/app/server", &ls);
    exe(&mut fs, "/app/run.sh", b"#!/bin/sh\nexec ./server\n");
    let argv = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let run = |fs: &MemFs, wd: &str, a: &[&str]| {
        compute_with_workdir(fs, &Trace::default(), &argv(a), wd, &no_sets()).unwrap()
    };

    let c = run(&fs, "/app", &["./server", "--port", "80"]);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(
        c.entries[&ImagePath::new("/app/server")].reason,
        Reason::Traced
    );
    assert_eq!(
        c.entries[&ImagePath::new("/app/server")].detail,
        "image entrypoint"
    );
    assert!(c.contains("/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0"));
    assert_eq!(
        c.entries[&ImagePath::new("/app")].detail,
        "image working directory"
    );
    // Without the working directory the same argv is looked up from `/`, and said so.
    let c = compute(&fs, &Trace::default(), &argv(&["./server"]), &no_sets()).unwrap();
    assert!(!c.contains("/app/server"));
    assert!(
        c.warnings.iter().any(|w| w
            == "entrypoint ./server is not in the image (looked up from the working directory /)"),
        "{:?}",
        c.warnings
    );
    // Empty and relative WorkingDir values are from `/`, like Docker.
    assert!(run(&fs, "app", &["./server"]).contains("/app/server"));
    assert!(run(&fs, "", &["app/server"]).contains("/app/server"));
    // A bare name is a PATH lookup, never the working directory.
    let c = run(&fs, "/app", &["server"]);
    assert!(!c.contains("/app/server"));
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("entrypoint server is not in the image (nor on its PATH)")),
        "{:?}",
        c.warnings
    );
    assert!(run(&fs, "/app", &["ls"]).contains("/usr/bin/ls"));
    // A script, and a shell running the program.
    let c = run(&fs, "/app", &["./run.sh"]);
    assert!(
        c.contains("/app/run.sh") && c.contains("/usr/bin/dash"),
        "{:?}",
        c.warnings
    );
    let c = run(&fs, "/app", &["/bin/sh", "-c", "exec ./server -x"]);
    assert!(c.contains("/app/server"), "{:?}", c.warnings);
    assert_eq!(
        c.entries[&ImagePath::new("/app/server")].detail,
        "run by the image entrypoint's shell"
    );
}

#[test]
fn relative_entrypoint_follows_symlinks_like_the_kernel() {
    // WORKDIR /app is a link to /opt/app, whose `bin` is a link to /opt/tools/bin: the
    // kernel resolves `./bin/../server` to /opt/tools/server (not the lexical
    // /opt/app/server), and the links on the way must stay in the image.
    let mut fs = image();
    let ls = fs.data[&ImagePath::new("/usr/bin/ls")].clone();
    parents(&mut fs, "/opt/app/x");
    fs.symlink("/app", "opt/app");
    fs.symlink("/opt/app/bin", "../tools/bin");
    fs.dir("/opt/tools").dir("/opt/tools/bin");
    exe(&mut fs, "/opt/tools/server", &ls);
    exe(&mut fs, "/opt/app/server", b"decoy");
    let c = compute_with_workdir(
        &fs,
        &Trace::default(),
        &["./bin/../server".into()],
        "/app",
        &no_sets(),
    )
    .unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(c.contains("/opt/tools/server"));
    assert!(!c.contains("/opt/app/server"));
    assert_eq!(c.entries[&ImagePath::new("/app")].reason, Reason::Symlink);
    assert_eq!(
        c.entries[&ImagePath::new("/opt/app/bin")].reason,
        Reason::Symlink
    );
    assert_eq!(
        c.entries[&ImagePath::new("/opt/app")].reason,
        Reason::Traced
    );
}

#[test]
fn default_sets() {
    let mut fs = image();
    file(
        &mut fs,
        "/usr/share/ca-certificates/mozilla/Root.crt",
        b"PEM",
    );
    file(&mut fs, "/etc/ssl/certs/ca-certificates.crt", b"BUNDLE");
    fs.symlink(
        "/etc/ssl/certs/Root.pem",
        "/usr/share/ca-certificates/mozilla/Root.crt",
    );
    file(&mut fs, "/etc/passwd", b"root:x:0:0::/root:/bin/sh\n");
    file(&mut fs, "/etc/group", b"root:x:0:\n");
    file(&mut fs, "/etc/shadow", b"secret");
    file(&mut fs, "/etc/nsswitch.conf", b"hosts: files dns\n");
    file(&mut fs, "/usr/share/zoneinfo/Etc/UTC", b"TZif");
    fs.symlink("/etc/localtime", "/usr/share/zoneinfo/Etc/UTC");
    for l in ["libnss_files.so.2", "libnss_dns.so.2", "libresolv.so.2"] {
        copy_host(&mut fs, &format!("/lib/x86_64-linux-gnu/{l}"));
    }
    let c = compute(
        &fs,
        &Trace::default(),
        &["ls".into()],
        &ClosureOptions::default(),
    )
    .unwrap();
    let reason = |p: &str| {
        c.entries
            .get(&ImagePath::new(p))
            .map(|k| (k.reason, k.detail.clone()))
    };
    let ds = |n: &str| Some((Reason::DefaultSet, n.to_owned()));
    assert_eq!(
        reason("/etc/ssl/certs/ca-certificates.crt"),
        ds("ca-certificates")
    );
    assert_eq!(reason("/etc/ssl/certs/Root.pem"), ds("ca-certificates"));
    assert_eq!(
        reason("/usr/share/ca-certificates/mozilla/Root.crt"),
        ds("ca-certificates")
    );
    assert_eq!(reason("/etc/passwd"), ds("passwd"));
    assert_eq!(reason("/etc/group"), ds("passwd"));
    assert_eq!(reason("/etc/shadow"), None);
    assert_eq!(reason("/etc/nsswitch.conf"), ds("nss"));
    assert_eq!(
        reason("/usr/lib/x86_64-linux-gnu/libnss_dns.so.2"),
        ds("nss")
    );
    assert_eq!(
        reason("/usr/lib/x86_64-linux-gnu/libresolv.so.2"),
        ds("nss")
    );
    assert_eq!(reason("/etc/localtime"), None, "zoneinfo is off by default");

    let rep = |s: DefaultSet| c.default_sets.iter().find(|r| r.set == s).unwrap();
    assert_eq!(rep(DefaultSet::Passwd).paths.len(), 2);
    assert_eq!(rep(DefaultSet::Passwd).bytes, 26 + 10);
    assert!(
        rep(DefaultSet::CaCertificates).paths.len() >= 5,
        "{:?}",
        rep(DefaultSet::CaCertificates)
    );
    assert!(rep(DefaultSet::Nss).bytes > 10_000);
    assert!(c.default_sets.iter().all(|r| r.set != DefaultSet::Zoneinfo));
    assert!(c.kept_bytes > c.required_bytes);

    let mut opts = no_sets();
    opts.default_sets.zoneinfo = true;
    let c = compute(&fs, &Trace::default(), &[], &opts).unwrap();
    assert!(c.contains("/etc/localtime") && c.contains("/usr/share/zoneinfo/Etc/UTC"));
    assert!(!c.contains("/etc/passwd"));
}

#[test]
fn include_include_bin_exclude() {
    let fs = image();
    let opts = ClosureOptions {
        include: vec!["/usr/share/data".into(), "/usr/share/doc/**/README".into()],
        include_bin: vec!["dash".into()],
        exclude: vec![
            "/usr/share/doc/pkg".into(),
            "*.bin".into(),
            "/nothing/*".into(),
        ],
        ..no_sets()
    };
    let c = compute(&fs, &Trace::default(), &[], &opts).unwrap();
    let reason = |p: &str| c.entries.get(&ImagePath::new(p)).map(|k| k.reason);
    assert_eq!(reason("/usr/share/data/a.txt"), Some(Reason::Include));
    assert_eq!(reason("/usr/share/data/sub"), Some(Reason::Include));
    assert_eq!(reason("/usr/share/data/sub/c.bin"), None, "excluded");
    assert_eq!(reason("/usr/share/doc/other/README"), Some(Reason::Include));
    assert_eq!(reason("/usr/share/doc/pkg/README"), None);
    assert_eq!(reason("/usr/share/doc/pkg"), None);
    assert_eq!(reason("/usr/share/doc"), Some(Reason::Parent));
    assert_eq!(reason("/usr/bin/dash"), Some(Reason::Include));
    assert_eq!(
        reason("/usr/lib/x86_64-linux-gnu/libc.so.6"),
        Some(Reason::Elf)
    );
    assert!(
        c.excluded
            .contains(&ImagePath::new("/usr/share/doc/pkg/README"))
    );
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("--exclude /nothing/*")),
        "{:?}",
        c.warnings
    );

    // An exclude never removes a directory above a path that stays.
    let opts = ClosureOptions {
        include: vec!["/usr/share/data/a.txt".into()],
        exclude: vec![
            "/usr/share/{data,doc}".into(),
            "/usr/share/data/a.txt".into(),
        ],
        ..no_sets()
    };
    let c = compute(&fs, &Trace::default(), &[], &opts).unwrap();
    assert!(!c.contains("/usr/share/data/a.txt"));
    let opts = ClosureOptions {
        include: vec!["/usr/share/data/a.txt".into()],
        exclude: vec!["/usr/share/d*".into()],
        ..no_sets()
    };
    let c = compute(&fs, &Trace::default(), &[], &opts).unwrap();
    assert!(
        !c.contains("/usr/share/data"),
        "the directory and its contents go together"
    );
}

#[test]
fn bad_rules_are_clear_errors() {
    let fs = image();
    // `check_rules` (what `minify run` checks before tracing) gives the same error as the
    // closure itself, without computing it.
    let run = |o: ClosureOptions| {
        let e = compute(&fs, &Trace::default(), &[], &o).unwrap_err();
        let checked = check_rules(&fs, &o).unwrap_err();
        assert_eq!(checked.to_string(), e.to_string());
        e
    };
    // Several bad rules: the first in the closure's own order (globs before paths).
    let e = run(ClosureOptions {
        include: vec!["/etc/shadow".into(), "/usr/[".into()],
        ..no_sets()
    });
    assert!(matches!(e, ClosureError::InvalidGlob { .. }), "{e}");
    let e = run(ClosureOptions {
        include: vec!["/etc/shadow".into()],
        include_bin: vec!["nginx".into()],
        ..no_sets()
    });
    assert!(matches!(e, ClosureError::IncludeBinNotFound { .. }), "{e}");
    let e = run(ClosureOptions {
        include: vec!["/etc/shadow".into()],
        ..no_sets()
    });
    assert!(matches!(e, ClosureError::IncludeNotFound { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("--include /etc/shadow: not in the image"),
        "{e}"
    );
    let e = run(ClosureOptions {
        exclude: vec!["/usr/[".into()],
        ..no_sets()
    });
    assert!(
        e.to_string()
            .contains("invalid --exclude pattern \"/usr/[\""),
        "{e}"
    );
    let e = run(ClosureOptions {
        include_bin: vec!["nginx".into()],
        ..no_sets()
    });
    assert!(
        e.to_string()
            .starts_with("--include-bin nginx: not in the image"),
        "{e}"
    );
    // A glob matching nothing is only a warning.
    let c = compute(
        &fs,
        &Trace::default(),
        &[],
        &ClosureOptions {
            include: vec!["/opt/**".into()],
            ..no_sets()
        },
    )
    .unwrap();
    assert!(c.warnings.iter().any(|w| w.contains("matched nothing")));
    // Good rules pass the check.
    let good = ClosureOptions {
        include: vec!["/opt/**".into(), "/usr/share/data/a.txt".into()],
        exclude: vec!["*.pyc".into()],
        ..no_sets()
    };
    check_rules(&fs, &good).unwrap();
}

#[test]
fn deterministic_allowlist() {
    let fs = image();
    let t = trace(vec![
        ev(AccessKind::ExecBinary, "/usr/bin/python3.11", true),
        ev(AccessKind::Open, "/etc/app.conf", true),
    ]);
    let src = SourceImage {
        image: "img".into(),
        digest: "sha256:00".into(),
    };
    let a = compute(&fs, &t, &["ls".into()], &ClosureOptions::default()).unwrap();
    let b = compute(&fs, &t, &["ls".into()], &ClosureOptions::default()).unwrap();
    let ja = a.to_allowlist(src.clone(), "minify test").to_json();
    assert_eq!(ja, b.to_allowlist(src, "minify test").to_json());
    assert_eq!(a.warnings, b.warnings);
    assert!(
        ja.contains(r#"{"path":"/usr/bin/python3.11","reason":"traced","detail":"exec-binary"}"#),
        "{ja}"
    );
    assert!(ja.contains(r#"{"path":"/","reason":"parent"}"#));
}

/// Only the `skeleton` set, with `input` for the image config.
fn skeleton_only(input: SkeletonInput) -> ClosureOptions {
    let mut opts = no_sets();
    opts.default_sets.skeleton = true;
    opts.skeleton = input;
    opts
}

/// The warnings other than the one for an image with no entrypoint (these tests give none).
fn warnings(c: &minify_closure::Closure) -> Vec<String> {
    c.warnings
        .iter()
        .filter(|w| !w.contains("no entrypoint or cmd"))
        .cloned()
        .collect()
}

fn set_meta(fs: &mut MemFs, path: &str, mode: u32, uid: u64) {
    let e = fs.entries.get_mut(&ImagePath::new(path)).unwrap();
    e.mode = mode;
    e.uid = uid;
    e.gid = uid;
}

/// A Debian-like image with a non-root user whose home holds files, a working directory, a
/// volume with a file in it, and the runtime's mount points.
fn skeleton_image() -> MemFs {
    let mut fs = MemFs::default();
    for d in ["/tmp", "/var/tmp", "/proc", "/sys", "/dev", "/run", "/root"] {
        parents(&mut fs, &format!("{d}/x"));
    }
    set_meta(&mut fs, "/tmp", 0o1777, 0);
    set_meta(&mut fs, "/var/tmp", 0o1777, 0);
    set_meta(&mut fs, "/root", 0o700, 0);
    file(&mut fs, "/root/.bashrc", b"# root");
    file(&mut fs, "/tmp/leftover", b"build junk");
    file(
        &mut fs,
        "/etc/passwd",
        b"root:x:0:0:root:/root:/bin/bash\napp:x:1234:1234::/home/app:/bin/sh\n",
    );
    file(&mut fs, "/home/app/.profile", b"# app");
    set_meta(&mut fs, "/home/app", 0o750, 1234);
    file(&mut fs, "/srv/data/seed.txt", b"seed");
    set_meta(&mut fs, "/srv/data", 0o770, 1234);
    fs.dir("/srv/site");
    fs
}

#[test]
fn skeleton_keeps_directories_not_their_contents() {
    let fs = skeleton_image();
    let input = SkeletonInput {
        user: "app:app".into(),
        workdir: "/srv/site".into(),
        volumes: vec![
            "/srv/data".into(),
            "/srv/data".into(),
            "/missing-volume".into(),
        ],
    };
    let c = compute(&fs, &Trace::default(), &[], &skeleton_only(input.clone())).unwrap();
    let detail = |p: &str| {
        let k = c
            .entries
            .get(&ImagePath::new(p))
            .unwrap_or_else(|| panic!("{p} not kept"));
        assert_eq!(k.reason, Reason::DefaultSet, "{p}");
        k.detail.clone()
    };
    assert_eq!(detail("/tmp"), "skeleton: temporary directory");
    assert_eq!(detail("/var/tmp"), "skeleton: temporary directory");
    assert_eq!(detail("/root"), "skeleton: home of root");
    assert_eq!(detail("/home/app"), "skeleton: home of USER app:app");
    assert_eq!(detail("/srv/site"), "skeleton: WORKDIR");
    assert_eq!(detail("/srv/data"), "skeleton: VOLUME");
    for p in ["/proc", "/sys", "/dev", "/run"] {
        assert_eq!(detail(p), "skeleton: mount point");
    }
    for p in [
        "/tmp/leftover",
        "/root/.bashrc",
        "/home/app/.profile",
        "/srv/data/seed.txt",
    ] {
        assert!(!c.contains(p), "{p}: contents kept");
    }
    let rep = c
        .default_sets
        .iter()
        .find(|r| r.set == DefaultSet::Skeleton)
        .unwrap();
    assert_eq!(rep.absent, vec!["/missing-volume".to_owned()]);
    assert!(rep.paths.contains(&ImagePath::new("/srv/data")));
    assert_eq!(rep.bytes, 0);
    assert!(warnings(&c).is_empty(), "{:?}", c.warnings);

    // The same inputs, the same allowlist.
    let src = SourceImage {
        image: "img".into(),
        digest: "sha256:00".into(),
    };
    let again = compute(&fs, &Trace::default(), &[], &skeleton_only(input)).unwrap();
    assert_eq!(
        c.to_allowlist(src.clone(), "t").to_json(),
        again.to_allowlist(src, "t").to_json()
    );

    // Off by `--no-default-set skeleton`; on by default.
    let c = compute(&fs, &Trace::default(), &[], &no_sets()).unwrap();
    assert!(!c.contains("/tmp") && !c.contains("/home/app"));
    assert!(ClosureOptions::default().default_sets.skeleton);
}

#[test]
fn skeleton_user_forms_and_missing_users() {
    let fs = skeleton_image();
    let home = |user: &str| {
        let c = compute(
            &fs,
            &Trace::default(),
            &[],
            &skeleton_only(SkeletonInput {
                user: user.into(),
                ..SkeletonInput::default()
            }),
        )
        .unwrap();
        (c.contains("/home/app"), c.contains("/root"), warnings(&c))
    };
    for user in ["app", "1234", "app:app", "1234:1234", "app:0"] {
        assert_eq!(home(user), (true, true, vec![]), "USER {user}");
    }
    for user in ["", "root", "0", "0:0"] {
        assert_eq!(home(user), (false, true, vec![]), "USER {user}");
    }
    // A uid with no passwd line runs with HOME=/: nothing to keep, nothing to say.
    assert_eq!(home("4242:4242"), (false, true, vec![]));
    // A name with no passwd line cannot run at all: said.
    let (app, root, w) = home("ghost");
    assert!(!app && root);
    assert!(
        w[0].contains("USER ghost is not in the image's /etc/passwd"),
        "{w:?}"
    );
}

/// Homes, working directories and volumes are looked up inside the image only: a link out of
/// the image root lands inside it (or on nothing), a link loop or a file is a warning, and a
/// missing or hostile `/etc/passwd` never stops the closure.
#[test]
fn skeleton_hostile_links_and_passwd() {
    let mut fs = skeleton_image();
    // The home is a link that climbs out of the root: it resolves to the image's own /etc.
    file(
        &mut fs,
        "/etc/passwd",
        b"root:x:0:0::/root:/bin/sh\napp:x:1:1::/home/escape:/bin/sh\n\
          loop:x:2:2::/home/loop:/bin/sh\nfile:x:3:3::/etc/passwd:/bin/sh\n\
          rel:x:4:4::home/rel:/bin/sh\nhost:x:5:5::/home/host:/bin/sh\n",
    );
    fs.symlink("/home/escape", "../../../../../etc");
    fs.symlink("/home/loop", "/home/loop");
    // A directory that exists on every host but not in this image.
    fs.symlink("/home/host", "/usr/lib/systemd");
    fs.symlink("/srv/work", "/../../../proc/self");
    let run = |user: &str, workdir: &str| {
        compute(
            &fs,
            &Trace::default(),
            &[],
            &skeleton_only(SkeletonInput {
                user: user.into(),
                workdir: workdir.into(),
                volumes: vec![],
            }),
        )
        .unwrap()
    };
    let c = run("app", "/srv/work");
    assert_eq!(
        c.entries[&ImagePath::new("/home/escape")].reason,
        Reason::Symlink
    );
    assert_eq!(
        c.entries[&ImagePath::new("/etc")].reason,
        Reason::DefaultSet
    );
    assert!(!c.contains("/etc/passwd"), "a home keeps no contents");
    // /srv/work -> /proc/self: /proc is in the image, /proc/self is not.
    let rep = c
        .default_sets
        .iter()
        .find(|r| r.set == DefaultSet::Skeleton)
        .unwrap();
    assert_eq!(rep.absent, vec!["/srv/work".to_owned()]);

    let c = run("loop", "/");
    assert!(
        c.warnings
            .iter()
            .any(|w| w.starts_with("skeleton: home of USER loop") && w.contains("too many levels")),
        "{:?}",
        c.warnings
    );
    let c = run("file", "/");
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("/etc/passwd (/etc/passwd) is not a directory")),
        "{:?}",
        c.warnings
    );
    assert!(!c.contains("/etc/passwd"));
    let c = run("rel", "/");
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("\"home/rel\" is not an absolute path")),
        "{:?}",
        c.warnings
    );
    let c = run("host", "/");
    assert!(!c.contains("/usr/lib/systemd") && !c.contains("/usr"));

    // No passwd at all: root's home is still /root, a named user is said to be unknown.
    let mut fs = skeleton_image();
    fs.entries.remove(&ImagePath::new("/etc/passwd"));
    let c = compute(
        &fs,
        &Trace::default(),
        &[],
        &skeleton_only(SkeletonInput {
            user: "app".into(),
            ..SkeletonInput::default()
        }),
    )
    .unwrap();
    assert!(c.contains("/root") && !c.contains("/home/app"));
    assert!(
        c.warnings.iter().any(|w| w.contains("USER app is not")),
        "{:?}",
        c.warnings
    );

    // A binary passwd: said, and the closure goes on.
    let mut fs = skeleton_image();
    file(&mut fs, "/etc/passwd", &[0u8, 0xff, b':', b'\n', 0x7f, 0]);
    let c = compute(
        &fs,
        &Trace::default(),
        &[],
        &skeleton_only(SkeletonInput {
            user: "1234".into(),
            ..SkeletonInput::default()
        }),
    )
    .unwrap();
    assert!(c.contains("/root") && c.contains("/tmp"));
    assert!(
        c.warnings.iter().any(|w| w.contains("not text")),
        "{:?}",
        c.warnings
    );
}

/// A `FROM scratch` image with nothing but a program: nothing is made up, the report says
/// what the source lacks, and the missing /tmp is a warning.
#[test]
fn skeleton_on_a_scratch_image_invents_nothing() {
    let mut fs = MemFs::default();
    file(&mut fs, "/server", b"\x7fELF not really");
    let c = compute(
        &fs,
        &Trace::default(),
        &[],
        &skeleton_only(SkeletonInput {
            user: "65532".into(),
            workdir: "/".into(),
            volumes: vec!["/data".into()],
        }),
    )
    .unwrap();
    let rep = c
        .default_sets
        .iter()
        .find(|r| r.set == DefaultSet::Skeleton)
        .unwrap();
    assert!(rep.paths.is_empty(), "{rep:?}");
    assert_eq!(
        rep.absent,
        [
            "/tmp", "/var/tmp", "/proc", "/sys", "/dev", "/run", "/root", "/data"
        ]
    );
    assert!(
        c.warnings.iter().any(|w| w.contains("has no /tmp")),
        "{:?}",
        c.warnings
    );
    assert!(c.entries.keys().all(ImagePath::is_root), "{:?}", c.entries);
}
