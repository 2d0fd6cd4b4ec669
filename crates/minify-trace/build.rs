//! Builds the eBPF programs (`ebpf/minify-trace-ebpf`, a pinned nightly + bpf-linker) with
//! aya-build and leaves the object in `OUT_DIR/minify-trace-ebpf` for `include_bytes!`.
//!
//! The toolchain is the channel in `ebpf/minify-trace-ebpf/rust-toolchain.toml` (or
//! `MINIFY_EBPF_TOOLCHAIN`). Before handing over to aya-build, this checks that the toolchain,
//! its `rust-src` and `bpf-linker` are there, and when one is missing stops with one line that
//! names it and the command that installs it: aya-build would otherwise fail deep inside
//! `cargo build -Z build-std` with a backtrace about a missing `Cargo.lock` (issue 11).
//!
//! `AYA_BUILD_SKIP=1` skips it (for machines without the eBPF toolchain): the crate then
//! builds with an empty object and `Tracer::start` reports that.

use std::path::{Path, PathBuf};
use std::process::Command;

const TOOLCHAIN_ENV: &str = "MINIFY_EBPF_TOOLCHAIN";

fn main() {
    if let Err(e) = build() {
        // `cargo::error=` (cargo 1.84+, below the workspace's rust-version) fails the build
        // with this one line as cargo's own `error:`; exiting non-zero would add the build
        // script's whole output after it.
        println!("cargo::error={e}");
    }
}

fn build() -> Result<(), String> {
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let root = canonical(&manifest.join("../../ebpf/minify-trace-ebpf"))?;
    let common = canonical(&manifest.join("../minify-trace-common/src"))?;
    let toolchain_file = root.join("rust-toolchain.toml");
    println!("cargo:rerun-if-changed={}", root.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.toml").display()
    );
    println!("cargo:rerun-if-changed={}", toolchain_file.display());
    println!("cargo:rerun-if-changed={}", common.display());
    println!("cargo:rerun-if-env-changed={TOOLCHAIN_ENV}");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let out = PathBuf::from(env("OUT_DIR")?).join("minify-trace-ebpf");
    let skip =
        std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        std::fs::write(&out, b"").map_err(|e| format!("writing {}: {e}", out.display()))?;
        // aya-build says it skipped, as a cargo warning.
    } else {
        check_toolchain(&toolchain(&toolchain_file)?)?;
    }
    let channel = toolchain(&toolchain_file)?;
    // `cargo build --package` must run inside the eBPF crate's own workspace.
    std::env::set_current_dir(&root).map_err(|e| format!("cd {}: {e}", root.display()))?;
    let root_str = root.to_string_lossy().into_owned();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "minify-trace-ebpf",
            root_dir: &root_str,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&channel),
    )
    .map_err(|e| format!("building the eBPF programs with {channel}: {e:#}"))
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set (run through cargo)"))
}

fn canonical(path: &Path) -> Result<PathBuf, String> {
    path.canonicalize()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `MINIFY_EBPF_TOOLCHAIN`, else the `channel = "..."` line of the eBPF crate's
/// rust-toolchain.toml (a plain line read: a TOML parser here would be one more build
/// dependency for one string).
fn toolchain(file: &Path) -> Result<String, String> {
    if let Ok(v) = std::env::var(TOOLCHAIN_ENV)
        && !v.trim().is_empty()
    {
        return Ok(v.trim().to_owned());
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .find(|v| !v.is_empty())
        .ok_or_else(|| format!("{}: no `channel = \"...\"` line", file.display()))
}

/// The three things the eBPF build needs that a fresh machine lacks.
fn check_toolchain(channel: &str) -> Result<(), String> {
    const FIX: &str = "run `cargo xtask setup` (it installs them), or set AYA_BUILD_SKIP=1 to \
                       build without the tracer";
    let sysroot = Command::new("rustup")
        .args(["run", channel, "rustc", "--print", "sysroot"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .output();
    let sysroot = match sysroot {
        Err(e) => {
            return Err(format!(
                "the eBPF programs need rustup ({e}); install it from rustup.rs, then {FIX}"
            ));
        }
        Ok(o) if !o.status.success() => {
            return Err(format!(
                "the eBPF programs are built with the Rust toolchain {channel}, which is not installed: {FIX}"
            ));
        }
        Ok(o) => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
    };
    let lock = sysroot.join("lib/rustlib/src/rust/library/Cargo.lock");
    if !lock.is_file() {
        return Err(format!(
            "the Rust toolchain {channel} has no rust-src component (no {}), which the eBPF build needs: {FIX}",
            lock.display()
        ));
    }
    let linker = Command::new("bpf-linker").arg("--version").output();
    if !linker.is_ok_and(|o| o.status.success()) {
        return Err(format!(
            "bpf-linker is not on PATH (the eBPF programs are linked with bpf-linker 0.10.0): {FIX}"
        ));
    }
    Ok(())
}
