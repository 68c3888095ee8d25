//! The SPDY/3.1 frame parser as the session's read loop drives it. Beyond "no panic": a frame
//! announcing more than the session's cap is refused from its 8-byte header, a frame uses
//! exactly its header and announced payload, every proper prefix of it asks for more bytes (never
//! an error), and encoding a parsed frame gives bytes that parse back to the same frame.
#![no_main]

use crius_streaming::spdy::MAX_INBOUND_FRAME;
use crius_streaming::spdy::frame::Frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    loop {
        let announced = Frame::announced_len(buf);
        if announced.is_some_and(|l| l > MAX_INBOUND_FRAME) {
            return;
        }
        let (frame, used) = match Frame::parse(buf) {
            Ok(Some(f)) => f,
            Ok(None) => {
                assert!(announced.is_none_or(|l| buf.len() < 8 + l), "complete frame not parsed");
                return;
            }
            Err(_) => return,
        };
        assert_eq!(Some(used - 8), announced, "frame used other than its announced length");
        for cut in [0, 7, 8, used - 1] {
            if cut < used {
                assert_eq!(Frame::parse(&buf[..cut]), Ok(None), "prefix of {cut} bytes");
            }
        }
        let wire = frame.encode();
        let (again, n) = Frame::parse(&wire).expect("encoded frame parses").expect("complete");
        assert_eq!((again, n), (frame, wire.len()));
        buf = &buf[used..];
    }
});
