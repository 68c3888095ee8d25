//! The WebSocket channel protocol's client → server side (`v4`/`v5.channel.k8s.io`): the first
//! input byte picks v5 or v4, the rest is a series of length-prefixed messages. Beyond "no
//! panic": stdin is exactly the message's payload after channel byte 0, nothing reaches stdin
//! after a v5 close of stdin (and v4 never closes it), resizes come only from channel 4, only
//! resize and foreign-channel messages end the session, and an unfinished resize message never
//! holds more than the cap.
#![no_main]

use crius_streaming::remotecommand::MAX_RESIZE_PENDING;
use crius_streaming::websocket::{ChannelDecoder, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&version, rest)) = data.split_first() else { return };
    let v5 = version & 1 == 1;
    let mut dec = ChannelDecoder::new(v5);
    let mut closed = false;
    for msg in crius_fuzz::messages(rest) {
        match dec.decode(msg) {
            Ok(Input::Stdin(payload)) => {
                assert!(!closed, "stdin after its close");
                assert_eq!((msg[0], payload), (0, &msg[1..]));
                assert!(!payload.is_empty());
            }
            Ok(Input::Resize(_)) => assert_eq!(msg[0], 4),
            Ok(Input::CloseStdin) => {
                assert!(v5 && !closed && msg.len() >= 2 && msg[..2] == [255, 0]);
                closed = true;
            }
            Ok(Input::Ignored) => {}
            Err(_) => {
                assert!(![0, 255].contains(&msg[0]), "stdin and close messages never end the session");
                return;
            }
        }
        assert!(dec.pending_resize() <= MAX_RESIZE_PENDING);
    }
});
