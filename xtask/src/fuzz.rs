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

/// Run `targets` (all when empty) for `seconds` each; a crash fails with the reproducer path.
pub fn run(targets: &[String], seconds: u64) -> anyhow::Result<()> {
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
        util::step(&format!("fuzz {t} for {seconds} s (nightly, libFuzzer)"));
        // Go through rustup so the pinned nightly (the eBPF one: `cargo xtask setup` installs
        // it) is picked whatever toolchain runs xtask.
        let mut cmd = Command::new("rustup");
        cmd.current_dir(&dir)
            .args(["run", &toolchain, "cargo", "fuzz", "run", t, "--"])
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-rss_limit_mb={}", memory_limits_mb(t).0))
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
