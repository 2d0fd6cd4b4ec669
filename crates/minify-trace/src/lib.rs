//! minify-trace: see the crate's owner issue; placeholder until it lands.
