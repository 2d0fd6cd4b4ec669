//! Rewriting kfunc calls into the eBPF object before aya loads it.
//!
//! aya (0.14) cannot link calls of kernel functions (kfuncs). The one we use,
//! `bpf_rdonly_cast`, takes a pointer and a BTF type id and gives back the pointer typed as
//! that struct, so that the programs read through it with plain loads instead of
//! `bpf_probe_read_kernel` calls; the verifier turns the call itself into a register move.
//! The programs call it as an ordinary helper with a made-up number
//! ([`KFUNC_RDONLY_CAST`]); here each such call instruction becomes a kfunc call
//! (`BPF_PSEUDO_KFUNC_CALL`, the kfunc's id in the kernel's BTF) or, where the kernel has no
//! such kfunc, a move on a path the programs never take (`KernelConfig::rdonly_cast` 0).
//!
//! Only executable sections of a little-endian ELF64 object are touched, at instruction
//! boundaries; everything else is copied as is.

use minify_trace_common::KFUNC_RDONLY_CAST;

const BPF_CALL: u8 = 0x85;
/// `BPF_ALU64 | BPF_MOV | BPF_X`: `dst = src`.
const BPF_MOV64_REG: u8 = 0xbf;
/// Source register value that marks a call as a kfunc call.
const BPF_PSEUDO_KFUNC_CALL: u8 = 2;
const SHT_PROGBITS: u32 = 1;
const SHF_EXECINSTR: u64 = 4;

/// An object file in an 8-byte aligned buffer (aya's ELF parser wants aligned data, like
/// `include_bytes_aligned!` gives).
pub(crate) struct AlignedObject {
    words: Vec<u64>,
    len: usize,
}

impl AlignedObject {
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes; u8 has no alignment.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len)
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we hold the only reference.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len)
        }
    }
}

/// Copy `object` and rewrite its `call KFUNC_RDONLY_CAST` instructions: into calls of the
/// kfunc with vmlinux BTF id `kfunc` when given, else into `r0 = r1`. Returns the copy and
/// how many calls were rewritten; an error for an object that is not ELF64 little-endian.
pub(crate) fn rewrite_kfunc_calls(
    object: &[u8],
    kfunc: Option<u32>,
) -> Result<(AlignedObject, usize), String> {
    let mut out = AlignedObject {
        words: vec![0; object.len().div_ceil(8)],
        len: object.len(),
    };
    out.bytes_mut().copy_from_slice(object);
    let data = out.bytes_mut();
    if data.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err("not a little-endian ELF64 object".into());
    }
    let u16_at = |d: &[u8], o: usize| d.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |d: &[u8], o: usize| {
        d.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |d: &[u8], o: usize| {
        d.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let truncated = || "truncated ELF header or section table".to_string();
    let shoff = u64_at(data, 0x28).ok_or_else(truncated)? as usize;
    let shentsize = usize::from(u16_at(data, 0x3a).ok_or_else(truncated)?);
    let shnum = usize::from(u16_at(data, 0x3c).ok_or_else(truncated)?);
    let mut patched = 0;
    for i in 0..shnum {
        let sh = shoff.saturating_add(i * shentsize);
        let kind = u32_at(data, sh + 4).ok_or_else(truncated)?;
        let flags = u64_at(data, sh + 8).ok_or_else(truncated)?;
        let offset = u64_at(data, sh + 0x18).ok_or_else(truncated)? as usize;
        let size = u64_at(data, sh + 0x20).ok_or_else(truncated)? as usize;
        if kind != SHT_PROGBITS || flags & SHF_EXECINSTR == 0 {
            continue;
        }
        let text = offset
            .checked_add(size)
            .and_then(|end| data.get_mut(offset..end))
            .ok_or_else(|| format!("section {i} lies past the end of the object"))?;
        for insn in text.chunks_exact_mut(8) {
            let imm = u32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
            if insn[0] != BPF_CALL || insn[1] != 0 || imm != KFUNC_RDONLY_CAST {
                continue;
            }
            if let Some(id) = kfunc {
                insn[1] = BPF_PSEUDO_KFUNC_CALL << 4;
                insn[4..8].copy_from_slice(&id.to_le_bytes());
            } else {
                insn[0] = BPF_MOV64_REG;
                insn[1] = 1 << 4;
                insn[4..8].copy_from_slice(&[0; 4]);
            }
            patched += 1;
        }
    }
    Ok((out, patched))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 object: header, one executable section with `insns`, one data
    /// section with the same bytes (which must stay as they are), and the section table.
    fn object(insns: &[[u8; 8]]) -> Vec<u8> {
        let code: Vec<u8> = insns.concat();
        let mut o = vec![0u8; 64];
        o[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
        let text_at = o.len();
        o.extend_from_slice(&code);
        let data_at = o.len();
        o.extend_from_slice(&code);
        let shoff = o.len();
        o[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        o[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        o[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        o.extend_from_slice(&[0; 64]); // the null section
        for (at, flags) in [(text_at, SHF_EXECINSTR | 2), (data_at, 3)] {
            let mut sh = [0u8; 64];
            sh[4..8].copy_from_slice(&SHT_PROGBITS.to_le_bytes());
            sh[8..16].copy_from_slice(&flags.to_le_bytes());
            sh[0x18..0x20].copy_from_slice(&(at as u64).to_le_bytes());
            sh[0x20..0x28].copy_from_slice(&(code.len() as u64).to_le_bytes());
            o.extend_from_slice(&sh);
        }
        o
    }

    fn call(imm: u32) -> [u8; 8] {
        let mut i = [BPF_CALL, 0, 0, 0, 0, 0, 0, 0];
        i[4..].copy_from_slice(&imm.to_le_bytes());
        i
    }

    #[test]
    fn rewrites_calls_in_code_only() {
        let helper = call(14); // bpf_get_current_pid_tgid: left alone
        let obj = object(&[
            helper,
            call(KFUNC_RDONLY_CAST),
            helper,
            call(KFUNC_RDONLY_CAST),
        ]);
        let (out, n) = rewrite_kfunc_calls(&obj, Some(65475)).unwrap();
        assert_eq!(n, 2);
        let b = out.bytes();
        assert_eq!(b.as_ptr() as usize % 8, 0);
        assert_eq!(&b[64..72], &helper);
        let mut kcall = [BPF_CALL, 0x20, 0, 0, 0, 0, 0, 0];
        kcall[4..].copy_from_slice(&65475u32.to_le_bytes());
        assert_eq!(&b[72..80], &kcall);
        assert_eq!(&b[88..96], &kcall);
        // The data section's copy of the same bytes is untouched.
        assert_eq!(&b[96..128], &obj[96..128]);

        let (out, n) = rewrite_kfunc_calls(&obj, None).unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            &out.bytes()[72..80],
            &[BPF_MOV64_REG, 0x10, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn rejects_what_is_not_an_object() {
        assert!(rewrite_kfunc_calls(b"hello", None).is_err());
        let mut obj = object(&[call(KFUNC_RDONLY_CAST)]);
        // The code section claims to run past the end.
        let sh = obj.len() - 128;
        obj[sh + 0x20..sh + 0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(rewrite_kfunc_calls(&obj, None).is_err());
        obj.truncate(70);
        assert!(rewrite_kfunc_calls(&obj, None).is_err());
    }
}
