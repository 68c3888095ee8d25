//! Async I/O on the raw fds the streaming verbs own — a terminal's master and the shim's attach
//! socket (`SOCK_SEQPACKET`) — and the copy loops between them and a client's channels.
//!
//! Invariants: every fd here is non-blocking and registered with tokio once; a read of a pty
//! master whose last slave closed (EIO) is end of stream, not an error.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::socket::{MsgFlags, recv, send};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crius_streaming::TermSize;

/// Largest chunk read from a process at once.
pub const CHUNK: usize = 32 * 1024;

pub fn set_nonblocking(fd: &impl AsFd) -> io::Result<()> {
    let raw = fd.as_fd().as_raw_fd();
    let flags = OFlag::from_bits_truncate(fcntl(raw, FcntlArg::F_GETFL)?);
    fcntl(raw, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Sets a terminal's window size (TIOCSWINSZ on its master).
pub fn set_winsize(fd: &impl AsFd, size: TermSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which outlives the call.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A non-blocking fd driven by tokio.
pub struct RawIo(AsyncFd<OwnedFd>);

impl RawIo {
    pub fn new(fd: OwnedFd) -> io::Result<RawIo> {
        set_nonblocking(&fd)?;
        // SAFETY: an OwnedFd stays open and keeps its number until the AsyncFd drops it.
        Ok(RawIo(unsafe { AsyncFd::register(fd) }?))
    }

    pub fn fd(&self) -> &OwnedFd {
        self.0.get_ref()
    }

    /// Reads what is there; 0 at end of stream (EOF, or EIO on a pty master).
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self
            .0
            .async_io(Interest::READABLE, |fd| {
                nix::unistd::read(fd.as_raw_fd(), buf).map_err(io::Error::from)
            })
            .await;
        match r {
            Err(e) if e.raw_os_error() == Some(Errno::EIO as i32) => Ok(0),
            other => other,
        }
    }

    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self
                .0
                .async_io(Interest::WRITABLE, |fd| {
                    nix::unistd::write(fd, data).map_err(io::Error::from)
                })
                .await?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Receives one packet (SOCK_SEQPACKET); 0 when the peer hung up.
    pub async fn recv_packet(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .async_io(Interest::READABLE, |fd| {
                recv(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
            })
            .await
    }

    /// Sends one packet (SOCK_SEQPACKET).
    pub async fn send_packet(&self, p: &[u8]) -> io::Result<()> {
        self.0
            .async_io(Interest::WRITABLE, |fd| {
                send(fd.as_raw_fd(), p, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL)
                    .map_err(io::Error::from)
            })
            .await
            .map(|_| ())
    }
}

/// Copies a reader to a client channel until end of stream. A client that stopped listening
/// does not stop the copy: the process must never block on a full pipe.
pub async fn copy_out<R>(mut read: R, tx: Option<mpsc::Sender<Vec<u8>>>)
where
    R: AsyncReadChunk,
{
    let mut tx = tx;
    let mut buf = vec![0u8; CHUNK];
    loop {
        match read.read_chunk(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Some(t) = &tx
                    && t.send(buf[..n].to_vec()).await.is_err()
                {
                    tx = None;
                }
            }
        }
    }
}

/// Something [`copy_out`] reads from: a pipe or a pty master.
pub trait AsyncReadChunk {
    fn read_chunk(&mut self, buf: &mut [u8]) -> impl std::future::Future<Output = io::Result<usize>> + Send;
}

impl AsyncReadChunk for tokio::net::unix::pipe::Receiver {
    async fn read_chunk(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        tokio::io::AsyncReadExt::read(self, buf).await
    }
}

impl AsyncReadChunk for std::sync::Arc<RawIo> {
    async fn read_chunk(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf).await
    }
}
