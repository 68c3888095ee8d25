//! SPDY/3 header blocks: `u32 count`, then per pair `u32 len, name, u32 len, value`, zlib-
//! compressed with the SPDY dictionary. One deflate context per direction per connection; every
//! block ends with a sync flush so the peer can inflate it alone.
//!
//! Invariant: names are stored lowercase; lookups are case-insensitive.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::dictionary;

/// Header pairs in arrival order (multiple values stay NUL-joined as on the wire).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("header block does not inflate: {0}")]
    Inflate(String),
    #[error("header block is truncated or malformed")]
    Malformed,
    #[error("header block inflates to more than {0} bytes")]
    TooLarge(usize),
}

/// Largest inflated header block accepted (SPDY peers send a handful of short headers).
pub const MAX_BLOCK: usize = 256 * 1024;

/// The outbound side: compresses header blocks.
pub struct Encoder {
    z: Compress,
    primed: bool,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            z: Compress::new(Compression::default(), true),
            primed: false,
        }
    }
}

impl Encoder {
    pub fn encode(&mut self, headers: &Headers) -> Vec<u8> {
        if !self.primed {
            // zlib-rs supports preset dictionaries; the DICTID lands in the stream header.
            self.z
                .set_dictionary(dictionary())
                .expect("deflate accepts a preset dictionary");
            self.primed = true;
        }
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.0.len() as u32).to_be_bytes());
        for (n, v) in &headers.0 {
            raw.extend_from_slice(&(n.len() as u32).to_be_bytes());
            raw.extend_from_slice(n.to_ascii_lowercase().as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        self.deflate(&raw)
    }

    /// Compresses one raw (uncompressed) header block, ending it with a sync flush.
    fn deflate(&mut self, raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = raw;
        loop {
            out.reserve(256);
            let before_in = self.z.total_in();
            self.z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .expect("deflate into a Vec cannot fail");
            let used = (self.z.total_in() - before_in) as usize;
            input = &input[used..];
            // Done when all input is consumed and the sync flush fit (spare capacity left over).
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

/// The inbound side: inflates header blocks.
pub struct Decoder {
    z: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            z: Decompress::new(true),
        }
    }
}

impl Decoder {
    pub fn decode(&mut self, block: &[u8]) -> Result<Headers, HeaderError> {
        let raw = self.inflate(block)?;
        parse_pairs(&raw)
    }

    fn inflate(&mut self, block: &[u8]) -> Result<Vec<u8>, HeaderError> {
        // Grown 1 KiB per step and checked after each: the cap holds while inflating.
        let mut out = Vec::with_capacity((block.len() * 4 + 64).min(MAX_BLOCK));
        let mut input = block;
        loop {
            out.reserve(1024);
            let before_in = self.z.total_in();
            let res = self.z.decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.z.total_in() - before_in) as usize;
            input = &input[used..];
            match res {
                Ok(Status::Ok) | Ok(Status::BufError) | Ok(Status::StreamEnd) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(dictionary())
                        .map_err(|e| HeaderError::Inflate(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(HeaderError::Inflate(e.to_string())),
            }
            if out.len() > MAX_BLOCK {
                return Err(HeaderError::TooLarge(MAX_BLOCK));
            }
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
            if used == 0 && out.len() < out.capacity() {
                return Err(HeaderError::Malformed);
            }
        }
    }
}

fn parse_pairs(raw: &[u8]) -> Result<Headers, HeaderError> {
    let mut pos = 0usize;
    let take_u32 = |pos: &mut usize| -> Result<usize, HeaderError> {
        let b = raw.get(*pos..*pos + 4).ok_or(HeaderError::Malformed)?;
        *pos += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = take_u32(&mut pos)?;
    if count > raw.len() / 8 + 1 {
        return Err(HeaderError::Malformed);
    }
    let mut pairs = Vec::with_capacity(count);
    for _ in 0..count {
        let n = take_u32(&mut pos)?;
        let name = raw.get(pos..pos + n).ok_or(HeaderError::Malformed)?;
        pos += n;
        let v = take_u32(&mut pos)?;
        let value = raw.get(pos..pos + v).ok_or(HeaderError::Malformed)?;
        pos += v;
        pairs.push((
            String::from_utf8_lossy(name).to_ascii_lowercase(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    Ok(Headers(pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        Headers(
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    #[test]
    fn round_trips_across_blocks_sharing_one_context() {
        let mut enc = Encoder::default();
        let mut dec = Decoder::default();
        let blocks = [
            h(&[("streamtype", "error"), ("port", "8080"), ("requestid", "0")]),
            h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            h(&[]),
            h(&[("StreamType", "stdout")]),
        ];
        for b in &blocks {
            let wire = enc.encode(b);
            let got = dec.decode(&wire).unwrap();
            assert_eq!(got.0.len(), b.0.len());
            for (n, v) in &b.0 {
                assert_eq!(got.get(n), Some(v.as_str()));
            }
        }
    }

    #[test]
    fn stream_header_carries_the_spdy_dictid() {
        let wire = Encoder::default().encode(&h(&[("a", "b")]));
        // zlib header: CMF, FLG with FDICT set, then the DICTID (Adler-32 of the dictionary).
        assert_eq!(wire[1] & 0x20, 0x20);
        assert_eq!(&wire[2..6], &0xE3C6_A7C2u32.to_be_bytes());
    }

    #[test]
    fn invalid_utf8_grows_by_at_most_three_times_and_re_encodes_past_the_cap() {
        // One value of 100 KiB of 0xff: within the cap inflated, but each byte decodes to U+FFFD
        // (3 bytes), so the decoded headers re-encode to a block the cap refuses (fuzzing found it).
        let mut raw = 1u32.to_be_bytes().to_vec();
        raw.extend_from_slice(&1u32.to_be_bytes());
        raw.push(b'x');
        raw.extend_from_slice(&(100u32 << 10).to_be_bytes());
        raw.resize(raw.len() + (100 << 10), 0xff);
        let block = Encoder::default().deflate(&raw);
        let got = Decoder::default().decode(&block).unwrap();
        assert_eq!(got.get("x").unwrap().len(), 3 * (100 << 10));
        let again = Encoder::default().encode(&got);
        assert_eq!(
            Decoder::default().decode(&again),
            Err(HeaderError::TooLarge(MAX_BLOCK))
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut dec = Decoder::default();
        assert!(
            dec.decode(&[0x78, 0xbb, 0xff, 0xff, 0xff, 0xff, 1, 2, 3])
                .is_err()
        );
        assert!(parse_pairs(&[0, 0, 0, 5, 0, 0]).is_err());
    }
}
