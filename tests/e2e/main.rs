//! minify's end-to-end tests: real fixture images, a real Docker engine and the real kernel.
//! One test binary (`cargo test -p minify --test e2e`); one module per theme. Shared helpers
//! (fixture images, skip guards, `TestContext`) come from the `minify-fixtures` crate.

mod ci;
mod closure;
mod common;
mod features;
mod fixtures_smoke;
mod gc;
mod hostile;
mod image;
mod package_db;
mod packages;
mod refusals;
mod registry;
mod report;
mod reuse;
mod run;
mod run_options;
mod sbom;
mod signals;
mod skeleton;
mod source;
mod trace;
mod verify;
