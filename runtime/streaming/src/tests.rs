//! The whole streaming server over real TCP against a fake backend: HTTP upgrade and protocol
//! negotiation, SPDY exec/attach semantics, port-forward pairing, WebSocket exec, token rules.

use std::sync::Arc;

use cri_api::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::spdy::frame::{FLAG_FIN, Frame};
use super::spdy::test_client::Client;
use super::*;

struct Fake;

#[async_trait::async_trait]
impl StreamBackend for Fake {
    async fn exec(&self, req: &ExecRequest, mut io: ProcessIo) -> Result<i32, BackendError> {
        match req.cmd.first().map(String::as_str) {
            Some("echo") => {
                io.stdout
                    .unwrap()
                    .send(req.cmd[1..].join(" ").into_bytes())
                    .await
                    .unwrap();
                Ok(0)
            }
            Some("cat") => {
                let out = io.stdout.unwrap();
                let mut stdin = io.stdin.take().unwrap();
                while let Some(chunk) = stdin.recv().await {
                    out.send(chunk).await.unwrap();
                }
                Ok(0)
            }
            Some("fail") => {
                io.stderr.unwrap().send(b"bad".to_vec()).await.unwrap();
                Ok(3)
            }
            Some("size") => {
                let size = io.resize.as_mut().unwrap().recv().await.unwrap();
                io.stdout
                    .unwrap()
                    .send(format!("{}x{}", size.width, size.height).into_bytes())
                    .await
                    .unwrap();
                Ok(0)
            }
            _ => Err(BackendError::NotFound("no such command".into())),
        }
    }

    async fn attach(&self, _req: &AttachRequest, mut io: ProcessIo) -> Result<(), BackendError> {
        let out = io.stdout.unwrap();
        let mut stdin = io.stdin.take().unwrap();
        while let Some(chunk) = stdin.recv().await {
            out.send(chunk).await.unwrap();
        }
        Ok(())
    }

    async fn dial(&self, _pod: &str, port: u16) -> Result<TcpStream, BackendError> {
        TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| BackendError::Failed(e.to_string()))
    }
}

async fn server() -> Arc<StreamingServer> {
    StreamingServer::start("127.0.0.1", 0, Arc::new(Fake))
        .await
        .unwrap()
}

fn exec(cmd: &[&str], stdin: bool, tty: bool) -> Pending {
    Pending::Exec(ExecRequest {
        container_id: "c".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    })
}

/// Sends the upgrade request; returns the status code, the response head and the connection.
async fn upgrade(url: &str, upgrade: &str, protocols: &[&str]) -> (u16, String, TcpStream) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut tcp = TcpStream::connect(host).await.unwrap();
    let mut req =
        format!("POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n");
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, head, tcp)
}

/// Reads frames until every stream in `ids` has FIN'd; returns each stream's data.
async fn read_until_fin(c: &mut Client<TcpStream>, ids: &[u32]) -> std::collections::HashMap<u32, Vec<u8>> {
    let mut data: std::collections::HashMap<u32, Vec<u8>> = ids.iter().map(|i| (*i, Vec::new())).collect();
    let mut open: std::collections::HashSet<u32> = ids.iter().copied().collect();
    while !open.is_empty() {
        match c.next().await.expect("connection ended early") {
            Frame::Data {
                stream_id,
                flags,
                data: d,
            } => {
                data.entry(stream_id).or_default().extend(d);
                if flags & FLAG_FIN != 0 {
                    open.remove(&stream_id);
                }
            }
            Frame::SynReply { .. } => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
    data
}

#[tokio::test]
async fn spdy_exec_reports_output_and_exit_status() {
    let s = server().await;
    let url = s.url(exec(&["echo", "hello"], false, false)).unwrap();
    assert!(url.starts_with(&format!("http://127.0.0.1:{}/exec/", s.local_addr().port())));
    let (code, head, tcp) = upgrade(&url, "SPDY/3.1", &["v5.channel.k8s.io, v4.channel.k8s.io"]).await;
    assert_eq!(code, 101, "{head}");
    assert!(head.contains("v5.channel.k8s.io"), "{head}");
    let mut c = Client::new(tcp);
    c.open(1, &[("streamtype", "error")], true).await;
    c.open(3, &[("streamtype", "stdout")], true).await;
    c.open(5, &[("streamtype", "stderr")], true).await;
    let out = read_until_fin(&mut c, &[1, 3, 5]).await;
    assert_eq!(out[&3], b"hello");
    assert!(out[&5].is_empty());
    let status: serde_json::Value = serde_json::from_slice(&out[&1]).unwrap();
    assert_eq!(status["status"], "Success");

    // The token was used: a second connection is refused with a clear HTTP error.
    let (code, head, _) = upgrade(&url, "SPDY/3.1", &["v4.channel.k8s.io"]).await;
    assert_eq!(code, 404, "{head}");
}

#[tokio::test]
async fn spdy_exec_non_zero_exit_and_stdin() {
    let s = server().await;
    let url = s.url(exec(&["fail"], false, false)).unwrap();
    let (_, _, tcp) = upgrade(&url, "SPDY/3.1", &["v4.channel.k8s.io"]).await;
    let mut c = Client::new(tcp);
    c.open(1, &[("streamtype", "error")], true).await;
    c.open(3, &[("streamtype", "stdout")], true).await;
    c.open(5, &[("streamtype", "stderr")], true).await;
    let out = read_until_fin(&mut c, &[1, 3, 5]).await;
    assert_eq!(out[&5], b"bad");
    let status: serde_json::Value = serde_json::from_slice(&out[&1]).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");

    let url = s.url(exec(&["cat"], true, false)).unwrap();
    let (_, _, tcp) = upgrade(&url, "SPDY/3.1", &["v4.channel.k8s.io"]).await;
    let mut c = Client::new(tcp);
    c.open(1, &[("streamtype", "error")], true).await;
    c.open(3, &[("streamtype", "stdin")], false).await;
    c.open(5, &[("streamtype", "stdout")], true).await;
    c.open(7, &[("streamtype", "stderr")], true).await;
    c.send(Frame::Data {
        stream_id: 3,
        flags: 0,
        data: b"line one\n".to_vec(),
    })
    .await;
    c.send(Frame::Data {
        stream_id: 3,
        flags: FLAG_FIN,
        data: vec![],
    })
    .await;
    let out = read_until_fin(&mut c, &[1, 5, 7]).await;
    assert_eq!(out[&5], b"line one\n");
}

#[tokio::test]
async fn spdy_tty_exec_gets_resizes() {
    let s = server().await;
    let url = s.url(exec(&["size"], false, true)).unwrap();
    let (_, _, tcp) = upgrade(&url, "SPDY/3.1", &["v4.channel.k8s.io"]).await;
    let mut c = Client::new(tcp);
    c.open(1, &[("streamtype", "error")], true).await;
    c.open(3, &[("streamtype", "stdout")], true).await;
    c.open(5, &[("streamtype", "resize")], false).await;
    c.send(Frame::Data {
        stream_id: 5,
        flags: 0,
        data: br#"{"Width":120,"Height":40}"#.to_vec(),
    })
    .await;
    let out = read_until_fin(&mut c, &[1, 3]).await;
    assert_eq!(out[&3], b"120x40");
}

#[tokio::test]
async fn unknown_protocol_is_refused_with_the_accepted_list() {
    let s = server().await;
    let url = s.url(exec(&["echo"], false, false)).unwrap();
    let (code, head, _) = upgrade(&url, "SPDY/3.1", &["v9.channel.k8s.io"]).await;
    assert_eq!(code, 403, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-accepted-stream-protocol-versions"),
        "{head}"
    );
    // An unknown token on the right endpoint is a 404 with an explanation.
    let bad = format!("http://{}/exec/deadbeef", s.local_addr());
    let (code, head, mut tcp) = upgrade(&bad, "SPDY/3.1", &["v4.channel.k8s.io"]).await;
    assert_eq!(code, 404, "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("token"), "{head}");
}

#[tokio::test]
async fn spdy_attach_and_port_forward() {
    let s = server().await;
    let url = s
        .url(Pending::Attach(AttachRequest {
            container_id: "c".into(),
            stdin: true,
            tty: false,
            stdout: true,
            stderr: true,
        }))
        .unwrap();
    let (_, _, tcp) = upgrade(&url, "SPDY/3.1", &["v4.channel.k8s.io"]).await;
    let mut c = Client::new(tcp);
    c.open(1, &[("streamtype", "error")], true).await;
    c.open(3, &[("streamtype", "stdin")], false).await;
    c.open(5, &[("streamtype", "stdout")], true).await;
    c.open(7, &[("streamtype", "stderr")], true).await;
    c.send(Frame::Data {
        stream_id: 3,
        flags: FLAG_FIN,
        data: b"echo -n hello\n".to_vec(),
    })
    .await;
    let out = read_until_fin(&mut c, &[1, 5, 7]).await;
    assert_eq!(out[&5], b"echo -n hello\n");

    // A TCP service on the "pod" side that upper-cases what it reads.
    let svc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = svc.local_addr().unwrap().port().to_string();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = svc.accept().await.unwrap();
            tokio::spawn(async move {
                let mut b = [0u8; 64];
                let n = conn.read(&mut b).await.unwrap();
                conn.write_all(&b[..n].to_ascii_uppercase()).await.unwrap();
            });
        }
    });
    let url = s
        .url(Pending::PortForward(PortForwardRequest {
            pod_sandbox_id: "p".into(),
            port: vec![],
        }))
        .unwrap();
    let (code, head, tcp) = upgrade(&url, "SPDY/3.1", &["portforward.k8s.io"]).await;
    assert_eq!(code, 101, "{head}");
    let mut c = Client::new(tcp);
    for (req, base) in [("0", 1u32), ("1", 5u32)] {
        c.open(
            base,
            &[("streamtype", "error"), ("port", &port), ("requestid", req)],
            true,
        )
        .await;
        c.open(
            base + 2,
            &[("streamtype", "data"), ("port", &port), ("requestid", req)],
            false,
        )
        .await;
        c.send(Frame::Data {
            stream_id: base + 2,
            flags: 0,
            data: format!("ping{req}").into_bytes(),
        })
        .await;
        let out = read_until_fin(&mut c, &[base + 2]).await;
        assert_eq!(out[&(base + 2)], format!("PING{req}").into_bytes());
    }
}

#[tokio::test]
async fn websocket_v5_exec() {
    let s = server().await;
    let url = s.url(exec(&["echo", "hello"], false, false)).unwrap();
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url).unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse().unwrap());
    let tcp = TcpStream::connect(s.local_addr()).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(resp.headers()["Sec-WebSocket-Protocol"], "v5.channel.k8s.io");
    let mut stdout = Vec::new();
    let mut status = None;
    while let Some(Ok(m)) = ws.next().await {
        match m {
            tokio_tungstenite::tungstenite::Message::Binary(b) => match b[0] {
                1 => stdout.extend_from_slice(&b[1..]),
                3 => status = Some(serde_json::from_slice::<serde_json::Value>(&b[1..]).unwrap()),
                // client-go's v5 reader rejects channel 255 from the server.
                c => assert_ne!(c, 255, "the server never sends v5 CLOSE"),
            },
            tokio_tungstenite::tungstenite::Message::Close(_) => break,
            _ => {}
        }
    }
    let _ = ws.close(None).await;
    assert_eq!(stdout, b"hello");
    assert_eq!(status.unwrap()["status"], "Success");
}
