//! Layer unpacking: one directory per chain ID at `<root>/layers/<chainid-hex>/`.
//!
//! Invariants: a directory named `<chainid-hex>` is a complete layer whose decompressed tar hashed
//! to the diff ID the image config names. It is built in a `.tmp-*` sibling, synced, and renamed
//! into place, so a crash leaves only temp dirs (removed by [`Layers::open`]) and never a partial
//! layer. Compression is detected from magic bytes (gzip, zstd, else plain tar), not media types.
//! Entry application (`apply`) never creates or changes anything outside the layer directory.

mod apply;
mod sys;
mod tarstream;

use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

pub use apply::clean;
pub use tarstream::{Entry, MAX_SPECIAL_ENTRY, TarStream, header_only};

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer tar is malformed: {0}")]
    Tar(#[source] io::Error),
    #[error("layer entry {path:?}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {path:?}: {op}: {source}")]
    Resolve {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: pathrs::error::Error,
    },
    #[error("layer entry {path:?}: {why}")]
    Invalid { path: PathBuf, why: &'static str },
    #[error("layer entry {path:?}: unsupported tar entry type {kind}")]
    Unsupported { path: PathBuf, kind: String },
    /// An extension header (long name, PAX) announcing more than the cap; refused before its body
    /// is read.
    #[error("layer tar: a {what} of {size} bytes is over the {limit}-byte limit")]
    TooLarge {
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("layer diff ID mismatch: the image config says {expected}, the layer hashes to {actual}")]
    DiffIdMismatch { expected: String, actual: String },
}

impl UnpackError {
    fn path(path: &Path, op: &'static str, source: pathrs::error::Error) -> UnpackError {
        UnpackError::Resolve {
            path: path.to_path_buf(),
            op,
            source,
        }
    }
}

/// ChainIDs of a layer stack (OCI image-spec config.md): `c1 = d1`, `cn = sha256(c(n-1) + " " + dn)`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => crate::content::sha256_digest(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Hashes every byte read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A blocking reader over chunks that an async task sends; end of stream when the sender is
/// dropped. Lets a layer be unpacked while it downloads.
pub struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    chunk: bytes::Bytes,
}

impl ChunkReader {
    pub fn new(rx: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> ChunkReader {
        ChunkReader {
            rx,
            chunk: bytes::Bytes::new(),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(c) => self.chunk = c,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// Largest zstd window accepted (2^23 = 8 MiB); part of the per-pull memory bound.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// Wraps `r` in the decompressor its first bytes call for.
pub fn decompress<'a, R: Read + 'a>(r: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut r = BufReader::with_capacity(128 << 10, r);
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut d = zstd::stream::read::Decoder::with_buffer(r)?;
        // A frame may ask for a window of up to 2 GiB, allocated up front: cap it at 8 MiB, what
        // zstd's default levels (up to 19) and Go's klauspost encoder produce.
        d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
        Box::new(d)
    } else {
        Box::new(r)
    })
}

/// Applies a (possibly compressed) layer stream to `dir` and returns the sha256 digest of the
/// decompressed tar, trailing padding included.
pub fn apply_to_dir(blob: impl Read, dir: &Path) -> Result<String, UnpackError> {
    let reader = decompress(blob).map_err(UnpackError::Tar)?;
    let mut archive = TarStream::new(HashingReader {
        inner: reader,
        hasher: Sha256::new(),
    });
    apply::Applier::new(dir)?.apply(&mut archive)?;
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(UnpackError::Tar)?;
    Ok(format!("sha256:{}", hex::encode(rest.hasher.finalize())))
}

/// The unpacked layers under `<root>/layers`.
#[derive(Debug, Clone)]
pub struct Layers {
    dir: PathBuf,
}

impl Layers {
    /// Opens (creating) `<root>/layers` and removes temp dirs a crash left behind.
    pub fn open(root: &Path) -> io::Result<Layers> {
        let dir = root.join("layers");
        // Root's alone: layers hold the images' setuid binaries, runnable only in containers.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&dir)?;
        for e in std::fs::read_dir(&dir)?.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        Ok(Layers { dir })
    }

    /// Directory of the layer with `chain_id` (which may not exist yet).
    pub fn path(&self, chain_id: &str) -> Result<PathBuf, crate::content::ContentError> {
        Ok(self.dir.join(crate::content::digest_hex(chain_id)?))
    }

    pub fn contains(&self, chain_id: &str) -> bool {
        self.path(chain_id).is_ok_and(|p| p.is_dir())
    }

    /// Chain IDs of every unpacked layer.
    pub fn list(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| crate::reference::is_hex64(n))
            .map(|n| format!("sha256:{n}"))
            .collect()
    }

    /// Removes a layer directory; a missing one is not an error.
    pub fn remove(&self, chain_id: &str) -> io::Result<()> {
        match self.detach(chain_id)? {
            Some(trash) => std::fs::remove_dir_all(trash),
            None => Ok(()),
        }
    }

    /// Takes a layer out of the store by renaming it to a `.tmp-` name (quick and atomic) and
    /// returns that path for the caller to delete at leisure; a crash leaves it to [`Layers::open`].
    /// `None` when the layer is not there.
    pub fn detach(&self, chain_id: &str) -> io::Result<Option<PathBuf>> {
        let Ok(p) = self.path(chain_id) else {
            return Ok(None);
        };
        let hex = crate::content::digest_hex(chain_id).unwrap_or_default();
        let trash = self
            .dir
            .join(format!(".tmp-gc-{}-{:016x}", &hex[..12], rand::random::<u64>()));
        match std::fs::rename(&p, &trash) {
            Ok(()) => Ok(Some(trash)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Unpacks `blob` as the layer `chain_id` whose decompressed tar must hash to `diff_id`.
    /// Already unpacked → nothing to do. Blocking: call from a blocking thread.
    pub fn unpack(&self, blob: &Path, diff_id: &str, chain_id: &str) -> Result<PathBuf, LayerError> {
        let file = std::fs::File::open(blob).map_err(|source| LayerError::Io {
            path: blob.to_path_buf(),
            op: "open blob",
            source,
        })?;
        self.unpack_from(file, diff_id, chain_id)
    }

    /// [`Layers::unpack`] from a stream (a blob still being downloaded). The stream is read to its
    /// end; the layer is published only if everything read hashes to `diff_id`.
    pub fn unpack_from(&self, blob: impl Read, diff_id: &str, chain_id: &str) -> Result<PathBuf, LayerError> {
        let target = self.path(chain_id).map_err(LayerError::Id)?;
        if target.is_dir() {
            return Ok(target);
        }
        let tmp = self.dir.join(format!(
            ".tmp-{}-{:016x}",
            &crate::content::digest_hex(chain_id).map_err(LayerError::Id)?[..12],
            rand::random::<u64>()
        ));
        let io = |op: &'static str, p: &Path| {
            let path = p.to_path_buf();
            move |source| LayerError::Io { path, op, source }
        };
        std::fs::create_dir(&tmp).map_err(io("create temp layer dir", &tmp))?;
        let guard = RemoveDirOnDrop(Some(tmp.clone()));
        let actual = apply_to_dir(blob, &tmp)?;
        if actual != diff_id {
            return Err(UnpackError::DiffIdMismatch {
                expected: diff_id.to_string(),
                actual,
            }
            .into());
        }
        let dirf = std::fs::File::open(&tmp).map_err(io("open temp layer dir", &tmp))?;
        sys::syncfs(&dirf).map_err(io("sync layer", &tmp))?;
        match std::fs::rename(&tmp, &target) {
            Ok(()) => guard.disarm(),
            // Another pull unpacked the same layer first; ours is dropped by the guard.
            Err(_) if target.is_dir() => {}
            Err(e) => return Err(io("publish layer", &target)(e)),
        }
        Ok(target)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error(transparent)]
    Id(crate::content::ContentError),
    #[error("layer store {op} {path}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

struct RemoveDirOnDrop(Option<PathBuf>);

impl RemoveDirOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveDirOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

#[cfg(test)]
mod tests;
