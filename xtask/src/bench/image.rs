//! `cargo xtask bench image`: TODO (owned by the image area; results in bench/results/image.md via
//! `super::write_results("image", ..)`).

pub fn run() -> anyhow::Result<()> {
    anyhow::bail!("the image benchmarks are not written yet (TODO in xtask/src/bench/image.rs)")
}
