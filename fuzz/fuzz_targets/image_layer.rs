//! Fuzz target: arbitrary bytes as an image's layers (split at
//! `minify_image::fuzzing::LAYER_SEPARATOR`; each tar, tar+gzip or tar+zstd, sniffed as for
//! real images), flattened by the view `minify inspect` builds: pax and GNU extension
//! records, whiteouts and opaque directories across layers, hardlinks, deep paths.
//! Invariants: no panic; memory within `-rss_limit_mb` (a decompression bomb or a path that
//! costs its square is a finding); a view that builds keeps every promise of
//! `minify_image::fuzzing::check`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = minify_image::fuzzing::layers(data) {
        // Every error renders as one line.
        assert!(!e.to_string().contains('\n'), "{e}");
    }
});
