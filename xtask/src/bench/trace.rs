//! `cargo xtask bench trace`: TODO (owned by the trace area; results in bench/results/trace.md via
//! `super::write_results("trace", ..)`).

pub fn run() -> anyhow::Result<()> {
    anyhow::bail!("the trace benchmarks are not written yet (TODO in xtask/src/bench/trace.rs)")
}
