//! minify-elf: which files an ELF program needs at run time (its loader, its shared
//! libraries, the symlinks to them and the loader's own files), computed over an image's
//! [`Rootfs`](minify_model::Rootfs) view, never the host.
//!
//! - [`ElfInfo::parse`] reads the loader-relevant fields of one object (goblin, bounded,
//!   never panics on hostile bytes).
//! - [`Resolver`] applies the image's loader rules (RPATH/RUNPATH with `$ORIGIN`, `$LIB`,
//!   `$PLATFORM`, `LD_LIBRARY_PATH`/`LD_PRELOAD` from the image env, the image's
//!   `/etc/ld.so.cache` ([`LdCache`]; `/etc/ld.so.conf` with `include` globs when it has
//!   none), multiarch default directories, `glibc-hwcaps` subdirectories, musl's `.path`
//!   file) transitively and cycle-safely, caching parsed objects across programs of one image.
//! - [`resolve_deps`] is the one-call form for a single program.
//!
//! ```no_run
//! # fn f(fs: &dyn minify_model::Rootfs) -> Result<(), minify_elf::ElfError> {
//! let mut r = minify_elf::Resolver::new(fs, fs.env());
//! let deps = r.closure_of("/usr/sbin/nginx")?;
//! for (path, dep) in &deps.kept {
//!     println!("{path}: {:?} {}", dep.kind, dep.detail);
//! }
//! for w in &deps.warnings {
//!     eprintln!("warning: {w}");
//! }
//! # Ok(()) }
//! ```

pub mod cache;
pub mod loader;
pub mod parse;
pub mod resolve;
#[cfg(feature = "test-util")]
#[doc(hidden)]
pub mod testutil;

pub use cache::{CacheEntry, CacheError, CacheFormat, LdCache};
pub use loader::{Libc, LoaderConfig, env_var, glob_rootfs};
pub use parse::{ElfClass, ElfInfo, ParseError, is_elf};
pub use resolve::{Dep, DepClosure, DepKind, ElfError, Resolver, expand, resolve_deps};
