//! Fuzz target: arbitrary bytes as an image's `/etc/ld.so.cache`, parsed on its own and then
//! used by the resolver for a glibc program that needs every library the cache names, each
//! cache path holding a small library that needs them all again (cycles through the cache).
//! Invariants: no panic; a parsed cache's lookups agree with its entry list; the resolver
//! uses the cache exactly when it parses; every kept path exists in the image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minify_elf::testutil::{FakeElf, exe, parents};
use minify_elf::{CacheEntry, CacheFormat, ElfClass, ElfInfo, LdCache, Resolver, cache};
use minify_model::rootfs::memfs::MemFs;
use minify_model::{ImagePath, Rootfs};

/// Cache entries turned into libraries and `DT_NEEDED` names, so one input stays fast.
const MAX_LIBS: usize = 16;

fuzz_target!(|data: &[u8]| {
    let parsed = LdCache::parse(data.to_vec());
    let mut names = Vec::new();
    let mut libs = Vec::new();
    if let Ok(c) = &parsed {
        check_parsed(c, data);
        for (name, e) in c.entries().into_iter().take(MAX_LIBS) {
            if is_soname(&name) && !names.contains(&name) {
                names.push(name);
            }
            libs.push(e);
        }
    }
    // The lookups the resolver makes for names no entry has must not panic either.
    if let Ok(c) = &parsed {
        for n in ["", "libc.so.6", "\u{fffd}", "libz.so.1\0x"] {
            let _ = c.lookup(n);
        }
    }

    let mut fs = MemFs::default();
    exe(
        &mut fs,
        "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        &FakeElf::default().build(),
    );
    fs.symlink("/lib", "usr/lib").symlink("/lib64", "usr/lib64");
    fs.dir("/usr/lib64");
    fs.symlink(
        "/usr/lib64/ld-linux-x86-64.so.2",
        "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    );
    let needed: Vec<&str> = names.iter().map(String::as_str).collect();
    for e in &libs {
        let p = ImagePath::new(&e.path);
        // Not over the cache itself or its directory: the cache must stay what was fuzzed.
        if !e.path.starts_with('/')
            || p.is_root()
            || ["/etc", "/etc/ld.so.cache"].contains(&p.as_str())
        {
            continue;
        }
        let lib = FakeElf {
            // Entries for 32-bit ABIs get 32-bit objects, so class mismatches are met too.
            elf32: e.flags & 0xff00 == 0,
            ..FakeElf::lib(&needed)
        };
        parents(&mut fs, p.as_str());
        fs.file(p.as_str(), &lib.build());
    }
    for (prog, nodeflib) in [("/app", false), ("/app-nodeflib", true)] {
        let elf = FakeElf {
            interp: Some("/lib64/ld-linux-x86-64.so.2".into()),
            nodeflib,
            ..FakeElf::lib(&needed)
        };
        exe(&mut fs, prog, &elf.build());
    }
    parents(&mut fs, "/etc/ld.so.cache");
    fs.file("/etc/ld.so.cache", data);

    let mut r = Resolver::new(&fs, &fs.env);
    assert_eq!(
        r.config().cache.is_some(),
        parsed.is_ok(),
        "the resolver's cache disagrees with LdCache::parse ({:?})",
        parsed.as_ref().err()
    );
    for prog in ["/app", "/app-nodeflib"] {
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

/// What a successful parse promises about the file it came from.
fn check_parsed(c: &LdCache, data: &[u8]) {
    if data.starts_with(b"glibc-ld.so.cache1.1") {
        assert_eq!(c.format(), CacheFormat::New);
    } else {
        assert!(data.starts_with(b"ld.so-1.7.0"), "parsed without a magic");
        assert_ne!(c.format(), CacheFormat::New);
    }
    let all = c.entries();
    assert_eq!(all.len(), c.len());
    assert_eq!(c.is_empty(), all.is_empty());
    for (name, e) in all.iter().take(4 * MAX_LIBS) {
        let _ = format!("{c:?} {}", e.is_hwcaps_variant());
        for m in [62, 3, 183, 40, 8, 258, 0] {
            for class in [ElfClass::Elf32, ElfClass::Elf64] {
                let _ = cache::flags_match(e.flags, &info(class, m));
            }
        }
        // U+FFFD may stand for bytes that were not UTF-8: such a name cannot be looked up
        // by its lossy form, and such a path is skipped by lookup, so only check the rest.
        if name.contains('\u{fffd}') {
            continue;
        }
        let found = c.lookup(name);
        let same_name: Vec<&CacheEntry> = all
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, e)| e)
            .collect();
        // Every entry lookup gives has this name, in file order; none with a UTF-8 path is
        // missing.
        let mut rest = same_name.iter();
        for f in &found {
            assert!(
                rest.any(|e| *e == f),
                "lookup({name:?}) gave {f:?}, not an entry of that name in file order"
            );
        }
        let sure: Vec<&CacheEntry> = same_name
            .iter()
            .copied()
            .filter(|e| !e.path.contains('\u{fffd}'))
            .collect();
        let found_sure: Vec<&CacheEntry> = found
            .iter()
            .filter(|e| !e.path.contains('\u{fffd}'))
            .collect();
        assert_eq!(found_sure, sure, "lookup({name:?}) missed entries");
    }
}

fn is_soname(n: &str) -> bool {
    !n.is_empty() && !n.contains(['/', '\0']) && n != "." && n != ".."
}

fn info(class: ElfClass, machine: u16) -> ElfInfo {
    ElfInfo::bare(class, true, machine)
}
