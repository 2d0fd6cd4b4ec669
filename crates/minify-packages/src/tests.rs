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

/// The debian layout with md5sums, and a kept set: libc.so.6 only, with the directories
/// above it and the `/lib` link (the loader found it through it).
fn debian_kept() -> (MemFs, impl Fn(&ImagePath) -> bool) {
    let mut fs = debian();
    fs.file(
        "/var/lib/dpkg/info/libc6:amd64.md5sums",
        b"aa  lib/x86_64-linux-gnu/libc.so.6\nbb  usr/lib/x86_64-linux-gnu/gconv/ISO8859-1.so\ncc  usr/share/doc/libc6/copyright\n",
    )
    .file("/var/lib/dpkg/info/dash.md5sums", b"dd  bin/dash\n");
    let kept = |p: &ImagePath| {
        [
            "/lib",
            "/usr",
            "/usr/lib",
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        ]
        .contains(&p.as_str())
    };
    (fs, kept)
}

fn content(pr: &Pruned, path: &str) -> String {
    let f = pr
        .files
        .get(&p(path))
        .unwrap_or_else(|| panic!("{path} not kept: {:?}", pr.files.keys()));
    String::from_utf8(f.content.clone().expect("generated")).unwrap()
}

#[test]
fn prune_keeps_the_paragraphs_and_lines_of_what_is_kept() {
    let (fs, kept) = debian_kept();
    let db = PackageDb::read(&fs);
    let pr = prune(&fs, &db, &kept);
    // libc6 has a kept file, dash none.
    let names: Vec<&str> = pr
        .kept_units
        .iter()
        .map(|&i| db.packages[i].name.as_str())
        .collect();
    assert_eq!(names, ["libc6"]);
    // The paragraph byte for byte, the others gone (also the one that is not installed).
    assert_eq!(
        content(&pr, "/var/lib/dpkg/status"),
        "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9\nConffiles:\n /etc/ld.so.conf abc\n /etc/gone.conf def obsolete\nDescription: x\n more\n\n"
    );
    // The list: `/.`, the `/lib` link, the directories the output holds (through it) and the
    // file.
    assert_eq!(
        content(&pr, "/var/lib/dpkg/info/libc6:amd64.list"),
        "/.\n/lib\n/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu/libc.so.6\n"
    );
    // Without the link the paths as listed are not there (`dpkg -V` would say "missing"):
    // cut; libc6 is still kept, its file is.
    let no_link = |x: &ImagePath| x.as_str() != "/lib" && kept(x);
    let pr2 = prune(&fs, &db, &no_link);
    assert_eq!(content(&pr2, "/var/lib/dpkg/info/libc6:amd64.list"), "/.\n");
    assert_eq!(pr2.kept_units, pr.kept_units);
    assert_eq!(
        content(&pr, "/var/lib/dpkg/info/libc6:amd64.md5sums"),
        "aa  lib/x86_64-linux-gnu/libc.so.6\n"
    );
    assert!(!pr.files.contains_key(&p("/var/lib/dpkg/info/dash.list")));
    assert!(!pr.files.contains_key(&p("/var/lib/dpkg/info/dash.md5sums")));
    assert!(pr.files[&p("/var/lib/dpkg/status")].detail == "dpkg status: 1 of 3 paragraphs");
}

#[test]
fn prune_with_nothing_kept_leaves_an_empty_status() {
    let (fs, _) = debian_kept();
    let db = PackageDb::read(&fs);
    let pr = prune(&fs, &db, &|_| false);
    assert!(pr.kept_units.is_empty());
    assert_eq!(content(&pr, "/var/lib/dpkg/status"), "");
    assert_eq!(pr.files.len(), 1, "{:?}", pr.files.keys());
    // No dpkg at all: nothing.
    let fs = MemFs::default();
    assert_eq!(
        prune(&fs, &PackageDb::read(&fs), &|_| true),
        Pruned::default()
    );
}

#[test]
fn account_adds_up() {
    let (fs, kept) = debian_kept();
    let db = PackageDb::read(&fs);
    let (accounts, t) = account(&fs, &db, &kept);
    let libc = &accounts[0];
    assert_eq!(db.packages[libc.id].name, "libc6");
    assert_eq!(libc.state, State::Partial);
    assert_eq!((libc.kept_files, libc.kept_bytes), (1, 3));
    // gconv module, copyright, ld.so.conf; not the /lib link (a link to a directory is no
    // one package's).
    assert_eq!(libc.removed_files, 3, "{:?}", db.packages[0].files);
    assert_eq!(libc.removed_bytes, 3 + 1);
    assert_eq!(accounts[1].state, State::Absent);
    // Every byte of the image once, in one of the four buckets.
    let all: u64 = fs
        .paths()
        .iter()
        .filter_map(|x| fs.entry(x))
        .filter(|e| e.is_file())
        .map(|e| e.size)
        .sum();
    assert_eq!(t.source_bytes(), all);
    assert_eq!(t.kept_bytes(), 3);
    let (accounts, _) = account(&fs, &db, &|_| true);
    assert!(accounts.iter().all(|a| a.state == State::Whole));
}

#[test]
fn python_and_npm_metadata_follow_their_unit() {
    let mut fs = MemFs::default();
    let sp = "/venv/lib/python3.11/site-packages";
    let nm = "/app/node_modules";
    fs.dir("/venv")
        .dir("/venv/lib")
        .dir("/venv/lib/python3.11")
        .dir(sp)
        .dir(&format!("{sp}/flask"))
        .dir(&format!("{sp}/flask-3.1.3.dist-info"))
        .dir(&format!("{sp}/flask-3.1.3.dist-info/licenses"))
        .dir(&format!("{sp}/six-1.0.dist-info"))
        .file(&format!("{sp}/flask/__init__.py"), b"")
        .file(&format!("{sp}/flask-3.1.3.dist-info/METADATA"), b"m")
        .file(&format!("{sp}/flask-3.1.3.dist-info/INSTALLER"), b"pip")
        .file(
            &format!("{sp}/flask-3.1.3.dist-info/licenses/LICENSE"),
            b"l",
        )
        .file(
            &format!("{sp}/flask-3.1.3.dist-info/RECORD"),
            b"flask/__init__.py,,\n",
        )
        .file(&format!("{sp}/six.py"), b"")
        .file(&format!("{sp}/six-1.0.dist-info/METADATA"), b"m")
        .file(&format!("{sp}/six-1.0.dist-info/RECORD"), b"six.py,,\n")
        .dir("/app")
        .dir(nm)
        .dir(&format!("{nm}/a"))
        .dir(&format!("{nm}/b"))
        .file(&format!("{nm}/a/package.json"), br#"{"name":"a"}"#)
        .file(&format!("{nm}/a/index.js"), b"")
        .file(&format!("{nm}/b/package.json"), br#"{"name":"b"}"#)
        .file(&format!("{nm}/b/index.js"), b"");
    let db = PackageDb::read(&fs);
    let flask_init = format!("{sp}/flask/__init__.py");
    let a_index = format!("{nm}/a/index.js");
    // six's METADATA alone was read: that is its metadata, not a use of six.
    let six_meta = format!("{sp}/six-1.0.dist-info/METADATA");
    let kept = |x: &ImagePath| [&flask_init, &a_index, &six_meta].contains(&&x.to_string());
    let pr = prune(&fs, &db, &kept);
    let paths: Vec<&str> = pr.files.keys().map(ImagePath::as_str).collect();
    assert_eq!(
        paths,
        [
            "/app/node_modules/a/package.json".to_owned(),
            format!("{sp}/flask-3.1.3.dist-info/INSTALLER"),
            format!("{sp}/flask-3.1.3.dist-info/METADATA"),
            format!("{sp}/flask-3.1.3.dist-info/RECORD"),
            format!("{sp}/flask-3.1.3.dist-info/licenses/LICENSE"),
        ]
    );
    assert!(pr.files.values().all(|f| f.content.is_none()));
}

/// Issue 15's bad inputs: duplicate packages, a paragraph without `Package:`, CRLF line
/// ends, a 10 MB field, bytes that are not UTF-8. Each gives a warning and a best-effort
/// database; the pruned status keeps the good paragraphs byte for byte.
#[test]
fn bad_status_gives_warnings_and_a_best_effort_database() {
    let mut status: Vec<u8> = Vec::new();
    status.extend_from_slice(
        b"Package: a\r\nStatus: install ok installed\r\nArchitecture: amd64\r\nVersion: 1\r\n\r\n",
    );
    status.extend_from_slice(
        b"Package: a\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2\n\n",
    );
    status.extend_from_slice(b"Status: install ok installed\nVersion: 3\n\n");
    status.extend_from_slice(
        b"Package: big\nStatus: install ok installed\nArchitecture: all\nDescription: ",
    );
    status.extend(std::iter::repeat_n(b'x', 10 << 20));
    status.extend_from_slice(b"\n\nPackage: caf\xe9\xff\nStatus: install ok installed\nArchitecture: all\nVersion: \xfe1\n\n");
    let mut fs = MemFs::default();
    fs.dir("/usr")
        .file("/usr/a", b"1")
        .file("/usr/big", b"22")
        .file("/usr/caf", b"333")
        .dir("/var")
        .dir("/var/lib")
        .dir("/var/lib/dpkg")
        .dir("/var/lib/dpkg/info")
        .file("/var/lib/dpkg/status", &status)
        .file("/var/lib/dpkg/info/a:amd64.list", b"/usr/a\r\n")
        .file("/var/lib/dpkg/info/big.list", b"/usr/big\n")
        .file("/var/lib/dpkg/info/caf\u{fffd}\u{fffd}.list", b"/usr/caf\n");
    let db = PackageDb::read(&fs);
    let w = db.warnings.join("\n");
    assert!(w.contains("CRLF line ends"), "{w}");
    assert!(w.contains("paragraph 3 has no Package field"), "{w}");
    assert!(
        w.contains("paragraph 2: package a (amd64) appears again; the first paragraph is used"),
        "{w}"
    );
    let named: Vec<(&str, &str)> = db
        .packages
        .iter()
        .map(|x| (x.name.as_str(), x.version.as_str()))
        .collect();
    assert_eq!(
        named,
        [
            ("a", "1"),
            ("big", ""),
            ("caf\u{fffd}\u{fffd}", "\u{fffd}1")
        ]
    );
    assert_eq!(names(&db, "/usr/a"), ["a"]);
    assert_eq!(names(&db, "/usr/caf"), ["caf\u{fffd}\u{fffd}"]);
    // Keep all three: the status keeps the first `a` (CRLF as it was), `big` whole, and the
    // non-UTF-8 paragraph byte for byte.
    let pr = prune(&fs, &db, &|x: &ImagePath| x.as_str().starts_with("/usr/"));
    let out = pr.files[&p("/var/lib/dpkg/status")]
        .content
        .clone()
        .unwrap();
    let first = status.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(out.starts_with(&status[..first]));
    assert!(!out.windows(10).any(|w| w == b"Version: 2"));
    assert!(out.ends_with(b"Package: caf\xe9\xff\nStatus: install ok installed\nArchitecture: all\nVersion: \xfe1\n\n"));
    assert_eq!(out.len(), status.len() - (status.len() - out.len()));
    assert_eq!(
        out.len(),
        first + (status.len() - first)
            - b"Package: a\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2\n\n"
                .len()
            - b"Status: install ok installed\nVersion: 3\n\n".len()
    );
    assert_eq!(
        String::from_utf8(
            pr.files[&p("/var/lib/dpkg/info/a:amd64.list")]
                .content
                .clone()
                .unwrap()
        )
        .unwrap(),
        "/usr/a\r\n"
    );
}

#[test]
fn paragraphs_split_on_blank_lines_of_both_kinds() {
    let d = b"\n\nA: 1\r\n\r\nB: 2\n\n\nC: 3";
    let r = crate::dpkg::paragraphs(d);
    let parts: Vec<&[u8]> = r.iter().map(|x| &d[x.clone()]).collect();
    assert_eq!(parts, [&b"A: 1\r\n\r\n"[..], b"B: 2\n\n\n", b"C: 3"]);
    assert!(crate::dpkg::paragraphs(b"").is_empty());
    assert!(crate::dpkg::paragraphs(b"\n\r\n\r").is_empty());
}
