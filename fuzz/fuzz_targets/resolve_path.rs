//! Fuzz target: an in-memory image described by the input (one entry per line: `d PATH`,
//! `f PATH`, `l PATH TARGET`), then the last line resolved, globbed and normalised.
//! Invariants: no panic; a resolved path and every link on the way exist in the image; an
//! `ImagePath` is always absolute and normalised, whatever bytes it was made from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minify_elf::glob_rootfs;
use minify_model::rootfs::memfs::MemFs;
use minify_model::{ImagePath, Rootfs, resolve};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fs = MemFs::default();
    let mut query = "/";
    for line in text.lines().take(256) {
        let mut parts = line.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("d"), Some(p), None) => {
                fs.dir(p);
            }
            (Some("f"), Some(p), None) => {
                fs.file(p, b"x");
            }
            (Some("l"), Some(p), Some(t)) => {
                fs.symlink(p, t);
            }
            _ => query = line,
        }
    }
    let norm = ImagePath::new(query);
    let s = norm.as_str();
    assert!(s.starts_with('/'));
    assert!(norm.is_root() || !s.ends_with('/'));
    assert!(
        !s.contains("//") && !s.split('/').any(|c| c == "." || c == ".."),
        "{s}"
    );
    assert_eq!(ImagePath::new(s), norm, "normalising is idempotent");
    for follow in [true, false] {
        if let Ok(r) = resolve(&fs, query, follow) {
            assert!(
                r.path.is_root() || fs.entry(&r.path).is_some(),
                "{} not in the image",
                r.path
            );
            for v in &r.via {
                assert!(
                    fs.entry(v).is_some_and(|e| e.is_symlink()),
                    "{v} is not a link of the image"
                );
            }
        }
    }
    if let Ok(found) = glob_rootfs(&fs, query) {
        for p in found {
            assert!(
                resolve(&fs, p.as_str(), false).is_ok(),
                "glob gave {p}, which does not resolve"
            );
        }
    }
});
