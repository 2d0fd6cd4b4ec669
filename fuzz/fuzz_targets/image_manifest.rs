//! Fuzz target: the documents that say what an image is. The first byte picks what the rest
//! is: an OCI layout's `index.json` (next to a good manifest, config and layer), a
//! docker-archive's `manifest.json` (next to a good config and layer), or a whole
//! docker-archive file. Invariants: no panic, memory within `-rss_limit_mb`, errors on one
//! line, and a view that opens keeps every promise of `minify_image::fuzzing::check`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minify_image::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let r = match which % 3 {
        0 => fuzzing::oci_index(rest),
        1 => fuzzing::docker_manifest(rest),
        _ => fuzzing::docker_archive(rest),
    };
    if let Err(e) = r {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
});
