//! Streaming URLs against a real daemon: a token works once, an unknown token or a token on
//! the wrong endpoint is a clear HTTP error, an unknown protocol is refused, 20 exec sessions run
//! at once, and exec over WebSocket (`v5.channel.k8s.io`, crictl's `--transport websocket`).
//! Expiry is tested where the TTL can be shortened: the streaming crate's own tests.

use crius_tests::containers::World;
use crius_tests::streaming::{RemoteCommand, SpdyClient, Stdio, upgrade, ws_exec};
use k8s_cri::v1::ExecRequest;

const OUT: Stdio = Stdio {
    stdin: false,
    stdout: true,
    stderr: true,
    tty: false,
};

async fn exec_url(w: &mut World, id: &str, cmd: &[&str], stdin: bool) -> String {
    let req = ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty: false,
        stdin,
        stdout: true,
        stderr: true,
    };
    w.d.runtime.exec(req).await.unwrap().into_inner().url
}

#[tokio::test]
async fn tokens_concurrency_and_websocket() {
    let mut w = World::new().await.unwrap();
    let id = w.run("target", &["sleep", "3600"]).await;

    // A token works once.
    let url = exec_url(&mut w, &id, &["echo", "-n", "once"], false).await;
    let f = RemoteCommand::start(&url, OUT).await.unwrap().finish().await;
    assert_eq!(f.stdout, b"once");
    let again = RemoteCommand::start(&url, OUT)
        .await
        .err()
        .expect("a used token is refused");
    assert_eq!(again.status, 404);
    assert!(
        again.body.contains("not found, already used or expired"),
        "{}",
        again.body
    );

    // An unknown token, and a token on another endpoint (which also spends it).
    let (base, _) = url.rsplit_once('/').unwrap();
    let unknown = RemoteCommand::start(&format!("{base}/AAAAAAAAAAAA"), OUT)
        .await
        .err()
        .unwrap();
    assert_eq!(unknown.status, 404);
    let url = exec_url(&mut w, &id, &["true"], false).await;
    let wrong = url.replacen("/exec/", "/attach/", 1);
    assert_eq!(RemoteCommand::start(&wrong, OUT).await.err().unwrap().status, 404);
    assert_eq!(RemoteCommand::start(&url, OUT).await.err().unwrap().status, 404);

    // An unknown protocol is refused before the upgrade; no upgrade at all is a bad request.
    let url = exec_url(&mut w, &id, &["true"], false).await;
    let refused = SpdyClient::connect(&url, &["v9.channel.example"])
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 403);
    let url = exec_url(&mut w, &id, &["true"], false).await;
    let plain = upgrade(&url, "POST", &[]).await.err().unwrap();
    assert_eq!(plain.status, 400);

    // 20 exec sessions at once, each with its own output and exit code.
    let mut urls = Vec::new();
    for n in 0..20 {
        let script = format!("sleep 0.2; echo -n out-{n}; exit {n}");
        urls.push(exec_url(&mut w, &id, &["sh", "-c", &script], false).await);
    }
    let runs = urls.into_iter().map(|url| {
        tokio::spawn(async move { RemoteCommand::start(&url, OUT).await.unwrap().finish().await })
    });
    let results = futures_util::future::join_all(runs).await;
    for (n, r) in results.into_iter().enumerate() {
        let f = r.unwrap();
        assert_eq!(String::from_utf8_lossy(&f.stdout), format!("out-{n}"));
        assert_eq!(f.exit_code(), n as i32);
    }

    // WebSocket: stdin in, stdout and stderr out, the exit code on channel 3.
    let url = exec_url(&mut w, &id, &["sh", "-c", "cat; echo -n err >&2; exit 2"], true).await;
    let f = ws_exec(&url, Some(b"through-ws")).await;
    assert_eq!(f.stdout, b"through-ws");
    assert_eq!(f.stderr, b"err");
    assert_eq!(f.exit_code(), 2);
    let url = exec_url(&mut w, &id, &["echo", "-n", "hello"], false).await;
    let f = ws_exec(&url, None).await;
    assert_eq!((f.stdout.as_slice(), f.exit_code()), (&b"hello"[..], 0));

    w.teardown().await.unwrap();
}
