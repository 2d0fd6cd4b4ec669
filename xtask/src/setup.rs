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
    tracefs()?;
    debootstrap()?;
    ebpf_toolchain_with_rust_src()?;
    bpf_linker()?;
    ca_certs()?;
    cyclonedx_validator()?;
    registry_tools()?;
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

/// The Rust toolchain the eBPF programs (and the fuzz targets) are built with:
/// `MINIFY_EBPF_TOOLCHAIN`, else the channel pinned in the eBPF crate's rust-toolchain.toml,
/// which crates/minify-trace/build.rs reads the same way.
pub fn ebpf_toolchain() -> anyhow::Result<String> {
    if let Ok(v) = std::env::var("MINIFY_EBPF_TOOLCHAIN")
        && !v.trim().is_empty()
    {
        return Ok(v.trim().to_owned());
    }
    let file = crate::util::workspace_root().join("ebpf/minify-trace-ebpf/rust-toolchain.toml");
    let text = fs_err::read_to_string(&file)?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .find(|v| !v.is_empty())
        .with_context(|| format!("{}: no `channel = \"...\"` line", file.display()))
}

fn ebpf_toolchain_with_rust_src() -> anyhow::Result<()> {
    if !have("rustup") {
        bail!("rustup is not on PATH; install it (https://rustup.rs) and re-run");
    }
    let toolchain = ebpf_toolchain()?;
    // `rustup run` fails for a toolchain that is not installed: cheaper than parsing
    // `rustup toolchain list`, whose names carry the host triple.
    let sysroot = output_of(
        "rustup",
        &["run", &toolchain, "rustc", "--print", "sysroot"],
    );
    if sysroot.is_none() {
        eprintln!(
            "    installing the Rust toolchain {toolchain} with rust-src (the eBPF programs are \
             built with it)"
        );
        run_status(Command::new("rustup").args([
            "toolchain",
            "install",
            &toolchain,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))
        .with_context(|| {
            format!(
                "rustup could not install {toolchain}; if your rustup server offers no dated \
                 nightlies, MINIFY_EBPF_TOOLCHAIN=nightly uses the newest one (checked only with \
                 {toolchain}; a newer nightly may need a newer bpf-linker)"
            )
        })?;
    }
    let sysroot = output_of(
        "rustup",
        &["run", &toolchain, "rustc", "--print", "sysroot"],
    )
    .with_context(|| format!("{toolchain} was installed but `rustc --print sysroot` fails"))?;
    if !Path::new(&sysroot)
        .join("lib/rustlib/src/rust/library/Cargo.lock")
        .is_file()
    {
        eprintln!("    adding rust-src to {toolchain}");
        run_status(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            &toolchain,
        ]))?;
    }
    let version =
        output_of("rustup", &["run", &toolchain, "rustc", "--version"]).unwrap_or_default();
    ok(
        "eBPF toolchain",
        &format!("{toolchain} with rust-src ({version})"),
    );
    Ok(())
}

fn bpf_linker() -> anyhow::Result<()> {
    let current = output_of("bpf-linker", &["--version"]).unwrap_or_default();
    if !current.contains(BPF_LINKER_VERSION) {
        // Newer releases need a system LLVM these machines cannot install (docs/KERNEL.md).
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

/// What the registry e2e tests start and drive: Debian's docker-registry (distribution),
/// skopeo, htpasswd (bcrypt, which distribution needs) and openssl (the test CA). Installing
/// docker-registry does not start its service here (no init system in these machines); the
/// tests start their own on a free port.
fn registry_tools() -> anyhow::Result<()> {
    let wanted = [
        ("docker-registry", "docker-registry"),
        ("skopeo", "skopeo"),
        ("htpasswd", "apache2-utils"),
        ("openssl", "openssl"),
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(program, _)| !have(program))
        .map(|(_, package)| *package)
        .collect();
    if !missing.is_empty() {
        eprintln!("    installing {}", missing.join(", "));
        apt_install(&missing)?;
    }
    ok(
        "registry tools",
        &format!(
            "docker-registry {}, skopeo {}",
            output_of("dpkg-query", &["-W", "-f", "${Version}", "docker-registry"])
                .unwrap_or_default(),
            output_of("dpkg-query", &["-W", "-f", "${Version}", "skopeo"]).unwrap_or_default()
        ),
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

/// The CycloneDX schema validator the SBOM tests use (minify_fixtures'
/// `require_cyclonedx_validator`): `cyclonedx-python-lib` with its JSON validation extra,
/// pinned, in a venv of its own so nothing of the system's Python changes.
fn cyclonedx_validator() -> anyhow::Result<()> {
    let venv = minify_fixtures::cyclonedx_venv();
    let python = venv.join("bin/python");
    let works = |python: &Path| {
        Command::new(python)
            .args([
                "-c",
                "import cyclonedx.validation.json, jsonschema, referencing",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !works(&python) {
        eprintln!(
            "    installing {} in the venv {}",
            minify_fixtures::CYCLONEDX_PYTHON_LIB,
            venv.display()
        );
        if let Some(parent) = venv.parent() {
            fs_err::create_dir_all(parent)?;
        }
        if !python.is_file() {
            let made = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success());
            if !made {
                // Debian's python3 has no venv module without python3-venv.
                let _ = fs_err::remove_dir_all(&venv);
                apt_install(&["python3-venv"])?;
                run_status(
                    Command::new("/usr/bin/python3")
                        .args(["-m", "venv"])
                        .arg(&venv),
                )?;
            }
        }
        run_status(
            Command::new(&python)
                .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    minify_fixtures::CYCLONEDX_PYTHON_LIB,
                ]),
        )?;
        if !works(&python) {
            bail!(
                "{} was installed in {} but does not import",
                minify_fixtures::CYCLONEDX_PYTHON_LIB,
                venv.display()
            );
        }
    }
    ok("CycloneDX validator", &python.display().to_string());
    Ok(())
}
