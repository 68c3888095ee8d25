//! A SPDY/3.1 server session, the subset Kubernetes streaming clients (spdystream, via client-go)
//! use: client-initiated streams answered at once with SYN_REPLY, DATA with FIN half-close,
//! RST_STREAM, PING echo, GOAWAY. No flow control: spdystream never sends WINDOW_UPDATE, so
//! honouring the 64 KiB window would stall output (WINDOW_UPDATE and SETTINGS are ignored).

mod dictionary;
pub mod frame;
pub mod headers;
mod session;
#[cfg(test)]
pub mod test_client;

pub use headers::Headers;
pub use session::{MAX_INBOUND_FRAME, Session, Stream, StreamWriter};
