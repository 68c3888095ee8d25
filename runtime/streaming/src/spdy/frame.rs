//! SPDY/3.1 framing (server subset). All integers big-endian.
//! Control frame: `u16 0x8000|version`, `u16 type`, `u8 flags`, `u24 length`, payload.
//! Data frame: `u32 stream_id` (top bit 0), `u8 flags`, `u24 length`, payload.
//! Header blocks stay compressed here; the session owns the zlib contexts.

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// Largest payload a frame can carry (u24 length).
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes used by the server.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_CANCEL: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        assoc_id: u32,
        priority: u8,
        flags: u8,
        header_block: Vec<u8>,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        header_block: Vec<u8>,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings,
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        header_block: Vec<u8>,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Vec<u8>,
    },
    /// A control frame type this server does not use (ignored, per the spec).
    Unknown {
        kind: u16,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("unsupported SPDY version {0} (only 3)")]
    Version(u16),
    #[error("SPDY control frame type {kind} has a bad length {len}")]
    Length { kind: u16, len: usize },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Frame {
    /// The payload length the frame at the front of `buf` announces, once its 8-byte header is
    /// there (so an oversized frame can be refused before it is buffered).
    pub fn announced_len(buf: &[u8]) -> Option<usize> {
        (buf.len() >= 8).then(|| ((buf[5] as usize) << 16) | ((buf[6] as usize) << 8) | buf[7] as usize)
    }

    /// Parses one frame from the front of `buf`. `Ok(None)`: more bytes are needed.
    /// On success returns the frame and how many bytes it used.
    pub fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let flags = buf[4];
        let len = ((buf[5] as usize) << 16) | ((buf[6] as usize) << 8) | buf[7] as usize;
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let p = &buf[8..8 + len];
        let total = 8 + len;
        if buf[0] & 0x80 == 0 {
            let stream_id = u32_at(buf, 0) & 0x7fff_ffff;
            return Ok(Some((
                Frame::Data {
                    stream_id,
                    flags,
                    data: p.to_vec(),
                },
                total,
            )));
        }
        let version = u16::from_be_bytes([buf[0] & 0x7f, buf[1]]);
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let kind = u16::from_be_bytes([buf[2], buf[3]]);
        let need = |n: usize| {
            if len < n {
                Err(FrameError::Length { kind, len })
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            SYN_STREAM => {
                need(10)?;
                Frame::SynStream {
                    stream_id: u32_at(p, 0) & 0x7fff_ffff,
                    assoc_id: u32_at(p, 4) & 0x7fff_ffff,
                    priority: p[8] >> 5,
                    flags,
                    header_block: p[10..].to_vec(),
                }
            }
            SYN_REPLY => {
                need(4)?;
                Frame::SynReply {
                    stream_id: u32_at(p, 0) & 0x7fff_ffff,
                    flags,
                    header_block: p[4..].to_vec(),
                }
            }
            RST_STREAM => {
                need(8)?;
                Frame::RstStream {
                    stream_id: u32_at(p, 0) & 0x7fff_ffff,
                    status: u32_at(p, 4),
                }
            }
            SETTINGS => Frame::Settings,
            PING => {
                need(4)?;
                Frame::Ping { id: u32_at(p, 0) }
            }
            GOAWAY => {
                need(8)?;
                Frame::GoAway {
                    last_good_stream_id: u32_at(p, 0) & 0x7fff_ffff,
                    status: u32_at(p, 4),
                }
            }
            HEADERS => {
                need(4)?;
                Frame::Headers {
                    stream_id: u32_at(p, 0) & 0x7fff_ffff,
                    flags,
                    header_block: p[4..].to_vec(),
                }
            }
            WINDOW_UPDATE => {
                need(8)?;
                Frame::WindowUpdate {
                    stream_id: u32_at(p, 0) & 0x7fff_ffff,
                    delta: u32_at(p, 4) & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown { kind: other },
        };
        Ok(Some((frame, total)))
    }

    /// Serialises the frame. Panics only if a payload exceeds [`MAX_PAYLOAD`] (callers chunk data).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                assert!(
                    data.len() <= MAX_PAYLOAD,
                    "DATA payload over 16 MiB must be chunked"
                );
                let mut out = Vec::with_capacity(8 + data.len());
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                push_flags_len(&mut out, *flags, data.len());
                out.extend_from_slice(data);
                out
            }
            Frame::SynStream {
                stream_id,
                assoc_id,
                priority,
                flags,
                header_block,
            } => {
                let mut p = Vec::with_capacity(10 + header_block.len());
                p.extend_from_slice(&stream_id.to_be_bytes());
                p.extend_from_slice(&assoc_id.to_be_bytes());
                p.push(priority << 5);
                p.push(0);
                p.extend_from_slice(header_block);
                control(SYN_STREAM, *flags, &p)
            }
            Frame::SynReply {
                stream_id,
                flags,
                header_block,
            } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend_from_slice(header_block);
                control(SYN_REPLY, *flags, &p)
            }
            Frame::RstStream { stream_id, status } => control(RST_STREAM, 0, &pair(*stream_id, *status)),
            Frame::Settings => control(SETTINGS, 0, &0u32.to_be_bytes()),
            Frame::Ping { id } => control(PING, 0, &id.to_be_bytes()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => control(GOAWAY, 0, &pair(*last_good_stream_id, *status)),
            Frame::Headers {
                stream_id,
                flags,
                header_block,
            } => {
                let mut p = stream_id.to_be_bytes().to_vec();
                p.extend_from_slice(header_block);
                control(HEADERS, *flags, &p)
            }
            Frame::WindowUpdate { stream_id, delta } => control(WINDOW_UPDATE, 0, &pair(*stream_id, *delta)),
            Frame::Unknown { kind } => control(*kind, 0, &[]),
        }
    }
}

fn pair(a: u32, b: u32) -> [u8; 8] {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&a.to_be_bytes());
    p[4..].copy_from_slice(&b.to_be_bytes());
    p
}

fn push_flags_len(out: &mut Vec<u8>, flags: u8, len: usize) {
    out.push(flags);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8]);
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(0x8000u16 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    push_flags_len(&mut out, flags, payload.len());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_round_trips() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                assoc_id: 0,
                priority: 3,
                flags: FLAG_FIN,
                header_block: vec![1, 2, 3],
            },
            Frame::SynReply {
                stream_id: 3,
                flags: 0,
                header_block: vec![9],
            },
            Frame::RstStream {
                stream_id: 5,
                status: RST_CANCEL,
            },
            Frame::Settings,
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_good_stream_id: 9,
                status: 0,
            },
            Frame::Headers {
                stream_id: 11,
                flags: 0,
                header_block: vec![],
            },
            Frame::WindowUpdate {
                stream_id: 13,
                delta: 65536,
            },
            Frame::Data {
                stream_id: 15,
                flags: FLAG_FIN,
                data: b"hello".to_vec(),
            },
            Frame::Data {
                stream_id: 17,
                flags: 0,
                data: vec![],
            },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(f.encode());
        }
        let mut pos = 0;
        for f in &frames {
            let (got, used) = Frame::parse(&wire[pos..]).unwrap().unwrap();
            assert_eq!(&got, f);
            pos += used;
        }
        assert_eq!(pos, wire.len());
    }

    #[test]
    fn partial_input_asks_for_more() {
        let wire = Frame::Data {
            stream_id: 1,
            flags: 0,
            data: vec![0; 100],
        }
        .encode();
        for cut in [0, 3, 8, 50, wire.len() - 1] {
            assert_eq!(Frame::parse(&wire[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn bad_version_and_short_control_frames_are_errors() {
        let mut ping = Frame::Ping { id: 1 }.encode();
        ping[1] = 2;
        assert_eq!(Frame::parse(&ping), Err(FrameError::Version(2)));
        let short = control(RST_STREAM, 0, &[0, 0, 0, 1]);
        assert!(matches!(
            Frame::parse(&short),
            Err(FrameError::Length { kind: 3, len: 4 })
        ));
    }
}
