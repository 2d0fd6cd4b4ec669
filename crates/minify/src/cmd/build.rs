//! `minify build IMAGE --allowlist FILE [--tag OUT] [--force]`: pack an image from a kept
//! allowlist, with no tracing. This is the reuse path CI relies on: the allowlist's roots are
//! re-closed on the image being built (`minify_closure::reclose`), so a rebuilt image gets its
//! own libraries and links; the same image and the same allowlist give the same image id.

use anyhow::Context as _;
use minify_closure::{ClosureOptions, PackageOptions, Reclosure, RootState, SkeletonInput};
use minify_image::{ImageRef, RootfsView, SourceImage};
use minify_model::{Allowlist, ImagePath};

use crate::cli::BuildArgs;
use crate::pipeline::pack::Generated;
use crate::pipeline::progress::Progress;
use crate::pipeline::{default_output, open, pack};

pub fn run(args: &BuildArgs) -> anyhow::Result<u8> {
    let access = args.registry.access();
    let source = args.image.parse::<ImageRef>()?.with_access(&access);
    let out: Option<ImageRef> = match &args.tag {
        Some(t) => Some(t.parse::<ImageRef>()?.with_access(&access)),
        None => None,
    };
    if let Some(out) = &out {
        crate::pipeline::source_guard::refuse_same_location(&source, out)?;
    }
    if let Some(path) = &args.sbom {
        crate::sbom::check_path(path)?;
    }
    let al_name = args.allowlist.display().to_string();
    let text = minify_model::input::read_text(&args.allowlist, minify_model::input::INPUT_LIMIT)?;
    let allowlist = Allowlist::from_json(&al_name, &text)?;

    crate::cmd::block_on_interruptible(async {
        let (image, view) = open::open_image(&source).await?;
        if !allowlist.source.digest.is_empty() && allowlist.source.digest != image.id().as_str() {
            tracing::warn!(
                "{al_name} was made from {} ({}), not from {source} ({}); building anyway",
                allowlist.source.image,
                allowlist.source.digest,
                image.id()
            );
        }
        let out = match out {
            Some(o) => o,
            None => default_output(&source, image.repo_tags()).with_context(|| {
                format!("image {source} has no name to derive NAME:TAG-min from; give --tag")
            })?,
        };
        // Whatever --force says, the source is never the output. A daemon output is looked
        // up to see whether it names the source's image now.
        let runtime = match &out {
            ImageRef::Daemon(_) => Some(minify_runtime::Runtime::connect().await?),
            _ => None,
        };
        crate::pipeline::source_guard::refuse_source_as_output(
            &source,
            &image.id().to_string(),
            &out,
            runtime.as_ref(),
        )
        .await?;
        let (paths, generated) = reclose(args, &source, &image, &view, &allowlist)?;
        // The one code path `minify run` packs and writes through too, so the ids match.
        let progress = Progress::new();
        let ends = pack::Ends {
            source: &source,
            output: &out,
            sbom: args.sbom.as_deref(),
        };
        let packed = pack::pack(&view, &image, (&paths, &generated), &ends, &progress)?;
        let options = crate::cmd::write_options(args.force, args.compression, Some(&out));
        let written = pack::write(&packed, &out, &options, &progress).await?;
        drop(progress);
        let packed = packed.image;
        errln!(
            "minify: {out}: {} entries, {} bytes of files (source {} bytes in {} layers); layer {} bytes as {}",
            packed.entry_count(),
            packed.content_size(),
            view.content_size(),
            image.layers().len(),
            written.layer_bytes,
            written.compression,
        );
        if let Some(d) = &written.manifest_digest {
            errln!("minify: pushed {out} as {d}");
        }
        outln!("{}", written.id);
        Ok(0)
    })
}

/// The allowlist's roots re-closed on `image`: the paths to pack. Drift is said on stderr;
/// a root missing from the image fails the build (or, `--on-missing warn`, is said).
fn reclose(
    args: &BuildArgs,
    source: &ImageRef,
    image: &SourceImage,
    view: &RootfsView,
    allowlist: &Allowlist,
) -> anyhow::Result<(Vec<ImagePath>, Generated)> {
    let al_name = args.allowlist.display().to_string();
    // The allowlist's roots are the input; everything derived from them (ELF closure,
    // symlinks, parents, interpreters, default sets, packages) is computed again on this
    // image by the closure code `run` uses, so a rebuilt image with a new library or
    // package version gets its own dependencies, not the recorded ones.
    let config = image.config();
    let entrypoint: Vec<String> = config
        .entrypoint
        .iter()
        .chain(&config.cmd)
        .cloned()
        .collect();
    let opts = ClosureOptions {
        skeleton: SkeletonInput {
            user: config.user.clone(),
            workdir: config.working_dir.clone(),
            volumes: config.volumes.clone(),
        },
        packages: PackageOptions {
            granularity: args.granularity,
            ..PackageOptions::default()
        },
        ..ClosureOptions::default()
    };
    let re = tokio::task::block_in_place(|| {
        minify_closure::reclose(view, allowlist, &entrypoint, &config.working_dir, &opts)
    })?;
    report_drift(&re, &al_name, &source.to_string());
    let missing: Vec<String> = re.missing().map(|r| r.path.to_string()).collect();
    if !missing.is_empty() {
        let msg = format!(
            "{al_name}: {} is not in the image {source} ({}) and no rename rule finds {}; trace the image again (minify run) to make a new allowlist",
            missing.join(", "),
            image.id(),
            if missing.len() == 1 { "it" } else { "them" }
        );
        if args.on_missing == "warn" {
            tracing::warn!("--on-missing warn: {msg}");
        } else {
            anyhow::bail!(msg);
        }
    }
    for w in &re.closure.warnings {
        tracing::warn!("{w}");
    }
    if !re.closure.packages.is_empty() {
        let added: u64 = re.closure.packages.iter().map(|p| p.added_bytes).sum();
        errln!(
            "minify: --granularity package: {} packages kept whole, {} bytes added",
            re.closure.packages.len(),
            added
        );
    }
    let kept = re
        .closure
        .to_allowlist(minify_model::allowlist::SourceImage::default(), "")
        .paths;
    let surface = minify_closure::attack_surface(view, &kept, &config.user);
    errln!("minify: attack surface: {}", surface.summary());
    if let Some(error) = crate::pipeline::close::shell_refusal(args.fail_on_shell, &surface) {
        return Err(error);
    }
    let paths = re.closure.entries.keys().cloned().collect();
    Ok((paths, re.closure.generated))
}

/// What changed since the allowlist was made, on stderr: every root that is not the same
/// (renamed with its rule, or missing), then the derived paths added and dropped.
fn report_drift(re: &Reclosure, al_name: &str, source: &str) {
    let mut same = 0;
    let mut renamed = 0;
    for r in &re.roots {
        match &r.state {
            RootState::Same => same += 1,
            RootState::Renamed { to, rule } => {
                renamed += 1;
                errln!("minify: drift: renamed {} -> {to} ({rule})", r.path);
            }
            RootState::Missing => errln!("minify: drift: missing {} ({})", r.path, r.reason.name()),
        }
    }
    let missing = re.roots.len() - same - renamed;
    if renamed + missing == 0 && re.added.is_empty() && re.dropped.is_empty() {
        return;
    }
    for p in &re.added {
        errln!("minify: drift: added {p}");
    }
    for p in &re.dropped {
        errln!("minify: drift: dropped {p}");
    }
    errln!(
        "minify: re-closed {al_name} on {source}: roots {same} same, {renamed} renamed, {missing} missing; {} paths added, {} dropped",
        re.added.len(),
        re.dropped.len()
    );
}
