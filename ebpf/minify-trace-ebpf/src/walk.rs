//! The path walk: a file's path rebuilt like the kernel's `d_path`, from its dentry up
//! `d_parent` and across mounts up to the task's root, one component per `bpf_loop`
//! iteration, with directories already sent answered from a per-CPU cache.

use core::ffi::c_void;
use core::ptr;

use aya_ebpf::helpers::generated::{bpf_get_smp_processor_id, bpf_loop, bpf_probe_read_kernel_str};
use minify_trace_common::{
    NAME_MAX, PAYLOAD_CAP, TAG_COMPONENT, TAG_DIR_DEF, TAG_DIR_REF, TAG_END_ERROR, TAG_END_ROOT,
    TAG_END_TRUNCATED, TAG_END_UNREACHABLE, WALK_MAX_STEPS,
};

use crate::batch::{Ev, MAX_PENDING, put_tag, put_tag_id};
use crate::maps::{DIRS, GENERATION, NEXT_ID, WALK, cf};
use crate::task::{kread, task_root};

/// A directory as a walk sees it: the same dentry on the same mount, under the same root,
/// since the last rename/delete by the workload (`generation`). Pointers alone could be
/// reused by another directory after the first is freed; renames change paths.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct DirKey {
    dentry: u64,
    mnt: u64,
    root_dentry: u64,
    generation: u64,
}

pub(crate) const DIR_SLOTS: u32 = 4096;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct DirSlot {
    key: DirKey,
    id: u64,
}

#[inline(always)]
fn dir_index(k: &DirKey) -> u32 {
    // Dentries are allocated from a slab: the low bits are alignment, the rest varies.
    let h = (k.dentry >> 6) ^ (k.dentry >> 18) ^ (k.mnt >> 6) ^ k.generation;
    (h as u32) & (DIR_SLOTS - 1)
}

/// The id under which directory `k` was sent, if this CPU remembers it.
#[inline(always)]
fn dir_get(k: &DirKey) -> Option<u64> {
    let slot = DIRS.get_ptr(dir_index(k))?;
    // SAFETY: this CPU's slot; no concurrent writer.
    let slot = unsafe { &*slot };
    (slot.key.dentry == k.dentry
        && slot.key.mnt == k.mnt
        && slot.key.root_dentry == k.root_dentry
        && slot.key.generation == k.generation)
        .then_some(slot.id)
}

/// `*dst = *src`, eight bytes at a time (a struct copy compiles to a byte-by-byte
/// `memmove` loop).
#[inline(always)]
unsafe fn copy_key(dst: *mut DirKey, src: *const DirKey) {
    // SAFETY: the caller passes valid, 8-aligned map memory.
    unsafe {
        let (d, s) = (dst.cast::<u64>(), src.cast::<u64>());
        for i in 0..4 {
            ptr::write_volatile(d.add(i), ptr::read_volatile(s.add(i)));
        }
    }
}

/// Remember that directory `k` was sent as `id`.
#[inline(always)]
pub(crate) fn dir_put(k: &DirKey, id: u64) {
    if let Some(slot) = DIRS.get_ptr_mut(dir_index(k)) {
        // SAFETY: as above.
        unsafe { *slot = DirSlot { key: *k, id } };
    }
}

#[inline(always)]
fn generation() -> u64 {
    GENERATION.get(0).copied().unwrap_or(0)
}

/// State of one path walk, shared between the caller and the `bpf_loop` callback.
#[repr(C)]
pub(crate) struct Walk {
    dentry: u64,
    vfsmnt: u64,
    root_dentry: u64,
    root_mnt: u64,
    /// Next free payload offset.
    off: u64,
    /// Set once an end tag was written.
    done: u64,
    /// Loop iterations so far.
    step: u64,
    /// At which iteration to look the current directory up in `DIRS` (u64::MAX: never).
    cache_at: u64,
    /// The end tag written.
    end_tag: u64,
    /// A directory defined by this walk (`TAG_DIR_DEF`), to remember if the event goes out.
    pend: u64,
    pend_key: DirKey,
    pend_id: u64,
}

/// Append a walk of `(vfsmnt, dentry)` up to the current task's root: start tag, components
/// leaf first, end tag.
#[inline(always)]
pub(crate) fn put_walk(
    task: u64,
    e: Ev,
    off: usize,
    tag: u8,
    (mnt, dentry): (u64, u64),
    cache_at: u64,
) -> usize {
    if off + 2 > PAYLOAD_CAP {
        e.truncated();
        return off;
    }
    let off = put_tag(e, off, tag);
    let Some(w) = WALK.get_ptr_mut(0) else {
        return put_tag(e, off, TAG_END_ERROR);
    };
    let (root_mnt, root_dentry) = task_root(task);
    // The pointers may be BTF pointers (direct loads), on which the verifier allows no
    // arithmetic; written to a map value and read back they are numbers, which the
    // directory cache can hash.
    // SAFETY: this CPU's walk state.
    let [dentry, mnt, root_dentry, root_mnt] = unsafe {
        let p = (&raw mut (*w).dentry).cast::<[u64; 4]>();
        ptr::write_volatile(p, [dentry, mnt, root_dentry, root_mnt]);
        ptr::read_volatile(p)
    };
    if mnt == 0 || dentry == 0 || root_mnt == 0 || root_dentry == 0 {
        return put_tag(e, off, TAG_END_ERROR);
    }
    // The common case of a relative lookup, its directory already sent: answer it here,
    // without setting up a loop.
    if cache_at == 0 {
        if dentry == root_dentry && mnt == root_mnt {
            return put_tag(e, off, TAG_END_ROOT);
        }
        let key = DirKey {
            dentry,
            mnt,
            root_dentry,
            generation: generation(),
        };
        if let Some(id) = dir_get(&key) {
            // SAFETY: this CPU's scratch value.
            return unsafe { put_tag_id(e, off, TAG_DIR_REF, id) };
        }
    }
    // SAFETY: this CPU's walk state.
    unsafe {
        // The four pointers are in place (above); `pend_key`/`pend_id` count only once
        // `pend` is set. Field by field: a struct assignment compiles to a byte-by-byte
        // `memset` loop for the zeros.
        ptr::write_volatile(&raw mut (*w).off, off as u64);
        ptr::write_volatile(&raw mut (*w).done, 0);
        ptr::write_volatile(&raw mut (*w).step, 0);
        ptr::write_volatile(&raw mut (*w).cache_at, cache_at);
        ptr::write_volatile(&raw mut (*w).end_tag, 0);
        ptr::write_volatile(&raw mut (*w).pend, 0);
        bpf_loop(WALK_MAX_STEPS, walk_step as *mut c_void, ptr::null_mut(), 0);
        let off = (*w).off as usize;
        if (*w).done == 0 {
            return put_tag(e, off, TAG_END_TRUNCATED);
        }
        // Only a walk that got to an answer defines its directory.
        let answered = (*w).end_tag == u64::from(TAG_END_ROOT)
            || (*w).end_tag == u64::from(TAG_END_UNREACHABLE);
        if (*w).pend != 0 && answered {
            let c = e.c;
            let n = (*c).n_pending as usize;
            if n < MAX_PENDING {
                copy_key(&raw mut (*c).pending[n], &raw const (*w).pend_key);
                (*c).pending_id[n] = (*w).pend_id;
                (*c).n_pending = n as u64 + 1;
            }
        }
        off
    }
}

/// Write the walk's end tag and stop the loop.
#[inline(always)]
unsafe fn walk_end(w: *mut Walk, e: Ev, off: usize, tag: u8) -> i64 {
    // SAFETY: the caller passes this CPU's map values.
    unsafe {
        (*w).off = put_tag(e, off, tag) as u64;
        (*w).done = 1;
        (*w).end_tag = u64::from(tag);
    }
    1
}

/// One step of the path walk (a `bpf_loop` callback): returns 1 to stop.
extern "C" fn walk_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let (Some(w), Some(e)) = (WALK.get_ptr_mut(0), Ev::current()) else {
        return 1;
    };
    // SAFETY: this CPU's map values; payload offsets are masked.
    unsafe {
        let off = (*w).off as usize;
        if off + 2 + NAME_MAX > PAYLOAD_CAP {
            e.truncated();
            return walk_end(w, e, off, TAG_END_TRUNCATED);
        }
        let dentry = (*w).dentry;
        let vfsmnt = (*w).vfsmnt;
        if dentry == (*w).root_dentry && vfsmnt == (*w).root_mnt {
            return walk_end(w, e, off, TAG_END_ROOT);
        }
        let step = (*w).step;
        (*w).step = step + 1;
        if step == (*w).cache_at {
            let key = DirKey {
                dentry,
                mnt: vfsmnt,
                root_dentry: (*w).root_dentry,
                generation: generation(),
            };
            if let Some(id) = dir_get(&key) {
                (*w).off = put_tag_id(e, off, TAG_DIR_REF, id) as u64;
                (*w).done = 1;
                (*w).end_tag = u64::from(TAG_DIR_REF);
                return 1;
            }
            let Some(counter) = NEXT_ID.get_ptr_mut(0) else {
                return walk_end(w, e, off, TAG_END_ERROR);
            };
            let id = (u64::from(bpf_get_smp_processor_id()) << 48) | *counter;
            *counter += 1;
            (*w).pend = 1;
            (*w).pend_key = key;
            (*w).pend_id = id;
            (*w).off = put_tag_id(e, off, TAG_DIR_DEF, id) as u64;
            // Go on with this same directory in the next iteration (the check is done).
            return 0;
        }
        let Some(mnt_root) = kread::<u64>(vfsmnt, cf!(vfsmount_mnt_root)) else {
            return walk_end(w, e, off, TAG_END_ERROR);
        };
        if dentry == mnt_root {
            // At the root of a mount: continue from where it is mounted.
            let mount = vfsmnt - u64::from(cf!(mount_mnt));
            let Some(parent) = kread::<u64>(mount, cf!(mount_mnt_parent)) else {
                return walk_end(w, e, off, TAG_END_ERROR);
            };
            if parent == mount {
                // The namespace's root mount and not the task's root: outside the root
                // (a chroot escapee or an internal mount such as pipefs).
                return walk_end(w, e, off, TAG_END_UNREACHABLE);
            }
            let Some(mp) = kread::<u64>(mount, cf!(mount_mnt_mountpoint)) else {
                return walk_end(w, e, off, TAG_END_ERROR);
            };
            (*w).dentry = mp;
            (*w).vfsmnt = parent + u64::from(cf!(mount_mnt));
            return 0;
        }
        let Some(parent) = kread::<u64>(dentry, cf!(dentry_d_parent)) else {
            return walk_end(w, e, off, TAG_END_ERROR);
        };
        if parent == dentry {
            return walk_end(w, e, off, TAG_END_UNREACHABLE);
        }
        let Some(name) = kread::<u64>(dentry, cf!(dentry_d_name_name)) else {
            return walk_end(w, e, off, TAG_END_ERROR);
        };
        *e.pay(off) = TAG_COMPONENT;
        let start = off + 1;
        let n =
            bpf_probe_read_kernel_str(e.pay(start).cast(), NAME_MAX as u32, name as *const c_void);
        if n <= 0 {
            return walk_end(w, e, off, TAG_END_ERROR);
        }
        (*w).off = (start + n as usize) as u64;
        (*w).dentry = parent;
        0
    }
}
