//! The Kubernetes port-forward protocol (`portforward.k8s.io`) over a SPDY session: per forwarded
//! connection the client opens an `error` and a `data` stream carrying the same `requestid` and
//! `port`; the server dials the port inside the pod and copies bytes both ways. Many pairs share
//! one session, which lasts until the client closes the connection.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::backend::StreamBackend;
use super::spdy::{Session, Stream};

pub const PROTOCOL: &str = "portforward.k8s.io";

#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
}

/// Serves one port-forward session for `pod` until the connection ends.
pub async fn serve(mut session: Session, pod: String, backend: Arc<dyn StreamBackend>) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut tasks = Vec::new();
    while let Some(stream) = session.incoming.recv().await {
        let id = stream.headers.get("requestid").unwrap_or("").to_string();
        let entry = pairs.entry(id.clone()).or_default();
        match stream.kind() {
            "error" => entry.error = Some(stream),
            "data" => entry.data = Some(stream),
            other => {
                tracing::debug!(streamtype = other, "unexpected port-forward stream; resetting it");
                stream.tx.reset().await;
                continue;
            }
        }
        if entry.error.is_some() && entry.data.is_some() {
            let Pair { error, data } = pairs.remove(&id).expect("present");
            let (error, data) = (error.expect("checked"), data.expect("checked"));
            tasks.push(tokio::spawn(forward(error, data, pod.clone(), backend.clone())));
        }
    }
    for t in tasks {
        t.abort();
    }
}

async fn forward(error: Stream, mut data: Stream, pod: String, backend: Arc<dyn StreamBackend>) {
    let port = match data.headers.get("port").map(str::parse::<u16>) {
        Some(Ok(p)) if p > 0 => p,
        other => {
            let msg = format!(
                "invalid port header {:?} on port-forward data stream",
                other.map(|r| r.is_ok())
            );
            let _ = error.tx.write(msg.as_bytes()).await;
            let _ = error.tx.close().await;
            data.tx.reset().await;
            return;
        }
    };
    let conn = match backend.dial(&pod, port).await {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("failed to connect to localhost:{port} inside pod {pod}: {e}");
            let _ = error.tx.write(msg.as_bytes()).await;
            let _ = error.tx.close().await;
            let _ = data.tx.close().await;
            return;
        }
    };
    let (mut rd, mut wr) = conn.into_split();
    let to_pod = async {
        while let Some(chunk) = data.rx.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let out = data.tx.clone();
    let from_pod = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.write(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = out.close().await;
    };
    tokio::join!(to_pod, from_pod);
    let _ = error.tx.close().await;
}
