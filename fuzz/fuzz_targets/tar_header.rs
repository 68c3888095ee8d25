//! The tar header walker alone (no filesystem): after a mode byte, any bytes as a decompressed
//! layer. An odd mode byte first sets the checksum of every non-zero 512-byte block, so that
//! mutated headers get past the checksum to the fields behind it. Beyond "no panic": extension bodies stay within the cap, an over-cap extension header is refused before
//! one byte of its body is read, entry data streams (what a reader gets is exactly what was pulled
//! from the input), and header-only types carry no data.
#![no_main]

use std::cell::Cell;
use std::io::Read;
use std::rc::Rc;

use crius_image::unpack::{MAX_SPECIAL_ENTRY, TarStream, UnpackError, header_only};
use libfuzzer_sys::fuzz_target;

/// Counts the bytes the walker pulled from the input.
struct Counting<'a> {
    data: &'a [u8],
    pulled: Rc<Cell<usize>>,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.data.read(buf)?;
        self.pulled.set(self.pulled.get() + n);
        Ok(n)
    }
}

/// The header checksum (the field itself counted as spaces), as six octal digits, NUL, space.
fn set_checksums(tar: &mut [u8]) {
    for b in tar.chunks_exact_mut(512).filter(|b| b.iter().any(|x| *x != 0)) {
        b[148..156].fill(b' ');
        let sum: u32 = b.iter().map(|x| u32::from(*x)).sum();
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let mut fixed = Vec::new();
    let data = if mode & 1 == 1 {
        fixed.extend_from_slice(data);
        set_checksums(&mut fixed);
        &fixed[..]
    } else {
        data
    };
    let pulled = Rc::new(Cell::new(0));
    let mut s = TarStream::new(Counting {
        data,
        pulled: pulled.clone(),
    });
    let cap = MAX_SPECIAL_ENTRY as usize;
    let mut index = 0usize;
    loop {
        let mut e = match s.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(UnpackError::TooLarge { size, limit, .. }) => {
                assert!(size > limit);
                // Refused from its header: the last thing read is that header block.
                let at = pulled.get();
                assert!(at >= 512 && at % 512 == 0, "refused mid-block at {at}");
                let h = &data[at - 512..at];
                assert!(matches!(h[156], b'L' | b'K' | b'x' | b'g'), "type {}", h[156]);
                break;
            }
            Err(_) => break,
        };
        assert!(e.path.len() <= cap.max(256), "path of {} bytes", e.path.len());
        assert!(e.link.len() <= cap.max(100), "link of {} bytes", e.link.len());
        let pax: usize = e.pax.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(pax <= cap, "PAX records of {pax} bytes");
        // Read some entries whole, some partly, some not at all (the walker skips the rest).
        let before = pulled.get();
        let got = match index % 3 {
            0 => {
                let mut body = Vec::new();
                let r = e.read_to_end(&mut body);
                r.map(|_| body.len())
            }
            1 => e.read(&mut [0u8; 7]),
            _ => Ok(0),
        };
        if let Ok(n) = got {
            assert_eq!(pulled.get() - before, n, "entry data was buffered, not streamed");
            if header_only(e.kind) {
                assert_eq!(n, 0, "a header-only entry yielded data");
            }
        }
        index += 1;
    }
    assert!(
        index <= data.len() / 512,
        "{index} entries from {} bytes",
        data.len()
    );
});
