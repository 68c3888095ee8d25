//! A minimal SPDY client for unit tests: its own header contexts, frames over any byte stream.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::frame::{FLAG_FIN, Frame};
use super::headers::{Decoder, Encoder, Headers};

pub struct Client<IO> {
    pub io: IO,
    enc: Encoder,
    dec: Decoder,
    pub buf: Vec<u8>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Client<IO> {
    pub fn new(io: IO) -> Self {
        Client {
            io,
            enc: Encoder::default(),
            dec: Decoder::default(),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, f: Frame) {
        self.io.write_all(&f.encode()).await.unwrap();
    }

    pub async fn open(&mut self, id: u32, pairs: &[(&str, &str)], fin: bool) {
        let h = Headers(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        );
        let block = self.enc.encode(&h);
        let flags = if fin { FLAG_FIN } else { 0 };
        self.send(Frame::SynStream {
            stream_id: id,
            assoc_id: 0,
            priority: 0,
            flags,
            header_block: block,
        })
        .await;
    }

    /// The next frame, or None at EOF.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some((f, used)) = Frame::parse(&self.buf).unwrap() {
                self.buf.drain(..used);
                if let Frame::SynReply { header_block, .. } = &f {
                    self.dec.decode(header_block).unwrap();
                }
                return Some(f);
            }
            let mut b = [0u8; 4096];
            let n = self.io.read(&mut b).await.unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&b[..n]);
        }
    }
}
