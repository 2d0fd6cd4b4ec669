//! `--sbom FILE` for `run` and `build`: the path is checked before any work (a typo must not
//! cost a traced run), the document is made from the packed paths and the source's package
//! model ([`minify_sbom`]), and written once the output is: to FILE, and into an `oci:` or
//! `oci-archive:` output as an OCI 1.1 artifact whose subject is the image.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use minify_image::{ImageRef, Referrer};
use minify_model::ImagePath;
use minify_sbom::{ImageName, OsRelease, SbomInput};

/// An SBOM made for an output, to write with it.
#[derive(Clone, Debug)]
pub struct Sbom {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

impl Sbom {
    /// The document as an artifact of the output layout.
    pub fn referrer(&self) -> Referrer {
        Referrer {
            artifact_type: minify_sbom::MEDIA_TYPE.to_owned(),
            bytes: self.bytes.clone(),
        }
    }

    /// The referrers to store with `output`: the SBOM for an OCI layout, none elsewhere.
    pub fn referrers_for(sbom: Option<&Sbom>, output: &ImageRef) -> Vec<Referrer> {
        match (sbom, output) {
            (Some(s), ImageRef::OciDir { tag, .. } | ImageRef::OciArchive { tag, .. }) => {
                if tag.is_none() {
                    // containers/image (skopeo 1.9, podman) takes a layout's only manifest
                    // when no tag is given, and the SBOM's artifact is a second one.
                    tracing::warn!(
                        "{output} holds the SBOM beside the image; tools that pick the only image of a layout (skopeo) need a tag: give the output as {output}:TAG"
                    );
                }
                vec![s.referrer()]
            }
            _ => Vec::new(),
        }
    }

    /// Write FILE (atomically, replacing an older one).
    pub fn write_file(&self) -> anyhow::Result<()> {
        crate::files::write_atomic(&self.path, &self.bytes)
            .with_context(|| format!("writing the SBOM {}", self.path.display()))
    }
}

/// Refuse, before anything runs, an SBOM path that cannot be written: a directory, something
/// that is not a regular file (the atomic rename would replace a device node), a missing
/// parent directory, or one this process may not create files in. The check leaves nothing
/// behind (its probe file is removed at once).
pub fn check_path(path: &Path) -> anyhow::Result<()> {
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => anyhow::bail!("--sbom {shown}: is a directory; give a file name"),
        Ok(m) if !m.is_file() => {
            anyhow::bail!("--sbom {shown}: exists and is not a regular file")
        }
        _ => {}
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        anyhow::bail!(
            "--sbom {shown}: the directory {} does not exist",
            dir.display()
        );
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("--sbom {shown}: names no file"))?;
    let probe = dir.join(format!(".{name}.minify-check-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(f) => {
            drop(f);
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => anyhow::bail!(
            "--sbom {shown}: cannot create files in {}: {e}",
            dir.display()
        ),
    }
}

/// The SBOM of the image packed from `kept` out of `fs` (the source's rootfs view).
pub fn make(
    path: &Path,
    fs: &dyn minify_model::Rootfs,
    kept: &[ImagePath],
    source: (&ImageRef, String),
    output: (&ImageRef, String),
) -> anyhow::Result<Sbom> {
    let db = minify_packages::PackageDb::read(fs);
    let kept: std::collections::BTreeSet<ImagePath> = kept.iter().cloned().collect();
    let input = SbomInput {
        fs,
        db: &db,
        kept: &kept,
        os: OsRelease::read(fs),
        source: ImageName {
            reference: source.0.to_string(),
            digest: source.1,
        },
        output: ImageName {
            reference: output.0.to_string(),
            digest: output.1,
        },
        tool_version: env!("CARGO_PKG_VERSION"),
    };
    let bytes = minify_sbom::generate(&input)
        .with_context(|| format!("making the SBOM {}", path.display()))?;
    Ok(Sbom {
        path: path.to_owned(),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_paths_are_refused_and_nothing_is_left() {
        let tmp = tempfile::tempdir().unwrap();
        let err = |p: &Path| check_path(p).unwrap_err().to_string();
        let e = err(tmp.path());
        assert!(e.contains("is a directory"), "{e}");
        let e = err(&tmp.path().join("no/such/dir/sbom.json"));
        assert!(e.contains("does not exist"), "{e}");
        let e = err(Path::new("/dev/null"));
        assert!(e.contains("not a regular file"), "{e}");
        check_path(&tmp.path().join("sbom.json")).unwrap();
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}
