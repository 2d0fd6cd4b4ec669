//! [`Tracer`]: load the eBPF object with this kernel's offsets, attach it to `sys_exit` and
//! the scheduler's exec/fork/exit, and drain the ring buffer with a reader of its own; on
//! finish, detach, take what is left and hand back the decoded trace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use aya::Ebpf;
use aya::EbpfLoader;
use aya::maps::{MapData, PerCpuArray, RingBuf};
use minify_trace_common::{Batch, op};

use crate::attach::{self, Link};
use crate::btf::Btf;
use crate::decode::Decoder;
use crate::error::aya_error;
use crate::kernel_config::{RdonlyCast, kernel_config};
use crate::reader::{self, Live, Stop, TraceEvents};
use crate::ring::Ring;
use crate::{Recording, TraceCgroup, TraceError, TraceOptions, syscalls, tracefs};

/// The compiled eBPF object (empty when built with `AYA_BUILD_SKIP=1`).
pub(crate) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/minify-trace-ebpf"));

/// How file accesses are observed.
///
/// Only [`Backend::Tracepoints`] is implemented: it is what works on every kernel we target,
/// including ours where fentry/LSM programs fail with EPERM and kprobes do not exist
/// (docs/KERNEL.md). A `Fentry` backend (fentry on `security_file_open` / `vfs_statx` /
/// `do_renameat2` ..., paths from `bpf_d_path`) would be cheaper and would also see opens made
/// through io_uring; it belongs here as a second variant, chosen by `Tracer::start` when
/// `doctor::check_attach_types()` reports fentry as loadable, and must be tested on a kernel
/// that allows trampolines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// A BTF tracepoint on raw `sys_exit` and on `sched_process_exec`, tracepoints on
    /// `sched_process_{fork,exit}`; paths rebuilt in eBPF from dentries and mounts.
    Tracepoints,
}

/// A running trace. Programs are attached while it lives; [`Tracer::finish`] detaches them
/// and returns what was recorded. Dropping it detaches too (and discards the events).
pub struct Tracer {
    /// Owned links: dropped in parallel on finish (each detach waits for an RCU grace
    /// period, ~70 ms).
    links: Vec<Link>,
    ebpf: Option<Ebpf>,
    lost: PerCpuArray<MapData, u64>,
    /// The per-CPU batches: what is left in them is read once the programs are detached.
    batches: PerCpuArray<MapData, Batch>,
    stop: Arc<Stop>,
    /// Where the decoder sends live events, once someone subscribes.
    live: Live,
    reader: Option<JoinHandle<Decoder>>,
    attached: Vec<String>,
    started: Instant,
    /// `cgroup.events` of the traced cgroup: once it says "populated 0" nothing can add
    /// events, and detaching need not hold up `finish`.
    cgroup_events: std::path::PathBuf,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("attached", &self.attached.len())
            .finish_non_exhaustive()
    }
}

/// The map `name` of the object, taken out of it as a `T`.
fn take_map<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<T, TraceError> {
    let map = ebpf.take_map(name).ok_or_else(|| TraceError::Load {
        program: name.into(),
        detail: "map not in the eBPF object".into(),
        verifier_log: String::new(),
    })?;
    T::try_from(map).map_err(|e| aya_error("opening map", name, &e))
}

impl Tracer {
    /// Load and attach the programs for `cgroup`, and start draining the ring buffer.
    /// When this returns, every process in (or below) the cgroup is being traced.
    pub fn start(cgroup: &TraceCgroup, options: TraceOptions) -> Result<Tracer, TraceError> {
        let ring = options.ring_bytes;
        if !ring.is_power_of_two() || ring < 4096 {
            return Err(TraceError::Options(format!(
                "ring buffer size {ring} must be a power of two of at least 4096 bytes"
            )));
        }
        if EBPF_OBJECT.is_empty() {
            return Err(TraceError::Load {
                program: "minify-trace-ebpf".into(),
                detail: "this binary was built with AYA_BUILD_SKIP=1 and carries no eBPF object; rebuild without it".into(),
                verifier_log: String::new(),
            });
        }
        let t0 = Instant::now();
        tracefs::ensure_mounted(options.mount_tracefs)?;
        let mut ebpf = load(cgroup, options)?;
        syscalls::fill_table(&mut ebpf)?;
        let lost = take_map(&mut ebpf, "LOST")?;
        let events: RingBuf<MapData> = take_map(&mut ebpf, "EVENTS")?;
        let batches = take_map(&mut ebpf, "BATCH")?;
        let events = Ring::new(events, ring)
            .map_err(|e| TraceError::from_io("mapping the ring buffer", e))?;

        // The reader runs before the first attach so that nothing queues up unread.
        let reader = reader::spawn(events, options.from_first_exec)?;
        let mut tracer = Tracer {
            links: Vec::new(),
            ebpf: None,
            lost,
            batches,
            stop: reader.stop,
            live: reader.live,
            reader: Some(reader.thread),
            attached: Vec::new(),
            started: t0,
            cgroup_events: cgroup.path().join("cgroup.events"),
        };
        attach::attach_programs(&mut ebpf, &mut tracer.links, &mut tracer.attached)?;
        tracer.ebpf = Some(ebpf);
        tracing::debug!(
            "attached {} tracepoints in {:?}",
            tracer.attached.len(),
            t0.elapsed()
        );
        Ok(tracer)
    }

    /// A live stream of the events decoded from now on, for watching a trace as it runs
    /// (`minify trace --follow`, progress displays). The complete trace is still what
    /// [`Tracer::finish`] returns; the stream ends when the tracer finishes or is dropped.
    /// Subscribing again replaces the earlier stream. Start the tracer with
    /// [`TraceOptions::live`](crate::TraceOptions::live) for events as they happen; without
    /// it they come in per-CPU batches.
    pub fn subscribe(&self) -> TraceEvents {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        *self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tx);
        TraceEvents(rx)
    }

    /// Which backend is recording.
    pub fn backend(&self) -> Backend {
        Backend::Tracepoints
    }

    /// The hooks attached (`category/name`), for diagnostics.
    pub fn attached(&self) -> &[String] {
        &self.attached
    }

    /// Events lost so far, per `op` slot.
    fn lost_by_op(&self) -> BTreeMap<u32, u64> {
        let mut out = BTreeMap::new();
        for slot in 0..op::OP_SLOTS {
            if let Ok(values) = self.lost.get(&slot, 0) {
                let n: u64 = values.iter().sum();
                if n > 0 {
                    out.insert(slot, n);
                }
            }
        }
        out
    }

    /// Detach everything, drain the ring buffer and return the trace.
    pub fn finish(self) -> Result<minify_model::Trace, TraceError> {
        self.finish_recording().map(|r| r.trace)
    }

    /// Like [`Tracer::finish`], with the process tree and counters.
    pub fn finish_recording(mut self) -> Result<Recording, TraceError> {
        let t0 = Instant::now();
        // Detach first: after this no new records arrive, so the drain below is complete.
        // When the cgroup is already empty nothing can add records any more, and the detach
        // (seconds: each tracepoint waits for an RCU grace period) runs in the background.
        let empty = fs_err::read_to_string(&self.cgroup_events)
            .is_ok_and(|t| t.lines().any(|l| l.trim() == "populated 0"));
        attach::detach(std::mem::take(&mut self.links), self.ebpf.take(), empty);
        let detach = t0.elapsed();
        // The last events of each CPU are still in its batch. Nothing adds to them any more:
        // the programs are detached, or the cgroup is empty (every program starts with the
        // cgroup check).
        let tail = self
            .batches
            .get(&0, 0)
            .map(|per_cpu| batch_tail(per_cpu.iter()))
            .unwrap_or_default();
        *self
            .stop
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = tail;
        self.stop.now();
        let decoder = self
            .reader
            .take()
            .expect("reader present until finish")
            .join()
            .map_err(|_| TraceError::Reader("reader thread panicked".into()))?;
        let lost = self.lost_by_op();
        let rec = decoder.finish(&lost);
        tracing::debug!(
            records = rec.records,
            events = rec.trace.events.len(),
            lost = rec.trace.lost_total(),
            ?detach,
            total = ?self.started.elapsed(),
            "trace finished"
        );
        Ok(rec)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        attach::detach_all(std::mem::take(&mut self.links));
        drop(self.ebpf.take());
        self.stop.now();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Load the eBPF object with this kernel's layout for `cgroup` (the programs are loaded
/// into the kernel one by one when they are attached).
fn load(cgroup: &TraceCgroup, options: TraceOptions) -> Result<Ebpf, TraceError> {
    let btf = Btf::from_sys()?;
    let kfunc = RdonlyCast::find(&btf, options);
    let config = kernel_config(&btf, (cgroup.id(), cgroup.level()), options, kfunc)?;
    tracing::debug!(?config, ?kfunc, "kernel layout");
    let (object, calls) = crate::patch::rewrite_kfunc_calls(EBPF_OBJECT, kfunc.map(|k| k.func))
        .map_err(|detail| TraceError::Load {
            program: "minify-trace-ebpf".into(),
            detail,
            verifier_log: String::new(),
        })?;
    tracing::debug!(
        calls,
        "files read with {}",
        if kfunc.is_some() {
            "direct loads (bpf_rdonly_cast)"
        } else {
            "probe reads"
        }
    );
    EbpfLoader::new()
        .override_global("CONFIG", &config, true)
        .map_max_entries("EVENTS", options.ring_bytes)
        .load(object.bytes())
        .map_err(|e| aya_error("loading", "eBPF object", &e))
}

/// The frames left in the per-CPU batches, one CPU after the other (a length beyond the
/// buffer, which the programs never write, is cut to it).
fn batch_tail<'a>(per_cpu: impl Iterator<Item = &'a Batch>) -> Vec<u8> {
    let mut tail = Vec::new();
    for b in per_cpu {
        let len = (b.len as usize).min(b.buf.len());
        tail.extend_from_slice(&b.buf[..len]);
    }
    tail
}

#[cfg(test)]
mod tests {
    use minify_trace_common::BATCH_BUF;

    use super::*;

    // A test-only value, boxed straight away; the programs' batches live in a map.
    #[allow(clippy::large_stack_arrays)]
    fn batch(len: u64, fill: u8) -> Box<Batch> {
        Box::new(Batch {
            len,
            tid: 7,
            n_by_op: [0; op::OP_SLOTS as usize],
            buf: [fill; BATCH_BUF],
        })
    }

    #[test]
    fn batch_tail_takes_each_cpus_frames_in_order() {
        let cpus = [batch(3, 1), batch(0, 2), batch(2, 3)];
        assert_eq!(batch_tail(cpus.iter().map(AsRef::as_ref)), [1, 1, 1, 3, 3]);
        let huge = [batch(u64::MAX, 4)];
        assert_eq!(batch_tail(huge.iter().map(AsRef::as_ref)).len(), BATCH_BUF);
        assert!(batch_tail(std::iter::empty()).is_empty());
    }
}
