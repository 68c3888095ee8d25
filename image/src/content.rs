//! The content store: blobs by digest at `<root>/content/blobs/sha256/<hex>`.
//!
//! Invariants: a file named `<hex>` is complete and its sha256 is `<hex>`: content is written to a
//! `.tmp-*` file in the same directory, hashed while written, checked against the expected digest
//! and size, fsynced and only then renamed into place. A writer dropped before `commit` removes its
//! temp file; [`ContentStore::open`] removes temp files a crash left behind.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("invalid digest {0:?}: only sha256:<64 lowercase hex> is supported")]
    BadDigest(String),
    #[error("digest mismatch for {expected}: content hashes to {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("content store I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ContentError + '_ {
    move |source| ContentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Returns the hex part of a `sha256:<hex>` digest.
pub fn digest_hex(digest: &str) -> Result<&str, ContentError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if crate::reference::is_hex64(hex) => Ok(hex),
        _ => Err(ContentError::BadDigest(digest.to_string())),
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Blobs by digest. Cheap to clone; all methods are safe to call concurrently (a blob is
/// published by an atomic rename, and concurrent writers of one digest write the same bytes).
#[derive(Debug, Clone)]
pub struct ContentStore {
    dir: PathBuf,
}

impl ContentStore {
    /// Opens (creating) `<root>/content/blobs/sha256` and removes temp files left by a crash.
    pub fn open(root: &Path) -> Result<ContentStore, ContentError> {
        let dir = root.join("content").join("blobs").join("sha256");
        // Root's alone (`content`, `blobs` and `sha256`): blobs are the images' bytes.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&dir)
            .map_err(io_err(&dir))?;
        let store = ContentStore { dir };
        store.remove_temp_files();
        Ok(store)
    }

    fn remove_temp_files(&self) {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a blob (which may not exist).
    pub fn path(&self, digest: &str) -> Result<PathBuf, ContentError> {
        Ok(self.dir.join(digest_hex(digest)?))
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_ok_and(|p| p.is_file())
    }

    pub fn read(&self, digest: &str) -> Result<Vec<u8>, ContentError> {
        let p = self.path(digest)?;
        std::fs::read(&p).map_err(io_err(&p))
    }

    /// Removes a blob; a missing blob is not an error.
    pub fn remove(&self, digest: &str) -> Result<(), ContentError> {
        let p = self.path(digest)?;
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&p)(e)),
            _ => Ok(()),
        }
    }

    /// Digests of every stored blob.
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

    /// Stores small in-memory content (manifests, configs) after checking its digest.
    pub fn put(&self, digest: &str, data: &[u8]) -> Result<(), ContentError> {
        let target = self.path(digest)?;
        let actual = sha256_digest(data);
        if actual != digest {
            return Err(ContentError::DigestMismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        if target.is_file() {
            return Ok(());
        }
        let tmp = self.temp_path(digest)?;
        let guard = TempGuard(Some(tmp.clone()));
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(data).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &target).map_err(io_err(&target))?;
        guard.disarm();
        Ok(())
    }

    fn temp_path(&self, digest: &str) -> Result<PathBuf, ContentError> {
        let hex = digest_hex(digest)?;
        Ok(self
            .dir
            .join(format!(".tmp-{}-{:016x}", &hex[..12], rand::random::<u64>())))
    }

    /// Starts writing the blob `digest` of `size` bytes (`None`: unknown) to a temp file.
    pub async fn writer(&self, digest: &str, size: Option<u64>) -> Result<BlobWriter, ContentError> {
        let target = self.path(digest)?;
        let tmp = self.temp_path(digest)?;
        let file = tokio::fs::File::create(&tmp).await.map_err(io_err(&tmp))?;
        Ok(BlobWriter {
            // Network chunks are small; batch them so each blocking write moves 1 MiB.
            file: tokio::io::BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            written: 0,
            digest: digest.to_string(),
            size,
            target,
            tmp: TempGuard(Some(tmp)),
        })
    }
}

/// Removes its file when dropped unless disarmed.
struct TempGuard(Option<PathBuf>);

impl TempGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A blob being downloaded. Dropping it without [`BlobWriter::commit`] removes the temp file.
pub struct BlobWriter {
    file: tokio::io::BufWriter<tokio::fs::File>,
    hasher: Sha256,
    written: u64,
    digest: String,
    size: Option<u64>,
    target: PathBuf,
    tmp: TempGuard,
}

impl BlobWriter {
    /// Appends a chunk. Fails as soon as more bytes arrive than the descriptor announced.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), ContentError> {
        self.written += chunk.len() as u64;
        if let Some(size) = self.size.filter(|s| self.written > *s) {
            return Err(ContentError::SizeMismatch {
                digest: self.digest.clone(),
                expected: size,
                actual: self.written,
            });
        }
        self.hasher.update(chunk);
        self.file.write_all(chunk).await.map_err(io_err(self.tmp.path()))
    }

    /// Verifies digest and size, fsyncs and publishes the blob. Returns its size.
    pub async fn commit(mut self) -> Result<u64, ContentError> {
        if let Some(size) = self.size.filter(|s| self.written != *s) {
            return Err(ContentError::SizeMismatch {
                digest: self.digest.clone(),
                expected: size,
                actual: self.written,
            });
        }
        let actual = format!("sha256:{}", hex::encode(self.hasher.finalize_reset()));
        if actual != self.digest {
            return Err(ContentError::DigestMismatch {
                expected: self.digest.clone(),
                actual,
            });
        }
        let tmp = self.tmp.path().to_path_buf();
        self.file.flush().await.map_err(io_err(&tmp))?;
        self.file.get_ref().sync_all().await.map_err(io_err(&tmp))?;
        tokio::fs::rename(&tmp, &self.target)
            .await
            .map_err(io_err(&self.target))?;
        let BlobWriter { tmp: guard, .. } = self;
        guard.disarm();
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_temp_files(s: &ContentStore) -> bool {
        std::fs::read_dir(s.dir())
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with(".tmp"))
    }

    #[tokio::test]
    async fn writes_verified_blobs_and_cleans_failures() {
        let root = tempfile::tempdir().unwrap();
        let s = ContentStore::open(root.path()).unwrap();
        let data = b"hello blob";
        let d = sha256_digest(data);
        let mut w = s.writer(&d, Some(data.len() as u64)).await.unwrap();
        w.write(&data[..5]).await.unwrap();
        w.write(&data[5..]).await.unwrap();
        assert_eq!(w.commit().await.unwrap(), data.len() as u64);
        assert_eq!(s.read(&d).unwrap(), data);
        assert_eq!(s.list(), vec![d.clone()]);

        let wrong = sha256_digest(b"other");
        let mut w = s.writer(&wrong, None).await.unwrap();
        w.write(data).await.unwrap();
        assert!(matches!(
            w.commit().await,
            Err(ContentError::DigestMismatch { .. })
        ));
        assert!(!s.contains(&wrong));

        let mut w = s.writer(&d, Some(3)).await.unwrap();
        assert!(matches!(
            w.write(data).await,
            Err(ContentError::SizeMismatch { .. })
        ));
        drop(w);
        assert!(no_temp_files(&s));

        assert!(s.put(&wrong, data).is_err());
        assert!(no_temp_files(&s));
        s.remove(&d).unwrap();
        s.remove(&d).unwrap();
        assert!(s.list().is_empty());
        assert!(s.path("sha256:../../etc").is_err());
    }

    #[test]
    fn open_removes_crash_leftovers() {
        let root = tempfile::tempdir().unwrap();
        let s = ContentStore::open(root.path()).unwrap();
        std::fs::write(s.dir().join(".tmp-abc-1"), b"x").unwrap();
        let s = ContentStore::open(root.path()).unwrap();
        assert!(no_temp_files(&s));
    }
}
