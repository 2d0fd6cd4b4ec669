//! `cargo xtask`: set-up, fixture images, the test suite with CI semantics, the demo, and
//! benchmarks. Every subcommand is idempotent and safe to re-run.

mod bench;
mod demo;
mod fixtures;
mod fuzz;
mod setup;
mod util;

use clap::{Parser, Subcommand};

/// Project tasks for minify (run as root on a Debian machine).
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install and start what minify and its tests need: Docker engine, debootstrap, the
    /// pinned nightly with rust-src, bpf-linker 0.10.0, tracefs. Idempotent.
    Setup,
    /// Build (or reuse) fixture images; all of them when no name is given.
    Fixtures {
        /// Fixture names (base, nginx, python-http, flask, redis, node, static, fat).
        names: Vec<String>,
        /// Also run each image and check it answers its probe.
        #[arg(long)]
        check: bool,
    },
    /// Set up, build every fixture, then `cargo test --workspace` with CI=true (a skipped
    /// test fails). This is the README's test command.
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Same as `test` (the name CI scripts call).
    Ci {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Set up, build the nginx fixture, minify it end to end and show before/after.
    Demo,
    /// Run the cargo-fuzz targets (fuzz/, nightly) for a short time each.
    Fuzz {
        /// Targets (elf_parse, resolve_path, ld_cache, image_layer, image_manifest,
        /// package_db); all when none is given.
        targets: Vec<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Run exactly what `cargo xtask test` (CI) runs: a fixed seed, a fixed number of
        /// runs, the committed seeds as the corpus.
        #[arg(long, conflicts_with = "seconds")]
        regress: bool,
    },
    /// Benchmarks; results go to bench/results/<area>.md.
    Bench {
        /// Which area: image, trace, run, or all.
        #[arg(default_value = "all")]
        area: bench::Area,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Setup => setup::run(),
        Task::Fixtures { names, check } => fixtures::run(&names, check),
        Task::Test { cargo_args } | Task::Ci { cargo_args } => test(&cargo_args),
        Task::Demo => demo::run(),
        Task::Bench { area } => bench::run(area),
        Task::Fuzz {
            targets,
            seconds,
            regress,
        } => {
            let budget = if regress {
                fuzz::Budget::Regress
            } else {
                fuzz::Budget::Explore { seconds }
            };
            fuzz::run(&targets, budget)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `cargo xtask test`: everything a fresh machine needs, then the whole suite, where a skip is
/// a failure.
fn test(cargo_args: &[String]) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    let lap = |what: &str| {
        eprintln!(
            "    [{what} done at {:.0} s]",
            start.elapsed().as_secs_f64()
        );
    };
    setup::run()?;
    lap("setup");
    fixtures::run(&[], false)?;
    lap("fixtures");
    util::step("cargo test --workspace --no-fail-fast (CI=true: a skipped test is a failure)");
    let mut cmd = std::process::Command::new(util::cargo());
    cmd.current_dir(util::workspace_root())
        .env("CI", "true")
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(cargo_args);
    util::run_status(&mut cmd)?;
    lap("cargo test");
    // A short, reproducible fuzz of every parser of hostile input (ELF, ld.so.cache, in-image
    // paths, layers, manifests, package databases).
    fuzz::run(&[], fuzz::Budget::Regress)
}

#[cfg(test)]
mod tests {
    /// xtask must build before `cargo xtask setup` has installed the eBPF toolchain (issue 11):
    /// nothing it links may have a build script that compiles eBPF. Checked on the resolved
    /// graph, so a transitive dependency (say through minify-fixtures) counts too.
    #[test]
    fn xtask_does_not_depend_on_the_ebpf_build() {
        let out = std::process::Command::new(crate::util::cargo())
            .current_dir(crate::util::workspace_root())
            .args([
                "tree",
                "--offline",
                "-p",
                "xtask",
                "-e",
                "normal,build",
                "--prefix",
                "none",
                "--format",
                "{p}",
            ])
            .output()
            .expect("cargo tree runs");
        assert!(
            out.status.success(),
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tree = String::from_utf8_lossy(&out.stdout);
        assert!(
            tree.lines().any(|l| l.starts_with("minify-fixtures ")),
            "{tree}"
        );
        for forbidden in ["minify-trace ", "aya-build "] {
            assert!(
                !tree.lines().any(|l| l.starts_with(forbidden)),
                "xtask depends on {forbidden}(its build needs the eBPF toolchain):\n{tree}"
            );
        }
    }
}
