//! `cargo xtask bench run`: TODO (owned by the run area; results in bench/results/run.md via
//! `super::write_results("run", ..)`).

pub fn run() -> anyhow::Result<()> {
    anyhow::bail!("the run benchmarks are not written yet (TODO in xtask/src/bench/run.rs)")
}
