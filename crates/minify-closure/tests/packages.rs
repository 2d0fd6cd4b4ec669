//! The package rule (`--granularity package`) over a hand-built usrmerged Debian layout with
//! a dpkg database; real images are in the e2e tests (tests/e2e/packages.rs).

use minify_closure::{
    ClosureError, ClosureOptions, DefaultSets, Granularity, PackageOptions, compute,
    expand_allowlist,
};
use minify_elf::testutil::parents;
use minify_model::allowlist::SourceImage;
use minify_model::rootfs::memfs::MemFs;
use minify_model::trace::Special;
use minify_model::{AccessKind, ImagePath, Reason, Trace, TraceEvent};

fn open(path: &str) -> TraceEvent {
    TraceEvent {
        pid: 1,
        comm: "t".into(),
        kind: AccessKind::Open,
        path: path.into(),
        ok: true,
        special: Special::of(path),
        detail: String::new(),
    }
}

fn file(fs: &mut MemFs, path: &str, content: &[u8], mode: u32) {
    parents(fs, path);
    fs.file(path, content);
    fs.entries.get_mut(&ImagePath::new(path)).unwrap().mode = mode;
}

const JDK: &str = "/usr/lib/jvm/java-17";

fn image() -> MemFs {
    let mut fs = MemFs::default();
    fs.dir("/usr")
        .dir("/usr/lib")
        .dir("/usr/bin")
        .dir("/usr/sbin");
    fs.symlink("/lib", "usr/lib").symlink("/bin", "usr/bin");
    file(
        &mut fs,
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        b"libc",
        0o755,
    );
    file(
        &mut fs,
        "/usr/lib/x86_64-linux-gnu/gconv/ISO8859-1.so",
        b"gconv",
        0o644,
    );
    file(
        &mut fs,
        "/usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache",
        b"c",
        0o644,
    );
    file(&mut fs, "/usr/share/doc/libc6/copyright", b"doc", 0o644);
    file(
        &mut fs,
        "/usr/share/locale/de/LC_MESSAGES/libc.mo",
        b"mo",
        0o644,
    );
    file(&mut fs, "/usr/bin/iconv", b"iconv", 0o755);
    file(&mut fs, "/usr/sbin/ldconfig", b"ldconfig", 0o755);
    file(&mut fs, "/usr/bin/dash", b"dash", 0o755);
    fs.symlink("/usr/bin/sh", "dash");
    file(&mut fs, "/usr/bin/apt", b"apt", 0o755);
    file(&mut fs, "/usr/lib/apt/methods/http", b"http", 0o755);
    file(&mut fs, &format!("{JDK}/lib/libjava.so"), b"java", 0o644);
    file(&mut fs, &format!("{JDK}/lib/jspawnhelper"), b"spawn", 0o755);
    file(
        &mut fs,
        "/etc/java-17/security/java.security",
        b"sec",
        0o644,
    );
    parents(&mut fs, &format!("{JDK}/conf/security/java.security"));
    fs.symlink(
        &format!("{JDK}/conf/security/java.security"),
        "/etc/java-17/security/java.security",
    );
    file(
        &mut fs,
        "/var/lib/dpkg/status",
        b"Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9\n\n\
Package: dash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 0.5.12\n\n\
Package: apt\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.6.1\nDepends: libc6\n\n\
Package: openjdk-17-jre-headless\nStatus: install ok installed\nArchitecture: amd64\nVersion: 17.0.9\nDepends: libc6\nConffiles:\n /etc/java-17/security/java.security 0\n",
        0o644,
    );
    file(
        &mut fs,
        "/var/lib/dpkg/info/libc6:amd64.list",
        b"/.\n/lib\n/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu/libc.so.6\n/usr/lib/x86_64-linux-gnu/gconv/ISO8859-1.so\n/usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache\n/usr/share/doc/libc6/copyright\n/usr/share/locale/de/LC_MESSAGES/libc.mo\n/usr/bin/iconv\n/sbin/ldconfig\n",
        0o644,
    );
    file(
        &mut fs,
        "/var/lib/dpkg/info/dash.list",
        b"/bin/dash\n/bin/sh\n",
        0o644,
    );
    file(
        &mut fs,
        "/var/lib/dpkg/info/apt.list",
        b"/usr/bin/apt\n/usr/lib/apt/methods/http\n",
        0o644,
    );
    let jdk_list = format!(
        "{JDK}/lib/libjava.so\n{JDK}/lib/jspawnhelper\n{JDK}/conf/security/java.security\n"
    );
    file(
        &mut fs,
        "/var/lib/dpkg/info/openjdk-17-jre-headless:amd64.list",
        jdk_list.as_bytes(),
        0o644,
    );
    fs
}

fn opts(granularity: Granularity) -> ClosureOptions {
    ClosureOptions {
        default_sets: DefaultSets::none(),
        packages: PackageOptions {
            granularity,
            ..PackageOptions::default()
        },
        ..ClosureOptions::default()
    }
}

fn trace() -> Trace {
    Trace {
        // The workload opened libc through the /lib link, glibc's iconv cache (it converts
        // charsets) and one JDK library.
        events: vec![
            open("/lib/x86_64-linux-gnu/libc.so.6"),
            open("/usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache"),
            open(&format!("{JDK}/lib/libjava.so")),
        ],
        ..Trace::default()
    }
}

#[test]
fn file_granularity_keeps_only_what_was_used() {
    let c = compute(&image(), &trace(), &[], &opts(Granularity::File)).unwrap();
    assert!(c.contains("/usr/lib/x86_64-linux-gnu/libc.so.6"));
    assert!(!c.contains("/usr/lib/x86_64-linux-gnu/gconv/ISO8859-1.so"));
    assert!(!c.contains("/etc/java-17/security/java.security"));
    assert!(c.packages.is_empty());
}

#[test]
fn package_granularity_keeps_used_packages_whole_minus_docs_locales_and_bins() {
    let c = compute(&image(), &trace(), &[], &opts(Granularity::Package)).unwrap();
    let gconv = &c.entries[&ImagePath::new("/usr/lib/x86_64-linux-gnu/gconv/ISO8859-1.so")];
    assert_eq!(gconv.reason, Reason::Package);
    assert_eq!(gconv.detail, "libc6 2.36-9 (deb)");
    // The JDK's lazily used parts: its helper, its security link and the conffile behind it.
    assert!(c.contains(&format!("{JDK}/lib/jspawnhelper")));
    assert!(c.contains(&format!("{JDK}/conf/security/java.security")));
    assert!(c.contains("/etc/java-17/security/java.security"));
    for out in [
        "/usr/share/doc/libc6/copyright",
        "/usr/share/locale/de/LC_MESSAGES/libc.mo",
        // Executables under bin/ and sbin/ of a used package stay out.
        "/usr/bin/iconv",
        "/usr/sbin/ldconfig",
        // Unused packages, dependencies or not, stay out: no shell, no package manager.
        "/usr/bin/dash",
        "/usr/bin/sh",
        "/usr/bin/apt",
        "/usr/lib/apt/methods/http",
    ] {
        assert!(!c.contains(out), "{out} kept by the package rule");
    }
    let names: Vec<&str> = c.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"libc6") && names.contains(&"openjdk-17-jre-headless"));
    let libc = c.packages.iter().find(|p| p.name == "libc6").unwrap();
    assert_eq!(
        libc.pulled_by,
        "/usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache"
    );
    assert_eq!((libc.kind, libc.version.as_str()), ("deb", "2.36-9"));
    // libc.so.6, the gconv cache and module and the `/lib` link libc6 lists (kept on the
    // way).
    assert_eq!((libc.files, libc.bytes, libc.added_bytes), (4, 10, 5));
    // Parents of what the rule added are kept.
    assert!(c.contains("/usr/lib/x86_64-linux-gnu/gconv"));
}

#[test]
fn locale_set_lets_locales_in() {
    let mut o = opts(Granularity::Package);
    o.default_sets.locale = true;
    let c = compute(&image(), &trace(), &[], &o).unwrap();
    assert!(c.contains("/usr/share/locale/de/LC_MESSAGES/libc.mo"));
    assert!(!c.contains("/usr/share/doc/libc6/copyright"));
}

#[test]
fn include_and_exclude_package() {
    let mut o = opts(Granularity::Package);
    o.packages.include = vec!["apt".into()];
    o.packages.exclude = vec!["libc6".into(), "nonesuch".into()];
    let c = compute(&image(), &trace(), &[], &o).unwrap();
    assert!(c.contains("/usr/lib/apt/methods/http"));
    assert!(
        !c.contains("/usr/bin/apt"),
        "bin/ stays out even when included"
    );
    assert!(!c.contains("/usr/lib/x86_64-linux-gnu/gconv/ISO8859-1.so"));
    assert!(
        c.contains("/usr/lib/x86_64-linux-gnu/libc.so.6"),
        "used files stay"
    );
    assert!(
        c.warnings
            .iter()
            .any(|w| w == "--exclude-package nonesuch: no such package in the image"),
        "{:?}",
        c.warnings
    );
    o.packages.include = vec!["nonesuch".into()];
    let err = compute(&image(), &trace(), &[], &o).unwrap_err();
    assert!(matches!(err, ClosureError::PackageNotFound { .. }));
    let checked = minify_closure::check_rules(&image(), &o).unwrap_err();
    assert_eq!(checked.to_string(), err.to_string());
    assert_eq!(
        err.to_string(),
        "--include-package nonesuch: no such package in the image"
    );
}

#[test]
fn allowlist_expansion_matches_the_closure() {
    let fs = image();
    let src = SourceImage::default();
    let file_al = compute(&fs, &trace(), &[], &opts(Granularity::File))
        .unwrap()
        .to_allowlist(src.clone(), "t");
    let pkg_al = compute(&fs, &trace(), &[], &opts(Granularity::Package))
        .unwrap()
        .to_allowlist(src, "t");
    let (expanded, reports, _) =
        expand_allowlist(&fs, &file_al, &opts(Granularity::Package).packages, false).unwrap();
    assert_eq!(expanded.path_set(), pkg_al.path_set());
    assert_eq!(reports.len(), 2);
}

#[test]
fn python_distributions_keep_only_their_used_top_level_parts() {
    let mut fs = image();
    let site = "/venv/lib/python3.11/site-packages";
    file(
        &mut fs,
        &format!("{site}/_distutils_hack/__init__.py"),
        b"hook",
        0o644,
    );
    file(
        &mut fs,
        &format!("{site}/_distutils_hack/override.py"),
        b"o",
        0o644,
    );
    file(
        &mut fs,
        &format!("{site}/setuptools/__init__.py"),
        b"big",
        0o644,
    );
    file(
        &mut fs,
        &format!("{site}/distutils-precedence.pth"),
        b"import _distutils_hack",
        0o644,
    );
    file(
        &mut fs,
        &format!("{site}/setuptools-66.1.1.dist-info/METADATA"),
        b"m",
        0o644,
    );
    file(
        &mut fs,
        &format!("{site}/setuptools-66.1.1.dist-info/RECORD"),
        b"_distutils_hack/__init__.py,,\n_distutils_hack/override.py,,\nsetuptools/__init__.py,,\ndistutils-precedence.pth,,\nsetuptools-66.1.1.dist-info/METADATA,,\n",
        0o644,
    );
    let t = Trace {
        events: vec![
            open(&format!("{site}/distutils-precedence.pth")),
            open(&format!("{site}/_distutils_hack/__init__.py")),
        ],
        ..Trace::default()
    };
    let c = compute(&fs, &t, &[], &opts(Granularity::Package)).unwrap();
    assert!(c.contains(&format!("{site}/_distutils_hack/override.py")));
    assert!(c.contains(&format!("{site}/setuptools-66.1.1.dist-info/METADATA")));
    assert!(!c.contains(&format!("{site}/setuptools/__init__.py")));
    let st = c.packages.iter().find(|p| p.name == "setuptools").unwrap();
    assert_eq!(st.kind, "python");
    // `--include-package` keeps every part.
    let mut o = opts(Granularity::Package);
    o.packages.include = vec!["setuptools".into()];
    let c = compute(&fs, &t, &[], &o).unwrap();
    assert!(c.contains(&format!("{site}/setuptools/__init__.py")));
}

#[test]
fn gconv_modules_only_for_a_workload_that_read_the_gconv_cache() {
    let mut t = trace();
    t.events.retain(|e| !e.path.contains("gconv"));
    let c = compute(&image(), &t, &[], &opts(Granularity::Package)).unwrap();
    assert!(!c.contains("/usr/lib/x86_64-linux-gnu/gconv/ISO8859-1.so"));
    assert!(!c.contains("/usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache"));
    // libc6 is still kept whole otherwise, and `--include-package` keeps the modules too.
    assert!(c.packages.iter().any(|p| p.name == "libc6"));
    let mut o = opts(Granularity::Package);
    o.packages.include = vec!["libc6".into()];
    let c = compute(&image(), &t, &[], &o).unwrap();
    assert!(c.contains("/usr/lib/x86_64-linux-gnu/gconv/ISO8859-1.so"));
}

/// The pruned database is in every output (both granularities): the status keeps the
/// paragraphs of packages with a kept file, the lists are cut, all with reason `package-db`;
/// re-closing the allowlist (what `minify build` does) gives the same paths and bytes.
#[test]
fn pruned_package_db_in_both_granularities_and_again_on_reclose() {
    let fs = image();
    for g in [Granularity::File, Granularity::Package] {
        let c = compute(&fs, &trace(), &[], &opts(g)).unwrap();
        let status =
            String::from_utf8(c.generated[&ImagePath::new("/var/lib/dpkg/status")].clone())
                .unwrap();
        let names: Vec<&str> = status
            .lines()
            .filter_map(|l| l.strip_prefix("Package: "))
            .collect();
        assert_eq!(names, ["libc6", "openjdk-17-jre-headless"], "{g:?}");
        let e = &c.entries[&ImagePath::new("/var/lib/dpkg/status")];
        assert_eq!(e.reason, Reason::PackageDb);
        assert_eq!(e.detail, "dpkg status: 2 of 4 paragraphs");
        assert!(c.contains("/var/lib/dpkg/info/libc6:amd64.list"));
        assert!(!c.contains("/var/lib/dpkg/info/apt.list"));
        assert!(!c.contains("/var/lib/dpkg/info/dash.list"));
        let list = String::from_utf8(
            c.generated[&ImagePath::new("/var/lib/dpkg/info/libc6:amd64.list")].clone(),
        )
        .unwrap();
        assert!(list.contains("/lib/x86_64-linux-gnu/libc.so.6\n"), "{list}");
        assert!(!list.contains("copyright"), "{list}");
        // The accounting: libc6 partly kept, apt absent.
        let acc = |name: &str| {
            let a = c
                .package_accounts
                .iter()
                .find(|a| c.package_db.packages[a.id].name == name)
                .unwrap();
            a.state
        };
        assert_eq!(acc("apt"), minify_packages::State::Absent);
        assert_eq!(acc("libc6"), minify_packages::State::Partial);

        let al = c.to_allowlist(SourceImage::default(), "t");
        let re = minify_closure::reclose(&fs, &al, &[], "/", &opts(g)).unwrap();
        assert_eq!(re.closure.generated, c.generated, "{g:?}");
        assert_eq!(
            re.closure.entries.keys().collect::<Vec<_>>(),
            c.entries.keys().collect::<Vec<_>>()
        );
    }
}
