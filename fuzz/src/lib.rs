//! What several fuzz targets share: cutting one input into the messages a stateful decoder sees
//! one at a time (SPDY header blocks on one zlib context, WebSocket messages of one session).

/// Splits `data` into messages, each prefixed by its length as a big-endian `u16`; a last message
/// shorter than its prefix says is taken as it is.
pub fn messages(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if data.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
        let end = (2 + len).min(data.len());
        let msg = &data[2..end];
        data = &data[end..];
        Some(msg)
    })
}

/// The inverse of [`messages`], for writing seeds.
pub fn join(msgs: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        out.extend_from_slice(&u16::try_from(m.len()).expect("a message under 64 KiB").to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}
