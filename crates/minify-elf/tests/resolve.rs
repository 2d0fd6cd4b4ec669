//! Library resolution over an in-memory image: real Debian binaries copied from the host
//! (checked against the host's own loader via `ldd`), and synthetic objects for every rule
//! and every hostile shape (cycles, huge DT_NEEDED lists, loops, links out of the image).

use std::collections::BTreeSet;

use minify_elf::testutil::{
    FakeCacheEntry, FakeElf, FakeLdCache, copy_host, copy_host_program, exe, host_ldd, parents,
};
use minify_elf::{DepKind, ElfError, Resolver, resolve_deps};
use minify_model::ImagePath;
use minify_model::rootfs::memfs::MemFs;

fn kept(fs: &MemFs, prog: &str) -> minify_elf::DepClosure {
    resolve_deps(fs, prog, &fs.env).unwrap_or_else(|e| panic!("{prog}: {e}"))
}

fn lib(fs: &mut MemFs, path: &str, e: &FakeElf) {
    parents(fs, path);
    fs.file(path, &e.build());
}

fn names(c: &minify_elf::DepClosure) -> BTreeSet<String> {
    c.kept.keys().map(ToString::to_string).collect()
}

#[test]
fn host_programs_match_the_host_loader() {
    for prog in ["/usr/bin/ls", "/usr/bin/python3"] {
        let mut fs = MemFs::default();
        copy_host_program(&mut fs, prog);
        copy_host(&mut fs, "/etc/ld.so.cache");
        let c = kept(&fs, prog);
        assert!(c.warnings.is_empty(), "{prog}: {:?}", c.warnings);
        // Every object the real loader maps, at its real path, is in the closure.
        for l in host_ldd(prog) {
            let real = std::fs::canonicalize(&l).unwrap();
            let real = ImagePath::new(&real.to_string_lossy());
            assert!(
                c.kept.contains_key(&real),
                "{prog}: ldd's {l} ({real}) missing: {:?}",
                c.kept.keys()
            );
        }
        let libs = c
            .kept
            .values()
            .filter(|d| matches!(d.kind, DepKind::Library | DepKind::Interpreter))
            .count();
        assert_eq!(libs, host_ldd(prog).len(), "{prog}: {:?}", c.kept);
        // The symlinks the loader goes through are kept as such.
        for link in ["/lib64", "/usr/lib64/ld-linux-x86-64.so.2", "/lib"] {
            let d = &c.kept[&ImagePath::new(link)];
            assert_eq!(d.kind, DepKind::Symlink, "{link}");
        }
        assert_eq!(
            c.kept[&ImagePath::new("/etc/ld.so.cache")].kind,
            DepKind::LoaderFile
        );
        assert_eq!(c.libc, Some(minify_elf::Libc::Glibc));
    }
}

#[test]
fn python3_through_bin_symlink() {
    let mut fs = MemFs::default();
    copy_host_program(&mut fs, "/usr/bin/python3");
    copy_host(&mut fs, "/bin/python3");
    let c = kept(&fs, "/bin/python3");
    // /bin -> usr/bin, /usr/bin/python3 -> python3.11
    assert_eq!(c.kept[&ImagePath::new("/bin")].kind, DepKind::Symlink);
    assert_eq!(
        c.kept[&ImagePath::new("/usr/bin/python3")].kind,
        DepKind::Symlink
    );
    assert_eq!(
        c.kept[&ImagePath::new("/usr/bin/python3.11")].kind,
        DepKind::Program
    );
    assert_eq!(c.program, Some(ImagePath::new("/usr/bin/python3.11")));
}

fn base() -> MemFs {
    let mut fs = MemFs::default();
    let ld = FakeElf::default();
    lib(
        &mut fs,
        "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        &ld,
    );
    fs.symlink("/lib", "usr/lib").symlink("/lib64", "usr/lib64");
    fs.dir("/usr/lib64");
    fs.symlink(
        "/usr/lib64/ld-linux-x86-64.so.2",
        "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    );
    lib(
        &mut fs,
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        &FakeElf::default(),
    );
    fs
}

fn program(needed: &[&str], runpath: Option<&str>, rpath: Option<&str>) -> FakeElf {
    FakeElf {
        interp: Some("/lib64/ld-linux-x86-64.so.2".into()),
        needed: needed.iter().map(|s| (*s).to_owned()).collect(),
        runpath: runpath.map(str::to_owned),
        rpath: rpath.map(str::to_owned),
        ..FakeElf::default()
    }
}

#[test]
fn origin_runpath_and_rpath() {
    let mut fs = base();
    exe(
        &mut fs,
        "/opt/app/bin/app",
        &program(&["libfoo.so.1", "libc.so.6"], Some("$ORIGIN/../lib"), None).build(),
    );
    lib(
        &mut fs,
        "/opt/app/lib/libfoo.so.1.2",
        &FakeElf::lib(&["libbar.so", "libc.so.6"]),
    );
    fs.symlink("/opt/app/lib/libfoo.so.1", "libfoo.so.1.2");
    // libbar is only findable through libfoo's own RPATH (${ORIGIN} form).
    lib(
        &mut fs,
        "/opt/app/lib/private/libbar.so",
        &FakeElf::default(),
    );
    let mut foo = FakeElf::lib(&["libbar.so", "libc.so.6"]);
    foo.rpath = Some("${ORIGIN}/private".into());
    lib(&mut fs, "/opt/app/lib/libfoo.so.1.2", &foo);
    // Run through a symlink in PATH: $ORIGIN of the program is its real directory.
    parents(&mut fs, "/usr/local/bin/app");
    fs.symlink("/usr/local/bin/app", "/opt/app/bin/app");

    let c = kept(&fs, "/usr/local/bin/app");
    let n = names(&c);
    for p in [
        "/usr/local/bin/app",
        "/opt/app/bin/app",
        "/opt/app/lib/libfoo.so.1",
        "/opt/app/lib/libfoo.so.1.2",
        "/opt/app/lib/private/libbar.so",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64",
        "/usr/lib64/ld-linux-x86-64.so.2",
        "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    ] {
        assert!(n.contains(p), "{p} missing from {n:?}");
    }
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(
        c.kept[&ImagePath::new("/opt/app/lib/private/libbar.so")].detail,
        "libbar.so needed by /opt/app/lib/libfoo.so.1.2"
    );
}

#[test]
fn rpath_inherited_from_program_but_not_with_runpath() {
    // glibc: the program's DT_RPATH also serves its libraries' needs (unless they have a
    // DT_RUNPATH, which disables RPATH lookups for them).
    for (lib_runpath, found) in [(None, true), (Some("/nowhere"), false)] {
        let mut fs = base();
        exe(
            &mut fs,
            "/app",
            &program(&["libfoo.so"], None, Some("/opt/x")).build(),
        );
        let mut foo = FakeElf::lib(&["libbar.so"]);
        foo.runpath = lib_runpath.map(str::to_owned);
        lib(&mut fs, "/opt/x/libfoo.so", &foo);
        lib(&mut fs, "/opt/x/libbar.so", &FakeElf::default());
        let c = kept(&fs, "/app");
        assert_eq!(
            c.kept.contains_key(&ImagePath::new("/opt/x/libbar.so")),
            found,
            "{lib_runpath:?}: {c:?}"
        );
    }
}

#[test]
fn rpath_chain_passes_through_a_runpath_library() {
    // program (RPATH /opt/x) -> libfoo (RUNPATH /opt/y) -> libmid -> libbar in /opt/x:
    // libmid has no RUNPATH, so its loaders' RPATHs are searched, up to the program's.
    let mut fs = base();
    exe(
        &mut fs,
        "/app",
        &program(&["libfoo.so"], None, Some("/opt/x")).build(),
    );
    let mut foo = FakeElf::lib(&["libmid.so"]);
    foo.runpath = Some("/opt/y".into());
    lib(&mut fs, "/opt/x/libfoo.so", &foo);
    lib(&mut fs, "/opt/y/libmid.so", &FakeElf::lib(&["libbar.so"]));
    lib(&mut fs, "/opt/x/libbar.so", &FakeElf::default());
    let c = kept(&fs, "/app");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(
        c.kept.contains_key(&ImagePath::new("/opt/x/libbar.so")),
        "{c:?}"
    );
}

#[test]
fn lib_and_platform_tokens() {
    let mut fs = base();
    exe(
        &mut fs,
        "/app",
        &program(
            &["liba.so", "libb.so"],
            Some("/opt/$LIB:/opt/p/$PLATFORM"),
            None,
        )
        .build(),
    );
    lib(
        &mut fs,
        "/opt/lib/x86_64-linux-gnu/liba.so",
        &FakeElf::default(),
    );
    lib(&mut fs, "/opt/p/x86_64/libb.so", &FakeElf::default());
    let c = kept(&fs, "/app");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(
        c.kept
            .contains_key(&ImagePath::new("/opt/lib/x86_64-linux-gnu/liba.so"))
    );
    assert!(
        c.kept
            .contains_key(&ImagePath::new("/opt/p/x86_64/libb.so"))
    );
}

#[test]
fn ld_library_path_ld_so_conf_include_and_preload() {
    let mut fs = base();
    fs.env = vec![
        "LD_LIBRARY_PATH=/opt/env:/opt/other".into(),
        "LD_PRELOAD=libpre.so".into(),
    ];
    exe(
        &mut fs,
        "/app",
        &program(&["libenv.so", "libconf.so"], None, None).build(),
    );
    lib(&mut fs, "/opt/env/libenv.so", &FakeElf::default());
    lib(&mut fs, "/opt/conf/libconf.so", &FakeElf::default());
    lib(&mut fs, "/opt/env/libpre.so", &FakeElf::default());
    parents(&mut fs, "/etc/ld.so.conf");
    fs.file(
        "/etc/ld.so.conf",
        b"# comment\ninclude /etc/ld.so.conf.d/*.conf\n",
    );
    fs.dir("/etc/ld.so.conf.d");
    fs.file("/etc/ld.so.conf.d/zz.conf", b"/opt/conf\n");
    fs.file("/etc/ld.so.conf.d/loop.conf", b"include ../ld.so.conf\n");
    fs.file("/etc/ld.so.conf.d/notconf.txt", b"/opt/never\n");
    let c = kept(&fs, "/app");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    for p in [
        "/opt/env/libenv.so",
        "/opt/conf/libconf.so",
        "/opt/env/libpre.so",
    ] {
        assert!(c.kept.contains_key(&ImagePath::new(p)), "{p}: {c:?}");
    }
    let r = Resolver::new(&fs, &fs.env);
    assert_eq!(r.config().ld_so_conf_dirs, ["/opt/conf"]);
}

#[test]
fn musl_path_file() {
    let mut fs = MemFs::default();
    lib(&mut fs, "/lib/ld-musl-x86_64.so.1", &FakeElf::default());
    let mut p = program(&["libz.so.1", "libq.so"], None, None);
    p.interp = Some("/lib/ld-musl-x86_64.so.1".into());
    exe(&mut fs, "/bin/app", &p.build());
    lib(&mut fs, "/usr/lib/libz.so.1", &FakeElf::default());
    lib(&mut fs, "/opt/q/libq.so", &FakeElf::default());
    let c = kept(&fs, "/bin/app");
    assert_eq!(c.libc, Some(minify_elf::Libc::Musl));
    assert!(c.kept.contains_key(&ImagePath::new("/usr/lib/libz.so.1")));
    assert!(
        c.warnings.iter().any(|w| w.contains("libq.so")),
        "{:?}",
        c.warnings
    );
    parents(&mut fs, "/etc/ld-musl-x86_64.path");
    fs.file("/etc/ld-musl-x86_64.path", b"/opt/q\n/usr/lib\n");
    let c = kept(&fs, "/bin/app");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(c.kept.contains_key(&ImagePath::new("/opt/q/libq.so")));
    assert_eq!(
        c.kept[&ImagePath::new("/etc/ld-musl-x86_64.path")].kind,
        DepKind::LoaderFile
    );
    assert!(!c.kept.contains_key(&ImagePath::new("/etc/ld.so.cache")));
}

#[test]
fn wrong_class_or_machine_is_skipped() {
    let mut fs = base();
    exe(
        &mut fs,
        "/app",
        &program(&["libx.so"], Some("/opt/a:/opt/b:/opt/c"), None).build(),
    );
    let x32 = FakeElf {
        elf32: true,
        ..FakeElf::default()
    };
    lib(&mut fs, "/opt/a/libx.so", &x32);
    let arm = FakeElf {
        machine: 183,
        ..FakeElf::default()
    };
    lib(&mut fs, "/opt/b/libx.so", &arm);
    lib(&mut fs, "/opt/c/libx.so", &FakeElf::default());
    let c = kept(&fs, "/app");
    assert!(
        c.kept.contains_key(&ImagePath::new("/opt/c/libx.so")),
        "{c:?}"
    );
    assert!(!c.kept.contains_key(&ImagePath::new("/opt/a/libx.so")));
    assert!(!c.kept.contains_key(&ImagePath::new("/opt/b/libx.so")));
}

#[test]
fn cycles_terminate() {
    let mut fs = base();
    exe(&mut fs, "/app", &program(&["liba.so"], None, None).build());
    lib(
        &mut fs,
        "/usr/lib/liba.so",
        &FakeElf::lib(&["libb.so", "liba.so"]),
    );
    lib(
        &mut fs,
        "/usr/lib/libb.so",
        &FakeElf::lib(&["liba.so", "libb.so"]),
    );
    let c = kept(&fs, "/app");
    assert!(c.kept.contains_key(&ImagePath::new("/usr/lib/liba.so")));
    assert!(c.kept.contains_key(&ImagePath::new("/usr/lib/libb.so")));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn thousands_of_needed_and_deep_chains_are_capped() {
    let mut fs = base();
    let many: Vec<String> = (0..3000).map(|i| format!("libm{i}.so")).collect();
    let many_ref: Vec<&str> = many.iter().map(String::as_str).collect();
    exe(&mut fs, "/app", &program(&many_ref, None, None).build());
    for n in many.iter().take(5) {
        lib(&mut fs, &format!("/usr/lib/{n}"), &FakeElf::default());
    }
    let c = kept(&fs, "/app");
    assert!(
        c.warnings.iter().any(|w| w.contains("3000 DT_NEEDED")),
        "{:?}",
        &c.warnings[..3]
    );
    assert!(c.kept.contains_key(&ImagePath::new("/usr/lib/libm4.so")));

    // A chain 100 libraries deep.
    let mut fs = base();
    exe(&mut fs, "/app", &program(&["libd0.so"], None, None).build());
    for i in 0..100 {
        lib(
            &mut fs,
            &format!("/usr/lib/libd{i}.so"),
            &FakeElf::lib(&[&format!("libd{}.so", i + 1)]),
        );
    }
    let c = kept(&fs, "/app");
    assert!(
        c.warnings.iter().any(|w| w.contains("deeper than")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn loops_and_links_out_of_the_image() {
    let mut fs = base();
    exe(
        &mut fs,
        "/app",
        &program(
            &["libloop.so", "libevil.so", "libc.so.6"],
            Some("/../../../../etc"),
            None,
        )
        .build(),
    );
    fs.symlink("/usr/lib/libloop.so", "libloop2.so");
    fs.symlink("/usr/lib/libloop2.so", "libloop.so");
    // Exists on every host, not in this image: must not be found, read or listed.
    fs.symlink("/usr/lib/libevil.so", "/etc/shadow");
    let c = kept(&fs, "/app");
    for p in c.kept.keys() {
        assert!(
            !p.as_str().starts_with("/etc"),
            "{p} leaked into the closure"
        );
    }
    assert!(
        c.warnings.iter().any(|w| w.contains("libloop.so")),
        "{:?}",
        c.warnings
    );
    assert!(
        c.warnings.iter().any(|w| w.contains("libevil.so")),
        "{:?}",
        c.warnings
    );

    fs.symlink("/loopy", "/loopy");
    let err = resolve_deps(&fs, "/loopy", &[]).unwrap_err();
    assert!(matches!(err, ElfError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("too many levels"), "{err}");
    fs.symlink("/shadow", "/etc/shadow");
    let err = resolve_deps(&fs, "/shadow", &[]).unwrap_err();
    assert!(
        err.to_string().contains("does not exist in the image"),
        "{err}"
    );
}

#[test]
fn broken_and_huge_files() {
    let mut fs = base();
    exe(
        &mut fs,
        "/app",
        &program(&["libbroken.so", "libc.so.6"], None, None).build(),
    );
    let mut broken = FakeElf::lib(&["libc.so.6"]).build();
    broken.truncate(100);
    lib(&mut fs, "/usr/lib/libbroken.so", &FakeElf::default());
    fs.file("/usr/lib/libbroken.so", &broken);
    let c = kept(&fs, "/app");
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("/usr/lib/libbroken.so") && w.contains("truncated")),
        "{:?}",
        c.warnings
    );

    let err = resolve_deps(&fs, "/usr/lib/libbroken.so", &[]).unwrap_err();
    assert!(matches!(err, ElfError::Parse { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("/usr/lib/libbroken.so: truncated"),
        "{err}"
    );

    exe(&mut fs, "/huge", b"\x7fELF");
    fs.entries.get_mut(&ImagePath::new("/huge")).unwrap().size = 600 << 20;
    let err = resolve_deps(&fs, "/huge", &[]).unwrap_err();
    assert!(matches!(err, ElfError::TooLarge { .. }), "{err}");

    exe(&mut fs, "/script", b"#!/bin/sh\n");
    let err = resolve_deps(&fs, "/script", &[]).unwrap_err();
    assert!(err.to_string().contains("not an ELF file"), "{err}");
}

const X64: i32 = 0x0303;
const I386: i32 = 0x0003;
const HWCAP_EXTENSION: u64 = 1 << 62;

fn cache(fs: &mut MemFs, entries: &[(&str, i32, &str)]) {
    let c = FakeLdCache {
        entries: entries
            .iter()
            .map(|(n, f, p)| FakeCacheEntry::new(n, *f, p))
            .collect(),
        ..FakeLdCache::default()
    };
    parents(fs, "/etc/ld.so.cache");
    fs.file("/etc/ld.so.cache", &c.build_new());
}

fn has(c: &minify_elf::DepClosure, p: &str) -> bool {
    c.kept.contains_key(&ImagePath::new(p))
}

#[test]
fn ld_so_cache_is_searched_after_runpath_and_before_default_dirs() {
    let mut fs = base();
    fs.env = vec!["LD_LIBRARY_PATH=/opt/env".into()];
    exe(
        &mut fs,
        "/app",
        &program(
            &["libenv.so.1", "librun.so.1", "libcached.so.1", "libc.so.6"],
            Some("/opt/run"),
            None,
        )
        .build(),
    );
    for l in ["libenv.so.1", "librun.so.1", "libcached.so.1"] {
        // Every library is in the cache's directory and in a default directory too.
        lib(&mut fs, &format!("/opt/cached/{l}"), &FakeElf::default());
        lib(
            &mut fs,
            &format!("/usr/lib/x86_64-linux-gnu/{l}"),
            &FakeElf::default(),
        );
    }
    lib(&mut fs, "/opt/env/libenv.so.1", &FakeElf::default());
    lib(&mut fs, "/opt/run/librun.so.1", &FakeElf::default());
    // ld.so.conf names a directory the cache was not built from: with a cache, ld.so never
    // looks there.
    lib(&mut fs, "/opt/conf/libcached.so.1", &FakeElf::default());
    parents(&mut fs, "/etc/ld.so.conf");
    fs.file("/etc/ld.so.conf", b"/opt/conf\n");
    cache(
        &mut fs,
        &[
            ("libenv.so.1", X64, "/opt/cached/libenv.so.1"),
            ("librun.so.1", X64, "/opt/cached/librun.so.1"),
            ("libcached.so.1", X64, "/opt/cached/libcached.so.1"),
            ("libc.so.6", X64, "/lib/x86_64-linux-gnu/libc.so.6"),
        ],
    );
    let c = kept(&fs, "/app");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    for p in [
        "/opt/env/libenv.so.1",
        "/opt/run/librun.so.1",
        "/opt/cached/libcached.so.1",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib",
        "/etc/ld.so.cache",
    ] {
        assert!(has(&c, p), "{p} missing: {:?}", c.kept.keys());
    }
    for p in [
        "/opt/cached/libenv.so.1",
        "/opt/cached/librun.so.1",
        "/usr/lib/x86_64-linux-gnu/libcached.so.1",
        "/opt/conf/libcached.so.1",
    ] {
        assert!(!has(&c, p), "{p} kept: {:?}", c.kept.keys());
    }
    let r = Resolver::new(&fs, &fs.env);
    assert_eq!(
        r.config().cache.as_ref().map(minify_elf::LdCache::len),
        Some(4)
    );
}

#[test]
fn ld_so_cache_entries_match_the_requesters_class() {
    let mut fs = base();
    let elf32 = FakeElf {
        elf32: true,
        ..FakeElf::default()
    };
    lib(&mut fs, "/usr/lib/i386-linux-gnu/ld-linux.so.2", &elf32);
    lib(&mut fs, "/usr/lib/i386-linux-gnu/libfoo.so.1", &elf32);
    lib(&mut fs, "/opt/64/libfoo.so.1", &FakeElf::default());
    // A stale entry with x86-64 flags that points at a 32-bit file: the file's own header
    // decides, and the next entry is tried.
    lib(&mut fs, "/opt/stale/libfoo.so.1", &elf32);
    cache(
        &mut fs,
        &[
            ("libfoo.so.1", I386, "/usr/lib/i386-linux-gnu/libfoo.so.1"),
            ("libfoo.so.1", X64, "/opt/stale/libfoo.so.1"),
            ("libfoo.so.1", X64, "/opt/64/libfoo.so.1"),
        ],
    );
    exe(
        &mut fs,
        "/app64",
        &program(&["libfoo.so.1"], None, None).build(),
    );
    let p32 = FakeElf {
        elf32: true,
        interp: Some("/lib/i386-linux-gnu/ld-linux.so.2".into()),
        needed: vec!["libfoo.so.1".into()],
        ..FakeElf::default()
    };
    exe(&mut fs, "/app32", &p32.build());
    let c = kept(&fs, "/app64");
    assert!(has(&c, "/opt/64/libfoo.so.1"), "{:?}", c.kept.keys());
    assert!(!has(&c, "/usr/lib/i386-linux-gnu/libfoo.so.1"));
    assert!(!has(&c, "/opt/stale/libfoo.so.1"));
    let c = kept(&fs, "/app32");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(
        has(&c, "/usr/lib/i386-linux-gnu/libfoo.so.1"),
        "{:?}",
        c.kept.keys()
    );
    assert!(!has(&c, "/opt/64/libfoo.so.1"));
}

#[test]
fn ld_so_cache_nodeflib_skips_default_dir_entries() {
    let mut fs = base();
    lib(
        &mut fs,
        "/usr/lib/x86_64-linux-gnu/libdef.so",
        &FakeElf::default(),
    );
    lib(&mut fs, "/opt/x/libopt.so", &FakeElf::default());
    cache(
        &mut fs,
        &[
            ("libdef.so", X64, "/usr/lib/x86_64-linux-gnu/libdef.so"),
            ("libopt.so", X64, "/opt/x/libopt.so"),
        ],
    );
    let p = FakeElf {
        nodeflib: true,
        ..program(&["libdef.so", "libopt.so"], None, None)
    };
    exe(&mut fs, "/app", &p.build());
    let c = kept(&fs, "/app");
    assert!(has(&c, "/opt/x/libopt.so"), "{:?}", c.kept.keys());
    assert!(!has(&c, "/usr/lib/x86_64-linux-gnu/libdef.so"));
    assert!(
        c.warnings
            .iter()
            .any(|w| w.starts_with("libdef.so needed by")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn ld_so_conf_is_the_fallback_without_a_usable_cache() {
    let mut fs = base();
    exe(
        &mut fs,
        "/app",
        &program(&["libconf.so"], None, None).build(),
    );
    lib(&mut fs, "/opt/conf/libconf.so", &FakeElf::default());
    parents(&mut fs, "/etc/ld.so.conf");
    fs.file("/etc/ld.so.conf", b"/opt/conf\n");
    // No cache at all.
    let c = kept(&fs, "/app");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(has(&c, "/opt/conf/libconf.so"));

    // A corrupt cache: ignored with one clear warning, and the same result.
    let mut bytes = FakeLdCache {
        entries: vec![FakeCacheEntry::new(
            "libconf.so",
            X64,
            "/nowhere/libconf.so",
        )],
        ..FakeLdCache::default()
    }
    .build_new();
    bytes.truncate(60);
    fs.file("/etc/ld.so.cache", &bytes);
    let c = kept(&fs, "/app");
    assert!(has(&c, "/opt/conf/libconf.so"), "{:?}", c.kept.keys());
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(
        c.warnings[0].starts_with("/etc/ld.so.cache: 1 entries at offset 0x0 do not fit")
            && c.warnings[0].ends_with("ignored, the ld.so.conf directories are searched instead"),
        "{}",
        c.warnings[0]
    );
    // Kept all the same: the loader reads it.
    assert_eq!(
        c.kept[&ImagePath::new("/etc/ld.so.cache")].kind,
        DepKind::LoaderFile
    );

    // Garbage, and a directory where the file should be.
    fs.file("/etc/ld.so.cache", b"\0\0\0garbage");
    let c = kept(&fs, "/app");
    assert!(has(&c, "/opt/conf/libconf.so"));
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("not a glibc ld.so.cache")),
        "{:?}",
        c.warnings
    );
    fs.dir("/etc/ld.so.cache");
    let c = kept(&fs, "/app");
    assert!(has(&c, "/opt/conf/libconf.so"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn ld_so_cache_paths_stay_in_the_image() {
    let mut fs = base();
    exe(
        &mut fs,
        "/app",
        &program(
            &["libevil.so", "libdots.so", "librel.so", "libloop.so"],
            None,
            None,
        )
        .build(),
    );
    // Exists on every host, not in this image.
    fs.symlink("/usr/lib/libevil.so", "/etc/shadow");
    fs.symlink("/usr/lib/libloop.so", "libloop.so");
    lib(
        &mut fs,
        "/usr/lib/x86_64-linux-gnu/libdots.so",
        &FakeElf::default(),
    );
    lib(&mut fs, "/opt/rel/librel.so", &FakeElf::default());
    cache(
        &mut fs,
        &[
            ("libevil.so", X64, "/usr/lib/libevil.so"),
            ("libevil.so", X64, "/../../../../etc/passwd"),
            // `..` stops at the image root: this is /usr/lib/x86_64-linux-gnu/libdots.so.
            (
                "libdots.so",
                X64,
                "/../../usr/lib/x86_64-linux-gnu/libdots.so",
            ),
            // A relative path is taken from the image root.
            ("librel.so", X64, "opt/rel/librel.so"),
            ("libloop.so", X64, "/usr/lib/libloop.so"),
        ],
    );
    let c = kept(&fs, "/app");
    for p in c.kept.keys() {
        assert!(
            !p.as_str().starts_with("/etc/sh") && !p.as_str().starts_with("/etc/pa"),
            "{p}"
        );
    }
    assert!(
        has(&c, "/usr/lib/x86_64-linux-gnu/libdots.so"),
        "{:?}",
        c.kept.keys()
    );
    assert!(has(&c, "/opt/rel/librel.so"), "{:?}", c.kept.keys());
    for name in ["libevil.so", "libloop.so"] {
        assert!(
            c.warnings
                .iter()
                .any(|w| w.starts_with(&format!("{name} needed by /app not found"))),
            "{name}: {:?}",
            c.warnings
        );
    }
}

#[test]
fn glibc_hwcaps_variants_are_kept_next_to_the_baseline() {
    let dir = "/usr/lib/x86_64-linux-gnu";
    for with_cache in [false, true] {
        let mut fs = base();
        exe(
            &mut fs,
            "/app",
            &program(&["libfoo.so.1"], None, None).build(),
        );
        lib(&mut fs, &format!("{dir}/libfoo.so.1"), &FakeElf::default());
        lib(
            &mut fs,
            &format!("{dir}/glibc-hwcaps/x86-64-v3/libfoo.so.1"),
            &FakeElf::lib(&["libv3extra.so"]),
        );
        lib(
            &mut fs,
            &format!("{dir}/glibc-hwcaps/x86-64-v4/libfoo.so.1.2"),
            &FakeElf::default(),
        );
        fs.symlink(
            &format!("{dir}/glibc-hwcaps/x86-64-v4/libfoo.so.1"),
            "libfoo.so.1.2",
        );
        // A variant of the wrong class is not one.
        lib(
            &mut fs,
            &format!("{dir}/glibc-hwcaps/x86-64-v2/libfoo.so.1"),
            &FakeElf {
                elf32: true,
                ..FakeElf::default()
            },
        );
        // The v3 variant's own needs are followed too.
        lib(
            &mut fs,
            &format!("{dir}/libv3extra.so"),
            &FakeElf::default(),
        );
        if with_cache {
            cache(
                &mut fs,
                &[("libfoo.so.1", X64, "/lib/x86_64-linux-gnu/libfoo.so.1")],
            );
        }
        let c = kept(&fs, "/app");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        for p in [
            "/usr/lib/x86_64-linux-gnu/libfoo.so.1",
            "/usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libfoo.so.1",
            "/usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v4/libfoo.so.1",
            "/usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v4/libfoo.so.1.2",
            "/usr/lib/x86_64-linux-gnu/libv3extra.so",
        ] {
            assert!(
                has(&c, p),
                "cache {with_cache}: {p} missing: {:?}",
                c.kept.keys()
            );
        }
        assert!(!has(
            &c,
            "/usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v2/libfoo.so.1"
        ));
        assert_eq!(
            c.kept[&ImagePath::new("/usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libfoo.so.1")]
                .detail,
            "libfoo.so.1 needed by /app (glibc-hwcaps variant)"
        );
        assert_eq!(
            c.kept[&ImagePath::new("/usr/lib/x86_64-linux-gnu/libfoo.so.1")].detail,
            "libfoo.so.1 needed by /app"
        );
    }
}

#[test]
fn glibc_hwcaps_variant_in_an_earlier_dir_than_the_baseline() {
    // RUNPATH dir holds only an x86-64-v3 build, the default dir the baseline: a v3 CPU maps
    // the first, any other CPU the second, so both stay.
    let mut fs = base();
    exe(
        &mut fs,
        "/app",
        &program(&["libfoo.so.1"], Some("/opt/app/lib"), None).build(),
    );
    lib(
        &mut fs,
        "/opt/app/lib/glibc-hwcaps/x86-64-v3/libfoo.so.1",
        &FakeElf::default(),
    );
    lib(
        &mut fs,
        "/usr/lib/x86_64-linux-gnu/libfoo.so.1",
        &FakeElf::default(),
    );
    let c = kept(&fs, "/app");
    assert!(has(&c, "/opt/app/lib/glibc-hwcaps/x86-64-v3/libfoo.so.1"));
    assert!(has(&c, "/usr/lib/x86_64-linux-gnu/libfoo.so.1"));

    // With no baseline anywhere, the variant alone is what the loader can map.
    fs.entries
        .remove(&ImagePath::new("/usr/lib/x86_64-linux-gnu/libfoo.so.1"));
    let c = kept(&fs, "/app");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(has(&c, "/opt/app/lib/glibc-hwcaps/x86-64-v3/libfoo.so.1"));

    // musl has no glibc-hwcaps.
    let mut fs = MemFs::default();
    lib(&mut fs, "/lib/ld-musl-x86_64.so.1", &FakeElf::default());
    let mut p = program(&["libz.so.1"], None, None);
    p.interp = Some("/lib/ld-musl-x86_64.so.1".into());
    exe(&mut fs, "/bin/app", &p.build());
    lib(&mut fs, "/usr/lib/libz.so.1", &FakeElf::default());
    lib(
        &mut fs,
        "/usr/lib/glibc-hwcaps/x86-64-v3/libz.so.1",
        &FakeElf::default(),
    );
    let c = kept(&fs, "/bin/app");
    assert!(has(&c, "/usr/lib/libz.so.1"));
    assert!(!has(&c, "/usr/lib/glibc-hwcaps/x86-64-v3/libz.so.1"));
}

#[test]
fn ld_so_cache_hwcaps_entries_are_kept() {
    let mut fs = base();
    exe(
        &mut fs,
        "/app",
        &program(&["libfoo.so.1"], None, None).build(),
    );
    lib(&mut fs, "/opt/l/libfoo.so.1", &FakeElf::default());
    lib(
        &mut fs,
        "/opt/l/glibc-hwcaps/power9/libfoo.so.1",
        &FakeElf::default(),
    );
    let c = FakeLdCache {
        entries: vec![
            FakeCacheEntry {
                hwcap: HWCAP_EXTENSION,
                ..FakeCacheEntry::new("libfoo.so.1", X64, "/opt/l/hw/v3/libfoo.so.1")
            },
            FakeCacheEntry::new("libfoo.so.1", X64, "/opt/l/libfoo.so.1"),
        ],
        ..FakeLdCache::default()
    };
    lib(&mut fs, "/opt/l/hw/v3/libfoo.so.1", &FakeElf::default());
    parents(&mut fs, "/etc/ld.so.cache");
    fs.file("/etc/ld.so.cache", &c.build_new());
    let c = kept(&fs, "/app");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    for p in [
        "/opt/l/libfoo.so.1",
        "/opt/l/hw/v3/libfoo.so.1",
        "/opt/l/glibc-hwcaps/power9/libfoo.so.1",
    ] {
        assert!(has(&c, p), "{p}: {:?}", c.kept.keys());
    }
}

/// Caches written by the host's real ldconfig (new, compat and old formats) over a small
/// image root of synthetic libraries, with a glibc-hwcaps subdirectory.
#[test]
fn ld_so_cache_from_the_real_ldconfig() {
    let skip = |why: &str| {
        minify_fixtures::skip(why);
    };
    if std::process::Command::new("ldconfig")
        .arg("--version")
        .output()
        .is_err()
    {
        return skip("no ldconfig on the host");
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let put = |p: &str, e: &FakeElf| {
        let host = root.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(host.parent().unwrap()).unwrap();
        std::fs::write(host, e.build()).unwrap();
    };
    let so = |name: &str| FakeElf {
        soname: Some(name.into()),
        ..FakeElf::default()
    };
    put(
        "/usr/lib/x86_64-linux-gnu/libfoo.so.1.0",
        &so("libfoo.so.1"),
    );
    put(
        "/usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libfoo.so.1.0",
        &so("libfoo.so.1"),
    );
    put("/opt/l/libbar.so.2.5", &so("libbar.so.2"));
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/ld.so.conf"), "/opt/l\n").unwrap();
    for format in ["new", "compat", "old"] {
        let out = std::process::Command::new("ldconfig")
            .arg("-r")
            .arg(root)
            .args(["-c", format])
            .output()
            .unwrap();
        if !out.status.success() {
            return skip(&format!(
                "ldconfig -r -c {format} failed (needs root for chroot): {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut fs = base();
        copy_tree(&mut fs, root, "/");
        exe(
            &mut fs,
            "/app",
            &program(&["libfoo.so.1", "libbar.so.2", "libc.so.6"], None, None).build(),
        );
        let r = Resolver::new(&fs, &fs.env);
        let cache = r.config().cache.as_ref().expect(format);
        assert!(cache.len() >= 3, "{format}: {:?}", cache.entries());
        let c = kept(&fs, "/app");
        assert!(c.warnings.is_empty(), "{format}: {:?}", c.warnings);
        for p in [
            // ldconfig made the soname links; the cache points at them.
            "/usr/lib/x86_64-linux-gnu/libfoo.so.1",
            "/usr/lib/x86_64-linux-gnu/libfoo.so.1.0",
            "/usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libfoo.so.1.0",
            "/opt/l/libbar.so.2",
            "/opt/l/libbar.so.2.5",
        ] {
            assert!(has(&c, p), "{format}: {p} missing: {:?}", c.kept.keys());
        }
    }
}

/// Copy a host directory tree into `fs` at `at` (files, directories, symlinks as they are).
fn copy_tree(fs: &mut MemFs, host: &std::path::Path, at: &str) {
    for e in std::fs::read_dir(host).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let path = ImagePath::new(at).join(&name);
        let ty = e.file_type().unwrap();
        if ty.is_symlink() {
            let t = std::fs::read_link(e.path()).unwrap();
            fs.symlink(path.as_str(), &t.to_string_lossy());
        } else if ty.is_dir() {
            if !fs.entries.contains_key(&path) {
                fs.dir(path.as_str());
            }
            copy_tree(fs, &e.path(), path.as_str());
        } else {
            fs.file(path.as_str(), &std::fs::read(e.path()).unwrap());
        }
    }
}

/// The JVM's shape: the launcher `dlopen`s `lib/server/libjvm.so` by path; `lib/libjava.so`
/// needs `libjvm.so`, which no search path reaches. In the process the loader satisfies it
/// from the already loaded object with that soname, so once the workload is known to have
/// loaded it, it resolves to it; otherwise it is still reported missing.
#[test]
fn needed_names_resolve_to_loaded_objects_by_soname() {
    let mut fs = base();
    let jvm = "/usr/lib/jvm/java/lib/server/libjvm.so";
    lib(
        &mut fs,
        jvm,
        &FakeElf {
            soname: Some("libjvm.so".into()),
            needed: vec!["libc.so.6".into()],
            ..FakeElf::default()
        },
    );
    lib(
        &mut fs,
        "/usr/lib/jvm/java/lib/libjava.so",
        &FakeElf::lib(&["libjvm.so", "libc.so.6"]),
    );
    // Not an ELF file, and an ELF file without a soname: neither counts as loaded.
    fs.file("/usr/lib/jvm/java/lib/modules", b"not an ELF file");
    lib(&mut fs, "/opt/nosoname.so", &FakeElf::lib(&[]));

    let missing = kept(&fs, "/usr/lib/jvm/java/lib/libjava.so");
    assert!(
        missing
            .warnings
            .iter()
            .any(|w| w.contains("libjvm.so needed by") && w.contains("not found")),
        "{:?}",
        missing.warnings
    );

    let mut r = Resolver::new(&fs, &[]);
    let loaded = [
        ImagePath::new(jvm),
        ImagePath::new("/usr/lib/jvm/java/lib/modules"),
        ImagePath::new("/opt/nosoname.so"),
    ];
    r.set_loaded(&loaded);
    let c = r.closure_of("/usr/lib/jvm/java/lib/libjava.so").unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(names(&c).contains(jvm), "{:?}", names(&c));
    assert_eq!(c.kept[&ImagePath::new(jvm)].kind, DepKind::Library);
}
