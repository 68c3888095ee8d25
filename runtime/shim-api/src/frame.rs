//! Length-prefixed frames: a big-endian `u32` byte count, then that many bytes of JSON.
//!
//! Invariant: a frame never exceeds [`MAX_FRAME`]; a reader refuses a larger length before
//! allocating, so a confused or hostile peer cannot make either side allocate without bound.

use std::io::{self, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest accepted frame body (1 MiB): OCI resources and states are far smaller.
pub const MAX_FRAME: u32 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("i/o on the shim channel: {0}")]
    Io(#[from] io::Error),
    #[error("peer closed the shim channel before a complete frame")]
    Closed,
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(u64),
    #[error("malformed shim message: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("cannot encode shim message: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Encodes `msg` as one frame (header and body in a single write where the OS allows).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(msg).map_err(FrameError::Encode)?;
    if body.len() as u64 > MAX_FRAME as u64 {
        return Err(FrameError::TooLarge(body.len() as u64));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Writes one frame.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(msg)?)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame. A clean EOF before the first header byte is [`FrameError::Closed`].
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<T, FrameError> {
    let mut header = [0u8; 4];
    read_full(r, &mut header)?;
    let len = u32::from_be_bytes(header);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len as u64));
    }
    let mut body = vec![0u8; len as usize];
    read_full(r, &mut body)?;
    decode(&body)
}

/// Decodes a frame body.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(FrameError::Decode)
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), FrameError> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => return Err(FrameError::Closed),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{Request, RequestEnvelope};

    #[test]
    fn round_trips_several_frames_on_one_stream() {
        let mut buf = Vec::new();
        let a = RequestEnvelope::new(Request::Kill { signal: 9, all: true });
        let b = RequestEnvelope::new(Request::Resize {
            width: 80,
            height: 24,
        });
        write_frame(&mut buf, &a).unwrap();
        write_frame(&mut buf, &b).unwrap();
        let first_len = serde_json::to_vec(&a).unwrap().len();
        assert_eq!(
            u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize,
            first_len
        );
        let mut r = &buf[..];
        assert_eq!(read_frame::<_, RequestEnvelope>(&mut r).unwrap(), a);
        assert_eq!(read_frame::<_, RequestEnvelope>(&mut r).unwrap(), b);
        assert!(matches!(
            read_frame::<_, RequestEnvelope>(&mut r),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut buf = (MAX_FRAME + 1).to_be_bytes().to_vec();
        buf.extend_from_slice(b"{}");
        let err = read_frame::<_, RequestEnvelope>(&mut &buf[..]).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(n) if n == MAX_FRAME as u64 + 1));
    }

    #[test]
    fn truncated_body_and_garbage_are_errors() {
        let mut buf = 10u32.to_be_bytes().to_vec();
        buf.extend_from_slice(b"{\"a\"");
        assert!(matches!(
            read_frame::<_, RequestEnvelope>(&mut &buf[..]),
            Err(FrameError::Closed)
        ));
        let mut buf = 3u32.to_be_bytes().to_vec();
        buf.extend_from_slice(b"xyz");
        assert!(matches!(
            read_frame::<_, RequestEnvelope>(&mut &buf[..]),
            Err(FrameError::Decode(_))
        ));
    }
}
