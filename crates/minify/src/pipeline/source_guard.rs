//! The rule that minify never changes the image it reads, whatever the output is called and
//! whatever `--force` says. One check, shared by `run` and `build`: an output is the source
//! when it is the same daemon reference in another spelling, when it is a daemon name that
//! currently points at the source's image id (moving it would take the name from the source),
//! or when it is the source's file or directory under another path (a symlink, `./`, a
//! hardlink, `oci:` against `oci-archive:`), inside the source's layout, or a directory that
//! holds the source (a forced directory output replaces the whole directory).

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use minify_image::ImageRef;
use minify_runtime::{Runtime, RuntimeError};

/// Refuse, with exit code 2, an `output` that is the `source` image. `source_id` is the
/// source's image id (`sha256:` of its config); `runtime` looks up what a daemon output
/// names now (`None`: not connected, only for outputs that are not in the daemon).
pub async fn refuse_source_as_output(
    source: &ImageRef,
    source_id: &str,
    output: &ImageRef,
    runtime: Option<&Runtime>,
) -> anyhow::Result<()> {
    refuse_same_location(source, output)?;
    let why = match (output, runtime) {
        (ImageRef::Daemon(name), Some(rt)) => names_the_source(rt, name, source_id).await?,
        _ => None,
    };
    why.map_or(Ok(()), |why| Err(refusal(source, output, &why)))
}

/// The part of [`refuse_source_as_output`] that needs neither the daemon nor the source's
/// id, so a command can refuse at once, before it starts anything: the same reference in
/// another spelling, or the same file or directory.
pub fn refuse_same_location(source: &ImageRef, output: &ImageRef) -> anyhow::Result<()> {
    let why = match (source, output) {
        (_, ImageRef::Daemon(_)) => same_reference(source, output),
        (ImageRef::Registry(a), ImageRef::Registry(b)) => a
            .same_image(b)
            .then(|| format!("both are {}", b.docker_name())),
        _ => same_file(source, output),
    };
    why.map_or(Ok(()), |why| Err(refusal(source, output, &why)))
}

fn refusal(source: &ImageRef, output: &ImageRef, why: &str) -> anyhow::Error {
    crate::with_code(
        anyhow::anyhow!(
            "output {output} would replace the source image {source} ({why}); minify never changes its source, with or without --force: choose another output"
        ),
        crate::exit::USAGE,
    )
}

/// Two daemon references that the daemon resolves to the same name.
fn same_reference(source: &ImageRef, output: &ImageRef) -> Option<String> {
    let a = source.normalized_daemon_name()?;
    let b = output.normalized_daemon_name()?;
    (a == b).then(|| format!("both are {a}"))
}

/// A daemon name that points at the source's image id now.
async fn names_the_source(
    runtime: &Runtime,
    name: &str,
    source_id: &str,
) -> anyhow::Result<Option<String>> {
    match runtime.inspect_image(name).await {
        Ok(info) if !source_id.is_empty() && info.id == source_id => {
            Ok(Some(format!("{name} names the source's image {source_id}")))
        }
        Ok(_) | Err(RuntimeError::ImageNotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A file or directory identity: device and inode, after following symlinks.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// `path` with symlinks and `..` resolved as far as it exists, and the rest (which does not
/// exist yet) left off: the deepest existing directory or file it names or will be created in.
fn deepest_existing(path: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(path).ok()?;
    abs.ancestors().find_map(|a| std::fs::canonicalize(a).ok())
}

/// Whether writing `output` would change the file or directory the `source` is read from:
/// the same inode, an output inside the source's directory (a layout), or an existing output
/// directory that holds the source (it is replaced whole).
fn same_file(source: &ImageRef, output: &ImageRef) -> Option<String> {
    let src = minify_image::source::file_path(source)?;
    let out = minify_image::source::file_path(output)?;
    let src_canon = std::fs::canonicalize(src).ok()?;
    let src_id = identity(&src_canon)?;
    let out_canon = deepest_existing(out)?;
    if identity(&out_canon) == Some(src_id) && identity(out).is_some() {
        return Some(format!("the same file as {}", src.display()));
    }
    if out_canon.ancestors().any(|a| identity(a) == Some(src_id)) {
        return Some(format!("{} is inside {}", out.display(), src.display()));
    }
    if let Some(out_id) = identity(out)
        && src_canon.ancestors().any(|a| identity(a) == Some(out_id))
    {
        return Some(format!("{} holds {}", out.display(), src.display()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> ImageRef {
        s.parse().unwrap()
    }

    #[test]
    fn daemon_spellings_of_the_source_are_the_source() {
        for (src, out) in [
            ("docker.io/team/app:1", "team/app:1"),
            ("x", "docker.io/library/x:latest"),
            ("library/x", "x:latest"),
            ("index.docker.io/library/x", "x"),
            ("x:1", "docker-daemon:x:1"),
        ] {
            assert!(same_reference(&r(src), &r(out)).is_some(), "{src} {out}");
        }
        assert!(same_reference(&r("x:1"), &r("x:1-min")).is_none());
        assert!(same_reference(&r("team/x:1"), &r("x:1")).is_none());
    }

    #[test]
    fn files_under_other_names_are_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs_err::write(d.join("src.tar"), b"source").unwrap();
        std::os::unix::fs::symlink(d.join("src.tar"), d.join("link.tar")).unwrap();
        fs_err::hard_link(d.join("src.tar"), d.join("hard.tar")).unwrap();
        fs_err::create_dir_all(d.join("layout/blobs")).unwrap();
        fs_err::create_dir_all(d.join("sub")).unwrap();
        std::os::unix::fs::symlink(d.join("layout"), d.join("layout-link")).unwrap();
        fs_err::write(d.join("layout/inner.tar"), b"source").unwrap();
        let p = |s: &str| d.join(s).display().to_string();
        let same = [
            (
                format!("docker-archive:{}", p("src.tar")),
                format!("docker-archive:{}", p("src.tar")),
            ),
            (
                format!("docker-archive:{}", p("src.tar")),
                format!("docker-archive:{}", p("sub/../src.tar")),
            ),
            (
                format!("docker-archive:{}", p("src.tar")),
                format!("oci-archive:{}", p("link.tar")),
            ),
            (
                format!("docker-archive:{}", p("link.tar")),
                format!("docker-archive:{}", p("hard.tar")),
            ),
            (
                format!("oci:{}", p("layout")),
                format!("oci-archive:{}", p("layout-link")),
            ),
            (
                format!("oci:{}:v1", p("layout")),
                format!("oci:{}:min", p("layout")),
            ),
            // Into the source's layout, even under a new name.
            (
                format!("oci:{}", p("layout")),
                format!("oci-archive:{}", p("layout/new.tar")),
            ),
            (
                format!("oci:{}", p("layout")),
                format!("docker-archive:{}", p("layout-link/blobs/x")),
            ),
            // A directory output that holds the source would be replaced whole.
            (
                format!("oci-archive:{}", p("layout/inner.tar")),
                format!("oci:{}", p("layout-link")),
            ),
        ];
        for (src, out) in same {
            assert!(same_file(&r(&src), &r(&out)).is_some(), "{src} -> {out}");
        }
        for (src, out) in [
            (
                format!("docker-archive:{}", p("src.tar")),
                format!("docker-archive:{}", p("new.tar")),
            ),
            (
                format!("docker-archive:{}", p("src.tar")),
                format!("oci:{}", p("layout")),
            ),
            (format!("oci:{}", p("layout")), format!("oci:{}", p("sub"))),
            (
                format!("oci:{}", p("layout")),
                format!("oci-archive:{}", p("layout.tar")),
            ),
        ] {
            assert!(same_file(&r(&src), &r(&out)).is_none(), "{src} -> {out}");
        }
    }
}
