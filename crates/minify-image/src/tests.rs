//! Unit tests over images built here from hand-made tar layers: every transport, the layer
//! semantics (whiteouts, opaque dirs, hardlinks, xattrs, devices), packing determinism and
//! each bad input the crate must refuse with one clear error.
#![allow(clippy::many_single_char_names)]

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use minify_model::{EntryKind, ImagePath, ResolveError, Rootfs, resolve};
use serde_json::json;

use crate::{
    Compression, Digest, ImageError, ImageRef, PackOptions, RootfsView, SourceImage, WriteOptions,
    pack,
};

/// One entry of a hand-made layer.
#[derive(Clone)]
enum E {
    Dir(&'static str),
    File(&'static str, &'static [u8]),
    Mode(&'static str, &'static [u8], u32, u64),
    Symlink(&'static str, &'static str),
    Hardlink(&'static str, &'static str),
    Xattr(&'static str, &'static [u8], &'static str, &'static [u8]),
    Char(&'static str, u32, u32),
    Fifo(&'static str),
    /// A regular file whose name is written into the header raw, unchecked.
    RawName(&'static str),
}

fn header(ty: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(ty);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            E::Dir(p) => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::File(p, d) => {
                let mut h = header(tar::EntryType::Regular, 0o644, d.len() as u64);
                b.append_data(&mut h, p, *d).unwrap();
            }
            E::Mode(p, d, mode, uid) => {
                let mut h = header(tar::EntryType::Regular, *mode, d.len() as u64);
                h.set_uid(*uid);
                b.append_data(&mut h, p, *d).unwrap();
            }
            E::Symlink(p, t) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, p, t).unwrap();
            }
            E::Hardlink(p, t) => {
                let mut h = header(tar::EntryType::Link, 0o644, 0);
                // Raw, so tests can name targets the tar crate would refuse.
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::Xattr(p, d, k, v) => {
                b.append_pax_extensions([(format!("SCHILY.xattr.{k}").as_str(), *v)])
                    .unwrap();
                let mut h = header(tar::EntryType::Regular, 0o755, d.len() as u64);
                b.append_data(&mut h, p, *d).unwrap();
            }
            E::Char(p, ma, mi) => {
                let mut h = header(tar::EntryType::Char, 0o666, 0);
                h.set_device_major(*ma).unwrap();
                h.set_device_minor(*mi).unwrap();
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::Fifo(p) => {
                let mut h = header(tar::EntryType::Fifo, 0o644, 0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::RawName(p) => {
                let mut h = header(tar::EntryType::Regular, 0o644, 1);
                h.as_old_mut().name[..p.len()].copy_from_slice(p.as_bytes());
                h.set_cksum();
                b.append(&h, &b"x"[..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(tar, 3).unwrap(),
    }
}

fn config_for(tars: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = tars
        .iter()
        .map(|t| Digest::of_bytes(t).to_string())
        .collect();
    serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
        "config": {"Cmd": ["/bin/app"], "Env": ["PATH=/usr/bin"], "ExposedPorts": {"80/tcp": {}},
                   "Labels": {"keep": "me"}, "StopSignal": "SIGQUIT"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "container_config": {"Hostname": "builder"},
    }))
    .unwrap()
}

/// An OCI layout directory with the given layers (each compressed as asked).
fn oci_dir(dir: &Path, layers: &[(Vec<u8>, Compression)]) -> PathBuf {
    let tars: Vec<Vec<u8>> = layers.iter().map(|(t, _)| t.clone()).collect();
    oci_dir_with(dir, layers, &config_for(&tars), |_| {})
}

fn oci_dir_with(
    dir: &Path,
    layers: &[(Vec<u8>, Compression)],
    config: &[u8],
    tweak: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    let root = dir.join("layout");
    let blobs = root.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = Digest::of_bytes(bytes);
        std::fs::write(blobs.join(d.hex()), bytes).unwrap();
        json!({"digest": d.as_str(), "size": bytes.len()})
    };
    let mut ls = Vec::new();
    for (t, c) in layers {
        let mut d = put(&compress(t, *c));
        d["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar");
        ls.push(d);
    }
    let mut manifest = json!({"schemaVersion": 2, "config": put(config), "layers": ls});
    tweak(&mut manifest);
    let m = put(&serde_json::to_vec(&manifest).unwrap());
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": m["digest"], "size": m["size"],
        "annotations": {"org.opencontainers.image.ref.name": "v1"}}]});
    std::fs::write(root.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(
        root.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    root
}

/// A legacy `docker save` archive (layers as `<id>/layer.tar`, the second one a symlink to
/// the first when they are identical, as docker writes it).
fn docker_archive(path: &Path, tars: &[Vec<u8>]) {
    docker_archive_tagged(path, tars, &[&["app:1.0"]]);
}

/// [`docker_archive`] listing the image once per entry of `names_per_image` (what `docker save a b`
/// writes for two images; here the same config under other names).
fn docker_archive_tagged(path: &Path, tars: &[Vec<u8>], names_per_image: &[&[&str]]) {
    let config = config_for(tars);
    let id = Digest::of_bytes(&config);
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut names = Vec::new();
    let mut seen: BTreeMap<Digest, String> = BTreeMap::new();
    for (i, t) in tars.iter().enumerate() {
        let name = format!("{i:064}/layer.tar");
        let d = Digest::of_bytes(t);
        if let Some(first) = seen.get(&d) {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, &name, format!("../{first}")).unwrap();
        } else {
            let mut h = header(tar::EntryType::Regular, 0o644, t.len() as u64);
            b.append_data(&mut h, &name, t.as_slice()).unwrap();
            seen.insert(d, name.clone());
        }
        names.push(name);
    }
    let cname = format!("{}.json", id.hex());
    let mut h = header(tar::EntryType::Regular, 0o644, config.len() as u64);
    b.append_data(&mut h, &cname, config.as_slice()).unwrap();
    let items: Vec<_> = names_per_image
        .iter()
        .map(|t| json!({"Config": cname, "RepoTags": t, "Layers": names}))
        .collect();
    let manifest = serde_json::to_vec(&items).unwrap();
    let mut h = header(tar::EntryType::Regular, 0o644, manifest.len() as u64);
    b.append_data(&mut h, "manifest.json", manifest.as_slice())
        .unwrap();
    b.finish().unwrap();
}

fn base_layers() -> Vec<Vec<u8>> {
    vec![
        layer(&[
            E::Dir("./"),
            E::Dir("usr/"),
            E::Dir("usr/bin/"),
            E::Mode("usr/bin/app", b"#!app\n", 0o4755, 1000),
            E::Hardlink("usr/bin/app2", "usr/bin/app"),
            E::Symlink("bin", "usr/bin"),
            E::Dir("etc/"),
            E::File("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
            E::Dir("opt/"),
            E::File("opt/old", b"old"),
            E::Dir("var/"),
            E::File("var/gone", b"gone"),
            E::Dir("dev/"),
            E::Char("dev/null", 1, 3),
            E::Fifo("run.fifo"),
            E::Symlink("escape", "../../../../etc/shadow"),
        ]),
        layer(&[
            E::Dir("opt/"),
            E::File("opt/.wh..wh..opq", b""),
            E::File("opt/new", b"new"),
            E::File("var/.wh.gone", b""),
            E::Xattr("usr/bin/ping", b"ping", "security.capability", b"\x01\x02"),
            E::File("etc/passwd", b"root:x:0:0::/root:/bin/bash\n"),
            // Only the child: the parent directory is implied.
            E::File("srv/www/index.html", b"<h1>hi</h1>"),
        ]),
    ]
}

async fn open(r: &str) -> Result<SourceImage, ImageError> {
    let r: ImageRef = r.parse()?;
    Ok(SourceImage::open(&r).await?)
}

async fn open_view(r: &str) -> Result<(SourceImage, RootfsView), ImageError> {
    let img = open(r).await?;
    let view = RootfsView::build(&img)?;
    Ok((img, view))
}

/// The base layers as an OCI layout in `dir`, every layer compressed with `c`, opened.
async fn base_oci_view(dir: &Path, c: Compression) -> (SourceImage, RootfsView) {
    let layers: Vec<_> = base_layers().into_iter().map(|t| (t, c)).collect();
    let dir = oci_dir(dir, &layers);
    open_view(&format!("oci:{}", dir.display())).await.unwrap()
}

fn p(s: &str) -> ImagePath {
    ImagePath::new(s)
}

fn check_base_view(view: &RootfsView) {
    assert_eq!(
        view.read(&p("/etc/passwd"), None).unwrap(),
        b"root:x:0:0::/root:/bin/bash\n"
    );
    assert_eq!(view.read(&p("/etc/passwd"), Some(4)).unwrap(), b"root");
    // Opaque dir: lower content gone, this layer's kept.
    assert!(view.entry(&p("/opt/old")).is_none());
    assert_eq!(view.read(&p("/opt/new"), None).unwrap(), b"new");
    // Whiteout.
    assert!(view.entry(&p("/var/gone")).is_none());
    assert!(
        view.entry(&p("/var"))
            .is_some_and(minify_model::Entry::is_dir)
    );
    // Metadata and set-id bits.
    let app = view.entry(&p("/usr/bin/app")).unwrap();
    assert_eq!(
        (app.mode, app.uid, app.mtime),
        (0o4755, 1000, 1_700_000_000)
    );
    assert_eq!(app.kind, EntryKind::File);
    assert_eq!(
        view.entry(&p("/usr/bin/app2")).unwrap().kind,
        EntryKind::Hardlink {
            target: p("/usr/bin/app")
        }
    );
    assert_eq!(view.read(&p("/usr/bin/app2"), None).unwrap(), b"#!app\n");
    let ping = view.entry(&p("/usr/bin/ping")).unwrap();
    assert_eq!(ping.xattrs.get("security.capability").unwrap(), b"\x01\x02");
    assert_eq!(
        view.entry(&p("/dev/null")).unwrap().kind,
        EntryKind::CharDevice { major: 1, minor: 3 }
    );
    assert_eq!(view.entry(&p("/run.fifo")).unwrap().kind, EntryKind::Fifo);
    assert!(view.entry(&p("/srv/www")).unwrap().is_dir());
    // Resolution happens inside the image.
    assert_eq!(
        resolve(view, "/bin/app", true).unwrap().path,
        p("/usr/bin/app")
    );
    assert!(matches!(
        resolve(view, "/escape", true),
        Err(ResolveError::NotFound { .. })
    ));
    assert!(view.read(&p("/escape"), None).is_err());
    assert_eq!(
        view.children(&p("/usr/bin")),
        vec![p("/usr/bin/app"), p("/usr/bin/app2"), p("/usr/bin/ping")]
    );
    let root_children = view.children(&ImagePath::root());
    assert!(root_children.contains(&p("/srv")) && !root_children.contains(&p("/srv/www")));
    assert_eq!(view.env(), ["PATH=/usr/bin"]);
}

#[tokio::test]
async fn reads_oci_layouts_in_every_compression() {
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let tmp = tempfile::tempdir().unwrap();
        let layers: Vec<_> = base_layers().into_iter().map(|t| (t, c)).collect();
        let dir = oci_dir(tmp.path(), &layers);
        let (img, view) = open_view(&format!("oci:{}", dir.display())).await.unwrap();
        assert_eq!(img.layers()[0].compression, c);
        assert_eq!(img.config().exposed_tcp_ports(), vec![80]);
        check_base_view(&view);
        assert_eq!(view.layer_stats().len(), 2);
        assert_eq!(view.layer_stats()[1].entries, 7);
        // The same through the tag and as an oci-archive.
        open_view(&format!("oci:{}:v1", dir.display()))
            .await
            .unwrap();
        let ar = tmp.path().join("oci.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&ar).unwrap());
        b.append_dir_all(".", &dir).unwrap();
        b.finish().unwrap();
        let (img2, view2) = open_view(&format!("oci-archive:{}", ar.display()))
            .await
            .unwrap();
        assert_eq!(img2.id(), img.id());
        check_base_view(&view2);
    }
}

#[tokio::test]
async fn reads_legacy_docker_archives_with_linked_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tars = base_layers();
    tars.push(tars[1].clone());
    let ar = tmp.path().join("d.tar");
    docker_archive(&ar, &tars);
    let (img, view) = open_view(&format!("docker-archive:{}", ar.display()))
        .await
        .unwrap();
    assert_eq!(img.repo_tags(), ["app:1.0"]);
    assert_eq!(img.layers().len(), 3);
    check_base_view(&view);
}

#[tokio::test]
async fn refuses_archives_of_several_images() {
    // Reading the first image of `docker save a b` would minify whichever came first.
    let tmp = tempfile::tempdir().unwrap();
    let ar = tmp.path().join("two.tar");
    docker_archive_tagged(
        &ar,
        &base_layers(),
        &[&["app:1.0"], &["web:2", "web:latest"]],
    );
    let err = open(&format!("docker-archive:{}", ar.display()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("holds 2 images (@0 app:1.0; @1 web:2, web:latest); say which:"),
        "{err}"
    );
    assert!(err.contains(":NAME:TAG or docker-archive:"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[tokio::test]
async fn reads_the_image_named_in_an_archive_of_several() {
    let tmp = tempfile::tempdir().unwrap();
    let ar = tmp.path().join("two.tar");
    docker_archive_tagged(
        &ar,
        &base_layers(),
        &[&["app:1.0"], &["team/web:2", "team/web:latest"]],
    );
    let at = |which: &str| format!("docker-archive:{}:{which}", ar.display());
    // By name (as docker save writes it, or with Docker Hub's prefixes, or no tag for
    // `latest`): the image gets that name, which later names the default output.
    for (which, tags) in [
        ("app:1.0", vec!["app:1.0"]),
        ("team/web:2", vec!["team/web:2"]),
        ("docker.io/team/web", vec!["team/web:latest"]),
        ("@0", vec!["app:1.0"]),
        ("@1", vec!["team/web:2", "team/web:latest"]),
    ] {
        let (img, view) = open_view(&at(which)).await.unwrap();
        assert_eq!(img.repo_tags(), tags, "{which}");
        check_base_view(&view);
    }
    for (which, says) in [
        (
            "app:2.0",
            "holds no image named app:2.0 (@0 app:1.0; @1 team/web:2, team/web:latest)",
        ),
        ("web:2", "holds no image named web:2"),
        ("@2", "holds 2 image(s), so there is no @2"),
    ] {
        let err = open(&at(which)).await.unwrap_err().to_string();
        assert!(err.contains(says), "{which}: {err}");
        assert!(!err.contains('\n'), "{err}");
    }
}

/// An OCI output stores the new layer compressed as asked (gzip by default), with the
/// matching media type, digest and size; the same image written twice gives the same bytes;
/// each reads back to the same files; a docker-archive keeps it uncompressed.
#[tokio::test]
async fn oci_outputs_compress_the_layer_deterministically() {
    let tmp = tempfile::tempdir().unwrap();
    let (img, view) = base_oci_view(tmp.path(), Compression::None).await;
    let keep = [p("/usr/bin/app2"), p("/etc/passwd"), p("/dev/null")];
    let packed = pack(&view, &img, &keep, &PackOptions::default()).unwrap();
    let tar = std::fs::read(packed.layer_path()).unwrap();
    let manifest_layer = |out: &Path| -> serde_json::Value {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
        let m = index["manifests"][0]["digest"].as_str().unwrap();
        let m = m.strip_prefix("sha256:").unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("blobs/sha256").join(m)).unwrap())
                .unwrap();
        manifest["layers"][0].clone()
    };
    let mut sizes = Vec::new();
    for (c, name, media, magic) in [
        (
            None,
            "default",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            &[0x1f, 0x8b][..],
        ),
        (
            Some(Compression::Gzip),
            "gzip",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            &[0x1f, 0x8b],
        ),
        (
            Some(Compression::Zstd),
            "zstd",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            &[0x28, 0xb5, 0x2f, 0xfd],
        ),
        (
            Some(Compression::None),
            "none",
            "application/vnd.oci.image.layer.v1.tar",
            &tar[..4],
        ),
    ] {
        let options = WriteOptions {
            compression: c.unwrap_or(WriteOptions::default().compression),
            ..WriteOptions::default()
        };
        let mut digests = Vec::new();
        for n in 0..2 {
            let out = tmp.path().join(format!("{name}-{n}"));
            let r: ImageRef = format!("oci:{}", out.display()).parse().unwrap();
            let written = packed.write_to(&r, &options).await.unwrap();
            let layer = manifest_layer(&out);
            assert_eq!(layer["mediaType"], media, "{name}");
            assert_eq!(layer["digest"], written.layer_digest.as_str(), "{name}");
            assert_eq!(layer["size"], written.layer_bytes, "{name}");
            let blob =
                std::fs::read(out.join("blobs/sha256").join(written.layer_digest.hex())).unwrap();
            assert_eq!(Digest::of_bytes(&blob), written.layer_digest, "{name}");
            assert_eq!(blob.len() as u64, written.layer_bytes, "{name}");
            assert!(blob.starts_with(magic), "{name}");
            // Reads back (digests checked while streaming) to the packed files.
            let back = SourceImage::open(&r).await.unwrap();
            assert_eq!(back.id(), packed.id(), "{name}");
            let v = RootfsView::build(&back).unwrap();
            assert_eq!(
                v.read(&p("/etc/passwd"), None).unwrap(),
                view.read(&p("/etc/passwd"), None).unwrap()
            );
            digests.push(written.layer_digest);
        }
        assert_eq!(digests[0], digests[1], "{name}: not deterministic");
        sizes.push((
            name,
            packed
                .write_to(
                    &format!("oci-archive:{}/{name}.tar", tmp.path().display())
                        .parse()
                        .unwrap(),
                    &options,
                )
                .await
                .unwrap()
                .layer_bytes,
        ));
    }
    // The layer here is mostly tar headers and padding: any compression shrinks it.
    let none = sizes.iter().find(|s| s.0 == "none").unwrap().1;
    assert_eq!(none, tar.len() as u64);
    for (name, bytes) in &sizes {
        if *name != "none" {
            assert!(*bytes * 4 < none, "{name}: {bytes} of {none}");
        }
    }
    // A docker-archive holds the tar as it is.
    let da: ImageRef = format!("docker-archive:{}/d.tar", tmp.path().display())
        .parse()
        .unwrap();
    let written = packed
        .write_to(&da, &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(written.compression, Compression::None);
    assert_eq!(&written.layer_digest, packed.layer_digest());
}

#[tokio::test]
async fn pack_is_deterministic_and_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let (img, view) = base_oci_view(tmp.path(), Compression::Gzip).await;
    let keep = [
        p("/usr/bin/app2"),
        p("/usr/bin/ping"),
        p("/bin"),
        p("/dev/null"),
        p("/etc/passwd"),
    ];
    let a = pack(&view, &img, &keep, &PackOptions::default()).unwrap();
    let b = pack(&view, &img, &keep, &PackOptions::default()).unwrap();
    assert_eq!(a.id(), b.id());
    assert_eq!(
        std::fs::read(a.layer_path()).unwrap(),
        std::fs::read(b.layer_path()).unwrap()
    );
    // Every transport reads back to the same entries.
    for (i, out) in [
        "oci:{}/o1:min",
        "oci-archive:{}/o2.tar",
        "docker-archive:{}/o3.tar",
    ]
    .iter()
    .enumerate()
    {
        let out: ImageRef = out
            .replace("{}", &tmp.path().display().to_string())
            .parse()
            .unwrap();
        let id = a.write_to(&out, &WriteOptions::default()).await.unwrap().id;
        assert_eq!(&id, a.id(), "output {i}");
        let img2 = SourceImage::open(&out).await.unwrap();
        assert_eq!(img2.id(), a.id());
        let c = img2.config();
        assert_eq!(c.cmd, ["/bin/app"]);
        assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(c.labels.get("keep").map(String::as_str), Some("me"));
        assert_eq!(
            c.labels.get(crate::SOURCE_DIGEST_LABEL).map(String::as_str),
            Some(img.id().as_str())
        );
        let v2 = RootfsView::build(&img2).unwrap();
        let paths: Vec<String> = v2.paths().iter().map(ToString::to_string).collect();
        assert_eq!(
            paths,
            [
                "/",
                "/bin",
                "/dev",
                "/dev/null",
                "/etc",
                "/etc/passwd",
                "/usr",
                "/usr/bin",
                "/usr/bin/app2",
                "/usr/bin/ping"
            ]
        );
        // app2's hardlink target was not kept: app2 became the file.
        let app2 = v2.entry(&p("/usr/bin/app2")).unwrap();
        assert_eq!(
            (app2.kind.clone(), app2.mode, app2.uid),
            (EntryKind::File, 0o4755, 1000)
        );
        assert_eq!(v2.read(&p("/usr/bin/app2"), None).unwrap(), b"#!app\n");
        assert_eq!(
            v2.entry(&p("/usr/bin/ping"))
                .unwrap()
                .xattrs
                .get("security.capability")
                .unwrap(),
            b"\x01\x02"
        );
        assert_eq!(v2.entry(&p("/usr")).unwrap().mtime, 1_700_000_000);
        assert_eq!(
            v2.entry(&p("/dev/null")).unwrap().kind,
            EntryKind::CharDevice { major: 1, minor: 3 }
        );
        // An existing output is refused and left alone.
        let before = crate::source::file_path(&out).map(|p| std::fs::metadata(p).unwrap().len());
        let err = a
            .write_to(&out, &WriteOptions::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(
            before,
            crate::source::file_path(&out).map(|p| std::fs::metadata(p).unwrap().len())
        );
        a.write_to(
            &out,
            &WriteOptions {
                force: true,
                ..WriteOptions::default()
            },
        )
        .await
        .unwrap();
    }
    // A named docker-archive output carries the name (what `docker load` tags it with),
    // normalised as docker save writes it; a position names no output.
    let named: ImageRef = format!("docker-archive:{}/o4.tar:team/app", tmp.path().display())
        .parse()
        .unwrap();
    a.write_to(&named, &WriteOptions::default()).await.unwrap();
    assert_eq!(
        SourceImage::open(&named).await.unwrap().repo_tags(),
        ["team/app:latest"]
    );
    let plain: ImageRef = format!("docker-archive:{}/o4.tar", tmp.path().display())
        .parse()
        .unwrap();
    assert_eq!(
        SourceImage::open(&plain).await.unwrap().repo_tags(),
        ["team/app:latest"]
    );
    let index: ImageRef = format!("docker-archive:{}/o5.tar:@0", tmp.path().display())
        .parse()
        .unwrap();
    let err = a
        .write_to(&index, &WriteOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("@INDEX picks an image to read"), "{err}");
    assert!(!tmp.path().join("o5.tar").exists());
    // Both links kept: they stay hardlinks of each other.
    let both = pack(
        &view,
        &img,
        &[p("/usr/bin/app"), p("/usr/bin/app2")],
        &PackOptions::default(),
    )
    .unwrap();
    let out: ImageRef = format!("oci:{}/both", tmp.path().display())
        .parse()
        .unwrap();
    both.write_to(&out, &WriteOptions::default()).await.unwrap();
    let v3 = RootfsView::build(&SourceImage::open(&out).await.unwrap()).unwrap();
    assert_eq!(
        v3.entry(&p("/usr/bin/app2")).unwrap().kind,
        EntryKind::Hardlink {
            target: p("/usr/bin/app")
        }
    );
    let err = pack(&view, &img, &[p("/nope")], &PackOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("/nope is not in the image"),
        "{err}"
    );
    // No temp siblings left behind.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("minify-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

async fn view_err(layers: &[(Vec<u8>, Compression)]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let dir = oci_dir(tmp.path(), layers);
    match open_view(&format!("oci:{}", dir.display())).await {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn refuses_names_that_leave_the_root() {
    for bad in ["../etc/passwd", "a/../../x", "/etc/passwd"] {
        let msg = view_err(&[(layer(&[E::Dir("a/"), E::RawName(bad)]), Compression::None)]).await;
        assert!(
            msg.contains("escapes the image root") && msg.contains(bad),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn refuses_hardlinks_outside_or_missing() {
    let msg = view_err(&[(
        layer(&[E::Hardlink("x", "../etc/shadow")]),
        Compression::None,
    )])
    .await;
    assert!(
        msg.contains("hardlink \"/x\"") && msg.contains("outside the image"),
        "{msg}"
    );
    let msg = view_err(&[(layer(&[E::Hardlink("x", "/etc/shadow")]), Compression::None)]).await;
    assert!(msg.contains("outside the image"), "{msg}");
    let msg = view_err(&[(layer(&[E::Hardlink("x", "nothere")]), Compression::None)]).await;
    assert!(msg.contains("not in the image"), "{msg}");
}

#[tokio::test]
async fn refuses_digest_mismatches() {
    let tmp = tempfile::tempdir().unwrap();
    let good = layer(&[E::File("a", b"a")]);
    let other = layer(&[E::File("a", b"b")]);
    // diff_id of another layer in the config.
    let config = config_for(std::slice::from_ref(&other));
    let dir = oci_dir_with(
        tmp.path(),
        &[(good.clone(), Compression::Gzip)],
        &config,
        |_| {},
    );
    let err = open_view(&format!("oci:{}", dir.display()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("does not match the config's diff_id")
            && err.contains(Digest::of_bytes(&other).as_str())
            && err.contains(Digest::of_bytes(&good).as_str()),
        "{err}"
    );
    // The manifest names a digest whose blob holds other bytes (a blob file that lies).
    let tmp = tempfile::tempdir().unwrap();
    let dir = oci_dir(tmp.path(), &[(good.clone(), Compression::None)]);
    let blob = dir.join("blobs/sha256").join(Digest::of_bytes(&good).hex());
    let mut bytes = good.clone();
    bytes[600] ^= 1;
    std::fs::write(&blob, &bytes).unwrap();
    let err = open_view(&format!("oci:{}", dir.display()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("does not match the manifest's") && err.contains("layer 0"),
        "{err}"
    );
}

#[tokio::test]
async fn refuses_truncated_gzip() {
    let tmp = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..200_000u32).flat_map(u32::to_le_bytes).collect();
    let big: &'static [u8] = Box::leak(big.into_boxed_slice());
    let t = layer(&[E::File("big", big)]);
    let gz = compress(&t, Compression::Gzip);
    let cut = gz[..gz.len() / 2].to_vec();
    // Build the layout around the truncated blob so descriptors agree with it; only the
    // stream itself is broken.
    let root = tmp.path().join("layout");
    std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    let put = |b: &[u8]| {
        let d = Digest::of_bytes(b);
        std::fs::write(root.join("blobs/sha256").join(d.hex()), b).unwrap();
        json!({"digest": d.as_str(), "size": b.len()})
    };
    let config = put(&config_for(std::slice::from_ref(&t)));
    let m = put(&serde_json::to_vec(&json!({"config": config, "layers": [put(&cut)]})).unwrap());
    std::fs::write(
        root.join("index.json"),
        serde_json::to_vec(&json!({"manifests": [m]})).unwrap(),
    )
    .unwrap();
    let err = open_view(&format!("oci:{}", root.display()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("layer 0") && err.contains("tar+gzip"), "{err}");
}

#[tokio::test]
async fn refuses_missing_blobs_and_missing_images() {
    let tmp = tempfile::tempdir().unwrap();
    let t = layer(&[E::File("a", b"a")]);
    let dir = oci_dir(tmp.path(), &[(t.clone(), Compression::None)]);
    std::fs::remove_file(dir.join("blobs/sha256").join(Digest::of_bytes(&t).hex())).unwrap();
    let err = open(&format!("oci:{}", dir.display()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("names layer") && err.contains(Digest::of_bytes(&t).as_str()),
        "{err}"
    );
    // A manifest naming a blob by a path-like digest is refused before any file is opened.
    let tmp = tempfile::tempdir().unwrap();
    let dir = oci_dir_with(
        tmp.path(),
        &[(t.clone(), Compression::None)],
        &config_for(&[t]),
        |m| {
            m["layers"][0]["digest"] = json!("sha256:../../../../etc/passwd");
        },
    );
    let err = open(&format!("oci:{}", dir.display()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a sha256 digest"), "{err}");

    let err = open("docker-archive:/nonexistent/x.tar")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("/nonexistent/x.tar") && err.contains("does not exist"),
        "{err}"
    );
    let err = open("oci:/nonexistent/dir")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
    let err = open(&format!("oci:{}:nosuchtag", dir.display()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("nosuchtag"), "{err}");
}

/// A layer whose next entry carries the given pax records (then a file `f`).
fn pax_layer(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
        .unwrap();
    let mut h = header(tar::EntryType::Regular, 0o644, 1);
    b.append_data(&mut h, "f", &b"x"[..]).unwrap();
    b.into_inner().unwrap()
}

/// `n` components of `a`: a path of `2n - 1` bytes.
fn deep(n: usize) -> String {
    vec!["a"; n].join("/")
}

#[tokio::test]
async fn refuses_paths_longer_than_linux_allows() {
    // A 1 MB path of 500k components: with every ancestor stored as a full string this took
    // `inspect` past 4 GiB (issue 12); now it is refused from the length alone.
    let path = deep(500_000);
    let t = pax_layer(&[("path", path.as_bytes())]);
    let msg = view_err(&[(t, Compression::Gzip)]).await;
    assert!(
        msg.contains("a name of 999999 bytes, more than the 4096 Linux allows")
            && msg.contains("\"a/a/a/"),
        "{msg}"
    );
    let long = "b".repeat(256);
    let t = pax_layer(&[("path", long.as_bytes())]);
    let msg = view_err(&[(t, Compression::None)]).await;
    assert!(msg.contains("a component of 256 bytes"), "{msg}");
    let mut t2 = tar::Builder::new(Vec::new());
    t2.append_pax_extensions([("linkpath", &path.as_bytes()[..5000])])
        .unwrap();
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    t2.append_data(&mut h, "l", std::io::empty()).unwrap();
    let msg = view_err(&[(t2.into_inner().unwrap(), Compression::None)]).await;
    assert!(msg.contains("a link target of 5000 bytes"), "{msg}");
}

#[tokio::test]
async fn deep_trees_cost_memory_by_component_not_by_path() {
    // 300 distinct entries, each 2000 components deep (just under PATH_MAX): a flat index
    // of full paths would hold 300 x 2000 ancestors of 2 KB each (1.2 GB); the tree holds
    // each component once.
    let tmp = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let tail = deep(2000);
    for i in 0..300 {
        let name = format!("d{i}/{tail}");
        b.append_pax_extensions([("path", name.as_bytes())])
            .unwrap();
        let mut h = header(tar::EntryType::Regular, 0o644, 1);
        b.append_data(&mut h, "placeholder", &b"x"[..]).unwrap();
    }
    let t = b.into_inner().unwrap();
    let dir = oci_dir(tmp.path(), &[(t, Compression::Zstd)]);
    let (_, view) = open_view(&format!("oci:{}", dir.display())).await.unwrap();
    assert_eq!(view.entry_count(), 1 + 300 * 2001);
    let leaf = p(&format!("/d299/{tail}"));
    assert!(view.entry(&leaf).unwrap().is_file());
    assert_eq!(view.read(&leaf, None).unwrap(), b"x");
    assert!(view.entry(&leaf.parent().unwrap()).unwrap().is_dir());
    assert_eq!(view.children(&p("/d7")), vec![p("/d7/a")]);
    let dirs = view.largest_dirs(3);
    assert_eq!(dirs.len(), 3);
    assert_eq!(dirs[0].path, p("/d0"), "ties go by depth, then path");
    assert_eq!(dirs[2].path, p("/d10"), "ties go by depth, then path");
}

#[tokio::test]
async fn refuses_extension_records_over_the_limit() {
    // A pax record the tar crate would read whole: 16 MiB here, gigabytes in a gzip bomb.
    // Before the guard it was read (and this layer accepted).
    let big = vec![b'z'; 16 << 20];
    let t = pax_layer(&[("comment", &big)]);
    let msg = view_err(&[(t, Compression::Gzip)]).await;
    assert!(
        msg.contains("layer 0")
            && msg.contains("the pax extended header at offset 0 is 167772")
            && msg.contains("bytes, more than the limit of 1048576"),
        "{msg}"
    );
    // A GNU long name record: the same.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::GNULongName, 0o644, 2 << 20);
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_cksum();
    b.append(&h, std::io::repeat(b'a').take(2 << 20)).unwrap();
    let mut h = header(tar::EntryType::Regular, 0o644, 1);
    b.append_data(&mut h, "f", &b"x"[..]).unwrap();
    let msg = view_err(&[(b.into_inner().unwrap(), Compression::Zstd)]).await;
    assert!(
        msg.contains("the GNU long name record at offset 0 is 2097152 bytes"),
        "{msg}"
    );
}

#[tokio::test]
async fn the_guard_follows_pax_sizes_and_long_names() {
    // A file whose size is given only by a pax record (as for files over 8 GiB), holding
    // bytes that look like a huge pax header; then a GNU long name within the limit. The
    // guard must skip the data by the pax size, not take it for a header.
    let mut fake = tar::Header::new_ustar();
    fake.set_entry_type(tar::EntryType::XHeader);
    fake.set_size(1 << 40);
    fake.set_cksum();
    let data = fake.as_bytes().repeat(2);
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("size", data.len().to_string().as_bytes())])
        .unwrap();
    let mut h = header(tar::EntryType::Regular, 0o644, 0);
    h.set_size(0);
    h.set_path("big").unwrap();
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
    // Without the end-of-archive blocks `into_inner` would add.
    let mut t = b.get_ref().clone();
    t.extend_from_slice(&data);
    let mut b = tar::Builder::new(Vec::new());
    let long = format!("dir/{}", "n".repeat(200));
    let mut h = header(tar::EntryType::Regular, 0o644, 2);
    b.append_data(&mut h, &long, &b"ok"[..]).unwrap();
    t.extend_from_slice(&b.into_inner().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let dir = oci_dir(tmp.path(), &[(t, Compression::Gzip)]);
    let (_, view) = open_view(&format!("oci:{}", dir.display())).await.unwrap();
    assert_eq!(view.read(&p("/big"), None).unwrap(), data);
    assert_eq!(view.read(&p(&format!("/{long}")), None).unwrap(), b"ok");
}

#[tokio::test]
async fn refuses_xattrs_over_the_limit() {
    let big = vec![b'v'; (64 << 10) + 1];
    let t = pax_layer(&[("SCHILY.xattr.user.big", &big)]);
    let msg = view_err(&[(t, Compression::None)]).await;
    assert!(msg.contains("an xattr value of 65537 bytes"), "{msg}");
}

/// A secret host file, to check that no message quotes it or gives its size.
fn canary(dir: &Path) -> PathBuf {
    let f = dir.join("canary");
    std::fs::write(&f, "CANARY-SECRET-1234\n".repeat(77)).unwrap();
    f
}

fn assert_no_canary(msg: &str) {
    assert!(
        !msg.contains("CANARY") && !msg.contains(&(19 * 77).to_string()),
        "{msg}"
    );
}

fn mkfifo(p: &Path) {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

#[tokio::test]
async fn layout_files_must_be_regular_files_inside_the_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = canary(tmp.path());
    let t = layer(&[E::File("a", b"a")]);
    let hex = Digest::of_bytes(&t).hex().to_owned();
    let fresh = |name: &str| {
        let d = tmp.path().join(name);
        std::fs::create_dir(&d).unwrap();
        oci_dir(&d, &[(t.clone(), Compression::None)])
    };
    let err = |dir: &Path| {
        let dir = dir.to_owned();
        async move {
            open_view(&format!("oci:{}", dir.display()))
                .await
                .expect_err("refused")
                .to_string()
        }
    };

    // A layer blob linked to a host file (issue 12: it was opened, quoted and sized).
    let dir = fresh("link");
    let blob = dir.join("blobs/sha256").join(&hex);
    std::fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink(&secret, &blob).unwrap();
    let msg = err(&dir).await;
    assert!(msg.contains(&format!("{hex} is a symbolic link")), "{msg}");
    assert_no_canary(&msg);

    // `blobs/` itself a link out of the layout.
    let dir = fresh("blobsdir");
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::rename(dir.join("blobs"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join("blobs")).unwrap();
    let msg = err(&dir).await;
    assert!(msg.contains("is under a symbolic link"), "{msg}");

    // index.json linked to a host file.
    let dir = fresh("index");
    std::fs::remove_file(dir.join("index.json")).unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("index.json")).unwrap();
    let msg = err(&dir).await;
    assert!(msg.contains("index.json is a symbolic link"), "{msg}");
    assert_no_canary(&msg);

    // FIFOs where files should be: refused at once (this blocked in open() forever).
    let dir = fresh("fifo-index");
    std::fs::remove_file(dir.join("index.json")).unwrap();
    mkfifo(&dir.join("index.json"));
    let msg = err(&dir).await;
    assert!(msg.contains("index.json is a FIFO"), "{msg}");
    let dir = fresh("fifo-blob");
    let blob = dir.join("blobs/sha256").join(&hex);
    std::fs::remove_file(&blob).unwrap();
    mkfifo(&blob);
    let msg = err(&dir).await;
    assert!(msg.contains(&format!("{hex} is a FIFO")), "{msg}");

    // A device: never opened.
    let dir = fresh("dev");
    let blob = dir.join("blobs/sha256").join(&hex);
    std::fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &blob).unwrap();
    let msg = err(&dir).await;
    assert!(msg.contains("is a symbolic link"), "{msg}");
}

#[tokio::test]
async fn archives_that_are_not_tars_are_never_quoted() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = canary(tmp.path());
    for t in ["docker-archive", "oci-archive"] {
        let msg = open(&format!("{t}:{}", secret.display()))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains("not a readable tar archive"), "{msg}");
        assert_no_canary(&msg);
    }
    let fifo = tmp.path().join("fifo.tar");
    mkfifo(&fifo);
    let msg = open(&format!("docker-archive:{}", fifo.display()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("it is a FIFO, not a regular file"), "{msg}");
    let msg = open("docker-archive:/dev/zero")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("it is a character device"), "{msg}");
}

#[tokio::test]
async fn errors_quoting_a_bad_header_stay_on_one_line() {
    // Found by the image_layer fuzz target: the tar reader quotes the bytes of a bad numeric
    // field, newlines and escape sequences included.
    let mut t = layer(&[E::File("a", b"a")]);
    t[148..156].copy_from_slice(b"\n\x1b[2J\n\x07\0");
    let msg = view_err(&[(t, Compression::None)]).await;
    assert!(msg.contains("when getting cksum"), "{msg}");
    assert!(!msg.chars().any(char::is_control), "{msg:?}");
}

#[tokio::test]
async fn whiteouts_of_dot_names_remove_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let lower = layer(&[E::Dir("a/"), E::File("a/x", b"x"), E::File("top", b"t")]);
    let upper = layer(&[E::File("a/.wh...", b""), E::File("a/.wh..", b"")]);
    let dir = oci_dir(
        tmp.path(),
        &[(lower, Compression::None), (upper, Compression::Gzip)],
    );
    let (_, view) = open_view(&format!("oci:{}", dir.display())).await.unwrap();
    // Joined onto `/a`, `..` is the root: the whole lower layer would go.
    assert!(view.entry(&p("/a/x")).is_some());
    assert!(view.entry(&p("/top")).is_some());
}

#[tokio::test]
async fn refuses_big_pax_records_in_old_style_headers_too() {
    // A v7 header (no ustar magic) typed `x`: the tar crate hands it out as an entry, and
    // asking an entry for its pax records read its data whole.
    let mut h = tar::Header::new_old();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_size(4 << 20);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_path("x").unwrap();
    h.set_cksum();
    let mut t = h.as_bytes().to_vec();
    t.extend(std::iter::repeat_n(b'a', 4 << 20));
    t.extend([0u8; 1024]);
    let msg = view_err(&[(t, Compression::Gzip)]).await;
    assert!(
        msg.contains("the pax extended header at offset 0 is 4194304 bytes"),
        "{msg}"
    );
}

#[test]
fn errors_quoting_a_bad_outer_archive_header_stay_on_one_line() {
    // Found by the image_manifest fuzz target in CI: a docker-archive whose own tar header
    // (not a layer's) has a bad checksum field; the tar reader quotes its bytes, newline
    // included, and the error named the archive with that text verbatim.
    let mut t = layer(&[E::File("config.json", b"{}")]);
    t[148..156].copy_from_slice(b"\xff\n\x1b[2J\x07\0");
    let msg = match crate::fuzzing::docker_archive(&t) {
        Ok(_) => panic!("a bad checksum field opened"),
        Err(e) => e.to_string(),
    };
    assert!(msg.contains("when getting cksum"), "{msg}");
    assert!(!msg.chars().any(char::is_control), "{msg:?}");
}

/// A referrer (an SBOM) in an OCI output is an OCI 1.1 artifact manifest whose subject is the
/// image's manifest, listed in index.json with its artifactType; every blob is named by its
/// digest; the layout still opens as the image (with and without its tag), in a directory
/// and in an archive. Other outputs have no place for it.
#[tokio::test]
async fn oci_outputs_hold_referrers_whose_subject_is_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let (img, view) = base_oci_view(tmp.path(), Compression::None).await;
    let packed = pack(&view, &img, &[p("/etc/passwd")], &PackOptions::default()).unwrap();
    let sbom = crate::Referrer {
        artifact_type: "application/vnd.cyclonedx+json".into(),
        bytes: br#"{"bomFormat":"CycloneDX"}"#.to_vec(),
    };
    let json = |dir: &Path, digest: &str| -> serde_json::Value {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let bytes = std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap();
        assert_eq!(Digest::of_bytes(&bytes).as_str(), digest);
        serde_json::from_slice(&bytes).unwrap()
    };
    let out = tmp.path().join("with-sbom");
    for r in [
        format!("oci:{}", out.display()),
        format!("oci:{}:min", out.display()),
    ] {
        let r: ImageRef = r.parse().unwrap();
        let opts = WriteOptions {
            force: true,
            ..WriteOptions::default()
        };
        packed
            .write_with_referrers(&r, &opts, std::slice::from_ref(&sbom))
            .await
            .unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
        let m = index["manifests"].as_array().unwrap();
        assert_eq!(m.len(), 2, "{index}");
        assert!(m[0].get("artifactType").is_none());
        assert_eq!(m[1]["artifactType"], sbom.artifact_type);
        let artifact = json(&out, m[1]["digest"].as_str().unwrap());
        assert_eq!(artifact["artifactType"], sbom.artifact_type);
        assert_eq!(artifact["subject"]["digest"], m[0]["digest"]);
        assert_eq!(artifact["subject"]["size"], m[0]["size"]);
        assert_eq!(
            artifact["config"]["mediaType"],
            "application/vnd.oci.empty.v1+json"
        );
        let cfg = artifact["config"]["digest"].as_str().unwrap();
        assert_eq!(
            std::fs::read(out.join("blobs/sha256").join(&cfg[7..])).unwrap(),
            b"{}"
        );
        let layer = &artifact["layers"][0];
        assert_eq!(layer["mediaType"], sbom.artifact_type);
        let hex = layer["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap();
        assert_eq!(
            std::fs::read(out.join("blobs/sha256").join(hex)).unwrap(),
            sbom.bytes
        );
        // The image is still the one image of the layout.
        let back = SourceImage::open(&r).await.unwrap();
        assert_eq!(back.id(), packed.id());
    }
    let archive: ImageRef = format!("oci-archive:{}", tmp.path().join("a.tar").display())
        .parse()
        .unwrap();
    packed
        .write_with_referrers(&archive, &WriteOptions::default(), &[sbom])
        .await
        .unwrap();
    assert_eq!(SourceImage::open(&archive).await.unwrap().id(), packed.id());
}

/// Generated files: their bytes replace the source's, with the source entry's metadata; a
/// generated hardlink target does not take its other names along (they keep the source's
/// bytes); the result is deterministic; a generated path that is not a file is refused.
#[tokio::test]
async fn pack_writes_generated_files_with_source_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let (img, view) = base_oci_view(tmp.path(), Compression::None).await;
    let mut options = PackOptions::default();
    options
        .generated
        .insert(p("/etc/passwd"), b"pruned\n".to_vec());
    options.generated.insert(p("/usr/bin/app"), b"gen".to_vec());
    let keep = [p("/usr/bin/app2")];
    let a = pack(&view, &img, &keep, &options).unwrap();
    let b = pack(&view, &img, &keep, &options).unwrap();
    assert_eq!(a.id(), b.id());
    let plain = pack(&view, &img, &keep, &PackOptions::default()).unwrap();
    assert_ne!(a.id(), plain.id());
    let mut found = std::collections::BTreeMap::new();
    let mut ar = tar::Archive::new(std::fs::File::open(a.layer_path()).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let kind = e.header().entry_type();
        let mode = e.header().mode().unwrap();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        found.insert(name, (kind, mode, data));
    }
    let passwd = &found["etc/passwd"];
    assert_eq!(passwd.0, tar::EntryType::Regular);
    assert_eq!(passwd.2, b"pruned\n");
    assert_eq!(passwd.1, view.entry(&p("/etc/passwd")).unwrap().mode);
    assert_eq!(found["usr/bin/app"].2, b"gen");
    let app2 = &found["usr/bin/app2"];
    assert_eq!(
        app2.0,
        tar::EntryType::Regular,
        "not a link to the generated file"
    );
    assert_eq!(app2.2, view.read(&p("/usr/bin/app2"), None).unwrap());
    assert_ne!(app2.2, b"gen");
    let mut bad = PackOptions::default();
    bad.generated.insert(p("/usr/bin"), b"x".to_vec());
    let err = pack(&view, &img, &keep, &bad).unwrap_err().to_string();
    assert!(err.contains("/usr/bin: generated content"), "{err}");
}
