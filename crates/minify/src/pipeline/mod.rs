//! The `minify run` pipeline: open -> trace a real run with probes -> closure -> allowlist ->
//! pack -> write -> verify. One direction, each phase timed for the report. Each phase is a
//! module that hands the next a typed result (`open::Opened`, `trace::Traced`,
//! `close::Closed`, `verify::Verified`); `execute` below only calls them in order, and the
//! report is filled from those results in one place, `assemble.rs`.
//!
//! Cleanup is by ownership: the container, the tracer and its cgroup, the temporary verify
//! image and the source/pack temp dirs are guards declared in an order that drops each
//! container first (its cgroup must be empty before the tracer's cgroup can be removed, and
//! an image in use by a container cannot be removed). Ctrl-C drops this whole future (see
//! `cmd/run.rs`), which runs the same guards. What a SIGKILL leaves, `minify gc` finds by the
//! owner recorded on it.
//!
//! A file output (`docker-archive:`, `oci:`, `oci-archive:`) is verified on a copy loaded into
//! the daemon under a temporary name ([`minify_runtime::TempImage`]): the same packed image,
//! so the same id. The file is written only once verification passed, so a failed run never
//! leaves it at the requested path.
//!
//! A file source is read in place (its layers give the rootfs view and the packed image) and
//! run from a copy loaded the same way: the file's own config and layers under a temporary
//! name, so the same id, and none of the names the file carries. The copy is removed once
//! the traced run is over, and by its guard on every other path; the report, the allowlist
//! and the messages name the file as given.

mod assemble;
pub mod close;
mod exercise;
pub mod open;
pub mod pack;
pub mod progress;
pub mod source_guard;
mod trace;
mod verify;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use minify_closure::ClosureOptions;
use minify_image::ImageRef;
use minify_runtime::{Overrides, Probe, ProbeResult, Runtime};

use crate::errors::Kept;
use crate::exit;
use crate::report::{ProbeReport, Report, VerifyStatus};
use close::Closed;
use exercise::Workload;
use open::Opened;
use progress::Progress;
use trace::{Traced, TracerLoad};
use verify::Delivery;

/// Everything `minify run` was asked to do, already validated.
#[derive(Clone, Debug)]
#[allow(clippy::struct_excessive_bools)]
pub struct RunPlan {
    /// The source image as given: in the daemon, or a file (`docker-archive:`, `oci:`,
    /// `oci-archive:`) that runs from a temporary copy in the daemon.
    pub image: ImageRef,
    pub probes: Vec<Probe>,
    pub overrides: Overrides,
    pub probe_timeout: Duration,
    /// Bounds the whole readiness wait: ports, `--ready-*`, `--probe-http` retries.
    pub ready_timeout: Duration,
    /// `--ready-http PATH`: GET on every exposed TCP port answers below 500.
    pub ready_http: Vec<String>,
    /// `--ready-cmd CMD`: exits 0 on the host, with the probes' environment.
    pub ready_cmd: Vec<String>,
    /// With no probe: how long to let the entrypoint run.
    pub timeout: Duration,
    pub stop_timeout: Duration,
    pub closure: ClosureOptions,
    /// The output; `None` only for a file source without `--tag`: then `NAME:TAG-min` in the
    /// daemon after the name the file carries, known once it is open.
    pub output: Option<ImageRef>,
    pub allowlist_out: Option<PathBuf>,
    /// `--sbom FILE` (checked writable already).
    pub sbom: Option<PathBuf>,
    pub verify: bool,
    pub allow_lossy: bool,
    pub ring_bytes: Option<u32>,
    /// `--force` and `--compression`.
    pub write: minify_image::WriteOptions,
    /// Also run the original image's probe phase without tracing, to measure the tracer's
    /// overhead (benchmarks).
    pub measure_untraced: bool,
    /// Where to write the raw trace as JSON.
    pub trace_out: Option<PathBuf>,
    /// Run the image's `HEALTHCHECK` as a probe.
    pub healthcheck: bool,
    /// `--fail-on-shell`: stop with exit 1, before anything is written, when the output
    /// would keep a shell.
    pub fail_on_shell: bool,
}

/// What a run produced: the report and the exit code it calls for.
pub struct RunOutcome {
    pub report: Report,
    pub code: u8,
}

/// What a run knew so far, kept outside the pipeline's future: a run that fails, or is
/// interrupted (the future is dropped), still reports the phase it was in, the probes that
/// had run and the timings so far.
#[derive(Debug, Default)]
pub struct RunState(std::sync::Mutex<Report>);

impl RunState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Report> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The run enters `phase`, knowing `report` and the phases `timer` has timed.
    fn enter(&self, phase: &str, report: &Report, timer: &Timer) {
        let mut r = report.clone();
        phase.clone_into(&mut r.phase);
        r.timings_ms.clone_from(&timer.0);
        *self.lock() = r;
    }

    /// A probe finished: on the original image it is appended, on the minified image it
    /// fills the `index`th probe's `minified`.
    fn probe_done(&self, original: bool, index: usize, result: &ProbeResult) {
        let mut r = self.lock();
        if original {
            r.probes.push(ProbeReport {
                name: result.probe.to_string(),
                original: result.clone(),
                minified: None,
            });
        } else if let Some(p) = r.probes.get_mut(index) {
            p.minified = Some(result.clone());
        }
    }

    /// What the run knew when it stopped.
    pub fn take(&self) -> Report {
        std::mem::take(&mut *self.lock())
    }
}

/// Tool name written into allowlists and reports.
pub fn tool_name() -> String {
    format!("minify {}", env!("CARGO_PKG_VERSION"))
}

/// The default output, `NAME:TAG-min` in the daemon (`NAME:latest-min` without a tag), named
/// after the reference the user gave; for an id or `name@digest` reference, or a file source,
/// after the first `name:tag` in `repo_tags` (the image's own tags, e.g. a docker-archive's
/// RepoTags). `None` when the image has no name at all.
pub fn default_output(reference: &ImageRef, repo_tags: &[String]) -> Option<ImageRef> {
    let min = |repo: &str, tag: Option<&str>| {
        format!("{repo}:{}-min", tag.unwrap_or("latest"))
            .parse()
            .ok()
    };
    if let Some((repo, tag)) = reference.daemon_repo_tag()
        && !repo.starts_with("sha256:")
        && !repo.is_empty()
        && !(tag.is_none() && matches!(reference, ImageRef::Daemon(n) if n.contains('@')))
    {
        return min(repo, tag);
    }
    repo_tags.iter().find_map(|t| {
        let r: ImageRef = format!("docker-daemon:{t}").parse().ok()?;
        let (repo, tag) = r.daemon_repo_tag()?;
        tag.and_then(|tag| min(repo, Some(tag)))
    })
}

/// Times phases in order.
struct Timer(Vec<(String, u64)>, Instant);
impl Timer {
    fn new() -> Self {
        Timer(Vec::new(), Instant::now())
    }
    fn lap(&mut self, phase: &str) {
        self.0
            .push((phase.to_owned(), self.1.elapsed().as_millis() as u64));
        self.1 = Instant::now();
    }
}

fn indent(s: &str) -> String {
    s.trim_end()
        .lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One run going through the phases: what it was asked, where it reports, and the report
/// so far (filled only through [`assemble`]).
struct Run<'a> {
    plan: &'a RunPlan,
    progress: &'a Progress,
    kept: &'a Kept,
    state: &'a RunState,
    report: Report,
    timer: Timer,
}

impl Run<'_> {
    /// The run enters `phase`: what an interrupted or failed run reports from now on.
    fn enter(&self, phase: &str) {
        self.state.enter(phase, &self.report, &self.timer);
    }

    /// The phase that just ended took this long.
    fn lap(&mut self, phase: &str) {
        self.timer.lap(phase);
    }
}

/// Run the pipeline. What it writes and keeps even if it is interrupted later (the allowlist,
/// an output written before verification) is recorded in `kept`, for the message.
pub async fn execute(
    plan: &RunPlan,
    progress: &Progress,
    kept: &Kept,
    state: &RunState,
) -> anyhow::Result<RunOutcome> {
    let mut run = Run {
        plan,
        progress,
        kept,
        state,
        report: Report {
            tool: tool_name(),
            image: plan.image.to_string(),
            ..Default::default()
        },
        timer: Timer::new(),
    };
    run.enter("open");
    progress.phase(format!("opening {}", plan.image));
    let runtime = Runtime::connect().await?;
    // The kernel takes about a second to verify the tracer's programs: load them while the
    // image is opened. Not when the untraced runs are measured: an attached tracer would
    // slow every syscall on the machine, theirs too.
    let tracer_load = (!plan.measure_untraced).then(|| TracerLoad::start(plan.ring_bytes));
    let mut opened = run.open(&runtime).await?;
    let work = Workload::new(plan, &opened.run_config);
    let traced = run.trace(&runtime, &mut opened, &work, tracer_load).await?;
    let closed = run.close(&opened, &traced)?;
    let code = run
        .deliver(&runtime, opened, &closed, &work, &traced)
        .await?;
    let mut report = run.report;
    report.timings_ms = run.timer.0;
    Ok(RunOutcome { report, code })
}

impl Run<'_> {
    /// `open`: the output, the source, its view and its run config.
    async fn open(&mut self, runtime: &Runtime) -> anyhow::Result<Opened> {
        let located = open::locate(self.plan).await?;
        self.report.output = located.output.to_string();
        self.enter("open");
        let opened = open::open(self.plan, runtime, located, self.progress).await?;
        assemble::opened(&mut self.report, &opened);
        self.lap("open");
        Ok(opened)
    }

    /// `trace` (after `untraced-run` when measured): the original image, traced and
    /// exercised; its temporary copy goes once it is over.
    async fn trace(
        &mut self,
        runtime: &Runtime,
        opened: &mut Opened,
        work: &Workload,
        tracer_load: Option<TracerLoad>,
    ) -> anyhow::Result<Traced> {
        let (plan, progress) = (self.plan, self.progress);
        let image_id = opened.run_config.id.clone();
        if plan.measure_untraced {
            self.enter("untraced-run");
            self.report.untraced_probe_phase_ms =
                trace::measure_untraced(plan, runtime, &image_id, work, progress).await?;
            self.lap("untraced-run");
        }
        self.enter("trace");
        let live = trace::run_traced(
            plan,
            runtime,
            &image_id,
            work,
            tracer_load,
            progress,
            self.state,
        )
        .await?;
        assemble::exercised(&mut self.report, &live);
        if let Some(error) = live.failed_on_original(plan).await {
            assemble::failed_on_original(&mut self.report, &live);
            self.enter("trace");
            return Err(error);
        }
        let traced = live.finish(plan, progress, self.kept).await?;
        let copy_warning = opened.remove_source_copy().await;
        assemble::traced(&mut self.report, &traced);
        self.report.warnings.extend(copy_warning);
        self.lap("trace");
        self.enter("closure");
        Ok(traced)
    }

    /// `closure`: the kept set and the allowlist.
    fn close(&mut self, opened: &Opened, traced: &Traced) -> anyhow::Result<Closed> {
        let lossy = traced.check_loss(self.plan)?;
        self.progress.phase("computing the file closure");
        let closed = close::close(self.plan, opened, traced, self.kept)?;
        let later = std::mem::take(&mut self.report.warnings);
        assemble::closed(&mut self.report, self.plan, opened, &closed, lossy, later);
        if let Some(error) = close::policy_refusal(self.plan, &closed) {
            self.report.status = crate::report::RunStatus::PolicyFailed;
            // The report the error path writes is the one saved on entering a phase.
            self.enter("closure");
            return Err(error);
        }
        self.lap("closure");
        self.enter("pack");
        Ok(closed)
    }
}

impl Run<'_> {
    /// `pack`, `write` and `verify`: the new image, written before verification or (a file
    /// output) only once it passed. The exit code: 0, or 1 when verification failed.
    async fn deliver(
        &mut self,
        runtime: &Runtime,
        opened: Opened,
        closed: &Closed,
        work: &Workload,
        traced: &Traced,
    ) -> anyhow::Result<u8> {
        let plan = self.plan;
        let Opened {
            source,
            view,
            output,
            ..
        } = opened;
        // Exactly what `minify build --allowlist` does, so the ids match.
        let ends = pack::Ends {
            source: &plan.image,
            output: &output,
            sbom: plan.sbom.as_deref(),
        };
        let paths = closed.allowlist.path_set();
        let packed = pack::pack(
            &view,
            &source,
            (&paths, &closed.closure.generated),
            &ends,
            self.progress,
        )?;
        self.lap("pack");
        self.report.output_id = packed.image.id().to_string();
        let mut delivery = Delivery::choose(plan, runtime, &output, &packed.image).await;
        if !delivery.write_after_verify {
            self.write(&packed, &output).await?;
        }
        let (size, daemon_output_id) = verify::size_after(runtime, &output, &packed.image).await?;
        assemble::size_after(&mut self.report, size);
        drop(view);
        drop(source);
        let image = delivery
            .image_to_verify(
                plan,
                &output,
                &packed.image,
                daemon_output_id,
                self.progress,
            )
            .await?;
        let Some((image, id)) = image else {
            self.report.verify = Some(VerifyStatus::Skipped);
            self.report.probes = assemble::probe_reports(&traced.originals, Vec::new());
            return Ok(0);
        };
        self.report.verified_image = Some(image.clone());
        self.report.verified_image_id = Some(id);
        self.enter("verify");
        let verified = verify::verify(
            plan,
            runtime,
            work,
            image,
            traced,
            self.progress,
            self.state,
        )
        .await?;
        assemble::verified(&mut self.report, &verified);
        let code = if verified.failures.is_empty() {
            0
        } else {
            exit::VERIFY_FAILED
        };
        self.report.warnings.extend(delivery.remove_copy().await);
        self.lap("verify");
        if delivery.write_after_verify {
            if code == 0 {
                self.write(&packed, &output).await?;
            } else {
                self.report.warnings.insert(
                    0,
                    format!("{output} was not written, because verification failed"),
                );
            }
        }
        drop(packed);
        self.report.probes = assemble::probe_reports(&traced.originals, verified.results);
        Ok(code)
    }

    /// `write`: the packed image to the output.
    async fn write(&mut self, packed: &pack::Packed, output: &ImageRef) -> anyhow::Result<()> {
        self.enter("write");
        let written = pack::write(packed, output, &self.plan.write, self.progress).await?;
        assemble::written(&mut self.report, &written);
        self.kept.add(if self.plan.verify && !output.is_file() {
            format!("the output {output} (written before verification, not verified)")
        } else {
            format!("the output {output}")
        });
        self.lap("write");
        Ok(())
    }
}
