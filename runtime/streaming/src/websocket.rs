//! WebSocket transports (`crictl --transport websocket`): the channel protocol
//! `v5.channel.k8s.io` for exec/attach (first byte of each binary message is the channel: 0 stdin,
//! 1 stdout, 2 stderr, 3 error, 4 resize; the client sends `[255, 0]` to close stdin), and
//! `SPDY/3.1+portforward.k8s.io`, SPDY bytes carried in binary messages, for port-forward.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::backend::ProcessIo;
use super::remotecommand::{Wanted, take_resizes};
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
        let mut resize_buf = Vec::new();
        while let Some(Ok(msg)) = source.next().await {
            let data = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&ch, payload)) = data.split_first() else {
                continue;
            };
            match ch {
                STDIN => {
                    if let Some(tx) = &stdin_tx
                        && !payload.is_empty()
                        && tx.send(payload.to_vec()).await.is_err()
                    {
                        stdin_tx = None;
                    }
                }
                RESIZE => {
                    resize_buf.extend_from_slice(payload);
                    match take_resizes(&mut resize_buf) {
                        Ok(sizes) => {
                            for s in sizes {
                                let _ = resize_tx.send(s).await;
                            }
                        }
                        Err(e) => {
                            tracing::warn!("{e}; ending the session");
                            break;
                        }
                    }
                }
                CLOSE if v5 && payload.first() == Some(&STDIN) => stdin_tx = None,
                _ => {}
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
