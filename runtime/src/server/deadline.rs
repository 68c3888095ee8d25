//! The client's deadline (`grpc-timeout`) answered as gRPC says: DEADLINE_EXCEEDED. tonic's
//! server enforces the header too, but answers CANCELLED when its timer wins the race with the
//! client's own (kubelet and critest then see a different code from run to run).
//!
//! Invariant: this layer sits inside tonic's own timeout and takes its timer first, so its
//! deadline is never later than tonic's; tonic polls the service before its timer, so when both
//! are due in the same tick the answer is this layer's DEADLINE_EXCEEDED. The handler's future
//! is dropped at the deadline, as tonic would drop it.

use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tonic::codegen::http;

/// Answers DEADLINE_EXCEEDED once the request's `grpc-timeout` has passed.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientDeadline;

impl<S> tower::Layer<S> for ClientDeadline {
    type Service = ClientDeadlineService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientDeadlineService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct ClientDeadlineService<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for ClientDeadlineService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let timeout = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| parse_timeout(v.as_bytes()));
        let fut = self.inner.call(req);
        let Some(timeout) = timeout else {
            return Box::pin(fut);
        };
        // Created now, before tonic's own timer (see the module's invariant).
        let sleep = tokio::time::sleep(timeout);
        Box::pin(async move {
            tokio::select! {
                biased;
                res = fut => res,
                () = sleep => Ok(tonic::Status::deadline_exceeded(format!(
                    "the client's deadline of {timeout:?} passed"
                ))
                .into_http()),
            }
        })
    }
}

/// `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n), per gRPC over HTTP/2.
/// Anything else is no deadline, as tonic treats it.
fn parse_timeout(v: &[u8]) -> Option<Duration> {
    let (unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic::codegen::http;
    use tower::{Layer, Service};

    use super::parse_timeout;

    #[test]
    fn timeouts_parse_as_grpc_defines_them_and_nothing_else() {
        assert_eq!(parse_timeout(b"1m"), Some(Duration::from_millis(1)));
        assert_eq!(parse_timeout(b"99999999S"), Some(Duration::from_secs(99_999_999)));
        assert_eq!(parse_timeout(b"2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_timeout(b"5n"), Some(Duration::from_nanos(5)));
        for bad in [&b""[..], b"m", b"123456789m", b"1x", b"-1S", b"1.5S", b" 1S"] {
            assert_eq!(parse_timeout(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    fn request(timeout: Option<&str>) -> http::Request<()> {
        let mut b = http::Request::builder().uri("/runtime.v1.ImageService/PullImage");
        if let Some(t) = timeout {
            b = b.header("grpc-timeout", t);
        }
        b.body(()).unwrap()
    }

    fn code(resp: &http::Response<()>) -> Option<String> {
        resp.headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[tokio::test]
    async fn a_handler_past_the_clients_deadline_answers_deadline_exceeded() {
        let slow = tower::service_fn(|_req: http::Request<()>| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(()))
        });
        let mut svc = super::ClientDeadline.layer(slow);
        let resp = svc.call(request(Some("1m"))).await.unwrap();
        assert_eq!(code(&resp).as_deref(), Some("4"), "DEADLINE_EXCEEDED");
    }

    #[tokio::test]
    async fn without_a_deadline_or_within_it_the_handler_answers() {
        let quick = tower::service_fn(|_req: http::Request<()>| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(()))
        });
        let mut svc = super::ClientDeadline.layer(quick);
        assert_eq!(code(&svc.call(request(None)).await.unwrap()), None);
        assert_eq!(code(&svc.call(request(Some("1S"))).await.unwrap()), None);
        assert_eq!(code(&svc.call(request(Some("bogus"))).await.unwrap()), None);
    }
}
