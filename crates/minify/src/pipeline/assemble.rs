//! The report of `minify run`, assembled in one place from what each phase handed on. A new
//! report field is filled here (and declared in `report.rs`); the phases do not touch the
//! report.

use minify_image::Written;
use minify_model::Rootfs as _;
use minify_runtime::ProbeResult;

use super::RunPlan;
use super::close::Closed;
use super::open::Opened;
use super::trace::{Live, Traced, lost_by_kind};
use super::verify::Verified;
use crate::report::{FileSize, ProbeReport, Report, RunStatus, SetReport};

/// How many of the largest kept files the report lists.
const LARGEST_FILES: usize = 10;

/// The source as opened.
pub fn opened(r: &mut Report, opened: &Opened) {
    r.image_id = opened.source.id().to_string();
    r.size_before = opened.run_config.size;
    r.files_before = opened.view.file_count() as u64;
}

/// The traced run's probes, as soon as they ran (the container still there).
pub fn exercised(r: &mut Report, live: &Live) {
    r.ready_ms = live.exercised.ready_ms;
    r.probe_phase_ms = live.probe_phase_ms;
    r.probes = probe_reports(&live.exercised.results, Vec::new());
}

/// A probe failed on the original image: the run stops here.
pub fn failed_on_original(r: &mut Report, live: &Live) {
    r.readiness = Some(live.exercised.readiness.clone());
    r.status = RunStatus::ProbeFailedOnOriginal;
}

/// The trace and how the original ran.
pub fn traced(r: &mut Report, traced: &Traced) {
    r.readiness = Some(traced.readiness.clone());
    r.main_process.clone_from(&traced.main);
    r.events = traced.trace.events.len() as u64;
    r.events_lost_total = traced.trace.lost_total();
    r.events_lost = lost_by_kind(&traced.trace);
    r.shell_probes = traced
        .originals
        .iter()
        .filter(|p| p.used_shell)
        .map(|p| p.probe.to_string())
        .collect();
}

/// The kept set. `warnings`: the run's own, said before the closure's (most important
/// first), `later` after them.
pub fn closed(
    r: &mut Report,
    plan: &RunPlan,
    opened: &Opened,
    closed: &Closed,
    lossy: Option<String>,
    later: Vec<String>,
) {
    let closure = &closed.closure;
    r.allowlist_entries = closed.allowlist.paths.len();
    r.required_bytes = closure.required_bytes;
    r.kept_bytes = closure.kept_bytes;
    r.warnings = run_warnings(plan, opened);
    r.warnings.extend(lossy);
    r.warnings.extend(closure.warnings.iter().cloned());
    r.warnings.extend(later);
    r.default_sets = closure
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
        .clone_into(&mut r.granularity);
    (r.packages, r.package_totals) = crate::report::package_audit(
        &closure.package_db,
        &closure.package_accounts,
        &closure.package_totals,
        &closure.packages,
    );
    let mut files: Vec<FileSize> = closure
        .entries
        .keys()
        .filter_map(|p| {
            let e = opened.view.entry(p)?;
            e.is_file().then(|| FileSize {
                path: p.to_string(),
                bytes: e.size,
            })
        })
        .collect();
    r.files_after = files.len() as u64;
    files.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
    files.truncate(LARGEST_FILES);
    r.largest_files = files;
    r.attack_surface = Some(closed.surface.clone());
    r.allowlist.clone_from(&closed.written_to);
}

/// What the run itself warns about: the overrides, a health check left out.
fn run_warnings(plan: &RunPlan, opened: &Opened) -> Vec<String> {
    let mut w = Vec::new();
    let o = &plan.overrides;
    if o.entrypoint.is_some()
        || o.cmd.is_some()
        || !o.env.is_empty()
        || o.workdir.is_some()
        || o.user.is_some()
    {
        w.push("the minified image keeps the source's entrypoint, cmd, env, workdir and user; the overrides applied to the traced and verify runs only".to_owned());
    }
    if let Some(h) = opened
        .run_config
        .healthcheck
        .as_ref()
        .filter(|_| !plan.healthcheck)
    {
        w.push(format!(
            "the image's HEALTHCHECK ({:?}) was not run (--no-healthcheck): the minified image keeps it, but not what it runs unless something else used that too",
            h.command
        ));
    }
    w
}

/// The output as written.
pub fn written(r: &mut Report, written: &Written) {
    r.output_id = written.id.to_string();
    r.output_layer_bytes = written.layer_bytes;
    r.output_layer_media = written.compression.to_string();
    r.output_digest = written.manifest_digest.as_ref().map(ToString::to_string);
    r.output_written = true;
}

/// The output's size.
pub fn size_after(r: &mut Report, size: u64) {
    r.size_after = size;
    r.factor = if size == 0 {
        0.0
    } else {
        r.size_before as f64 / size as f64
    };
}

/// Verification's outcome.
pub fn verified(r: &mut Report, v: &Verified) {
    r.readiness_minified = Some(v.readiness.clone());
    r.ready_ms_minified = v.ready_ms;
    r.verify_failures.clone_from(&v.failures);
    r.main_process_minified.clone_from(&v.main);
    r.verify = Some(if v.failures.is_empty() {
        crate::report::VerifyStatus::Passed
    } else {
        crate::report::VerifyStatus::Failed
    });
}

/// Every probe on both images; `minified` is empty when verification did not run.
pub fn probe_reports(originals: &[ProbeResult], minified: Vec<ProbeResult>) -> Vec<ProbeReport> {
    let mut minified = minified.into_iter();
    originals
        .iter()
        .map(|original| ProbeReport {
            name: original.probe.to_string(),
            original: original.clone(),
            minified: minified.next(),
        })
        .collect()
}
