//! `minify gc [--dry-run]`: remove what killed minify runs left behind (containers, temporary
//! images, trace cgroups, temporary directories in `$TMPDIR`), like `docker system prune`
//! scoped to minify's own resources. What
//! counts as a leftover is decided in minify-runtime (`Runtime::gc_plan`): only what belongs
//! to a minify process that is gone, so a run in progress is never touched.
//!
//! One line per removed thing on stdout, a summary on stderr.

use minify_runtime::{Leftover, Runtime};

use crate::cli::GcArgs;

pub fn run(args: &GcArgs) -> anyhow::Result<u8> {
    crate::cmd::block_on_interruptible(async {
        let runtime = Runtime::connect().await?;
        let plan = runtime.gc_plan(&[minify_image::LEFTOVERS]).await?;
        for k in &plan.kept {
            tracing::debug!("keeping {}: {}", k.what, k.why);
        }
        let mut counts = Counts::default();
        let mut failed = 0;
        for item in &plan.remove {
            if args.dry_run {
                outln!("would remove {item}: {}", item.why());
                counts.add(item);
                continue;
            }
            match runtime.gc_remove(item).await {
                Ok(()) => {
                    outln!("removed {item}: {}", item.why());
                    counts.add(item);
                }
                Err(e) => {
                    errln!("minify gc: cannot remove {item}: {e}");
                    failed += 1;
                }
            }
        }
        let kept = if plan.kept.is_empty() {
            String::new()
        } else {
            format!(
                "; kept {} in use or too new to judge (-v says why)",
                plan.kept.len()
            )
        };
        let verb = if args.dry_run {
            "would remove"
        } else {
            "removed"
        };
        if counts.is_empty() && failed == 0 {
            errln!("minify gc: nothing to remove{kept}");
        } else {
            errln!("minify gc: {verb} {counts}{kept}");
        }
        if failed > 0 {
            return Err(crate::env_error(anyhow::anyhow!(
                "{failed} of {} leftovers could not be removed (see above)",
                plan.remove.len()
            )));
        }
        Ok(0)
    })
}

/// Removed things by kind, for the summary.
#[derive(Default)]
struct Counts {
    containers: usize,
    images: usize,
    cgroups: usize,
    temp_dirs: usize,
}

impl Counts {
    fn add(&mut self, item: &Leftover) {
        match item {
            Leftover::Container { .. } => self.containers += 1,
            Leftover::Image { .. } => self.images += 1,
            Leftover::Cgroup { .. } => self.cgroups += 1,
            Leftover::TempDir { .. } => self.temp_dirs += 1,
        }
    }

    fn is_empty(&self) -> bool {
        self.containers + self.images + self.cgroups + self.temp_dirs == 0
    }
}

impl std::fmt::Display for Counts {
    /// `2 containers, 1 cgroup`: the kinds there are some of.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [
            (self.containers, "container"),
            (self.images, "image"),
            (self.cgroups, "cgroup"),
            (self.temp_dirs, "temp dir"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}{}", if n == 1 { "" } else { "s" }))
        .collect();
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts() {
        let mut c = Counts::default();
        assert!(c.is_empty());
        c.add(&Leftover::Image {
            reference: "minify-verify/ab:1-2-3-ab".into(),
            why: String::new(),
        });
        c.containers = 2;
        assert_eq!(c.to_string(), "2 containers, 1 image");
        c.add(&Leftover::TempDir {
            path: "/tmp/minify-view.1-2-3-ab.x".into(),
            why: String::new(),
        });
        assert_eq!(c.to_string(), "2 containers, 1 image, 1 temp dir");
    }
}
