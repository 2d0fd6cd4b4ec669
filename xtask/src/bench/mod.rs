//! `cargo xtask bench [AREA]`: benchmarks, kept apart from the tests. Each area measures side by
//! side in one run and writes a readable report to `bench/results/<area>.md`.

mod image;
mod run;

use std::process::Command;

use crate::util::{cargo, run_status, step, workspace_root};

/// Which benchmarks to run.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Area {
    /// Reading, flattening and packing images (minify-image).
    Image,
    /// Tracing overhead and event loss (minify-trace).
    Trace,
    /// `minify run` end to end on the fixtures.
    Run,
    /// All of the above.
    All,
}

pub fn run(area: Area) -> anyhow::Result<()> {
    let areas = match area {
        Area::All => vec![Area::Image, Area::Trace, Area::Run],
        one => vec![one],
    };
    // Every area builds minify or the tracer: the eBPF toolchain must be there first.
    crate::setup::run()?;
    let mut failures = Vec::new();
    for area in areas {
        step(&format!("bench {area:?}"));
        let result = match area {
            Area::Image => image::run(),
            Area::Trace => trace(),
            Area::Run | Area::All => run::run(),
        };
        if let Err(e) = result {
            eprintln!("    bench {area:?} failed: {e:#}");
            failures.push(format!("{area:?}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("benchmarks failed: {}", failures.join(", "))
    }
}

/// The tracer benchmark is its own binary (bench/trace-bench): it links minify-trace, whose
/// build needs the eBPF toolchain that xtask must not depend on. Same dev profile as before
/// (minify-trace itself is built at opt-level 2 there), so figures stay comparable.
fn trace() -> anyhow::Result<()> {
    run_status(Command::new(cargo()).current_dir(workspace_root()).args([
        "run",
        "--quiet",
        "-p",
        "minify-bench-trace",
    ]))
}

/// Writes `markdown` to `bench/results/<area>.md` and says where.
pub fn write_results(area: &str, markdown: &str) -> anyhow::Result<()> {
    let dir = workspace_root().join("bench/results");
    fs_err::create_dir_all(&dir)?;
    let path = dir.join(format!("{area}.md"));
    fs_err::write(&path, markdown)?;
    eprintln!("    wrote {}", path.display());
    Ok(())
}
