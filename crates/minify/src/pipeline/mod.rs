//! The `minify run` pipeline: open -> trace a real run with probes -> closure -> allowlist ->
//! pack -> write -> verify. One direction, each phase timed for the report.
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

pub mod progress;
pub mod source_guard;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use minify_closure::{ClosureOptions, SkeletonInput, compute, compute_with_workdir};
use minify_image::{ImageRef, PackOptions, RootfsView, SourceImage, pack};
use minify_model::allowlist::SourceImage as AllowlistSource;
use minify_model::{ImagePath, Rootfs as _};
use minify_runtime::{
    CgroupPin, Container, Overrides, Probe, ProbeResult, Readiness, RunSpec, Runtime,
};
use minify_trace::{TraceCgroup, TraceOptions, Tracer};

use crate::report::{FileSize, MainProcess, ProbeReport, Report, SetReport, VerifyStatus};
use crate::{exit, with_code};
use progress::Progress;

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
}

/// What a container is made to do: the probes in the order given, then the image's health
/// check; with no probe given, the entrypoint runs until it exits or the timeout, and the
/// health check runs then if it is still running.
struct Workload {
    probes: Vec<Probe>,
    /// With no probe: the health check, run once the wait is over.
    after_wait: Option<Probe>,
}

impl Workload {
    fn new(plan: &RunPlan, image: &minify_runtime::ImageInfo) -> Workload {
        let healthcheck = image
            .healthcheck
            .clone()
            .filter(|_| plan.healthcheck)
            .map(Probe::Healthcheck);
        let mut probes = plan.probes.clone();
        if probes.is_empty() {
            Workload {
                probes,
                after_wait: healthcheck,
            }
        } else {
            probes.extend(healthcheck);
            Workload {
                probes,
                after_wait: None,
            }
        }
    }
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

/// Open the source image (a daemon image is exported into a temp dir; a file is read in
/// place, and its errors name it already).
async fn open_source(image: &ImageRef) -> anyhow::Result<SourceImage> {
    SourceImage::open(image).await.map_err(|e| {
        let e = crate::lib_error(minify_image::ImageError::from(e));
        if image.is_file() {
            e
        } else {
            e.context(format!("opening {image}"))
        }
    })
}

/// Refuse, before tracing, an output that is the source (whatever `--force` says) or that
/// exists (without `--force`).
async fn check_output(
    plan: &RunPlan,
    source_id: &str,
    output: &ImageRef,
    runtime: &Runtime,
) -> anyhow::Result<()> {
    source_guard::refuse_source_as_output(&plan.image, source_id, output, Some(runtime)).await?;
    if let ImageRef::DockerArchive {
        image: Some(minify_image::ArchiveImage::Index(_)),
        ..
    } = output
    {
        anyhow::bail!(
            "output {output}: {}",
            minify_image::sink::ARCHIVE_INDEX_OUTPUT
        );
    }
    if let ImageRef::Daemon(out) = output
        && !plan.write.force
        && runtime.inspect_image(out).await.is_ok()
    {
        anyhow::bail!("output image {out} already exists (use --force to replace it)");
    }
    if let Some(path) = minify_image::source::file_path(output) {
        // Fail before tracing, not after: the sink refuses to replace an output too.
        if !plan.write.force && path.exists() {
            anyhow::bail!(
                "output {} already exists (use --force to replace it)",
                path.display()
            );
        }
    }
    Ok(())
}

/// `--probe-http` GETs every exposed TCP port. Refuse it at once on an image that exposes
/// none, or exposes `0/tcp` (no server can listen on port 0: the run would wait out the
/// whole readiness timeout, then fail the probe on the original image).
fn refuse_http_probe_without_port(
    plan: &RunPlan,
    info: &minify_runtime::ImageInfo,
) -> anyhow::Result<()> {
    let Some(probe) = plan.probes.iter().find(|p| matches!(p, Probe::Http(_))) else {
        return Ok(());
    };
    let why = if info
        .exposed_ports
        .iter()
        .any(|p| p.port == 0 && p.proto == "tcp")
    {
        "exposes port 0/tcp, which no server can listen on"
    } else if info.tcp_ports().is_empty() {
        "exposes no TCP port"
    } else {
        return Ok(());
    };
    Err(with_code(
        anyhow::anyhow!(
            "{probe}: {} {why}, and --probe-http GETs every exposed TCP port; probe it with --probe-cmd (the container's address is in $MINIFY_HOST) or --probe-exec instead",
            plan.image
        ),
        exit::USAGE,
    ))
}

/// Run the pipeline. What it writes and keeps even if it is interrupted later (the allowlist,
/// an output written before verification) is recorded in `kept`, for the message.
pub async fn execute(
    plan: &RunPlan,
    progress: &Progress,
    kept: &crate::cmd::Kept,
    state: &RunState,
) -> anyhow::Result<RunOutcome> {
    let mut timer = Timer::new();
    let mut report = Report {
        tool: tool_name(),
        image: plan.image.to_string(),
        ..Default::default()
    };
    state.enter("open", &report, &timer);

    // --- open: the daemon, the image's run config, its layers as a rootfs view. A file
    // source is opened (and so checked) first, before anything is made in the daemon.
    progress.phase(format!("opening {}", plan.image));
    let runtime = Runtime::connect().await.map_err(crate::lib_error)?;
    // The kernel takes about a second to verify the tracer's programs: load them while the
    // image is opened. Not when the untraced runs are measured: an attached tracer would
    // slow every syscall on the machine, theirs too.
    let mut tracer_load = (!plan.measure_untraced).then(|| TracerLoad::start(plan.ring_bytes));
    let file_source = if plan.image.is_file() {
        Some(open_source(&plan.image).await?)
    } else {
        None
    };
    let output = match (&plan.output, &file_source) {
        (Some(out), _) => out.clone(),
        (None, Some(src)) => default_output(&plan.image, src.repo_tags()).with_context(|| {
            format!(
                "{} carries no name:tag to derive the default output NAME:TAG-min from; give --tag",
                plan.image
            )
        })?,
        (None, None) => anyhow::bail!("no output for {}; give --tag", plan.image),
    };
    report.output = output.to_string();
    state.enter("open", &report, &timer);
    let daemon_info = match &plan.image {
        ImageRef::Daemon(name) => Some(
            runtime
                .inspect_image(name)
                .await
                .map_err(crate::lib_error)?,
        ),
        _ => None,
    };
    let source_id = match (&daemon_info, &file_source) {
        (Some(info), _) => info.id.clone(),
        (None, Some(src)) => src.id().to_string(),
        (None, None) => String::new(),
    };
    check_output(plan, &source_id, &output, &runtime).await?;
    let source = match file_source {
        Some(source) => source,
        None => open_source(&plan.image).await?,
    };
    progress.phase(format!("indexing the layers of {}", plan.image));
    let view = tokio::task::block_in_place(|| RootfsView::build(&source))
        .with_context(|| format!("reading the layers of {}", plan.image))?;
    // Bad --include/--exclude rules fail now, not after a whole traced run: the closure
    // checks them against the image, which an empty trace is enough for.
    tokio::task::block_in_place(|| {
        compute(&view, &minify_model::Trace::default(), &[], &plan.closure)
    })?;
    // A file source runs from a temporary copy in the daemon. Declared before every
    // container, so on an early return the containers go first (an image a container uses
    // cannot be removed).
    let mut source_copy = None;
    let already = match &daemon_info {
        Some(_) => None,
        None => already_in_daemon(&runtime, &source.id().to_string()).await,
    };
    let info = if let Some(info) = daemon_info {
        info
    } else if let Some(info) = already {
        progress.println(&format!(
            "minify: running {} as the identical image already in the Docker daemon ({})",
            plan.image, info.reference
        ));
        info
    } else {
        let copy = runtime.temp_image();
        let name = copy.reference().to_owned();
        progress.phase(format!(
            "loading {} into the Docker daemon as {name}",
            plan.image
        ));
        source_copy = Some(copy);
        let id = source.load_into_daemon(&name).await.map_err(|e| {
            crate::lib_error(minify_image::ImageError::from(e))
                .context(format!("loading {} into the Docker daemon", plan.image))
        })?;
        progress.println(&format!(
            "minify: running {} from a temporary copy in the Docker daemon, {name} ({id})",
            plan.image
        ));
        runtime
            .inspect_image(&name)
            .await
            .map_err(crate::lib_error)?
    };
    refuse_http_probe_without_port(plan, &info)?;
    let work = Workload::new(plan, &info);
    let healthcheck_warning = info.healthcheck.as_ref().filter(|_| !plan.healthcheck).map(|h| {
        format!(
            "the image's HEALTHCHECK ({:?}) was not run (--no-healthcheck): the minified image keeps it, but not what it runs unless something else used that too",
            h.command
        )
    });
    report.image_id = source.id().to_string();
    report.size_before = info.size;
    report.files_before = view.file_count() as u64;
    timer.lap("open");
    state.enter(
        if plan.measure_untraced {
            "untraced-run"
        } else {
            "trace"
        },
        &report,
        &timer,
    );

    if plan.measure_untraced {
        // Untraced first, one warm-up run then three measured ones (the median is kept): the
        // traced run then starts from the same warm caches (image layers, page cache), so the
        // difference is the tracer's, not a cold start's. These runs are force-removed, not
        // stopped: their shutdown is not part of what is measured.
        progress.phase(format!("running {} without tracing", plan.image));
        let spec = RunSpec {
            image: info.id.clone(),
            overrides: plan.overrides.clone(),
            cgroup_parent: None,
            stop_timeout: plan.stop_timeout,
        };
        let mut samples = Vec::new();
        for round in 0..4 {
            let start = Instant::now();
            let c = runtime.start(&spec).await.map_err(crate::lib_error)?;
            exercise(plan, &work, &c, progress, false, None).await?;
            let ms = start.elapsed().as_millis() as u64;
            c.remove().await.map_err(crate::lib_error)?;
            if round > 0 {
                samples.push(ms);
            }
        }
        samples.sort_unstable();
        report.untraced_probe_phase_ms = samples.get(samples.len() / 2).copied();
        timer.lap("untraced-run");
        state.enter("trace", &report, &timer);
    }

    // --- trace: cgroup + tracer attached before the container exists, then run and probe.
    progress.phase(format!(
        "tracing {} with {} probe(s)",
        plan.image,
        work.probes.len() + usize::from(work.after_wait.is_some())
    ));
    let Traced {
        tracer,
        cgroup,
        pin,
    } = match tracer_load.take() {
        Some(load) => load.finish()?,
        None => Traced::start(plan.ring_bytes)?,
    };
    let spec = RunSpec {
        image: info.id.clone(),
        overrides: plan.overrides.clone(),
        cgroup_parent: Some(cgroup.name().to_owned()),
        stop_timeout: plan.stop_timeout,
    };
    let phase_start = Instant::now();
    let container = runtime.start(&spec).await.map_err(crate::lib_error)?;
    let Exercised {
        readiness,
        results: originals,
        main,
        ready_ms,
    } = exercise(plan, &work, &container, progress, true, Some(state)).await?;
    report.ready_ms = ready_ms;
    report.probe_phase_ms = phase_start.elapsed().as_millis() as u64;
    report.probes = originals
        .iter()
        .map(|original| ProbeReport {
            name: original.probe.to_string(),
            original: original.clone(),
            minified: None,
        })
        .collect();
    if let Some(bad) = originals.iter().find(|r| !r.passed) {
        report.readiness = Some(readiness.clone());
        report.status = crate::report::RunStatus::ProbeFailedOnOriginal;
        state.enter("trace", &report, &timer);
        let logs = container.logs_tail(20).await;
        let fix = if matches!(bad.probe, Probe::Healthcheck(_)) {
            "fix the image's HEALTHCHECK, or leave it out with --no-healthcheck"
        } else {
            "fix the probe or the image first"
        };
        return Err(with_code(
            anyhow::anyhow!(
                "{} on the original image {} (container {}, cgroup {}); {fix}\nprobe output:\n{}\ncontainer output:\n{}",
                bad.summary(),
                plan.image,
                container.name(),
                cgroup.name(),
                indent(&bad.output),
                indent(&logs)
            ),
            exit::USAGE,
        ));
    }
    progress.phase(format!("stopping {}", container.name()));
    container.stop().await.map_err(crate::lib_error)?;
    container.remove().await.map_err(crate::lib_error)?;
    let trace = tokio::task::block_in_place(|| tracer.finish()).map_err(crate::lib_error)?;
    drop(cgroup);
    drop(pin);
    // Nothing runs the source any more: its temporary copy goes now.
    if let Some(copy) = source_copy.take() {
        let name = copy.reference().to_owned();
        if let Err(e) = copy.remove().await {
            report
                .warnings
                .push(format!("could not remove the temporary copy {name}: {e}"));
        }
    }
    report.readiness = Some(readiness);
    report.main_process = main;
    report.events = trace.events.len() as u64;
    report.events_lost_total = trace.lost_total();
    report.events_lost = trace
        .lost
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (k.name().to_owned(), *n))
        .collect();
    report.shell_probes = originals
        .iter()
        .filter(|r| r.used_shell)
        .map(|r| r.probe.to_string())
        .collect();
    if let Some(path) = &plan.trace_out {
        let json = serde_json::to_vec_pretty(&trace).context("serialising the trace")?;
        crate::cmd::write_atomic(path, &json)
            .with_context(|| format!("writing the trace {}", path.display()))?;
        kept.add(format!("the trace {}", path.display()));
    }
    timer.lap("trace");
    state.enter("closure", &report, &timer);
    if report.events_lost_total > 0 && !plan.allow_lossy {
        return Err(with_code(
            anyhow::anyhow!(
                "the trace lost {} events (ring buffer full: {:?}); the file set would be incomplete. Rerun with a bigger --ring-bytes, or pass --allow-lossy to build anyway",
                report.events_lost_total,
                report.events_lost
            ),
            exit::ENVIRONMENT,
        ));
    }
    let lossy_warning = (report.events_lost_total > 0).then(|| {
        format!(
            "--allow-lossy: the trace lost {} events, the minified image may lack files the workload used",
            report.events_lost_total
        )
    });

    // --- closure and allowlist.
    progress.phase("computing the file closure");
    // The run config the container had: its argv and the working directory a relative
    // program path in it is taken from.
    let ran = plan.overrides.apply(&info);
    let argv = ran.argv();
    // The skeleton set reads the source's config: the output keeps it (not the overrides).
    let config = source.config();
    let opts = ClosureOptions {
        skeleton: SkeletonInput {
            user: config.user.clone(),
            workdir: config.working_dir.clone(),
            volumes: config.volumes.clone(),
        },
        ..plan.closure.clone()
    };
    let closure = tokio::task::block_in_place(|| {
        compute_with_workdir(&view, &trace, &argv, &ran.workdir, &opts)
    })?;
    let allowlist = closure.to_allowlist(
        AllowlistSource {
            image: plan.image.to_string(),
            digest: source.id().to_string(),
        },
        &tool_name(),
    );
    report.allowlist_entries = allowlist.paths.len();
    report.required_bytes = closure.required_bytes;
    report.kept_bytes = closure.kept_bytes;
    report.warnings.clone_from(&closure.warnings);
    if let Some(w) = lossy_warning {
        report.warnings.insert(0, w);
    }
    if let Some(w) = healthcheck_warning {
        report.warnings.insert(0, w);
    }
    let o = &plan.overrides;
    if o.entrypoint.is_some()
        || o.cmd.is_some()
        || !o.env.is_empty()
        || o.workdir.is_some()
        || o.user.is_some()
    {
        report.warnings.insert(
            0,
            "the minified image keeps the source's entrypoint, cmd, env, workdir and user; the overrides applied to the traced and verify runs only".to_owned(),
        );
    }
    report.default_sets = closure
        .default_sets
        .iter()
        .map(|s| SetReport {
            set: s.set.name().to_owned(),
            paths: s.paths.iter().map(ToString::to_string).collect(),
            bytes: s.bytes,
            absent: s.absent.clone(),
        })
        .collect();
    plan.closure
        .packages
        .granularity
        .name()
        .clone_into(&mut report.granularity);
    (report.packages, report.package_totals) = crate::report::package_audit(
        &closure.package_db,
        &closure.package_accounts,
        &closure.package_totals,
        &closure.packages,
    );
    let mut files: Vec<FileSize> = closure
        .entries
        .keys()
        .filter_map(|p| {
            let e = view.entry(p)?;
            e.is_file().then(|| FileSize {
                path: p.to_string(),
                bytes: e.size,
            })
        })
        .collect();
    report.files_after = files.len() as u64;
    files.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
    files.truncate(10);
    report.largest_files = files;
    if let Some(path) = &plan.allowlist_out {
        crate::cmd::write_atomic(path, allowlist.to_json().as_bytes())
            .with_context(|| format!("writing the allowlist {}", path.display()))?;
        kept.add(format!("the allowlist {}", path.display()));
        report.allowlist = Some(path.display().to_string());
    }
    timer.lap("closure");
    state.enter("pack", &report, &timer);

    // --- pack and write: exactly what `minify build --allowlist` does, so the ids match.
    progress.phase(format!("packing {} paths", allowlist.paths.len()));
    let paths: Vec<ImagePath> = allowlist.path_set();
    let pack_options = PackOptions {
        generated: closure.generated.clone(),
        ..PackOptions::default()
    };
    let packed = tokio::task::block_in_place(|| pack(&view, &source, &paths, &pack_options))
        .context("packing the minified image")?;
    let sbom = match &plan.sbom {
        Some(path) => Some(tokio::task::block_in_place(|| {
            crate::sbom::make(
                path,
                &view,
                &paths,
                (&plan.image, source.id().to_string()),
                (&output, packed.id().to_string()),
            )
        })?),
        None => None,
    };
    timer.lap("pack");
    report.output_id = packed.id().to_string();
    // A file output to verify is verified in the daemon, on the identical image it already
    // holds or else on a temporary copy, and written only afterwards: a failed run must not
    // leave it at the requested path. Everything else is written now.
    let write_after_verify = plan.verify && output.is_file();
    let verify_already = if write_after_verify {
        already_in_daemon(&runtime, &packed.id().to_string()).await
    } else {
        None
    };
    let verify_copy =
        (write_after_verify && verify_already.is_none()).then(|| runtime.temp_image());
    if !write_after_verify {
        state.enter("write", &report, &timer);
        write_output(
            &output,
            &plan.write,
            &packed,
            sbom.as_ref(),
            &mut report,
            progress,
        )
        .await?;
        kept.add(if plan.verify {
            format!("the output {output} (written before verification, not verified)")
        } else {
            format!("the output {output}")
        });
        timer.lap("write");
    }
    // The written daemon output's id as the daemon gives it: what a verification of it runs.
    let mut daemon_output_id = None;
    report.size_after = match &output {
        ImageRef::Daemon(name) => {
            let out = runtime
                .inspect_image(name)
                .await
                .map_err(crate::lib_error)?;
            daemon_output_id = Some(out.id);
            out.size
        }
        _ => packed.layer_size(),
    };
    report.factor = if report.size_after == 0 {
        0.0
    } else {
        report.size_before as f64 / report.size_after as f64
    };
    drop(view);
    drop(source);

    // --- verify: the same run, untraced, on the new image; every probe again.
    let mut code = 0;
    let verify_image = match (&output, &verify_copy) {
        (_, Some(copy)) => {
            let name = copy.reference().to_owned();
            progress.phase(format!("loading {name} to verify {output}"));
            let id = packed
                .write_to(
                    &ImageRef::Daemon(name.clone()),
                    &minify_image::WriteOptions::default(),
                )
                .await
                .map_err(|e| {
                    crate::lib_error(minify_image::ImageError::from(e))
                        .context(format!("loading {name} to verify {output}"))
                })?
                .id;
            // The sink checked that the daemon gives the copy this id: the file's own.
            progress.println(&format!(
                "minify: verifying {output} on a temporary copy in the Docker daemon, {name} ({id})"
            ));
            Some((name, id.to_string()))
        }
        (_, None) if verify_already.is_some() => {
            let id = packed.id().to_string();
            progress.println(&format!(
                "minify: verifying {output} on the identical image already in the Docker daemon ({id})"
            ));
            Some((id.clone(), id))
        }
        (ImageRef::Daemon(name), None) if plan.verify => {
            Some((name.clone(), daemon_output_id.unwrap_or_default()))
        }
        _ => None,
    };
    let mut minified: Vec<Option<ProbeResult>> = vec![None; originals.len()];
    if let Some((image, id)) = verify_image {
        progress.phase(format!("verifying {image}"));
        report.verified_image = Some(image.clone());
        report.verified_image_id = Some(id);
        state.enter("verify", &report, &timer);
        let spec = RunSpec {
            image,
            overrides: plan.overrides.clone(),
            cgroup_parent: None,
            stop_timeout: plan.stop_timeout,
        };
        let c = runtime.start(&spec).await.map_err(crate::lib_error)?;
        let Exercised {
            readiness: readiness_min,
            results,
            main: main_min,
            ready_ms,
        } = exercise(plan, &work, &c, progress, false, Some(state)).await?;
        report.readiness_minified = Some(readiness_min);
        report.ready_ms_minified = ready_ms;
        let logs = c.logs_tail(20).await;
        c.stop().await.map_err(crate::lib_error)?;
        c.remove().await.map_err(crate::lib_error)?;
        for (before, after) in originals.iter().zip(&results) {
            if before.passed && !after.passed {
                report.verify_failures.push(format!(
                    "{} on the minified image{}\n{}",
                    after.summary(),
                    if after.output.is_empty() {
                        ""
                    } else {
                        "; probe output:"
                    },
                    indent(&after.output)
                ));
            }
        }
        if let (Some(MainProcess::Exited { code: a }), Some(b)) = (&report.main_process, &main_min)
            && b != &(MainProcess::Exited { code: *a })
        {
            report.verify_failures.push(format!(
                "the entrypoint exited with code {a} on the original but {b:?} on the minified image"
            ));
        }
        if report.main_process == Some(MainProcess::StillRunning)
            && let Some(MainProcess::Exited { code: b }) = &main_min
        {
            report.verify_failures.push(format!(
                "the entrypoint kept running on the original but exited with code {b} on the minified image"
            ));
        }
        if !report.verify_failures.is_empty()
            && !logs.trim().is_empty()
            && !report
                .verify_failures
                .iter()
                .any(|f| f.contains(logs.trim()))
        {
            report.verify_failures.push(format!(
                "container output of the minified image:\n{}",
                indent(&logs)
            ));
        }
        report.main_process_minified = main_min;
        for (slot, r) in minified.iter_mut().zip(results) {
            *slot = Some(r);
        }
        if report.verify_failures.is_empty() {
            report.verify = Some(VerifyStatus::Passed);
        } else {
            report.verify = Some(VerifyStatus::Failed);
            code = exit::VERIFY_FAILED;
        }
        if let Some(copy) = verify_copy {
            let name = copy.reference().to_owned();
            if let Err(e) = copy.remove().await {
                report
                    .warnings
                    .push(format!("could not remove the verify copy {name}: {e}"));
            }
        }
        timer.lap("verify");
        if write_after_verify {
            if code == 0 {
                state.enter("write", &report, &timer);
                write_output(
                    &output,
                    &plan.write,
                    &packed,
                    sbom.as_ref(),
                    &mut report,
                    progress,
                )
                .await?;
                kept.add(format!("the output {output}"));
                timer.lap("write");
            } else {
                report.warnings.insert(
                    0,
                    format!("{output} was not written, because verification failed"),
                );
            }
        }
    } else {
        report.verify = Some(VerifyStatus::Skipped);
    }
    drop(packed);
    report.probes = originals
        .into_iter()
        .zip(minified)
        .map(|(original, minified)| ProbeReport {
            name: original.probe.to_string(),
            original,
            minified,
        })
        .collect();
    report.timings_ms = timer.0;
    Ok(RunOutcome { report, code })
}

/// Write the packed image to the requested output, and its SBOM (`--sbom`) with it.
async fn write_output(
    output: &ImageRef,
    options: &minify_image::WriteOptions,
    packed: &minify_image::PackedImage,
    sbom: Option<&crate::sbom::Sbom>,
    report: &mut Report,
    progress: &Progress,
) -> anyhow::Result<()> {
    progress.phase(format!("writing {output}"));
    let referrers = crate::sbom::Sbom::referrers_for(sbom, output);
    let written = packed
        .write_with_referrers(output, options, &referrers)
        .await
        .map_err(|e| {
            crate::lib_error(minify_image::ImageError::from(e)).context(format!("writing {output}"))
        })?;
    if let Some(sbom) = sbom {
        sbom.write_file()?;
    }
    report.output_id = written.id.to_string();
    report.output_layer_bytes = written.layer_bytes;
    report.output_layer_media = written.compression.to_string();
    report.output_digest = written.manifest_digest.map(|d| d.to_string());
    report.output_written = true;
    Ok(())
}

/// How long to wait between two readiness attempts (`--ready-http`, `--ready-cmd`, a
/// `--probe-http` answered with a connection error or a 5xx).
const READY_RETRY: Duration = Duration::from_millis(500);

/// What [`exercise`] saw on one image.
struct Exercised {
    /// The wait for the exposed ports.
    readiness: Readiness,
    results: Vec<ProbeResult>,
    /// With no probe: how the main process ended.
    main: Option<MainProcess>,
    /// Milliseconds from the start of the readiness wait until the app answered: the ports
    /// accepted, `--ready-http`/`--ready-cmd` passed and, without those, the first
    /// `--probe-http` passed. `None` when it never did, or with no probe.
    ready_ms: Option<u64>,
}

/// A failed probe that did not run because the image never became ready.
fn not_ready(probe: &Probe, message: &str) -> ProbeResult {
    ProbeResult {
        probe: probe.clone(),
        passed: false,
        outcome: minify_runtime::ProbeOutcome::Error {
            message: message.lines().next().unwrap_or_default().to_owned(),
        },
        duration_ms: 0,
        output: message.to_owned(),
        used_shell: false,
    }
}

/// Whether a failed `--probe-http` may only mean the app is not up yet: the connection
/// failed, or a front answered 5xx (nginx before php-fpm made its socket answers 502).
fn retryable(r: &ProbeResult) -> bool {
    match &r.outcome {
        minify_runtime::ProbeOutcome::Error { .. } => true,
        minify_runtime::ProbeOutcome::Http { statuses } => statuses.iter().any(|(_, s)| *s >= 500),
        _ => false,
    }
}

async fn exited(c: &Container) -> bool {
    matches!(c.state().await, Ok((false, _)))
}

/// `--ready-http` and `--ready-cmd`, each retried until it passes, within `--ready-timeout`
/// from `start`. They are not probes: they do not count, and are not verified. `Err` says
/// which check did not pass and how it last failed.
async fn wait_app_ready(
    plan: &RunPlan,
    c: &Container,
    progress: &Progress,
    start: Instant,
) -> Result<(), String> {
    let checks = plan
        .ready_http
        .iter()
        .map(|p| (format!("--ready-http {p:?}"), Probe::Http(p.clone())))
        .chain(
            plan.ready_cmd
                .iter()
                .map(|cmd| (format!("--ready-cmd {cmd:?}"), Probe::Cmd(cmd.clone()))),
        );
    for (name, check) in checks {
        progress.phase(format!("waiting for {} to pass {name}", c.name()));
        loop {
            let left = plan.ready_timeout.saturating_sub(start.elapsed());
            let r = c
                .run_probe(
                    &check,
                    plan.probe_timeout.min(left.max(Duration::from_secs(1))),
                )
                .await;
            if r.passed {
                break;
            }
            if start.elapsed() >= plan.ready_timeout || exited(c).await {
                let what = r.summary();
                let what = what.split_once(": ").map_or(what.as_str(), |(_, w)| w);
                return Err(format!(
                    "not ready: {name} did not pass within --ready-timeout {} s (last attempt: {what})\n{}",
                    plan.ready_timeout.as_secs(),
                    r.output.trim_end()
                ));
            }
            tokio::time::sleep(READY_RETRY).await;
        }
    }
    Ok(())
}

/// Wait for readiness, then run every probe in order (stopping at the first failure when
/// `stop_at_failure`, i.e. on the original image); with no probe, wait for the entrypoint to
/// exit or the timeout, then run the health check if it still runs. Readiness is the
/// exposed ports accepting, then `--ready-http`/`--ready-cmd` passing; a `--probe-http`
/// that gets a connection error or a 5xx is retried until `--ready-timeout` (from the start
/// of the wait) runs out. An image that never becomes ready fails every probe with a message
/// that says so. Each result is also recorded in `state` as it comes (the original image's
/// when `stop_at_failure`), so an interrupted run reports the probes that had run.
async fn exercise(
    plan: &RunPlan,
    work: &Workload,
    c: &Container,
    progress: &Progress,
    stop_at_failure: bool,
    state: Option<&RunState>,
) -> anyhow::Result<Exercised> {
    let ready_start = Instant::now();
    let readiness = if work.probes.is_empty() {
        Readiness::NoPorts
    } else {
        progress.phase(format!("waiting for {} to accept connections", c.name()));
        match c.wait_ready(plan.ready_timeout).await {
            Ok(r) => r,
            // On the minified image a workload that never listens is a verification
            // failure of every probe (exit 1), not an input error.
            Err(e @ minify_runtime::RuntimeError::ReadyTimeout { .. }) if !stop_at_failure => {
                let message = e.to_string();
                let results = plan.probes.iter().map(|p| not_ready(p, &message)).collect();
                return Ok(Exercised {
                    readiness: Readiness::NoPorts,
                    results,
                    main: None,
                    ready_ms: None,
                });
            }
            Err(e) => return Err(crate::lib_error(e)),
        }
    };
    if work.probes.is_empty() {
        progress.phase(format!(
            "no probe: letting {} run for up to {} s",
            c.name(),
            plan.timeout.as_secs()
        ));
        let main = match c.wait_exit(plan.timeout).await.map_err(crate::lib_error)? {
            Some(code) => MainProcess::Exited { code },
            None => MainProcess::StillRunning,
        };
        let mut results = Vec::new();
        if let (MainProcess::StillRunning, Some(probe)) = (&main, &work.after_wait) {
            progress.phase(format!("probe {probe}"));
            let r = c.run_probe(probe, plan.probe_timeout).await;
            progress.println(&format!("minify: {}", r.summary()));
            if let Some(state) = state {
                state.probe_done(stop_at_failure, results.len(), &r);
            }
            results.push(r);
        }
        return Ok(Exercised {
            readiness,
            results,
            main: Some(main),
            ready_ms: None,
        });
    }
    let mut ready_ms = None;
    if !matches!(readiness, Readiness::Exited { .. }) {
        if let Err(message) = wait_app_ready(plan, c, progress, ready_start).await {
            progress.println(&format!(
                "minify: {}",
                message.lines().next().unwrap_or_default()
            ));
            let results: Vec<ProbeResult> =
                work.probes.iter().map(|p| not_ready(p, &message)).collect();
            if let (Some(state), Some(first)) = (state, results.first()) {
                state.probe_done(stop_at_failure, 0, first);
            }
            return Ok(Exercised {
                readiness,
                results,
                main: None,
                ready_ms: None,
            });
        }
        if !plan.ready_http.is_empty() || !plan.ready_cmd.is_empty() {
            ready_ms = Some(ready_start.elapsed().as_millis() as u64);
        }
    }
    let mut results = Vec::new();
    for probe in &work.probes {
        let r = if let Readiness::Exited { code } = readiness {
            // The workload is gone: the probe cannot pass, and should say why.
            ProbeResult {
                probe: probe.clone(),
                passed: false,
                outcome: minify_runtime::ProbeOutcome::Error {
                    message: format!("the container exited with code {code} before the probe ran"),
                },
                duration_ms: 0,
                output: c.logs_tail(20).await,
                used_shell: false,
            }
        } else {
            progress.phase(format!("probe {probe}"));
            let mut r = c.run_probe(probe, plan.probe_timeout).await;
            let mut retries = 0u32;
            let first = Instant::now();
            while matches!(probe, Probe::Http(_))
                && !r.passed
                && retryable(&r)
                && ready_start.elapsed() < plan.ready_timeout
                && !exited(c).await
            {
                tokio::time::sleep(READY_RETRY).await;
                retries += 1;
                r = c.run_probe(probe, plan.probe_timeout).await;
            }
            if retries > 0 {
                let _ = writeln!(
                    r.output,
                    "(retried {retries} times over {:.1} s after a connection error or a 5xx answer, within --ready-timeout {} s)",
                    first.elapsed().as_secs_f64(),
                    plan.ready_timeout.as_secs()
                );
            }
            if ready_ms.is_none() && r.passed && matches!(probe, Probe::Http(_)) {
                ready_ms = Some(ready_start.elapsed().as_millis() as u64);
            }
            r
        };
        progress.println(&format!("minify: {}", r.summary()));
        if let Some(state) = state {
            state.probe_done(stop_at_failure, results.len(), &r);
        }
        let failed = !r.passed;
        results.push(r);
        if failed && stop_at_failure {
            break;
        }
    }
    if ready_ms.is_none() && results.iter().all(|r| r.passed) {
        ready_ms = match &readiness {
            Readiness::Ready { after_ms, .. } => Some(*after_ms),
            Readiness::NoPorts => Some(0),
            Readiness::Exited { .. } => None,
        };
    }
    Ok(Exercised {
        readiness,
        results,
        main: None,
        ready_ms,
    })
}

fn indent(s: &str) -> String {
    s.trim_end()
        .lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The tracer and what it traces: a fresh cgroup (pinned so `minify gc` leaves it alone
/// while no process runs in it). Dropped in this order: the tracer (detached), then the
/// cgroup (removed), then the pin.
struct Traced {
    tracer: Tracer,
    cgroup: TraceCgroup,
    pin: CgroupPin,
}

impl Traced {
    /// `ring_bytes`: `--ring-bytes`, else the tracer's default.
    fn start(ring_bytes: Option<u32>) -> anyhow::Result<Traced> {
        let cgroup = TraceCgroup::create().map_err(crate::lib_error)?;
        let pin = CgroupPin::open(cgroup.path())
            .with_context(|| format!("opening the trace cgroup {}", cgroup.path().display()))
            .map_err(crate::env_error)?;
        let mut topts = TraceOptions::default();
        if let Some(n) = ring_bytes {
            topts.ring_bytes = n;
        }
        let tracer = Tracer::start(&cgroup, topts).map_err(crate::lib_error)?;
        Ok(Traced {
            tracer,
            cgroup,
            pin,
        })
    }
}

/// [`Traced::start`] on a thread of its own, from the start of the run: the container
/// starts only once it is done. Dropped early (an error while opening the image, Ctrl-C),
/// it waits for the thread and drops what it made, so the cgroup and the BPF links are gone
/// before the run returns. Its errors are seen only when it is needed (after the image was
/// opened), so a bad image is still reported as such first.
struct TracerLoad(Option<std::thread::JoinHandle<anyhow::Result<Traced>>>);

impl TracerLoad {
    fn start(ring_bytes: Option<u32>) -> TracerLoad {
        TracerLoad(Some(std::thread::spawn(move || Traced::start(ring_bytes))))
    }

    fn finish(mut self) -> anyhow::Result<Traced> {
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

/// The daemon's image `id`, when it already holds it. Such an image is run as it is, by id:
/// a temporary name on it would, when removed, also remove the image if nothing else names
/// it (an untagged image the user had before). Any error reads as "not there" (the copy is
/// then loaded as usual, and the load reports a broken daemon).
async fn already_in_daemon(runtime: &Runtime, id: &str) -> Option<minify_runtime::ImageInfo> {
    runtime.inspect_image(id).await.ok()
}
