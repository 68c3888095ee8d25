//! Back-pressure on streaming exec: a SPDY client and a WebSocket client that connect to an exec
//! of a process printing without end (`yes`) and then read nothing. The daemon must hold only a
//! bounded amount for them (its RSS stays near where it was), the process must block on its
//! full pipe rather than be buffered for, and once the clients go the exec'd processes are
//! killed and the daemon's RSS comes back near its level before.

use std::time::{Duration, Instant};

use crius_streaming::spdy::frame::{FLAG_FIN, Frame};
use crius_streaming::spdy::headers::{Encoder, Headers};
use crius_tests::containers::World;
use crius_tests::streaming::{bounded, upgrade};
use crius_tests::util;
use k8s_cri::v1::ExecRequest;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long the clients stall.
const STALL: Duration = Duration::from_secs(15);
/// RSS growth allowed for the two stalled sessions together (the target is 4 MiB per session;
/// the rest is room for the exec helpers' bookkeeping, thread stacks and allocator slack). Before
/// the bound existed a single session grew the daemon by more than 1 GB in 20 s.
const GROWTH_KB: u64 = 24 * 1024;

fn daemon_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

async fn exec_url(w: &mut World, id: &str, cmd: &[&str]) -> String {
    let req = ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty: false,
        stdin: false,
        stdout: true,
        stderr: true,
    };
    w.d.runtime.exec(req).await.expect("Exec").into_inner().url
}

/// A SPDY exec client that opens its streams and then never reads the connection.
async fn stalled_spdy(url: &str) -> TcpStream {
    let extra = [
        ("Connection", "Upgrade"),
        ("Upgrade", "SPDY/3.1"),
        ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
    ];
    let (_, mut tcp) = upgrade(url, "POST", &extra).await.expect("SPDY upgrade");
    let mut enc = Encoder::default();
    for (i, kind) in ["error", "stdout", "stderr"].into_iter().enumerate() {
        let h = Headers(vec![("streamtype".into(), kind.into())]);
        let f = Frame::SynStream {
            stream_id: 2 * i as u32 + 1,
            assoc_id: 0,
            priority: 0,
            flags: FLAG_FIN,
            header_block: enc.encode(&h),
        };
        tcp.write_all(&f.encode()).await.unwrap();
    }
    tcp
}

/// A WebSocket (`v5.channel.k8s.io`) exec client that completes the handshake and never reads.
async fn stalled_websocket(url: &str) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url).unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse().unwrap());
    let host = url
        .strip_prefix("http://")
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let tcp = TcpStream::connect(host).await.unwrap();
    let (ws, _) = bounded("websocket handshake", tokio_tungstenite::client_async(req, tcp))
        .await
        .unwrap();
    ws
}

/// `yes` processes running in the container (ExecSync + ps).
async fn yes_count(w: &mut World, id: &str) -> usize {
    let r = w.exec(id, &["ps", "-o", "args"], 30).await.expect("ps");
    String::from_utf8_lossy(&r.stdout)
        .lines()
        .filter(|l| l.trim() == "yes")
        .count()
}

#[tokio::test]
async fn stalled_exec_clients_hold_bounded_memory_and_leave_nothing() {
    if !util::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut w = World::new(163).await.unwrap();
    let id = w.run("target", &["sleep", "3600"]).await;
    let pid = w.d.pid().expect("daemon pid");
    // Warm up the streaming path once so its one-time allocations are in the baseline.
    let url = exec_url(&mut w, &id, &["true"]).await;
    crius_tests::streaming::RemoteCommand::start(
        &url,
        crius_tests::streaming::Stdio {
            stdout: true,
            stderr: true,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .finish()
    .await;
    let baseline = daemon_rss_kb(pid);

    let spdy_url = exec_url(&mut w, &id, &["yes"]).await;
    let ws_url = exec_url(&mut w, &id, &["yes"]).await;
    let spdy = stalled_spdy(&spdy_url).await;
    let ws = stalled_websocket(&ws_url).await;
    let started = Instant::now();
    let mut peak = baseline;
    let mut running = 0;
    while started.elapsed() < STALL {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak = peak.max(daemon_rss_kb(pid));
        if running < 2 {
            running = yes_count(&mut w, &id).await;
        }
    }
    assert_eq!(running, 2, "both execs were running while their clients stalled");
    eprintln!(
        "daemon VmRSS: {baseline} kB before, peak {peak} kB while two clients stalled {STALL:?} \
         (+{} kB)",
        peak.saturating_sub(baseline)
    );
    assert!(
        peak <= baseline + GROWTH_KB,
        "the daemon grew by {} kB for two stalled clients (bound {GROWTH_KB} kB)",
        peak - baseline
    );

    drop(spdy);
    drop(ws);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = yes_count(&mut w, &id).await;
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} exec'd processes outlived their clients by 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = daemon_rss_kb(pid);
    eprintln!("daemon VmRSS after the clients left: {after} kB");
    assert!(
        after <= baseline + GROWTH_KB / 2,
        "the daemon kept {} kB after the stalled clients left",
        after.saturating_sub(baseline)
    );
    w.teardown().await.unwrap();
}
