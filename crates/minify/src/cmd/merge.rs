//! `minify merge A.json B.json... -o OUT.json`: the union of several runs' allowlists.

use anyhow::Context as _;
use minify_model::Allowlist;

use crate::cli::MergeArgs;

pub fn run(args: &MergeArgs) -> anyhow::Result<u8> {
    let mut items = Vec::new();
    for path in &args.inputs {
        let text = minify_model::input::read_text(path, minify_model::input::INPUT_LIMIT)?;
        let name = path.display().to_string();
        let al = Allowlist::from_json(&name, &text)?;
        items.push((name, al));
    }
    let merged = Allowlist::merge(&items)?;
    crate::files::write_atomic(&args.output, merged.to_json().as_bytes())
        .with_context(|| format!("writing {}", args.output.display()))?;
    errln!(
        "minify: merged {} allowlists into {} ({} paths)",
        items.len(),
        args.output.display(),
        merged.paths.len()
    );
    Ok(0)
}
