//! Phase `closure`: the trace and the image's run config through `minify_closure`
//! (ELF libraries, links, parents, interpreters, default sets, packages, rules) to the kept
//! set and its allowlist, written to `--allowlist-out`.

use anyhow::Context as _;
use minify_closure::{
    AttackSurface, Closure, ClosureOptions, SkeletonInput, attack_surface, compute_with_workdir,
};
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
    /// What the kept set leaves an attacker.
    pub surface: AttackSurface,
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
    let surface = attack_surface(&opened.view, &allowlist.paths, &config.user);
    let mut written_to = None;
    // `--fail-on-shell` refuses the output before anything is written, the allowlist too.
    let refused = plan.fail_on_shell && !surface.shells.is_empty();
    if let Some(path) = plan.allowlist_out.as_ref().filter(|_| !refused) {
        crate::files::write_atomic(path, allowlist.to_json().as_bytes())
            .with_context(|| format!("writing the allowlist {}", path.display()))?;
        kept.add(format!("the allowlist {}", path.display()));
        written_to = Some(path.display().to_string());
    }
    Ok(Closed {
        closure,
        allowlist,
        surface,
        written_to,
    })
}

/// `--fail-on-shell`'s error when the kept set keeps a shell (exit 1, nothing written).
pub fn policy_refusal(plan: &RunPlan, closed: &Closed) -> Option<anyhow::Error> {
    shell_refusal(plan.fail_on_shell, &closed.surface)
}

/// The error `--fail-on-shell` gives for `surface` (`run` and `build`).
pub fn shell_refusal(fail_on_shell: bool, surface: &AttackSurface) -> Option<anyhow::Error> {
    if !fail_on_shell || surface.shells.is_empty() {
        return None;
    }
    let shells: Vec<String> = surface
        .shells
        .iter()
        .map(|sh| format!("{} ({})", sh.names.join(", "), sh.why))
        .collect();
    Some(crate::errors::with_code(
        anyhow::anyhow!(
            "--fail-on-shell: the output would keep a shell: {}; nothing was written",
            shells.join("; ")
        ),
        crate::exit::POLICY_FAILED,
    ))
}
