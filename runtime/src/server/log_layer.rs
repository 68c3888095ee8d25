//! One log line per finished RPC: method, gRPC code, latency, and the message of a failure.
//! Success is logged at debug, a client's error (NotFound, InvalidArgument, ...) at info, a
//! runtime failure (Internal, Unknown, DataLoss, Unavailable, DeadlineExceeded) at error, so a
//! failed CreateContainer always leaves a line.
//!
//! Invariant: the layer only reads the response head; tonic puts an error's `grpc-status` in
//! the headers (a trailers-only response), a success's in trailers (counted here as OK).

use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::BoxFuture;
use tonic::codegen::http;

#[derive(Debug, Clone, Copy, Default)]
pub struct RpcLog;

impl<S> tower::Layer<S> for RpcLog {
    type Service = RpcLogService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcLogService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RpcLogService<S> {
    inner: S,
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
        let method = req.uri().path().to_string();
        let started = Instant::now();
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
                        .map(|m| percent_decode(m))
                        .unwrap_or_default();
                    log(&method, code, &message, elapsed);
                }
                Err(e) => tracing::error!(method, ?elapsed, error = %e, "rpc failed in transport"),
            }
            res
        })
    }
}

fn log(method: &str, code: tonic::Code, message: &str, elapsed: std::time::Duration) {
    use tonic::Code as C;
    match code {
        C::Ok => tracing::debug!(method, ?elapsed, "rpc ok"),
        C::Internal | C::Unknown | C::DataLoss | C::Unavailable | C::DeadlineExceeded => {
            tracing::error!(method, code = ?code, ?elapsed, message, "rpc failed")
        }
        _ => tracing::info!(method, code = ?code, ?elapsed, message, "rpc refused"),
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
    #[test]
    fn decodes_grpc_messages() {
        assert_eq!(super::percent_decode("no%20such%20pod%3A%20x"), "no such pod: x");
        assert_eq!(super::percent_decode("100%"), "100%");
        assert_eq!(super::percent_decode("%zz"), "%zz");
    }
}
