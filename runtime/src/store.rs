//! The embedded, crash-safe state store: one redb database at `<root>/crius.redb` (mode 0600:
//! it holds every container's environment, so every secret passed as an env var), and its
//! schema version.
//!
//! Each domain crate defines its own tables in this one database (sandbox, container, image
//! records and the name index), so a name reservation and the record it guards commit in one
//! transaction. redb's copy-on-write commits make every committed write durable and atomic.
//!
//! Schema: `crius_meta["schema_version"]` says which record formats the tables hold. A database
//! without it predates versioning (version 0, the same formats as version 1). On open, an older
//! version is migrated step by step in one transaction; a newer one is refused, since this
//! daemon could not read its records and recovery must never act on records it cannot read.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableTable, TableDefinition};

/// File name of the database under `root`. It, the table, the key and the version are an
/// on-disk contract: the integration tests that fake a newer database spell them out too.
pub const DB_FILE: &str = "crius.redb";
/// The record formats this build writes and reads.
pub const SCHEMA_VERSION: u64 = 1;
/// Table and key of the schema version.
const META_TABLE: &str = "crius_meta";
const SCHEMA_KEY: &str = "schema_version";

const META: TableDefinition<&str, u64> = TableDefinition::new(META_TABLE);

/// Step `i` migrates schema `i` to `i + 1` inside the open transaction.
type Migration = fn(&redb::WriteTransaction) -> Result<(), redb::Error>;
const MIGRATIONS: [Migration; SCHEMA_VERSION as usize] = [
    // 0 → 1: the first versioned schema has the formats unversioned databases were written in;
    // only the version is recorded.
    |_| Ok(()),
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open state database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("state database {path}: {what}: {source}")]
    Db {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: redb::Error,
    },
    #[error("cannot make state database {path} private (mode 0600): {source}")]
    Mode {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state database {path} has schema version {found}, newer than version {supported} that this \
         crius {version} reads; refusing to start rather than act on records it cannot read \
         (run the crius release that wrote it, or a newer one)"
    )]
    TooNew {
        path: PathBuf,
        found: u64,
        supported: u64,
        version: &'static str,
    },
}

/// Opens (or creates) the database under `root`, makes it private and brings its schema to
/// [`SCHEMA_VERSION`]. Fails if another process holds it open (which also keeps two daemons
/// from sharing one `root`) or if its schema is newer than this build's.
pub fn open(root: &Path) -> Result<Arc<redb::Database>, StoreError> {
    let path = root.join(DB_FILE);
    let db = redb::Database::create(&path).map_err(|source| StoreError::Open {
        path: path.clone(),
        source,
    })?;
    // Root only: the records hold every container's environment (secrets passed as env vars).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        StoreError::Mode {
            path: path.clone(),
            source,
        }
    })?;
    migrate(&db, &path)?;
    Ok(Arc::new(db))
}

fn migrate(db: &redb::Database, path: &Path) -> Result<(), StoreError> {
    let err = |what: &'static str| {
        let path = path.to_path_buf();
        move |e: redb::Error| StoreError::Db {
            path,
            what,
            source: e,
        }
    };
    let txn = db.begin_write().map_err(|e| err("begin")(e.into()))?;
    let found = {
        let t = txn.open_table(META).map_err(|e| err("open meta")(e.into()))?;
        let v = t.get(SCHEMA_KEY).map_err(|e| err("read version")(e.into()))?;
        v.map(|v| v.value()).unwrap_or(0)
    };
    if found > SCHEMA_VERSION {
        // Dropping `txn` aborts it: the database is left exactly as found.
        return Err(StoreError::TooNew {
            path: path.into(),
            found,
            supported: SCHEMA_VERSION,
            version: env!("CARGO_PKG_VERSION"),
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    for step in found..SCHEMA_VERSION {
        MIGRATIONS[step as usize](&txn).map_err(err("migrate"))?;
    }
    {
        let mut t = txn.open_table(META).map_err(|e| err("open meta")(e.into()))?;
        t.insert(SCHEMA_KEY, SCHEMA_VERSION)
            .map_err(|e| err("write version")(e.into()))?;
    }
    txn.commit().map_err(|e| err("commit")(e.into()))?;
    tracing::info!(from = found, to = SCHEMA_VERSION, db = %path.display(), "state database schema migrated");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema version recorded in `db` (0 = none recorded).
    fn schema_version(db: &redb::Database) -> Result<u64, redb::Error> {
        let txn = redb::ReadableDatabase::begin_read(db)?;
        let t = txn.open_table(META)?;
        Ok(t.get(SCHEMA_KEY)?.map(|v| v.value()).unwrap_or(0))
    }

    #[test]
    fn reopens_existing_database_private_and_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        drop(open(dir.path()).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let db = open(dir.path()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "an existing database is tightened");
        assert_eq!(schema_version(&db).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn unversioned_database_is_migrated_and_keeps_its_records() {
        const T: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(T).unwrap().insert("a", b"{}".as_slice()).unwrap();
            txn.commit().unwrap();
        }
        let db = open(dir.path()).unwrap();
        assert_eq!(schema_version(&db).unwrap(), SCHEMA_VERSION);
        let txn = redb::ReadableDatabase::begin_read(db.as_ref()).unwrap();
        let t = txn.open_table(T).unwrap();
        assert_eq!(t.get("a").unwrap().unwrap().value(), b"{}");
    }

    #[test]
    fn newer_schema_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(SCHEMA_KEY, SCHEMA_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let e = open(dir.path()).map(|_| ()).unwrap_err();
        assert!(
            matches!(e, StoreError::TooNew { found, supported: SCHEMA_VERSION, .. } if found == SCHEMA_VERSION + 1)
        );
        assert!(e.to_string().contains("refusing to start"), "{e}");
        let db = redb::Database::create(&path).unwrap();
        assert_eq!(schema_version(&db).unwrap(), SCHEMA_VERSION + 1);
    }
}
