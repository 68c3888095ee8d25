//! The daemon↔shim frame decoder: the first byte picks which message the reader expects (each
//! side reads one kind), the rest is the byte stream. Beyond "no panic": no frame over the cap
//! is accepted, a frame consumes exactly its 4-byte length and body, and every decoded message
//! encodes to a frame that decodes back to itself.
#![no_main]

use std::fmt::Debug;

use crius_shim_api::frame::{FrameError, encode, read_frame};
use crius_shim_api::{
    CreateReport, ExecReport, ExecRequest, ExitStatus, MAX_FRAME, RequestEnvelope, ResponseEnvelope,
    ShimConfig,
};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn frames<T: DeserializeOwned + Serialize + PartialEq + Debug>(mut stream: &[u8]) {
    loop {
        let before = stream.len();
        let announced = stream.get(..4).map(|h| u32::from_be_bytes(h.try_into().unwrap()));
        match read_frame::<_, T>(&mut stream) {
            Ok(msg) => {
                let len = announced.expect("a frame has a header");
                assert!(len <= MAX_FRAME);
                assert_eq!(before - stream.len(), 4 + len as usize, "frame consumed the wrong length");
                let again = match encode(&msg) {
                    Ok(again) => again,
                    // Defaulted fields absent from the input can push a frame near the cap over it.
                    Err(FrameError::TooLarge(_)) if len > MAX_FRAME - 1024 => continue,
                    Err(e) => panic!("a decoded message does not encode: {e}"),
                };
                let back: T = read_frame(&mut &again[..]).expect("an encoded message decodes");
                assert_eq!(back, msg);
            }
            Err(FrameError::TooLarge(n)) => {
                assert!(n > u64::from(MAX_FRAME));
                assert_eq!(before - stream.len(), 4, "an oversized body was read");
                return;
            }
            Err(_) => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, stream)) = data.split_first() else { return };
    match which % 7 {
        0 => frames::<RequestEnvelope>(stream),
        1 => frames::<ResponseEnvelope>(stream),
        2 => frames::<CreateReport>(stream),
        3 => frames::<ExecReport>(stream),
        4 => frames::<ExecRequest>(stream),
        5 => frames::<ShimConfig>(stream),
        _ => frames::<ExitStatus>(stream),
    }
});
