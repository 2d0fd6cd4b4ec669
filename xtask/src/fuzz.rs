//! `cargo xtask fuzz`: run each cargo-fuzz target in `fuzz/` for a short time (nightly,
//! libFuzzer), so CI exercises the ELF and ld.so.cache parsers, in-image path resolution, the
//! layer reader (tar, gzip, zstd, whiteouts) and the OCI / docker-archive manifest readers on
//! hostile input. `-rss_limit_mb` makes a memory blow-up (a decompression bomb, a path whose
//! cost grows with its square) a finding like a crash.

use std::process::Command;

use anyhow::{Context, bail};

use crate::util;

/// Every target in `fuzz/fuzz_targets/`.
pub const TARGETS: &[&str] = &[
    "elf_parse",
    "resolve_path",
    "ld_cache",
    "image_layer",
    "image_manifest",
    "package_db",
];

/// The memory one input may take (`-rss_limit_mb`, and `-malloc_limit_mb` for one
/// allocation). The image readers stream layers and hold only an index, so for them anything
/// near 1 GiB is a blow-up (a decompression bomb, a path costing its square); the other
/// targets keep the 2 GiB they were tuned with.
fn memory_limits_mb(target: &str) -> (u32, u32) {
    if target.starts_with("image_") {
        (1024, 512)
    } else {
        (2048, 2048)
    }
}

/// How long and how randomly each target runs.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    /// `cargo xtask fuzz`: explore for this many seconds from a random seed, with the corpus
    /// libFuzzer keeps growing in `fuzz/corpus/<target>`.
    Explore { seconds: u64 },
    /// `cargo xtask test` (CI): a fixed seed, a fixed number of runs, and a fresh corpus made
    /// of the committed seeds only, so what CI runs is what a developer's machine ran before
    /// submitting, input for input. A random seed once let CI find a crash no rehearsal had
    /// seen (a tar error quoting a newline), which is what exploring is for, not a gate.
    Regress,
}

/// The fixed seed of [`Budget::Regress`].
const REGRESS_SEED: u32 = 1;

/// Runs per target in [`Budget::Regress`]: about 20 s each on the 2-core CI machine
/// (measured with `cargo xtask fuzz --regress`; the rate falls as the corpus grows).
fn regress_runs(target: &str) -> u64 {
    match target {
        "image_layer" => 4_000,
        "image_manifest" => 10_000,
        "ld_cache" => 30_000,
        "resolve_path" => 40_000,
        "package_db" => 60_000,
        _ => 100_000,
    }
}

/// Run `targets` (all when empty) within `budget`; a crash fails with the reproducer path.
pub fn run(targets: &[String], budget: Budget) -> anyhow::Result<()> {
    for t in targets {
        if !TARGETS.contains(&t.as_str()) {
            bail!("unknown fuzz target {t:?} (known: {})", TARGETS.join(", "));
        }
    }
    let chosen: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        targets.iter().map(String::as_str).collect()
    };
    let toolchain = crate::setup::ebpf_toolchain()?;
    ensure_cargo_fuzz(&toolchain)?;
    let dir = util::workspace_root().join("fuzz");
    for t in chosen {
        // Go through rustup so the pinned nightly (the eBPF one: `cargo xtask setup` installs
        // it) is picked whatever toolchain runs xtask.
        let mut cmd = Command::new("rustup");
        cmd.current_dir(&dir)
            .args(["run", &toolchain, "cargo", "fuzz", "run", t]);
        // Kept alive until the target has run: the fresh corpus of a regression run.
        let _corpus: Option<tempfile::TempDir>;
        match budget {
            Budget::Explore { seconds } => {
                util::step(&format!("fuzz {t} for {seconds} s (nightly, libFuzzer)"));
                _corpus = None;
                cmd.arg("--").arg(format!("-max_total_time={seconds}"));
            }
            Budget::Regress => {
                let runs = regress_runs(t);
                util::step(&format!(
                    "fuzz {t}: {runs} runs from seed {REGRESS_SEED} and the committed corpus (nightly, libFuzzer)"
                ));
                let tmp = tempfile::tempdir().context("temp dir for the fuzz corpus")?;
                let seeds = dir.join("corpus").join(t);
                let entries = if seeds.is_dir() {
                    fs_err::read_dir(&seeds)?.collect::<Vec<_>>()
                } else {
                    Vec::new()
                };
                for e in entries {
                    let p = e?.path();
                    let name = p.file_name().unwrap_or_default().to_string_lossy();
                    if name.starts_with("seed") {
                        fs_err::copy(&p, tmp.path().join(&*name))?;
                    }
                }
                cmd.arg(tmp.path())
                    .arg("--")
                    .arg(format!("-seed={REGRESS_SEED}"))
                    .arg(format!("-runs={runs}"))
                    // A cap, not the budget: on a machine this slow the run ends early.
                    .arg("-max_total_time=120");
                _corpus = Some(tmp);
            }
        }
        cmd.arg(format!("-rss_limit_mb={}", memory_limits_mb(t).0))
            .arg(format!("-malloc_limit_mb={}", memory_limits_mb(t).1))
            .arg("-timeout=10");
        util::run_status(&mut cmd).with_context(|| {
            format!(
                "fuzz target {t} failed; the input that broke it is in {}",
                dir.join("artifacts").join(t).display()
            )
        })?;
    }
    Ok(())
}

fn ensure_cargo_fuzz(toolchain: &str) -> anyhow::Result<()> {
    if util::output_of("rustup", &["run", toolchain, "cargo", "fuzz", "--version"]).is_some() {
        return Ok(());
    }
    util::step("cargo install cargo-fuzz (once)");
    let mut cmd = Command::new(util::cargo());
    cmd.args(["install", "cargo-fuzz", "--locked"]);
    util::run_status(&mut cmd)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::TARGETS;
    use crate::util;

    /// A target added to `fuzz/` but not to `TARGETS` would never run in CI.
    #[test]
    fn targets_list_every_fuzz_target() {
        let dir = util::workspace_root().join("fuzz").join("fuzz_targets");
        let on_disk: BTreeSet<String> = fs_err::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        let listed: BTreeSet<String> = TARGETS.iter().map(|t| (*t).to_owned()).collect();
        assert_eq!(listed, on_disk, "TARGETS vs {}", dir.display());
    }
}
