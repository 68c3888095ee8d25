//! The Kubernetes port-forward protocol (`portforward.k8s.io`) over a SPDY session: per forwarded
//! connection the client opens an `error` and a `data` stream carrying the same `requestid` and
//! `port`; the server dials the port inside the pod and copies bytes both ways. Many pairs share
//! one session, which lasts until the client closes the connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::backend::StreamBackend;
use super::spdy::{Session, Stream};

pub const PROTOCOL: &str = "portforward.k8s.io";
/// How long the first stream of a pair waits for the other (kubelet's value); then it is reset.
pub const PAIR_TIMEOUT: Duration = Duration::from_secs(30);
/// Forwarded connections one session may carry at once; more are refused on their error stream.
pub const MAX_FORWARDS: usize = 64;

struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
    since: Instant,
}

/// Serves one port-forward session for `pod` until the connection ends. Invariants: an
/// unpaired stream is held at most [`PAIR_TIMEOUT`]; at most [`MAX_FORWARDS`] forwards run; a
/// finished forward's task is dropped at once.
pub async fn serve(mut session: Session, pod: String, backend: Arc<dyn StreamBackend>) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let oldest = pairs.values().map(|p| p.since).min();
        let expiry = async {
            match oldest {
                Some(t) => tokio::time::sleep_until((t + PAIR_TIMEOUT).into()).await,
                None => std::future::pending().await,
            }
        };
        let stream = tokio::select! {
            s = session.incoming.recv() => match s {
                Some(s) => s,
                None => break,
            },
            Some(_) = tasks.join_next() => continue,
            () = expiry => {
                expire(&mut pairs).await;
                continue;
            }
        };
        let id = stream.headers.get("requestid").unwrap_or("").to_string();
        let entry = pairs.entry(id.clone()).or_insert_with(|| Pair {
            error: None,
            data: None,
            since: Instant::now(),
        });
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
            let Pair { error, data, .. } = pairs.remove(&id).expect("present");
            let (error, data) = (error.expect("checked"), data.expect("checked"));
            if tasks.len() >= MAX_FORWARDS {
                let msg = format!("too many forwarded connections on this session (at most {MAX_FORWARDS})");
                let _ = error.tx.write(msg.as_bytes()).await;
                let _ = error.tx.close().await;
                data.tx.reset().await;
                continue;
            }
            tasks.spawn(forward(error, data, pod.clone(), backend.clone()));
        }
    }
    tasks.abort_all();
}

/// Resets the streams whose partner did not arrive within [`PAIR_TIMEOUT`].
async fn expire(pairs: &mut HashMap<String, Pair>) {
    let now = Instant::now();
    let stale: Vec<String> = pairs
        .iter()
        .filter(|(_, p)| now.duration_since(p.since) >= PAIR_TIMEOUT)
        .map(|(id, _)| id.clone())
        .collect();
    for id in stale {
        let Some(p) = pairs.remove(&id) else { continue };
        tracing::debug!(
            requestid = id,
            "port-forward stream without its pair; resetting it"
        );
        for s in [p.error, p.data].into_iter().flatten() {
            s.tx.reset().await;
        }
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

#[cfg(test)]
mod tests {
    use super::super::backend::{BackendError, ProcessIo};
    use super::super::spdy::frame::Frame;
    use super::super::spdy::test_client::Client;
    use super::*;

    struct NoPod;

    #[async_trait::async_trait]
    impl StreamBackend for NoPod {
        async fn exec(&self, _: &cri_api::v1::ExecRequest, _: ProcessIo) -> Result<i32, BackendError> {
            Err(BackendError::Failed("no exec here".into()))
        }
        async fn attach(&self, _: &cri_api::v1::AttachRequest, _: ProcessIo) -> Result<(), BackendError> {
            Err(BackendError::Failed("no attach here".into()))
        }
        async fn dial(&self, _: &str, _: u16) -> Result<tokio::net::TcpStream, BackendError> {
            Err(BackendError::Failed("no pod here".into()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_whose_pair_never_arrives_is_reset_after_the_pair_timeout() {
        let (a, b) = tokio::io::duplex(1 << 16);
        tokio::spawn(serve(Session::serve(a), "p".into(), Arc::new(NoPod)));
        let mut c = Client::new(b);
        let t = tokio::time::Instant::now();
        c.open(
            1,
            &[("streamtype", "data"), ("port", "80"), ("requestid", "7")],
            false,
        )
        .await;
        assert!(matches!(
            c.next().await,
            Some(Frame::SynReply { stream_id: 1, .. })
        ));
        assert!(matches!(
            c.next().await,
            Some(Frame::RstStream { stream_id: 1, .. })
        ));
        assert!(t.elapsed() >= PAIR_TIMEOUT, "reset after {:?}", t.elapsed());
    }
}
