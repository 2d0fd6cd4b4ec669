//! `cargo xtask bench image`: read and pack throughput (MB/s) and peak memory of the release
//! `minify` binary on the `fat` fixture (several hundred MB), written to
//! `bench/results/image.md`.
//!
//! Each step is one child process; its peak RSS comes from the rusage of that child alone
//! (through GNU time when installed, so the figure does not start at xtask's own peak), and is put side by side with the image size: reading streams layers and packing
//! streams files, so the ratio must stay far below 1. A second table gives peak RSS on the
//! worst cases of the hostile-input corpus (1 and 10 MB paths, a deep tree, pax and GNU
//! long-name bombs, an xattr flood).

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use crate::util::{cargo, mb, run_status, step, workspace_root};

/// One measured child run.
struct Measure {
    what: String,
    /// Bytes the step moved (image size for reads, packed file bytes for packs).
    bytes: u64,
    secs: f64,
    max_rss: u64,
}

/// GNU time: measures peak RSS from a small parent (see [`measure_any`]).
const GNU_TIME: &str = "/usr/bin/time";

/// Runs `minify ARGS` and measures it; stdout is returned, stderr goes to `log`.
fn measure(bin: &Path, args: &[&str], log: &Path) -> anyhow::Result<(String, f64, u64)> {
    let (code, out, secs, max_rss) = measure_any(bin, args, log)?;
    if code != Some(0) {
        bail!(
            "minify {} failed (exit {code:?}): {}",
            args.join(" "),
            fs_err::read_to_string(log).unwrap_or_default().trim()
        );
    }
    Ok((out, secs, max_rss))
}

/// [`measure`] for a run that may fail: also returns its exit code (`None`: a signal).
fn measure_any(
    bin: &Path,
    args: &[&str],
    log: &Path,
) -> anyhow::Result<(Option<i32>, String, f64, u64)> {
    let out_path = log.with_extension("out");
    let rss_path = log.with_extension("rss");
    let stdout = fs_err::File::create(&out_path)?;
    let stderr = fs_err::File::create(log)?;
    // A child's ru_maxrss starts from the high-water mark of the memory it was spawned from
    // (the kernel accounts the old mm at exec), and xtask itself grows to ~100 MB making the
    // hostile cases: GNU time, small, forks minify and reports its own peak alone.
    let time = Path::new(GNU_TIME);
    let mut cmd = if time.exists() {
        let mut c = Command::new(time);
        c.args(["-f", "%M", "-o"]).arg(&rss_path).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    let start = Instant::now();
    let child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout.into_parts().0)
        .stderr(stderr.into_parts().0)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = libc::pid_t::try_from(child.id())?;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    #[allow(unsafe_code)]
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid out-pointers; std's Child never waits on
    // its own, so the pid is still ours to reap.
    #[allow(unsafe_code)]
    let r = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    let secs = start.elapsed().as_secs_f64();
    if r != pid {
        bail!("wait4({pid}): {}", std::io::Error::last_os_error());
    }
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    // Both are in KiB on Linux; time's file ends with the number ("Command exited with
    // non-zero status N" may come first).
    let kib = if time.exists() {
        fs_err::read_to_string(&rss_path)?
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .with_context(|| format!("no peak RSS from {GNU_TIME} in {}", rss_path.display()))?
    } else {
        u64::try_from(usage.ru_maxrss).unwrap_or(0)
    };
    let max_rss = kib * 1024;
    Ok((code, fs_err::read_to_string(&out_path)?, secs, max_rss))
}

/// Peak memory of `minify inspect` on the worst cases of the hostile-input corpus
/// (`minify_fixtures::hostile::WORST`): before issue 12's fixes the 1 MB path took more
/// than 4 GiB and the pax bomb as much as it inflated to. Markdown table rows.
fn hostile(bin: &Path, tmp: &Path) -> anyhow::Result<String> {
    use minify_fixtures::hostile;
    let canary = tmp.join("canary");
    fs_err::write(&canary, hostile::canary_bytes())?;
    let env = hostile::Env { canary };
    let mut md = String::new();
    for (name, _, make) in hostile::cases() {
        if !hostile::WORST.contains(&name) {
            continue;
        }
        step(&format!("hostile input {name}"));
        let dir = tmp.join("hostile").join(name);
        fs_err::create_dir_all(&dir)?;
        let args = make(&env, &dir);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = dir.join("minify.log");
        let (code, _, secs, max_rss) = measure_any(bin, &args, &log)?;
        let said = fs_err::read_to_string(&log)?;
        let said = said.lines().next().unwrap_or("").replace('|', "\\|");
        // The layout's path is of no interest in the table.
        let said = said.replace(&format!("{}/", dir.display()), "");
        let _ = writeln!(
            md,
            "| `{name}` | {} | {:.2} s | {} | {} |",
            args[0],
            secs,
            mb(max_rss),
            code.map_or_else(|| "signal".to_owned(), |c| format!("{c}: {said}"))
        );
        let _ = fs_err::remove_dir_all(&dir);
    }
    Ok(md)
}

pub fn run() -> anyhow::Result<()> {
    let root = workspace_root();
    step("build the release minify binary");
    run_status(
        Command::new(cargo())
            .args(["build", "--release", "-p", "minify"])
            .current_dir(&root),
    )?;
    // Where cargo put it (`CARGO_TARGET_DIR` when set), not always `target/`.
    let bin = crate::util::target_dir().join("release/minify");
    step("fat fixture");
    let image = minify_fixtures::fixture("fat")?;
    let image_size = minify_fixtures::image_size(&image)?;
    let tmp = std::env::temp_dir().join(format!("minify-bench-image-{}", std::process::id()));
    fs_err::create_dir_all(&tmp)?;
    let result = bench(&bin, &image, image_size, &tmp);
    let hostile_rows = hostile(&bin, &tmp);
    let _ = fs_err::remove_dir_all(&tmp);
    let measures = result?;
    let hostile_rows = hostile_rows?;

    let mut md = String::new();
    let _ = writeln!(md, "# minify-image benchmark\n");
    let _ = writeln!(
        md,
        "Image `{image}`: {} (`docker image inspect` size). Release build, one child process \
         per step, peak RSS from GNU time (`wait4` of a small parent). Reads flatten every layer and check every digest; \
         packs read the source again and write one new layer with the listed files.\n",
        mb(image_size)
    );
    let _ = writeln!(
        md,
        "| step | bytes | time | throughput | peak RSS | peak RSS / image size |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for m in &measures {
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} s | {:.1} MB/s | {} | {:.3} |",
            m.what,
            mb(m.bytes),
            m.secs,
            m.bytes as f64 / 1e6 / m.secs,
            mb(m.max_rss),
            m.max_rss as f64 / image_size as f64
        );
    }
    let _ = writeln!(
        md,
        "\n## Hostile inputs\n\nPeak RSS of `minify` on the worst cases of the hostile-input \
         corpus (`tests/fixtures/src/hostile.rs`, issue 12); a refusal is exit 2 with one line. \
         Before the fixes, `pax-path-1mb` took `inspect` past 4 GiB, `pax-path-10mb` to the OOM \
         killer, and the bombs as much memory as their records inflated to.\n"
    );
    let _ = writeln!(
        md,
        "| case | command | time | peak RSS | exit: first line |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---|");
    md.push_str(&hostile_rows);
    let _ = writeln!(
        md,
        "\nMachine: {} cores. Run `cargo xtask bench image` to refresh.",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    print!("{md}");
    super::write_results("image", &md)
}

fn bench(bin: &Path, image: &str, image_size: u64, tmp: &Path) -> anyhow::Result<Vec<Measure>> {
    let saved = tmp.join("fat.tar");
    step("docker save (input for the file transport)");
    minify_fixtures::docker(["save", "-o", &saved.display().to_string(), image])?;
    let archive = format!("docker-archive:{}", saved.display());

    // A big allowlist: everything under these trees (what a compiler-heavy workload keeps),
    // listed by the image itself; the container's own mounts are left out.
    let listing = minify_fixtures::docker([
        "run",
        "--rm",
        "--entrypoint",
        "find",
        image,
        "/usr",
        "/etc",
        "/var",
        "-xdev",
    ])?;
    // Files the container runtime adds (bind mounts, the /etc/mtab link).
    let mounts = [
        "/etc/hostname",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/etc/mtab",
    ];
    let mut paths: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with('/') && !mounts.contains(l))
        .collect();
    paths.sort_unstable();
    let mut al = String::from(
        "{\"minify_allowlist\":1,\"tool\":\"bench\",\"source\":{\"image\":\"\",\"digest\":\"\"},\"paths\":[\n",
    );
    for (i, p) in paths.iter().enumerate() {
        let sep = if i + 1 == paths.len() { "" } else { "," };
        let _ = writeln!(
            al,
            "{{\"path\":{},\"reason\":\"include\"}}{sep}",
            serde_json::Value::from(*p)
        );
    }
    al.push_str("]}\n");
    let al_path = tmp.join("big.allowlist.json");
    fs_err::write(&al_path, al)?;
    let al_s = al_path.display().to_string();

    let mut out = Vec::new();
    let mut read = |what: &str, args: &[&str]| -> anyhow::Result<()> {
        step(what);
        let (_, secs, max_rss) = measure(bin, args, &tmp.join("read.log"))?;
        out.push(Measure {
            what: what.into(),
            bytes: image_size,
            secs,
            max_rss,
        });
        Ok(())
    };
    read(
        "read from the daemon (export + flatten)",
        &["inspect", image],
    )?;
    read("read docker-archive (flatten)", &["inspect", &archive])?;

    for (what, src, dst) in [
        (
            "pack from docker-archive into docker-archive",
            archive.as_str(),
            format!("docker-archive:{}", tmp.join("out.tar").display()),
        ),
        (
            "pack from the daemon into oci",
            image,
            format!("oci:{}", tmp.join("out-oci").display()),
        ),
    ] {
        step(what);
        let log = tmp.join("pack.log");
        let (_, secs, max_rss) = measure(
            bin,
            &["build", src, "--allowlist", &al_s, "--tag", &dst],
            &log,
        )?;
        // `minify build` says "<out>: N entries, B bytes of files (...)" on stderr.
        let said = fs_err::read_to_string(&log)?;
        let bytes = said
            .split(" bytes of files")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no byte count in minify build's output: {said}"))?;
        out.push(Measure {
            what: format!("{what} ({} paths)", paths.len()),
            bytes,
            secs,
            max_rss,
        });
    }
    Ok(out)
}
