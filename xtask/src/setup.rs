//! `cargo xtask setup`: make a fresh Debian bookworm machine (root, rustup) able to build,
//! test and run minify. Each step checks first and only acts when something is missing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::util::{have, output_of, run_status, step};

const BPF_LINKER_VERSION: &str = "0.10.0";
const DOCKERD_LOG: &str = "/var/log/minify-dockerd.log";

pub fn run() -> anyhow::Result<()> {
    step("setup");
    if !nix::unistd::geteuid().is_root() {
        bail!("setup installs packages, starts dockerd and mounts tracefs: run it as root");
    }
    docker_engine()?;
    debootstrap()?;
    nightly_rust_src()?;
    bpf_linker()?;
    tracefs()?;
    ca_certs()?;
    eprintln!("    setup: everything is in place");
    Ok(())
}

fn ok(what: &str, detail: &str) {
    eprintln!("    ok  {what:<18} {detail}");
}

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    if !APT_UPDATED.swap(true, Ordering::SeqCst) {
        run_status(Command::new("apt-get").args(["-q", "update"]))?;
    }
    run_status(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-q", "install", "-y", "--no-install-recommends"])
            .args(packages),
    )
}

fn docker_version() -> Option<String> {
    output_of("docker", &["info", "--format", "{{.ServerVersion}}"]).filter(|v| !v.is_empty())
}

fn docker_engine() -> anyhow::Result<()> {
    if let Some(v) = docker_version() {
        ok("docker engine", &format!("running ({v})"));
        return Ok(());
    }
    if !have("dockerd") || !have("docker") {
        eprintln!("    installing docker.io (engine, containerd, runc)");
        apt_install(&["docker.io"])?;
    }
    eprintln!("    starting dockerd in the background (log: {DOCKERD_LOG})");
    let log = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(DOCKERD_LOG)?;
    let log2 = log.file().try_clone()?;
    // A process group of its own so a Ctrl-C in this terminal does not stop the engine.
    std::os::unix::process::CommandExt::process_group(
        Command::new("dockerd")
            .stdin(Stdio::null())
            .stdout(log.into_file())
            .stderr(log2),
        0,
    )
    .spawn()
    .context("while starting dockerd")?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(90) {
        if let Some(v) = docker_version() {
            ok(
                "docker engine",
                &format!("started ({v}) in {:.1}s", start.elapsed().as_secs_f64()),
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("dockerd did not answer within 90 s; see {DOCKERD_LOG}")
}

fn debootstrap() -> anyhow::Result<()> {
    if !have("debootstrap") {
        eprintln!("    installing debootstrap");
        apt_install(&["debootstrap"])?;
    }
    let version =
        output_of("dpkg-query", &["-W", "-f", "${Version}", "debootstrap"]).unwrap_or_default();
    ok("debootstrap", &version);
    Ok(())
}

fn nightly_rust_src() -> anyhow::Result<()> {
    if !have("rustup") {
        bail!("rustup is not on PATH; install it (https://rustup.rs) and re-run");
    }
    let toolchains = output_of("rustup", &["toolchain", "list"]).unwrap_or_default();
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        eprintln!("    installing the nightly toolchain (eBPF programs are built with it)");
        run_status(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    let installed = output_of(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("    adding rust-src to nightly");
        run_status(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    let version = output_of("rustc", &["+nightly", "--version"]).unwrap_or_default();
    ok("nightly rust-src", &version);
    Ok(())
}

fn bpf_linker() -> anyhow::Result<()> {
    let current = output_of("bpf-linker", &["--version"]).unwrap_or_default();
    if !current.contains(BPF_LINKER_VERSION) {
        // Newer releases need a system LLVM these machines cannot install (shared/KERNEL.md).
        eprintln!("    installing bpf-linker {BPF_LINKER_VERSION} (about a minute)");
        run_status(Command::new(crate::util::cargo()).args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
        ]))?;
    }
    ok(
        "bpf-linker",
        &output_of("bpf-linker", &["--version"]).unwrap_or_default(),
    );
    Ok(())
}

fn tracefs() -> anyhow::Result<()> {
    let dir = Path::new("/sys/kernel/tracing");
    if dir.join("events").is_dir() {
        ok("tracefs", "mounted at /sys/kernel/tracing");
        return Ok(());
    }
    run_status(Command::new("mount").args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"]))
        .context("tracepoints need tracefs at /sys/kernel/tracing")?;
    ok(
        "tracefs",
        "was not mounted: mounted it at /sys/kernel/tracing",
    );
    Ok(())
}

fn ca_certs() -> anyhow::Result<()> {
    if !Path::new("/etc/ssl/certs/ca-certificates.crt").is_file() {
        eprintln!("    installing ca-certificates");
        apt_install(&["ca-certificates"])?;
    }
    let extra = fs_err::read_dir("/usr/local/share/ca-certificates").map_or(0, |d| {
        d.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "crt"))
            .count()
    });
    ok(
        "CA certificates",
        &format!(
            "/etc/ssl/certs/ca-certificates.crt; {extra} extra in /usr/local/share/ca-certificates \
             (copied into fixture builds that use pip)"
        ),
    );
    Ok(())
}
