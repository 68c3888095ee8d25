//! Image reference parsing: never panics, and a parsed reference prints as a reference that parses
//! back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(r) = crius_image::ImageRef::parse(s) {
        let again = crius_image::ImageRef::parse(&r.to_string()).expect("a printed reference parses");
        assert_eq!(again, r);
    }
});
