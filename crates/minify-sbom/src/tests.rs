//! Unit tests over an in-memory image (the SBOM of real minified images, validated against
//! the official schema, is in the e2e tests, tests/e2e/sbom.rs).

use minify_model::rootfs::memfs::MemFs;
use serde_json::Value;

use super::*;

fn p(s: &str) -> ImagePath {
    ImagePath::new(s)
}

/// A usrmerged Debian 12 with dpkg, a venv with Flask and an npm scoped package.
fn image() -> MemFs {
    let mut fs = MemFs::default();
    let sp = "/venv/lib/python3.11/site-packages";
    fs.dir("/usr")
        .dir("/usr/lib")
        .dir("/usr/lib/x86_64-linux-gnu")
        .dir("/usr/bin")
        .dir("/etc")
        .dir("/var")
        .dir("/var/lib")
        .dir("/var/lib/dpkg")
        .dir("/var/lib/dpkg/info")
        .symlink("/lib", "usr/lib")
        .symlink("/etc/os-release", "../usr/lib/os-release")
        .file(
            "/usr/lib/os-release",
            b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
        )
        .file("/usr/lib/x86_64-linux-gnu/libc.so.6", b"elf")
        .file("/usr/lib/x86_64-linux-gnu/libm.so.6", b"elf")
        .file("/usr/bin/bash", b"elf")
        .file(
            "/var/lib/dpkg/status",
            b"Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9+deb12u4\n\n\
Package: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2.15-2+b2\n",
        )
        .file(
            "/var/lib/dpkg/info/libc6:amd64.list",
            b"/lib\n/lib/x86_64-linux-gnu/libc.so.6\n/lib/x86_64-linux-gnu/libm.so.6\n",
        )
        .file("/var/lib/dpkg/info/bash.list", b"/lib\n/usr/bin/bash\n")
        .dir("/venv")
        .dir("/venv/lib")
        .dir("/venv/lib/python3.11")
        .dir(sp)
        .dir(&format!("{sp}/flask"))
        .dir(&format!("{sp}/Flask-2.2.2.dist-info"))
        .file(&format!("{sp}/flask/__init__.py"), b"")
        .file(
            &format!("{sp}/Flask-2.2.2.dist-info/RECORD"),
            b"flask/__init__.py,,\n",
        )
        .dir("/app")
        .dir("/app/node_modules")
        .dir("/app/node_modules/@types")
        .dir("/app/node_modules/@types/node")
        .file(
            "/app/node_modules/@types/node/package.json",
            br#"{"name":"@types/node","version":"20.1.0"}"#,
        )
        .file("/app/node_modules/@types/node/index.d.ts", b"");
    fs
}

fn input<'a>(db: &'a PackageDb, kept: &'a BTreeSet<ImagePath>, fs: &'a MemFs) -> SbomInput<'a> {
    SbomInput {
        fs,
        db,
        kept,
        os: OsRelease::read(fs),
        source: ImageName {
            reference: "app:1".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
        },
        output: ImageName {
            reference: "oci:out".into(),
            digest: format!("sha256:{}", "b".repeat(64)),
        },
        tool_version: "0.1.0",
    }
}

fn kept_set(paths: &[&str]) -> BTreeSet<ImagePath> {
    paths.iter().map(|s| p(s)).collect()
}

#[test]
fn os_release_through_the_images_link() {
    let os = OsRelease::read(&image()).unwrap();
    assert_eq!((os.id.as_str(), os.version_id.as_str()), ("debian", "12"));
    assert_eq!(os.distro().as_deref(), Some("debian-12"));
    let sid = OsRelease::parse("ID=debian\nPRETTY_NAME=\"Debian trixie/sid\"\n");
    assert_eq!(sid.distro(), None);
    assert!(OsRelease::read(&MemFs::default()).is_none());
}

#[test]
fn components_are_the_packages_with_kept_files() {
    let fs = image();
    let db = PackageDb::read(&fs);
    // `/lib` is libc6's and bash's, but a link to a directory: it makes neither used.
    let kept = kept_set(&[
        "/lib",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/venv/lib/python3.11/site-packages/flask/__init__.py",
        "/app/node_modules/@types/node/index.d.ts",
    ]);
    let json = generate(&input(&db, &kept, &fs)).unwrap();
    let v: Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["bomFormat"], "CycloneDX");
    assert_eq!(v["specVersion"], "1.5");
    let comps = v["components"].as_array().unwrap();
    let purls: Vec<&str> = comps.iter().map(|c| c["purl"].as_str().unwrap()).collect();
    assert_eq!(
        purls,
        [
            "pkg:deb/debian/libc6@2.36-9+deb12u4?arch=amd64&distro=debian-12",
            "pkg:pypi/flask@2.2.2",
            "pkg:npm/%40types/node@20.1.0",
        ]
    );
    let libc = &comps[0];
    assert_eq!(libc["name"], "libc6");
    assert_eq!(libc["version"], "2.36-9+deb12u4");
    // Only the kept file: libm is libc6's but was not kept.
    assert_eq!(
        libc["evidence"]["occurrences"],
        serde_json::json!([{"location": "/usr/lib/x86_64-linux-gnu/libc.so.6"}])
    );
    let prop = |c: &Value, name: &str| {
        c["properties"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["value"].as_str().unwrap().to_owned())
    };
    assert_eq!(prop(libc, "minify:state").as_deref(), Some("partial"));
    assert_eq!(prop(libc, "minify:kept-files").as_deref(), Some("1"));
    assert_eq!(prop(libc, "minify:removed-files").as_deref(), Some("1"));
    assert_eq!(prop(libc, "minify:kept-bytes").as_deref(), Some("3"));
    assert_eq!(prop(&comps[1], "minify:state").as_deref(), Some("partial"));
    // The metadata names both images and the tool.
    let m = &v["metadata"];
    assert_eq!(m["component"]["type"], "container");
    assert_eq!(
        m["component"]["version"],
        format!("sha256:{}", "b".repeat(64))
    );
    assert_eq!(
        m["component"]["pedigree"]["ancestors"][0]["version"],
        format!("sha256:{}", "a".repeat(64))
    );
    assert_eq!(m["tools"]["components"][0]["name"], "minify");
    assert!(m.get("timestamp").is_none());
    assert!(v["serialNumber"].as_str().unwrap().starts_with("urn:uuid:"));
}

#[test]
fn same_inputs_same_bytes_other_output_other_serial() {
    let fs = image();
    let db = PackageDb::read(&fs);
    let kept = kept_set(&["/usr/bin/bash"]);
    let a = generate(&input(&db, &kept, &fs)).unwrap();
    let b = generate(&input(&db, &kept, &fs)).unwrap();
    assert_eq!(a, b);
    let mut other = input(&db, &kept, &fs);
    other.output.digest = format!("sha256:{}", "c".repeat(64));
    let c: Value = serde_json::from_slice(&generate(&other).unwrap()).unwrap();
    let a: Value = serde_json::from_slice(&a).unwrap();
    assert_ne!(a["serialNumber"], c["serialNumber"]);
    // The UUID's version nibble says 8 (custom), its variant is RFC 9562's.
    let s = a["serialNumber"].as_str().unwrap();
    assert_eq!(&s[23..24], "8", "{s}");
    assert!("89ab".contains(&s[28..29]), "{s}");
}

#[test]
fn without_os_release_debs_still_get_a_purl() {
    let fs = image();
    let db = PackageDb::read(&fs);
    let kept = kept_set(&["/usr/bin/bash"]);
    let mut i = input(&db, &kept, &fs);
    i.os = None;
    let v: Value = serde_json::from_slice(&generate(&i).unwrap()).unwrap();
    assert_eq!(
        v["components"][0]["purl"],
        "pkg:deb/debian/bash@5.2.15-2+b2?arch=amd64"
    );
}

#[test]
fn the_same_distribution_twice_gets_two_bom_refs() {
    let mut fs = image();
    let sp2 = "/other/lib/python3.11/site-packages";
    fs.dir("/other")
        .dir("/other/lib")
        .dir("/other/lib/python3.11")
        .dir(sp2)
        .dir(&format!("{sp2}/flask"))
        .dir(&format!("{sp2}/Flask-2.2.2.dist-info"))
        .file(&format!("{sp2}/flask/__init__.py"), b"")
        .file(
            &format!("{sp2}/Flask-2.2.2.dist-info/RECORD"),
            b"flask/__init__.py,,\n",
        );
    let db = PackageDb::read(&fs);
    let kept = kept_set(&[
        "/venv/lib/python3.11/site-packages/flask/__init__.py",
        &format!("{sp2}/flask/__init__.py"),
    ]);
    let v: Value = serde_json::from_slice(&generate(&input(&db, &kept, &fs)).unwrap()).unwrap();
    let refs: Vec<&str> = v["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["bom-ref"].as_str().unwrap())
        .collect();
    assert_eq!(refs, ["pkg:pypi/flask@2.2.2", "pkg:pypi/flask@2.2.2#2"]);
}
