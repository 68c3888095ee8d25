//! Sandbox records in the daemon's redb database: immutable metadata, mutable status, and the
//! name index (name, namespace, uid, attempt → sandbox id).
//!
//! Invariants:
//! - A record's metadata is written once, in the same transaction that reserves its name; a
//!   second sandbox with the same name fails in that transaction (no racy look-up first).
//! - Status changes only through [`update`], which commits before it returns.
//! - [`delete`] removes metadata, status and the name entry together, and only the name entry
//!   that points at this id.
//! - Every write goes through the [`Store`]'s row cache, so reads ([`get`], [`scan`]) answer from
//!   decoded copies that equal the tables after every commit (see `rowcache`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::record::{SandboxMeta, SandboxStatus};
use crate::rowcache::RowCache;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("sandbox_meta");
const STATUS: TableDefinition<&str, &[u8]> = TableDefinition::new("sandbox_status");
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("sandbox_names");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sandbox database: {0}")]
    Db(#[from] redb::Error),
    #[error("sandbox record {id} is unreadable: {source}")]
    Corrupt {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("pod sandbox name {name:?} is reserved by sandbox {holder}")]
    NameReserved { name: String, holder: String },
    #[error("pod sandbox {id} not found")]
    NotFound { id: String },
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(e.into())
}

/// A full record: metadata plus current status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub meta: SandboxMeta,
    pub status: SandboxStatus,
}

impl Record {
    /// The pod's PID namespace for containers to join (`/proc/<infra pid>/ns/pid`), while the
    /// infra process runs; None when the pod does not share a PID namespace.
    pub fn pid_namespace(&self) -> Option<std::path::PathBuf> {
        let p = self.status.pause.filter(crate::pause::is_alive)?;
        Some(format!("/proc/{}/ns/pid", p.pid).into())
    }
}

/// The sandbox tables and the decoded copy of their rows.
pub struct Store {
    db: Arc<redb::Database>,
    rows: RowCache<Row>,
}

/// One sandbox as the tables hold it.
#[derive(Clone)]
enum Row {
    Readable(Arc<Record>),
    Unreadable(Arc<Unreadable>),
}

impl Store {
    /// Creates the tables so read transactions always find them.
    pub fn open(db: Arc<redb::Database>) -> Result<Store, StoreError> {
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(META).map_err(db_err)?;
        tx.open_table(STATUS).map_err(db_err)?;
        tx.open_table(NAMES).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(Store {
            db,
            rows: RowCache::default(),
        })
    }

    fn rows(&self) -> Result<crate::rowcache::Rows<Row>, StoreError> {
        self.rows.rows(|| load(&self.db))
    }
}

/// Reserves the name and writes metadata and the first status, in one transaction.
pub fn insert(store: &Store, meta: &SandboxMeta, status: &SandboxStatus) -> Result<(), StoreError> {
    store.rows.write(
        || insert_row(&store.db, meta, status),
        |_, rows| {
            let r = Record {
                meta: meta.clone(),
                status: status.clone(),
            };
            rows.insert(meta.id.clone(), Row::Readable(Arc::new(r)));
            true
        },
    )
}

fn insert_row(db: &redb::Database, meta: &SandboxMeta, status: &SandboxStatus) -> Result<(), StoreError> {
    let meta_json = serde_json::to_vec(meta).expect("sandbox metadata serializes");
    let status_json = serde_json::to_vec(status).expect("sandbox status serializes");
    let tx = db.begin_write().map_err(db_err)?;
    {
        let mut names = tx.open_table(NAMES).map_err(db_err)?;
        if let Some(holder) = names.get(meta.name_key.as_str()).map_err(db_err)? {
            return Err(StoreError::NameReserved {
                name: meta.display_name(),
                holder: holder.value().to_string(),
            });
        }
        names
            .insert(meta.name_key.as_str(), meta.id.as_str())
            .map_err(db_err)?;
        let mut m = tx.open_table(META).map_err(db_err)?;
        m.insert(meta.id.as_str(), meta_json.as_slice()).map_err(db_err)?;
        let mut s = tx.open_table(STATUS).map_err(db_err)?;
        s.insert(meta.id.as_str(), status_json.as_slice())
            .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
}

/// The one way to change a sandbox's status: `f` edits a copy, which is committed before
/// this returns. Returns the new status.
pub fn update(
    store: &Store,
    id: &str,
    f: impl FnOnce(&mut SandboxStatus),
) -> Result<SandboxStatus, StoreError> {
    store.rows.write(
        || update_row(&store.db, id, f),
        |status, rows| match rows.get(id) {
            Some(Row::Readable(r)) => {
                let mut r = Record::clone(r);
                r.status = status.clone();
                rows.insert(id.to_string(), Row::Readable(Arc::new(r)));
                true
            }
            // The metadata did not decode: let the next read decode both again.
            _ => false,
        },
    )
}

fn update_row(
    db: &redb::Database,
    id: &str,
    f: impl FnOnce(&mut SandboxStatus),
) -> Result<SandboxStatus, StoreError> {
    let tx = db.begin_write().map_err(db_err)?;
    let status = {
        let mut table = tx.open_table(STATUS).map_err(db_err)?;
        let mut status: SandboxStatus = match table.get(id).map_err(db_err)? {
            Some(v) => serde_json::from_slice(v.value()).map_err(|source| StoreError::Corrupt {
                id: id.to_string(),
                source,
            })?,
            None => return Err(StoreError::NotFound { id: id.to_string() }),
        };
        f(&mut status);
        let json = serde_json::to_vec(&status).expect("sandbox status serializes");
        table.insert(id, json.as_slice()).map_err(db_err)?;
        status
    };
    tx.commit().map_err(db_err)?;
    Ok(status)
}

/// Reads one record: None when it does not exist or lacks half of itself; Corrupt when it does
/// not decode.
pub fn get(store: &Store, id: &str) -> Result<Option<Record>, StoreError> {
    match store.rows()?.get(id) {
        Some(Row::Readable(r)) => Ok(Some(Record::clone(r))),
        Some(Row::Unreadable(_)) => get_row(&store.db, id),
        None => Ok(None),
    }
}

fn get_row(db: &redb::Database, id: &str) -> Result<Option<Record>, StoreError> {
    let tx = db.begin_read().map_err(db_err)?;
    let meta = tx.open_table(META).map_err(db_err)?;
    let status = tx.open_table(STATUS).map_err(db_err)?;
    let (Some(m), Some(s)) = (meta.get(id).map_err(db_err)?, status.get(id).map_err(db_err)?) else {
        return Ok(None);
    };
    decode(id, m.value(), s.value()).map(Some)
}

fn decode(id: &str, meta: &[u8], status: &[u8]) -> Result<Record, StoreError> {
    let corrupt = |source| StoreError::Corrupt {
        id: id.to_string(),
        source,
    };
    Ok(Record {
        meta: serde_json::from_slice(meta).map_err(corrupt)?,
        status: serde_json::from_slice(status).map_err(corrupt)?,
    })
}

/// Every readable record (see [`scan`] for the others).
pub fn list(store: &Store) -> Result<Vec<Record>, StoreError> {
    Ok(scan(store)?.0)
}

/// A sandbox whose metadata or status does not decode (a newer crius's format, damage), or
/// has only one of the two. Nothing acts on it: its namespaces, files, cgroup, infra process
/// and network stay as they are.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub id: String,
    pub error: String,
    /// The pod as ListPodSandbox shows it (NOTREADY), when its metadata can still be read.
    pub listed: Option<cri_api::v1::PodSandbox>,
}

/// Every record, in id order: the readable ones and the unreadable ones (never rewritten or
/// removed here).
pub fn scan(store: &Store) -> Result<(Vec<Record>, Vec<Unreadable>), StoreError> {
    let (shared, unreadable) = scan_shared(store)?;
    Ok((shared.iter().map(|r| Record::clone(r)).collect(), unreadable))
}

/// [`scan`] without copying the readable records: they are shared with the row cache, for
/// readers that only look (ListPodSandbox, every second).
pub fn scan_shared(store: &Store) -> Result<(Vec<Arc<Record>>, Vec<Unreadable>), StoreError> {
    let rows = store.rows()?;
    Ok(split(&rows))
}

/// [`scan_shared`] when the row cache is loaded (None otherwise): no transaction and no wait
/// on a write, so an async worker may call it.
pub fn scan_cached(store: &Store) -> Option<(Vec<Arc<Record>>, Vec<Unreadable>)> {
    store.rows.cached().map(|rows| split(&rows))
}

fn split(rows: &BTreeMap<String, Row>) -> (Vec<Arc<Record>>, Vec<Unreadable>) {
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    for row in rows.values() {
        match row {
            Row::Readable(r) => out.push(r.clone()),
            Row::Unreadable(u) => unreadable.push(Unreadable::clone(u)),
        }
    }
    (out, unreadable)
}

/// Decodes both tables: a row per id in either of them.
fn load(db: &redb::Database) -> Result<BTreeMap<String, Row>, StoreError> {
    let tx = db.begin_read().map_err(db_err)?;
    let meta = tx.open_table(META).map_err(db_err)?;
    let status = tx.open_table(STATUS).map_err(db_err)?;
    let mut statuses: HashMap<String, Vec<u8>> = HashMap::new();
    for entry in status.iter().map_err(db_err)? {
        let (k, v) = entry.map_err(db_err)?;
        statuses.insert(k.value().to_string(), v.value().to_vec());
    }
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    for entry in meta.iter().map_err(db_err)? {
        let (k, v) = entry.map_err(db_err)?;
        let id = k.value();
        let error = match statuses.remove(id) {
            Some(s) => match decode(id, v.value(), &s) {
                Ok(r) => {
                    out.push(r);
                    continue;
                }
                Err(e) => e.to_string(),
            },
            None => format!("sandbox record {id} has metadata but no status"),
        };
        unreadable.push(Unreadable {
            id: id.to_string(),
            listed: salvage(id, v.value()),
            error,
        });
    }
    unreadable.extend(statuses.into_keys().map(|id| Unreadable {
        error: format!("sandbox record {id} has a status but no metadata"),
        id,
        listed: None,
    }));
    let mut rows: BTreeMap<String, Row> = out
        .into_iter()
        .map(|r| (r.meta.id.clone(), Row::Readable(Arc::new(r))))
        .collect();
    rows.extend(
        unreadable
            .into_iter()
            .map(|u| (u.id.clone(), Row::Unreadable(Arc::new(u)))),
    );
    Ok(rows)
}

/// What ListPodSandbox can still show of a record whose metadata is at least JSON with a
/// readable `config.metadata`.
fn salvage(id: &str, meta: &[u8]) -> Option<cri_api::v1::PodSandbox> {
    fn field<T: serde::de::DeserializeOwned>(v: &serde_json::Value, pointer: &str) -> Option<T> {
        v.pointer(pointer)
            .and_then(|x| serde_json::from_value(x.clone()).ok())
    }
    let v: serde_json::Value = serde_json::from_slice(meta).ok()?;
    Some(cri_api::v1::PodSandbox {
        id: id.to_string(),
        metadata: Some(field(&v, "/config/metadata")?),
        state: cri_api::v1::PodSandboxState::SandboxNotready as i32,
        created_at: field(&v, "/created_at").unwrap_or_default(),
        labels: field(&v, "/config/labels").unwrap_or_default(),
        annotations: field(&v, "/config/annotations").unwrap_or_default(),
        runtime_handler: field(&v, "/runtime_handler").unwrap_or_default(),
    })
}

/// Ids starting with `prefix` (at most `limit`).
pub fn ids_with_prefix(store: &Store, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
    let tx = store.db.begin_read().map_err(db_err)?;
    let meta = tx.open_table(META).map_err(db_err)?;
    let mut out = Vec::new();
    for entry in meta.range(prefix..).map_err(db_err)? {
        let (k, _) = entry.map_err(db_err)?;
        if !k.value().starts_with(prefix) || out.len() == limit {
            break;
        }
        out.push(k.value().to_string());
    }
    Ok(out)
}

/// Removes a record and its name reservation. Idempotent.
pub fn delete(store: &Store, id: &str, name_key: &str) -> Result<(), StoreError> {
    store.rows.write(
        || delete_row(&store.db, id, name_key),
        |_, rows| {
            rows.remove(id);
            true
        },
    )
}

fn delete_row(db: &redb::Database, id: &str, name_key: &str) -> Result<(), StoreError> {
    let tx = db.begin_write().map_err(db_err)?;
    {
        let mut names = tx.open_table(NAMES).map_err(db_err)?;
        let ours = names
            .get(name_key)
            .map_err(db_err)?
            .is_some_and(|v| v.value() == id);
        if ours {
            names.remove(name_key).map_err(db_err)?;
        }
        tx.open_table(META).map_err(db_err)?.remove(id).map_err(db_err)?;
        tx.open_table(STATUS)
            .map_err(db_err)?
            .remove(id)
            .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
}

/// Overwrites a record's status with raw bytes (tests of unreadable records).
#[cfg(test)]
pub(crate) fn put_raw_status(store: &Store, id: &str, bytes: &[u8]) {
    let commit = || -> Result<(), StoreError> {
        let tx = store.db.begin_write().map_err(db_err)?;
        tx.open_table(STATUS)
            .map_err(db_err)?
            .insert(id, bytes)
            .map_err(db_err)?;
        tx.commit().map_err(db_err)
    };
    store.rows.write(commit, |_, _| false).unwrap();
}
