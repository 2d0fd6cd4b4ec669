//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): arbitrary bytes as
//! layers or as the documents of an OCI layout or a docker-archive, read through the same
//! code `minify inspect` runs, then checked against what a view promises.

use std::io::Read as _;
use std::path::Path;

use minify_model::Rootfs as _;
use serde_json::json;

use crate::archive::Container;
use crate::source::{read_docker_archive, read_oci};
use crate::{Digest, ImageError, ImageRef, RootfsView};

/// Splits fuzz input into layers.
pub const LAYER_SEPARATOR: &[u8] = b"\xffMINIFY-LAYER\xff";

/// The most decompressed bytes a fuzz input's layer may have: more is not a bomb the view
/// must refuse (it writes them to disk), only slow.
const MAX_PLAIN: u64 = 64 << 20;

/// The uncompressed bytes of a stored layer, as the view will see them (or what could be
/// read of them), for its diff_id.
fn plain(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let r: Box<dyn std::io::Read + '_> = match stored {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::MultiGzDecoder::new(stored)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => match zstd::stream::read::Decoder::new(stored) {
            Ok(d) => Box::new(d),
            Err(_) => return out,
        },
        _ => Box::new(stored),
    };
    let _ = r.take(MAX_PLAIN).read_to_end(&mut out);
    out
}

fn put(dir: &Path, bytes: &[u8]) -> serde_json::Value {
    let d = Digest::of_bytes(bytes);
    std::fs::write(dir.join("blobs/sha256").join(d.hex()), bytes).expect("write blob");
    json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.as_str(), "size": bytes.len()})
}

/// A layout in `dir` holding `layers` (stored bytes) with diff_ids that match them.
fn layout(dir: &Path, layers: &[&[u8]]) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    let descs: Vec<_> = layers.iter().map(|l| put(dir, l)).collect();
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| Digest::of_bytes(&plain(l)).to_string())
        .collect();
    let config = json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let c = put(dir, &serde_json::to_vec(&config).expect("json"));
    let m = put(
        dir,
        &serde_json::to_vec(&json!({"schemaVersion": 2, "config": c, "layers": descs}))
            .expect("json"),
    );
    let index = json!({"schemaVersion": 2, "manifests": [m]});
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("write index");
}

/// Flatten `data`, split at [`LAYER_SEPARATOR`] into stored layers (tar, tar+gzip or
/// tar+zstd, sniffed as for real images), and check the view it gives.
pub fn layers(data: &[u8]) -> Result<RootfsView, ImageError> {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(i) = rest
        .windows(LAYER_SEPARATOR.len())
        .position(|w| w == LAYER_SEPARATOR)
    {
        parts.push(&rest[..i]);
        rest = &rest[i + LAYER_SEPARATOR.len()..];
    }
    parts.push(rest);
    layout(tmp.path(), &parts);
    open_layout(tmp.path())
}

/// Read the OCI layout at `dir` as `inspect` does, and check the view.
fn open_layout(dir: &Path) -> Result<RootfsView, ImageError> {
    let r = ImageRef::OciDir {
        dir: dir.to_owned(),
        tag: None,
    };
    let image = read_oci(r, &Container::dir(dir), None)?;
    let view = RootfsView::build(&image)?;
    check(&view);
    Ok(view)
}

/// What every view promises: each path is an entry, each directory's children are
/// entries below it, each file reads exactly its size.
pub fn check(view: &RootfsView) {
    let paths = view.paths();
    assert_eq!(paths.len(), view.entry_count(), "paths() vs entry_count()");
    assert!(paths.windows(2).all(|w| w[0] < w[1]), "paths() not sorted");
    for p in &paths {
        let e = view
            .entry(p)
            .unwrap_or_else(|| panic!("{p:?} listed but no entry"));
        assert!(
            p.as_str().len() <= crate::view::MAX_PATH_BYTES,
            "{p:?} too long"
        );
        if let Some(parent) = p.parent() {
            assert!(
                view.entry(&parent).is_some_and(minify_model::Entry::is_dir),
                "{p:?} without a directory parent"
            );
        }
        for c in view.children(p) {
            assert_eq!(c.parent().as_ref(), Some(p), "child {c:?} of {p:?}");
        }
        if e.is_file() {
            let bytes = view.read(p, None).expect("a file reads");
            // A hardlink reads its target, which is a regular file of the view.
            let size = match &e.kind {
                minify_model::EntryKind::Hardlink { target } => {
                    let t = view
                        .entry(target)
                        .unwrap_or_else(|| panic!("{p:?} links to {target:?}, not in the view"));
                    assert!(
                        matches!(t.kind, minify_model::EntryKind::File),
                        "{p:?} links to {target:?}, not a regular file"
                    );
                    t.size
                }
                _ => e.size,
            };
            assert_eq!(bytes.len() as u64, size, "{p:?} reads its size");
        }
        let _ = minify_model::resolve(view, p.as_str(), true);
    }
    let _ = view.largest_dirs(5);
}

/// Open an OCI layout whose `index.json` is `data`; the blobs it may name are a good
/// manifest, config and layer (their digests are in the seed corpus).
pub fn oci_index(data: &[u8]) -> Result<RootfsView, ImageError> {
    let tmp = tempfile::tempdir().expect("temp dir");
    layout(tmp.path(), &[&seed_layer()]);
    std::fs::write(tmp.path().join("index.json"), data).expect("write index");
    open_layout(tmp.path())
}

/// Open `data` as a docker-archive file.
pub fn docker_archive(data: &[u8]) -> Result<RootfsView, ImageError> {
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().join("a.tar");
    std::fs::write(&path, data).expect("write archive");
    let file = std::fs::File::open(&path).expect("open archive");
    let c = Container::open_archive(file, &path).map_err(|e| crate::SourceError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let r = ImageRef::DockerArchive { path, image: None };
    let image = read_docker_archive(r, &c, None, None)?;
    let view = RootfsView::build(&image)?;
    check(&view);
    Ok(view)
}

/// A docker-archive whose `manifest.json` is `data`, next to a good config
/// (`config.json`) and layer (`layer.tar`).
pub fn docker_manifest(data: &[u8]) -> Result<RootfsView, ImageError> {
    let mut b = tar::Builder::new(Vec::new());
    let layer = seed_layer();
    let config = json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [Digest::of_bytes(&layer).to_string()]}});
    let config = serde_json::to_vec(&config).expect("json");
    for (name, bytes) in [
        ("config.json", config.as_slice()),
        ("layer.tar", layer.as_slice()),
        ("manifest.json", data),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        b.append_data(&mut h, name, bytes).expect("tar");
    }
    docker_archive(&b.into_inner().expect("tar"))
}

/// The layer of the manifest targets: one file `f` holding `x`, as a plain tar.
pub fn seed_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, "f", &b"x"[..]).expect("tar");
    b.into_inner().expect("tar")
}

#[cfg(test)]
mod tests {
    use minify_model::ImagePath;

    use super::*;

    #[test]
    fn the_entry_points_read_good_input() {
        let seed = seed_layer();
        let v = layers(&seed).unwrap();
        assert_eq!(v.read(&ImagePath::new("/f"), None).unwrap(), b"x");
        assert!(layers(&[&seed[..], LAYER_SEPARATOR, &seed[..]].concat()).is_ok());
        let manifest = json!([{"Config": "config.json", "Layers": ["layer.tar"]}]);
        let v = docker_manifest(&serde_json::to_vec(&manifest).unwrap()).unwrap();
        assert_eq!(v.entry_count(), 2);
        assert!(oci_index(b"{}").is_err());
        assert!(docker_archive(b"not a tar").is_err());
    }
}

/// Writes the seed corpora of the image fuzz targets:
/// `cargo test -p minify-image --features fuzzing --lib write_fuzz_seeds -- --ignored`.
#[cfg(test)]
mod seeds {
    use std::io::Write as _;

    use super::*;

    fn entry(
        b: &mut tar::Builder<Vec<u8>>,
        ty: tar::EntryType,
        name: &str,
        link: &str,
        data: &[u8],
    ) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(ty);
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        if link.is_empty() {
            b.append_data(&mut h, name, data).expect("tar");
        } else {
            b.append_link(&mut h, name, link).expect("tar");
        }
    }

    #[test]
    #[ignore = "writes fuzz/corpus; run by hand"]
    fn write_fuzz_seeds() {
        use tar::EntryType as T;
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, T::Directory, "usr/bin/", "", b"");
        entry(&mut b, T::Regular, "usr/bin/app", "", b"#!/bin/sh\n");
        entry(&mut b, T::Link, "usr/bin/app2", "usr/bin/app", b"");
        entry(&mut b, T::Symlink, "bin", "usr/bin", b"");
        entry(&mut b, T::Regular, "opt/old", "", b"old");
        b.append_pax_extensions([("SCHILY.xattr.security.capability", &b"\x01\x02"[..])])
            .expect("tar");
        entry(
            &mut b,
            T::Regular,
            &format!("deep/{}", "d/".repeat(60) + "f"),
            "",
            b"x",
        );
        let lower = b.into_inner().expect("tar");
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, T::Regular, "opt/.wh..wh..opq", "", b"");
        entry(&mut b, T::Regular, "usr/bin/.wh.app", "", b"");
        entry(&mut b, T::Regular, "opt/new", "", b"new");
        let upper = b.into_inner().expect("tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&upper).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let zst = zstd::encode_all(upper.as_slice(), 19).expect("zstd");
        let dir = root.join("image_layer");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("seed-plain"), &lower).expect("write");
        std::fs::write(dir.join("seed-gzip"), &gz).expect("write");
        std::fs::write(
            dir.join("seed-two-layers-zstd"),
            [&lower[..], LAYER_SEPARATOR, &zst[..]].concat(),
        )
        .expect("write");

        // A layout like `oci_index` makes, to find the digests its index.json must name.
        let tmp = tempfile::tempdir().expect("temp dir");
        layout(tmp.path(), &[&seed_layer()]);
        let index = std::fs::read(tmp.path().join("index.json")).expect("index");
        let dir = root.join("image_manifest");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("seed-oci-index"), [&[0u8][..], &index].concat()).expect("write");
        let manifest = br#"[{"Config":"config.json","RepoTags":["app:1"],"Layers":["layer.tar"]}]"#;
        std::fs::write(
            dir.join("seed-docker-manifest"),
            [&[1u8][..], manifest].concat(),
        )
        .expect("write");
        let mut b = tar::Builder::new(Vec::new());
        let layer = seed_layer();
        let config = serde_json::to_vec(&json!({"rootfs": {"type": "layers",
            "diff_ids": [Digest::of_bytes(&layer).to_string()]}}))
        .expect("json");
        entry(&mut b, T::Regular, "config.json", "", &config);
        entry(&mut b, T::Regular, "layer.tar", "", &layer);
        entry(&mut b, T::Regular, "manifest.json", "", manifest);
        let archive = b.into_inner().expect("tar");
        std::fs::write(
            dir.join("seed-docker-archive"),
            [&[2u8][..], &archive].concat(),
        )
        .expect("write");
    }
}
