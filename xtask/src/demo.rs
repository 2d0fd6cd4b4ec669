//! `cargo xtask demo`: set up, build the nginx fixture, minify it end to end with `minify run`,
//! and show both images side by side.

use std::process::Command;

use anyhow::{Context, bail};
use minify_fixtures::{docker_run_http_check, fixture, image_exists, image_size};

use crate::util::{cargo, mb, run_status, step, workspace_root};

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;
    let image = fixture("nginx")?;
    let minified = format!("{image}-min");

    step("building minify");
    run_status(
        Command::new(cargo())
            .current_dir(workspace_root())
            .args(["build", "-p", "minify"]),
    )?;
    let minify = crate::util::target_dir().join("debug/minify");

    // --force: the demo is re-runnable, and replaces its own previous output.
    let args = [
        "run",
        &image,
        "--probe-http",
        "/",
        "--tag",
        &minified,
        "--force",
    ];
    step(&format!("minify {}", args.join(" ")));
    let status = Command::new(&minify)
        .args(args)
        .status()
        .with_context(|| format!("while starting {}", minify.display()))?;
    // Exit 1 means "minified, but verification failed": still show what was made.
    let verify_failed = status.code() == Some(1) && image_exists(&minified);
    if !(status.success() || verify_failed) {
        bail!("`minify run {image}` failed ({status})");
    }

    for img in [&image, &minified] {
        step(&format!("minify inspect {img}"));
        run_status(Command::new(&minify).args(["inspect", img]))?;
    }

    if status.success() {
        step("the minified image still serves");
        let answer = docker_run_http_check(&minified, 80)?;
        eprintln!("    GET / on {minified} -> HTTP {}", answer.status);
    }

    let before = image_size(&image)?;
    let after = image_size(&minified)?;
    step("before / after");
    println!("{image:<32} {:>10}", mb(before));
    println!("{minified:<32} {:>10}", mb(after));
    println!(
        "{:<32} {:>9.1}x smaller",
        "",
        before as f64 / after.max(1) as f64
    );
    if !status.success() {
        bail!("the minified image failed verification (minify run: {status}); see above");
    }
    Ok(())
}
