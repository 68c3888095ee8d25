//! SPDY/3 header blocks through one zlib context (as a connection's inbound side): the input is
//! a series of length-prefixed compressed blocks. Beyond "no panic": nothing inflates past the
//! cap (a bomb is refused while inflating), and every decoded block re-encodes to a block that a
//! fresh context decodes to the same headers, or refuses when invalid UTF-8 replaced by U+FFFD
//! made it longer than the cap.
#![no_main]

use crius_streaming::spdy::headers::{Decoder, Encoder, HeaderError, MAX_BLOCK};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut dec = Decoder::default();
    for block in crius_fuzz::messages(data) {
        let headers = match dec.decode(block) {
            Ok(h) => h,
            Err(HeaderError::TooLarge(cap)) => {
                assert_eq!(cap, MAX_BLOCK);
                return;
            }
            // A context that failed is not used again (the session closes the connection).
            Err(_) => return,
        };
        // The inflated form: a count, then a length and bytes for each name and value. Invalid
        // UTF-8 became U+FFFD (3 bytes for 1), so the decoded strings are at most 3x the raw.
        let strings: usize = headers.0.iter().map(|(n, v)| n.len() + v.len()).sum();
        assert!(4 + 8 * headers.0.len() <= MAX_BLOCK && strings <= 3 * MAX_BLOCK);
        // Re-encoded, the block is as long as the decoded strings; within the cap it decodes to
        // the same headers, past it (U+FFFD grew it) it is refused like any other.
        let raw = 4 + 8 * headers.0.len() + strings;
        let again = Decoder::default().decode(&Encoder::default().encode(&headers));
        if raw <= MAX_BLOCK {
            assert_eq!(again.as_ref(), Ok(&headers));
        } else {
            assert_eq!(again, Err(HeaderError::TooLarge(MAX_BLOCK)));
        }
    }
});
