//! Phase `trace`: the original image runs in a fresh cgroup with the tracer attached before
//! its first exec, is exercised, stopped and removed; the trace is what its processes
//! touched. Also the benchmark's untraced runs (`--measure-untraced`), which precede it.

use std::time::Instant;

use anyhow::Context as _;
use minify_model::Trace;
use minify_runtime::{CgroupPin, Container, Probe, ProbeResult, Readiness, RunSpec, Runtime};
use minify_trace::{TraceCgroup, TraceOptions, Tracer};

use super::exercise::{Exercised, Recording, Workload, exercise};
use super::progress::Progress;
use super::{RunPlan, RunState, indent};
use crate::errors::Kept;
use crate::exit;
use crate::report::MainProcess;

/// The tracer and what it traces: a fresh cgroup (pinned so `minify gc` leaves it alone
/// while no process runs in it). Dropped in this order: the tracer (detached), then the
/// cgroup (removed), then the pin.
pub struct TraceSession {
    tracer: Tracer,
    cgroup: TraceCgroup,
    pin: CgroupPin,
}

impl TraceSession {
    /// `ring_bytes`: `--ring-bytes`, else the tracer's default.
    fn start(ring_bytes: Option<u32>) -> anyhow::Result<TraceSession> {
        let cgroup = TraceCgroup::create()?;
        let pin = CgroupPin::open(cgroup.path())
            .with_context(|| format!("opening the trace cgroup {}", cgroup.path().display()))
            .map_err(crate::env_error)?;
        let mut topts = TraceOptions::default();
        if let Some(n) = ring_bytes {
            topts.ring_bytes = n;
        }
        let tracer = Tracer::start(&cgroup, topts)?;
        Ok(TraceSession {
            tracer,
            cgroup,
            pin,
        })
    }
}

/// [`TraceSession::start`] on a thread of its own, from the start of the run: the container
/// starts only once it is done. Dropped early (an error while opening the image, Ctrl-C),
/// it waits for the thread and drops what it made, so the cgroup and the BPF links are gone
/// before the run returns. Its errors are seen only when it is needed (after the image was
/// opened), so a bad image is still reported as such first.
pub struct TracerLoad(Option<std::thread::JoinHandle<anyhow::Result<TraceSession>>>);

impl TracerLoad {
    pub fn start(ring_bytes: Option<u32>) -> TracerLoad {
        TracerLoad(Some(std::thread::spawn(move || {
            TraceSession::start(ring_bytes)
        })))
    }

    fn finish(mut self) -> anyhow::Result<TraceSession> {
        let handle = self.0.take().expect("joined only here or in drop");
        tokio::task::block_in_place(|| handle.join())
            .map_err(|_| anyhow::anyhow!("loading the tracer panicked"))?
    }
}

impl Drop for TracerLoad {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            // At most the second the load takes; what it made is dropped with its result.
            let _ = handle.join();
        }
    }
}

/// The traced container, exercised and still there (its logs and names go into the error
/// when a probe failed on it). Dropped in this order: the container, then the tracer and
/// its cgroup (a cgroup must be empty to be removed).
pub struct Live {
    container: Container,
    session: TraceSession,
    pub exercised: Exercised,
    /// Milliseconds from the container's start to the end of its probes.
    pub probe_phase_ms: u64,
}

/// What `trace` hands on: the trace and what the original image did.
pub struct Traced {
    pub trace: Trace,
    pub readiness: Readiness,
    pub originals: Vec<ProbeResult>,
    /// With no probe: how the main process ended.
    pub main: Option<MainProcess>,
}

/// Untraced first, one warm-up run then three measured ones: the median, in milliseconds.
/// The traced run then starts from the same warm caches (image layers, page cache), so the
/// difference is the tracer's, not a cold start's. These runs are force-removed, not
/// stopped: their shutdown is not part of what is measured.
pub async fn measure_untraced(
    plan: &RunPlan,
    runtime: &Runtime,
    image_id: &str,
    work: &Workload,
    progress: &Progress,
) -> anyhow::Result<Option<u64>> {
    progress.phase(format!("running {} without tracing", plan.image));
    let spec = RunSpec {
        image: image_id.to_owned(),
        overrides: plan.overrides.clone(),
        cgroup_parent: None,
        stop_timeout: plan.stop_timeout,
    };
    let unrecorded = Recording {
        original: false,
        state: None,
    };
    let mut samples = Vec::new();
    for round in 0..4 {
        let start = Instant::now();
        let c = runtime.start(&spec).await?;
        exercise(plan, work, &c, progress, unrecorded).await?;
        let ms = start.elapsed().as_millis() as u64;
        c.remove().await?;
        if round > 0 {
            samples.push(ms);
        }
    }
    samples.sort_unstable();
    Ok(samples.get(samples.len() / 2).copied())
}

/// Attach the tracer (the one `load` made, else a new one), start the original image in its
/// cgroup and exercise it.
pub async fn run_traced(
    plan: &RunPlan,
    runtime: &Runtime,
    image_id: &str,
    work: &Workload,
    load: Option<TracerLoad>,
    progress: &Progress,
    state: &RunState,
) -> anyhow::Result<Live> {
    progress.phase(format!(
        "tracing {} with {} probe(s)",
        plan.image,
        work.count()
    ));
    let session = match load {
        Some(load) => load.finish()?,
        None => TraceSession::start(plan.ring_bytes)?,
    };
    let spec = RunSpec {
        image: image_id.to_owned(),
        overrides: plan.overrides.clone(),
        cgroup_parent: Some(session.cgroup.name().to_owned()),
        stop_timeout: plan.stop_timeout,
    };
    let phase_start = Instant::now();
    let container = runtime.start(&spec).await?;
    let recording = Recording {
        original: true,
        state: Some(state),
    };
    let exercised = exercise(plan, work, &container, progress, recording).await?;
    Ok(Live {
        container,
        session,
        exercised,
        probe_phase_ms: phase_start.elapsed().as_millis() as u64,
    })
}

impl Live {
    /// The error for a probe that failed on the original image (exit 2: the probe is wrong,
    /// not the image), with its output and the container's.
    pub async fn failed_on_original(&self, plan: &RunPlan) -> Option<anyhow::Error> {
        let bad = self.exercised.results.iter().find(|r| !r.passed)?;
        let logs = self.container.logs_tail(20).await;
        let fix = if matches!(bad.probe, Probe::Healthcheck(_)) {
            "fix the image's HEALTHCHECK, or leave it out with --no-healthcheck"
        } else {
            "fix the probe or the image first"
        };
        Some(crate::with_code(
            anyhow::anyhow!(
                "{} on the original image {} (container {}, cgroup {}); {fix}\nprobe output:\n{}\ncontainer output:\n{}",
                bad.summary(),
                plan.image,
                self.container.name(),
                self.session.cgroup.name(),
                indent(&bad.output),
                indent(&logs)
            ),
            exit::USAGE,
        ))
    }

    /// Stop and remove the container, detach the tracer, remove its cgroup; write the trace
    /// to `--trace-out`.
    pub async fn finish(
        self,
        plan: &RunPlan,
        progress: &Progress,
        kept: &Kept,
    ) -> anyhow::Result<Traced> {
        let Live {
            container,
            session,
            exercised,
            ..
        } = self;
        // The container goes first, also when stopping it fails: a cgroup must be empty to
        // be removed.
        stop_and_remove(container, progress).await?;
        let TraceSession {
            tracer,
            cgroup,
            pin,
        } = session;
        let trace = tokio::task::block_in_place(|| tracer.finish())?;
        drop(cgroup);
        drop(pin);
        if let Some(path) = &plan.trace_out {
            let json = serde_json::to_vec_pretty(&trace).context("serialising the trace")?;
            crate::files::write_atomic(path, &json)
                .with_context(|| format!("writing the trace {}", path.display()))?;
            kept.add(format!("the trace {}", path.display()));
        }
        Ok(Traced {
            trace,
            readiness: exercised.readiness,
            originals: exercised.results,
            main: exercised.main,
        })
    }
}

/// Stop the container and remove it (its guard removes it if this fails).
async fn stop_and_remove(container: Container, progress: &Progress) -> anyhow::Result<()> {
    progress.phase(format!("stopping {}", container.name()));
    container.stop().await?;
    container.remove().await?;
    Ok(())
}

impl Traced {
    /// A trace that lost events makes an incomplete file set: refused (exit 3) unless
    /// `--allow-lossy`, which makes it a warning.
    pub fn check_loss(&self, plan: &RunPlan) -> anyhow::Result<Option<String>> {
        let lost = self.trace.lost_total();
        if lost == 0 {
            return Ok(None);
        }
        if !plan.allow_lossy {
            return Err(crate::with_code(
                anyhow::anyhow!(
                    "the trace lost {lost} events (ring buffer full: {:?}); the file set would be incomplete. Rerun with a bigger --ring-bytes, or pass --allow-lossy to build anyway",
                    lost_by_kind(&self.trace)
                ),
                exit::ENVIRONMENT,
            ));
        }
        Ok(Some(format!(
            "--allow-lossy: the trace lost {lost} events, the minified image may lack files the workload used"
        )))
    }
}

/// Lost events by kind, the kinds that lost any.
pub fn lost_by_kind(trace: &Trace) -> std::collections::BTreeMap<String, u64> {
    trace
        .lost
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (k.name().to_owned(), *n))
        .collect()
}
