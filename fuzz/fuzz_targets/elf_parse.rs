//! Fuzz target: arbitrary bytes as an ELF object, parsed and then resolved as a program and as
//! a library inside an in-memory image where it is also every library it asks for.
//! Never a panic; every kept path must exist in the image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minify_elf::{ElfInfo, Resolver};
use minify_model::Rootfs;
use minify_model::rootfs::memfs::MemFs;

fuzz_target!(|data: &[u8]| {
    let parsed = ElfInfo::parse(data);
    let mut fs = MemFs::default();
    fs.dir("/usr").dir("/usr/lib").dir("/bin");
    fs.file("/bin/p", data);
    fs.file("/usr/lib/libself.so", data);
    fs.symlink("/lib", "usr/lib");
    fs.symlink("/usr/lib/libloop.so", "libloop.so");
    // Whatever names the object needs resolve to itself: cycles of any shape.
    if let Ok(info) = &parsed {
        for n in info.needed.iter().take(64) {
            if !n.is_empty() && !n.contains(['/', '\0']) && n != "." && n != ".." {
                fs.symlink(&format!("/usr/lib/{n}"), "libself.so");
            }
        }
        if let Some(i) = &info.interpreter {
            if i.starts_with('/') && resolve_ok(&fs, i).is_none() {
                fs.symlink(i, "/bin/p");
            }
        }
    }
    fs.env = vec!["LD_LIBRARY_PATH=$ORIGIN/../lib:/lib".into()];
    let mut r = Resolver::new(&fs, &fs.env);
    for prog in ["/bin/p", "/usr/lib/libself.so"] {
        match r.closure_of(prog) {
            Ok(c) => {
                for p in c.kept.keys() {
                    assert!(fs.entry(p).is_some(), "{p} kept but not in the image");
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});

fn resolve_ok(fs: &MemFs, p: &str) -> Option<()> {
    minify_model::resolve(fs, p, true).ok().map(|_| ())
}
