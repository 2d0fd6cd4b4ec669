//! tracefs: make sure it is mounted, and read tracepoint record layouts from
//! `events/<category>/<name>/format` (field offsets change across kernels and arches).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::TraceError;

/// Where tracefs lives on current kernels.
pub(crate) const TRACEFS: &str = "/sys/kernel/tracing";

/// Whether tracefs is mounted at [`TRACEFS`] (from the mount table: its directory is
/// root-only, so looking inside says nothing to an unprivileged caller).
pub(crate) fn is_mounted() -> bool {
    if Path::new(TRACEFS).join("events").is_dir() {
        return true;
    }
    minify_host::mountinfo::mounts()
        .iter()
        .any(|m| m.fstype == "tracefs" && m.point == Path::new(TRACEFS))
}

/// Mount tracefs at [`TRACEFS`] when it is missing (a fresh machine has it unmounted).
/// Returns whether it mounted it.
pub(crate) fn ensure_mounted(allow_mount: bool) -> Result<bool, TraceError> {
    if is_mounted() {
        return Ok(false);
    }
    if !allow_mount {
        return Err(TraceError::NoTracefs {
            detail: "not mounted".into(),
        });
    }
    nix::mount::mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| TraceError::NoTracefs {
        detail: format!("mounting it failed: {e}"),
    })?;
    tracing::info!(
        "mounted tracefs at {TRACEFS} (it was not mounted; needed to attach tracepoints)"
    );
    Ok(true)
}

/// A tracepoint's record layout.
#[derive(Debug, Clone)]
pub(crate) struct Format {
    pub(crate) path: PathBuf,
    /// Field name -> byte offset in the record.
    pub(crate) fields: HashMap<String, u32>,
}

impl Format {
    /// Read `events/<category>/<name>/format`; `Ok(None)` when the tracepoint does not exist
    /// on this kernel/arch (e.g. `sys_enter_open` on arm64).
    pub(crate) fn read(category: &str, name: &str) -> Result<Option<Format>, TraceError> {
        let path = Path::new(TRACEFS)
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        match fs_err::read_to_string(&path) {
            Ok(text) => Format::parse(&path, &text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TraceError::from_io(
                format!("reading {}", path.display()),
                e,
            )),
        }
    }

    pub(crate) fn parse(path: &Path, text: &str) -> Result<Format, TraceError> {
        let mut has_id = false;
        let mut fields = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(v) = line.strip_prefix("ID:") {
                has_id = v.trim().parse::<u32>().is_ok();
            } else if let Some(rest) = line.strip_prefix("field:") {
                // `field:const char * filename;	offset:24;	size:8;	signed:0;`
                let mut parts = rest.split(';');
                let decl = parts.next().unwrap_or("").trim();
                let name = decl
                    .rsplit(|c: char| c.is_whitespace() || c == '*')
                    .next()
                    .unwrap_or("")
                    .split('[')
                    .next()
                    .unwrap_or("");
                let offset = parts.find_map(|p| {
                    p.trim()
                        .strip_prefix("offset:")
                        .and_then(|v| v.parse().ok())
                });
                if let (false, Some(off)) = (name.is_empty(), offset) {
                    fields.insert(name.to_owned(), off);
                }
            }
        }
        // A real format file always has its event id; without one this is not a format file.
        if !has_id {
            return Err(TraceError::Format {
                path: path.into(),
                detail: "no ID line".into(),
            });
        }
        Ok(Format {
            path: path.into(),
            fields,
        })
    }

    /// Offset of a field that must exist.
    pub(crate) fn field(&self, name: &str) -> Result<u32, TraceError> {
        self.fields
            .get(name)
            .copied()
            .ok_or_else(|| TraceError::Format {
                path: self.path.clone(),
                detail: format!("no field {name:?}"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openat_format() {
        let text = "name: sys_enter_openat\nID: 782\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
            \tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;\n\
            \tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n\
            \tfield:char comm[16];\toffset:40;\tsize:16;\tsigned:0;\n\
            \tfield:__data_loc char[] parent_comm;\toffset:56;\tsize:4;\tsigned:0;\n";
        let f = Format::parse(Path::new("f"), text).unwrap();
        assert_eq!(f.field("dfd").unwrap(), 16);
        assert_eq!(f.field("filename").unwrap(), 24);
        assert_eq!(f.field("comm").unwrap(), 40);
        assert_eq!(f.field("parent_comm").unwrap(), 56);
        assert!(f.field("mode").is_err());
        assert!(Format::parse(Path::new("f"), "format:\n").is_err());
    }
}
