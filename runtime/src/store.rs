//! The embedded, crash-safe state store: one redb database at `<root>/crius.redb`.
//!
//! Each domain crate defines its own tables in this one database (sandbox, container, image
//! records and the name index), so a name reservation and the record it guards commit in one
//! transaction. redb's copy-on-write commits make every committed write durable and atomic.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File name of the database under `root`.
pub const DB_FILE: &str = "crius.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open state database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
}

/// Opens (or creates) the database under `root`. Fails if another process holds it open, which
/// also keeps two daemons from sharing one `root`.
pub fn open(root: &Path) -> Result<Arc<redb::Database>, StoreError> {
    let path = root.join(DB_FILE);
    let db = redb::Database::create(&path).map_err(|source| StoreError::Open { path, source })?;
    Ok(Arc::new(db))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopens_existing_database() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()).unwrap());
        assert!(dir.path().join(DB_FILE).exists());
        open(dir.path()).unwrap();
    }
}
