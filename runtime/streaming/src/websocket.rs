//! WebSocket transports (`crictl --transport websocket`): the channel protocol
//! `v5.channel.k8s.io` for exec/attach (first byte of each binary message is the channel: 0 stdin,
//! 1 stdout, 2 stderr, 3 error, 4 resize; the client sends `[255, 0]` to close stdin), and
//! `SPDY/3.1+portforward.k8s.io`, SPDY bytes carried in binary messages, for port-forward.
//!
//! Invariant: a client message the channel protocol has no place for (a channel other than
//! stdin, resize and close, or a resize that is not a terminal size) ends the
//! session as if the client had gone, as does a frame tungstenite refuses (oversized, unmasked,
//! reserved opcode).

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::backend::ProcessIo;
use super::backend::TermSize;
use super::remotecommand::{BadResize, Wanted, take_resizes};
use super::status::{Outcome, status_json};

pub const CHANNEL_V5: &str = "v5.channel.k8s.io";
pub const CHANNEL_V4: &str = "v4.channel.k8s.io";
pub const PORTFORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;
/// Largest WebSocket message or frame accepted from a client (stdin arrives in 32 KiB pieces);
/// a larger one ends the session.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Bytes tungstenite may hold unsent for a client that does not read, beyond which a send fails.
const MAX_WRITE_BUFFER: usize = 4 << 20;

/// The limits every WebSocket session runs with.
pub fn config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        .max_write_buffer_size(MAX_WRITE_BUFFER)
}

/// What one client message of the channel protocol carries.
#[derive(Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// Bytes for the process's stdin (never empty).
    Stdin(&'a [u8]),
    /// The terminal sizes completed by this message (possibly none).
    Resize(Vec<TermSize>),
    /// v5: the client closed its stdin; later stdin messages are ignored.
    CloseStdin,
    /// Empty, stdin after its close, or a close the session has no use for (v4, repeated).
    Ignored,
}

/// A client message the channel protocol has no place for; it ends the session.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelError {
    #[error(transparent)]
    Resize(#[from] BadResize),
    #[error("websocket message on channel {0}, which a client may not write")]
    Foreign(u8),
}

/// Client → server demultiplexing of the channel protocol, without I/O. Invariant: at most
/// [`MAX_RESIZE_PENDING`](super::remotecommand::MAX_RESIZE_PENDING) bytes of an unfinished resize message are held between messages; a
/// longer one is an error that ends the session.
pub struct ChannelDecoder {
    v5: bool,
    stdin_closed: bool,
    resize_buf: Vec<u8>,
}

impl ChannelDecoder {
    pub fn new(v5: bool) -> ChannelDecoder {
        ChannelDecoder {
            v5,
            stdin_closed: false,
            resize_buf: Vec::new(),
        }
    }

    /// Decodes one binary (or text) message: its first byte is the channel.
    pub fn decode<'a>(&mut self, msg: &'a [u8]) -> Result<Input<'a>, ChannelError> {
        let Some((&ch, payload)) = msg.split_first() else {
            return Ok(Input::Ignored);
        };
        Ok(match ch {
            STDIN if !self.stdin_closed && !payload.is_empty() => Input::Stdin(payload),
            STDIN => Input::Ignored,
            RESIZE => {
                self.resize_buf.extend_from_slice(payload);
                Input::Resize(take_resizes(&mut self.resize_buf)?)
            }
            CLOSE if self.v5 && payload.first() == Some(&STDIN) && !self.stdin_closed => {
                self.stdin_closed = true;
                Input::CloseStdin
            }
            CLOSE => Input::Ignored,
            other => return Err(ChannelError::Foreign(other)),
        })
    }

    /// Bytes of an unfinished resize message held for the next message.
    pub fn pending_resize(&self) -> usize {
        self.resize_buf.len()
    }
}

/// The channel-protocol side of one exec/attach: the process's io plus what finishes it.
pub struct ChannelSession {
    pub io: ProcessIo,
    out: mpsc::Sender<Message>,
    pumps: Vec<tokio::task::JoinHandle<()>>,
    writer: tokio::task::JoinHandle<()>,
    reader: tokio::task::JoinHandle<()>,
}

/// Starts the channel protocol on an upgraded WebSocket.
pub fn channel_session<S>(ws: WebSocketStream<S>, want: Wanted, v5: bool) -> ChannelSession
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(32);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let closing = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let (stdin_tx, stdin_rx) = mpsc::channel::<Vec<u8>>(16);
    let (resize_tx, resize_rx) = mpsc::channel(4);
    let (gone_tx, gone) = watch::channel(false);
    let reader = tokio::spawn(async move {
        let mut stdin_tx = Some(stdin_tx);
        let mut dec = ChannelDecoder::new(v5);
        while let Some(Ok(msg)) = source.next().await {
            let data = match msg {
                Message::Binary(b) => b,
                Message::Text(t) => bytes::Bytes::from(t),
                Message::Close(_) => break,
                _ => continue,
            };
            match dec.decode(&data) {
                Ok(Input::Stdin(payload)) => {
                    if let Some(tx) = &stdin_tx
                        && tx.send(payload.to_vec()).await.is_err()
                    {
                        stdin_tx = None;
                    }
                }
                Ok(Input::Resize(sizes)) => {
                    for s in sizes {
                        let _ = resize_tx.send(s).await;
                    }
                }
                Ok(Input::CloseStdin) => stdin_tx = None,
                Ok(Input::Ignored) => {}
                Err(e) => {
                    tracing::warn!("{e}; ending the session");
                    break;
                }
            }
        }
        let _ = gone_tx.send(true);
    });
    let mut pumps = Vec::new();
    let mut output = |channel: u8| {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
        let out = out.clone();
        pumps.push(tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                let mut m = Vec::with_capacity(chunk.len() + 1);
                m.push(channel);
                m.extend_from_slice(&chunk);
                if out.send(Message::binary(m)).await.is_err() {
                    return;
                }
            }
            // v5's CLOSE is client → server only: client-go rejects it from the server ("Unknown
            // stream id 255"), so output ends with the status on channel 3 and the close frame.
        }));
        tx
    };
    let stdout = want.stdout.then(|| output(STDOUT));
    let stderr = (want.stderr && !want.tty).then(|| output(STDERR));
    let io = ProcessIo {
        stdin: want.stdin.then_some(stdin_rx),
        stdout,
        stderr,
        resize: want.tty.then_some(resize_rx),
        tty: want.tty,
        client_gone: gone,
    };
    ChannelSession {
        io,
        out,
        pumps,
        writer,
        reader,
    }
}

impl ChannelSession {
    /// Takes the io out for the backend, keeping the session to finish it later.
    pub fn split(self) -> (ProcessIo, ChannelFinisher) {
        let ChannelSession {
            io,
            out,
            pumps,
            writer,
            reader,
        } = self;
        (
            io,
            ChannelFinisher {
                out,
                pumps,
                writer,
                reader,
            },
        )
    }
}

pub struct ChannelFinisher {
    out: mpsc::Sender<Message>,
    pumps: Vec<tokio::task::JoinHandle<()>>,
    writer: tokio::task::JoinHandle<()>,
    reader: tokio::task::JoinHandle<()>,
}

impl ChannelFinisher {
    /// Drains output, writes the status on channel 3, closes with code 1000.
    pub async fn finish(self, outcome: &Outcome) {
        for p in self.pumps {
            let _ = p.await;
        }
        let mut m = vec![ERROR];
        m.extend_from_slice(&status_json(outcome));
        let _ = self.out.send(Message::binary(m)).await;
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = self.out.send(Message::Close(Some(close))).await;
        drop(self.out);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.writer).await;
        self.reader.abort();
    }
}

/// Carries a SPDY byte stream over binary WebSocket messages; returns the local end of a pipe
/// on which the SPDY session runs.
pub fn tunnel<S>(ws: WebSocketStream<S>) -> tokio::io::DuplexStream
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (local, remote) = tokio::io::duplex(256 * 1024);
    let (mut pipe_rd, mut pipe_wr) = tokio::io::split(remote);
    let (mut sink, mut source) = ws.split();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = source.next().await {
            match msg {
                Message::Binary(b) if pipe_wr.write_all(&b).await.is_err() => break,
                Message::Binary(_) => {}
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = pipe_wr.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match pipe_rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
        let _ = sink.close().await;
    });
    local
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remotecommand::MAX_RESIZE_PENDING;

    #[test]
    fn channels_demultiplex_and_v5_closes_stdin() {
        let mut d = ChannelDecoder::new(true);
        assert_eq!(d.decode(b"\0abc").unwrap(), Input::Stdin(b"abc"));
        assert_eq!(d.decode(b"\0").unwrap(), Input::Ignored);
        assert_eq!(d.decode(b"").unwrap(), Input::Ignored);
        assert_eq!(d.decode(b"\x01out"), Err(ChannelError::Foreign(1)));
        assert_eq!(d.decode(b"\x09"), Err(ChannelError::Foreign(9)));
        assert_eq!(
            d.decode(b"\x04{\"Width\":80,\"Height\":24}{\"Wid").unwrap(),
            Input::Resize(vec![TermSize {
                width: 80,
                height: 24
            }])
        );
        assert_eq!(d.pending_resize(), 5);
        assert_eq!(
            d.decode(b"\x04th\":1,\"Height\":2}").unwrap(),
            Input::Resize(vec![TermSize { width: 1, height: 2 }])
        );
        assert_eq!(d.decode(&[CLOSE, STDIN]).unwrap(), Input::CloseStdin);
        assert_eq!(d.decode(b"\0late").unwrap(), Input::Ignored);
        assert_eq!(d.decode(&[CLOSE, STDIN]).unwrap(), Input::Ignored);
        let mut v4 = ChannelDecoder::new(false);
        assert_eq!(v4.decode(&[CLOSE, STDIN]).unwrap(), Input::Ignored);
        assert_eq!(v4.decode(b"\0x").unwrap(), Input::Stdin(b"x"));
    }

    #[test]
    fn an_endless_resize_message_ends_the_session() {
        let mut d = ChannelDecoder::new(true);
        let mut msg = vec![RESIZE];
        msg.extend_from_slice(b"{\"Width\":");
        msg.resize(MAX_RESIZE_PENDING + 2, b' ');
        assert!(d.decode(&msg).is_err());
        assert_eq!(d.pending_resize(), 0);
    }
}
