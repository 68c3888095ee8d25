//! The streaming server behind Exec, Attach and PortForward: single-use tokens, an HTTP server on
//! `streaming.address`, SPDY/3.1 and WebSocket transports and the Kubernetes remote-command and
//! port-forward protocols on top of them.
//!
//! Flow: the CRI RPC validates the request and calls [`StreamingServer::url`], which caches the
//! request under a fresh token; the client (kubelet, crictl, critest) connects to that URL and
//! upgrades; the request is redeemed once and served against the [`StreamBackend`].

pub mod accept;
pub mod backend;
mod http;
pub mod portforward;
pub mod remotecommand;
pub mod spdy;
pub mod status;
pub mod tokens;
pub mod websocket;

#[cfg(test)]
mod fuzz_seeds;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use cri_api::v1::{AttachRequest, ExecRequest, PortForwardRequest};

pub use backend::{BackendError, ProcessIo, StreamBackend, TermSize};
use tokens::{MAX_IN_FLIGHT, RequestCache, TOKEN_TTL, TokenError};

/// A validated streaming request waiting for its client.
#[derive(Debug, Clone)]
pub enum Pending {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

impl Pending {
    fn path(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

pub struct StreamingServer {
    cache: RequestCache<Pending>,
    addr: SocketAddr,
    backend: Arc<dyn StreamBackend>,
}

#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    #[error("cannot listen for streaming on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl StreamingServer {
    /// Binds `address:port` (port 0 picks one) and starts serving; URLs stay valid for
    /// [`TOKEN_TTL`], kubelet's request cache TTL.
    pub async fn start(
        address: &str,
        port: u16,
        backend: Arc<dyn StreamBackend>,
    ) -> Result<Arc<StreamingServer>, StreamingError> {
        StreamingServer::start_with_token_ttl(address, port, TOKEN_TTL, backend).await
    }

    /// [`StreamingServer::start`] with URLs valid for `token_ttl` (tests use a short one instead
    /// of waiting out the real minute).
    pub async fn start_with_token_ttl(
        address: &str,
        port: u16,
        token_ttl: std::time::Duration,
        backend: Arc<dyn StreamBackend>,
    ) -> Result<Arc<StreamingServer>, StreamingError> {
        let bind = format!("{address}:{port}");
        let bind_err = |source| StreamingError::Bind {
            addr: bind.clone(),
            source,
        };
        let ip: std::net::IpAddr = address.parse().map_err(|_| {
            bind_err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not an IP address",
            ))
        })?;
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, port))
            .await
            .map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let server = Arc::new(StreamingServer {
            cache: RequestCache::new(token_ttl, MAX_IN_FLIGHT),
            addr,
            backend,
        });
        tokio::spawn(http::accept_loop(listener, server.clone()));
        tracing::info!(%addr, "streaming server listening");
        Ok(server)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Caches `req` and returns the absolute URL its client must use (once, before the token TTL).
    pub fn url(&self, req: Pending) -> Result<String, StreamingError> {
        let path = req.path();
        let token = self.cache.insert(req)?;
        Ok(format!("http://{}/{path}/{token}", self.addr))
    }
}
