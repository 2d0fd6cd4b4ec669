//! Phases `pack` and `write`, shared by `minify run` and `minify build`: this is the one code
//! path that turns a source image and a kept path set into the new image (and its `--sbom`),
//! so both commands give the same image id for the same source and paths. A new output
//! format is a `minify_image::ImageRef` transport and its sink; nothing here changes for it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use minify_image::{
    ImageRef, PackOptions, PackedImage, RootfsView, SourceImage, WriteOptions, Written,
};
use minify_model::ImagePath;

use super::progress::Progress;
use crate::sbom::Sbom;

/// Files the closure generated (the pruned package database): their bytes, by source path.
pub type Generated = BTreeMap<ImagePath, Vec<u8>>;

/// What `pack` hands on: the new image and, with `--sbom`, its SBOM, written with it.
pub struct Packed {
    pub image: PackedImage,
    pub sbom: Option<Sbom>,
}

/// Where the image comes from and goes: for the SBOM, which names both.
pub struct Ends<'a> {
    pub source: &'a ImageRef,
    pub output: &'a ImageRef,
    /// `--sbom FILE`.
    pub sbom: Option<&'a Path>,
}

/// Pack the kept `paths` of `source` (with the closure's `generated` contents in place of
/// the source's for those paths) into one new layer on the source's config, and make its
/// SBOM when asked.
pub fn pack(
    view: &RootfsView,
    source: &SourceImage,
    (paths, generated): (&[ImagePath], &Generated),
    ends: &Ends<'_>,
    progress: &Progress,
) -> anyhow::Result<Packed> {
    progress.phase(format!("packing {} paths", paths.len()));
    let image = tokio::task::block_in_place(|| pack_paths(view, source, paths, generated))
        .context("packing the minified image")?;
    let sbom = match ends.sbom {
        Some(path) => Some(tokio::task::block_in_place(|| {
            crate::sbom::make(
                path,
                view,
                paths,
                (ends.source, source.id().to_string()),
                (ends.output, image.id().to_string()),
            )
        })?),
        None => None,
    };
    Ok(Packed { image, sbom })
}

/// [`pack`]'s image; the options are fixed, so the image id depends on the inputs alone.
fn pack_paths(
    view: &RootfsView,
    source: &SourceImage,
    paths: &[ImagePath],
    generated: &Generated,
) -> Result<PackedImage, minify_image::PackError> {
    let options = PackOptions {
        generated: generated.clone(),
        ..PackOptions::default()
    };
    minify_image::pack(view, source, paths, &options)
}

/// Write the packed image to `output` (the daemon or a file), with its SBOM: into an OCI
/// output as a referrer of the image, and to `--sbom FILE`.
pub async fn write(
    packed: &Packed,
    output: &ImageRef,
    options: &WriteOptions,
    progress: &Progress,
) -> anyhow::Result<Written> {
    progress.phase(format!("writing {output}"));
    let referrers = Sbom::referrers_for(packed.sbom.as_ref(), output);
    let written = packed
        .image
        .write_with_referrers(output, options, &referrers)
        .await
        .with_context(|| format!("writing {output}"))?;
    if let Some(sbom) = &packed.sbom {
        sbom.write_file()?;
    }
    Ok(written)
}
