//! `ElfInfo::parse` on real Debian binaries and on hostile bytes: truncated files, absurd
//! offsets and counts. Every case must give a clear error or a bounded result, never a panic.

use minify_elf::testutil::FakeElf;
use minify_elf::{ElfClass, ElfInfo, ParseError};

fn host(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e} (tests need a Debian host)"))
}

#[test]
fn real_binary() {
    let info = ElfInfo::parse(&host("/usr/bin/ls")).unwrap();
    assert_eq!(info.class, ElfClass::Elf64);
    assert_eq!(info.machine, 62);
    assert_eq!(
        info.interpreter.as_deref(),
        Some("/lib64/ld-linux-x86-64.so.2")
    );
    assert!(
        info.needed.iter().any(|n| n == "libc.so.6"),
        "{:?}",
        info.needed
    );
    assert!(info.dynamic);
}

#[test]
fn real_library_has_soname() {
    let info = ElfInfo::parse(&host("/lib/x86_64-linux-gnu/libc.so.6")).unwrap();
    assert_eq!(info.soname.as_deref(), Some("libc.so.6"));
    // libc.so.6 is also runnable (it has a PT_INTERP); a plain library has none.
    let info = ElfInfo::parse(&host("/lib/x86_64-linux-gnu/libpcre2-8.so.0")).unwrap();
    assert_eq!(info.soname.as_deref(), Some("libpcre2-8.so.0"));
    assert!(info.interpreter.is_none());
}

#[test]
fn synthetic_fields_roundtrip() {
    let e = FakeElf {
        interp: Some("/lib/ld-musl-x86_64.so.1".into()),
        needed: vec!["liba.so".into(), "libb.so.2".into()],
        rpath: Some("/opt/r1:$ORIGIN/r2".into()),
        runpath: Some("${ORIGIN}/../lib".into()),
        soname: Some("libme.so.1".into()),
        ..FakeElf::default()
    };
    let info = ElfInfo::parse(&e.build()).unwrap();
    assert_eq!(info.needed, ["liba.so", "libb.so.2"]);
    assert_eq!(info.rpath, ["/opt/r1", "$ORIGIN/r2"]);
    assert_eq!(info.runpath, ["${ORIGIN}/../lib"]);
    assert_eq!(info.soname.as_deref(), Some("libme.so.1"));
    assert_eq!(
        info.interpreter.as_deref(),
        Some("/lib/ld-musl-x86_64.so.1")
    );

    let e32 = FakeElf {
        elf32: true,
        needed: vec!["libc.so.6".into()],
        ..FakeElf::default()
    };
    let info = ElfInfo::parse(&e32.build()).unwrap();
    assert_eq!(info.class, ElfClass::Elf32);
    assert_eq!(info.machine, 3);
    assert_eq!(info.needed, ["libc.so.6"]);
}

#[test]
fn not_elf_and_empty() {
    assert_eq!(ElfInfo::parse(b""), Err(ParseError::NotElf));
    assert_eq!(ElfInfo::parse(b"#!/bin/sh\n"), Err(ParseError::NotElf));
    assert!(matches!(
        ElfInfo::parse(b"\x7fELF"),
        Err(ParseError::Truncated { .. })
    ));
    assert!(matches!(
        ElfInfo::parse(b"\x7fELF\x07"),
        Err(ParseError::BadClass(7))
    ));
}

/// Every prefix of a real binary (sampled) and of a synthetic one parses or errors cleanly.
#[test]
fn truncated_everywhere() {
    let real = host("/usr/bin/ls");
    let synth = FakeElf::lib(&["liba.so", "libb.so"]).build();
    for bytes in [&real, &synth] {
        let step = (bytes.len() / 2000).max(1);
        let mut cut = 0;
        while cut < bytes.len() {
            let r = ElfInfo::parse(&bytes[..cut]);
            if cut < 64 {
                assert!(
                    r.is_err(),
                    "a {cut}-byte prefix cannot be a whole ELF header"
                );
            }
            cut += if cut < 512 { 1 } else { step };
        }
    }
    // The dynamic string table cut off: a clear truncation error naming the structure.
    let full = FakeElf::lib(&["liba.so"]).build();
    let err = ElfInfo::parse(&full[..full.len() - 20]).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

fn patch(bytes: &mut [u8], off: usize, val: &[u8]) {
    bytes[off..off + val.len()].copy_from_slice(val);
}

#[test]
fn absurd_offsets_and_counts() {
    let base = FakeElf::lib(&["liba.so"]).build();

    // e_phoff far beyond the file.
    let mut b = base.clone();
    patch(&mut b, 32, &u64::MAX.to_le_bytes());
    let err = ElfInfo::parse(&b).unwrap_err();
    assert!(
        matches!(
            err,
            ParseError::Truncated {
                what: "program headers",
                ..
            }
        ),
        "{err}"
    );

    // e_phnum = 0xffff.
    let mut b = base.clone();
    patch(&mut b, 56, &0xffffu16.to_le_bytes());
    let err = ElfInfo::parse(&b).unwrap_err();
    assert!(matches!(err, ParseError::TooMany { .. }), "{err}");

    // PT_DYNAMIC with p_filesz = 2^63 (second program header, p_filesz at +32).
    let mut b = base.clone();
    patch(&mut b, 64 + 56 + 32, &(1u64 << 63).to_le_bytes());
    let err = ElfInfo::parse(&b).unwrap_err();
    assert!(err.to_string().contains("PT_DYNAMIC"), "{err}");

    // PT_DYNAMIC offset overflowing when added to its size.
    let mut b = base.clone();
    patch(&mut b, 64 + 56 + 8, &(u64::MAX - 4).to_le_bytes());
    assert!(ElfInfo::parse(&b).is_err());

    // A DT_NEEDED string offset beyond the string table.
    let mut b = base.clone();
    let dyn_start = b.len() - 4 * 16; // NEEDED, STRTAB, STRSZ, NULL
    patch(&mut b, dyn_start + 8, &0xdead_beefu64.to_le_bytes());
    let err = ElfInfo::parse(&b).unwrap_err();
    assert!(err.to_string().contains("dynamic string"), "{err}");

    // DT_STRTAB at an address no PT_LOAD maps.
    let mut b = base.clone();
    patch(&mut b, dyn_start + 16 + 8, &(1u64 << 40).to_le_bytes());
    let err = ElfInfo::parse(&b).unwrap_err();
    assert!(err.to_string().contains("DT_STRTAB"), "{err}");

    // DT_STRSZ lying (huge): clamped to the file, still parses.
    let mut b = base;
    patch(&mut b, dyn_start + 32 + 8, &u64::MAX.to_le_bytes());
    assert_eq!(ElfInfo::parse(&b).unwrap().needed, ["liba.so"]);
}

#[test]
fn thousands_of_needed_entries_parse_bounded() {
    let names: Vec<String> = (0..5000).map(|i| format!("lib{i}.so")).collect();
    let e = FakeElf {
        needed: names,
        ..FakeElf::default()
    };
    let info = ElfInfo::parse(&e.build()).unwrap();
    assert_eq!(info.needed.len(), 5000);
}
