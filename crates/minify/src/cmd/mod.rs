//! One module per subcommand; `dispatch` routes to them and returns the exit code.

mod build;
mod diff;
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
        Command::Diff(args) => diff::run(&args),
        Command::Trace(args) => trace::run(&args),
        Command::Doctor(args) => doctor::run(&args),
        Command::Gc(args) => gc::run(&args),
    }
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
    block_on_interruptible_keeping(work, &crate::errors::Kept::default())
}

/// [`block_on_interruptible`] for work that records in `kept` what it finished and keeps
/// (an output written before verification): the message on a signal names those.
pub fn block_on_interruptible_keeping<T>(
    work: impl std::future::Future<Output = anyhow::Result<T>>,
    kept: &crate::errors::Kept,
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
        // The message is made after the work future is dropped (its guards have run), from
        // what it had recorded as kept by then.
        let stopped = tokio::select! {
            r = work => return r,
            _ = tokio::signal::ctrl_c() => ("interrupted (Ctrl-C)", crate::exit::INTERRUPTED),
            _ = term.recv() => ("terminated (SIGTERM)", crate::exit::TERMINATED),
        };
        Err(crate::with_code(
            anyhow::anyhow!("{}; {}", stopped.0, kept.removed_message()),
            stopped.1,
        ))
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
        Some(
            minify_image::ImageRef::OciDir { .. }
                | minify_image::ImageRef::OciArchive { .. }
                | minify_image::ImageRef::Registry(_)
        )
    );
    if let Some(c) = compression
        && !oci
    {
        tracing::warn!(
            "--compression {}: only oci:, oci-archive: and docker:// outputs compress the layer; {} stores it uncompressed",
            c.name(),
            out.map_or_else(|| "the Docker daemon".to_owned(), ToString::to_string)
        );
    }
    minify_image::WriteOptions {
        force,
        compression: compression.unwrap_or(minify_image::WriteOptions::default().compression),
    }
}
