//! Phase `verify`: the new image runs with the same overrides and probes, untraced, and
//! every probe that passed on the original must pass again. A file output is verified on the
//! identical image the daemon already holds or else on a temporary copy, and written only
//! once that passed; every other output is written before.

use anyhow::Context as _;
use minify_image::{ImageRef, PackedImage, WriteOptions};
use minify_runtime::{ProbeResult, Readiness, RunSpec, Runtime, TempImage};

use super::exercise::{Exercised, Recording, Workload, exercise};
use super::open::{already_in_daemon, remove_temp_image};
use super::progress::Progress;
use super::trace::Traced;
use super::{RunPlan, RunState, indent};
use crate::report::MainProcess;

/// Where the output goes relative to verification.
pub struct Delivery {
    /// A file output to verify: written only once verification passed, so a failed run
    /// never leaves it at the requested path.
    pub write_after_verify: bool,
    /// The daemon already holds the packed image: verified as it is, by id.
    already: bool,
    /// Else the temporary name it is loaded under to be verified (removed afterwards, and
    /// by its guard on every other path).
    copy: Option<TempImage>,
}

impl Delivery {
    pub async fn choose(
        plan: &RunPlan,
        runtime: &Runtime,
        output: &ImageRef,
        packed: &PackedImage,
    ) -> Delivery {
        let write_after_verify = plan.verify && output.is_file();
        let already = write_after_verify
            && already_in_daemon(runtime, &packed.id().to_string())
                .await
                .is_some();
        Delivery {
            write_after_verify,
            already,
            copy: (write_after_verify && !already).then(|| runtime.temp_image()),
        }
    }

    /// The image to verify and its id: the file output's copy (loaded now) or the identical
    /// image, else the daemon output as written (`daemon_output_id`). `None` with
    /// `--no-verify`.
    pub async fn image_to_verify(
        &self,
        plan: &RunPlan,
        output: &ImageRef,
        packed: &PackedImage,
        daemon_output_id: Option<String>,
        progress: &Progress,
    ) -> anyhow::Result<Option<(String, String)>> {
        if let Some(copy) = &self.copy {
            let name = copy.reference().to_owned();
            progress.phase(format!("loading {name} to verify {output}"));
            let id = packed
                .write_to(&ImageRef::Daemon(name.clone()), &WriteOptions::default())
                .await
                .with_context(|| format!("loading {name} to verify {output}"))?
                .id;
            // The sink checked that the daemon gives the copy this id: the file's own.
            progress.println(&format!(
                "minify: verifying {output} on a temporary copy in the Docker daemon, {name} ({id})"
            ));
            return Ok(Some((name, id.to_string())));
        }
        if self.already {
            let id = packed.id().to_string();
            progress.println(&format!(
                "minify: verifying {output} on the identical image already in the Docker daemon ({id})"
            ));
            return Ok(Some((id.clone(), id)));
        }
        Ok(match output {
            ImageRef::Daemon(name) if plan.verify => {
                Some((name.clone(), daemon_output_id.unwrap_or_default()))
            }
            _ => None,
        })
    }

    /// Remove the verify copy; a warning when it could not be.
    pub async fn remove_copy(&mut self) -> Option<String> {
        remove_temp_image(self.copy.take()?, "verify copy").await
    }
}

/// The size of the output (as the daemon reports it, or the new layer's for a file output)
/// and, for a daemon output, its id as the daemon gives it: what a verification of it runs.
pub async fn size_after(
    runtime: &Runtime,
    output: &ImageRef,
    packed: &PackedImage,
) -> anyhow::Result<(u64, Option<String>)> {
    Ok(match output {
        ImageRef::Daemon(name) => {
            let out = runtime.inspect_image(name).await?;
            (out.size, Some(out.id))
        }
        _ => (packed.layer_size(), None),
    })
}

/// What `verify` hands on: the minified image's side of every probe, and why it failed.
pub struct Verified {
    pub readiness: Readiness,
    pub ready_ms: Option<u64>,
    pub main: Option<MainProcess>,
    pub results: Vec<ProbeResult>,
    /// One line each; empty when verification passed.
    pub failures: Vec<String>,
}

/// Run `image` like the original ran and compare.
pub async fn verify(
    plan: &RunPlan,
    runtime: &Runtime,
    work: &Workload,
    image: String,
    traced: &Traced,
    progress: &Progress,
    state: &RunState,
) -> anyhow::Result<Verified> {
    progress.phase(format!("verifying {image}"));
    let spec = RunSpec {
        image,
        overrides: plan.overrides.clone(),
        cgroup_parent: None,
        stop_timeout: plan.stop_timeout,
    };
    let c = runtime.start(&spec).await?;
    let recording = Recording {
        original: false,
        state: Some(state),
    };
    let Exercised {
        readiness,
        results,
        main,
        ready_ms,
    } = exercise(plan, work, &c, progress, recording).await?;
    let logs = c.logs_tail(20).await;
    c.stop().await?;
    c.remove().await?;
    let failures = failures(traced, &results, main.as_ref(), &logs);
    Ok(Verified {
        readiness,
        ready_ms,
        main,
        results,
        failures,
    })
}

/// Why the minified image does not do what the original did: a probe that passed before
/// and fails now, an entrypoint that ended differently; then the container's output, unless
/// a probe's output already holds it.
fn failures(
    traced: &Traced,
    results: &[ProbeResult],
    main_min: Option<&MainProcess>,
    logs: &str,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (before, after) in traced.originals.iter().zip(results) {
        if before.passed && !after.passed {
            failures.push(format!(
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
    if let (Some(MainProcess::Exited { code: a }), Some(b)) = (&traced.main, main_min)
        && b != &(MainProcess::Exited { code: *a })
    {
        failures.push(format!(
            "the entrypoint exited with code {a} on the original but {b:?} on the minified image"
        ));
    }
    if traced.main == Some(MainProcess::StillRunning)
        && let Some(MainProcess::Exited { code: b }) = main_min
    {
        failures.push(format!(
            "the entrypoint kept running on the original but exited with code {b} on the minified image"
        ));
    }
    if !failures.is_empty()
        && !logs.trim().is_empty()
        && !failures.iter().any(|f| f.contains(logs.trim()))
    {
        failures.push(format!(
            "container output of the minified image:\n{}",
            indent(logs)
        ));
    }
    failures
}
