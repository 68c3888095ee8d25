//! Back-pressure on every streaming verb: SPDY and WebSocket clients that connect to an exec of
//! `yes`, an attach to a container printing without end, and a port-forward download from a
//! server sending without end, and then read nothing. The daemon must hold only a bounded
//! amount for them (its RSS stays near where it was), the writer must block on its full pipe or
//! socket rather than be buffered for, and once the clients go nothing they used lingers (the
//! exec'd processes are killed, the forwarded connections closed, the attached container goes
//! on) and the daemon's RSS comes back near its level before.

use std::time::Duration;

use crius_tests::containers::World;
use crius_tests::stall::{
    StreamHeaders, peak_rss_during, procs_gone, procs_running, rss_kb, rss_settles, stalled_spdy,
    stalled_websocket,
};
use crius_tests::streaming::{RemoteCommand, SpdyClient, Stdio, bounded, ws_connect};
use futures_util::StreamExt;
use k8s_cri::v1::{AttachRequest, ContainerState, ExecRequest, PortForwardRequest};

/// How long the clients stall.
const STALL: Duration = Duration::from_secs(20);
/// RSS growth allowed for one stalled attach or port-forward session: the target per
/// stalled session. Before the bound existed a single session grew the daemon by more than 1 GB.
const SESSION_KB: u64 = 4 * 1024;
/// RSS growth allowed for the two stalled exec sessions together: 4 MiB each plus room for the
/// exec helpers' bookkeeping, thread stacks and allocator slack.
const EXEC_GROWTH_KB: u64 = 24 * 1024;
/// What the container of the attach test prints: 512 KiB every 100 ms, about 100 MB over the
/// stall, so a daemon that buffered it would show. Its lines are 4 KiB long: the CRI log adds
/// about 36 bytes to each line, which made short `y` lines a 19-times larger log (4 GB a run)
/// and once filled the CI machine's disk.
const TALKER: &str = "L=$(head -c 4095 /dev/zero | tr '\\000' y); \
    while :; do yes \"$L\" | head -c 524288; usleep 100000; done";
/// The port-forward test's server: `yes` on every connection to port 7000.
const PORT: &str = "7000";

const SPDY_EXEC: [StreamHeaders<'static>; 3] = [
    &[("streamtype", "error")],
    &[("streamtype", "stdout")],
    &[("streamtype", "stderr")],
];

/// The two streams of one forwarded connection, request 1 and request 2.
const FORWARD_1: [StreamHeaders<'static>; 2] = [
    &[("streamtype", "error"), ("port", PORT), ("requestid", "1")],
    &[("streamtype", "data"), ("port", PORT), ("requestid", "1")],
];
const FORWARD_2: [StreamHeaders<'static>; 2] = [
    &[("streamtype", "error"), ("port", PORT), ("requestid", "2")],
    &[("streamtype", "data"), ("port", PORT), ("requestid", "2")],
];

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

async fn attach_url(w: &mut World, id: &str) -> String {
    let req = AttachRequest {
        container_id: id.into(),
        stdin: false,
        tty: false,
        stdout: true,
        stderr: true,
    };
    w.d.runtime.attach(req).await.expect("Attach").into_inner().url
}

async fn pf_url(w: &mut World) -> String {
    let req = PortForwardRequest {
        pod_sandbox_id: w.pod.clone(),
        port: vec![],
    };
    w.d.runtime
        .port_forward(req)
        .await
        .expect("PortForward")
        .into_inner()
        .url
}

/// Attaches over SPDY and over WebSocket, reads some of the container's output on each, leaves.
async fn attach_and_read(w: &mut World, id: &str) {
    let url = attach_url(w, id).await;
    let io = Stdio {
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let mut rc = RemoteCommand::start(&url, io).await.expect("SPDY attach");
    rc.read_stdout_until(|s| s.contains("y\ny")).await;
    drop(rc);
    let url = attach_url(w, id).await;
    let (mut ws, _) = ws_connect(&url, "v5.channel.k8s.io").await;
    let first = bounded("websocket attach output", ws.next()).await;
    let data = first
        .expect("output arrives")
        .expect("a good message")
        .into_data();
    assert_eq!(
        data.first(),
        Some(&1),
        "the first message is stdout: {:?}",
        String::from_utf8_lossy(&data[..data.len().min(200)])
    );
}

/// Downloads from the port-forward server through SPDY until some data arrives (the server may
/// still be starting), then leaves.
async fn forward_some(w: &mut World) {
    for attempt in 0..100u32 {
        let url = pf_url(w).await;
        let (mut c, _) = SpdyClient::connect(&url, &["portforward.k8s.io"]).await.unwrap();
        let rid = attempt.to_string();
        let _error = c
            .open(
                &[("streamtype", "error"), ("port", PORT), ("requestid", &rid)],
                true,
            )
            .await;
        let mut data = c
            .open(
                &[("streamtype", "data"), ("port", PORT), ("requestid", &rid)],
                false,
            )
            .await;
        if let Some(chunk) = data.next().await {
            assert!(chunk.starts_with(b"y\n"), "{:?}", String::from_utf8_lossy(&chunk));
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nothing answered on port {PORT} in the pod");
}

/// Asserts the stall's peak and the level after the clients left against `bound` and
/// `bound / 2` above `baseline`.
async fn check_rss(pid: u32, what: &str, baseline: u64, peak: u64, bound: u64) {
    eprintln!(
        "daemon VmRSS: {baseline} kB before, peak {peak} kB while {what} stalled {STALL:?} (+{} kB)",
        peak.saturating_sub(baseline)
    );
    assert!(
        peak <= baseline + bound,
        "the daemon grew by {} kB for {what} (bound {bound} kB)",
        peak - baseline
    );
    let after = rss_settles(pid, baseline + bound / 2).await;
    eprintln!("daemon VmRSS after the clients left: {after} kB");
    assert!(
        after <= baseline + bound / 2,
        "the daemon kept {} kB after {what} left",
        after.saturating_sub(baseline)
    );
}

#[tokio::test]
async fn stalled_exec_clients_hold_bounded_memory_and_leave_nothing() {
    let mut w = World::new().await.unwrap();
    let id = w.run("target", &["sleep", "3600"]).await;
    let pid = w.d.pid().expect("daemon pid");
    // Warm up the streaming path once so its one-time allocations are in the baseline.
    let url = exec_url(&mut w, &id, &["true"]).await;
    let io = Stdio {
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    RemoteCommand::start(&url, io).await.unwrap().finish().await;
    let baseline = rss_kb(pid);

    let spdy_url = exec_url(&mut w, &id, &["yes"]).await;
    let ws_url = exec_url(&mut w, &id, &["yes"]).await;
    let spdy = stalled_spdy(&spdy_url, "v4.channel.k8s.io", &SPDY_EXEC).await;
    let ws = stalled_websocket(&ws_url, "v5.channel.k8s.io", &[]).await;
    procs_running(&mut w, &id, "yes", 2).await;
    let peak = peak_rss_during(pid, STALL, baseline).await;
    procs_running(&mut w, &id, "yes", 2).await;

    drop(spdy);
    drop(ws);
    procs_gone(&mut w, &id, "yes", "their clients").await;
    check_rss(pid, "two exec clients", baseline, peak, EXEC_GROWTH_KB).await;
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn stalled_attach_clients_hold_bounded_memory_and_the_container_goes_on() {
    let mut w = World::new().await.unwrap();
    let id = w.run("talker", &["sh", "-c", TALKER]).await;
    let pid = w.d.pid().expect("daemon pid");
    attach_and_read(&mut w, &id).await;
    let baseline = rss_kb(pid);

    let spdy_url = attach_url(&mut w, &id).await;
    let ws_url = attach_url(&mut w, &id).await;
    let spdy = stalled_spdy(&spdy_url, "v4.channel.k8s.io", &SPDY_EXEC).await;
    let ws = stalled_websocket(&ws_url, "v5.channel.k8s.io", &[]).await;
    let peak = peak_rss_during(pid, STALL, baseline).await;
    drop(spdy);
    drop(ws);
    check_rss(pid, "two attach clients", baseline, peak, 2 * SESSION_KB).await;

    let st = w.state(&id).await;
    assert_eq!(
        st.state,
        ContainerState::ContainerRunning as i32,
        "the container goes on after its stalled clients left: {st:?}"
    );
    attach_and_read(&mut w, &id).await;
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn stalled_port_forward_downloads_hold_bounded_memory_and_close_their_connections() {
    let mut w = World::new().await.unwrap();
    let id = w.run("server", &["nc", "-ll", "-p", PORT, "-e", "yes"]).await;
    let pid = w.d.pid().expect("daemon pid");
    forward_some(&mut w).await;
    procs_gone(&mut w, &id, "yes", "the warm-up download").await;
    let baseline = rss_kb(pid);

    let spdy_url = pf_url(&mut w).await;
    let ws_url = pf_url(&mut w).await;
    let spdy = stalled_spdy(&spdy_url, "portforward.k8s.io", &FORWARD_1).await;
    let ws = stalled_websocket(&ws_url, "SPDY/3.1+portforward.k8s.io", &FORWARD_2).await;
    // One `yes` per forwarded connection: both reached the server.
    procs_running(&mut w, &id, "yes", 2).await;
    let peak = peak_rss_during(pid, STALL, baseline).await;
    procs_running(&mut w, &id, "yes", 2).await;

    drop(spdy);
    drop(ws);
    // The daemon closed its connections into the pod: the server's `yes` got EPIPE.
    procs_gone(&mut w, &id, "yes", "their forwarded connections").await;
    check_rss(pid, "two port-forward downloads", baseline, peak, 2 * SESSION_KB).await;
    w.teardown().await.unwrap();
}
