//! minify-image: container images in and out, and the flattened filesystem in between.
//!
//! The pipeline's two ends live here:
//! ```text
//! ImageRef ──open──► SourceImage ──RootfsView::build──► RootfsView (impl minify_model::Rootfs)
//!                                                            │
//!                         ImageRef ◄──write_to── PackedImage ◄──pack(view, source, paths)
//! ```
//! - [`ImageRef`]: `name:tag` / `name@sha256:..` (Docker daemon),
//!   `docker-archive:PATH[:NAME:TAG|:@INDEX]`, `oci:DIR[:TAG]`, `oci-archive:PATH[:TAG]`; the
//!   same forms name outputs.
//! - [`SourceImage::open`]: reads the manifest and config, checks that every blob the
//!   manifest names is there; the daemon's export is streamed into a private temp dir.
//!   Nothing is extracted: blobs are read in place (by offset inside an archive).
//! - [`RootfsView::build`]: streams every layer once, applying whiteouts and opaque dirs,
//!   checks each layer's digest against the manifest and the config's diff_ids, and keeps
//!   an index path -> entry plus where each file's bytes are. File bytes are read on demand.
//!   No path from an image is ever joined onto a host directory.
//! - [`pack`]: one new deterministic layer with exactly the given paths (and their parent
//!   directories), the source config with new diff_ids, a history entry and the label
//!   [`SOURCE_DIGEST_LABEL`].
//! - [`PackedImage::write_to`]: into the daemon (load under a temporary tag, then tag) or
//!   into a file/dir output (temp sibling, then rename).

mod archive;
pub mod config;
pub mod digest;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod hashio;
pub mod leftovers;
pub mod pack;
pub mod reference;
pub mod registry;
pub mod sink;
pub mod source;
mod targuard;
pub mod view;

pub use config::ImageConfig;
pub use digest::Digest;
pub use leftovers::{LEFTOVERS, LOAD_REPO};
pub use pack::{PackError, PackOptions, PackedImage, pack};
pub use reference::{ArchiveImage, ImageRef, RefError, RegistryAccess, RegistryRef};
pub use sink::{Referrer, SinkError, WriteOptions, Written};
pub use source::{Compression, LayerInfo, SourceError, SourceImage};
pub use view::{DirSize, LayerStats, RootfsView, ViewError};

/// The label [`pack`] puts on every minified image: the id of the image it was made from.
pub const SOURCE_DIGEST_LABEL: &str = "org.minify.source-digest";

/// Any error of this crate, for callers that just want one type.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// An image reference that does not parse.
    #[error(transparent)]
    Ref(#[from] RefError),
    /// Opening a source image (daemon export, archives, OCI layouts).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Flattening layers into the rootfs view.
    #[error(transparent)]
    View(#[from] ViewError),
    /// Packing the new layer and config.
    #[error(transparent)]
    Pack(#[from] PackError),
    /// Writing the packed image out.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

impl ImageError {
    /// Whether this is a problem of the environment (the Docker daemon does not answer)
    /// rather than of the input; the CLI exits 3 for these.
    pub fn is_environment(&self) -> bool {
        match self {
            ImageError::Source(e) => e.is_environment(),
            ImageError::Sink(e) => e.is_environment(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests;
