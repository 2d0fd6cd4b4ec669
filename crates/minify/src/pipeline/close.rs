//! Phase `closure`: the trace and the image's run config through `minify_closure`
//! (ELF libraries, links, parents, interpreters, default sets, packages, rules) to the kept
//! set and its allowlist, written to `--allowlist-out`.

use anyhow::Context as _;
use minify_closure::{Closure, ClosureOptions, SkeletonInput, compute_with_workdir};
use minify_model::Allowlist;
use minify_model::allowlist::SourceImage as AllowlistSource;

use super::open::Opened;
use super::trace::Traced;
use super::{RunPlan, tool_name};
use crate::errors::Kept;

/// What `close` hands on: the kept set and the allowlist that says why each path is kept.
pub struct Closed {
    pub closure: Closure,
    pub allowlist: Allowlist,
    /// Where `--allowlist-out` wrote it.
    pub written_to: Option<String>,
}

/// The kept set of what the traced run used.
pub fn close(
    plan: &RunPlan,
    opened: &Opened,
    traced: &Traced,
    kept: &Kept,
) -> anyhow::Result<Closed> {
    // The run config the container had: its argv and the working directory a relative
    // program path in it is taken from.
    let ran = plan.overrides.apply(&opened.run_config);
    let argv = ran.argv();
    // The skeleton set reads the source's config: the output keeps it (not the overrides).
    let config = opened.source.config();
    let opts = ClosureOptions {
        skeleton: SkeletonInput {
            user: config.user.clone(),
            workdir: config.working_dir.clone(),
            volumes: config.volumes.clone(),
        },
        ..plan.closure.clone()
    };
    let closure = tokio::task::block_in_place(|| {
        compute_with_workdir(&opened.view, &traced.trace, &argv, &ran.workdir, &opts)
    })?;
    let allowlist = closure.to_allowlist(
        AllowlistSource {
            image: plan.image.to_string(),
            digest: opened.source.id().to_string(),
        },
        &tool_name(),
    );
    let mut written_to = None;
    if let Some(path) = &plan.allowlist_out {
        crate::files::write_atomic(path, allowlist.to_json().as_bytes())
            .with_context(|| format!("writing the allowlist {}", path.display()))?;
        kept.add(format!("the allowlist {}", path.display()));
        written_to = Some(path.display().to_string());
    }
    Ok(Closed {
        closure,
        allowlist,
        written_to,
    })
}
