//! Clients that stop reading, and what the suite watches while they do: the daemon's resident
//! memory and the processes a container runs. A stalled client completes its upgrade, opens its
//! streams the way client-go does, and then never reads the connection, so everything the
//! server sends piles up in the kernel's socket buffers and then in the server, if anywhere.
//!
//! Invariant: every wait is bounded (by [`crate::streaming::WAIT`] or a stated deadline).

use std::time::{Duration, Instant};

use crius_streaming::spdy::frame::{FLAG_FIN, Frame};
use crius_streaming::spdy::headers::{Encoder, Headers};
use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::containers::World;
use crate::streaming::{upgrade, ws_connect};

/// The header pairs of one stream a client opens.
pub type StreamHeaders<'a> = &'a [(&'a str, &'a str)];

/// The daemon's resident set in kB (`VmRSS`).
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("the daemon's /proc status")
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// SYN_STREAM frames opening `streams` as stream 1, 3, 5, ... with the connection's header
/// context `enc` (a fresh one for a new connection). Streams the client writes to (stdin, resize,
/// port-forward data) stay open; the others are half-closed at once, as client-go does.
pub fn syn_streams(enc: &mut Encoder, streams: &[StreamHeaders<'_>]) -> Vec<u8> {
    let mut wire = Vec::new();
    for (i, pairs) in streams.iter().enumerate() {
        let h = Headers(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        );
        let writes = h
            .get("streamtype")
            .is_some_and(|t| matches!(t, "stdin" | "resize" | "data"));
        let f = Frame::SynStream {
            stream_id: 2 * i as u32 + 1,
            assoc_id: 0,
            priority: 0,
            flags: if writes { 0 } else { FLAG_FIN },
            header_block: enc.encode(&h),
        };
        wire.extend_from_slice(&f.encode());
    }
    wire
}

/// A SPDY client that negotiates `protocol`, opens `streams` and then never reads the connection.
pub async fn stalled_spdy(url: &str, protocol: &str, streams: &[StreamHeaders<'_>]) -> TcpStream {
    let extra = [
        ("Connection", "Upgrade"),
        ("Upgrade", "SPDY/3.1"),
        ("X-Stream-Protocol-Version", protocol),
    ];
    let (_, mut tcp) = upgrade(url, "POST", &extra).await.expect("SPDY upgrade");
    tcp.write_all(&syn_streams(&mut Encoder::default(), streams))
        .await
        .unwrap();
    tcp
}

/// A WebSocket client on `subprotocol` that completes the handshake and never reads. For the
/// port-forward tunnel it first opens `streams` (SPDY frames in one binary message).
pub async fn stalled_websocket(
    url: &str,
    subprotocol: &str,
    streams: &[StreamHeaders<'_>],
) -> WebSocketStream<TcpStream> {
    let (mut ws, _) = ws_connect(url, subprotocol).await;
    if !streams.is_empty() {
        let wire = syn_streams(&mut Encoder::default(), streams);
        ws.send(Message::binary(wire)).await.unwrap();
    }
    ws
}

/// The highest RSS of process `pid` sampled every 250 ms for `period`, at least `floor`.
pub async fn peak_rss_during(pid: u32, period: Duration, floor: u64) -> u64 {
    let started = Instant::now();
    let mut peak = floor;
    while started.elapsed() < period {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak = peak.max(rss_kb(pid));
    }
    peak
}

/// Waits up to 30 s for the RSS of `pid` to come down to `limit_kb`; returns the last sample.
pub async fn rss_settles(pid: u32, limit_kb: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = rss_kb(pid);
        if now <= limit_kb || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Processes in container `id` whose command line is exactly `args` (ExecSync + ps).
pub async fn count_procs(w: &mut World, id: &str, args: &str) -> usize {
    let r = w.exec(id, &["ps", "-o", "args"], 30).await.expect("ps");
    String::from_utf8_lossy(&r.stdout)
        .lines()
        .filter(|l| l.trim() == args)
        .count()
}

/// Waits up to 30 s until no process in container `id` runs `args`; panics naming `what` else.
pub async fn procs_gone(w: &mut World, id: &str, args: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = count_procs(w, id, args).await;
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} `{args}` processes outlived {what} by 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits up to 30 s until `n` processes in container `id` run `args`.
pub async fn procs_running(w: &mut World, id: &str, args: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = count_procs(w, id, args).await;
        if running >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {running} of {n} `{args}` processes started within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
