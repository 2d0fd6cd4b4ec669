//! The shared vocabulary of minify: every crate in the pipeline speaks in these types.
//!
//! Keep this crate small and dependency-light. It holds:
//! - [`ImagePath`]: a normalised absolute path *inside an image* (never a host path);
//! - [`Entry`]/[`EntryKind`] and the [`Rootfs`] trait: a read-only view of an image's
//!   flattened filesystem, with [`resolve`] doing symlink resolution confined to the image root;
//! - [`trace`]: what the tracer hands to the closure;
//! - [`allowlist`]: the reviewable, deterministic list of kept paths;
//! - [`input`]: reading a user-named input file: regular files only, with a size limit.
//!
//! Nothing here reads `/proc` or any other host state: that is minify-host's.

pub mod allowlist;
pub mod input;
pub mod path;
pub mod rootfs;
pub mod trace;

pub use allowlist::{Allowlist, AllowlistEntry, Reason};
pub use path::ImagePath;
pub use rootfs::{Entry, EntryKind, ResolveError, Resolved, Rootfs, resolve};
pub use trace::{AccessKind, Trace, TraceEvent};
