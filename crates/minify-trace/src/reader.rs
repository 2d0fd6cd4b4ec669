//! The ring buffer's reader: a thread that copies records out of the ring as soon as the
//! programs wake it (the kernel side drops events when the ring is full), and a decoder
//! thread at idle priority that turns them into events, feeding live subscribers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use minify_model::TraceEvent;

use crate::TraceError;
use crate::decode::Decoder;
use crate::ring::Ring;

/// Where the decoder sends live events, once someone subscribes ([`Tracer::subscribe`]).
///
/// [`Tracer::subscribe`]: crate::Tracer::subscribe
pub(crate) type Live =
    Arc<std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<TraceEvent>>>>;

/// A running reader: how to stop it, where its live events go, and its thread, which
/// returns the decoder with everything decoded.
pub(crate) struct Reader {
    pub(crate) stop: Arc<Stop>,
    pub(crate) live: Live,
    pub(crate) thread: JoinHandle<Decoder>,
}

/// Start reading `events` on a thread of its own (see [`read_loop`]).
pub(crate) fn spawn(events: Ring, from_first_exec: bool) -> Result<Reader, TraceError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| TraceError::from_io("starting the trace reader's runtime", e))?;
    let readable = {
        let _in_runtime = runtime.enter();
        // SAFETY: the fd belongs to `events`, which `read_loop` keeps open and unchanged
        // until after it has dropped this `AsyncFd`.
        #[allow(unsafe_code)]
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                RingFd(std::os::fd::AsRawFd::as_raw_fd(&events)),
                tokio::io::Interest::READABLE,
            )
        }
        .map_err(|e| TraceError::from_io("watching the ring buffer", e.into_parts().1))?
    };
    let stop = Arc::new(Stop::default());
    let live: Live = Arc::new(std::sync::Mutex::new(None));
    let thread = {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("minify-trace-reader".into())
            .spawn({
                let live = Arc::clone(&live);
                move || read_loop(events, &runtime, readable, &stop, from_first_exec, live)
            })?
    };
    Ok(Reader { stop, live, thread })
}

/// Live trace events (see [`Tracer::subscribe`](crate::Tracer::subscribe)): a `futures` `Stream`, or
/// [`TraceEvents::recv`] in async code.
#[derive(Debug)]
pub struct TraceEvents(pub(crate) tokio::sync::mpsc::UnboundedReceiver<TraceEvent>);

impl TraceEvents {
    /// The next event; `None` once the tracer has finished and everything was delivered.
    pub async fn recv(&mut self) -> Option<TraceEvent> {
        self.0.recv().await
    }
}

impl futures_core::Stream for TraceEvents {
    type Item = TraceEvent;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<TraceEvent>> {
        self.0.poll_recv(cx)
    }
}

/// How often the reader looks at the ring without being woken: the eBPF side wakes it only
/// every few thousand records (see `kernel_config::wakeup_every`).
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How many bytes of raw records wait before the decoder works through them (unless a live
/// subscriber is watching): about half a million records.
const DECODE_BACKLOG_BYTES: usize = 64 << 20;

/// Tells the reader to take what is left and stop, at once (not at its next poll).
#[derive(Default)]
pub(crate) struct Stop {
    flag: AtomicBool,
    notify: tokio::sync::Notify,
    /// What was left in the per-CPU batches, decoded after the ring.
    pub(crate) tail: std::sync::Mutex<Vec<u8>>,
}

impl Stop {
    pub(crate) fn now(&self) {
        self.flag.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

/// Run the calling thread only when a CPU would otherwise be idle (`SCHED_IDLE`). The
/// decoder has no deadline (records wait in memory, nothing is lost), and on a small machine
/// a decoder at normal priority takes CPU time from the very workload being traced.
fn idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on the calling thread with a valid parameter.
    #[allow(unsafe_code)]
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &raw const param) };
    if r != 0 {
        tracing::debug!(
            "could not lower the trace decoder's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The ring buffer's fd, for tokio's `AsyncFd` (the ring itself stays with the reader).
struct RingFd(std::os::fd::RawFd);

impl std::os::fd::AsRawFd for RingFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

/// Drain the ring buffer until told to stop, then drain what is left; returns the decoder
/// with everything decoded.
///
/// The reader is a tokio task on a current-thread runtime of its own thread, woken by the
/// ring buffer's fd becoming readable (epoll through `AsyncFd`, `readable`), by a timer, or
/// by [`Stop`]. It only copies records out: the kernel side drops
/// events when the ring is full, so emptying it must not wait on anything. Decoding runs on
/// its own thread at idle priority and may lag behind under a burst without losing
/// anything; it also feeds live subscribers (see `Tracer::subscribe`).
fn read_loop(
    mut ring: Ring,
    runtime: &tokio::runtime::Runtime,
    readable: tokio::io::unix::AsyncFd<RingFd>,
    stop: &Stop,
    from_first_exec: bool,
    live: Live,
) -> Decoder {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let decoder = std::thread::Builder::new()
        .name("minify-trace-decode".into())
        .spawn(move || {
            idle_priority();
            let mut decoder = Decoder::new(from_first_exec);
            // Raw batches wait here until there are many of them (or someone watches live,
            // or the trace ends): decoding while the workload runs competes with it for the
            // machine (on a 2-vCPU VM the other vCPU may well be its hyper-thread sibling),
            // and measured on the stat-storm benchmark that was a good part of the overhead.
            let mut backlog: Vec<Vec<u8>> = Vec::new();
            let mut backlog_bytes = 0;
            let decode = |decoder: &mut Decoder, batches: &mut Vec<Vec<u8>>| {
                let before = decoder.event_count();
                for batch in batches.drain(..) {
                    decoder.feed_frames(&batch);
                }
                let live = live
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(sender) = live.as_ref() {
                    for e in decoder.events_since(before) {
                        let _ = sender.send(e.clone());
                    }
                }
            };
            for batch in rx {
                backlog_bytes += batch.len();
                backlog.push(batch);
                let watched = live
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .is_some();
                if watched || backlog_bytes >= DECODE_BACKLOG_BYTES {
                    decode(&mut decoder, &mut backlog);
                    backlog_bytes = 0;
                }
            }
            decode(&mut decoder, &mut backlog);
            decoder
        });
    let drain = |ring: &mut Ring, keep_back: u64| {
        let mut batch = Vec::new();
        ring.drain_into(&mut batch, keep_back);
        if !batch.is_empty() {
            let _ = tx.send(batch);
        }
    };
    let keep_back = ring.keep_back();
    runtime.block_on(async {
        // After a wake-up from the kernel (the producer is busy) the newest records are left
        // alone; after a quiet timer tick everything is taken, so a live subscriber never
        // waits longer than that for an event.
        let mut keep = keep_back;
        while !stop.flag.load(Ordering::Acquire) {
            drain(&mut ring, keep);
            keep = tokio::select! {
                r = readable.readable() => {
                    if let Ok(mut g) = r {
                        g.clear_ready();
                    }
                    keep_back
                }
                () = tokio::time::sleep(POLL_INTERVAL) => 0,
                () = stop.notify.notified() => 0,
            };
        }
    });
    drop(readable);
    // Stopped: everything, including the newest records, then what was never sent.
    drain(&mut ring, 0);
    let tail = std::mem::take(
        &mut *stop
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    if !tail.is_empty() {
        let _ = tx.send(tail);
    }
    drop(tx);
    match decoder {
        Ok(h) => h.join().unwrap_or_else(|_| {
            tracing::error!("trace decoder thread panicked; the trace is empty");
            Decoder::new(from_first_exec)
        }),
        Err(e) => {
            tracing::error!("could not start the trace decoder thread: {e}");
            Decoder::new(from_first_exec)
        }
    }
}
