//! glibc's `/etc/ld.so.cache`, read from the image: which file the loader maps for a library
//! name once the RPATH/`LD_LIBRARY_PATH`/RUNPATH directories had nothing.
//!
//! Three layouts exist (glibc `sysdeps/generic/dl-cache.h`): the new one (magic
//! `glibc-ld.so.cache1.1`, written by ldconfig since glibc 2.32), the libc5-era one (magic
//! `ld.so-1.7.0`), and the old one with a new one embedded after its entries (ldconfig
//! `-c compat`). When a new table is present it is the only one used, as in ld.so.
//!
//! The file comes from the image, so it is untrusted: every count, offset and string is
//! checked against the file before use, nothing is allocated from a count the file gives
//! before that count is checked against the file's size, and strings are only copied for
//! the entries a lookup returns. Any inconsistency is a [`CacheError`] naming the offset; the
//! caller then ignores the whole cache (ld.so ignores a cache it finds corrupt, too).

use crate::loader::{EM_AARCH64, EM_ARM, EM_PPC64, EM_RISCV, EM_S390, EM_X86_64};
use crate::parse::{ElfClass, ElfInfo};

/// Where ld.so reads its cache (glibc's `LD_SO_CACHE`).
pub const LD_SO_CACHE: &str = "/etc/ld.so.cache";
/// Largest cache read (real ones are tens to hundreds of KiB).
pub const MAX_CACHE_BYTES: u64 = 16 << 20;
/// Most entries accepted (a full desktop distribution has a few thousand).
pub const MAX_CACHE_ENTRIES: u32 = 1 << 17;
/// Longest string (library name or path) accepted, glibc's `PATH_MAX`.
pub const MAX_CACHE_STRING: usize = 4096;

const MAGIC_OLD: &[u8] = b"ld.so-1.7.0";
const MAGIC_NEW: &[u8] = b"glibc-ld.so.cache1.1";
/// `struct cache_file`: 11-byte magic, padding, `nlibs`.
const OLD_HEADER: usize = 16;
/// `struct file_entry`: flags, key, value.
const OLD_ENTRY: usize = 12;
/// `struct cache_file_new`.
const NEW_HEADER: usize = 48;
/// `struct file_entry_new`: flags, key, value, osversion, hwcap.
const NEW_ENTRY: usize = 24;
/// `cache_extension_magic`, `(uint32_t) -358342284`.
const EXTENSION_MAGIC: u32 = 0xeaa4_2174;

/// Entry flags (glibc `elf/ldconfig.h`): the type in the low byte, the ABI in the next.
const FLAG_ELF: i32 = 0x0001;
const FLAG_ELF_LIBC6: i32 = 0x0003;
const FLAG_TYPE_MASK: i32 = 0x00ff;
const FLAG_REQUIRED_MASK: i32 = 0xff00;
const FLAG_SPARC_LIB64: i32 = 0x0100;
const FLAG_IA64_LIB64: i32 = 0x0200;
const FLAG_X8664_LIB64: i32 = 0x0300;
const FLAG_S390_LIB64: i32 = 0x0400;
const FLAG_POWERPC_LIB64: i32 = 0x0500;
const FLAG_MIPS64_LIBN32: i32 = 0x0600;
const FLAG_MIPS64_LIBN64: i32 = 0x0700;
const FLAG_X8664_LIBX32: i32 = 0x0800;
const FLAG_ARM_LIBHF: i32 = 0x0900;
const FLAG_AARCH64_LIB64: i32 = 0x0a00;
const FLAG_ARM_LIBSF: i32 = 0x0b00;
const FLAG_MIPS_LIB32_NAN2008: i32 = 0x0c00;
const FLAG_MIPS64_LIBN32_NAN2008: i32 = 0x0d00;
const FLAG_MIPS64_LIBN64_NAN2008: i32 = 0x0e00;
const FLAG_RISCV_FLOAT_ABI_SOFT: i32 = 0x0f00;
const FLAG_RISCV_FLOAT_ABI_DOUBLE: i32 = 0x1000;
const FLAG_LARCH_FLOAT_ABI_SOFT: i32 = 0x1100;
const FLAG_LARCH_FLOAT_ABI_DOUBLE: i32 = 0x1200;

const EM_MIPS: u16 = 8;
const EM_SPARCV9: u16 = 43;
const EM_IA_64: u16 = 50;
const EM_LOONGARCH: u16 = 258;

/// Why a cache file is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// Neither magic is at the start of the file.
    #[error("not a glibc ld.so.cache (no \"glibc-ld.so.cache1.1\" or \"ld.so-1.7.0\" magic)")]
    BadMagic,
    /// A header lies (partly) beyond the end of the file.
    #[error("truncated: {what} at offset {offset:#x} needs {need} bytes, the file has {len}")]
    Truncated {
        what: &'static str,
        offset: usize,
        need: usize,
        len: usize,
    },
    /// ldconfig marked the cache as invalid (endianness flag 1).
    #[error("the header at offset {offset:#x} marks the cache invalid")]
    MarkedInvalid { offset: usize },
    /// The entry count does not fit in the file (or is absurd).
    #[error(
        "{count} entries at offset {offset:#x} do not fit in the file's {len} bytes (limit {MAX_CACHE_ENTRIES})"
    )]
    TooManyEntries {
        count: u32,
        offset: usize,
        len: usize,
    },
    /// An entry's string offset is outside the file, or the string has no end.
    #[error("entry {index}: {field} string at offset {offset:#x} {problem}")]
    BadString {
        index: u32,
        field: &'static str,
        offset: u64,
        problem: &'static str,
    },
    /// The extension directory (glibc 2.33+) is inconsistent; ld.so then ignores the cache.
    #[error("extension directory at offset {offset:#x}: {problem}")]
    BadExtension { offset: u32, problem: &'static str },
}

/// Which layout the file had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheFormat {
    /// `glibc-ld.so.cache1.1` only.
    New,
    /// `ld.so-1.7.0` only (libc5/glibc 2.0-2.1 era).
    Old,
    /// `ld.so-1.7.0` with a new-format table after its entries; the new table is used.
    OldWithNew,
}

/// One matching entry of a lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    /// The entry's flags (libc type and ABI, see [`flags_match`]).
    pub flags: i32,
    /// The hwcap field of new-format entries (0 in the old format). Non-zero marks a variant
    /// for some CPUs only: a `glibc-hwcaps` subdirectory (bit 62) or a legacy hwcap
    /// directory, which glibc 2.37 stopped using.
    pub hwcap: u64,
    /// The path the loader would open, as written by ldconfig (an image path).
    pub path: String,
}

impl CacheEntry {
    /// Whether this entry is a variant for some CPUs only rather than the baseline library:
    /// a non-zero hwcap, or a path in a `glibc-hwcaps/<name>/` directory (the old format has
    /// no hwcap field, yet ldconfig lists hwcaps subdirectories in it).
    pub fn is_hwcaps_variant(&self) -> bool {
        if self.hwcap != 0 {
            return true;
        }
        let mut comps = self.path.rsplit('/');
        comps.next(); // file name
        comps.next(); // subdirectory name
        comps.next() == Some("glibc-hwcaps")
    }
}

#[derive(Clone, Copy, Debug)]
struct RawEntry {
    flags: i32,
    key: usize,
    value: usize,
    hwcap: u64,
}

/// A parsed, validated ld.so.cache.
#[derive(Clone)]
pub struct LdCache {
    data: Vec<u8>,
    format: CacheFormat,
    /// In file order; offsets are absolute (already based and checked).
    entries: Vec<RawEntry>,
    /// Indices into `entries` sorted by key bytes (stable, so file order among equal keys):
    /// a lookup is a binary search whatever order a hostile file has.
    by_key: Vec<u32>,
}

impl std::fmt::Debug for LdCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdCache")
            .field("format", &self.format)
            .field("bytes", &self.data.len())
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
enum Endian {
    Little,
    Big,
}

fn u32_at(data: &[u8], off: usize, e: Endian) -> Option<u32> {
    let b: [u8; 4] = data.get(off..off.checked_add(4)?)?.try_into().ok()?;
    Some(match e {
        Endian::Little => u32::from_le_bytes(b),
        Endian::Big => u32::from_be_bytes(b),
    })
}

fn u64_at(data: &[u8], off: usize, e: Endian) -> Option<u64> {
    let b: [u8; 8] = data.get(off..off.checked_add(8)?)?.try_into().ok()?;
    Some(match e {
        Endian::Little => u64::from_le_bytes(b),
        Endian::Big => u64::from_be_bytes(b),
    })
}

/// How many `entry`-byte entries fit between `start` and the end of the file.
fn room(len: usize, start: usize, entry: usize) -> usize {
    len.saturating_sub(start) / entry
}

/// The byte order in which `count_at` holds a count of entries that fits the file: the
/// writer's native order, unknown for files from before glibc 2.33. Little-endian wins a tie.
fn guess_endian(data: &[u8], count_at: usize, start: usize, entry: usize) -> Endian {
    let fits = room(data.len(), start, entry);
    match u32_at(data, count_at, Endian::Little) {
        Some(n) if (n as usize) <= fits => Endian::Little,
        _ => Endian::Big,
    }
}

impl LdCache {
    /// Parse and validate a whole cache file.
    pub fn parse(data: Vec<u8>) -> Result<LdCache, CacheError> {
        let len = data.len();
        if data.starts_with(MAGIC_NEW) {
            let (entries, _) = parse_new(&data, 0)?;
            return Ok(LdCache::new(data, CacheFormat::New, entries));
        }
        if !data.starts_with(MAGIC_OLD) {
            return Err(CacheError::BadMagic);
        }
        if len < OLD_HEADER {
            return Err(CacheError::Truncated {
                what: "old-format header",
                offset: 0,
                need: OLD_HEADER,
                len,
            });
        }
        let nlibs_at = MAGIC_OLD.len() + 1;
        let endian = guess_endian(&data, nlibs_at, OLD_HEADER, OLD_ENTRY);
        let nlibs = u32_at(&data, nlibs_at, endian).unwrap_or(u32::MAX);
        if nlibs as usize > room(len, OLD_HEADER, OLD_ENTRY) || nlibs > MAX_CACHE_ENTRIES {
            return Err(CacheError::TooManyEntries {
                count: nlibs,
                offset: 0,
                len,
            });
        }
        let strings = OLD_HEADER + nlibs as usize * OLD_ENTRY;
        // The new table starts at the next multiple of `alignof(struct cache_file_new)`:
        // 8 where `uint64_t` is 8-aligned, 4 on i386 and other 32-bit ABIs.
        for new_at in [strings.next_multiple_of(8), strings] {
            if data
                .get(new_at..)
                .is_some_and(|rest| rest.starts_with(MAGIC_NEW))
            {
                let (entries, _) = parse_new(&data, new_at)?;
                return Ok(LdCache::new(data, CacheFormat::OldWithNew, entries));
            }
        }
        let mut entries = Vec::with_capacity(nlibs as usize);
        for i in 0..nlibs {
            let at = OLD_HEADER + i as usize * OLD_ENTRY;
            // In bounds: `nlibs` entries fit, checked above.
            let flags = u32_at(&data, at, endian).unwrap_or(0).cast_signed();
            let key = u32_at(&data, at + 4, endian).unwrap_or(u32::MAX);
            let value = u32_at(&data, at + 8, endian).unwrap_or(u32::MAX);
            entries.push(RawEntry {
                flags,
                key: check_string(&data, strings, key, i, "key")?,
                value: check_string(&data, strings, value, i, "value")?,
                hwcap: 0,
            });
        }
        Ok(LdCache::new(data, CacheFormat::Old, entries))
    }

    fn new(data: Vec<u8>, format: CacheFormat, entries: Vec<RawEntry>) -> LdCache {
        let mut by_key: Vec<u32> = (0..entries.len() as u32).collect();
        by_key.sort_by(|a, b| {
            c_bytes(&data, entries[*a as usize].key).cmp(c_bytes(&data, entries[*b as usize].key))
        });
        LdCache {
            data,
            format,
            entries,
            by_key,
        }
    }

    /// The layout the file had.
    pub fn format(&self) -> CacheFormat {
        self.format
    }

    /// Number of entries (of every architecture).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache lists no library at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry for the library `name` (a `DT_NEEDED`/soname), in file order, whatever
    /// its architecture; filter with [`flags_match`]. Paths that are not UTF-8 are skipped
    /// (no image path can have them).
    pub fn lookup(&self, name: &str) -> Vec<CacheEntry> {
        let key = name.as_bytes();
        let start = self
            .by_key
            .partition_point(|i| c_bytes(&self.data, self.entries[*i as usize].key) < key);
        self.by_key[start..]
            .iter()
            .map(|i| self.entries[*i as usize])
            .take_while(|e| c_bytes(&self.data, e.key) == key)
            .filter_map(|e| {
                let path = std::str::from_utf8(c_bytes(&self.data, e.value)).ok()?;
                Some(CacheEntry {
                    flags: e.flags,
                    hwcap: e.hwcap,
                    path: path.to_owned(),
                })
            })
            .collect()
    }

    /// Every entry as `(name, entry)`, in file order (for inspection and tests).
    pub fn entries(&self) -> Vec<(String, CacheEntry)> {
        self.entries
            .iter()
            .map(|e| {
                (
                    String::from_utf8_lossy(c_bytes(&self.data, e.key)).into_owned(),
                    CacheEntry {
                        flags: e.flags,
                        hwcap: e.hwcap,
                        path: String::from_utf8_lossy(c_bytes(&self.data, e.value)).into_owned(),
                    },
                )
            })
            .collect()
    }
}

/// The new-format table whose header is at `base`: its entries (string offsets made
/// absolute) and its byte order.
fn parse_new(data: &[u8], base: usize) -> Result<(Vec<RawEntry>, Endian), CacheError> {
    let len = data.len();
    if base.checked_add(NEW_HEADER).is_none_or(|end| end > len) {
        return Err(CacheError::Truncated {
            what: "new-format header",
            offset: base,
            need: NEW_HEADER,
            len,
        });
    }
    let nlibs_at = base + MAGIC_NEW.len();
    let first = base + NEW_HEADER;
    let endian = match data[base + 28] & 3 {
        1 => return Err(CacheError::MarkedInvalid { offset: base }),
        2 => Endian::Little,
        3 => Endian::Big,
        _ => guess_endian(data, nlibs_at, first, NEW_ENTRY),
    };
    let nlibs = u32_at(data, nlibs_at, endian).unwrap_or(u32::MAX);
    if nlibs as usize > room(len, first, NEW_ENTRY) || nlibs > MAX_CACHE_ENTRIES {
        return Err(CacheError::TooManyEntries {
            count: nlibs,
            offset: base,
            len,
        });
    }
    let ext = u32_at(data, base + 32, endian).unwrap_or(0);
    check_extension(data, ext, endian)?;
    let mut entries = Vec::with_capacity(nlibs as usize);
    for i in 0..nlibs {
        let at = first + i as usize * NEW_ENTRY;
        // In bounds: `nlibs` entries fit, checked above.
        let flags = u32_at(data, at, endian).unwrap_or(0).cast_signed();
        let key = u32_at(data, at + 4, endian).unwrap_or(u32::MAX);
        let value = u32_at(data, at + 8, endian).unwrap_or(u32::MAX);
        let hwcap = u64_at(data, at + 16, endian).unwrap_or(0);
        // New-format string offsets count from the new header, wherever it is.
        entries.push(RawEntry {
            flags,
            key: check_string(data, base, key, i, "key")?,
            value: check_string(data, base, value, i, "value")?,
            hwcap,
        });
    }
    Ok((entries, endian))
}

/// ld.so rejects the whole cache when its extension directory is inconsistent
/// (`cache_extension_load`), so we do too.
fn check_extension(data: &[u8], offset: u32, endian: Endian) -> Result<(), CacheError> {
    if offset == 0 {
        return Ok(());
    }
    let bad = |problem| Err(CacheError::BadExtension { offset, problem });
    if !offset.is_multiple_of(4) {
        return bad("not a multiple of 4");
    }
    let at = offset as usize;
    let (Some(magic), Some(count)) = (u32_at(data, at, endian), u32_at(data, at + 4, endian))
    else {
        return bad("beyond the end of the file");
    };
    if magic != EXTENSION_MAGIC {
        return bad("wrong magic");
    }
    let sections = at + 8;
    if count as usize > room(data.len(), sections, 16) {
        return bad("more sections than fit in the file");
    }
    for i in 0..count as usize {
        let s = sections + i * 16;
        let off = u64::from(u32_at(data, s + 8, endian).unwrap_or(u32::MAX));
        let size = u64::from(u32_at(data, s + 12, endian).unwrap_or(u32::MAX));
        if off + size > data.len() as u64 {
            return bad("a section extends beyond the end of the file");
        }
    }
    Ok(())
}

/// Check that the string at `base + off` starts inside the file and ends (NUL) within
/// [`MAX_CACHE_STRING`] bytes; returns its absolute offset.
fn check_string(
    data: &[u8],
    base: usize,
    off: u32,
    index: u32,
    field: &'static str,
) -> Result<usize, CacheError> {
    let bad = |problem| CacheError::BadString {
        index,
        field,
        offset: base as u64 + u64::from(off),
        problem,
    };
    let at = base
        .checked_add(off as usize)
        .filter(|a| *a < data.len())
        .ok_or_else(|| bad("is beyond the end of the file"))?;
    let window = &data[at..data.len().min(at.saturating_add(MAX_CACHE_STRING + 1))];
    match window.iter().position(|&b| b == 0) {
        Some(_) => Ok(at),
        None if window.len() > MAX_CACHE_STRING => Err(bad("is longer than the 4096-byte limit")),
        None => Err(bad("runs to the end of the file without a NUL")),
    }
}

/// The NUL-terminated string at a checked offset, without its NUL.
fn c_bytes(data: &[u8], at: usize) -> &[u8] {
    let rest = data.get(at..).unwrap_or_default();
    let n = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    &rest[..n]
}

/// Whether a cache entry with `flags` is one ld.so would use for an object like `info`
/// (glibc's `_dl_cache_check_flags`: `FLAG_ELF`, or exactly the loader's
/// `_DL_CACHE_DEFAULT_ID`). Where the right ABI needs `e_flags` we do not read (ARM hard or
/// soft float, MIPS NaN encoding, RISC-V and LoongArch float ABI), every variant of the
/// machine is accepted; the candidate's own header is checked afterwards anyway.
pub fn flags_match(flags: i32, info: &ElfInfo) -> bool {
    if flags == FLAG_ELF {
        return true;
    }
    if flags & FLAG_TYPE_MASK != FLAG_ELF_LIBC6 {
        return false;
    }
    let abi = flags & FLAG_REQUIRED_MASK;
    let is64 = info.class == ElfClass::Elf64;
    let ok: &[i32] = match info.machine {
        EM_X86_64 if is64 => &[FLAG_X8664_LIB64],
        EM_X86_64 => &[FLAG_X8664_LIBX32],
        EM_AARCH64 => &[FLAG_AARCH64_LIB64],
        EM_ARM => &[FLAG_ARM_LIBHF, FLAG_ARM_LIBSF, 0],
        EM_PPC64 => &[FLAG_POWERPC_LIB64],
        EM_S390 if is64 => &[FLAG_S390_LIB64],
        EM_SPARCV9 => &[FLAG_SPARC_LIB64],
        EM_IA_64 => &[FLAG_IA64_LIB64],
        EM_RISCV => &[FLAG_RISCV_FLOAT_ABI_DOUBLE, FLAG_RISCV_FLOAT_ABI_SOFT],
        EM_LOONGARCH => &[FLAG_LARCH_FLOAT_ABI_DOUBLE, FLAG_LARCH_FLOAT_ABI_SOFT],
        EM_MIPS if is64 => &[FLAG_MIPS64_LIBN64, FLAG_MIPS64_LIBN64_NAN2008],
        EM_MIPS => &[
            0,
            FLAG_MIPS64_LIBN32,
            FLAG_MIPS_LIB32_NAN2008,
            FLAG_MIPS64_LIBN32_NAN2008,
        ],
        // i386, 32-bit PowerPC and s390, and the rest: glibc's generic default,
        // `FLAG_ELF_LIBC6` with no ABI bits.
        _ => &[0],
    };
    ok.contains(&abi)
}

#[cfg(all(test, feature = "test-util"))]
mod tests {
    use super::*;
    use crate::loader::EM_386;
    use crate::testutil::{FakeCacheEntry, FakeLdCache};

    fn info(class: ElfClass, machine: u16) -> ElfInfo {
        ElfInfo::bare(class, true, machine)
    }

    fn sample() -> FakeLdCache {
        FakeLdCache {
            entries: vec![
                FakeCacheEntry::new("libz.so.1", 0x0303, "/usr/lib/x86_64-linux-gnu/libz.so.1"),
                FakeCacheEntry::new("libc.so.6", 0x0003, "/usr/lib/i386-linux-gnu/libc.so.6"),
                FakeCacheEntry::new("libc.so.6", 0x0303, "/usr/lib/x86_64-linux-gnu/libc.so.6"),
                FakeCacheEntry {
                    hwcap: 1 << 62,
                    ..FakeCacheEntry::new(
                        "libc.so.6",
                        0x0303,
                        "/usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libc.so.6",
                    )
                },
            ],
            ..FakeLdCache::default()
        }
    }

    #[test]
    fn cache_formats_parse_alike() {
        for (bytes, format) in [
            (sample().build_new(), CacheFormat::New),
            (sample().build_old(), CacheFormat::Old),
            (sample().build_compat(), CacheFormat::OldWithNew),
            (
                FakeLdCache {
                    big_endian: true,
                    ..sample()
                }
                .build_new(),
                CacheFormat::New,
            ),
            (
                FakeLdCache {
                    big_endian: true,
                    ..sample()
                }
                .build_compat(),
                CacheFormat::OldWithNew,
            ),
            (
                FakeLdCache {
                    endian_flag: Some(0),
                    big_endian: true,
                    ..sample()
                }
                .build_new(),
                CacheFormat::New,
            ),
        ] {
            let c = LdCache::parse(bytes).unwrap();
            assert_eq!(c.format(), format);
            assert_eq!(c.len(), 4);
            let libc = c.lookup("libc.so.6");
            let paths: Vec<&str> = libc.iter().map(|e| e.path.as_str()).collect();
            assert_eq!(
                paths,
                [
                    "/usr/lib/i386-linux-gnu/libc.so.6",
                    "/usr/lib/x86_64-linux-gnu/libc.so.6",
                    "/usr/lib/x86_64-linux-gnu/glibc-hwcaps/x86-64-v3/libc.so.6",
                ],
                "{format:?}"
            );
            assert!(libc[2].is_hwcaps_variant(), "{format:?}: {:?}", libc[2]);
            assert!(!libc[1].is_hwcaps_variant());
            assert_eq!(c.lookup("libz.so.1").len(), 1);
            assert!(c.lookup("libz.so").is_empty());
            assert!(c.lookup("").is_empty());
            assert!(c.lookup("libzz.so.1").is_empty());
        }
    }

    #[test]
    fn cache_flags_select_the_requesters_abi() {
        let x64 = info(ElfClass::Elf64, EM_X86_64);
        let i386 = info(ElfClass::Elf32, EM_386);
        let x32 = info(ElfClass::Elf32, EM_X86_64);
        let arm64 = info(ElfClass::Elf64, EM_AARCH64);
        assert!(flags_match(0x0303, &x64));
        assert!(!flags_match(0x0003, &x64));
        assert!(!flags_match(0x0803, &x64));
        assert!(flags_match(0x0003, &i386));
        assert!(!flags_match(0x0303, &i386));
        assert!(flags_match(0x0803, &x32));
        assert!(flags_match(0x0a03, &arm64));
        assert!(!flags_match(0x0303, &arm64));
        // FLAG_ELF (type only) is accepted for everyone, libc5 entries for no one.
        assert!(flags_match(1, &x64) && flags_match(1, &arm64));
        assert!(!flags_match(0x0302, &x64));
        assert!(!flags_match(-1, &x64));
    }

    #[test]
    fn cache_garbage_and_truncation_give_errors_never_panics() {
        // Every prefix of every format, and every single-byte corruption of a small one.
        for bytes in [
            sample().build_new(),
            sample().build_old(),
            sample().build_compat(),
        ] {
            for n in 0..bytes.len() {
                let _ = LdCache::parse(bytes[..n].to_vec()).map(|c| c.lookup("libc.so.6"));
            }
            for i in 0..bytes.len() {
                for v in [0u8, 0x7f, 0xff] {
                    let mut b = bytes.clone();
                    b[i] = v;
                    if let Ok(c) = LdCache::parse(b) {
                        for (name, _) in c.entries() {
                            let _ = c.lookup(&name);
                        }
                    }
                }
            }
        }
        // Pseudo-random garbage after each magic.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        for magic in [MAGIC_NEW, MAGIC_OLD] {
            for round in 0..2000 {
                let mut b = magic.to_vec();
                for _ in 0..(round % 300) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b.push(x as u8);
                }
                if let Ok(c) = LdCache::parse(b) {
                    let _ = c.lookup("libc.so.6");
                }
            }
        }
    }

    #[test]
    fn cache_hostile_headers_are_named() {
        let e = LdCache::parse(b"hello world, not a cache at all".to_vec()).unwrap_err();
        assert_eq!(e, CacheError::BadMagic);

        let e = LdCache::parse(MAGIC_NEW.to_vec()).unwrap_err();
        assert!(matches!(e, CacheError::Truncated { need: 48, .. }), "{e}");

        // A count of 2^32-1 entries in a small file: refused before any allocation.
        let mut b = sample().build_new();
        b[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = LdCache::parse(b).unwrap_err();
        assert!(matches!(e, CacheError::TooManyEntries { .. }), "{e}");
        assert!(e.to_string().contains("4294967295 entries"), "{e}");

        let mut b = sample().build_old();
        b[12..16].copy_from_slice(&0x00ff_ffff_u32.to_le_bytes());
        let e = LdCache::parse(b).unwrap_err();
        assert!(matches!(e, CacheError::TooManyEntries { .. }), "{e}");

        let b = FakeLdCache {
            endian_flag: Some(1),
            ..sample()
        }
        .build_new();
        assert_eq!(
            LdCache::parse(b).unwrap_err(),
            CacheError::MarkedInvalid { offset: 0 }
        );

        // A key offset far beyond the file.
        let mut b = sample().build_new();
        b[48 + 4..48 + 8].copy_from_slice(&0x7fff_ffff_u32.to_le_bytes());
        let e = LdCache::parse(b).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("entry 0: key string at offset 0x7fffffff is beyond the end"),
            "{e}"
        );

        // A path without its NUL at the very end of the file.
        let mut b = sample().build_new();
        let last = b.len() - 1;
        b[last] = b'x';
        let e = LdCache::parse(b).unwrap_err();
        assert!(e.to_string().contains("without a NUL"), "{e}");

        // An extension directory pointing outside the file.
        let mut b = sample().build_new();
        b[32..36].copy_from_slice(&0x1000_0000_u32.to_le_bytes());
        let e = LdCache::parse(b).unwrap_err();
        assert!(matches!(e, CacheError::BadExtension { .. }), "{e}");
    }

    #[test]
    fn cache_extension_directory_is_checked_like_ld_so() {
        let ok = FakeLdCache {
            extension: true,
            ..sample()
        }
        .build_new();
        assert_eq!(LdCache::parse(ok.clone()).unwrap().len(), 4);
        let ext = u32::from_le_bytes(ok[32..36].try_into().unwrap()) as usize;
        // Wrong magic.
        let mut b = ok.clone();
        b[ext] ^= 0xff;
        assert!(LdCache::parse(b).is_err());
        // A section reaching past the end.
        let mut b = ok.clone();
        b[ext + 8 + 12..ext + 8 + 16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(LdCache::parse(b).is_err());
        // A count that cannot fit.
        let mut b = ok;
        b[ext + 4..ext + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(LdCache::parse(b).is_err());
    }

    #[test]
    fn cache_long_strings_are_bounded() {
        let long = format!("/{}", "a".repeat(MAX_CACHE_STRING + 10));
        let c = FakeLdCache {
            entries: vec![FakeCacheEntry::new("libx.so", 0x0303, &long)],
            ..FakeLdCache::default()
        };
        let e = LdCache::parse(c.build_new()).unwrap_err();
        assert!(e.to_string().contains("4096-byte limit"), "{e}");
    }

    /// The host's own cache, written by its real ldconfig, read like `ldconfig -p` does.
    #[test]
    fn cache_host_file_matches_ldconfig_p() {
        // Loud skips, failures in CI (whose glibc hosts have both).
        let Ok(bytes) = std::fs::read(LD_SO_CACHE) else {
            minify_fixtures::skip(&format!("the host has no {LD_SO_CACHE}"));
            return;
        };
        let Ok(out) = std::process::Command::new("ldconfig").arg("-p").output() else {
            minify_fixtures::skip("no ldconfig on the host");
            return;
        };
        assert!(out.status.success(), "ldconfig -p: {}", out.status);
        let c = LdCache::parse(bytes).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut n = 0;
        for line in text.lines().skip(1) {
            let Some((lhs, path)) = line.split_once(" => ") else {
                continue;
            };
            let name = lhs.trim().split(' ').next().unwrap();
            assert!(
                c.lookup(name).iter().any(|e| e.path == path.trim()),
                "{name} => {path} missing from {:?}",
                c.lookup(name)
            );
            n += 1;
        }
        assert!(n > 0 && n <= c.len(), "{n} lines, {} entries", c.len());
    }
}
