//! minify-trace-common: see the crate's owner issue; placeholder until it lands.
#![no_std]
