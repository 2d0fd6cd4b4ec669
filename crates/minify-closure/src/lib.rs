//! minify-closure: from a trace and an image to the exact set of paths the minified image
//! must hold, each with the reason it is kept, and from there to the [`Allowlist`].
//!
//! Everything is read through the image's [`Rootfs`] view; symlinks are resolved inside the
//! image root only, so nothing on the host can ever enter the result.
//!
//! What is kept ([`compute`]):
//! - traced paths that exist in the image, with every symlink on the way (`symlink`) and the
//!   final target (`traced`); successful stat/access lookups keep the entry they found (a
//!   directory lookup keeps the directory entry, not its contents); failed lookups and paths
//!   the workload created at run time are not kept; `/proc`, `/sys`, `/dev` are ignored;
//! - the ELF closure (loader, libraries, `ld.so.cache`) of every exec'd program and every
//!   opened ELF file (`elf`);
//! - `#!` interpreters of kept scripts, `#!/usr/bin/env NAME` looked up on the image's `PATH`
//!   (`interpreter`);
//! - the image's entrypoint/cmd program with its closure (it is the workload): a relative
//!   path such as `./server` is taken from the image's working directory
//!   ([`compute_with_workdir`]), a bare name is looked up on the image's `PATH`;
//! - user rules: `include` paths/globs, `include_bin` programs with their closure (`include`);
//! - the default support sets ([`DefaultSets`]; `default-set`), among them `skeleton`: the
//!   directory entries of `/tmp`, `/var/tmp`, the user's and root's home, the `WORKDIR` and
//!   every `VOLUME` ([`SkeletonInput`]), and the runtime's mount points, when the source has
//!   them;
//! - with `--granularity package` ([`PackageOptions`], module `packages`): the rest of every
//!   package owning a kept file, minus docs, locales and `bin/`/`sbin/` executables
//!   (`package`);
//! - parent directories of everything kept (`parent`);
//! - then `exclude` globs are applied, but never to a directory above a kept path.
//!
//! [`attack_surface`] then says what a kept set leaves an attacker: shells, package
//! managers, GTFOBins helpers (each with why it is kept), set-id files, world-writable
//! directories and the user.
//!
//! ```no_run
//! # fn f(fs: &dyn minify_model::Rootfs, trace: &minify_model::Trace) -> Result<(), minify_closure::ClosureError> {
//! use minify_closure::{ClosureOptions, compute};
//! let closure = compute(fs, trace, &["/usr/sbin/nginx".into()], &ClosureOptions::default())?;
//! let allowlist = closure.to_allowlist(
//!     minify_model::allowlist::SourceImage { image: "nginx:fixture".into(), digest: "sha256:..".into() },
//!     "minify 0.1.0",
//! );
//! println!("{}", allowlist.to_json());
//! # Ok(()) }
//! ```

mod build;
mod packages;
mod reclose;
mod sets;
mod skeleton;
mod surface;

use std::collections::BTreeMap;

use minify_model::allowlist::SourceImage;
use minify_model::{Allowlist, AllowlistEntry, ImagePath, Reason, Rootfs, Trace};

pub use packages::{Granularity, PackageOptions, PackageReport};
pub use reclose::{Reclosure, RootReport, RootState, is_root, reclose, renamed};
pub use sets::{DefaultSet, DefaultSets};
pub use skeleton::SkeletonInput;
pub use surface::{
    AttackSurface, GTFOBINS, PACKAGE_MANAGERS, SHELLS, SurfaceExecutable, SurfacePath, SurfaceUser,
    attack_surface,
};

/// User rules and switches for one closure computation.
#[derive(Clone, Debug, Default)]
pub struct ClosureOptions {
    /// `--include PATH|GLOB`: a file, a whole directory (recursively) or a glob over image
    /// paths (`*` stays within a component, `**` crosses them). A plain path that is not in
    /// the image is an error; a glob matching nothing is a warning.
    pub include: Vec<String>,
    /// `--include-bin PATH`: a program (absolute, or a name looked up on the image's `PATH`)
    /// with its ELF closure and `#!` interpreter.
    pub include_bin: Vec<String>,
    /// `--exclude GLOB`: removes matching paths (and, for a directory, everything below it)
    /// at the very end, except directories above a path that stays. A pattern not starting
    /// with `/` matches at any depth (`*.pyc`).
    pub exclude: Vec<String>,
    /// Which default support sets to add.
    pub default_sets: DefaultSets,
    /// The image config's user, working directory and volumes, for the `skeleton` set.
    pub skeleton: SkeletonInput,
    /// `--granularity`, `--include-package`, `--exclude-package`.
    pub packages: PackageOptions,
}

/// Why one path is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    pub reason: Reason,
    /// Reviewable, deterministic detail: the set name, the program needing a library, ...
    pub detail: String,
}

/// What one default support set added (paths not already kept for another reason).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultSetReport {
    pub set: DefaultSet,
    /// Paths it added that survived `exclude`, sorted.
    pub paths: Vec<ImagePath>,
    /// Bytes of the regular files among them.
    pub bytes: u64,
    /// Paths the set looks for that the source image does not have (only `skeleton` says
    /// so: a `/tmp` the source lacks is not made up), in the order looked for.
    pub absent: Vec<String>,
}

/// The computed kept set.
#[derive(Clone, Debug, Default)]
pub struct Closure {
    /// Every kept path (exactly one image entry each), with its reason.
    pub entries: BTreeMap<ImagePath, Kept>,
    /// Things skipped or missing (unreadable ELF files, libraries not found, globs that
    /// matched nothing, hit limits). Deterministic order.
    pub warnings: Vec<String>,
    /// Per enabled default set, what it added.
    pub default_sets: Vec<DefaultSetReport>,
    /// Paths removed by `exclude`.
    pub excluded: Vec<ImagePath>,
    /// Bytes of the regular files the trace, the ELF closure and the interpreters require
    /// (the lower bound any minifier must keep, for the benchmark).
    pub required_bytes: u64,
    /// Bytes of all kept regular files.
    pub kept_bytes: u64,
    /// The packages kept whole by the package rule, most added bytes first.
    pub packages: Vec<PackageReport>,
}

impl Closure {
    /// The allowlist form (sorted, deterministic).
    pub fn to_allowlist(&self, source: SourceImage, tool: &str) -> Allowlist {
        Allowlist::new(
            source,
            tool,
            self.entries.iter().map(|(p, k)| AllowlistEntry {
                path: p.clone(),
                reason: k.reason,
                detail: k.detail.clone(),
            }),
        )
    }

    /// Number of kept paths.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `path` is kept.
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(&ImagePath::new(path))
    }
}

/// Bad user rules. Everything about the image itself is a warning, not an error.
#[derive(Debug, thiserror::Error)]
pub enum ClosureError {
    /// An `include`/`exclude` pattern is not a valid glob.
    #[error("invalid {rule} pattern {pattern:?}: {reason}")]
    InvalidGlob {
        rule: &'static str,
        pattern: String,
        reason: String,
    },
    /// A plain `include` path is not in the image.
    #[error("--include {path}: not in the image ({reason})")]
    IncludeNotFound { path: String, reason: String },
    /// `--include-package NAME` names no package of the image.
    #[error("{rule} {name}: no such package in the image")]
    PackageNotFound { rule: &'static str, name: String },
    /// An `include_bin` program is not in the image or not on its PATH.
    #[error("--include-bin {path}: not in the image ({reason})")]
    IncludeBinNotFound { path: String, reason: String },
}

/// Compute the kept set. `entrypoint` is the image's effective argv (entrypoint + cmd); it
/// may be empty. A relative program path in it is taken from `/`; use
/// [`compute_with_workdir`] to give the image's working directory.
pub fn compute(
    fs: &dyn Rootfs,
    trace: &Trace,
    entrypoint: &[String],
    opts: &ClosureOptions,
) -> Result<Closure, ClosureError> {
    compute_with_workdir(fs, trace, entrypoint, "/", opts)
}

/// [`compute`] for an entrypoint that runs in `workdir`, the image config's `WorkingDir`
/// (empty means `/`, as in Docker). The runtime execs the program in that directory, so a
/// program path with a `/` that is not absolute (`./server`, `bin/app`) is resolved from it,
/// symlinks followed inside the image (those on the way, the working directory's included,
/// are kept). A bare name (`nginx`) is still looked up on the image's `PATH`. The working
/// directory itself is kept when it exists.
pub fn compute_with_workdir(
    fs: &dyn Rootfs,
    trace: &Trace,
    entrypoint: &[String],
    workdir: &str,
    opts: &ClosureOptions,
) -> Result<Closure, ClosureError> {
    build::Builder::new(fs, workdir).run(trace, entrypoint, opts)
}

/// Look `name` up like `execvp` on the image's `PATH` (from its env, or the usual default);
/// names with a `/` are taken as they are (relative ones from `/`). Returns the path as found
/// (before symlinks).
pub fn which(fs: &dyn Rootfs, name: &str, env: &[String]) -> Option<ImagePath> {
    build::which(fs, name, env)
}

/// The package rule applied to an existing allowlist (`minify build --granularity package`):
/// every package owning one of its non-directory paths is added whole, with the parents of
/// what is added. Paths and reasons already in it stay as they are.
pub fn expand_allowlist(
    fs: &dyn Rootfs,
    allowlist: &Allowlist,
    opts: &PackageOptions,
    locale: bool,
) -> Result<(Allowlist, Vec<PackageReport>, Vec<String>), ClosureError> {
    let mut b = build::Builder::new(fs, "/");
    for e in &allowlist.paths {
        b.keep_entry(&e.path, e.reason, &e.detail);
    }
    let (reports, warnings) = b.add_packages(opts, locale)?;
    b.add_parents_pub();
    let entries = b.into_entries();
    let al = Allowlist::new(
        allowlist.source.clone(),
        allowlist.tool.clone(),
        entries.into_iter().map(|(path, k)| AllowlistEntry {
            path,
            reason: k.reason,
            detail: k.detail,
        }),
    );
    Ok((al, reports, warnings))
}
