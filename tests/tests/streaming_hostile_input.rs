//! Malformed and oversized input to the streaming server through the real daemon: SPDY frames
//! with a bad version, bad or oversized lengths, a header block that inflates far past the cap
//! (a zlib bomb), garbage header blocks; WebSocket frames that are oversized, fragmented past
//! the message cap, unmasked, of a reserved opcode, not UTF-8, or on a channel the client may
//! not write; resize messages that are oversized or not a terminal size, on SPDY's resize stream
//! and WebSocket channel 4. Each session must end (the server closes the connection), the
//! exec'd process it started must be killed, the daemon must not panic or grow, and `Version`
//! must still answer.

use std::time::Duration;

use crius_streaming::spdy::frame::Frame;
use crius_streaming::spdy::headers::{Encoder, Headers};
use crius_tests::containers::World;
use crius_tests::stall::{StreamHeaders, procs_gone, procs_running, rss_kb, syn_streams};
use crius_tests::streaming::{WAIT, upgrade};
use k8s_cri::v1::{ExecRequest, VersionRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The exec'd process each session starts (distinct from the container's own `sleep`).
const TARGET: [&str; 2] = ["sleep", "7777"];
/// RSS growth allowed over all the hostile sessions together.
const GROWTH_KB: u64 = 8 * 1024;

const EXEC_STREAMS: [StreamHeaders<'static>; 3] = [
    &[("streamtype", "error")],
    &[("streamtype", "stdout")],
    &[("streamtype", "stderr")],
];
/// A terminal exec's streams; the resize stream is stream 5.
const TTY_STREAMS: [StreamHeaders<'static>; 3] = [
    &[("streamtype", "error")],
    &[("streamtype", "stdout")],
    &[("streamtype", "resize")],
];
const RESIZE_STREAM: u32 = 5;

async fn exec_url(w: &mut World, id: &str, tty: bool) -> String {
    let req = ExecRequest {
        container_id: id.into(),
        cmd: TARGET.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin: false,
        stdout: true,
        stderr: !tty,
    };
    w.d.runtime.exec(req).await.expect("Exec").into_inner().url
}

/// Reads until the server closes the connection (EOF or reset); panics after [`WAIT`].
async fn server_closes(tcp: &mut TcpStream, what: &str) {
    let mut buf = vec![0u8; 64 * 1024];
    let closed = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    if tokio::time::timeout(WAIT, closed).await.is_err() {
        panic!("{what}: the server kept the session open for {WAIT:?}");
    }
}

/// The daemon still answers and did not panic; returns its RSS.
async fn daemon_is_well(w: &mut World, what: &str) -> u64 {
    let v = tokio::time::timeout(WAIT, w.d.runtime.version(VersionRequest::default()))
        .await
        .unwrap_or_else(|_| panic!("after {what}: Version did not answer within {WAIT:?}"));
    v.unwrap_or_else(|e| panic!("after {what}: Version failed: {e}"));
    assert!(
        !w.d.log().contains("panicked"),
        "after {what}: the daemon panicked:\n{}",
        w.d.log()
    );
    rss_kb(w.d.pid().expect("daemon pid"))
}

/// An exec session over SPDY whose process is running; returns the connection and its header
/// context.
async fn spdy_session(w: &mut World, id: &str, tty: bool) -> (TcpStream, Encoder) {
    let url = exec_url(w, id, tty).await;
    let extra = [
        ("Connection", "Upgrade"),
        ("Upgrade", "SPDY/3.1"),
        ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
    ];
    let (_, mut tcp) = upgrade(&url, "POST", &extra).await.expect("SPDY upgrade");
    let mut enc = Encoder::default();
    let streams = if tty { &TTY_STREAMS } else { &EXEC_STREAMS };
    tcp.write_all(&syn_streams(&mut enc, streams)).await.unwrap();
    procs_running(w, id, &TARGET.join(" "), 1).await;
    (tcp, enc)
}

/// A WebSocket (`v5.channel.k8s.io`) exec session whose process is running, on the raw
/// connection so the test can write any bytes.
async fn ws_session(w: &mut World, id: &str, tty: bool) -> TcpStream {
    let url = exec_url(w, id, tty).await;
    let extra = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
    ];
    let (_, tcp) = upgrade(&url, "GET", &extra).await.expect("websocket upgrade");
    procs_running(w, id, &TARGET.join(" "), 1).await;
    tcp
}

/// One WebSocket frame as a client writes it: `opcode`, FIN, masked unless `unmasked`.
fn ws_frame(opcode: u8, fin: bool, payload: &[u8], unmasked: bool) -> Vec<u8> {
    let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
    let mask_bit = if unmasked { 0 } else { 0x80 };
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if unmasked {
        f.extend_from_slice(payload);
        return f;
    }
    let key = [0x12, 0x34, 0x56, 0x78];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// A header block that continues `enc`'s context and inflates to `mb` MiB.
fn bomb(enc: &mut Encoder, mb: usize) -> Vec<u8> {
    let big = "a".repeat(mb << 20);
    enc.encode(&Headers(vec![("streamtype".into(), big)]))
}

fn syn_stream(stream_id: u32, header_block: Vec<u8>) -> Vec<u8> {
    Frame::SynStream {
        stream_id,
        assoc_id: 0,
        priority: 0,
        flags: 0,
        header_block,
    }
    .encode()
}

fn data(stream_id: u32, payload: &[u8]) -> Vec<u8> {
    Frame::Data {
        stream_id,
        flags: 0,
        data: payload.to_vec(),
    }
    .encode()
}

/// A resize message that never ends within the cap.
fn endless_resize() -> Vec<u8> {
    let mut m = br#"{"Width":"#.to_vec();
    m.extend(std::iter::repeat_n(b' ', 8192));
    m
}

#[tokio::test]
async fn malformed_and_oversized_streaming_input_ends_the_session_and_nothing_else() {
    let mut w = World::new().await.unwrap();
    let id = w.run("target", &["sleep", "3600"]).await;
    let target = TARGET.join(" ");
    // One ordinary session of each kind first, so one-time allocations are in the baseline.
    for tty in [false, true] {
        let (mut tcp, _) = spdy_session(&mut w, &id, tty).await;
        tcp.shutdown().await.unwrap();
        drop(tcp);
        let tcp = ws_session(&mut w, &id, tty).await;
        drop(tcp);
        procs_gone(&mut w, &id, &target, "a warm-up client").await;
    }
    let baseline = daemon_is_well(&mut w, "the warm-up").await;
    let mut peak = baseline;

    // SPDY, each case on an exec whose process runs: (name, tty, bytes after the streams).
    type Make = fn(&mut Encoder) -> Vec<u8>;
    let spdy_cases: [(&str, bool, Make); 9] = [
        ("SPDY version 2 control frame", false, |_| {
            vec![0x80, 0x02, 0, 1, 0, 0, 0, 0]
        }),
        ("SYN_STREAM shorter than its fields", false, |_| {
            vec![0x80, 0x03, 0, 1, 0, 0, 0, 2, 0, 0]
        }),
        ("RST_STREAM shorter than its fields", false, |_| {
            vec![0x80, 0x03, 0, 3, 0, 0, 0, 4, 0, 0, 0, 1]
        }),
        ("DATA frame announcing 16 MiB", false, |_| {
            vec![0, 0, 0, 1, 0, 0xff, 0xff, 0xff, 1, 2, 3]
        }),
        ("control frame announcing 16 MiB", false, |_| {
            vec![0x80, 0x03, 0, 1, 0, 0xff, 0xff, 0xff, 0, 0, 0, 7]
        }),
        ("SYN_STREAM whose header block inflates to 32 MiB", false, |enc| {
            syn_stream(7, bomb(enc, 32))
        }),
        ("SYN_STREAM with a garbage header block", false, |_| {
            syn_stream(
                7,
                (0..4096u32)
                    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect(),
            )
        }),
        ("resize message longer than the cap", true, |_| {
            data(RESIZE_STREAM, &endless_resize())
        }),
        ("resize message that is not a terminal size", true, |_| {
            data(RESIZE_STREAM, b"{\"Width\":\"wide\",\"Height\":-1}\n")
        }),
    ];
    for (what, tty, make) in spdy_cases {
        let (mut tcp, mut enc) = spdy_session(&mut w, &id, tty).await;
        // The server may close while a long payload is still being written.
        let _ = tcp.write_all(&make(&mut enc)).await;
        server_closes(&mut tcp, what).await;
        procs_gone(&mut w, &id, &target, what).await;
        peak = peak.max(daemon_is_well(&mut w, what).await);
    }

    // A zlib bomb and a header block of malformed pairs as the connection's first frame.
    let first_blocks: [(&str, Vec<u8>); 2] = [
        ("first header block inflating to 32 MiB", {
            let mut enc = Encoder::default();
            syn_stream(1, bomb(&mut enc, 32))
        }),
        ("first header block announcing pairs it lacks", {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut z, &[0, 0, 0, 200, 0, 0, 0, 9, b'a']).unwrap();
            syn_stream(1, z.finish().unwrap())
        }),
    ];
    for (what, bytes) in first_blocks {
        let url = exec_url(&mut w, &id, false).await;
        let extra = [
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
        ];
        let (_, mut tcp) = upgrade(&url, "POST", &extra).await.expect("SPDY upgrade");
        let _ = tcp.write_all(&bytes).await;
        server_closes(&mut tcp, what).await;
        peak = peak.max(daemon_is_well(&mut w, what).await);
    }

    // WebSocket, each case on an exec whose process runs.
    let half = vec![0u8; 512 * 1024];
    let ws_cases: [(&str, bool, Vec<u8>); 8] = [
        ("frame announcing 2 MiB", false, {
            let mut f = ws_frame(2, true, &[], false);
            f[1] = 0x80 | 127;
            f.splice(2..2, (2u64 << 20).to_be_bytes());
            f
        }),
        ("message fragmented past the cap", false, {
            let mut f = ws_frame(2, false, &half, false);
            f.extend(ws_frame(0, false, &half, false));
            f.extend(ws_frame(0, true, &half, false));
            f
        }),
        (
            "unmasked client frame",
            false,
            ws_frame(2, true, &[0, b'x'], true),
        ),
        ("reserved opcode", false, ws_frame(3, true, &[0, b'x'], false)),
        (
            "text frame that is not UTF-8",
            false,
            ws_frame(1, true, &[0, 0xff, 0xfe], false),
        ),
        (
            "message on channel 9",
            false,
            ws_frame(2, true, &[9, 1, 2, 3], false),
        ),
        ("resize message longer than the cap", true, {
            let mut m = vec![4u8];
            m.extend(endless_resize());
            ws_frame(2, true, &m, false)
        }),
        ("resize message that is not a terminal size", true, {
            ws_frame(2, true, b"\x04not a size\n", false)
        }),
    ];
    for (what, tty, bytes) in ws_cases {
        let mut tcp = ws_session(&mut w, &id, tty).await;
        let _ = tcp.write_all(&bytes).await;
        server_closes(&mut tcp, what).await;
        procs_gone(&mut w, &id, &target, what).await;
        peak = peak.max(daemon_is_well(&mut w, what).await);
    }

    eprintln!(
        "daemon VmRSS: {baseline} kB before, peak {peak} kB over the hostile sessions (+{} kB)",
        peak.saturating_sub(baseline)
    );
    assert!(
        peak <= baseline + GROWTH_KB,
        "the daemon grew by {} kB (bound {GROWTH_KB} kB)",
        peak - baseline
    );
    // The container the sessions ran in is untouched.
    tokio::time::sleep(Duration::from_millis(100)).await;
    procs_running(&mut w, &id, "sleep 3600", 1).await;
    w.teardown().await.unwrap();
}
