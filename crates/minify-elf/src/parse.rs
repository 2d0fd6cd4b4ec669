//! Reading the few ELF fields the dynamic loader uses: class, machine, `PT_INTERP`,
//! `DT_NEEDED`, `DT_RPATH`, `DT_RUNPATH`, `DT_SONAME`, `DF_1_NODEFLIB`.
//!
//! Only the ELF header, the program headers and the `PT_DYNAMIC` segment are parsed (goblin's
//! low-level readers), never section headers, symbol or relocation tables: the loader does not
//! need them, and every table parsed is one more place where a hostile count or offset could
//! make us allocate or index wildly. Every offset and size taken from the file is checked
//! before use, so a truncated or lying file gives a [`ParseError`], never a panic.

use goblin::container::{Container, Ctx};
use goblin::elf::Elf;
use goblin::elf::dynamic::{
    DF_1_NODEFLIB, DT_FLAGS_1, DT_NEEDED, DT_NULL, DT_RPATH, DT_RUNPATH, DT_SONAME, DT_STRSZ,
    DT_STRTAB, Dynamic,
};
use goblin::elf::header::{EI_CLASS, EI_OSABI, ELFCLASS32, ELFCLASS64, ELFMAG, SELFMAG};
use goblin::elf::program_header::{PT_DYNAMIC, PT_INTERP, PT_LOAD, ProgramHeader};

/// Most `PT_DYNAMIC` entries read from one object. Real objects have well under 100; a file
/// that claims millions is hostile and would otherwise make us allocate for all of them.
pub const MAX_DYNAMIC_ENTRIES: usize = 1 << 16;

/// Most program headers accepted (real binaries have about 15).
pub const MAX_PROGRAM_HEADERS: usize = 4096;

/// Longest string (path, library name) read from a string table or `PT_INTERP`.
pub const MAX_STRING: usize = 4096;

/// 32- or 64-bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ElfClass {
    Elf32,
    Elf64,
}

/// What the dynamic loader needs to know about one ELF object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfInfo {
    /// 32- or 64-bit: a library must match its requester's class.
    pub class: ElfClass,
    /// Byte order (`true`: little-endian).
    pub little_endian: bool,
    /// `e_machine` (`EM_X86_64` = 62, `EM_AARCH64` = 183, `EM_386` = 3, ...).
    pub machine: u16,
    /// `e_ident[EI_OSABI]`.
    pub osabi: u8,
    /// `e_type` (`ET_EXEC` = 2, `ET_DYN` = 3, ...).
    pub elf_type: u16,
    /// `PT_INTERP`: the program interpreter (dynamic loader) path, if any.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` names in file order.
    pub needed: Vec<String>,
    /// `DT_RPATH`, split on `:`, unexpanded (`$ORIGIN` still in it).
    pub rpath: Vec<String>,
    /// `DT_RUNPATH`, split on `:`, unexpanded.
    pub runpath: Vec<String>,
    /// `DT_SONAME`.
    pub soname: Option<String>,
    /// `DF_1_NODEFLIB`: the default directories are not searched for this object's needs.
    pub nodeflib: bool,
    /// Whether the object has a `PT_DYNAMIC` segment at all (static binaries do not).
    pub dynamic: bool,
}

/// Why bytes are not a usable ELF object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The bytes do not start with `\x7fELF`.
    #[error("not an ELF file (no \\x7fELF magic)")]
    NotElf,
    /// `e_ident[EI_CLASS]` is neither 32- nor 64-bit.
    #[error("unknown ELF class {0}")]
    BadClass(u8),
    /// A structure lies (partly) beyond the end of the file.
    #[error(
        "truncated: {what} at offset {offset:#x} size {size:#x} is beyond the file's {len} bytes"
    )]
    Truncated {
        what: &'static str,
        offset: u64,
        size: u64,
        len: usize,
    },
    /// A count is beyond what any real object has.
    #[error("absurd {what} count {count} (limit {limit})")]
    TooMany {
        what: &'static str,
        count: u64,
        limit: usize,
    },
    /// goblin rejected a structure.
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
}

/// Whether `bytes` start with the ELF magic (4 bytes are enough).
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.len() >= SELFMAG && &bytes[..SELFMAG] == ELFMAG
}

impl ElfInfo {
    /// A dynamically linked shared object (`ET_DYN`) of this class, byte order and machine
    /// that needs nothing: what the closure asks the resolver on behalf of when it has no
    /// file to parse (the default sets' NSS libraries), and a start for tests.
    pub fn bare(class: ElfClass, little_endian: bool, machine: u16) -> ElfInfo {
        ElfInfo {
            class,
            little_endian,
            machine,
            osabi: 0,
            elf_type: 3,
            interpreter: None,
            needed: Vec::new(),
            rpath: Vec::new(),
            runpath: Vec::new(),
            soname: None,
            nodeflib: false,
            dynamic: true,
        }
    }

    /// Parse the loader-relevant parts of an ELF object held entirely in `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<ElfInfo, ParseError> {
        if !is_elf(bytes) {
            return Err(ParseError::NotElf);
        }
        let class = match bytes.get(EI_CLASS) {
            Some(&ELFCLASS32) => ElfClass::Elf32,
            Some(&ELFCLASS64) => ElfClass::Elf64,
            Some(&c) => return Err(ParseError::BadClass(c)),
            None => return Err(truncated("ELF identification", 0, 16, bytes.len())),
        };
        let header = Elf::parse_header(bytes).map_err(|e| {
            if bytes.len() < 64 {
                truncated("ELF header", 0, 64, bytes.len())
            } else {
                malformed("ELF header", &e)
            }
        })?;
        let container = match class {
            ElfClass::Elf32 => Container::Little,
            ElfClass::Elf64 => Container::Big,
        };
        let endian = header
            .endianness()
            .map_err(|e| malformed("ELF header", &e))?;
        let ctx = Ctx::new(container, endian);

        let phnum = usize::from(header.e_phnum);
        if phnum > MAX_PROGRAM_HEADERS {
            return Err(ParseError::TooMany {
                what: "program header",
                count: phnum as u64,
                limit: MAX_PROGRAM_HEADERS,
            });
        }
        let phentsize = ProgramHeader::size(ctx);
        let phoff = header.e_phoff;
        let ph_bytes = (phnum * phentsize) as u64;
        if phoff
            .checked_add(ph_bytes)
            .is_none_or(|end| end > bytes.len() as u64)
        {
            return Err(truncated("program headers", phoff, ph_bytes, bytes.len()));
        }
        let mut phdrs = if phnum == 0 {
            Vec::new()
        } else {
            ProgramHeader::parse(bytes, phoff as usize, phnum, ctx)
                .map_err(|e| malformed("program headers", &e))?
        };

        let mut info = ElfInfo {
            osabi: header.e_ident[EI_OSABI],
            elf_type: header.e_type,
            dynamic: false,
            ..ElfInfo::bare(class, endian.is_little(), header.e_machine)
        };

        if let Some(ph) = phdrs.iter().find(|p| p.p_type == PT_INTERP) {
            let raw = slice(bytes, ph.p_offset, ph.p_filesz, "PT_INTERP")?;
            let s = c_str(raw, "PT_INTERP")?;
            if !s.is_empty() {
                info.interpreter = Some(s);
            }
        }

        // Bound the dynamic segment before goblin sizes a Vec from it.
        let dyn_size: u64 = match class {
            ElfClass::Elf32 => 8,
            ElfClass::Elf64 => 16,
        };
        for ph in &mut phdrs {
            if ph.p_type == PT_DYNAMIC {
                let cap = MAX_DYNAMIC_ENTRIES as u64 * dyn_size;
                ph.p_filesz = ph.p_filesz.min(cap);
                slice(bytes, ph.p_offset, ph.p_filesz, "PT_DYNAMIC")?;
            }
        }
        let Some(dynamic) =
            Dynamic::parse(bytes, &phdrs, ctx).map_err(|e| malformed("PT_DYNAMIC", &e))?
        else {
            return Ok(info);
        };
        info.dynamic = true;

        let mut strtab_addr = None;
        let mut strsz = None;
        for d in &dynamic.dyns {
            match d.d_tag {
                DT_NULL => break,
                DT_STRTAB => strtab_addr = Some(d.d_val),
                DT_STRSZ => strsz = Some(d.d_val),
                DT_FLAGS_1 => info.nodeflib = d.d_val & DF_1_NODEFLIB != 0,
                _ => {}
            }
        }
        let wants_strings = dynamic
            .dyns
            .iter()
            .any(|d| matches!(d.d_tag, DT_NEEDED | DT_RPATH | DT_RUNPATH | DT_SONAME));
        if !wants_strings {
            return Ok(info);
        }
        let Some(addr) = strtab_addr else {
            return Err(malformed_str("PT_DYNAMIC", "DT_NEEDED without DT_STRTAB"));
        };
        let Some(str_off) = vm_to_offset(&phdrs, addr) else {
            return Err(malformed_str(
                "DT_STRTAB",
                &format!("address {addr:#x} is in no PT_LOAD segment"),
            ));
        };
        // The table runs to DT_STRSZ, clamped to the file: a lying size only shortens it.
        let len = bytes.len() as u64;
        if str_off >= len {
            return Err(truncated(
                "DT_STRTAB",
                str_off,
                strsz.unwrap_or(0),
                bytes.len(),
            ));
        }
        let end = strsz
            .and_then(|s| str_off.checked_add(s))
            .map_or(len, |e| e.min(len));
        let strtab = &bytes[str_off as usize..end as usize];

        for d in &dynamic.dyns {
            let get = || string_at(strtab, d.d_val);
            match d.d_tag {
                DT_NULL => break,
                DT_NEEDED => info.needed.push(get()?),
                DT_RPATH => info.rpath.extend(split_path(&get()?)),
                DT_RUNPATH => info.runpath.extend(split_path(&get()?)),
                DT_SONAME => info.soname = Some(get()?),
                _ => {}
            }
        }
        Ok(info)
    }
}

/// `a:b::c` -> `a`, `b`, `c` (empty entries mean the current directory to ld.so, which in an
/// image is meaningless and never what the author wanted, so they are dropped).
fn split_path(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split(':').filter(|p| !p.is_empty()).map(str::to_owned)
}

fn vm_to_offset(phdrs: &[ProgramHeader], addr: u64) -> Option<u64> {
    phdrs.iter().filter(|p| p.p_type == PT_LOAD).find_map(|p| {
        let delta = addr.checked_sub(p.p_vaddr)?;
        (delta < p.p_filesz).then(|| p.p_offset.checked_add(delta))?
    })
}

fn slice<'a>(
    bytes: &'a [u8],
    off: u64,
    size: u64,
    what: &'static str,
) -> Result<&'a [u8], ParseError> {
    let end = off.checked_add(size);
    match end {
        Some(end) if end <= bytes.len() as u64 => Ok(&bytes[off as usize..end as usize]),
        _ => Err(truncated(what, off, size, bytes.len())),
    }
}

fn string_at(strtab: &[u8], off: u64) -> Result<String, ParseError> {
    let Some(rest) = usize::try_from(off).ok().and_then(|o| strtab.get(o..)) else {
        return Err(truncated("dynamic string", off, 1, strtab.len()));
    };
    c_str(rest, "dynamic string")
}

fn c_str(raw: &[u8], what: &'static str) -> Result<String, ParseError> {
    let n = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    if n > MAX_STRING {
        return Err(malformed_str(
            what,
            &format!("string longer than {MAX_STRING} bytes"),
        ));
    }
    Ok(String::from_utf8_lossy(&raw[..n]).into_owned())
}

fn truncated(what: &'static str, offset: u64, size: u64, len: usize) -> ParseError {
    ParseError::Truncated {
        what,
        offset,
        size,
        len,
    }
}

fn malformed(what: &'static str, e: &goblin::error::Error) -> ParseError {
    malformed_str(what, &e.to_string())
}

fn malformed_str(what: &'static str, reason: &str) -> ParseError {
    ParseError::Malformed {
        what,
        reason: reason.to_owned(),
    }
}
