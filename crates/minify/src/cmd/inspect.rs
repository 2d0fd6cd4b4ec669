//! `minify inspect IMAGE [--json]`: size, how it runs, layers, file count and the largest
//! directories of an image, read the same way `minify build` reads it (so every digest is
//! checked too).

use std::fmt::Write as _;

use minify_image::ImageRef;
use serde_json::json;

use crate::cli::InspectArgs;
use crate::report::human_bytes;

/// How many directories the report lists.
const TOP_DIRS: usize = 10;

pub fn run(args: &InspectArgs) -> anyhow::Result<u8> {
    let reference = args
        .image
        .parse::<ImageRef>()?
        .with_access(&args.registry.access());
    let (image, view) =
        crate::cmd::block_on_interruptible(crate::pipeline::open::open_image(&reference))?;
    let dirs = view.largest_dirs(TOP_DIRS);
    let c = image.config();
    if args.json {
        let doc = json!({
            "image": reference.to_string(),
            "id": image.id().as_str(),
            "repo_tags": image.repo_tags(),
            "size": image.size(),
            "content_size": view.content_size(),
            "entries": view.entry_count(),
            "files": view.file_count(),
            "layers": view.layer_stats().iter().map(|l| json!({
                "digest": l.digest.as_str(),
                "diff_id": l.diff_id.as_str(),
                "compression": l.compression.to_string(),
                "size": l.size,
                "uncompressed_size": l.uncompressed_size,
                "entries": l.entries,
            })).collect::<Vec<_>>(),
            "largest_dirs": dirs.iter().map(|d| json!({
                "path": d.path.as_str(), "bytes": d.bytes, "files": d.files,
            })).collect::<Vec<_>>(),
            "config": {
                "entrypoint": c.entrypoint, "cmd": c.cmd, "env": c.env,
                "working_dir": c.working_dir, "user": c.user,
                "exposed_ports": c.exposed_ports, "stop_signal": c.stop_signal,
                "labels": c.labels, "healthcheck": c.healthcheck,
            },
        });
        outln!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(0);
    }
    let mut s = String::new();
    let _ = writeln!(s, "image    {reference}");
    let _ = writeln!(s, "id       {}", image.id());
    if !image.repo_tags().is_empty() {
        let _ = writeln!(s, "tags     {}", image.repo_tags().join(", "));
    }
    let _ = writeln!(
        s,
        "size     {} stored, {} of file content",
        human_bytes(image.size()),
        human_bytes(view.content_size())
    );
    let _ = writeln!(
        s,
        "files    {} ({} entries)",
        view.file_count(),
        view.entry_count()
    );
    let run_argv: Vec<&String> = c.entrypoint.iter().chain(&c.cmd).collect();
    if !run_argv.is_empty() {
        let _ = writeln!(s, "runs     {}", serde_json::to_string(&run_argv)?);
    }
    let as_user = if c.user.is_empty() { "root" } else { &c.user };
    let dir = if c.working_dir.is_empty() {
        "/"
    } else {
        &c.working_dir
    };
    let _ = writeln!(s, "as       user {as_user} in {dir}");
    if !c.exposed_ports.is_empty() {
        let _ = writeln!(s, "ports    {}", c.exposed_ports.join(", "));
    }
    if !c.healthcheck.is_empty() {
        let _ = writeln!(s, "health   {}", c.healthcheck.join(" "));
    }
    let _ = writeln!(s, "layers   {}", view.layer_stats().len());
    for l in view.layer_stats() {
        let _ = writeln!(
            s,
            "  {:>2}  {}  {:>10}  {:<8}  {} entries",
            l.index,
            l.digest,
            human_bytes(l.size),
            l.compression.to_string(),
            l.entries
        );
    }
    let _ = writeln!(s, "largest directories");
    for d in &dirs {
        let _ = writeln!(
            s,
            "  {:>10}  {:>7} {}  {}",
            human_bytes(d.bytes),
            d.files,
            if d.files == 1 { "file " } else { "files" },
            d.path
        );
    }
    out!("{s}");
    Ok(0)
}
