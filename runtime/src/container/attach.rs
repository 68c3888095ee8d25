//! The streaming Attach: connects to the shim's attach socket (`crius_shim_api::attach`) and
//! pumps the container's live output to the client and the client's stdin to the container;
//! terminal resizes go to the shim's control socket.
//!
//! Invariants: only a RUNNING container can be attached (FailedPrecondition otherwise);
//! detaching never touches the container (closing the connection is the detach; `stdin_once`
//! is the shim's business); the attach ends when the shim closes the socket (the container
//! exited) or the client went away.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use crius_shim_api::Request;
use crius_shim_api::attach::{IN_STDIN, IN_STDIN_EOF, MAX_DATA, MAX_PACKET, OUT_STDERR, packet};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};

use super::exec_stream::gone;
use super::stdio::RawIo;
use super::{ContainerError, Containers};
use crius_streaming::ProcessIo;

impl Containers {
    /// Streaming Attach: until the container exits or the client goes away.
    pub async fn attach(
        self: &Arc<Self>,
        req: &cri_api::v1::AttachRequest,
        io: ProcessIo,
    ) -> Result<(), ContainerError> {
        let id = self.running_off(&req.container_id, "attach").await?;
        let shim_dir = self.shim_dir(&id);
        let dir = shim_dir.clone();
        let sock = self
            .blocking(move |_| connect_attach(&dir))
            .await
            .map_err(|source| ContainerError::Io {
                what: "connect to the attach socket in",
                path: shim_dir.clone(),
                source,
            })?;
        let sock = Arc::new(RawIo::new(sock).map_err(|source| ContainerError::Io {
            what: "attach socket in",
            path: shim_dir.clone(),
            source,
        })?);
        let ProcessIo {
            stdin,
            stdout,
            stderr,
            resize,
            client_gone,
            ..
        } = io;
        let mut side = Vec::new();
        if let Some(mut rx) = stdin {
            let s = sock.clone();
            side.push(tokio::spawn(async move {
                while let Some(chunk) = rx.recv().await {
                    for piece in chunk.chunks(MAX_DATA) {
                        if s.send_packet(&packet(IN_STDIN, piece)).await.is_err() {
                            return;
                        }
                    }
                }
                let _ = s.send_packet(&[IN_STDIN_EOF]).await;
            }));
        }
        if let Some(mut sizes) = resize {
            let shim = self.shim.clone();
            let dir = shim_dir.clone();
            side.push(tokio::spawn(async move {
                while let Some(size) = sizes.recv().await {
                    let req = Request::Resize {
                        width: size.width,
                        height: size.height,
                    };
                    if let Err(e) = shim.request(&dir, req).await {
                        tracing::debug!(error = %e, "attach resize failed");
                    }
                }
            }));
        }
        let reader = async {
            let mut buf = vec![0u8; MAX_PACKET];
            loop {
                let n = match sock.recv_packet(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                // A terminal's output is all stdout; a client without stderr gets none.
                let tx = if buf[0] == OUT_STDERR { &stderr } else { &stdout };
                if let Some(tx) = tx
                    && tx.send(buf[1..n].to_vec()).await.is_err()
                {
                    return;
                }
            }
        };
        tokio::select! {
            () = reader => {}
            () = gone(client_gone) => tracing::debug!(%id, "attach client went away; detaching"),
        }
        for t in side {
            t.abort();
        }
        Ok(())
    }
}

/// Connects to `<shim_dir>/attach.sock` (any length of path).
fn connect_attach(shim_dir: &Path) -> std::io::Result<OwnedFd> {
    let dir = std::fs::File::open(shim_dir)?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    let addr = UnixAddr::new(&crius_shim_api::short_socket_path(
        &dir,
        crius_shim_api::ATTACH_SOCKET,
    ))?;
    connect(fd.as_raw_fd(), &addr)?;
    Ok(fd)
}
