//! Accepting TCP connections for a bounded HTTP server (the streaming server and the daemon's
//! metrics endpoint): a connection is accepted only once one of the server's slots is free, so
//! further clients wait in the kernel's listen backlog; a failing `accept` (EMFILE, ENFILE,
//! ENOBUFS) backs off up to [`MAX_ACCEPT_BACKOFF`] instead of spinning.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Longest pause between failing accepts.
pub const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The next connection, with the slot it holds until the permit is dropped. `None` once `slots`
/// is closed. `server` names the server in the log line of a failing accept.
pub async fn next_in_slot(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    server: &'static str,
) -> Option<(TcpStream, OwnedSemaphorePermit)> {
    let permit = slots.clone().acquire_owned().await.ok()?;
    let mut backoff = Duration::ZERO;
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => return Some((tcp, permit)),
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                tracing::warn!(server, error = %e, "accept failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_waits_for_a_free_slot() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slots = Arc::new(Semaphore::new(1));
        let _a = TcpStream::connect(addr).await.unwrap();
        let (_first, permit) = next_in_slot(&listener, &slots, "test").await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let second = tokio::time::timeout(
            Duration::from_millis(200),
            next_in_slot(&listener, &slots, "test"),
        )
        .await;
        assert!(second.is_err(), "no slot: the second client waits");
        drop(permit);
        let (_second, _p) = next_in_slot(&listener, &slots, "test").await.unwrap();
        slots.close();
        assert!(next_in_slot(&listener, &slots, "test").await.is_none());
    }
}
