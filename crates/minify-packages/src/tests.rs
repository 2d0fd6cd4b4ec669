//! Unit tests over hand-built in-memory root filesystems (the real images are in the e2e
//! tests, tests/e2e/packages.rs).

use minify_model::rootfs::memfs::MemFs;

use super::*;

fn p(s: &str) -> ImagePath {
    ImagePath::new(s)
}

/// A usrmerged Debian layout: `/lib -> usr/lib`, `/bin -> usr/bin`.
fn debian() -> MemFs {
    let mut fs = MemFs::default();
    fs.dir("/usr")
        .dir("/usr/lib")
        .dir("/usr/lib/x86_64-linux-gnu")
        .dir("/usr/lib/x86_64-linux-gnu/gconv")
        .dir("/usr/bin")
        .dir("/usr/share")
        .dir("/usr/share/doc")
        .dir("/usr/share/doc/libc6")
        .dir("/etc")
        .dir("/var")
        .dir("/var/lib")
        .dir("/var/lib/dpkg")
        .dir("/var/lib/dpkg/info")
        .symlink("/lib", "usr/lib")
        .symlink("/bin", "usr/bin")
        .file("/usr/lib/x86_64-linux-gnu/libc.so.6", b"elf")
        .file("/usr/lib/x86_64-linux-gnu/gconv/ISO8859-1.so", b"elf")
        .file("/usr/share/doc/libc6/copyright", b"c")
        .file("/usr/bin/dash", b"elf")
        .symlink("/usr/bin/sh", "dash")
        .file("/etc/ld.so.conf", b"")
        .file(
            "/var/lib/dpkg/status",
            b"Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9\nConffiles:\n /etc/ld.so.conf abc\n /etc/gone.conf def obsolete\nDescription: x\n more\n\n\
Package: dash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 0.5.12-2\n\n\
Package: removed\nStatus: deinstall ok config-files\nVersion: 1\n\n\
Status: install ok installed\nVersion: 3\n",
        )
        .file(
            "/var/lib/dpkg/info/libc6:amd64.list",
            b"/.\n/lib\n/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu/libc.so.6\n/usr/lib/x86_64-linux-gnu/gconv/ISO8859-1.so\n/usr/share/doc/libc6/copyright\n/lib/x86_64-linux-gnu/libmissing.so\n",
        )
        .file(
            "/var/lib/dpkg/info/dash.list",
            b"/bin\n/bin/dash\n/bin/sh\n/usr/../../../../etc/ld.so.conf\n",
        );
    fs
}

fn names(db: &PackageDb, path: &str) -> Vec<String> {
    db.owners(&p(path))
        .iter()
        .map(|&i| db.packages[i].name.clone())
        .collect()
}

#[test]
fn dpkg_lists_resolve_through_the_images_links() {
    let db = PackageDb::read(&debian());
    assert_eq!(db.packages.len(), 2, "{:?}", db.packages);
    // Listed as /lib/..., held under /usr/lib through the image's /lib link.
    assert_eq!(names(&db, "/usr/lib/x86_64-linux-gnu/libc.so.6"), ["libc6"]);
    assert_eq!(names(&db, "/usr/bin/dash"), ["dash"]);
    // The last component is not followed: /bin/sh is the link itself.
    assert_eq!(names(&db, "/usr/bin/sh"), ["dash"]);
    // Directories are never owned, however many packages list them.
    assert!(names(&db, "/usr/lib").is_empty());
    // Nor a link to one (libc6 lists `/lib`, the image's usrmerge link), though it is the
    // package's file.
    assert!(names(&db, "/lib").is_empty());
    assert!(db.packages[0].files.contains(&p("/lib")));
    let libc = &db.packages[db.owners(&p("/usr/lib/x86_64-linux-gnu/libc.so.6"))[0]];
    assert_eq!(libc.version, "2.36-9");
    assert_eq!(libc.arch, "amd64");
    assert_eq!(libc.label(), "libc6 2.36-9 (deb)");
    // Conffiles from the status count; an obsolete one that is gone does not.
    assert!(libc.files.contains(&p("/etc/ld.so.conf")));
    assert!(!libc.files.iter().any(|f| f.as_str() == "/etc/gone.conf"));
    assert!(libc.files.contains(&p("/usr/share/doc/libc6/copyright")));
}

#[test]
fn dpkg_bad_input_is_warned_not_fatal() {
    let db = PackageDb::read(&debian());
    let mut w = db.warnings.join("\n");
    for pkg in &db.packages {
        w.push('\n');
        w.push_str(&pkg.warnings.join("\n"));
    }
    assert!(
        w.contains("/var/lib/dpkg/status: paragraph 4 has no Package field"),
        "{w}"
    );
    assert!(
        w.contains(
            "libc6:amd64.list: 1 listed path(s) are not in the image (first: /lib/x86_64-linux-gnu/libmissing.so)"
        ),
        "{w}"
    );
    // `..` is taken inside the image root (/etc/ld.so.conf), and said.
    assert!(
        w.contains("dash.list: 1 listed path(s) contain `..`"),
        "{w}"
    );
    assert_eq!(names(&db, "/etc/ld.so.conf"), ["libc6", "dash"]);
}

#[test]
fn status_parser_survives_garbage() {
    for text in [
        "",
        "\n\n\n",
        "Package",
        "Package: a\nConffiles:\n",
        "Package: a\nStatus: \n",
        " /etc/x\n",
        "Package: \u{0}\u{ffff}\nVersion:::\n\n\nPackage: b",
    ] {
        let _ = parse_status(text);
    }
    let (e, w) = parse_status("Package: a\nVersion: 1\nConffiles:\n /etc/a x\n relative y");
    assert!(w.is_empty());
    assert_eq!(e[0].conffiles, ["/etc/a"]);
}

#[test]
fn huge_status_is_read_up_to_the_cap() {
    let mut fs = MemFs::default();
    let mut text = b"Package: a\nStatus: install ok installed\nVersion: 1\n\n".to_vec();
    text.resize(MAX_DB_BYTES as usize + 10, b'x');
    fs.dir("/var")
        .dir("/var/lib")
        .dir("/var/lib/dpkg")
        .file("/var/lib/dpkg/status", &text);
    let db = PackageDb::read(&fs);
    assert_eq!(db.packages.len(), 1);
    assert!(
        db.warnings[0].contains(&format!("only the first {MAX_DB_BYTES} read")),
        "{:?}",
        db.warnings
    );
}

#[test]
fn status_that_is_a_directory_or_missing() {
    let mut fs = MemFs::default();
    fs.dir("/var")
        .dir("/var/lib")
        .dir("/var/lib/dpkg")
        .dir("/var/lib/dpkg/status");
    let db = PackageDb::read(&fs);
    assert!(db.packages.is_empty());
    assert!(
        db.warnings[0].contains("not a regular file"),
        "{:?}",
        db.warnings
    );
    let db = PackageDb::read(&MemFs::default());
    assert!(db.packages.is_empty() && db.warnings.is_empty());
}

#[test]
fn distroless_status_d() {
    let mut fs = MemFs::default();
    fs.dir("/usr")
        .dir("/usr/lib")
        .file("/usr/lib/libssl.so.3", b"elf")
        .dir("/var")
        .dir("/var/lib")
        .dir("/var/lib/dpkg")
        .dir("/var/lib/dpkg/status.d")
        .file(
            "/var/lib/dpkg/status.d/libssl3",
            b"Package: libssl3\nVersion: 3.0.11\nArchitecture: amd64\n",
        )
        .file(
            "/var/lib/dpkg/status.d/libssl3.md5sums",
            b"0123  usr/lib/libssl.so.3\nbroken line\n",
        );
    let db = PackageDb::read(&fs);
    assert_eq!(names(&db, "/usr/lib/libssl.so.3"), ["libssl3"]);
    assert_eq!(db.packages[0].version, "3.0.11");
    assert_eq!(db.packages[0].arch, "amd64");
}

#[test]
fn python_record_in_a_venv() {
    let mut fs = MemFs::default();
    let sp = "/venv/lib/python3.11/site-packages";
    fs.dir("/venv")
        .dir("/venv/bin")
        .dir("/venv/lib")
        .dir("/venv/lib/python3.11")
        .dir(sp)
        .dir(&format!("{sp}/numpy"))
        .dir(&format!("{sp}/numpy/random"))
        .dir(&format!("{sp}/numpy-1.26.4.dist-info"))
        .file(&format!("{sp}/numpy/__init__.py"), b"")
        .file(&format!("{sp}/numpy/random/__init__.py"), b"")
        .file(&format!("{sp}/numpy/a,b.py"), b"")
        .file("/venv/bin/f2py", b"#!")
        .file(&format!("{sp}/numpy-1.26.4.dist-info/METADATA"), b"")
        .file(
            &format!("{sp}/numpy-1.26.4.dist-info/RECORD"),
            b"numpy/__init__.py,sha256=x,0\nnumpy/random/__init__.py,,\n\"numpy/a,b.py\",sha256=y,0\n../../../bin/f2py,,\nnumpy/gone.py,,\n/etc/passwd,,\n\"unterminated\n",
        );
    let db = PackageDb::read(&fs);
    assert_eq!(db.packages.len(), 1);
    let np = &db.packages[0];
    assert_eq!(
        (np.kind, np.name.as_str(), np.version.as_str()),
        (Kind::Python, "numpy", "1.26.4")
    );
    for f in [
        "/numpy/__init__.py",
        "/numpy/random/__init__.py",
        "/numpy/a,b.py",
        "/numpy-1.26.4.dist-info/METADATA",
        "/numpy-1.26.4.dist-info/RECORD",
    ] {
        assert_eq!(names(&db, &format!("{sp}{f}")), ["numpy"], "{f}");
    }
    assert_eq!(names(&db, "/venv/bin/f2py"), ["numpy"]);
    // An absolute path in a RECORD is not this environment's: never taken.
    assert!(names(&db, "/etc/passwd").is_empty());
    assert!(
        np.warnings.iter().any(|w| w.contains("numpy/gone.py")),
        "{:?}",
        np.warnings
    );
}

#[test]
fn egg_info_installed_files() {
    let mut fs = MemFs::default();
    fs.dir("/usr")
        .dir("/usr/lib")
        .dir("/usr/lib/python3")
        .dir("/usr/lib/python3/dist-packages")
        .dir("/usr/lib/python3/dist-packages/six-1.16.0-py3.11.egg-info")
        .file("/usr/lib/python3/dist-packages/six.py", b"")
        .file(
            "/usr/lib/python3/dist-packages/six-1.16.0-py3.11.egg-info/installed-files.txt",
            b"../six.py\nPKG-INFO\n",
        );
    let db = PackageDb::read(&fs);
    assert_eq!(names(&db, "/usr/lib/python3/dist-packages/six.py"), ["six"]);
    assert_eq!(db.packages[0].version, "1.16.0");
}

#[test]
fn npm_packages_exclude_nested_node_modules() {
    let mut fs = MemFs::default();
    let nm = "/app/node_modules";
    fs.dir("/app")
        .dir(nm)
        .dir(&format!("{nm}/express"))
        .dir(&format!("{nm}/express/lib"))
        .dir(&format!("{nm}/express/node_modules"))
        .dir(&format!("{nm}/express/node_modules/debug"))
        .dir(&format!("{nm}/@types"))
        .dir(&format!("{nm}/@types/node"))
        .file(
            &format!("{nm}/express/package.json"),
            br#"{"name":"express","version":"4.18.2"}"#,
        )
        .file(&format!("{nm}/express/lib/router.js"), b"")
        .file(
            &format!("{nm}/express/node_modules/debug/package.json"),
            b"not json",
        )
        .file(&format!("{nm}/express/node_modules/debug/index.js"), b"")
        .file(
            &format!("{nm}/@types/node/package.json"),
            br#"{"name":"@types/node"}"#,
        )
        .file(&format!("{nm}/@types/node/index.d.ts"), b"");
    let db = PackageDb::read(&fs);
    assert_eq!(
        names(&db, &format!("{nm}/express/lib/router.js")),
        ["express"]
    );
    assert_eq!(
        names(&db, &format!("{nm}/express/node_modules/debug/index.js")),
        ["debug"]
    );
    assert_eq!(
        names(&db, &format!("{nm}/@types/node/index.d.ts")),
        ["@types/node"]
    );
    assert!(
        db.warnings
            .iter()
            .any(|w| w.contains("debug/package.json: not JSON"))
    );
}

#[test]
fn jdk_home_lib_and_conf_are_one_unit() {
    let mut fs = MemFs::default();
    let home = "/opt/java";
    fs.dir("/opt")
        .dir(home)
        .dir(&format!("{home}/bin"))
        .dir(&format!("{home}/lib"))
        .dir(&format!("{home}/conf"))
        .dir(&format!("{home}/conf/security"))
        .file(
            &format!("{home}/release"),
            b"IMPLEMENTOR=\"x\"\nJAVA_VERSION=\"17.0.9\"\n",
        )
        .file(&format!("{home}/bin/java"), b"elf")
        .file(&format!("{home}/lib/jspawnhelper"), b"elf")
        .symlink(
            &format!("{home}/conf/security/java.security"),
            "/etc/java/java.security",
        )
        // A `release` without JAVA_VERSION is not a JDK.
        .dir("/srv")
        .dir("/srv/lib")
        .file("/srv/release", b"v1\n");
    let db = PackageDb::read(&fs);
    assert_eq!(db.packages.len(), 1);
    assert_eq!(db.packages[0].version, "17.0.9");
    assert_eq!(names(&db, &format!("{home}/lib/jspawnhelper")), ["java"]);
    assert_eq!(
        names(&db, &format!("{home}/conf/security/java.security")),
        ["java"]
    );
    assert!(names(&db, &format!("{home}/bin/java")).is_empty());
}
