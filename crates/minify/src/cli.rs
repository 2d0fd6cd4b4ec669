//! The command line. The `///` docs here are the `--help` text. The contract (names, flags,
//! exit codes) is in docs/DESIGN.md: change it there first.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Shrink a container image to the files its workload really uses.
#[derive(Debug, Parser)]
#[command(name = "minify", version, about, long_about = None)]
pub struct Cli {
    /// More logging (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Union several allowlists of the same image into one.
    Merge(MergeArgs),
    /// Run IMAGE under the tracer, probe it, keep only the files it used, pack and verify.
    Run(Box<RunArgs>),
    /// Pack IMAGE from an allowlist, with no tracing (same image + allowlist = same id).
    Build(BuildArgs),
    /// Show an image's size, layers, file count and largest directories.
    Inspect(InspectArgs),
    /// What OUTPUT keeps of every package of SOURCE (e.g. an image and its minified form):
    /// kept and removed files and bytes, largest removals first, and totals.
    Diff(DiffArgs),
    /// Run a command under the eBPF tracer and print every path it touched.
    Trace(TraceArgs),
    /// Check what this machine allows: eBPF attach types, BTF, tracefs, privileges, Docker.
    Doctor(DoctorArgs),
    /// Remove what killed minify runs left behind: containers, temporary images, cgroups,
    /// temporary directories.
    Gc(GcArgs),
}

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Allowlists to merge (made from the same image).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Where to write the union.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// How `docker://` images are reached (skopeo's flags of the same names). Credentials come
/// from Docker's config.json ($DOCKER_CONFIG, else ~/.docker), credential helpers included.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// false: reach docker:// registries over HTTPS without checking their certificate, or
    /// over plain HTTP when they do not speak TLS.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub tls_verify: bool,
    /// Trust the CA certificates (*.crt) in DIR for docker:// registries, besides the
    /// system's.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// The image to take from a docker:// multi-platform index: os/arch[/variant] (default:
    /// this machine's, linux/amd64 here).
    #[arg(long, value_name = "OS/ARCH")]
    pub platform: Option<String>,
}

impl RegistryArgs {
    /// As the image crate takes them.
    pub fn access(&self) -> minify_image::RegistryAccess {
        minify_image::RegistryAccess {
            tls_verify: self.tls_verify,
            cert_dir: self.cert_dir.clone(),
            platform: self.platform.clone(),
        }
    }
}

/// `minify build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Source image: name:tag or name@sha256:.. in the Docker daemon,
    /// docker-archive:PATH[:NAME:TAG|:@INDEX], oci:DIR[:TAG], oci-archive:PATH[:TAG] or
    /// docker://HOST[:PORT]/NAME[:TAG|@DIGEST] (a registry).
    pub image: String,
    /// The allowlist to pack (from `minify run --allowlist-out`, or hand-written).
    #[arg(long)]
    pub allowlist: PathBuf,
    /// package: add to the allowlist every package owning one of its files, whole, as
    /// `minify run --granularity package` does (locales only if the allowlist holds the locale
    /// set). An allowlist written by `run --granularity package` needs nothing: it lists them.
    #[arg(long, value_name = "file|package", default_value = "file")]
    pub granularity: minify_closure::Granularity,
    /// A root of the allowlist (a traced or included path) that the image no longer has and
    /// that no rename rule (soname, dist-info, pyc, debian-package) finds: error (exit 2, the default) or warn
    /// (build without it).
    #[arg(long, value_name = "error|warn", value_parser = ["error", "warn"], default_value = "error")]
    pub on_missing: String,
    /// Output image (default NAME:TAG-min in the daemon); also docker-archive:PATH[:NAME:TAG]
    /// (the name `docker load` gives it), oci:DIR[:TAG], oci-archive:PATH[:TAG],
    /// docker://HOST[:PORT]/NAME:TAG (pushed; its tag is replaced as `docker push` does).
    #[arg(long)]
    pub tag: Option<String>,
    /// Replace an existing output file or directory.
    #[arg(long)]
    pub force: bool,
    /// How the new layer is stored in an oci:, oci-archive: or docker:// output: gzip (the
    /// default), zstd or none. (A docker-archive holds it uncompressed, as `docker save`
    /// writes one.)
    #[arg(long, value_name = "FORMAT")]
    pub compression: Option<minify_image::Compression>,
    /// Write a CycloneDX 1.5 JSON SBOM of the minified image here: every package (dpkg,
    /// Python, npm) that still owns a kept file, with its package URL and the files kept. An
    /// oci: or oci-archive: output also holds it, as an OCI 1.1 artifact whose subject is the
    /// image. Written only with the output.
    #[arg(long, value_name = "FILE")]
    pub sbom: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// A CI policy gate: when the output would keep a shell, exit 1 before anything is
    /// written (the attack-surface line on stderr says which and why).
    #[arg(long)]
    pub fail_on_shell: bool,
}

/// `minify inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Image: name:tag or name@sha256:.. in the Docker daemon,
    /// docker-archive:PATH[:NAME:TAG|:@INDEX], oci:DIR[:TAG], oci-archive:PATH[:TAG] or
    /// docker://HOST[:PORT]/NAME[:TAG|@DIGEST].
    pub image: String,
    /// Print JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `minify diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The image whose packages are accounted (same forms as `minify inspect`).
    pub source: String,
    /// The image compared with it.
    pub output: String,
    /// Print JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `minify run`. Probe flags may be mixed and repeated; they run in the order given.
#[derive(Debug, clap::Args)]
#[allow(clippy::struct_excessive_bools)]
pub struct RunArgs {
    /// The image to minify: name:tag or name@digest in the Docker daemon, or a file:
    /// docker-archive:PATH[:NAME:TAG|:@INDEX] (`docker save`; which image of several),
    /// oci:DIR[:TAG], oci-archive:PATH[:TAG], or a registry:
    /// docker://HOST[:PORT]/NAME[:TAG|@DIGEST] (pulled into a temporary directory). A file
    /// or a pulled image is only read; it runs from a copy loaded into the daemon under a
    /// temporary name (minify-verify/...), removed when the run ends, also on failure,
    /// Ctrl-C and SIGTERM.
    pub image: String,
    /// Probe on the host with `sh -c CMD`; MINIFY_CONTAINER (id) and MINIFY_HOST (the
    /// container's address) are set. Passes on exit code 0.
    #[arg(long = "probe-cmd", value_name = "CMD")]
    pub probe_cmd: Vec<String>,
    /// Probe inside the container (like `docker exec`). A simple command is exec'd directly;
    /// one with shell syntax runs through the image's /bin/sh, which is then kept.
    #[arg(long = "probe-exec", value_name = "CMD")]
    pub probe_exec: Vec<String>,
    /// GET PATH on every exposed TCP port; any answer below 500 passes. A connection error
    /// or a 5xx answer is retried until --ready-timeout runs out (an app behind a front that
    /// opens its port first), then the last answer counts.
    #[arg(long = "probe-http", value_name = "PATH")]
    pub probe_http: Vec<String>,
    /// Seconds each probe may take before it is killed and fails.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub probe_timeout: u64,
    /// Seconds to wait, on each image, for readiness: the exposed TCP ports accepting
    /// connections, then --ready-http and --ready-cmd passing, and --probe-http's retries.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub ready_timeout: u64,
    /// Before any probe, on each image: wait until GET PATH on every exposed TCP port answers
    /// below 500 (retried every half second). Not a probe: it is not counted or reported as
    /// one. An image that never answers fails (on the minified image: verification fails).
    #[arg(long = "ready-http", value_name = "PATH")]
    pub ready_http: Vec<String>,
    /// Before any probe, on each image: wait until `sh -c CMD` on the host exits 0 (retried
    /// every half second; MINIFY_CONTAINER and MINIFY_HOST set as for --probe-cmd). Not a
    /// probe.
    #[arg(long = "ready-cmd", value_name = "CMD")]
    pub ready_cmd: Vec<String>,
    /// With no probe: trace until the entrypoint exits or this many seconds pass.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,
    /// Output image: name:tag in the daemon, docker-archive:PATH[:NAME:TAG] (the name
    /// `docker load` gives it), oci:DIR[:TAG], oci-archive:PATH[:TAG] or
    /// docker://HOST[:PORT]/NAME:TAG (pushed once verified; the report gives its digest).
    /// Default NAME:TAG-min in the daemon, after the source's name; for a
    /// file source after the name:tag it carries (docker save's RepoTags, an OCI ref name),
    /// and without one give --tag.
    #[arg(long, short = 'o', value_name = "OUT")]
    pub tag: Option<String>,
    /// Write the allowlist (deterministic JSON) here, to keep in the repository and rebuild
    /// with `minify build`.
    #[arg(long, value_name = "FILE")]
    pub allowlist_out: Option<PathBuf>,
    /// Write a JSON report here: sizes, counts, timings, events, probes on both images.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write a CycloneDX 1.5 JSON SBOM of the minified image here: every package (dpkg,
    /// Python, npm) that still owns a kept file, with its package URL and the files kept. An
    /// oci: or oci-archive: output also holds it, as an OCI 1.1 artifact whose subject is the
    /// image. Written only with the output.
    #[arg(long, value_name = "FILE")]
    pub sbom: Option<PathBuf>,
    /// Keep this path (a directory: recursively) or glob too.
    #[arg(long, value_name = "PATH|GLOB")]
    pub include: Vec<String>,
    /// Keep this program (absolute, or a name on the image's PATH) with its libraries.
    #[arg(long, value_name = "PATH")]
    pub include_bin: Vec<String>,
    /// Drop paths matching this glob (never a directory above a kept path).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Leave out a default support set: ca-certificates, nss, passwd, skeleton, os-release
    /// (or `all`).
    #[arg(long, value_name = "NAME")]
    pub no_default_set: Vec<String>,
    /// Add an optional support set: zoneinfo, locale.
    #[arg(long, value_name = "NAME")]
    pub with_set: Vec<String>,
    /// file (the default): keep the files the workload used. package: also keep whole every
    /// package owning one of them (dpkg, Python distribution, npm package, JDK home), except
    /// docs, locales (unless --with-set locale) and executables under bin/ and sbin/; their
    /// dependencies are not added.
    #[arg(long, value_name = "file|package", default_value = "file")]
    pub granularity: minify_closure::Granularity,
    /// Keep this package whole (by name, any kind), used or not; bin/ and sbin/ stay out.
    #[arg(long, value_name = "NAME")]
    pub include_package: Vec<String>,
    /// Do not keep this package whole under --granularity package (what the workload used of
    /// it stays).
    #[arg(long, value_name = "NAME")]
    pub exclude_package: Vec<String>,
    /// Do not run the minified image and its probes again.
    #[arg(long)]
    pub no_verify: bool,
    /// Do not run the image's HEALTHCHECK as a probe. By default it runs after the other
    /// probes (with no probe: at the end of the run, if the entrypoint still runs), inside
    /// the container as Docker runs it, so what it needs is kept and verified.
    #[arg(long)]
    pub no_healthcheck: bool,
    /// A CI policy gate: when the output would keep a shell (sh, bash, dash, busybox as sh,
    /// ...; see `attack_surface.shells` in --report), stop right after the closure with exit
    /// 1 and write nothing (no image, no --allowlist-out, no --sbom): only --report (status
    /// policy_failed, with which shell and why) and --trace-out. Without it the attack
    /// surface is only reported.
    #[arg(long)]
    pub fail_on_shell: bool,
    /// Build even when the ring buffer lost events (the trace is then incomplete).
    #[arg(long)]
    pub allow_lossy: bool,
    /// Ring buffer size in bytes (a power of two).
    #[arg(long, value_name = "N")]
    pub ring_bytes: Option<u32>,
    /// Overwrite an existing output image tag or file.
    #[arg(long)]
    pub force: bool,
    /// How the new layer is stored in an oci:, oci-archive: or docker:// output: gzip (the
    /// default), zstd or none. (A docker-archive holds it uncompressed, as `docker save`
    /// writes one.)
    #[arg(long, value_name = "FORMAT")]
    pub compression: Option<minify_image::Compression>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Run this program instead of the image's entrypoint (`''` clears it). A JSON array
    /// gives the exact argv.
    #[arg(long, value_name = "CMD", allow_hyphen_values = true)]
    pub entrypoint: Option<String>,
    /// Run this instead of the image's cmd: words split like a simple shell command, or a
    /// JSON array.
    #[arg(long, value_name = "CMD", allow_hyphen_values = true)]
    pub cmd: Option<String>,
    /// Set an environment variable in the container (KEY=value), repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// User (name or uid[:gid]) inside the container.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Seconds between the stop signal and SIGKILL.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub stop_timeout: u64,
    /// Benchmarks: also run the original's probe phase untraced, to measure tracing overhead.
    #[arg(long, hide = true)]
    pub measure_untraced: bool,
    /// Write the raw trace (every event, loss counts) as JSON here, for review or debugging.
    #[arg(long, value_name = "FILE")]
    pub trace_out: Option<PathBuf>,
}

/// `minify trace`.
#[derive(Debug, clap::Args)]
#[allow(clippy::struct_excessive_bools)] // independent flags
pub struct TraceArgs {
    /// Run CMD chrooted in DIR (an image's root filesystem) with its own mount and pid
    /// namespaces; paths are printed as seen inside DIR.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print JSON on stdout (events, loss counts, processes) instead of one path per line.
    #[arg(long)]
    pub json: bool,
    /// Print every event in order (pid, kind, path, ok) instead of one line per path.
    #[arg(long, conflicts_with = "json")]
    pub events: bool,
    /// Ring buffer size in bytes (a power of two). Bigger loses fewer events under bursts.
    #[arg(long, value_name = "N", default_value_t = minify_trace::DEFAULT_RING_BYTES)]
    pub ring_bytes: u32,
    /// Also print each event on stderr as it happens (like --events, live), while the
    /// command runs.
    #[arg(long)]
    pub follow: bool,
    /// Read files in eBPF with probe reads even where the kernel has `bpf_rdonly_cast`, as on
    /// kernels before 6.2 (for comparisons and debugging).
    #[arg(long, hide = true)]
    pub probe_reads_only: bool,
    /// The command to trace, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

/// `minify gc`. Only resources whose minify process is gone are removed: a run in progress
/// on this host is never touched. Temporary directories are looked for in `$TMPDIR` (`/tmp`
/// without it): run gc with the `TMPDIR` the killed runs had.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// List what would be removed, and remove nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `minify doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Print JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}
