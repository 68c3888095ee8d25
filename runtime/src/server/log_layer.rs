//! One log line per finished RPC: method, gRPC code, latency, and the message of a failure (the
//! error with its causes, each once: `error::chain`). It is logged inside the RPC's span, so it
//! carries the pod, container and image ids the handler recorded there (`ids.rs`).
//! Success is logged at debug, a client's error (NotFound, InvalidArgument, ...) at info, a
//! runtime failure (Internal, Unknown, DataLoss, Unavailable, DeadlineExceeded) at error, so a
//! failed CreateContainer always leaves a line.
//!
//! The same observation feeds the Prometheus series of the RPC (count by method and code,
//! latency by method: `crate::metrics`).
//!
//! Invariant: the layer only reads the response head; tonic puts an error's `grpc-status` in
//! the headers (a trailers-only response), a success's in trailers (counted here as OK).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::BoxFuture;
use tonic::codegen::http;

/// Logs each RPC and counts it in `metrics`.
#[derive(Debug, Clone)]
pub struct RpcLog {
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl<S> tower::Layer<S> for RpcLog {
    type Service = RpcLogService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcLogService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RpcLogService<S> {
    inner: S,
    metrics: Arc<crate::metrics::Metrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcLogService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let path = req.uri().path().to_string();
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            let elapsed = started.elapsed();
            match &res {
                Ok(resp) => {
                    let h = resp.headers();
                    let code = h
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .map(tonic::Code::from)
                        .unwrap_or(tonic::Code::Ok);
                    let message = h
                        .get("grpc-message")
                        .and_then(|v| v.to_str().ok())
                        .map(percent_decode)
                        .unwrap_or_default();
                    log(code, &message, elapsed);
                    metrics.observe_rpc(&path, code, elapsed);
                }
                Err(e) => {
                    tracing::error!(?elapsed, error = %e, "rpc failed in transport");
                    metrics.observe_rpc(&path, tonic::Code::Unknown, elapsed);
                }
            }
            res
        })
    }
}

/// The method and ids are the fields of the RPC's span (`rpc_span`), which this runs in.
fn log(code: tonic::Code, message: &str, elapsed: std::time::Duration) {
    use tonic::Code as C;
    match code {
        C::Ok => tracing::debug!(?elapsed, "rpc ok"),
        C::Internal | C::Unknown | C::DataLoss | C::Unavailable | C::DeadlineExceeded => {
            tracing::error!(code = ?code, ?elapsed, message, "rpc failed")
        }
        _ => tracing::info!(code = ?code, ?elapsed, message, "rpc refused"),
    }
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2 spec).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tonic::codegen::http;
    use tower::{Layer, Service};

    /// Collects what the fmt subscriber writes.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs one RPC answering `status` (None: OK) through the layer, inside `rpc_span` with a
    /// container id recorded as a handler does, and returns the log.
    fn logged(status: Option<(i32, &'static str)>) -> String {
        logged_into(status, &crate::metrics::tests::metrics_with(Default::default()))
    }

    /// [`logged`], counting in `metrics`.
    fn logged_into(status: Option<(i32, &'static str)>, metrics: &Arc<crate::metrics::Metrics>) -> String {
        let buf = Buf::default();
        let w = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let inner = tower::service_fn(move |_req: http::Request<()>| async move {
                let mut resp = http::Response::new(());
                if let Some((code, msg)) = status {
                    resp.headers_mut()
                        .insert("grpc-status", code.to_string().parse().unwrap());
                    resp.headers_mut().insert("grpc-message", msg.parse().unwrap());
                }
                Ok::<_, std::convert::Infallible>(resp)
            });
            let mut svc = super::RpcLog {
                metrics: metrics.clone(),
            }
            .layer(inner);
            let req = http::Request::builder()
                .uri("/runtime.v1.RuntimeService/StartContainer")
                .body(())
                .unwrap();
            let span = crate::server::rpc_span(&req);
            let _in = span.enter();
            crate::server::ids::record(crate::server::ids::CONTAINER, "c0ffee");
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(svc.call(req)).unwrap();
        });
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn one_line_per_rpc_with_its_ids_at_the_level_of_its_code() {
        let ok = logged(None);
        assert_eq!(ok.lines().count(), 1, "{ok}");
        assert!(ok.contains("DEBUG") && ok.contains("rpc ok"), "{ok}");
        assert!(ok.contains("container=c0ffee"), "{ok}");
        assert!(ok.contains("/runtime.v1.RuntimeService/StartContainer"), "{ok}");

        let refused = logged(Some((5, "container%20c0ffee%20not%20found")));
        assert_eq!(refused.lines().count(), 1, "{refused}");
        assert!(
            refused.contains(" INFO ") && refused.contains("NotFound"),
            "{refused}"
        );
        assert!(refused.contains("container c0ffee not found"), "{refused}");

        let failed = logged(Some((13, "container%20c0ffee:%20shim:%20gone")));
        assert_eq!(failed.lines().count(), 1, "{failed}");
        assert!(
            failed.contains("ERROR") && failed.contains("Internal"),
            "{failed}"
        );
        assert!(failed.contains("container c0ffee: shim: gone"), "{failed}");
        assert!(failed.contains("container=c0ffee"), "{failed}");
    }

    #[test]
    fn each_rpc_is_counted_by_method_and_code() {
        let metrics = crate::metrics::tests::metrics_with(Default::default());
        logged_into(None, &metrics);
        logged_into(None, &metrics);
        logged_into(Some((5, "gone")), &metrics);
        let text = metrics.encode();
        for series in [
            r#"crius_grpc_requests_total{method="StartContainer",code="OK"} 2"#,
            r#"crius_grpc_requests_total{method="StartContainer",code="NOT_FOUND"} 1"#,
            r#"crius_grpc_request_duration_seconds_count{method="StartContainer"} 3"#,
        ] {
            assert!(text.lines().any(|l| l == series), "{series} in:\n{text}");
        }
    }

    #[test]
    fn decodes_grpc_messages() {
        assert_eq!(super::percent_decode("no%20such%20pod%3A%20x"), "no such pod: x");
        assert_eq!(super::percent_decode("100%"), "100%");
        assert_eq!(super::percent_decode("%zz"), "%zz");
    }
}
