//! The `/metrics` endpoint: a small HTTP/1.1 server on `metrics.address`, answering `GET` (and
//! `HEAD`) of `/metrics` with the text exposition format, 404 for any other path and 405 for
//! any other method.
//!
//! Limits: at most [`MAX_CONNECTIONS`] connections at once (more wait in the listen backlog);
//! a request head must arrive within [`HEADER_READ_TIMEOUT`] and fit in [`MAX_HEAD_BYTES`]; a
//! request with a body is refused unread; a scrape is encoded on the blocking pool, so at most
//! [`MAX_CONNECTIONS`] encodes run at once and none on an async worker.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use super::Metrics;

/// Connections served at once (Prometheus keeps one per target).
pub const MAX_CONNECTIONS: usize = 16;
/// How long a client may take to send a request head (and may idle between requests).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head read (hyper's smallest buffer is 8 KiB).
pub const MAX_HEAD_BYTES: usize = 16 << 10;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// The running endpoint; dropping it stops accepting.
pub struct MetricsServer {
    addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl MetricsServer {
    /// Binds `address` (`host:port`; port 0 picks a free one, logged) and serves on its own task.
    pub async fn start(address: &str, metrics: Arc<Metrics>) -> Result<MetricsServer, MetricsError> {
        let bind_err = |source| MetricsError::Bind {
            addr: address.to_string(),
            source,
        };
        let addr: SocketAddr = address.parse().map_err(|_| {
            bind_err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not an IP address and port",
            ))
        })?;
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let accept = tokio::spawn(accept_loop(listener, metrics));
        tracing::info!(%addr, "metrics endpoint listening on /metrics");
        Ok(MetricsServer { addr, accept })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    while let Some((tcp, permit)) = crius_streaming::accept::next_in_slot(&listener, &slots, "metrics").await
    {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(metrics.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(tcp), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
            drop(permit);
        });
    }
}

fn reply(code: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = code;
    r
}

async fn handle(metrics: Arc<Metrics>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(
        respond(req.uri().path(), req.method(), req.body().is_end_stream(), || {
            let metrics = metrics.clone();
            async move { tokio::task::spawn_blocking(move || metrics.encode()).await }
        })
        .await,
    )
}

/// The answer to one request; `encode` runs only for a valid scrape.
async fn respond<F, Fut>(path: &str, method: &Method, no_body: bool, encode: F) -> Response<Full<Bytes>>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<String, tokio::task::JoinError>>,
{
    if path != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "not found: metrics are served on /metrics\n",
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if !no_body {
        // The body is never read: close instead of letting hyper drain it.
        let mut r = reply(StatusCode::PAYLOAD_TOO_LARGE, "a scrape has no body\n");
        r.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    let text = match encode().await {
        Ok(text) => text,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: the encode task failed");
            return reply(StatusCode::INTERNAL_SERVER_ERROR, "encoding the metrics failed\n");
        }
    };
    let mut r = Response::new(Full::new(Bytes::from(if method == Method::HEAD {
        String::new()
    } else {
        text
    })));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(prometheus_client::encoding::prometheus_text::CONTENT_TYPE),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    type Encoded = std::future::Ready<Result<String, tokio::task::JoinError>>;

    /// The status and body of one request, and whether it was encoded.
    async fn ask(path: &str, method: Method, no_body: bool) -> (StatusCode, String, bool) {
        let mut encoded = false;
        let r = respond(path, &method, no_body, || -> Encoded {
            encoded = true;
            std::future::ready(Ok("crius_x 1\n".to_string()))
        })
        .await;
        let status = r.status();
        let body = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap(), encoded)
    }

    #[tokio::test]
    async fn only_a_bodyless_get_of_metrics_is_encoded() {
        let r = respond("/metrics", &Method::GET, true, || -> Encoded {
            std::future::ready(Ok(String::new()))
        })
        .await;
        assert_eq!(
            r.headers()[CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(
            ask("/metrics", Method::GET, true).await,
            (StatusCode::OK, "crius_x 1\n".to_string(), true)
        );
        assert_eq!(
            ask("/metrics", Method::HEAD, true).await,
            (StatusCode::OK, String::new(), true)
        );
        for (path, method, no_body, status) in [
            ("/", Method::GET, true, StatusCode::NOT_FOUND),
            ("/metrics/x", Method::GET, true, StatusCode::NOT_FOUND),
            ("/metrics", Method::POST, true, StatusCode::METHOD_NOT_ALLOWED),
            ("/metrics", Method::GET, false, StatusCode::PAYLOAD_TOO_LARGE),
        ] {
            let (got, _, encoded) = ask(path, method.clone(), no_body).await;
            assert_eq!((got, encoded), (status, false), "{path} {method}");
        }
    }

    /// Sends `request` to `addr` and returns what came back before the server closed or 5 s.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = c.write_all(request).await;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await;
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn a_request_head_past_the_cap_is_refused_and_the_server_goes_on() {
        let metrics = crate::metrics::tests::metrics_with(Default::default());
        let server = MetricsServer::start("127.0.0.1:0", metrics).await.unwrap();
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Fill: {}\r\n\r\n",
            "a".repeat(2 * MAX_HEAD_BYTES)
        );
        let refused = exchange(server.local_addr(), huge.as_bytes()).await;
        assert!(!refused.starts_with("HTTP/1.1 200"), "{refused:.80}");
        let ok = exchange(
            server.local_addr(),
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok:.80}");
    }

    #[tokio::test]
    async fn binding_a_taken_address_names_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let metrics = crate::metrics::tests::metrics_with(Default::default());
        let e = MetricsServer::start(&addr, metrics).await.err().unwrap();
        assert!(e.to_string().contains(&addr), "{e}");
    }
}
