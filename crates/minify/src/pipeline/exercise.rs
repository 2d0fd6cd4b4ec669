//! Exercising one container: wait until it is ready, then run the probes in order (or, with
//! no probe, let the entrypoint run). The same code runs the traced original, the untraced
//! benchmark runs and the minified image in verification. A new probe kind is a
//! `minify_runtime::Probe` variant; this file only orders and retries them.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use minify_runtime::{Container, ImageInfo, Probe, ProbeOutcome, ProbeResult, Readiness};

use super::progress::Progress;
use super::{RunPlan, RunState};
use crate::report::MainProcess;

/// How long to wait between two readiness attempts (`--ready-http`, `--ready-cmd`, a
/// `--probe-http` answered with a connection error or a 5xx).
const READY_RETRY: Duration = Duration::from_millis(500);

/// What a container is made to do: the probes in the order given, then the image's health
/// check; with no probe given, the entrypoint runs until it exits or the timeout, and the
/// health check runs then if it is still running.
pub struct Workload {
    pub probes: Vec<Probe>,
    /// With no probe: the health check, run once the wait is over.
    pub after_wait: Option<Probe>,
}

impl Workload {
    pub fn new(plan: &RunPlan, image: &ImageInfo) -> Workload {
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

    /// How many probes a run makes (the health check after a wait included).
    pub fn count(&self) -> usize {
        self.probes.len() + usize::from(self.after_wait.is_some())
    }
}

/// What [`exercise`] saw on one image.
pub struct Exercised {
    /// The wait for the exposed ports.
    pub readiness: Readiness,
    pub results: Vec<ProbeResult>,
    /// With no probe: how the main process ended.
    pub main: Option<MainProcess>,
    /// Milliseconds from the start of the readiness wait until the app answered: the ports
    /// accepted, `--ready-http`/`--ready-cmd` passed and, without those, the first
    /// `--probe-http` passed. `None` when it never did, or with no probe.
    pub ready_ms: Option<u64>,
}

/// Where an exercise records its results as they come: `original` is the traced run (stop at
/// the first failure, append to the report) rather than verification (fill the `minified`
/// side). `state` is `None` for the untraced benchmark runs, which are not reported.
#[derive(Clone, Copy)]
pub struct Recording<'a> {
    pub original: bool,
    pub state: Option<&'a RunState>,
}

impl Recording<'_> {
    fn done(self, index: usize, r: &ProbeResult) {
        if let Some(state) = self.state {
            state.probe_done(self.original, index, r);
        }
    }
}

/// A failed probe that did not run because the image never became ready.
fn not_ready(probe: &Probe, message: &str) -> ProbeResult {
    ProbeResult {
        probe: probe.clone(),
        passed: false,
        outcome: ProbeOutcome::Error {
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
        ProbeOutcome::Error { .. } => true,
        ProbeOutcome::Http { statuses } => statuses.iter().any(|(_, s)| *s >= 500),
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

/// Wait for readiness, then run every probe in order (stopping at the first failure on the
/// original image); with no probe, wait for the entrypoint to exit or the timeout, then run
/// the health check if it still runs. Readiness is the exposed ports accepting, then
/// `--ready-http`/`--ready-cmd` passing; a `--probe-http` that gets a connection error or a
/// 5xx is retried until `--ready-timeout` (from the start of the wait) runs out. An image
/// that never becomes ready fails every probe with a message that says so. Each result is
/// also recorded as it comes (see [`Recording`]), so an interrupted run reports the probes
/// that had run.
pub async fn exercise(
    plan: &RunPlan,
    work: &Workload,
    c: &Container,
    progress: &Progress,
    rec: Recording<'_>,
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
            Err(e @ minify_runtime::RuntimeError::ReadyTimeout { .. }) if !rec.original => {
                let message = e.to_string();
                let results = plan.probes.iter().map(|p| not_ready(p, &message)).collect();
                return Ok(Exercised {
                    readiness: Readiness::NoPorts,
                    results,
                    main: None,
                    ready_ms: None,
                });
            }
            Err(e) => return Err(e.into()),
        }
    };
    if work.probes.is_empty() {
        return run_without_probes(plan, work, c, progress, rec, readiness).await;
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
            if let Some(first) = results.first() {
                rec.done(0, first);
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
    let results = run_probes(
        plan,
        work,
        c,
        progress,
        rec,
        &readiness,
        ready_start,
        &mut ready_ms,
    )
    .await;
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

/// No probe: let the entrypoint run until it exits or `--timeout`, then run the health
/// check if it still runs.
async fn run_without_probes(
    plan: &RunPlan,
    work: &Workload,
    c: &Container,
    progress: &Progress,
    rec: Recording<'_>,
    readiness: Readiness,
) -> anyhow::Result<Exercised> {
    progress.phase(format!(
        "no probe: letting {} run for up to {} s",
        c.name(),
        plan.timeout.as_secs()
    ));
    let main = match c.wait_exit(plan.timeout).await? {
        Some(code) => MainProcess::Exited { code },
        None => MainProcess::StillRunning,
    };
    let mut results = Vec::new();
    if let (MainProcess::StillRunning, Some(probe)) = (&main, &work.after_wait) {
        progress.phase(format!("probe {probe}"));
        let r = c.run_probe(probe, plan.probe_timeout).await;
        progress.println(&format!("minify: {}", r.summary()));
        rec.done(results.len(), &r);
        results.push(r);
    }
    Ok(Exercised {
        readiness,
        results,
        main: Some(main),
        ready_ms: None,
    })
}

/// Every probe in order, once the container is ready (or has exited: then each fails and
/// says why). Sets `ready_ms` at the first `--probe-http` that passes, if nothing set it
/// before.
#[allow(clippy::too_many_arguments)]
async fn run_probes(
    plan: &RunPlan,
    work: &Workload,
    c: &Container,
    progress: &Progress,
    rec: Recording<'_>,
    readiness: &Readiness,
    ready_start: Instant,
    ready_ms: &mut Option<u64>,
) -> Vec<ProbeResult> {
    let mut results = Vec::new();
    for probe in &work.probes {
        let r = if let Readiness::Exited { code } = readiness {
            // The workload is gone: the probe cannot pass, and should say why.
            ProbeResult {
                probe: probe.clone(),
                passed: false,
                outcome: ProbeOutcome::Error {
                    message: format!("the container exited with code {code} before the probe ran"),
                },
                duration_ms: 0,
                output: c.logs_tail(20).await,
                used_shell: false,
            }
        } else {
            progress.phase(format!("probe {probe}"));
            let r = probe_with_retries(plan, c, probe, ready_start).await;
            if ready_ms.is_none() && r.passed && matches!(probe, Probe::Http(_)) {
                *ready_ms = Some(ready_start.elapsed().as_millis() as u64);
            }
            r
        };
        progress.println(&format!("minify: {}", r.summary()));
        rec.done(results.len(), &r);
        let failed = !r.passed;
        results.push(r);
        if failed && rec.original {
            break;
        }
    }
    results
}

/// One probe; a `--probe-http` that fails as if the app were not up yet is retried until
/// `--ready-timeout` (from `ready_start`) runs out, and its output says so.
async fn probe_with_retries(
    plan: &RunPlan,
    c: &Container,
    probe: &Probe,
    ready_start: Instant,
) -> ProbeResult {
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
    r
}
