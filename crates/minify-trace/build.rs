//! Builds the eBPF programs (`ebpf/minify-trace-ebpf`, nightly + bpf-linker) with aya-build
//! and leaves the object in `OUT_DIR/minify-trace-ebpf` for `include_bytes!`.
//! `AYA_BUILD_SKIP=1` skips it (for machines without the eBPF toolchain): the crate then
//! builds with an empty object and `Tracer::start` reports that.

use std::path::PathBuf;

fn main() -> aya_build::Result<()> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest
        .join("../../ebpf/minify-trace-ebpf")
        .canonicalize()?;
    let common = manifest.join("../minify-trace-common/src").canonicalize()?;
    println!("cargo:rerun-if-changed={}", root.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.toml").display()
    );
    println!("cargo:rerun-if-changed={}", common.display());
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("minify-trace-ebpf");
    let skip =
        std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        std::fs::write(&out, b"")?;
    }
    // `cargo build --package` must run inside the eBPF crate's own workspace.
    std::env::set_current_dir(&root)?;
    let root_str = root.to_string_lossy().into_owned();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "minify-trace-ebpf",
            root_dir: &root_str,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
