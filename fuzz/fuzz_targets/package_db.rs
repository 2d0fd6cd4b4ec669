//! Fuzz target: the package model over hostile databases. The input is split at the first
//! `\n--\n`: the first part is an image's `/var/lib/dpkg/status`, the second both the `.list`
//! of every package named `a` and a venv distribution's `RECORD`; the image also has a
//! usrmerge link, a link loop and a link leaving the root.
//! Invariants: no panic; every path the model says a unit owns exists in the image and is not
//! a directory (whatever `..`, absolute or missing paths the lists name); the pruned database
//! names only regular files of the image, a generated status is never longer than the
//! source's, and the accounting's bytes add up to the image's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minify_model::rootfs::memfs::MemFs;
use minify_model::{ImagePath, Rootfs};
use minify_packages::{PackageDb, account, parse_record, parse_status, prune};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (status, list) = text.split_once("\n--\n").unwrap_or((&text, ""));
    let _ = parse_status(status);
    let _ = parse_record(list);
    let site = "/venv/lib/python3.11/site-packages";
    let mut fs = MemFs::default();
    fs.dir("/usr")
        .dir("/usr/lib")
        .dir("/usr/bin")
        .dir("/etc")
        .dir("/var")
        .dir("/var/lib")
        .dir("/var/lib/dpkg")
        .dir("/var/lib/dpkg/info")
        .dir("/venv")
        .dir("/venv/lib")
        .dir("/venv/lib/python3.11")
        .dir(site)
        .dir(&format!("{site}/a-1.dist-info"))
        .symlink("/lib", "usr/lib")
        .symlink("/loop", "loop")
        .symlink("/usr/lib/out", "../../../../../etc")
        .file("/usr/lib/libc.so.6", b"x")
        .file("/usr/bin/sh", b"x")
        .file("/etc/passwd", b"x")
        .file("/var/lib/dpkg/status", status.as_bytes())
        .file("/var/lib/dpkg/info/a.list", list.as_bytes())
        .file(&format!("{site}/a-1.dist-info/RECORD"), list.as_bytes());
    let db = PackageDb::read(&fs);
    for pkg in &db.packages {
        for f in &pkg.files {
            let e = fs.entry(f).unwrap_or_else(|| panic!("{f} is not in the image"));
            assert!(!e.is_dir(), "{f} is a directory");
        }
    }
    for p in fs.paths() {
        for &id in db.owners(&p) {
            assert!(db.packages[id].files.contains(&p));
        }
    }
    let _ = db.owners(&ImagePath::new("/lib/libc.so.6"));
    // Keep every other path: the pruned database and the accounting over it.
    let all = fs.paths();
    let kept = |p: &ImagePath| all.binary_search(p).is_ok_and(|i| i % 2 == 0);
    let pr = prune(&fs, &db, &kept);
    for (p, f) in &pr.files {
        let e = fs.entry(p).unwrap_or_else(|| panic!("{p} is not in the image"));
        assert!(e.is_file(), "{p} is not a regular file");
        if let Some(c) = &f.content {
            assert!(c.len() as u64 <= e.size, "{p} grew");
        }
    }
    let (_, totals) = account(&fs, &db, &kept);
    let bytes: u64 = all
        .iter()
        .filter_map(|p| fs.entry(p))
        .filter(|e| matches!(e.kind, minify_model::EntryKind::File))
        .map(|e| e.size)
        .sum();
    assert_eq!(totals.source_bytes(), bytes);
});
