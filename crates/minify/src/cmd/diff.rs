//! `minify diff SOURCE OUTPUT [--json]`: what OUTPUT keeps of every package of SOURCE (any
//! two images, e.g. one and its minified form), largest removals first, with totals over
//! every file of SOURCE once. Both images are read the way `minify build` reads them; the
//! package model is SOURCE's ([`minify_packages`]), and a file counts as kept when OUTPUT has
//! a non-directory entry at its path. Bytes are SOURCE's (a pruned database file OUTPUT holds
//! counts with its source size; OUTPUT's own content size is printed beside).

use std::fmt::Write as _;

use minify_image::ImageRef;
use minify_model::Rootfs as _;
use serde_json::json;

use crate::cli::DiffArgs;
use crate::escape::terminal_safe;
use crate::report::{PackageKept, human_bytes, package_audit};

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

pub fn run(args: &DiffArgs) -> anyhow::Result<u8> {
    let src_ref: ImageRef = args.source.parse()?;
    let out_ref: ImageRef = args.output.parse()?;
    let ((src, src_view), (out, out_view)) = crate::cmd::block_on_interruptible(async {
        let a = crate::pipeline::open::open_image(&src_ref).await?;
        let b = crate::pipeline::open::open_image(&out_ref).await?;
        anyhow::Ok((a, b))
    })?;
    let db = minify_packages::PackageDb::read(&src_view);
    let kept = |p: &minify_model::ImagePath| out_view.entry(p).is_some_and(|e| !e.is_dir());
    let (accounts, totals) = minify_packages::account(&src_view, &db, &kept);
    let (packages, t) = package_audit(&db, &accounts, &totals, &[]);
    if args.json {
        let doc = json!({
            "source": src_ref.to_string(),
            "source_id": src.id().as_str(),
            "output": out_ref.to_string(),
            "output_id": out.id().as_str(),
            "output_files": out_view.file_count(),
            "output_bytes": out_view.content_size(),
            "packages": packages,
            "totals": t,
            "warnings": db.warnings,
        });
        outln!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(0);
    }
    let mut s = String::new();
    let _ = writeln!(s, "source   {src_ref} ({})", src.id());
    let _ = writeln!(s, "output   {out_ref} ({})", out.id());
    let _ = writeln!(
        s,
        "{:<8} {:<6} {:<32} {:<24} {:>10} {:>10} {:>8}",
        "STATE", "KIND", "NAME", "VERSION", "KEPT", "REMOVED", "LOST"
    );
    let row = |s: &mut String, p: &PackageKept| {
        let _ = writeln!(
            s,
            "{:<8} {:<6} {:<32} {:<24} {:>10} {:>10} {:>8}",
            p.state,
            p.kind,
            terminal_safe(&p.name),
            terminal_safe(&p.version),
            human_bytes(p.kept_bytes),
            human_bytes(p.removed_bytes),
            if p.state == "partial" {
                format!("{} files", p.removed_files)
            } else {
                String::new()
            }
        );
    };
    for p in &packages {
        row(&mut s, p);
    }
    let _ = writeln!(
        s,
        "packages {} whole, {} partial, {} absent (of {})",
        t.whole, t.partial, t.absent, t.packages
    );
    let _ = writeln!(
        s,
        "source   {} files, {}",
        t.source_files,
        human_bytes(t.source_bytes)
    );
    let _ = writeln!(
        s,
        "kept     {} files, {} ({:.1}%: {} of packages, {} of no package)",
        t.kept_files,
        human_bytes(t.kept_bytes),
        percent(t.kept_bytes, t.source_bytes),
        human_bytes(t.owned_kept_bytes),
        human_bytes(t.unowned_kept_bytes)
    );
    let _ = writeln!(
        s,
        "removed  {} files, {} ({:.1}%: {} of packages, {} of no package)",
        t.removed_files,
        human_bytes(t.removed_bytes),
        percent(t.removed_bytes, t.source_bytes),
        human_bytes(t.owned_removed_bytes),
        human_bytes(t.unowned_removed_bytes)
    );
    let _ = writeln!(
        s,
        "output   {} files, {} of its own content",
        out_view.file_count(),
        human_bytes(out_view.content_size())
    );
    for w in &db.warnings {
        let _ = writeln!(s, "warning  {}", terminal_safe(w));
    }
    out!("{s}");
    Ok(0)
}
