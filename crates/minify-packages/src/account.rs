//! What an output keeps of each unit: files and bytes kept and removed, per unit and in
//! total, with every path counted once in the totals.
//!
//! "Files" are non-directory entries (regular files, links, device nodes), as a package's file
//! list counts them; "bytes" are regular file content only (a hardlink's bytes are its
//! target's, counted once there), so the totals' bytes add up to the source's content size.
//! A path owned by two units (a JDK home inside its deb) counts in both units' entries and
//! once in the totals. Links to directories are nobody's here (see [`PackageDb::owners`]).

use std::collections::HashSet;

use minify_model::{EntryKind, ImagePath, Rootfs};

use crate::{PackageDb, PackageId};

/// How much of a unit an output holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// None of its files.
    Absent,
    /// Some of its files.
    Partial,
    /// All of its files.
    Whole,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Absent => "absent",
            State::Partial => "partial",
            State::Whole => "whole",
        }
    }
}

/// One unit's files in an output, measured in the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: PackageId,
    pub kept_files: usize,
    /// Source bytes of its kept regular files.
    pub kept_bytes: u64,
    pub removed_files: usize,
    pub removed_bytes: u64,
    pub state: State,
}

/// Every non-directory entry of the source, once: owned by some unit or by none, kept or
/// removed. `kept_bytes + removed_bytes` of both halves is the source's content size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub owned_kept_files: usize,
    pub owned_kept_bytes: u64,
    pub owned_removed_files: usize,
    pub owned_removed_bytes: u64,
    pub unowned_kept_files: usize,
    pub unowned_kept_bytes: u64,
    pub unowned_removed_files: usize,
    pub unowned_removed_bytes: u64,
}

impl Totals {
    /// Non-directory entries of the source.
    pub fn source_files(&self) -> usize {
        self.owned_kept_files
            + self.owned_removed_files
            + self.unowned_kept_files
            + self.unowned_removed_files
    }
    /// Regular file bytes of the source.
    pub fn source_bytes(&self) -> u64 {
        self.kept_bytes() + self.removed_bytes()
    }
    pub fn kept_bytes(&self) -> u64 {
        self.owned_kept_bytes + self.unowned_kept_bytes
    }
    pub fn removed_bytes(&self) -> u64 {
        self.owned_removed_bytes + self.unowned_removed_bytes
    }
    pub fn kept_files(&self) -> usize {
        self.owned_kept_files + self.unowned_kept_files
    }
    pub fn removed_files(&self) -> usize {
        self.owned_removed_files + self.unowned_removed_files
    }
}

/// Bytes of the entry at `p` if it is a regular file (hardlinks count 0: their content is
/// counted at their target).
pub(crate) fn file_bytes(fs: &dyn Rootfs, p: &ImagePath) -> u64 {
    fs.entry(p)
        .filter(|e| matches!(e.kind, EntryKind::File))
        .map_or(0, |e| e.size)
}

/// Account every unit of `db` (read from `fs`, the source) against an output that holds the
/// non-directory entries for which `kept` is true. One [`Account`] per unit, in database
/// order, and the totals over every non-directory entry of `fs`.
pub fn account(
    fs: &dyn Rootfs,
    db: &PackageDb,
    kept: &dyn Fn(&ImagePath) -> bool,
) -> (Vec<Account>, Totals) {
    let mut owned: HashSet<&ImagePath> = HashSet::new();
    let mut accounts = Vec::with_capacity(db.packages.len());
    for (id, pkg) in db.packages.iter().enumerate() {
        let mut a = Account {
            id,
            kept_files: 0,
            kept_bytes: 0,
            removed_files: 0,
            removed_bytes: 0,
            state: State::Absent,
        };
        // A link to a directory (`/lib -> usr/lib`) is listed by many packages and tells
        // nothing about any one of them: not counted (it is in the totals, as unowned).
        for f in pkg.files.iter().filter(|f| !db.owners(f).is_empty()) {
            owned.insert(f);
            let bytes = file_bytes(fs, f);
            if kept(f) {
                a.kept_files += 1;
                a.kept_bytes += bytes;
            } else {
                a.removed_files += 1;
                a.removed_bytes += bytes;
            }
        }
        a.state = match (a.kept_files, a.removed_files) {
            (0, _) => State::Absent,
            (_, 0) => State::Whole,
            _ => State::Partial,
        };
        accounts.push(a);
    }
    let mut t = Totals::default();
    for p in fs.paths() {
        let Some(e) = fs.entry(&p) else { continue };
        if e.is_dir() {
            continue;
        }
        let bytes = if matches!(e.kind, EntryKind::File) {
            e.size
        } else {
            0
        };
        match (owned.contains(&p), kept(&p)) {
            (true, true) => {
                t.owned_kept_files += 1;
                t.owned_kept_bytes += bytes;
            }
            (true, false) => {
                t.owned_removed_files += 1;
                t.owned_removed_bytes += bytes;
            }
            (false, true) => {
                t.unowned_kept_files += 1;
                t.unowned_kept_bytes += bytes;
            }
            (false, false) => {
                t.unowned_removed_files += 1;
                t.unowned_removed_bytes += bytes;
            }
        }
    }
    (accounts, t)
}
