//! Reading a small input file a user names (an allowlist, a report to merge) safely: only a
//! regular file, never blocking in `open()` on a FIFO, and never more than a stated limit.
//!
//! `--allowlist /dev/zero` grew until the OOM killer and `--allowlist FIFO` blocked in
//! `open()` ignoring SIGINT (issue 12). The path is the user's own, so symlinks are
//! followed; what it ends at must be a regular file of at most `limit` bytes.

use std::fmt;
use std::io::{self, Read as _};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// The most an allowlist (or another JSON input of minify's own) may weigh: an allowlist
/// line is about 100 bytes, so this is some 600,000 paths.
pub const INPUT_LIMIT: u64 = 64 << 20;

/// Why an input file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Opening or reading failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// Not a regular file (a FIFO, a device, a socket, a directory).
    #[error("{path}: is {kind}, not a regular file")]
    NotRegular { path: PathBuf, kind: FileKind },
    /// Bigger than the limit.
    #[error("{path}: more than the limit of {limit} bytes for this input")]
    TooBig { path: PathBuf, limit: u64 },
    /// Not UTF-8 text.
    #[error("{path}: not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 { path: PathBuf, offset: usize },
}

/// What a non-regular file is, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
    Symlink,
    Other,
}

impl FileKind {
    /// The kind of a file type; `None` for a regular file.
    pub fn of(t: std::fs::FileType) -> Option<FileKind> {
        Some(if t.is_file() {
            return None;
        } else if t.is_dir() {
            FileKind::Directory
        } else if t.is_fifo() {
            FileKind::Fifo
        } else if t.is_char_device() {
            FileKind::CharDevice
        } else if t.is_block_device() {
            FileKind::BlockDevice
        } else if t.is_socket() {
            FileKind::Socket
        } else if t.is_symlink() {
            FileKind::Symlink
        } else {
            FileKind::Other
        })
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Directory => "a directory",
            FileKind::Fifo => "a FIFO",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Socket => "a socket",
            FileKind::Symlink => "a symbolic link",
            FileKind::Other => "not a file",
        })
    }
}

/// Open a regular file without blocking: its type is checked before opening (a device is
/// never opened) and again on the open file (it may have been swapped meanwhile);
/// `O_NONBLOCK` keeps a FIFO put there in between from blocking the open.
pub fn open_regular(path: &Path) -> Result<std::fs::File, InputError> {
    let io = |source| InputError::Io {
        path: path.to_owned(),
        source,
    };
    let not_regular = |kind| InputError::NotRegular {
        path: path.to_owned(),
        kind,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if let Some(kind) = FileKind::of(meta.file_type()) {
        return Err(not_regular(kind));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if let Some(kind) = FileKind::of(meta.file_type()) {
        return Err(not_regular(kind));
    }
    Ok(file)
}

/// Linux's `O_NONBLOCK` (the same on every architecture minify builds for).
const O_NONBLOCK: i32 = 0o4000;

/// Read a regular file of at most `limit` bytes as text.
pub fn read_text(path: &Path, limit: u64) -> Result<String, InputError> {
    let file = open_regular(path)?;
    // Sized from the file once, so reading does not double the buffer past the limit.
    let claimed = file.metadata().map_or(0, |m| m.len());
    let mut bytes = Vec::with_capacity(usize::try_from(claimed.min(limit + 1)).unwrap_or(0));
    // One byte over the limit tells "too big" from "exactly the limit"; the length the
    // file claims is not trusted (procfs and sysfs files claim 0 or 4096).
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| InputError::Io {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(InputError::TooBig {
            path: path.to_owned(),
            limit,
        });
    }
    String::from_utf8(bytes).map_err(|e| InputError::NotUtf8 {
        path: path.to_owned(),
        offset: e.utf8_error().valid_up_to(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_fifos_devices_and_directories_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(ok.success());
        // Before the fix this blocked forever in open().
        let e = read_text(&fifo, INPUT_LIMIT).unwrap_err();
        assert!(
            matches!(
                e,
                InputError::NotRegular {
                    kind: FileKind::Fifo,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("is a FIFO"), "{e}");
        let e = read_text(Path::new("/dev/zero"), INPUT_LIMIT).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dev/zero: is a character device, not a regular file"
        );
        let e = read_text(dir.path(), INPUT_LIMIT).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
    }

    #[test]
    fn bounds_what_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.json");
        std::fs::write(&f, vec![b'x'; 101]).unwrap();
        let e = read_text(&f, 100).unwrap_err();
        assert!(
            e.to_string().contains("more than the limit of 100 bytes"),
            "{e}"
        );
        assert_eq!(read_text(&f, 101).unwrap().len(), 101);
        std::fs::write(&f, b"ab\xffcd").unwrap();
        let e = read_text(&f, 100).unwrap_err();
        assert!(e.to_string().contains("invalid byte at offset 2"), "{e}");
    }
}
