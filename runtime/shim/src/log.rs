//! The CRI log writer: turns the container's stdout/stderr bytes into CRI log records
//! `<RFC3339Nano UTC> <stdout|stderr> <F|P> <text>\n` appended to the log file.
//!
//! Invariants: a complete line becomes one `F` record (a trailing `\r` before the `\n` is
//! dropped, as containerd does for tty output); a line longer than [`MAX_LINE`] is cut into `P`
//! records of exactly [`MAX_LINE`] bytes followed by the rest; an unterminated fragment left at
//! end of stream becomes a final `P` record. At most [`MAX_LINE`] bytes are buffered per stream.
//! [`LogFile`] batches whole records and writes a batch with one `write` (on `flush`, or once it
//! holds [`BATCH`] bytes), so a record is never torn between writes and a flood of short lines
//! costs one syscall per batch, not one per line.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// CRI: kubelet's and containerd's default `max_container_log_line_size`.
pub const MAX_LINE: usize = 16 * 1024;
/// A batch is written out once it holds this many bytes (it may exceed it by one record).
pub const BATCH: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn tag(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Splits one stream into records. Holds the unterminated tail of the last read.
#[derive(Debug)]
pub struct LineSplitter {
    stream: Stream,
    partial: Vec<u8>,
}

impl LineSplitter {
    pub fn new(stream: Stream) -> Self {
        LineSplitter {
            stream,
            partial: Vec::new(),
        }
    }

    /// Feeds bytes just read; every finished record is written to `out` stamped `ts`.
    pub fn feed(&mut self, mut data: &[u8], ts: &str, out: &mut impl Write) -> io::Result<()> {
        while !data.is_empty() {
            let room = MAX_LINE - self.partial.len();
            match data.iter().take(room + 1).position(|&b| b == b'\n') {
                Some(i) if i <= room => {
                    self.partial.extend_from_slice(&data[..i]);
                    data = &data[i + 1..];
                    if self.partial.last() == Some(&b'\r') {
                        self.partial.pop();
                    }
                    self.emit(ts, b'F', out)?;
                }
                _ => {
                    let take = room.min(data.len());
                    self.partial.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.partial.len() == MAX_LINE {
                        self.emit(ts, b'P', out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// End of stream: the unterminated fragment, if any, becomes a `P` record.
    pub fn finish(&mut self, ts: &str, out: &mut impl Write) -> io::Result<()> {
        if self.partial.is_empty() {
            return Ok(());
        }
        self.emit(ts, b'P', out)
    }

    fn emit(&mut self, ts: &str, tag: u8, out: &mut impl Write) -> io::Result<()> {
        let mut rec = Vec::with_capacity(ts.len() + self.partial.len() + 12);
        rec.extend_from_slice(ts.as_bytes());
        rec.push(b' ');
        rec.extend_from_slice(self.stream.tag().as_bytes());
        rec.push(b' ');
        rec.push(tag);
        rec.push(b' ');
        rec.extend_from_slice(&self.partial);
        rec.push(b'\n');
        self.partial.clear();
        if self.partial.capacity() > 4096 {
            self.partial.shrink_to(0);
        }
        out.write_all(&rec)
    }
}

/// The log file, or a sink when the container has no log path. Reopen writes out the pending
/// batch and opens the same path again (`O_APPEND|O_CREAT`, mode 0640) in place of the old
/// file, creating a fresh file after the kubelet rotated the old one away. Callers write whole
/// records and `flush` after each batch.
///
/// A batch the file refuses (a full disk, a quota, an I/O error) is dropped, so the buffer stays
/// bounded and the container's output goes on being drained and attached, as with containerd.
/// The file is cut back to the last whole record when a write got only part of a batch in, so a
/// reader never sees a torn record. Writing never returns that error: the shim log gets one
/// line when writes start failing and one when they succeed again, with what was dropped.
#[derive(Debug)]
pub struct LogFile {
    path: Option<PathBuf>,
    file: Option<File>,
    /// Whole records not yet written; at most [`BATCH`] plus one record.
    pending: Vec<u8>,
    /// Bytes of records dropped since writes began failing; 0 while they succeed.
    dropped: u64,
}

impl LogFile {
    pub fn open(path: Option<PathBuf>) -> io::Result<Self> {
        let mut log = LogFile {
            path,
            file: None,
            pending: Vec::new(),
            dropped: 0,
        };
        log.reopen()?;
        Ok(log)
    }

    pub fn reopen(&mut self) -> io::Result<()> {
        self.write_pending();
        // On failure the old file stays in use: records keep going where they went before.
        if let Some(p) = &self.path {
            self.file = Some(
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o640)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(p)?,
            );
        }
        Ok(())
    }

    /// Writes the pending batch, or drops it when the file refuses it (see [`LogFile`]).
    fn write_pending(&mut self) {
        let (Some(f), false) = (self.file.as_mut(), self.pending.is_empty()) else {
            return;
        };
        let len = self.pending.len();
        match append_whole(f, &self.pending) {
            Ok(()) if self.dropped > 0 => {
                note!(
                    "crius-shim: log {}: writing again; {} bytes of records were dropped",
                    self.path_text(),
                    self.dropped
                );
                self.dropped = 0;
            }
            Ok(()) => {}
            Err(e) => {
                if self.dropped == 0 {
                    note!(
                        "crius-shim: log {}: cannot write ({e}); dropping records until it can",
                        self.path_text()
                    );
                }
                self.dropped += len as u64;
            }
        }
        self.pending.clear();
        // A trickle gives the memory back; a flood keeps the batch buffer for the next batch.
        if len < BATCH / 4 && self.pending.capacity() > BATCH / 4 {
            self.pending = Vec::new();
        }
    }

    fn path_text(&self) -> String {
        self.path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
}

/// Appends `buf` whole or not at all: when a write fails after part of `buf` went in, the file
/// is cut back by that part.
fn append_whole(f: &mut File, mut buf: &[u8]) -> io::Result<()> {
    let mut written = 0u64;
    while !buf.is_empty() {
        match f.write(buf) {
            Ok(0) => return Err(cut_back(f, written, io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                written += n as u64;
                buf = &buf[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(cut_back(f, written, e)),
        }
    }
    Ok(())
}

/// Removes the last `written` bytes of `f` (a torn batch); returns `err`, the write's error.
fn cut_back(f: &File, written: u64, err: io::Error) -> io::Error {
    if written > 0
        && let Ok(m) = f.metadata()
        && let Err(e) = f.set_len(m.len().saturating_sub(written))
    {
        note!("crius-shim: log: cannot cut a torn record back: {e}");
    }
    err
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.file.is_none() {
            return Ok(buf.len());
        }
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= BATCH {
            self.write_pending();
        }
        Ok(buf.len())
    }

    /// Writes the batch; never fails (a refused batch is dropped, see [`LogFile`]).
    fn flush(&mut self) -> io::Result<()> {
        self.write_pending();
        Ok(())
    }
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The CRI log line's timestamp (RFC 3339, nine fraction digits, UTC).
pub use crius_shim_api::utc::rfc3339_nano;

#[cfg(test)]
mod tests {
    use super::*;

    const TS: &str = "2026-01-01T00:00:00.000000000Z";

    fn records(out: &[u8]) -> Vec<(String, String, String)> {
        String::from_utf8(out.to_vec())
            .unwrap()
            .lines()
            .map(|l| {
                let mut p = l.splitn(4, ' ');
                assert_eq!(p.next().unwrap(), TS);
                (
                    p.next().unwrap().to_string(),
                    p.next().unwrap().to_string(),
                    p.next().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn complete_lines_are_full_records_across_reads() {
        let mut s = LineSplitter::new(Stream::Stderr);
        let mut out = Vec::new();
        s.feed(b"hello Wo", TS, &mut out).unwrap();
        assert!(out.is_empty(), "a fragment waits for its newline");
        s.feed(b"rld\nsecond\r\n\nthi", TS, &mut out).unwrap();
        s.finish(TS, &mut out).unwrap();
        let r = records(&out);
        let want = [("F", "hello World"), ("F", "second"), ("F", ""), ("P", "thi")];
        assert_eq!(r.len(), want.len());
        for (got, (tag, text)) in r.iter().zip(want) {
            assert_eq!(
                (got.0.as_str(), got.1.as_str(), got.2.as_str()),
                ("stderr", tag, text)
            );
        }
    }

    #[test]
    fn long_line_is_split_into_partials_and_reassembles() {
        let line: Vec<u8> = (0..40 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
        let mut input = line.clone();
        input.push(b'\n');
        let mut s = LineSplitter::new(Stream::Stdout);
        let mut out = Vec::new();
        for chunk in input.chunks(3000) {
            s.feed(chunk, TS, &mut out).unwrap();
        }
        let r = records(&out);
        let tags: Vec<_> = r.iter().map(|x| x.1.as_str()).collect();
        assert_eq!(tags, ["P", "P", "F"]);
        assert_eq!(r[0].2.len(), MAX_LINE);
        assert_eq!(r[1].2.len(), MAX_LINE);
        let joined: String = r.iter().map(|x| x.2.as_str()).collect();
        assert_eq!(joined.as_bytes(), &line[..]);
    }

    #[test]
    fn line_of_exactly_max_is_one_full_record() {
        let mut input = vec![b'x'; MAX_LINE];
        input.push(b'\n');
        let mut s = LineSplitter::new(Stream::Stdout);
        let mut out = Vec::new();
        s.feed(&input, TS, &mut out).unwrap();
        let r = records(&out);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].1.as_str(), r[0].2.len()), ("F", MAX_LINE));
    }

    #[test]
    fn timestamps_are_rfc3339_nano_utc() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nano(951_782_400_000_000_007),
            "2000-02-29T00:00:00.000000007Z"
        );
        assert_eq!(
            rfc3339_nano(1_795_763_289_123_456_789),
            "2026-11-27T07:08:09.123456789Z"
        );
    }

    #[test]
    fn records_are_batched_whole_and_written_per_batch() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let mut log = LogFile::open(Some(p.clone())).unwrap();
        let mut s = LineSplitter::new(Stream::Stdout);
        s.feed(&b"y\n".repeat(100), TS, &mut log).unwrap();
        assert_eq!(
            std::fs::read(&p).unwrap().len(),
            0,
            "a small batch waits for flush"
        );
        log.flush().unwrap();
        assert_eq!(records(&std::fs::read(&p).unwrap()).len(), 100);
        // A flood: the batch is written each time it reaches BATCH, always at a record boundary.
        s.feed(&b"y\n".repeat(BATCH), TS, &mut log).unwrap();
        let on_disk = std::fs::read(&p).unwrap();
        assert!(on_disk.len() >= BATCH, "full batches were written before flush");
        assert_eq!(on_disk.last(), Some(&b'\n'), "no record is torn between writes");
        assert!(log.pending.len() < BATCH + MAX_LINE + 64, "pending stays bounded");
        log.flush().unwrap();
        let r = records(&std::fs::read(&p).unwrap());
        assert_eq!(r.len(), 100 + BATCH);
        assert!(r.iter().all(|x| x.0 == "stdout" && x.1 == "F" && x.2 == "y"));
    }

    #[test]
    fn a_refused_file_drops_whole_batches_and_never_fails_the_writer() {
        // /dev/full refuses every write with ENOSPC, as a full disk does.
        let mut log = LogFile::open(Some(PathBuf::from("/dev/full"))).unwrap();
        let mut s = LineSplitter::new(Stream::Stdout);
        s.feed(&b"y\n".repeat(BATCH), TS, &mut log).unwrap();
        log.flush().unwrap();
        assert!(
            log.dropped >= (BATCH * 2) as u64,
            "every record was counted as dropped"
        );
        assert!(
            log.pending.is_empty(),
            "nothing is kept for a file that refuses it"
        );
    }

    #[test]
    fn a_batch_cut_short_leaves_no_torn_record() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        std::fs::write(&p, b"whole\n").unwrap();
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        let err = cut_back(&f, 3, io::ErrorKind::StorageFull.into());
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        f.flush().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"who");
        assert!(append_whole(&mut f, b"le\n").is_ok());
        assert_eq!(std::fs::read(&p).unwrap(), b"whole\n");
    }

    #[test]
    fn reopen_creates_a_new_file_at_the_same_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let mut log = LogFile::open(Some(p.clone())).unwrap();
        log.write_all(b"one\n").unwrap();
        std::fs::rename(&p, dir.path().join("c.log.1")).unwrap();
        log.reopen().unwrap();
        log.write_all(b"two\n").unwrap();
        log.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("c.log.1")).unwrap(),
            "one\n"
        );
    }
}
