//! Manifest and index decoding as a pull does it: never panics, whatever the registry sent.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let platform = crius_image::Platform::host();
    let _ = crius_image::registry::decode_manifest("sha256:fuzz", data, &platform);
});
