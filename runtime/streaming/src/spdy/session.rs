//! The session driver: one reader task parsing frames and routing them to streams, one writer
//! task serialising outbound frames in order.
//!
//! Invariants: header blocks are compressed in the order they are written (the encoder lock is
//! held until the frame is enqueued); every inbound header block, even of ignored frames, goes
//! through the one decoder so the zlib context stays in sync; a stream's inbound channel closes on
//! the client's FIN or RST_STREAM, or when the connection ends. Nothing queues without bound:
//! outbound frames wait in a queue of [`OUT_QUEUE`] frames (each at most [`CHUNK`] of data), so a
//! client that stops reading makes the writers wait, and through them the process whose output
//! they carry; an inbound frame larger than [`MAX_INBOUND_FRAME`] ends the connection, and at most
//! [`MAX_OPEN_STREAMS`] streams may be open at once (more are refused with RST_STREAM).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;

use super::frame::{FLAG_FIN, Frame, RST_CANCEL};
use super::headers::{Decoder, Encoder, Headers};

/// Largest DATA payload the server sends in one frame.
const CHUNK: usize = 32 * 1024;
/// Inbound DATA frames buffered per stream before the reader waits (backpressure on the socket).
const STREAM_BUFFER: usize = 64;
/// How long closing a session waits for queued frames to reach the socket.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Outbound frames queued per connection before senders wait: about 1 MiB of DATA.
const OUT_QUEUE: usize = 32;
/// Largest inbound frame accepted (clients send DATA of at most 32 KiB and small header blocks);
/// the 24-bit SPDY length would otherwise let one frame make us buffer 16 MiB.
pub const MAX_INBOUND_FRAME: usize = 1 << 20;
/// Streams a client may have open at once on one connection (an exec has five; a port-forward
/// two per forwarded connection).
pub const MAX_OPEN_STREAMS: usize = 256;
/// RST_STREAM status for a stream refused before any processing.
const RST_REFUSED_STREAM: u32 = 3;

enum Out {
    Bytes(Vec<u8>),
    Close,
}

struct Outbound {
    enc: Mutex<Encoder>,
    tx: mpsc::Sender<Out>,
}

impl Outbound {
    async fn send(&self, frame: Frame) -> std::io::Result<()> {
        self.tx
            .send(Out::Bytes(frame.encode()))
            .await
            .map_err(|_| closed())
    }

    async fn send_with_headers(
        &self,
        make: impl FnOnce(Vec<u8>) -> Frame,
        headers: &Headers,
    ) -> std::io::Result<()> {
        let mut enc = self.enc.lock().await;
        let block = enc.encode(headers);
        self.tx
            .send(Out::Bytes(make(block).encode()))
            .await
            .map_err(|_| closed())
    }

    async fn close(&self) {
        let _ = self.tx.send(Out::Close).await;
    }
}

fn closed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "SPDY connection closed")
}

/// The writing half of one stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: Arc<Outbound>,
    reset: Arc<AtomicBool>,
}

impl StreamWriter {
    /// Sends `data` as DATA frames; fails once the connection or the stream is gone.
    pub async fn write(&self, data: &[u8]) -> std::io::Result<()> {
        for chunk in data.chunks(CHUNK) {
            if self.reset.load(Ordering::Acquire) {
                return Err(closed());
            }
            self.out
                .send(Frame::Data {
                    stream_id: self.id,
                    flags: 0,
                    data: chunk.to_vec(),
                })
                .await?;
        }
        Ok(())
    }

    /// Half-closes the stream (empty DATA with FIN).
    pub async fn close(&self) -> std::io::Result<()> {
        if self.reset.load(Ordering::Acquire) {
            return Ok(());
        }
        self.out
            .send(Frame::Data {
                stream_id: self.id,
                flags: FLAG_FIN,
                data: Vec::new(),
            })
            .await
    }

    /// Aborts the stream (RST_STREAM CANCEL).
    pub async fn reset(&self) {
        self.reset.store(true, Ordering::Release);
        let _ = self
            .out
            .send(Frame::RstStream {
                stream_id: self.id,
                status: RST_CANCEL,
            })
            .await;
    }
}

/// A client-initiated stream.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// Inbound DATA payloads; `None` from `recv` means the client half-closed or reset.
    pub rx: mpsc::Receiver<Vec<u8>>,
    pub tx: StreamWriter,
}

impl Stream {
    /// The `streamtype` header (error, stdin, stdout, stderr, resize, data).
    pub fn kind(&self) -> &str {
        self.headers.get("streamtype").unwrap_or("")
    }
}

/// A running session. Streams arrive on `incoming`; dropping the session ends the connection.
pub struct Session {
    pub incoming: mpsc::Receiver<Stream>,
    /// Becomes true when the client's side of the connection has ended.
    pub gone: watch::Receiver<bool>,
    out: Arc<Outbound>,
    reader: JoinHandle<()>,
    writer: Option<JoinHandle<()>>,
}

impl Session {
    /// Starts serving SPDY on `io` (the upgraded connection). Sends nothing until the client does.
    pub fn serve<IO>(io: IO) -> Session
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, mut wr) = tokio::io::split(io);
        let (tx, mut rx) = mpsc::channel::<Out>(OUT_QUEUE);
        let out = Arc::new(Outbound {
            enc: Mutex::new(Encoder::default()),
            tx,
        });
        let writer = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                match msg {
                    Out::Bytes(b) => {
                        if wr.write_all(&b).await.is_err() {
                            break;
                        }
                        // Flush once the queue is drained, not per frame.
                        if rx.is_empty() && wr.flush().await.is_err() {
                            break;
                        }
                    }
                    Out::Close => break,
                }
            }
            let _ = wr.flush().await;
            let _ = wr.shutdown().await;
        });
        let (streams_tx, incoming) = mpsc::channel(32);
        let (gone_tx, gone) = watch::channel(false);
        let reader_out = out.clone();
        let reader = tokio::spawn(async move {
            read_loop(rd, reader_out, streams_tx).await;
            let _ = gone_tx.send(true);
        });
        Session {
            incoming,
            gone,
            out,
            reader,
            writer: Some(writer),
        }
    }

    /// Sends GOAWAY, flushes what is queued and closes the connection; gives up after
    /// [`FLUSH_TIMEOUT`] when the client does not read.
    pub async fn close(mut self) {
        let out = self.out.clone();
        let writer = self.writer.take();
        let flush = async move {
            let _ = out
                .send(Frame::GoAway {
                    last_good_stream_id: 0,
                    status: 0,
                })
                .await;
            out.close().await;
            if let Some(w) = writer {
                let _ = w.await;
            }
        };
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, flush).await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(w) = self.writer.take() {
            w.abort();
        }
    }
}

struct Inbound {
    tx: mpsc::Sender<Vec<u8>>,
    reset: Arc<AtomicBool>,
}

async fn read_loop<R: AsyncRead + Send + 'static>(
    mut rd: tokio::io::ReadHalf<R>,
    out: Arc<Outbound>,
    streams_tx: mpsc::Sender<Stream>,
) {
    let mut dec = Decoder::default();
    let mut open: HashMap<u32, Inbound> = HashMap::new();
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Drain every complete frame in the buffer.
        loop {
            if let Some(len) = Frame::announced_len(&buf).filter(|l| *l > MAX_INBOUND_FRAME) {
                tracing::debug!(
                    len,
                    "SPDY frame larger than {MAX_INBOUND_FRAME} bytes; closing connection"
                );
                return;
            }
            let (frame, used) = match Frame::parse(&buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "SPDY protocol error; closing connection");
                    return;
                }
            };
            buf.drain(..used);
            if !handle(frame, &mut dec, &mut open, &out, &streams_tx).await {
                return;
            }
        }
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Applies one inbound frame. Returns false when the connection must end.
async fn handle(
    frame: Frame,
    dec: &mut Decoder,
    open: &mut HashMap<u32, Inbound>,
    out: &Arc<Outbound>,
    streams_tx: &mpsc::Sender<Stream>,
) -> bool {
    match frame {
        Frame::SynStream {
            stream_id,
            flags,
            header_block,
            ..
        } => {
            let headers = match dec.decode(&header_block) {
                Ok(h) => h,
                Err(e) => {
                    tracing::debug!(error = %e, "bad SPDY header block; closing connection");
                    return false;
                }
            };
            // CRI clients create streams one at a time and wait for each reply.
            let reply = |block| Frame::SynReply {
                stream_id,
                flags: 0,
                header_block: block,
            };
            if open.len() >= MAX_OPEN_STREAMS {
                tracing::debug!(stream_id, "too many open SPDY streams; refusing one");
                let rst = Frame::RstStream {
                    stream_id,
                    status: RST_REFUSED_STREAM,
                };
                return out.send(rst).await.is_ok();
            }
            if out.send_with_headers(reply, &Headers::default()).await.is_err() {
                return false;
            }
            let (tx, rx) = mpsc::channel(STREAM_BUFFER);
            let reset = Arc::new(AtomicBool::new(false));
            if flags & FLAG_FIN == 0 {
                open.insert(
                    stream_id,
                    Inbound {
                        tx,
                        reset: reset.clone(),
                    },
                );
            }
            let writer = StreamWriter {
                id: stream_id,
                out: out.clone(),
                reset,
            };
            if streams_tx
                .send(Stream {
                    id: stream_id,
                    headers,
                    rx,
                    tx: writer,
                })
                .await
                .is_err()
            {
                return false;
            }
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            if let Some(s) = open.get(&stream_id)
                && !data.is_empty()
                && s.tx.send(data).await.is_err()
            {
                open.remove(&stream_id);
            }
            if flags & FLAG_FIN != 0 {
                open.remove(&stream_id);
            }
        }
        Frame::RstStream { stream_id, .. } => {
            if let Some(s) = open.remove(&stream_id) {
                s.reset.store(true, Ordering::Release);
            }
        }
        Frame::Ping { id } => {
            if id % 2 == 1 && out.send(Frame::Ping { id }).await.is_err() {
                return false;
            }
        }
        Frame::GoAway { .. } => return false,
        Frame::Headers { header_block, .. } | Frame::SynReply { header_block, .. } => {
            if dec.decode(&header_block).is_err() {
                return false;
            }
        }
        Frame::Settings | Frame::WindowUpdate { .. } | Frame::Unknown { .. } => {}
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::test_client::Client;
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn pair() -> (Session, Client<tokio::io::DuplexStream>) {
        let (a, b) = tokio::io::duplex(1 << 20);
        (Session::serve(a), Client::new(b))
    }

    #[tokio::test]
    async fn streams_are_replied_routed_and_half_closed() {
        let (mut s, mut c) = pair();
        c.open(1, &[("streamtype", "stdin")], false).await;
        c.open(3, &[("streamtype", "error")], true).await;
        assert!(matches!(
            c.next().await,
            Some(Frame::SynReply { stream_id: 1, .. })
        ));
        assert!(matches!(
            c.next().await,
            Some(Frame::SynReply { stream_id: 3, .. })
        ));
        let mut stdin = s.incoming.recv().await.unwrap();
        assert_eq!(stdin.kind(), "stdin");
        let mut err = s.incoming.recv().await.unwrap();
        assert_eq!(err.kind(), "error");
        assert_eq!(
            err.rx.recv().await,
            None,
            "FIN on SYN_STREAM closes inbound at once"
        );

        c.send(Frame::Data {
            stream_id: 1,
            flags: 0,
            data: b"echo hi\n".to_vec(),
        })
        .await;
        c.send(Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: vec![],
        })
        .await;
        assert_eq!(stdin.rx.recv().await.as_deref(), Some(&b"echo hi\n"[..]));
        assert_eq!(stdin.rx.recv().await, None);

        err.tx.write(b"boom").await.unwrap();
        err.tx.close().await.unwrap();
        assert_eq!(
            c.next().await,
            Some(Frame::Data {
                stream_id: 3,
                flags: 0,
                data: b"boom".to_vec()
            })
        );
        assert_eq!(
            c.next().await,
            Some(Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: vec![]
            })
        );

        c.send(Frame::Ping { id: 1 }).await;
        assert_eq!(c.next().await, Some(Frame::Ping { id: 1 }));
        s.close().await;
        assert!(matches!(c.next().await, Some(Frame::GoAway { .. })));
        assert_eq!(c.next().await, None);
    }

    #[tokio::test]
    async fn large_writes_are_chunked_and_reset_stops_the_stream() {
        let (mut s, mut c) = pair();
        c.open(1, &[("streamtype", "stdout")], false).await;
        c.next().await.unwrap();
        let st = s.incoming.recv().await.unwrap();
        st.tx.write(&vec![7u8; CHUNK * 2 + 10]).await.unwrap();
        let mut got = 0;
        for _ in 0..3 {
            if let Some(Frame::Data { data, .. }) = c.next().await {
                assert!(data.len() <= CHUNK);
                got += data.len();
            }
        }
        assert_eq!(got, CHUNK * 2 + 10);
        c.send(Frame::RstStream {
            stream_id: 1,
            status: RST_CANCEL,
        })
        .await;
        // Let the reader apply the reset, then writes fail.
        for _ in 0..100 {
            if st.tx.write(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("writes still succeed after RST_STREAM");
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_makes_writers_wait() {
        // A small pipe: what the client does not read stays in the session's queue, which must
        // stop growing after OUT_QUEUE frames.
        let (a, b) = tokio::io::duplex(64 * 1024);
        let mut s = Session::serve(a);
        let mut c = Client::new(b);
        c.open(1, &[("streamtype", "stdout")], false).await;
        c.next().await.unwrap();
        let st = s.incoming.recv().await.unwrap();
        let chunk = vec![1u8; CHUNK];
        let mut sent = 0usize;
        let writer = async {
            loop {
                st.tx.write(&chunk).await.unwrap();
                sent += chunk.len();
            }
        };
        let stalled = tokio::time::timeout(Duration::from_millis(500), writer).await;
        assert!(stalled.is_err(), "the writer blocked");
        let bound = (OUT_QUEUE + 4) * CHUNK + 64 * 1024;
        assert!(
            sent <= bound,
            "{sent} bytes accepted for a client that reads nothing (bound {bound})"
        );
        // Once the client reads, the writer goes on.
        let mut got = 0;
        while got < CHUNK {
            if let Some(Frame::Data { data, .. }) = c.next().await {
                got += data.len();
            }
        }
        tokio::time::timeout(Duration::from_secs(5), st.tx.write(&chunk))
            .await
            .expect("the writer resumes once the client reads")
            .unwrap();
    }

    #[tokio::test]
    async fn an_oversized_frame_ends_the_connection_before_it_is_buffered() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let s = Session::serve(a);
        let mut c = Client::new(b);
        // A DATA header announcing 16 MiB - 1; the body never needs to arrive.
        c.io.write_all(&[0, 0, 0, 1, 0, 0xff, 0xff, 0xff]).await.unwrap();
        let mut gone = s.gone.clone();
        tokio::time::timeout(Duration::from_secs(5), gone.wait_for(|g| *g))
            .await
            .expect("the session ended")
            .unwrap();
    }

    #[tokio::test]
    async fn streams_beyond_the_cap_are_refused() {
        let (mut s, mut c) = pair();
        for i in 0..MAX_OPEN_STREAMS as u32 {
            c.open(2 * i + 1, &[("streamtype", "data")], false).await;
            assert!(matches!(c.next().await, Some(Frame::SynReply { .. })));
            s.incoming.recv().await.unwrap();
        }
        let extra = 2 * MAX_OPEN_STREAMS as u32 + 1;
        c.open(extra, &[("streamtype", "data")], false).await;
        assert_eq!(
            c.next().await,
            Some(Frame::RstStream {
                stream_id: extra,
                status: RST_REFUSED_STREAM
            })
        );
    }
}
