//! Our own consumer of the BPF ring buffer (`BPF_MAP_TYPE_RINGBUF`), built on the kernel's
//! documented mmap layout instead of aya's `RingBuf::next`, to keep out of the producer's
//! way.
//!
//! Why: the programs run in the traced workload's own syscalls, so whatever slows them is
//! tracing overhead. A consumer that takes records as they arrive, publishing its position
//! after each one, keeps pulling the cache lines the producer is writing (the positions,
//! the record in progress) over to its own core; measured on the stat-storm benchmark that
//! cost the producer ~60 ns a record. This reader
//! - is woken rarely (the programs wake it every few thousand records, see
//!   `kernel_config::wakeup_every`),
//! - reads the producer position once per batch and publishes its own once per batch,
//! - leaves the newest [`Ring::keep_back`] bytes alone until told to take everything, so it
//!   never reads a line the producer is still writing.
//!
//! Layout (kernel/bpf/ringbuf.c, and what libbpf and aya read): page 0 holds the consumer
//! position (read-write for us); from page 1 on, read-only: the producer position, then,
//! one page later, the data area mapped twice in a row so a record that wraps around is
//! contiguous. Each record is an 8-byte header (`u32` length with the busy and discard
//! bits, `u32` page offset) followed by the data, padded to 8 bytes.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use aya::maps::{MapData, RingBuf};

const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HEADER: u64 = 8;

/// A mapped ring buffer and our position in it.
pub(crate) struct Ring {
    /// Owns the map fd the mappings come from.
    map: RingBuf<MapData>,
    consumer: *mut u8,
    producer: *mut u8,
    page: usize,
    /// Bytes of data area (a power of two).
    size: u64,
    pos: u64,
}

// SAFETY: the mappings belong to this value alone and are only touched through `&mut self`
// (and atomics for the shared positions); the kernel is the other party.
#[allow(unsafe_code)]
unsafe impl Send for Ring {}

impl Ring {
    /// Map `map`, whose data area is `size` bytes (the map's `max_entries`).
    pub(crate) fn new(map: RingBuf<MapData>, size: u32) -> std::io::Result<Ring> {
        // SAFETY: sysconf has no preconditions.
        #[allow(unsafe_code)]
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| std::io::Error::other("sysconf(_SC_PAGESIZE) failed"))?;
        let fd = map.as_raw_fd();
        let consumer = map_pages(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = match map_pages(fd, page + 2 * size as usize, libc::PROT_READ, page) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: the mapping made just above, not used anywhere else.
                #[allow(unsafe_code)]
                unsafe {
                    libc::munmap(consumer.cast(), page);
                }
                return Err(e);
            }
        };
        let mut ring = Ring {
            map,
            consumer,
            producer,
            page,
            size: u64::from(size),
            pos: 0,
        };
        ring.pos = ring.consumer_pos().load(Ordering::Acquire);
        Ok(ring)
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: page 0 starts with the kernel's `unsigned long consumer_pos`, page-aligned.
        #[allow(unsafe_code)]
        unsafe {
            AtomicU64::from_ptr(self.consumer.cast())
        }
    }

    fn producer_pos(&self) -> &AtomicU64 {
        // SAFETY: as above for `producer_pos` at the start of the second mapping.
        #[allow(unsafe_code)]
        unsafe {
            AtomicU64::from_ptr(self.producer.cast())
        }
    }

    /// How many of the newest bytes a routine drain leaves for later (see the module doc):
    /// 64 KiB, or an eighth of a small ring.
    pub(crate) fn keep_back(&self) -> u64 {
        (64 * 1024).min(self.size / 8)
    }

    /// Copy committed records out, oldest first, appended to `out` (each record is a batch
    /// of frames, see `minify_trace_common`), stopping `keep_back` bytes short of the producer (0: take all) or
    /// at a record still being written. Frees their space in the ring.
    pub(crate) fn drain_into(&mut self, out: &mut Vec<u8>, keep_back: u64) {
        let producer = self.producer_pos().load(Ordering::Acquire);
        let limit = producer.saturating_sub(keep_back);
        let mask = self.size - 1;
        let data = self.page;
        while self.pos < limit {
            let off = (self.pos & mask) as usize;
            // SAFETY: `off` < size and the data area is mapped twice, so the header and a
            // record of up to `size` bytes after it are inside the mapping.
            #[allow(unsafe_code)]
            let header = unsafe {
                AtomicU32::from_ptr(self.producer.add(data + off).cast()).load(Ordering::Acquire)
            };
            if header & BUSY_BIT != 0 {
                break;
            }
            let len = u64::from(header & !(BUSY_BIT | DISCARD_BIT));
            if len > self.size {
                // Cannot happen with a sane kernel; do not read past the mapping.
                tracing::error!(
                    "ring buffer record of {len} bytes in a {} byte ring",
                    self.size
                );
                self.pos = producer;
                break;
            }
            if header & DISCARD_BIT == 0 {
                // SAFETY: as above; `len` <= size.
                #[allow(unsafe_code)]
                let rec = unsafe {
                    std::slice::from_raw_parts(
                        self.producer.add(data + off + HEADER as usize),
                        len as usize,
                    )
                };
                out.extend_from_slice(rec);
            }
            self.pos += (HEADER + len).next_multiple_of(8);
        }
        self.consumer_pos().store(self.pos, Ordering::Release);
    }
}

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> RawFd {
        self.map.as_raw_fd()
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the two mappings made in `new`, with their lengths; nothing borrows them
        // past `&mut self`.
        #[allow(unsafe_code)]
        unsafe {
            libc::munmap(self.consumer.cast(), self.page);
            libc::munmap(self.producer.cast(), self.page + 2 * self.size as usize);
        }
    }
}

/// `mmap` `len` bytes of the map at `offset`, shared.
fn map_pages(fd: RawFd, len: usize, prot: libc::c_int, offset: usize) -> std::io::Result<*mut u8> {
    let offset = libc::off_t::try_from(offset).map_err(std::io::Error::other)?;
    // SAFETY: a fresh shared mapping of a file descriptor we own; the kernel checks the
    // length, protection and offset against the ring buffer.
    #[allow(unsafe_code)]
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd,
            offset,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(p.cast())
}
