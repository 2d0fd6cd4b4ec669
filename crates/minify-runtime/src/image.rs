//! [`TempImage`]: a temporary name in the daemon for an image minify loads only to run it
//! (a file source, traced from the copy; a file output, verified on the copy), removed on
//! success, failure and Ctrl-C like a [`Container`].
//!
//! [`Container`]: crate::Container

use bollard::Docker;

use crate::container::cleanup_blocking;
use crate::docker::remove_image_async;
use crate::{Runtime, RuntimeError, VERIFY_REPO};

/// A reserved image name `minify-verify/<random>:<owner>`. Whatever is loaded under it is
/// untagged by [`TempImage::remove`] or, failing that, on drop; the owner in the tag lets
/// `minify gc` remove it when the process that made it was killed. Only the name is
/// removed: an image the daemon also has under other names (a file source that is in the
/// daemon too) stays under those.
#[derive(Debug)]
pub struct TempImage {
    docker: Docker,
    reference: String,
    removed: bool,
}

impl Runtime {
    /// Reserve a unique temporary image name (nothing is created until an image is loaded
    /// under it).
    pub fn temp_image(&self) -> TempImage {
        TempImage {
            docker: self.docker.clone(),
            reference: format!(
                "{VERIFY_REPO}/{}:{}",
                minify_host::random_hex(8),
                self.owner
            ),
            removed: false,
        }
    }
}

impl TempImage {
    /// The name to load the image under and to run it by.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// Untag it now (the image itself goes when nothing else names it). Missing is fine.
    pub async fn remove(mut self) -> Result<(), RuntimeError> {
        self.removed = true;
        remove_image_async(&self.docker, &self.reference).await
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let reference = self.reference.clone();
        cleanup_blocking(
            &format!("image {}", self.reference),
            self.docker.clone(),
            move |docker| async move { remove_image_async(&docker, &reference).await },
        );
    }
}
