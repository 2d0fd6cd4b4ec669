//! Phase `open`: the source image (read in place, or exported from the daemon), its layers
//! as a rootfs view, the output checked, and the image's run config as the daemon will run
//! it (a file source is loaded into the daemon as a temporary copy for that). Everything here
//! fails before a container or a cgroup exists. A new image source is a
//! `minify_image::ImageRef` transport; this file only orders the steps.

use anyhow::Context as _;
use minify_closure::check_rules;
use minify_image::{ImageRef, RootfsView, SourceImage};
use minify_runtime::{ImageInfo, Probe, Runtime, TempImage};

use super::progress::Progress;
use super::{RunPlan, default_output, source_guard};
use crate::exit;

/// Where the run reads and writes, known before anything is made in the daemon: a file
/// source is opened (and so checked) first, and names the default output.
pub struct Located {
    /// A file source, already open; `None` for a daemon source (opened in [`open`]).
    file_source: Option<SourceImage>,
    pub output: ImageRef,
}

/// What `open` hands on: the source, its view, and how it runs.
pub struct Opened {
    pub source: SourceImage,
    pub view: RootfsView,
    /// The image's run config (entrypoint, cmd, env, ports, health check, size) as the daemon
    /// holds it: read once, what every container of the run starts from.
    pub run_config: ImageInfo,
    pub output: ImageRef,
    /// A file source's temporary copy in the daemon. Declared before every container, so on
    /// an early return the containers go first (an image a container uses cannot be
    /// removed).
    pub source_copy: Option<TempImage>,
}

impl Opened {
    /// Nothing runs the source any more: its temporary copy goes now. A warning when it
    /// could not be removed.
    pub async fn remove_source_copy(&mut self) -> Option<String> {
        remove_temp_image(self.source_copy.take()?, "temporary copy").await
    }
}

/// Remove a temporary image now; a warning naming it as `what` when that failed.
pub async fn remove_temp_image(image: TempImage, what: &str) -> Option<String> {
    let name = image.reference().to_owned();
    image
        .remove()
        .await
        .err()
        .map(|e| format!("could not remove the {what} {name}: {e}"))
}

/// Open a source image (a daemon image is exported into a temp dir; a file is read in place).
pub async fn open_source(image: &ImageRef) -> anyhow::Result<SourceImage> {
    let source = SourceImage::open(image).await;
    // A file's errors name it already.
    if image.is_file() {
        Ok(source?)
    } else {
        source.with_context(|| format!("opening {image}"))
    }
}

/// An image and its layers as one rootfs view, for `minify build` and `minify inspect`
/// (whose errors name the image already).
pub async fn open_image(image: &ImageRef) -> anyhow::Result<(SourceImage, RootfsView)> {
    let source = SourceImage::open(image).await?;
    let view = index(&source)?;
    Ok((source, view))
}

/// An image's layers as one rootfs view.
pub fn index(source: &SourceImage) -> Result<RootfsView, minify_image::ViewError> {
    tokio::task::block_in_place(|| RootfsView::build(source))
}

/// The output: `--tag`, else (a file source) `NAME:TAG-min` after the name the file carries.
pub async fn locate(plan: &RunPlan) -> anyhow::Result<Located> {
    let file_source = if plan.image.is_file() {
        Some(open_source(&plan.image).await?)
    } else {
        None
    };
    let output = match (&plan.output, &file_source) {
        (Some(out), _) => out.clone(),
        (None, Some(src)) => default_output(&plan.image, src.repo_tags()).with_context(|| {
            format!(
                "{} carries no name:tag to derive the default output NAME:TAG-min from; give --tag",
                plan.image
            )
        })?,
        (None, None) => anyhow::bail!("no output for {}; give --tag", plan.image),
    };
    Ok(Located {
        file_source,
        output,
    })
}

/// Check the output, open a daemon source, index the layers, check the closure's rules
/// against them, and find the run config (loading a file source into the daemon if it is not
/// there already).
pub async fn open(
    plan: &RunPlan,
    runtime: &Runtime,
    located: Located,
    progress: &Progress,
) -> anyhow::Result<Opened> {
    let Located {
        file_source,
        output,
    } = located;
    let daemon_info = match &plan.image {
        ImageRef::Daemon(name) => Some(runtime.inspect_image(name).await?),
        _ => None,
    };
    let source_id = match (&daemon_info, &file_source) {
        (Some(info), _) => info.id.clone(),
        (None, Some(src)) => src.id().to_string(),
        (None, None) => String::new(),
    };
    check_output(plan, &source_id, &output, runtime).await?;
    let source = match file_source {
        Some(source) => source,
        None => open_source(&plan.image).await?,
    };
    progress.phase(format!("indexing the layers of {}", plan.image));
    let view = index(&source).with_context(|| format!("reading the layers of {}", plan.image))?;
    // Bad --include/--exclude rules fail now, not after a whole traced run.
    tokio::task::block_in_place(|| check_rules(&view, &plan.closure))?;
    let mut source_copy = None;
    let run_config = match daemon_info {
        Some(info) => info,
        None => run_from_daemon(plan, runtime, &source, &mut source_copy, progress).await?,
    };
    refuse_http_probe_without_port(plan, &run_config)?;
    Ok(Opened {
        source,
        view,
        run_config,
        output,
        source_copy,
    })
}

/// A file source runs from the daemon: the identical image if the daemon holds it, else a
/// temporary copy loaded now (kept in `copy`, so its guard removes it).
async fn run_from_daemon(
    plan: &RunPlan,
    runtime: &Runtime,
    source: &SourceImage,
    copy: &mut Option<TempImage>,
    progress: &Progress,
) -> anyhow::Result<ImageInfo> {
    if let Some(info) = already_in_daemon(runtime, &source.id().to_string()).await {
        progress.println(&format!(
            "minify: running {} as the identical image already in the Docker daemon ({})",
            plan.image, info.reference
        ));
        return Ok(info);
    }
    let name = copy.insert(runtime.temp_image()).reference().to_owned();
    progress.phase(format!(
        "loading {} into the Docker daemon as {name}",
        plan.image
    ));
    let id = source
        .load_into_daemon(&name)
        .await
        .with_context(|| format!("loading {} into the Docker daemon", plan.image))?;
    progress.println(&format!(
        "minify: running {} from a temporary copy in the Docker daemon, {name} ({id})",
        plan.image
    ));
    Ok(runtime.inspect_image(&name).await?)
}

/// Refuse, before tracing, an output that is the source (whatever `--force` says) or that
/// exists (without `--force`).
async fn check_output(
    plan: &RunPlan,
    source_id: &str,
    output: &ImageRef,
    runtime: &Runtime,
) -> anyhow::Result<()> {
    source_guard::refuse_source_as_output(&plan.image, source_id, output, Some(runtime)).await?;
    if let ImageRef::DockerArchive {
        image: Some(minify_image::ArchiveImage::Index(_)),
        ..
    } = output
    {
        anyhow::bail!(
            "output {output}: {}",
            minify_image::sink::ARCHIVE_INDEX_OUTPUT
        );
    }
    if let ImageRef::Daemon(out) = output
        && !plan.write.force
        && runtime.inspect_image(out).await.is_ok()
    {
        anyhow::bail!("output image {out} already exists (use --force to replace it)");
    }
    if let Some(path) = minify_image::source::file_path(output) {
        // Fail before tracing, not after: the sink refuses to replace an output too.
        if !plan.write.force && path.exists() {
            anyhow::bail!(
                "output {} already exists (use --force to replace it)",
                path.display()
            );
        }
    }
    Ok(())
}

/// `--probe-http` GETs every exposed TCP port. Refuse it at once on an image that exposes
/// none, or exposes `0/tcp` (no server can listen on port 0: the run would wait out the
/// whole readiness timeout, then fail the probe on the original image).
fn refuse_http_probe_without_port(plan: &RunPlan, info: &ImageInfo) -> anyhow::Result<()> {
    let Some(probe) = plan.probes.iter().find(|p| matches!(p, Probe::Http(_))) else {
        return Ok(());
    };
    let why = if info
        .exposed_ports
        .iter()
        .any(|p| p.port == 0 && p.proto == "tcp")
    {
        "exposes port 0/tcp, which no server can listen on"
    } else if info.tcp_ports().is_empty() {
        "exposes no TCP port"
    } else {
        return Ok(());
    };
    Err(crate::with_code(
        anyhow::anyhow!(
            "{probe}: {} {why}, and --probe-http GETs every exposed TCP port; probe it with --probe-cmd (the container's address is in $MINIFY_HOST) or --probe-exec instead",
            plan.image
        ),
        exit::USAGE,
    ))
}

/// The daemon's image `id`, when it already holds it. Such an image is run as it is, by id:
/// a temporary name on it would, when removed, also remove the image if nothing else names
/// it (an untagged image the user had before). Any error reads as "not there" (the copy is
/// then loaded as usual, and the load reports a broken daemon).
pub async fn already_in_daemon(runtime: &Runtime, id: &str) -> Option<ImageInfo> {
    runtime.inspect_image(id).await.ok()
}
