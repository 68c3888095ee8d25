//! The Kubernetes remote-command protocol (exec and attach) over a SPDY session: the client opens
//! error, stdin, stdout, stderr and resize streams; the server waits for all it expects, runs the
//! command, half-closes stdout/stderr once drained, then writes the status on the error stream.
//!
//! Invariant: a resize message longer than [`MAX_RESIZE_PENDING`] bytes ends the session as if
//! the client had gone (the process is killed); nothing buffers client input without bound.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::backend::{ProcessIo, TermSize};
use super::spdy::{Session, Stream};
use super::status::{Outcome, status_json, status_text};

/// How long the client has to open every stream it announced (kubelet's value).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes of one unfinished resize message held (a real one is about 30 bytes).
pub const MAX_RESIZE_PENDING: usize = 4096;

#[derive(Debug, thiserror::Error)]
#[error("terminal resize message longer than {MAX_RESIZE_PENDING} bytes")]
pub struct ResizeTooLarge;

/// Protocol versions for exec/attach, newest first (the server's preference list).
pub const SUPPORTED: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// The negotiated protocol's version number (1 for the legacy `channel.k8s.io`).
pub fn version_of(protocol: &str) -> u8 {
    match protocol {
        "v5.channel.k8s.io" => 5,
        "v4.channel.k8s.io" => 4,
        "v3.channel.k8s.io" => 3,
        "v2.channel.k8s.io" => 2,
        _ => 1,
    }
}

/// Which streams the client will open, from the cached CRI request.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The streams of one exec/attach, once all have arrived.
pub struct Streams {
    pub error: Stream,
    pub stdin: Option<Stream>,
    pub stdout: Option<Stream>,
    pub stderr: Option<Stream>,
    pub resize: Option<Stream>,
}

/// Waits until every expected stream exists. Errors name what is missing.
pub async fn collect(session: &mut Session, want: Wanted, version: u8) -> Result<Streams, String> {
    let resize_expected = want.tty && version >= 3;
    let (mut error, mut stdin, mut stdout, mut stderr, mut resize) = (None, None, None, None, None);
    let done = |e: &Option<Stream>,
                i: &Option<Stream>,
                o: &Option<Stream>,
                r: &Option<Stream>,
                z: &Option<Stream>| {
        e.is_some()
            && (!want.stdin || i.is_some())
            && (!want.stdout || o.is_some())
            && (!want.stderr || want.tty || r.is_some())
            && (!resize_expected || z.is_some())
    };
    let wait = async {
        while !done(&error, &stdin, &stdout, &stderr, &resize) {
            let Some(s) = session.incoming.recv().await else {
                return Err("connection closed before all streams were created".to_string());
            };
            match s.kind() {
                "error" => error = Some(s),
                "stdin" => stdin = Some(s),
                "stdout" => stdout = Some(s),
                "stderr" => stderr = Some(s),
                "resize" => resize = Some(s),
                other => {
                    tracing::debug!(streamtype = other, "unexpected stream; resetting it");
                    s.tx.reset().await;
                }
            }
        }
        Ok(())
    };
    tokio::time::timeout(STREAM_CREATION_TIMEOUT, wait)
        .await
        .map_err(|_| {
            format!("timed out after {STREAM_CREATION_TIMEOUT:?} waiting for the client's streams")
        })??;
    Ok(Streams {
        error: error.expect("checked"),
        stdin,
        stdout,
        stderr,
        resize,
    })
}

/// Output pumps and the process's view of the streams.
pub struct Wiring {
    pub io: ProcessIo,
    pumps: Vec<tokio::task::JoinHandle<()>>,
}

impl Wiring {
    /// Separates the process's io from the output pumps.
    pub fn split(self) -> (ProcessIo, Drain) {
        (self.io, Drain(self.pumps))
    }
}

/// The output pumps of one exec/attach.
pub struct Drain(Vec<tokio::task::JoinHandle<()>>);

impl Drain {
    /// Waits until stdout/stderr are drained to the client and half-closed.
    pub async fn drain(self) {
        for p in self.0 {
            let _ = p.await;
        }
    }
}

/// Connects the streams to channels the backend uses.
pub fn wire(streams: &mut Streams, tty: bool, mut gone: tokio::sync::watch::Receiver<bool>) -> Wiring {
    let mut pumps = Vec::new();
    // The process's "client gone": the connection ended, or the client broke the protocol.
    let (ended_tx, ended) = tokio::sync::watch::channel(false);
    let ended_tx = Arc::new(ended_tx);
    let on_gone = ended_tx.clone();
    tokio::spawn(async move {
        if gone.wait_for(|g| *g).await.is_ok() {
            let _ = on_gone.send(true);
        }
    });
    let stdin = streams
        .stdin
        .as_mut()
        .map(|s| std::mem::replace(&mut s.rx, mpsc::channel(1).1));
    let mut output = |s: &Option<Stream>| {
        s.as_ref().map(|s| {
            let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
            let w = s.tx.clone();
            pumps.push(tokio::spawn(async move {
                while let Some(chunk) = rx.recv().await {
                    if w.write(&chunk).await.is_err() {
                        return;
                    }
                }
                let _ = w.close().await;
            }));
            tx
        })
    };
    let stdout = output(&streams.stdout);
    let stderr = output(&streams.stderr);
    let resize = streams.resize.as_mut().map(|s| {
        let mut raw = std::mem::replace(&mut s.rx, mpsc::channel(1).1);
        let (tx, rx) = mpsc::channel(4);
        let abort = ended_tx.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(chunk) = raw.recv().await {
                buf.extend_from_slice(&chunk);
                let sizes = match take_resizes(&mut buf) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("{e}; ending the session");
                        let _ = abort.send(true);
                        return;
                    }
                };
                for size in sizes {
                    if tx.send(size).await.is_err() {
                        return;
                    }
                }
            }
        });
        rx
    });
    Wiring {
        io: ProcessIo {
            stdin,
            stdout,
            stderr,
            resize,
            tty,
            client_gone: ended,
        },
        pumps,
    }
}

/// Splits complete JSON objects (`{"Width":80,"Height":24}`) off the front of `buf`. The client
/// writes one object per message, newline-separated or back to back; bad objects are skipped.
/// An unfinished object longer than [`MAX_RESIZE_PENDING`] is an error.
pub fn take_resizes(buf: &mut Vec<u8>) -> Result<Vec<TermSize>, ResizeTooLarge> {
    let mut out = Vec::new();
    let mut consumed = 0;
    let mut stream = serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
    while let Some(item) = stream.next() {
        match item {
            Ok(v) => {
                consumed = stream.byte_offset();
                if let Ok(size) = serde_json::from_value::<TermSize>(v) {
                    out.push(size);
                }
            }
            Err(e) if e.is_eof() => break,
            Err(_) => {
                consumed = buf.len();
                break;
            }
        }
    }
    buf.drain(..consumed);
    if buf.len() > MAX_RESIZE_PENDING {
        buf.clear();
        return Err(ResizeTooLarge);
    }
    Ok(out)
}

/// Writes the outcome on the error stream in the negotiated version's encoding and closes it.
pub async fn finish(error: &Stream, version: u8, outcome: &Outcome) {
    let body = if version >= 4 {
        Some(status_json(outcome))
    } else {
        status_text(outcome)
    };
    if let Some(b) = body {
        let _ = error.tx.write(&b).await;
    }
    let _ = error.tx.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_messages_split_and_partial_ones_wait() {
        let mut buf = br#"{"Width":80,"Height":24}
{"Width":100,"Height":40}{"Width":1"#
            .to_vec();
        let got = take_resizes(&mut buf).unwrap();
        assert_eq!(
            got,
            vec![
                TermSize {
                    width: 80,
                    height: 24
                },
                TermSize {
                    width: 100,
                    height: 40
                }
            ]
        );
        assert_eq!(buf, br#"{"Width":1"#.to_vec());
        buf.extend_from_slice(br#"2,"Height":3}"#);
        assert_eq!(
            take_resizes(&mut buf).unwrap(),
            vec![TermSize { width: 12, height: 3 }]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn an_endless_resize_message_is_refused() {
        let mut buf = br#"{"Width":"#.to_vec();
        buf.extend(std::iter::repeat_n(b' ', MAX_RESIZE_PENDING));
        assert!(take_resizes(&mut buf).is_err());
        assert!(buf.is_empty(), "nothing is kept");
    }

    #[test]
    fn versions() {
        assert_eq!(version_of("v4.channel.k8s.io"), 4);
        assert_eq!(version_of("channel.k8s.io"), 1);
    }
}
