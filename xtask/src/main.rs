//! `cargo xtask`: set-up, fixture images, benchmarks, CI entry.
fn main() {}
