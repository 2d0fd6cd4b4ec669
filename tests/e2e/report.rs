//! The `--report` of a run into an OCI layout with `--compression zstd`: its whole shape as an
//! insta snapshot (digests, times, sizes and temp paths filtered out, so a changed field,
//! a renamed key or a new one shows in review), and its numbers against the OCI files
//! themselves. The layout is then turned into a `docker load`able archive by hand (not by
//! minify) and run: the image written is the image verified, and it works.

use std::path::Path;
use std::process::Command;

use minify_fixtures::{TestContext, fixture};

use crate::common::{minify, run};
use crate::run::serial_if_run;

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs_err::read(path).unwrap()).unwrap()
}

fn sha256(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(o.status.success());
    format!(
        "sha256:{}",
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap()
    )
}

#[test]
fn oci_zstd_output_report_shape_and_values() {
    let Some(_serial) = serial_if_run() else {
        return;
    };
    let image = fixture("static").unwrap();
    let ctx = TestContext::new().unwrap();
    let tmp = ctx.temp_dir();
    let layout = tmp.join("layout");
    let report_path = tmp.join("report.json");
    let o = run(minify()
        .args(["run", &image, "--probe-http", "/", "--compression", "zstd"])
        .arg("-o")
        .arg(format!("oci:{}:min", layout.display()))
        .arg("--report")
        .arg(&report_path));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let text = fs_err::read_to_string(&report_path).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();

    // The OCI files, read here: index -> manifest -> config and one zstd layer.
    let blob = |digest: &str| layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
    let index = json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index:#}");
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        "min"
    );
    let manifest_digest = manifests[0]["digest"].as_str().unwrap();
    assert_eq!(sha256(&blob(manifest_digest)), manifest_digest);
    let manifest = json(&blob(manifest_digest));
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    assert_eq!(sha256(&blob(config_digest)), config_digest);
    let config = json(&blob(config_digest));
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest:#}");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let layer_digest = layers[0]["digest"].as_str().unwrap();
    let layer_blob = blob(layer_digest);
    assert_eq!(sha256(&layer_blob), layer_digest);
    let stored = fs_err::metadata(&layer_blob).unwrap().len();
    assert_eq!(layers[0]["size"], stored);
    let head = fs_err::read(&layer_blob).unwrap();
    assert_eq!(&head[..4], b"\x28\xb5\x2f\xfd", "not a zstd frame");
    // Decompressed by the zstd tool, the layer is the one the config's diff_id names.
    let tar_path = tmp.join("layer.tar");
    let st = Command::new("zstd")
        .args(["-q", "-d", "-o"])
        .arg(&tar_path)
        .arg(&layer_blob)
        .status()
        .unwrap();
    assert!(st.success(), "zstd -d");
    assert_eq!(sha256(&tar_path), config["rootfs"]["diff_ids"][0]);

    // The report's numbers are those of the files.
    assert_eq!(r["output_id"], config_digest, "{r:#}");
    assert_eq!(r["output_layer_media"], "tar+zstd", "{r:#}");
    assert_eq!(r["output_layer_bytes"], stored, "{r:#}");
    assert_eq!(r["verified_image_id"], config_digest, "{r:#}");
    assert_eq!(
        r["size_before"],
        minify_fixtures::image_size(&image).unwrap(),
        "{r:#}"
    );
    // The copy verified is gone.
    let copy = r["verified_image"].as_str().unwrap();
    assert!(!minify_fixtures::image_exists(copy), "{copy} left behind");

    // A docker-archive made here from those files loads under the config's digest (Docker
    // checks the layer against the diff_id) and serves.
    let archive_dir = tmp.join("archive");
    fs_err::create_dir_all(&archive_dir).unwrap();
    fs_err::copy(blob(config_digest), archive_dir.join("config.json")).unwrap();
    fs_err::rename(&tar_path, archive_dir.join("layer.tar")).unwrap();
    fs_err::write(
        archive_dir.join("manifest.json"),
        r#"[{"Config":"config.json","RepoTags":null,"Layers":["layer.tar"]}]"#,
    )
    .unwrap();
    let archive = tmp.join("by-hand.tar");
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&archive_dir)
        .args(["manifest.json", "config.json", "layer.tar"])
        .status()
        .unwrap();
    assert!(st.success());
    // Remove it afterwards only if this test brought it (another test may hold that id).
    let existed = minify_fixtures::image_exists(config_digest);
    let loaded = crate::run::docker_load(&archive);
    if !existed {
        ctx.track_image(&loaded);
    }
    assert_eq!(loaded, config_digest);
    minify_fixtures::check_fixture("static", &loaded).unwrap();

    // The shape, for review: every key, with the values that do not vary between runs.
    let tmp_text = tmp.display().to_string();
    insta::with_settings!({
        filters => vec![
            (tmp_text.as_str(), "[TMP]"),
            (r"sha256:[0-9a-f]{64}", "[DIGEST]"),
            (r"minify-verify/[0-9a-z]+:[0-9a-z-]+", "[VERIFY-COPY]"),
            (r"minify [0-9][0-9a-z.+-]*", "minify [VERSION]"),
            (r#""(size_before|size_after|kept_bytes|required_bytes|output_layer_bytes|bytes|source_bytes|removed_bytes|owned_kept_bytes|owned_removed_bytes|unowned_kept_bytes|unowned_removed_bytes|probe_phase_ms|duration_ms|after_ms|ready_ms|ready_ms_minified|events)": [0-9]+"#, r#""$1": "[N]""#),
            (r#""factor": [0-9.e+-]+"#, r#""factor": "[N]""#),
            (r#"(\n\s+"[a-z ]+",\n\s+)[0-9]+(\n\s+\])"#, "$1\"[MS]\"$2"),
            (r"172\.[0-9]+\.[0-9]+\.[0-9]+", "[IP]"),
        ],
    }, {
        insta::assert_snapshot!("report_oci_zstd_static", text);
    });
}
