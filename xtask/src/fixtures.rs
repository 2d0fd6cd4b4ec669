//! `cargo xtask fixtures [NAMES...] [--check]`: build or reuse fixture images, optionally prove
//! each answers its probe.

use std::time::Instant;

use anyhow::Context;
use minify_fixtures::{FIXTURES, check_fixture, fixture, image_size};

use crate::util::{mb, step};

pub fn run(names: &[String], check: bool) -> anyhow::Result<()> {
    let names: Vec<&str> = if names.is_empty() {
        FIXTURES.to_vec()
    } else {
        names.iter().map(String::as_str).collect()
    };
    step(&format!("fixture images: {}", names.join(", ")));
    for name in &names {
        let start = Instant::now();
        let image = fixture(name)?;
        let size = image_size(&image)?;
        let probe = if check {
            check_fixture(name, &image)
                .with_context(|| format!("fixture {name} failed its probe"))?
        } else {
            String::new()
        };
        eprintln!(
            "    {image:<36} {:>10}  ({:.1}s) {probe}",
            mb(size),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
