//! How minify-runtime records and finds the owner of what it makes: the container label, and
//! the running `minify` processes for resources made before owners were recorded. The owner
//! record itself ([`Owner`]) lives in minify-model, shared with minify-image's temporary
//! directories.

pub use minify_model::owner::{BadOwner, Liveness, Owner};

/// The label holding a container's [`Owner`] (value: [`Owner`]'s text form).
pub const OWNER_LABEL: &str = "org.minify.owner";

/// Other running processes whose program is named `minify*` (this process excluded), as
/// `(pid, program path)`. For resources made before owners were recorded: while any of these
/// runs, one of them may be the maker.
pub fn other_minify_processes() -> Vec<(u32, String)> {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<(u32, String)> = rd
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            if pid == me {
                return None;
            }
            let exe = std::fs::read_link(e.path().join("exe")).ok()?;
            let name = exe.file_name()?.to_string_lossy().into_owned();
            name.starts_with("minify")
                .then(|| (pid, exe.display().to_string()))
        })
        .collect();
    out.sort();
    out
}
