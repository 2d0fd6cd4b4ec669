//! Events built in place in this CPU's batch, and batches sent to userspace in one
//! ring-buffer write: starting an event, appending tagged payload, closing it and flushing.

use core::ffi::c_void;
use core::ptr;

use aya_ebpf::helpers::bpf_get_current_comm;
use aya_ebpf::helpers::generated::{
    bpf_probe_read_kernel_str, bpf_probe_read_user_str, bpf_ringbuf_output,
};
use minify_trace_common::{
    BATCH_BUF, BATCH_LIMIT, Batch, COMM_LEN, EventHeader, FLAG_TRUNCATED, FRAME_HEADER, HEADER_LEN,
    PAYLOAD_CAP, TAG_COMM, USER_PATH_MAX, frame_len, op,
};

use crate::maps::{BATCH, CUR, EVENTS, LOST, SENT, cf};
use crate::task::bload;
use crate::walk::{DirKey, dir_put};

/// Payload offsets are masked with this, so the verifier sees every write inside the batch.
const MASK: usize = PAYLOAD_CAP - 1;

/// How many directories defined by one event are remembered once it is delivered (one more
/// is simply defined again by a later walk).
pub(crate) const MAX_PENDING: usize = 3;

/// The event being built on this CPU. Its header and payload are written in place in this
/// CPU's batch (`BATCH`), right after the frames already there: a copy into the batch would
/// cost a helper call per event. An event given up half way is simply not counted in the
/// batch's length.
#[repr(C)]
pub(crate) struct Cur {
    /// Where the event's frame starts in the batch's `buf` (at most `BATCH_LIMIT`).
    pub(crate) at: u64,
    /// Directories walked for this event, to remember once the event is delivered (never
    /// before: a reference to a definition userspace did not get would be unresolvable).
    pub(crate) pending: [DirKey; MAX_PENDING],
    pub(crate) pending_id: [u64; MAX_PENDING],
    pub(crate) n_pending: u64,
}

/// An event being built: this CPU's batch, its `Cur`, and where the event's frame starts in
/// the batch (bounded by `BATCH_LIMIT`, which the verifier must see wherever it is used).
#[derive(Clone, Copy)]
pub(crate) struct Ev {
    pub(crate) b: *mut Batch,
    pub(crate) c: *mut Cur,
    pub(crate) at: usize,
}

impl Ev {
    /// This CPU's event in progress (for the `bpf_loop` callback).
    #[inline(always)]
    pub(crate) fn current() -> Option<Ev> {
        let b = BATCH.get_ptr_mut(0)?;
        let c = CUR.get_ptr_mut(0)?;
        // SAFETY: this CPU's value.
        let at = unsafe { (*c).at } as usize;
        (at <= BATCH_LIMIT).then_some(Ev { b, c, at })
    }

    /// The event's header.
    #[inline(always)]
    pub(crate) fn hdr(self) -> *mut EventHeader {
        // SAFETY: `at + FRAME_HEADER + HEADER_LEN` is inside `buf` (`BATCH_BUF`).
        unsafe {
            (&raw mut (*self.b).buf)
                .cast::<u8>()
                .add(self.at + FRAME_HEADER)
                .cast()
        }
    }

    /// Payload byte `off` (masked below `PAYLOAD_CAP`; `BATCH_BUF` has room for a string of
    /// `USER_PATH_MAX` written there).
    #[inline(always)]
    pub(crate) fn pay(self, off: usize) -> *mut u8 {
        // SAFETY: as above.
        unsafe {
            (&raw mut (*self.b).buf)
                .cast::<u8>()
                .add(self.at + FRAME_HEADER + HEADER_LEN + (off & MASK))
        }
    }

    /// Mark the event truncated.
    #[inline(always)]
    pub(crate) fn truncated(self) {
        // SAFETY: the header of this CPU's event.
        unsafe { (*self.hdr()).flags |= FLAG_TRUNCATED };
    }

    #[inline(always)]
    pub(crate) fn set_ret(self, ret: i64) {
        // SAFETY: as above.
        unsafe { (*self.hdr()).ret = ret };
    }
}

/// Start an event in this CPU's batch, after the frames already there; the batch is sent
/// first when it holds another task's events or is full (see [`emit`]). Thread and process
/// ids come from the task with direct loads (not `bpf_get_current_pid_tgid`: every helper
/// call counts on the hot path). `comm` is not in the header: scheduler events put it first
/// in their payload ([`put_comm`]), userspace keeps it per process.
#[inline(always)]
pub(crate) fn begin(task: u64, kind: u32, op: u32) -> Option<Ev> {
    let b = BATCH.get_ptr_mut(0)?;
    let c = CUR.get_ptr_mut(0)?;
    let tid: u32 = bload(task, cf!(task_pid));
    // SAFETY: `b` and `c` are this CPU's map values; programs do not nest on one CPU for
    // these hooks. Header fields one by one with volatile stores: a struct assignment
    // becomes a call to a byte-at-a-time `memset` for the zeroed fields.
    unsafe {
        if (*b).len != 0 && (*b).tid != u64::from(tid) {
            flush(b);
        }
        let mut at = (*b).len as usize;
        if at > BATCH_LIMIT {
            flush(b);
            at = 0;
        }
        (*c).at = at as u64;
        (*c).n_pending = 0;
        let e = Ev { b, c, at };
        let h = e.hdr();
        ptr::write_volatile(&raw mut (*h).kind, kind as u16);
        ptr::write_volatile(&raw mut (*h).op, op as u16);
        ptr::write_volatile(&raw mut (*h).flags, 0);
        ptr::write_volatile(&raw mut (*h).pid, bload(task, cf!(task_tgid)));
        ptr::write_volatile(&raw mut (*h).tid, tid);
        ptr::write_volatile(&raw mut (*h).ret, 0);
        ptr::write_volatile(&raw mut (*h).payload_len, 0);
        ptr::write_volatile(&raw mut (*h).exec_id, bload(task, cf!(task_self_exec_id)));
        Some(e)
    }
}

// Wake-ups: the reader is woken once every `CONFIG.wakeup_mask + 1` records per CPU (the
// loader sizes it to about an eighth of the ring). A wake-up per record (the default) costs
// an irq_work per syscall, asking the ring how full it is costs a helper call per record,
// and, measured here, a reader that drains as records arrive slows every record down: it
// keeps pulling the ring's head cache lines (positions, the record being written) over to
// its own core. Woken rarely, it drains a big batch at once and sleeps again.
const BPF_RB_NO_WAKEUP: u64 = 1;

const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Close the event (its frame header, the batch's length), and send the batch when it is
/// full, when `now` (a scheduler event: the process tree must reach userspace before what
/// the new process does), when the event defined directories (a later event may refer to
/// them only once they are delivered), or when batching is off. A batch holds consecutive
/// events of one task: [`begin`] sends it first when another task's event starts.
///
/// Why batches: one ring-buffer write costs as much as the rest of a stat event together
/// (a lock, the reservation, the commit); one write per batch of a few hundred events is
/// nearly free per event. Batches of different CPUs reach userspace out of order; the
/// events that must keep their order are all sent at once (above), and `exec_id` in each
/// header tells userspace on which side of an exec a late event of a task falls.
#[inline(always)]
pub(crate) fn emit(e: Ev, off: usize, slot: u32, now: bool) {
    let off = if off > PAYLOAD_CAP { PAYLOAD_CAP } else { off };
    let b = e.b;
    // SAFETY: `e` is this CPU's event in its batch; no program nests on one CPU.
    unsafe {
        let h = e.hdr();
        (*h).payload_len = off as u32;
        let rec = HEADER_LEN + off;
        let frame = (&raw mut (*b).buf).cast::<u8>().add(e.at).cast::<u32>();
        ptr::write_volatile(frame, rec as u32);
        ptr::write_volatile(frame.add(1), 0);
        (*b).len = (e.at + frame_len(rec)) as u64;
        (*b).tid = u64::from((*h).tid);
        let counted = &raw mut (*b).n_by_op[(slot & (op::OP_SLOTS - 1)) as usize];
        *counted += 1;
        let c = e.c;
        let n = (*c).n_pending as usize;
        if now || n != 0 || (*b).len as usize > BATCH_LIMIT || cf!(no_batching) != 0 {
            // Delivered: the directories it defined may now be referred to.
            if flush(b) {
                for i in 0..MAX_PENDING {
                    if i < n {
                        dir_put(&(*c).pending[i], (*c).pending_id[i]);
                    }
                }
            }
        }
    }
}

/// Send this CPU's batch; count its events as lost if the ring buffer is full. Returns
/// whether it was delivered.
#[inline(always)]
fn flush(b: *mut Batch) -> bool {
    // SAFETY: this CPU's batch.
    unsafe {
        let len = (*b).len as usize;
        if len == 0 {
            return true;
        }
        let mut wake = BPF_RB_NO_WAKEUP;
        if let Some(n) = SENT.get_ptr_mut(0) {
            *n += 1;
            if *n & u64::from(cf!(wakeup_mask)) == 0 {
                wake = BPF_RB_FORCE_WAKEUP;
            }
        }
        let len = if len > BATCH_BUF { BATCH_BUF } else { len };
        let r = bpf_ringbuf_output(
            (&raw const EVENTS).cast_mut().cast(),
            (&raw mut (*b).buf).cast(),
            len as u64,
            wake,
        );
        if r != 0 {
            for i in 0..op::OP_SLOTS {
                let counted = (*b).n_by_op[i as usize];
                if counted != 0
                    && let Some(c) = LOST.get_ptr_mut(i)
                {
                    *c += u64::from(counted);
                }
            }
        }
        // Zeroed eight bytes at a time: plain stores of zero compile to a byte-by-byte
        // `memset` loop.
        let counts = (&raw mut (*b).n_by_op).cast::<u64>();
        for i in 0..(op::OP_SLOTS / 2) as usize {
            ptr::write_volatile(counts.add(i), 0);
        }
        (*b).len = 0;
        r == 0
    }
}

/// Append a one-byte tag; returns the new offset.
#[inline(always)]
pub(crate) fn put_tag(e: Ev, off: usize, tag: u8) -> usize {
    if off >= PAYLOAD_CAP {
        return off;
    }
    // SAFETY: a masked payload byte of this CPU's event.
    unsafe { *e.pay(off) = tag };
    off + 1
}

/// Append a tag followed by an 8-byte id.
#[inline(always)]
pub(crate) unsafe fn put_tag_id(e: Ev, off: usize, tag: u8, id: u64) -> usize {
    let off = put_tag(e, off, tag);
    // SAFETY: a masked payload offset of this CPU's event, with room after it.
    unsafe { ptr::write_unaligned(e.pay(off).cast::<[u8; 8]>(), id.to_le_bytes()) };
    off + 8
}

/// Append the current task's `comm` ([`TAG_COMM`] and 16 bytes; first in a scheduler
/// event's payload, so always in room).
#[inline(always)]
pub(crate) fn put_comm(e: Ev, off: usize) -> usize {
    let off = put_tag(e, off, TAG_COMM);
    let name = bpf_get_current_comm().unwrap_or([0; COMM_LEN]);
    // SAFETY: a masked payload offset of this CPU's event, with room after it.
    unsafe { ptr::write_unaligned(e.pay(off).cast::<[u8; COMM_LEN]>(), name) };
    off + COMM_LEN
}

/// Append a tagged NUL-terminated string from user memory.
#[inline(always)]
pub(crate) fn put_user_str(e: Ev, off: usize, tag: u8, user: u64) -> usize {
    put_str(e, off, tag, user, false)
}

/// Append a tagged NUL-terminated string from user (or, with `kernel`, kernel) memory.
#[inline(always)]
pub(crate) fn put_str(e: Ev, off: usize, tag: u8, user: u64, kernel: bool) -> usize {
    if user == 0 {
        return off;
    }
    if off + 1 + USER_PATH_MAX > PAYLOAD_CAP {
        e.truncated();
        return off;
    }
    let start = put_tag(e, off, tag);
    // SAFETY: destination masked below PAYLOAD_CAP, with room for USER_PATH_MAX after it.
    let n = unsafe {
        let dst = e.pay(start).cast();
        if kernel {
            bpf_probe_read_kernel_str(dst, USER_PATH_MAX as u32, user as *const c_void)
        } else {
            bpf_probe_read_user_str(dst, USER_PATH_MAX as u32, user as *const c_void)
        }
    };
    if n <= 0 {
        // Unreadable pointer: drop the tag again.
        return off;
    }
    start + n as usize
}

/// Whether the first byte of the user string at `payload[start]` is not `/`.
#[inline(always)]
pub(crate) fn is_relative(e: Ev, start: usize) -> bool {
    // SAFETY: a masked payload byte of this CPU's event.
    unsafe { *e.pay(start) != b'/' }
}
