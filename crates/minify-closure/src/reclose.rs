//! Re-closing a kept allowlist on the image being built (`minify build`): the allowlist's
//! roots are the input, everything derived from them is computed again on this image with the
//! same [`crate::build::Builder`] `run` uses, so `run` and `build` cannot drift apart.
//!
//! Roots are the entries the workload or the user asked for: `traced` (the access kinds in
//! their detail become a synthetic trace, so exec'd programs get their ELF closure and `#!`
//! interpreters, opened ELF files their libraries, exactly as in `run`) and `include`
//! (`--include-bin NAME` again as an `include_bin` rule, other includes as the entry alone,
//! since `--include DIR` was expanded when the allowlist was made). Symlink entries are kept
//! when the image still has them: one may be the path the workload used (`/etc/localtime`),
//! which the allowlist no longer tells apart from a link met while resolving a library.
//! Everything else (`elf`, `interpreter`, `parent`, `default-set`, `package`) is derived: the
//! default sets named in the allowlist and the package rule (when it has `package` entries)
//! are run again on this image.
//!
//! On the image the allowlist was made from this gives the allowlist's own paths back, so the
//! same image and allowlist still give the same image id.

use std::collections::{BTreeMap, BTreeSet};

use minify_model::trace::TraceEvent;
use minify_model::{AccessKind, Allowlist, ImagePath, Reason, Rootfs, Trace, resolve};

use crate::{Closure, ClosureError, ClosureOptions, DefaultSet, DefaultSets, Granularity};

/// What happened to one root of the allowlist on this image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootState {
    /// The image has the path.
    Same,
    /// The path is gone; a rename rule found its successor.
    Renamed { to: ImagePath, rule: &'static str },
    /// The path is gone and no rename rule applies.
    Missing,
}

/// One root and what became of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootReport {
    pub path: ImagePath,
    pub reason: Reason,
    pub state: RootState,
}

/// The re-closed kept set and how it differs from the allowlist.
#[derive(Clone, Debug, Default)]
pub struct Reclosure {
    /// The kept set computed on this image.
    pub closure: Closure,
    /// Every root of the allowlist, sorted by path.
    pub roots: Vec<RootReport>,
    /// Paths kept now that the allowlist does not list, sorted.
    pub added: Vec<ImagePath>,
    /// Paths the allowlist lists that are not kept now (derived ones, and missing roots),
    /// sorted.
    pub dropped: Vec<ImagePath>,
}

impl Reclosure {
    /// The roots that are gone with no successor.
    pub fn missing(&self) -> impl Iterator<Item = &RootReport> {
        self.roots
            .iter()
            .filter(|r| matches!(r.state, RootState::Missing))
    }
}

/// Whether an entry with this reason is a root (input) rather than derived.
pub fn is_root(reason: Reason) -> bool {
    matches!(reason, Reason::Traced | Reason::Include)
}

/// Re-close `allowlist` on `fs`. `entrypoint` and `workdir` are the image's run config (the
/// entrypoint's program is kept with its closure, as in `run`); `opts` supplies the skeleton
/// input, the user's `exclude` globs and granularity; its default sets and includes are
/// replaced by what the allowlist records.
pub fn reclose(
    fs: &dyn Rootfs,
    allowlist: &Allowlist,
    entrypoint: &[String],
    workdir: &str,
    opts: &ClosureOptions,
) -> Result<Reclosure, ClosureError> {
    let mut opts = opts.clone();
    opts.include.clear();
    opts.include_bin.clear();
    opts.default_sets = DefaultSets::none();
    let mut events = Vec::new();
    let mut pre: Vec<(ImagePath, Reason, String)> = Vec::new();
    let mut roots = Vec::new();
    for e in &allowlist.paths {
        if e.reason == Reason::DefaultSet {
            for set in DefaultSet::ALL {
                let name = set.name();
                if e.detail == name
                    || e.detail
                        .strip_prefix(name)
                        .is_some_and(|r| r.starts_with(':'))
                {
                    opts.default_sets.set(set, true);
                }
            }
        }
        if e.reason == Reason::Package {
            opts.packages.granularity = Granularity::Package;
        }
        if e.reason == Reason::Symlink && present(fs, &e.path) {
            pre.push((e.path.clone(), e.reason, e.detail.clone()));
        }
        if !is_root(e.reason) {
            continue;
        }
        let state = if present(fs, &e.path) {
            RootState::Same
        } else {
            RootState::Missing
        };
        if state == RootState::Same {
            match e.reason {
                Reason::Traced => events.extend(synthetic_events(&e.path, &e.detail)),
                _ => match e.detail.strip_prefix("--include-bin ") {
                    Some(bin) => opts.include_bin.push(bin.to_owned()),
                    None => pre.push((e.path.clone(), e.reason, e.detail.clone())),
                },
            }
        }
        roots.push(RootReport {
            path: e.path.clone(),
            reason: e.reason,
            state,
        });
    }
    // An include_bin program is looked up again; one that is gone is reported as its path.
    opts.include_bin.sort();
    opts.include_bin.dedup();

    let trace = Trace {
        events,
        lost: BTreeMap::new(),
    };
    let mut b = crate::build::Builder::new(fs, workdir);
    for (p, r, d) in &pre {
        b.keep_entry(p, *r, d);
    }
    let closure = b.run(&trace, entrypoint, &opts)?;

    let before: BTreeSet<&ImagePath> = allowlist.paths.iter().map(|e| &e.path).collect();
    let added = closure
        .entries
        .keys()
        .filter(|p| !before.contains(p))
        .cloned()
        .collect();
    let dropped = allowlist
        .paths
        .iter()
        .filter(|e| !closure.entries.contains_key(&e.path))
        .map(|e| e.path.clone())
        .collect();
    Ok(Reclosure {
        closure,
        roots,
        added,
        dropped,
    })
}

/// Whether the image has an entry at `path` itself (not following a final symlink).
fn present(fs: &dyn Rootfs, path: &ImagePath) -> bool {
    fs.entry(path).is_some() || resolve(fs, path.as_str(), false).is_ok()
}

/// The trace events a `traced` entry stands for. Its detail is the access kinds that
/// succeeded (`open,stat`); other details (`image entrypoint`, `directory the workload
/// created in`, a hard link target, ...) are kept as a plain lookup, since the entrypoint is
/// looked up again from the image config anyway.
fn synthetic_events(path: &ImagePath, detail: &str) -> Vec<TraceEvent> {
    let kinds: Option<Vec<AccessKind>> = detail.split(',').map(kind_by_name).collect();
    let kinds = match kinds {
        Some(k) if !k.is_empty() => k,
        _ => vec![AccessKind::Stat],
    };
    kinds
        .into_iter()
        .map(|kind| TraceEvent {
            pid: 0,
            comm: String::new(),
            kind,
            path: path.to_string(),
            ok: true,
            special: None,
            detail: String::new(),
        })
        .collect()
}

fn kind_by_name(name: &str) -> Option<AccessKind> {
    const ALL: [AccessKind; 13] = [
        AccessKind::Open,
        AccessKind::OpenRequested,
        AccessKind::Stat,
        AccessKind::Access,
        AccessKind::Readlink,
        AccessKind::Exec,
        AccessKind::ExecBinary,
        AccessKind::Chdir,
        AccessKind::ListDir,
        AccessKind::Create,
        AccessKind::RenameFrom,
        AccessKind::RenameTo,
        AccessKind::Delete,
    ];
    ALL.into_iter().find(|k| k.name() == name)
}
