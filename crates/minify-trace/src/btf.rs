//! A small reader for the kernel's BTF (`/sys/kernel/btf/vmlinux`): just enough to find the
//! byte offset of a struct member, through anonymous unions/structs and typedefs.
//!
//! Why not aya's BTF: it is built for relocating programs and keeps its type table private;
//! we only need "offset of `dentry.d_name.name`", and getting that from the running kernel
//! (not from headers of some other kernel) is the whole point: Rust eBPF has no CO-RE.

use std::path::{Path, PathBuf};

use crate::TraceError;

/// Where the running kernel exposes its BTF.
pub(crate) const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const KIND_PTR: u32 = 2;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_TYPE_TAG: u32 = 18;

/// One type; members only for structs and unions.
struct Type {
    kind: u32,
    name_off: u32,
    /// Referenced type for typedef/const/volatile/...
    referenced: u32,
    /// `(name_off, type, bit offset)`.
    members: Vec<(u32, u32, u32)>,
}

/// Parsed BTF: the type table and string section.
pub(crate) struct Btf {
    path: PathBuf,
    /// Index = type id (id 0 is `void`).
    types: Vec<Type>,
    strings: Vec<u8>,
}

impl Btf {
    /// Read and parse the running kernel's BTF.
    pub(crate) fn from_sys() -> Result<Btf, TraceError> {
        let path = Path::new(VMLINUX);
        if !path.exists() {
            return Err(TraceError::NoBtf { path: path.into() });
        }
        let data = fs_err::read(path).map_err(|e| TraceError::from_io("reading kernel BTF", e))?;
        Btf::parse(path, &data)
    }

    pub(crate) fn parse(path: &Path, data: &[u8]) -> Result<Btf, TraceError> {
        let err = |detail: String| TraceError::Btf {
            path: path.into(),
            detail,
        };
        let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let u32_at = |o: usize| {
            data.get(o..o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        if u16_at(0) != Some(0xeb9f) {
            return Err(err("bad magic (not little-endian BTF)".into()));
        }
        let hdr = |i: usize| u32_at(4 + 4 * i).ok_or_else(|| err("truncated header".into()));
        let (hdr_len, type_off, type_len, str_off, str_len) = (
            hdr(0)? as usize,
            hdr(1)? as usize,
            hdr(2)? as usize,
            hdr(3)? as usize,
            hdr(4)? as usize,
        );
        let types_start = hdr_len + type_off;
        let types_end = types_start + type_len;
        let str_start = hdr_len + str_off;
        let strings = data
            .get(str_start..str_start + str_len)
            .ok_or_else(|| err(format!("string section {str_start}+{str_len} past end")))?
            .to_vec();
        if types_end > data.len() {
            return Err(err(format!(
                "type section {types_start}+{type_len} past end"
            )));
        }
        let mut types = vec![Type {
            kind: 0,
            name_off: 0,
            referenced: 0,
            members: Vec::new(),
        }];
        let mut o = types_start;
        while o < types_end {
            let at = |i: usize| u32_at(o + i).ok_or_else(|| err(format!("truncated type at {o}")));
            let name_off = at(0)?;
            let info = at(4)?;
            let size_or_type = at(8)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            o += 12;
            let mut members = Vec::new();
            let extra = match kind {
                1 | 14 | 17 => 4, // int, var, decl_tag
                3 => 12,          // array
                KIND_STRUCT | KIND_UNION => {
                    for m in 0..vlen {
                        let base = o + 12 * m;
                        let mu = |i: usize| {
                            u32_at(base + i)
                                .ok_or_else(|| err(format!("truncated member at {base}")))
                        };
                        let off = mu(8)?;
                        let bit = if kind_flag { off & 0x00ff_ffff } else { off };
                        members.push((mu(0)?, mu(4)?, bit));
                    }
                    12 * vlen
                }
                6 | 13 => 8 * vlen,   // enum, func_proto
                15 | 19 => 12 * vlen, // datasec, enum64
                2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
                k => return Err(err(format!("unknown BTF kind {k} at offset {}", o - 12))),
            };
            o += extra;
            types.push(Type {
                kind,
                name_off,
                referenced: size_or_type,
                members,
            });
        }
        Ok(Btf {
            path: path.into(),
            types,
            strings,
        })
    }

    fn name(&self, off: u32) -> &[u8] {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())]
    }

    fn err(&self, detail: String) -> TraceError {
        TraceError::Btf {
            path: self.path.clone(),
            detail,
        }
    }

    /// Id of the (complete) struct named `name`.
    fn struct_id(&self, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| {
                t.kind == KIND_STRUCT
                    && !t.members.is_empty()
                    && self.name(t.name_off) == name.as_bytes()
            })
            .map(|i| i as u32)
    }

    /// Follow typedef/const/volatile/restrict/type_tag to the underlying type.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.referenced;
                }
                _ => break,
            }
        }
        id
    }

    /// `(bit offset, member type)` of `name` in struct/union `id`, looking inside anonymous
    /// members the way C does.
    fn member(&self, id: u32, name: &str) -> Option<(u32, u32)> {
        let t = self.types.get(id as usize)?;
        for &(name_off, ty, bit) in &t.members {
            if name_off == 0 {
                let inner = self.resolve(ty);
                if matches!(
                    self.types.get(inner as usize).map(|t| t.kind),
                    Some(KIND_STRUCT | KIND_UNION)
                ) && let Some((b, mt)) = self.member(inner, name)
                {
                    return Some((bit + b, mt));
                }
            } else if self.name(name_off) == name.as_bytes() {
                return Some((bit, ty));
            }
        }
        None
    }

    /// Byte offset of `member_path` (e.g. `d_name.name`) inside `struct struct_name`.
    pub(crate) fn offset(&self, struct_name: &str, member_path: &str) -> Result<u32, TraceError> {
        let mut id = self
            .struct_id(struct_name)
            .ok_or_else(|| self.err(format!("no struct {struct_name}")))?;
        let mut bits = 0;
        for part in member_path.split('.') {
            let (b, ty) = self.member(id, part).ok_or_else(|| {
                self.err(format!("struct {struct_name} has no member {member_path}"))
            })?;
            bits += b;
            id = self.resolve(ty);
        }
        if bits % 8 != 0 {
            return Err(self.err(format!("{struct_name}.{member_path} is a bitfield")));
        }
        Ok(bits / 8)
    }

    /// Id of the function named `name` (kfuncs are functions in the kernel's BTF).
    pub(crate) fn func_id(&self, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| t.kind == KIND_FUNC && self.name(t.name_off) == name.as_bytes())
            .map(|i| i as u32)
    }

    /// Id of a struct whose member at offset 0 is a `struct file *`: `kiocb` (`ki_filp`,
    /// first since Linux 2.6) when it is so, else the first such struct. An entry of a fd
    /// array cast to it reads as a typed file pointer.
    pub(crate) fn file_slot_struct(&self) -> Option<u32> {
        let file = self.struct_id("file")?;
        let slot = |id: u32| {
            let t = &self.types[id as usize];
            let Some(&(_, ty, 0)) = t.members.first() else {
                return false;
            };
            let ty = self.resolve(ty);
            let t = &self.types[ty as usize];
            t.kind == KIND_PTR && self.resolve(t.referenced) == file
        };
        if let Some(id) = self.struct_id("kiocb")
            && slot(id)
        {
            return Some(id);
        }
        (1..self.types.len() as u32)
            .find(|&id| self.types[id as usize].kind == KIND_STRUCT && slot(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF, when there is one (every machine we support has it).
    fn vmlinux() -> Option<Btf> {
        let data = std::fs::read(VMLINUX).ok()?;
        Some(Btf::parse(Path::new(VMLINUX), &data).expect("kernel BTF parses"))
    }

    #[test]
    fn kernel_offsets() {
        let Some(btf) = vmlinux() else {
            // Loud, and a failure in CI, whose machines all have kernel BTF.
            minify_fixtures::skip(&format!("no kernel BTF at {VMLINUX}"));
            return;
        };
        // `struct path` is two pointers: mnt then dentry, on every kernel since 2.6.
        assert_eq!(btf.offset("path", "mnt").unwrap(), 0);
        assert_eq!(btf.offset("path", "dentry").unwrap(), 8);
        // `qstr.name` sits after the hash/len union (8 bytes), through an anonymous union.
        let d_name = btf.offset("dentry", "d_name").unwrap();
        assert_eq!(btf.offset("dentry", "d_name.name").unwrap(), d_name + 8);
        // `struct mount` starts with the hash list node (2 pointers), then mnt_parent.
        assert!(btf.offset("mount", "mnt_parent").unwrap() >= 16);
        assert!(btf.offset("task_struct", "fs").unwrap() > 0);
        assert!(btf.offset("task_struct", "no_such_member").is_err());
        assert!(btf.offset("no_such_struct", "x").is_err());
    }

    #[test]
    fn kfunc_and_file_slot() {
        let Some(btf) = vmlinux() else {
            minify_fixtures::skip(&format!("no kernel BTF at {VMLINUX}"));
            return;
        };
        assert!(btf.func_id("no_such_function_here").is_none());
        // Both are there on every kernel with `bpf_rdonly_cast` (6.2+); older ones fall back.
        if let Some(id) = btf.func_id("bpf_rdonly_cast") {
            assert!(id > 0);
            let slot = btf
                .file_slot_struct()
                .expect("a struct starting with a struct file *");
            assert_eq!(btf.types[slot as usize].members[0].2, 0);
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(Path::new("x"), b"not btf at all").is_err());
        assert!(Btf::parse(Path::new("x"), &[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
    }
}
