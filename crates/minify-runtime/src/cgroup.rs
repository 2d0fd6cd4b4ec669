//! The cgroup directories Docker makes for a `CgroupParent`, and removing them afterwards.
//!
//! With the cgroupfs driver on a cgroup v1/v2 hybrid host, Docker 20.10 creates
//! `/sys/fs/cgroup/<controller>/<parent>/<id>` for every v1 controller (and runc puts the
//! process in `/<parent>/<id>` of the v2 tree). runc removes the `<id>` leaves with the
//! container; the `<parent>` directories stay behind forever unless someone removes them.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The root of the cgroup mounts.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Problems with a cgroup parent name or its directories.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The name would leave the cgroup tree or is not a plain relative name.
    #[error(
        "cgroup parent {name:?} is not a plain relative cgroup name (no `..`, no leading `/`, no empty components)"
    )]
    BadName { name: String },
    /// A directory could not be removed (still busy after the container was removed).
    #[error("cannot remove cgroup directory {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Check that `name` is a relative cgroup path that stays inside the tree: components are
/// non-empty, not `.`/`..`. The name ends up in `rmdir` calls as root, so this is the guard
/// against removing anything but our own directory.
pub fn validate_cgroup_parent(name: &str) -> Result<(), CgroupError> {
    let ok = !name.is_empty()
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'));
    if ok {
        Ok(())
    } else {
        Err(CgroupError::BadName {
            name: name.to_owned(),
        })
    }
}

/// Remove `/sys/fs/cgroup/<controller>/<parent>` for every v1 controller mount (everything
/// under `/sys/fs/cgroup` but the v2 `unified` mount), deepest component first, only where
/// empty (`rmdir`, never recursive). Missing directories are fine. Retries briefly, because
/// runc's removal of the container's leaf can lag the API's answer.
pub fn remove_v1_controller_dirs(parent: &str) -> Result<(), CgroupError> {
    validate_cgroup_parent(parent)?;
    remove_v1_under(Path::new(CGROUP_ROOT), parent)
}

fn remove_v1_under(root: &Path, parent: &str) -> Result<(), CgroupError> {
    let Ok(mounts) = std::fs::read_dir(root) else {
        return Ok(());
    };
    let mut first_error = None;
    for m in mounts.flatten() {
        let name = m.file_name();
        if name == "unified" || !m.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        // Remove `<parent>` then each ancestor component that is ours (a/b/c: a/b/c, a/b, a).
        let comps: Vec<&str> = parent.split('/').collect();
        for depth in (1..=comps.len()).rev() {
            let dir = m.path().join(comps[..depth].join("/"));
            if let Err(e) = rmdir_retry(&dir)
                && first_error.is_none()
            {
                first_error = Some(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn rmdir_retry(dir: &Path) -> Result<(), CgroupError> {
    let mut last = None;
    for _ in 0..20 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(CgroupError::Remove {
                    path: dir.to_owned(),
                    source: e,
                });
            }
        }
    }
    Err(CgroupError::Remove {
        path: dir.to_owned(),
        source: last.unwrap_or_else(|| std::io::Error::other("busy")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["minify-ab12", "minify/x", "a.b"] {
            validate_cgroup_parent(good).unwrap();
        }
        for bad in ["", "/abs", "..", "a/../b", "a//b", "./a", "a/"] {
            assert!(validate_cgroup_parent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn removes_only_empty_dirs_outside_unified() {
        let tmp = std::env::temp_dir().join(format!("minify-cg-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        for ctrl in ["memory", "pids", "unified"] {
            std::fs::create_dir_all(tmp.join(ctrl).join("p/q")).unwrap();
        }
        // A file makes `pids/p/q` non-empty: rmdir must refuse, never recurse.
        std::fs::write(tmp.join("pids/p/q/keep"), b"x").unwrap();
        let err = remove_v1_under(&tmp, "p/q").unwrap_err();
        assert!(err.to_string().contains("pids/p/q"), "{err}");
        assert!(!tmp.join("memory/p").exists());
        assert!(tmp.join("pids/p/q/keep").exists());
        assert!(tmp.join("unified/p/q").exists());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
