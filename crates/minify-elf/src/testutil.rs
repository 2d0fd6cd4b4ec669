//! Test helpers (feature `test-util`): hand-made ELF objects and copying real host files into
//! an in-memory [`MemFs`]. Only tests use this; the product never reads the host.

use std::path::Path;

use minify_model::ImagePath;
use minify_model::rootfs::memfs::MemFs;

/// A synthetic ELF object: just enough structure for the loader fields.
#[derive(Clone, Debug, Default)]
pub struct FakeElf {
    /// 64-bit when true, else 32-bit.
    pub elf32: bool,
    /// `e_machine`; 0 means x86-64 (or i386 for 32-bit).
    pub machine: u16,
    pub interp: Option<String>,
    pub needed: Vec<String>,
    pub rpath: Option<String>,
    pub runpath: Option<String>,
    pub soname: Option<String>,
    /// Set `DF_1_NODEFLIB` in `DT_FLAGS_1`.
    pub nodeflib: bool,
}

impl FakeElf {
    /// A 64-bit x86-64 shared object needing `needed`.
    pub fn lib(needed: &[&str]) -> Self {
        FakeElf {
            needed: needed.iter().map(|s| (*s).to_owned()).collect(),
            ..FakeElf::default()
        }
    }

    /// Serialise: ELF header, program headers (PT_LOAD over the whole file at vaddr 0,
    /// PT_DYNAMIC, PT_INTERP), the dynamic array and the string table.
    pub fn build(&self) -> Vec<u8> {
        let is64 = !self.elf32;
        let machine = match (self.machine, is64) {
            (0, true) => 62,
            (0, false) => 3,
            (m, _) => m,
        };
        let (ehsize, phentsize, dynent) = if is64 {
            (64usize, 56usize, 16usize)
        } else {
            (52, 32, 8)
        };
        // String table.
        let mut strtab = vec![0u8];
        let mut add_str = |s: &str| {
            let off = strtab.len();
            strtab.extend_from_slice(s.as_bytes());
            strtab.push(0);
            off as u64
        };
        let mut dyns: Vec<(u64, u64)> = Vec::new();
        for n in &self.needed {
            dyns.push((1, add_str(n)));
        }
        if let Some(s) = &self.soname {
            dyns.push((14, add_str(s)));
        }
        if let Some(s) = &self.rpath {
            dyns.push((15, add_str(s)));
        }
        if let Some(s) = &self.runpath {
            dyns.push((29, add_str(s)));
        }
        if self.nodeflib {
            dyns.push((0x6fff_fffb, 0x800)); // DT_FLAGS_1 = DF_1_NODEFLIB
        }
        let interp = self.interp.as_ref().map(|i| {
            let mut v = i.as_bytes().to_vec();
            v.push(0);
            v
        });
        let phnum = 2 + usize::from(interp.is_some());
        let ph_off = ehsize;
        let interp_off = ph_off + phnum * phentsize;
        let interp_len = interp.as_ref().map_or(0, Vec::len);
        let str_off = interp_off + interp_len;
        let dyn_off = (str_off + strtab.len()).next_multiple_of(8);
        let ndyn = dyns.len() + 3; // + STRTAB, STRSZ, NULL
        let total = dyn_off + ndyn * dynent;
        dyns.push((5, str_off as u64)); // DT_STRTAB (vaddr == offset)
        dyns.push((10, strtab.len() as u64)); // DT_STRSZ
        dyns.push((0, 0));

        let mut out = Vec::with_capacity(total);
        let w16 = |o: &mut Vec<u8>, v: u16| o.extend_from_slice(&v.to_le_bytes());
        let w32 = |o: &mut Vec<u8>, v: u32| o.extend_from_slice(&v.to_le_bytes());
        let wad = |o: &mut Vec<u8>, v: u64| {
            if is64 {
                o.extend_from_slice(&v.to_le_bytes());
            } else {
                o.extend_from_slice(&(v as u32).to_le_bytes());
            }
        };
        out.extend_from_slice(b"\x7fELF");
        out.push(if is64 { 2 } else { 1 });
        out.extend_from_slice(&[1, 1, 0]);
        out.extend_from_slice(&[0; 8]);
        w16(&mut out, 3); // ET_DYN
        w16(&mut out, machine);
        w32(&mut out, 1);
        wad(&mut out, 0); // entry
        wad(&mut out, ph_off as u64);
        wad(&mut out, 0); // shoff
        w32(&mut out, 0);
        w16(&mut out, ehsize as u16);
        w16(&mut out, phentsize as u16);
        w16(&mut out, phnum as u16);
        w16(&mut out, 0);
        w16(&mut out, 0);
        w16(&mut out, 0);
        assert_eq!(out.len(), ehsize);
        let phdr = |o: &mut Vec<u8>, ty: u32, off: u64, size: u64| {
            if is64 {
                w32(o, ty);
                w32(o, 4); // flags
                wad(o, off);
                wad(o, off); // vaddr
                wad(o, off); // paddr
                wad(o, size);
                wad(o, size);
                wad(o, 8);
            } else {
                w32(o, ty);
                wad(o, off);
                wad(o, off);
                wad(o, off);
                wad(o, size);
                wad(o, size);
                w32(o, 4);
                wad(o, 8);
            }
        };
        phdr(&mut out, 1, 0, total as u64); // PT_LOAD
        phdr(&mut out, 2, dyn_off as u64, (ndyn * dynent) as u64); // PT_DYNAMIC
        if interp.is_some() {
            phdr(&mut out, 3, interp_off as u64, interp_len as u64); // PT_INTERP
        }
        if let Some(i) = &interp {
            out.extend_from_slice(i);
        }
        out.extend_from_slice(&strtab);
        out.resize(dyn_off, 0);
        for (t, v) in dyns {
            wad(&mut out, t);
            wad(&mut out, v);
        }
        assert_eq!(out.len(), total);
        out
    }
}

/// Add `path`'s parent directories to `fs` (as directories).
pub fn parents(fs: &mut MemFs, path: &str) {
    for a in ImagePath::new(path).ancestors() {
        if !a.is_root() && !fs.entries.contains_key(&a) {
            fs.dir(a.as_str());
        }
    }
}

/// Add an executable file, with its parents.
pub fn exe(fs: &mut MemFs, path: &str, content: &[u8]) {
    parents(fs, path);
    fs.file(path, content);
    if let Some(e) = fs.entries.get_mut(&ImagePath::new(path)) {
        e.mode = 0o755;
    }
}

/// Copy one host path into `fs` exactly as the host has it: every symlink met (in any
/// component) becomes a symlink entry and is followed, directories and files keep their mode.
pub fn copy_host(fs: &mut MemFs, path: &str) {
    copy_host_depth(fs, path, 0);
}

fn copy_host_depth(fs: &mut MemFs, path: &str, depth: usize) {
    use std::os::unix::fs::MetadataExt;
    assert!(depth < 40, "symlink loop on the host at {path}");
    let comps: Vec<String> = ImagePath::new(path)
        .components()
        .map(str::to_owned)
        .collect();
    let mut cur = ImagePath::root();
    for (i, c) in comps.iter().enumerate() {
        let next = cur.join(c);
        let host = Path::new(next.as_str());
        let Ok(md) = std::fs::symlink_metadata(host) else {
            return;
        };
        if md.file_type().is_symlink() {
            let t = std::fs::read_link(host).unwrap();
            let t = t.to_string_lossy().into_owned();
            fs.symlink(next.as_str(), &t);
            let base = if t.starts_with('/') {
                ImagePath::new(&t)
            } else {
                cur.join(&t)
            };
            let rest = comps[i + 1..].join("/");
            copy_host_depth(fs, base.join(&rest).as_str(), depth + 1);
            return;
        }
        if md.is_dir() {
            if !fs.entries.contains_key(&next) {
                fs.dir(next.as_str());
            }
        } else if md.is_file() {
            let data = std::fs::read(host).unwrap();
            fs.file(next.as_str(), &data);
        } else {
            return;
        }
        if let Some(e) = fs.entries.get_mut(&next) {
            e.mode = md.mode() & 0o7777;
        }
        cur = next;
    }
}

/// The libraries `ldd` (the host's real loader) reports for a host program, as host paths.
pub fn host_ldd(program: &str) -> Vec<String> {
    let out = std::process::Command::new("ldd")
        .arg(program)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = if let Some((_, rhs)) = line.split_once("=>") {
            rhs.split_whitespace().next().unwrap_or("")
        } else {
            line.split_whitespace().next().unwrap_or("")
        };
        if path.starts_with('/') {
            v.push(path.to_owned());
        }
    }
    v
}

/// Copy a host program, everything `ldd` says it loads and the loader configuration.
pub fn copy_host_program(fs: &mut MemFs, program: &str) {
    copy_host(fs, program);
    for l in host_ldd(program) {
        copy_host(fs, &l);
    }
    copy_host(fs, "/etc/ld.so.conf");
    if let Ok(rd) = std::fs::read_dir("/etc/ld.so.conf.d") {
        for e in rd.flatten() {
            copy_host(fs, &e.path().to_string_lossy());
        }
    }
}

/// One entry of a [`FakeLdCache`].
#[derive(Clone, Debug, Default)]
pub struct FakeCacheEntry {
    pub name: String,
    /// Cache flags: `0x0303` is x86-64 libc6, `0x0003` i386, `0x0a03` aarch64.
    pub flags: i32,
    pub path: String,
    /// `1 << 62` marks a `glibc-hwcaps` entry.
    pub hwcap: u64,
}

impl FakeCacheEntry {
    pub fn new(name: &str, flags: i32, path: &str) -> Self {
        FakeCacheEntry {
            name: name.to_owned(),
            flags,
            path: path.to_owned(),
            hwcap: 0,
        }
    }
}

/// A synthetic `/etc/ld.so.cache` in any of glibc's three layouts, entries in the order given.
#[derive(Clone, Debug, Default)]
pub struct FakeLdCache {
    pub entries: Vec<FakeCacheEntry>,
    /// Write numbers big-endian (the flag in the new header says so unless `endian_flag`).
    pub big_endian: bool,
    /// The new header's endianness flag; `None`: 2 (little) or 3 (big) as written.
    pub endian_flag: Option<u8>,
    /// Add an extension directory with one generator section (glibc 2.33+ writes one).
    pub extension: bool,
}

impl FakeLdCache {
    /// `glibc-ld.so.cache1.1` alone, as ldconfig writes by default since glibc 2.32.
    pub fn build_new(&self) -> Vec<u8> {
        self.build(false, true)
    }

    /// `ld.so-1.7.0` alone.
    pub fn build_old(&self) -> Vec<u8> {
        self.build(true, false)
    }

    /// `ld.so-1.7.0` with the new table after its entries (`ldconfig -c compat`).
    pub fn build_compat(&self) -> Vec<u8> {
        self.build(true, true)
    }

    fn w32(&self, out: &mut Vec<u8>, v: u32) {
        out.extend_from_slice(&if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }

    fn build(&self, old: bool, new: bool) -> Vec<u8> {
        let n = self.entries.len();
        let old_len = if old { 16 + 12 * n } else { 0 };
        let new_at = if old && new {
            old_len.next_multiple_of(8)
        } else {
            old_len
        };
        let strings_at = new_at + if new { 48 + 24 * n } else { 0 };
        let mut strings = Vec::new();
        let mut offs = Vec::new();
        for e in &self.entries {
            let k = strings.len();
            strings.extend_from_slice(e.name.as_bytes());
            strings.push(0);
            let v = strings.len();
            strings.extend_from_slice(e.path.as_bytes());
            strings.push(0);
            offs.push((k, v));
        }
        let mut out = Vec::new();
        if old {
            out.extend_from_slice(b"ld.so-1.7.0\0");
            self.w32(&mut out, n as u32);
            // Old-format string offsets count from the end of the old entries.
            let rel = strings_at - old_len;
            for (e, (k, v)) in self.entries.iter().zip(&offs) {
                self.w32(&mut out, e.flags as u32);
                self.w32(&mut out, (rel + k) as u32);
                self.w32(&mut out, (rel + v) as u32);
            }
            out.resize(new_at, 0);
        }
        if new {
            out.extend_from_slice(b"glibc-ld.so.cache1.1");
            self.w32(&mut out, n as u32);
            self.w32(&mut out, strings.len() as u32);
            out.push(
                self.endian_flag
                    .unwrap_or(if self.big_endian { 3 } else { 2 }),
            );
            out.extend_from_slice(&[0; 3]);
            for _ in 0..4 {
                self.w32(&mut out, 0); // extension_offset, unused[3]
            }
            // New-format string offsets count from the new header.
            let rel = strings_at - new_at;
            for (e, (k, v)) in self.entries.iter().zip(&offs) {
                self.w32(&mut out, e.flags as u32);
                self.w32(&mut out, (rel + k) as u32);
                self.w32(&mut out, (rel + v) as u32);
                self.w32(&mut out, 0);
                out.extend_from_slice(&if self.big_endian {
                    e.hwcap.to_be_bytes()
                } else {
                    e.hwcap.to_le_bytes()
                });
            }
        }
        assert_eq!(out.len(), strings_at);
        out.extend_from_slice(&strings);
        if new && self.extension {
            out.resize(out.len().next_multiple_of(4), 0);
            let ext = out.len() as u32;
            let mut field = Vec::new();
            self.w32(&mut field, ext);
            out[new_at + 32..new_at + 36].copy_from_slice(&field);
            self.w32(&mut out, 0xeaa4_2174);
            self.w32(&mut out, 1);
            let data = b"minify test";
            for v in [0, 0, ext + 8 + 16, data.len() as u32] {
                self.w32(&mut out, v); // tag generator, flags, offset, size
            }
            out.extend_from_slice(data);
        }
        out
    }
}
