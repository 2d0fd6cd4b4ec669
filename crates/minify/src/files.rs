//! Files the commands write next to their images (reports, allowlists, traces): whole or
//! not at all.

/// Write a file through a temporary sibling and a rename, so a reader (or a crash) never
/// sees half of it.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.minify-tmp-{}", std::process::id()));
    fs_err::write(&tmp, bytes)?;
    fs_err::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
