//! What the streaming protocols need from the rest of the runtime, as one trait: run an exec,
//! attach to a container's live stdio, dial a port inside a pod. Stdio travels over channels so
//! SPDY and WebSocket share one implementation of each protocol.
//!
//! Contract for implementors: output senders are dropped (EOF) once the process's output is
//! drained; when `client_gone` flips to true the client has disconnected and any exec process
//! must be killed; nothing started for a request may outlive it.

use cri_api::v1::{AttachRequest, ExecRequest};
use tokio::sync::{mpsc, watch};

/// A terminal size from the client's resize stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The client's side of a process's stdio.
pub struct ProcessIo {
    /// Client → process; closes when the client half-closes stdin. None: no stdin requested.
    pub stdin: Option<mpsc::Receiver<Vec<u8>>>,
    /// Process → client. Dropping a sender ends that stream for the client.
    pub stdout: Option<mpsc::Sender<Vec<u8>>>,
    pub stderr: Option<mpsc::Sender<Vec<u8>>>,
    /// Terminal resizes (tty only).
    pub resize: Option<mpsc::Receiver<TermSize>>,
    pub tty: bool,
    /// Becomes true when the client's connection is gone.
    pub client_gone: watch::Receiver<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
}

#[async_trait::async_trait]
pub trait StreamBackend: Send + Sync + 'static {
    /// Runs `req.cmd` in the container; returns its exit code.
    async fn exec(&self, req: &ExecRequest, io: ProcessIo) -> Result<i32, BackendError>;
    /// Streams the container's live stdio until the client detaches or the container exits.
    async fn attach(&self, req: &AttachRequest, io: ProcessIo) -> Result<(), BackendError>;
    /// Connects to `127.0.0.1:port` inside the pod's network namespace (the host's for
    /// host-network pods).
    async fn dial(&self, pod_sandbox_id: &str, port: u16) -> Result<tokio::net::TcpStream, BackendError>;
}
