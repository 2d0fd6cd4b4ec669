//! One module per subcommand; `dispatch` routes to them and returns the exit code.

mod build;
mod doctor;
mod gc;
mod inspect;
mod merge;
mod run;
mod trace;

use crate::cli::{Cli, Command};

pub fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Merge(args) => merge::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Build(args) => build::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Trace(args) => trace::run(&args),
        Command::Doctor(args) => doctor::run(&args),
        Command::Gc(args) => gc::run(&args),
    }
}

/// Write a file through a temporary sibling and a rename, so a reader (or a crash) never
/// sees half of it.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.minify-tmp-{}", std::process::id()));
    fs_err::write(&tmp, bytes)?;
    fs_err::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Run `work` on a fresh tokio runtime until it finishes or Ctrl-C or SIGTERM (what CI
/// runners send to cancel a job) arrives. On either signal the future is dropped, which runs
/// every cleanup guard it holds (containers, the tracer and its cgroup, temp dirs with
/// exported layers, half-written outputs) before the error returns. Without this the default
/// action would kill the process and leave them behind. A synchronous step inside `work`
/// (indexing, packing) finishes before the drop happens.
pub fn block_on_interruptible<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    use anyhow::Context as _;
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate())
            .context("installing the SIGTERM handler")
            .map_err(crate::env_error)?;
        tokio::select! {
            r = work => r,
            _ = tokio::signal::ctrl_c() => Err(crate::with_code(
                anyhow::anyhow!("interrupted (Ctrl-C); everything this run made was removed"),
                crate::exit::INTERRUPTED,
            )),
            _ = term.recv() => Err(crate::with_code(
                anyhow::anyhow!("terminated (SIGTERM); everything this run made was removed"),
                crate::exit::TERMINATED,
            )),
        }
    })
}

/// `--force` and `--compression` for writing to `out` (`None`: the daemon). Compression
/// applies to OCI outputs only; asking for it elsewhere is said, not silently ignored.
pub fn write_options(
    force: bool,
    compression: Option<minify_image::Compression>,
    out: Option<&minify_image::ImageRef>,
) -> minify_image::WriteOptions {
    let oci = matches!(
        out,
        Some(minify_image::ImageRef::OciDir { .. } | minify_image::ImageRef::OciArchive { .. })
    );
    if let Some(c) = compression
        && !oci
    {
        tracing::warn!(
            "--compression {}: only oci: and oci-archive: outputs compress the layer; {} stores it uncompressed",
            c.name(),
            out.map_or_else(|| "the Docker daemon".to_owned(), ToString::to_string)
        );
    }
    minify_image::WriteOptions {
        force,
        compression: compression.unwrap_or(minify_image::WriteOptions::default().compression),
    }
}
