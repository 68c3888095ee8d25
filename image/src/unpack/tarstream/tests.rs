//! Hostile and unusual tar streams: extension headers over the cap (refused before their body is
//! read), empty numeric fields, PAX overrides, truncation.

use std::cell::Cell;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::rc::Rc;

use super::*;

/// A ustar header block for `name` of type `kind` announcing `size` bytes.
fn header(name: &str, kind: u8, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(EntryType::new(kind));
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(1_000_000_000);
    h.set_cksum();
    h
}

/// `blocks` of headers and bodies, each body padded to 512 bytes, then the end-of-archive blocks.
fn archive(parts: &[(tar::Header, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (h, body) in parts {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(body);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Counts the bytes the reader under test pulled from the stream.
struct Counting<'a> {
    data: &'a [u8],
    read: Rc<Cell<usize>>,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.data.read(buf)?;
        self.read.set(self.read.get() + n);
        Ok(n)
    }
}

/// (path, data) of each entry.
type Listing = Vec<(Vec<u8>, Vec<u8>)>;

fn entries(data: &[u8]) -> Result<Listing, UnpackError> {
    let mut s = TarStream::new(data);
    let mut out = Vec::new();
    while let Some(mut e) = s.next_entry()? {
        let mut body = Vec::new();
        e.read_to_end(&mut body).map_err(UnpackError::Tar)?;
        out.push((e.path.clone(), body));
    }
    Ok(out)
}

#[test]
fn special_entries_over_the_cap_are_refused_before_their_body_is_read() {
    for kind in [b'L', b'K', b'x', b'g'] {
        // Announces 1 GiB but carries one block: a reader that read the body would hit EOF, and one
        // that allocated it would take a GiB.
        let mut data = header("././@LongLink", kind, 1 << 30).as_bytes().to_vec();
        data.extend_from_slice(&[b'a'; 512]);
        let read = Rc::new(Cell::new(0));
        let mut s = TarStream::new(Counting {
            data: &data,
            read: read.clone(),
        });
        let err = s.next_entry().err().expect("refused");
        assert!(
            matches!(err, UnpackError::TooLarge { size, limit, .. } if size == 1 << 30 && limit == MAX_SPECIAL_ENTRY),
            "{}: {err}",
            kind as char
        );
        assert_eq!(read.get(), 512, "{}: only the header was read", kind as char);
    }
    let over = vec![b'n'; MAX_SPECIAL_ENTRY as usize + 1];
    let data = archive(&[
        (header("x", b'L', over.len() as u64), &over),
        (header("f", b'0', 0), b""),
    ]);
    assert!(matches!(entries(&data), Err(UnpackError::TooLarge { .. })));
}

#[test]
fn special_entries_at_the_cap_are_applied() {
    // One PAX record of exactly 1 MiB: "1048576 comment=<value>\n".
    let mut pax = b"1048576 comment=".to_vec();
    pax.resize(MAX_SPECIAL_ENTRY as usize - 1, b'v');
    pax.push(b'\n');
    let long = "d/".repeat(300) + "file";
    let mut long_nul = long.clone().into_bytes();
    long_nul.push(0);
    let data = archive(&[
        (header("PaxHeaders/x", b'x', pax.len() as u64), &pax),
        (header("././@LongLink", b'L', long_nul.len() as u64), &long_nul),
        (header("short", b'0', 3), b"abc"),
        (header("g", b'g', 11), b"11 a=bcdef\n"),
        (header("next", b'0', 1), b"n"),
    ]);
    let got = entries(&data).unwrap();
    assert_eq!(got.len(), 2, "the global header is skipped");
    assert_eq!(got[0], (long.into_bytes(), b"abc".to_vec()));
    assert_eq!(got[1], (b"next".to_vec(), b"n".to_vec()));
}

#[test]
fn numeric_fields_read_like_go() {
    assert_eq!(numeric(b"\0\0\0\0\0\0\0\0"), Ok(0));
    assert_eq!(numeric(b"        "), Ok(0));
    assert_eq!(numeric(b"0000644\0"), Ok(0o644));
    assert_eq!(numeric(b" 644 \0\0\0"), Ok(0o644));
    assert_eq!(numeric(&[0x80, 0, 0, 0, 0, 0, 0x01, 0x00]), Ok(256));
    assert!(numeric(b"12x4\0\0\0\0").is_err());
    assert!(numeric(&[0xff; 8]).is_err(), "negative base-256");
    assert!(
        numeric(&[
            0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
        ])
        .is_err()
    );
}

#[test]
fn pax_size_overrides_the_header_and_header_only_types_carry_no_data() {
    // Go writes files over 8 GiB with size 0 in the header and the real size in PAX.
    let data = archive(&[
        (header("PaxHeaders/big", b'x', 11), b"11 size=10\n"),
        (header("big", b'0', 0), b"0123456789"),
        // A hardlink whose size field claims data: Go reads none, and neither do we.
        (
            {
                let mut h = header("link", b'1', 700);
                h.set_link_name("big").unwrap();
                h.set_cksum();
                h
            },
            b"",
        ),
        (header("after", b'0', 2), b"ok"),
    ]);
    let got = entries(&data).unwrap();
    assert_eq!(got[0], (b"big".to_vec(), b"0123456789".to_vec()));
    assert_eq!(got[1].0, b"link");
    assert_eq!(got[2], (b"after".to_vec(), b"ok".to_vec()));
}

#[test]
fn truncation_and_bad_checksums_are_malformed_not_panics() {
    let data = archive(&[(header("f", b'0', 1000), &[b'z'; 1000])]);
    for cut in [100, 512, 700, 1200] {
        assert!(entries(&data[..cut]).is_err(), "cut at {cut}");
    }
    let mut bad = data.clone();
    bad[0] ^= 1;
    assert!(matches!(entries(&bad), Err(UnpackError::Tar(_))));
    let dangling = archive(&[(header("n", b'L', 2), b"n\0")]);
    assert!(entries(&dangling).is_err(), "a long name with no entry after it");
    assert!(matches!(
        entries(&archive(&[
            (header("PaxHeaders/s", b'x', 22), b"22 GNU.sparse.size=10\n"),
            (header("s", b'0', 0), b"")
        ])),
        Err(UnpackError::Unsupported { .. })
    ));
}

#[test]
fn a_python_tarfile_fifo_with_empty_device_fields_unpacks() {
    // Written by Python 3.11's tarfile (PAX format): a FIFO's devmajor/devminor are all NUL.
    let tar = include_bytes!("../testdata/python-fifo.tar");
    let raw = &tar[512..1024];
    assert_eq!(raw[156], b'6');
    assert!(raw[329..345].iter().all(|b| *b == 0));
    let dir = tempfile::tempdir().unwrap();
    let diff = crate::unpack::apply_to_dir(&tar[..], dir.path()).unwrap();
    assert_eq!(diff, crate::content::sha256_digest(tar));
    let fifo = std::fs::symlink_metadata(dir.path().join("run/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!((fifo.uid(), fifo.gid(), fifo.mode() & 0o7777), (7, 8, 0o620));
    assert_eq!(
        std::fs::read(dir.path().join("run/readme")).unwrap(),
        b"made by python\n"
    );
}

#[test]
fn an_oversized_long_name_leaves_no_layer_and_no_temp_dir() {
    let root = tempfile::tempdir().unwrap();
    let layers = crate::unpack::Layers::open(root.path()).unwrap();
    let mut data = archive(&[(header("ok", b'0', 2), b"ok")]);
    data.truncate(1024);
    data.extend_from_slice(header("././@LongLink", b'L', 1 << 30).as_bytes());
    let chain = crate::content::sha256_digest(b"chain");
    let started = std::time::Instant::now();
    let err = layers.unpack_from(&data[..], &chain, &chain).unwrap_err();
    assert!(
        matches!(
            err,
            crate::unpack::LayerError::Unpack(UnpackError::TooLarge { .. })
        ),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "refused at once"
    );
    assert_eq!(std::fs::read_dir(root.path().join("layers")).unwrap().count(), 0);
}

#[test]
fn sizes_past_i64_max_are_malformed_not_an_overflow() {
    // Base-256 size of u64::MAX in the header, and the same in a PAX `size` record: Go reads sizes
    // as int64 and refuses these; adding the block padding to them overflowed.
    let mut h = header("huge", b'0', 0);
    h.as_old_mut().size = [0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    h.set_cksum();
    let base256 = archive(&[(h, b"")]);
    let pax = archive(&[
        (
            header("PaxHeaders/huge", b'x', 29),
            b"29 size=18446744073709551615\n",
        ),
        (header("huge", b'0', 0), b""),
    ]);
    for data in [base256, pax] {
        let err = entries(&data).unwrap_err();
        assert!(err.to_string().contains("size"), "{err}");
    }
}
