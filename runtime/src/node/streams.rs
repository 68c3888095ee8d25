//! The runtime's side of the streaming server: exec and attach go to the container layer, port
//! forwarding dials inside the pod's pinned network namespace.
//!
//! Invariant: `setns` happens only on a short-lived OS thread made for one dial, never on a
//! tokio worker; the connected socket keeps its namespace after the thread exits.

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cri_api::v1::{AttachRequest, ExecRequest};
use crius_sandbox::SandboxManager;

use crate::container::Containers;
use crius_streaming::{BackendError, ProcessIo, StreamBackend};

/// How long connecting to a port inside a pod may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RuntimeStreams {
    pub sandboxes: Arc<SandboxManager>,
    pub containers: Arc<Containers>,
}

#[tonic::async_trait]
impl StreamBackend for RuntimeStreams {
    async fn exec(&self, req: &ExecRequest, io: ProcessIo) -> Result<i32, BackendError> {
        self.containers.exec_stream(req, io).await.map_err(|e| match e {
            crate::container::ContainerError::NotFound(_) => BackendError::NotFound(e.to_string()),
            other => BackendError::Failed(other.to_string()),
        })
    }

    async fn attach(&self, req: &AttachRequest, io: ProcessIo) -> Result<(), BackendError> {
        self.containers.attach(req, io).await.map_err(|e| match e {
            crate::container::ContainerError::NotFound(_) => BackendError::NotFound(e.to_string()),
            other => BackendError::Failed(other.to_string()),
        })
    }

    async fn dial(&self, pod_sandbox_id: &str, port: u16) -> Result<tokio::net::TcpStream, BackendError> {
        let record = self
            .sandboxes
            .sandbox(pod_sandbox_id)
            .map_err(|e| BackendError::Failed(e.to_string()))?
            .ok_or_else(|| BackendError::NotFound(format!("pod sandbox {pod_sandbox_id} not found")))?;
        let netns = record.meta.namespaces.net.clone();
        let std_stream = super::on_own_thread("crius-dial", move || dial_in(netns, port))
            .await
            .map_err(BackendError::Failed)??;
        std_stream
            .set_nonblocking(true)
            .map_err(|e| BackendError::Failed(e.to_string()))?;
        tokio::net::TcpStream::from_std(std_stream).map_err(|e| BackendError::Failed(e.to_string()))
    }
}

/// Runs on its own thread: enters `netns` (None: the host's, for host-network pods) and
/// connects to 127.0.0.1:port.
fn dial_in(netns: Option<PathBuf>, port: u16) -> Result<TcpStream, BackendError> {
    if let Some(path) = &netns {
        let f = std::fs::File::open(path).map_err(|e| {
            BackendError::Failed(format!(
                "cannot open pod network namespace {}: {e}",
                path.display()
            ))
        })?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| BackendError::Failed(format!("cannot enter pod network namespace: {e}")))?;
    }
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    TcpStream::connect_timeout(&addr.into(), DIAL_TIMEOUT)
        .map_err(|e| BackendError::Failed(format!("connect to 127.0.0.1:{port}: {e}")))
}
