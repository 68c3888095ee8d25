//! A streaming tar reader that follows Go's archive/tar (which containerd uses) and never buffers
//! more than [`MAX_SPECIAL_ENTRY`] bytes: the `tar` crate reads GNU long-name/long-link and PAX
//! bodies whole, whatever size their header announces; this reader checks the announced size first.
//!
//! Invariants: only the 512-byte header blocks and the bodies of GNU `L`/`K` and PAX `x` entries
//! (each ≤ [`MAX_SPECIAL_ENTRY`], checked from the header before one body byte is read) are held in
//! memory; file data streams through [`Entry`]'s `Read`, and whatever an entry's reader left unread
//! is skipped, not buffered. PAX `g` bodies are skipped after the same check. Numeric fields are
//! parsed like Go's: octal with leading/trailing NUL and space trimmed (all-empty is 0) or base-256,
//! and sizes over `i64::MAX` are refused; header-only types (links, directories, devices, FIFOs)
//! carry no data whatever their size field says; GNU long names win over PAX `path`, which wins
//! over the header's name.

use std::io::{self, Read};

use tar::EntryType;

use super::UnpackError;

/// The largest GNU long-name/long-link or PAX extended-header body accepted (Go's archive/tar cap).
pub const MAX_SPECIAL_ENTRY: u64 = 1 << 20;

const BLOCK: u64 = 512;
/// Sizes are int64 in Go's archive/tar; anything larger is refused, which also keeps a size plus
/// its block padding from overflowing.
const MAX_SIZE: u64 = i64::MAX as u64;

/// One entry with its extension headers applied. Reading it yields the entry's data.
pub struct Entry<'a, R: Read> {
    pub kind: EntryType,
    /// The full name: GNU long name, else PAX `path`, else the header's (ustar prefix joined).
    pub path: Vec<u8>,
    /// The link target, with the same precedence (GNU long link, PAX `linkpath`, header).
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// PAX records of the `x` header before this entry, in order (keys other than the ones above).
    pub pax: Vec<(String, Vec<u8>)>,
    remaining: u64,
    src: &'a mut TarStream<R>,
}

impl<R: Read> Entry<'_, R> {
    /// Data bytes not read yet: before the first read, the size the headers announced (PAX
    /// `size` applied), which reading never exceeds.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }
}

impl<R: Read> Read for Entry<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.src.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tar entry data is truncated",
            ));
        }
        self.remaining -= n as u64;
        self.src.unread -= n as u64;
        Ok(n)
    }
}

/// Header-by-header reader over a decompressed layer tar.
pub struct TarStream<R> {
    inner: R,
    /// Bytes (data and padding of the last entry) between the current position and the next header.
    unread: u64,
    ended: bool,
}

fn malformed(why: impl Into<String>) -> UnpackError {
    UnpackError::Tar(io::Error::new(io::ErrorKind::InvalidData, why.into()))
}

impl<R: Read> TarStream<R> {
    pub fn new(inner: R) -> TarStream<R> {
        TarStream {
            inner,
            unread: 0,
            ended: false,
        }
    }

    /// The underlying reader, positioned after the end-of-archive block (or wherever reading stopped).
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn skip(&mut self, n: u64) -> Result<(), UnpackError> {
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink()).map_err(UnpackError::Tar)?;
        if copied != n {
            return Err(malformed("tar stream ends inside an entry"));
        }
        Ok(())
    }

    /// Reads one header block; `None` at a clean end (EOF on a block boundary or a zero block).
    fn block(&mut self) -> Result<Option<[u8; 512]>, UnpackError> {
        let mut b = [0u8; 512];
        let mut got = 0;
        while got < b.len() {
            match self.inner.read(&mut b[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(UnpackError::Tar(e)),
            }
        }
        if got == 0 || b.iter().all(|x| *x == 0) {
            return Ok(None);
        }
        if got < b.len() {
            return Err(malformed("tar stream ends inside a header"));
        }
        let stored = numeric(&b[148..156]).map_err(|_| malformed("header checksum is not a number"))?;
        let (unsigned, signed) = checksums(&b);
        if stored != unsigned && stored as i64 != signed {
            return Err(malformed("header checksum mismatch"));
        }
        Ok(Some(b))
    }

    /// Reads the body of an extension entry whose header announced `size` (already capped).
    fn special_body(&mut self, size: u64) -> Result<Vec<u8>, UnpackError> {
        let mut body = Vec::with_capacity(size as usize);
        (&mut self.inner)
            .take(size)
            .read_to_end(&mut body)
            .map_err(UnpackError::Tar)?;
        if body.len() as u64 != size {
            return Err(malformed("tar stream ends inside an extension header"));
        }
        self.skip(padding(size))?;
        Ok(body)
    }

    /// The next entry, or `None` after the end of the archive. Data an earlier entry's reader
    /// left unread is skipped first.
    pub fn next_entry(&mut self) -> Result<Option<Entry<'_, R>>, UnpackError> {
        if self.ended {
            return Ok(None);
        }
        let unread = std::mem::take(&mut self.unread);
        self.skip(unread)?;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: Option<Vec<u8>> = None;
        loop {
            let Some(b) = self.block()? else {
                self.ended = true;
                if long_name.is_some() || long_link.is_some() || pax.is_some() {
                    return Err(malformed("extension headers without the entry they describe"));
                }
                return Ok(None);
            };
            let kind = EntryType::new(b[156]);
            let size = numeric(&b[124..136]).map_err(|_| malformed("size field is not a number"))?;
            if size > MAX_SIZE {
                return Err(malformed("size field is out of range"));
            }
            let special = match kind {
                EntryType::GNULongName => Some("GNU long-name entry"),
                EntryType::GNULongLink => Some("GNU long-link entry"),
                EntryType::XHeader => Some("PAX extended header"),
                EntryType::XGlobalHeader => Some("PAX global header"),
                _ => None,
            };
            if let Some(what) = special {
                // Checked before a byte of the body is read: the body is held in memory.
                if size > MAX_SPECIAL_ENTRY {
                    return Err(UnpackError::TooLarge {
                        what,
                        size,
                        limit: MAX_SPECIAL_ENTRY,
                    });
                }
                match kind {
                    // Global headers are ignored, as containerd's applier does.
                    EntryType::XGlobalHeader => self.skip(size + padding(size))?,
                    EntryType::GNULongName => long_name = Some(trim_nul(self.special_body(size)?)),
                    EntryType::GNULongLink => long_link = Some(trim_nul(self.special_body(size)?)),
                    _ => pax = Some(self.special_body(size)?),
                }
                continue;
            }
            return self
                .entry(&b, kind, size, long_name, long_link, pax.as_deref())
                .map(Some);
        }
    }

    fn entry(
        &mut self,
        b: &[u8; 512],
        kind: EntryType,
        size: u64,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        pax: Option<&[u8]>,
    ) -> Result<Entry<'_, R>, UnpackError> {
        let h = tar::Header::from_byte_slice(b);
        let num = |r: std::ops::Range<usize>, what: &str| {
            numeric(&b[r]).map_err(|_| malformed(format!("{what} field is not a number")))
        };
        let mut e = Entry {
            kind,
            path: h.path_bytes().into_owned(),
            link: h.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default(),
            mode: num(100..108, "mode")? as u32 & 0o7777,
            uid: num(108..116, "uid")?,
            gid: num(116..124, "gid")?,
            mtime: num(136..148, "mtime")? as i64,
            dev_major: 0,
            dev_minor: 0,
            pax: Vec::new(),
            remaining: size,
            src: self,
        };
        // Device numbers exist only in ustar/GNU headers (Python's tarfile leaves them empty for
        // FIFOs, and Go reads empty as 0).
        if b[257..262] == *b"ustar" {
            e.dev_major = num(329..337, "devmajor")? as u32;
            e.dev_minor = num(337..345, "devminor")? as u32;
        }
        if let Some(pax) = pax {
            for rec in tar::PaxExtensions::new(pax) {
                let rec = rec.map_err(|_| malformed("malformed PAX record"))?;
                let key = rec.key().map_err(|_| malformed("PAX key is not UTF-8"))?;
                let value = rec.value_bytes();
                let decimal = || -> Result<u64, UnpackError> {
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.split('.').next()?.parse().ok())
                        .ok_or_else(|| malformed(format!("PAX {key} is not a number")))
                };
                match key {
                    "path" => e.path = value.to_vec(),
                    "linkpath" => e.link = value.to_vec(),
                    "size" => {
                        e.remaining = decimal()?;
                        if e.remaining > MAX_SIZE {
                            return Err(malformed("PAX size is out of range"));
                        }
                    }
                    "uid" => e.uid = decimal()?,
                    "gid" => e.gid = decimal()?,
                    "mtime" => {
                        e.mtime = std::str::from_utf8(value)
                            .ok()
                            .and_then(|v| v.split('.').next()?.parse().ok())
                            .ok_or_else(|| malformed("PAX mtime is not a number"))?
                    }
                    k if k.starts_with("GNU.sparse.") => {
                        return Err(UnpackError::Unsupported {
                            path: std::path::PathBuf::from(String::from_utf8_lossy(&e.path).as_ref()),
                            kind: "PAX GNU sparse file".into(),
                        });
                    }
                    _ => e.pax.push((key.to_string(), value.to_vec())),
                }
            }
        }
        if let Some(n) = long_name {
            e.path = n;
        }
        if let Some(l) = long_link {
            e.link = l;
        }
        if header_only(kind) {
            e.remaining = 0;
        }
        e.src.unread = e.remaining + padding(e.remaining);
        Ok(e)
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// The header checksum computed both ways (the field itself counted as spaces), as Go accepts either.
fn checksums(b: &[u8; 512]) -> (u64, i64) {
    let mut unsigned = 0u64;
    let mut signed = 0i64;
    for (i, x) in b.iter().enumerate() {
        let x = if (148..156).contains(&i) { b' ' } else { *x };
        unsigned += u64::from(x);
        signed += i64::from(x as i8);
    }
    (unsigned, signed)
}

/// A numeric header field as Go's archive/tar reads it: base-256 when the top bit of the first
/// byte is set, else octal between optional NULs and spaces; an empty field is 0.
pub fn numeric(field: &[u8]) -> Result<u64, ()> {
    if let Some(first) = field.first()
        && first & 0x80 != 0
    {
        // Base-256, big endian; negative values (0xff lead) are not valid sizes, ids or times here.
        if first & 0x40 != 0 {
            return Err(());
        }
        let mut v: u64 = u64::from(first & 0x7f);
        for x in &field[1..] {
            v = v.checked_mul(256).ok_or(())? | u64::from(*x);
        }
        return Ok(v);
    }
    let trimmed = field
        .iter()
        .position(|c| *c != 0 && *c != b' ')
        .map(|start| {
            let end = field.iter().rposition(|c| *c != 0 && *c != b' ').unwrap_or(start);
            &field[start..=end]
        })
        .unwrap_or(&[]);
    if trimmed.is_empty() {
        return Ok(0);
    }
    let s = std::str::from_utf8(trimmed).map_err(|_| ())?;
    u64::from_str_radix(s, 8).map_err(|_| ())
}

/// Go's archive/tar: these entry types carry no data, whatever their size field says.
pub fn header_only(kind: EntryType) -> bool {
    matches!(
        kind,
        EntryType::Link
            | EntryType::Symlink
            | EntryType::Char
            | EntryType::Block
            | EntryType::Directory
            | EntryType::Fifo
    )
}

#[cfg(test)]
mod tests;
