//! Container records in the redb database: immutable metadata written once at create, and a
//! status changed only through [`Records::update`].
//!
//! ```text
//!  CREATED --start--> RUNNING --init exits / stop--> EXITED
//!     \______________stop / remove______________/
//!  UNKNOWN: the shim vanished without an exit file (recovery marks it).
//! ```
//!
//! Invariants: a record and its name-index entry (`<sandbox id>/<name>/<attempt>`) are inserted
//! and removed in the same transaction, so the index never names a missing record; a status
//! update commits before the caller answers its RPC. Every write goes through the row cache
//! (`crius_sandbox::rowcache`), so reads answer from decoded copies equal to the table.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use cri_api::v1::ContainerConfig;
use crius_sandbox::rowcache::{RowCache, Rows};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");
const CONTAINER_NAMES: TableDefinition<&str, &str> = TableDefinition::new("container_names");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Created,
    Running,
    Exited,
    Unknown,
}

impl State {
    pub fn to_cri(self) -> cri_api::v1::ContainerState {
        use cri_api::v1::ContainerState as S;
        match self {
            State::Created => S::ContainerCreated,
            State::Running => S::ContainerRunning,
            State::Exited => S::ContainerExited,
            State::Unknown => S::ContainerUnknown,
        }
    }
}

/// What changes over a container's life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub state: State,
    /// Init's pid in the host PID namespace: 0 until StartContainer's shim built the
    /// container (and again after a failed start).
    pub pid: i32,
    pub shim_pid: i32,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    /// CRI: `Completed`, `Error`, `OOMKilled` once exited.
    pub reason: String,
    pub message: String,
    /// The resources last applied (create or UpdateContainerResources).
    pub resources: Option<cri_api::v1::LinuxContainerResources>,
}

impl Status {
    /// A container just created (no shim yet), with the resources its config asked for.
    pub fn created(resources: Option<cri_api::v1::LinuxContainerResources>) -> Status {
        Status {
            state: State::Created,
            pid: 0,
            shim_pid: 0,
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            resources,
        }
    }
}

/// Everything known about a container. Metadata fields never change after create.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub sandbox_id: String,
    pub config: ContainerConfig,
    /// The image as the request named it.
    pub image_name: String,
    /// The image id (`sha256:<config digest>`).
    pub image_id: String,
    /// CRI `image_ref`: the first repo digest, else the image id.
    pub image_ref: String,
    pub log_path: Option<PathBuf>,
    /// Absolute cgroupfs path of the container's cgroup (its scope under systemd).
    pub cgroup_path: String,
    /// The cgroup is a systemd scope that libcontainer asked systemd for.
    #[serde(default)]
    pub systemd_cgroup: bool,
    /// The external OCI runtime of the pod's runtime handler, as it was when the container was
    /// created; `None` (and records written before handlers existed): the embedded libcontainer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<crius_shim_api::OciRuntime>,
    pub created_at: i64,
    /// Image config `StopSignal` (e.g. `SIGQUIT`), if any.
    pub stop_signal: Option<String>,
    /// The effective uid/gid/groups of the process (CRI `ContainerStatus.user`).
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// The checkpoint archive the container was created from (its rootfs changes applied at
    /// create); StartContainer must restore its processes instead of running the spec's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<PathBuf>,
    pub status: Status,
}

impl Record {
    pub fn name(&self) -> &str {
        self.config
            .metadata
            .as_ref()
            .map(|m| m.name.as_str())
            .unwrap_or("")
    }

    pub fn attempt(&self) -> u32 {
        self.config.metadata.as_ref().map(|m| m.attempt).unwrap_or(0)
    }
}

/// A record that does not decode. Its container is left exactly as it is (shim, mounts,
/// writable layer, cgroup): nothing acts on a record it cannot read.
#[derive(Debug, Clone)]
pub struct Unreadable {
    /// The database key (the container id).
    pub id: String,
    pub error: String,
    /// The fields that could still be read (`sandbox_id` and `config.metadata` at least), as a
    /// record in state UNKNOWN, so the container can be listed; None if even those are gone.
    pub salvaged: Option<Record>,
}

impl Unreadable {
    fn new(id: &str, bytes: &[u8], error: &serde_json::Error) -> Unreadable {
        let error = error.to_string();
        let salvaged = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| salvage(id, &v, &error));
        Unreadable {
            id: id.to_string(),
            error,
            salvaged,
        }
    }
}

/// Field by field, what a record that failed to decode as a whole still says.
fn salvage(id: &str, v: &serde_json::Value, error: &str) -> Option<Record> {
    fn field<T: serde::de::DeserializeOwned>(v: &serde_json::Value, pointer: &str) -> Option<T> {
        v.pointer(pointer)
            .and_then(|x| serde_json::from_value(x.clone()).ok())
    }
    let sandbox_id: String = field(v, "/sandbox_id")?;
    let metadata: cri_api::v1::ContainerMetadata = field(v, "/config/metadata")?;
    Some(Record {
        id: id.to_string(),
        sandbox_id,
        config: ContainerConfig {
            metadata: Some(metadata),
            image: field(v, "/config/image"),
            labels: field(v, "/config/labels").unwrap_or_default(),
            annotations: field(v, "/config/annotations").unwrap_or_default(),
            ..Default::default()
        },
        image_name: field(v, "/image_name").unwrap_or_default(),
        image_id: field(v, "/image_id").unwrap_or_default(),
        image_ref: field(v, "/image_ref").unwrap_or_default(),
        log_path: field(v, "/log_path"),
        cgroup_path: field(v, "/cgroup_path").unwrap_or_default(),
        systemd_cgroup: field(v, "/systemd_cgroup").unwrap_or_default(),
        runtime: field(v, "/runtime"),
        created_at: field(v, "/created_at").unwrap_or_default(),
        stop_signal: None,
        uid: 0,
        gid: 0,
        additional_gids: Vec::new(),
        restored_from: field(v, "/restored_from"),
        status: Status {
            state: State::Unknown,
            pid: field(v, "/status/pid").unwrap_or_default(),
            shim_pid: field(v, "/status/shim_pid").unwrap_or_default(),
            started_at: field(v, "/status/started_at").unwrap_or_default(),
            finished_at: 0,
            exit_code: 0,
            reason: "Unreadable".into(),
            message: format!("crius cannot read this container's record ({error}); it is left untouched"),
            resources: None,
        },
    })
}

pub fn name_key(sandbox_id: &str, name: &str, attempt: u32) -> String {
    format!("{sandbox_id}/{name}/{attempt}")
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("container database ({what}): {source}")]
    Db {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("container record {id} is corrupt: {source}")]
    Corrupt {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("name {name} is already used by container {id}")]
    NameTaken { name: String, id: String },
    #[error("container {0} not found")]
    NotFound(String),
}

fn db<E: std::error::Error + Send + Sync + 'static>(what: &'static str) -> impl FnOnce(E) -> RecordError {
    move |e| RecordError::Db {
        what,
        source: Box::new(e),
    }
}

/// Typed access to the two container tables. Clones share the database and the row cache.
#[derive(Clone)]
pub struct Records {
    db: std::sync::Arc<redb::Database>,
    rows: Arc<RowCache<Row>>,
}

/// One container as the table holds it.
#[derive(Clone)]
enum Row {
    Readable(Arc<Record>),
    Unreadable(Arc<Unreadable>),
}

impl Records {
    pub fn new(db: std::sync::Arc<redb::Database>) -> Result<Records, RecordError> {
        let txn = db.begin_write().map_err(db_err("begin"))?;
        txn.open_table(CONTAINERS).map_err(db_err("create containers"))?;
        txn.open_table(CONTAINER_NAMES)
            .map_err(db_err("create container names"))?;
        txn.commit().map_err(db_err("commit"))?;
        Ok(Records {
            db,
            rows: Arc::default(),
        })
    }

    fn rows(&self) -> Result<Rows<Row>, RecordError> {
        self.rows.rows(|| {
            let txn = self.db.begin_read().map_err(db("begin read"))?;
            let t = txn.open_table(CONTAINERS).map_err(db("open containers"))?;
            let mut rows = BTreeMap::new();
            for item in t.iter().map_err(db("scan containers"))? {
                let (k, v) = item.map_err(db("scan containers"))?;
                let row = match serde_json::from_slice(v.value()) {
                    Ok(r) => Row::Readable(Arc::new(r)),
                    Err(e) => Row::Unreadable(Arc::new(Unreadable::new(k.value(), v.value(), &e))),
                };
                rows.insert(k.value().to_string(), row);
            }
            Ok(rows)
        })
    }

    /// Caches `r` as the committed row of its id.
    fn cached(rows: &mut BTreeMap<String, Row>, r: &Record) -> bool {
        rows.insert(r.id.clone(), Row::Readable(Arc::new(r.clone())));
        true
    }

    /// The id holding a name, if any.
    pub fn name_owner(&self, key: &str) -> Result<Option<String>, RecordError> {
        let txn = self.db.begin_read().map_err(db("begin read"))?;
        let t = txn.open_table(CONTAINER_NAMES).map_err(db("open names"))?;
        Ok(t.get(key).map_err(db("get name"))?.map(|v| v.value().to_string()))
    }

    /// Inserts a new record and its name in one transaction; a taken name is refused.
    pub fn insert(&self, r: &Record) -> Result<(), RecordError> {
        self.rows
            .write(|| self.insert_row(r), |_, rows| Self::cached(rows, r))
    }

    fn insert_row(&self, r: &Record) -> Result<(), RecordError> {
        let key = name_key(&r.sandbox_id, r.name(), r.attempt());
        let body = serde_json::to_vec(r).map_err(|e| RecordError::Corrupt {
            id: r.id.clone(),
            source: e,
        })?;
        let txn = self.db.begin_write().map_err(db("begin"))?;
        {
            let mut names = txn.open_table(CONTAINER_NAMES).map_err(db("open names"))?;
            if let Some(owner) = names.get(key.as_str()).map_err(db("get name"))? {
                return Err(RecordError::NameTaken {
                    name: key,
                    id: owner.value().to_string(),
                });
            }
            names
                .insert(key.as_str(), r.id.as_str())
                .map_err(db("insert name"))?;
            let mut t = txn.open_table(CONTAINERS).map_err(db("open containers"))?;
            t.insert(r.id.as_str(), body.as_slice())
                .map_err(db("insert container"))?;
        }
        txn.commit().map_err(db("commit"))
    }

    pub fn get(&self, id: &str) -> Result<Option<Record>, RecordError> {
        match self.rows()?.get(id) {
            Some(Row::Readable(r)) => Ok(Some(Record::clone(r))),
            Some(Row::Unreadable(_)) => self.get_row(id),
            None => Ok(None),
        }
    }

    /// From the table itself: a Corrupt error for an unreadable record.
    fn get_row(&self, id: &str) -> Result<Option<Record>, RecordError> {
        let txn = self.db.begin_read().map_err(db("begin read"))?;
        let t = txn.open_table(CONTAINERS).map_err(db("open containers"))?;
        let Some(v) = t.get(id).map_err(db("get container"))? else {
            return Ok(None);
        };
        serde_json::from_slice(v.value())
            .map(Some)
            .map_err(|source| RecordError::Corrupt {
                id: id.into(),
                source,
            })
    }

    /// Up to `limit` ids that start with `prefix`, in key order (readable records or not).
    pub fn ids_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>, RecordError> {
        let txn = self.db.begin_read().map_err(db("begin read"))?;
        let t = txn.open_table(CONTAINERS).map_err(db("open containers"))?;
        let mut out = Vec::new();
        for item in t.range(prefix..).map_err(db("scan containers"))? {
            let (k, _) = item.map_err(db("scan containers"))?;
            if !k.value().starts_with(prefix) || out.len() == limit {
                break;
            }
            out.push(k.value().to_string());
        }
        Ok(out)
    }

    /// Every record: the readable ones, and those whose bytes do not decode (a newer crius's
    /// format, or damage). The latter are never rewritten or removed here.
    pub fn scan(&self) -> Result<(Vec<Record>, Vec<Unreadable>), RecordError> {
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        for row in self.rows()?.values() {
            match row {
                Row::Readable(r) => out.push(Record::clone(r)),
                Row::Unreadable(u) => unreadable.push(Unreadable::clone(u)),
            }
        }
        Ok((out, unreadable))
    }

    /// The records that do not decode.
    pub fn unreadable(&self) -> Result<Vec<Unreadable>, RecordError> {
        Ok(self
            .rows()?
            .values()
            .filter_map(|row| match row {
                Row::Unreadable(u) => Some(Unreadable::clone(u)),
                Row::Readable(_) => None,
            })
            .collect())
    }

    /// The readable records `keep` selects, each cloned only when selected.
    pub fn select(&self, keep: impl Fn(&Record) -> bool) -> Result<Vec<Record>, RecordError> {
        Ok(self
            .rows()?
            .values()
            .filter_map(|row| match row {
                Row::Readable(r) if keep(r) => Some(Record::clone(r)),
                _ => None,
            })
            .collect())
    }

    /// [`Records::select`] without copying: the records are shared with the row cache.
    pub fn select_shared(&self, keep: impl Fn(&Record) -> bool) -> Result<Vec<Arc<Record>>, RecordError> {
        Ok(self
            .rows()?
            .values()
            .filter_map(|row| match row {
                Row::Readable(r) if keep(r) => Some(r.clone()),
                _ => None,
            })
            .collect())
    }

    /// [`Records::select_shared`] and [`Records::unreadable`] from the row cache when it is
    /// loaded (None otherwise): no transaction and no wait on a write, so an async worker may
    /// call it.
    pub fn select_cached(
        &self,
        keep: impl Fn(&Record) -> bool,
    ) -> Option<(Vec<Arc<Record>>, Vec<Unreadable>)> {
        let rows = self.rows.cached()?;
        let mut selected = Vec::new();
        let mut unreadable = Vec::new();
        for row in rows.values() {
            match row {
                Row::Readable(r) if keep(r) => selected.push(r.clone()),
                Row::Readable(_) => {}
                Row::Unreadable(u) => unreadable.push(Unreadable::clone(u)),
            }
        }
        Some((selected, unreadable))
    }

    /// What can be read of an unreadable record, for listing it (None: readable or missing).
    pub fn salvage(&self, id: &str) -> Result<Option<Record>, RecordError> {
        Ok(match self.rows()?.get(id) {
            Some(Row::Unreadable(u)) => u.salvaged.clone(),
            _ => None,
        })
    }

    /// The one door for status changes: `f` edits a copy, which is committed if `f` succeeds.
    pub fn update<E: From<RecordError>>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Status) -> Result<(), E>,
    ) -> Result<Record, E> {
        self.rows
            .write(|| self.update_row(id, f), |r, rows| Self::cached(rows, r))
    }

    fn update_row<E: From<RecordError>>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Status) -> Result<(), E>,
    ) -> Result<Record, E> {
        let txn = self.db.begin_write().map_err(db("begin"))?;
        let rec = {
            let mut t = txn.open_table(CONTAINERS).map_err(db("open containers"))?;
            let mut rec: Record = match t.get(id).map_err(db("get container"))? {
                Some(v) => serde_json::from_slice(v.value()).map_err(|source| RecordError::Corrupt {
                    id: id.into(),
                    source,
                })?,
                None => return Err(RecordError::NotFound(id.into()).into()),
            };
            f(&mut rec.status)?;
            let body = serde_json::to_vec(&rec).map_err(|source| RecordError::Corrupt {
                id: id.into(),
                source,
            })?;
            t.insert(id, body.as_slice()).map_err(db("update container"))?;
            rec
        };
        txn.commit().map_err(db("commit"))?;
        Ok(rec)
    }

    /// Removes a record and its name (idempotent).
    pub fn remove(&self, r: &Record) -> Result<(), RecordError> {
        self.rows.write(
            || self.remove_row(r),
            |_, rows| {
                rows.remove(&r.id);
                true
            },
        )
    }

    fn remove_row(&self, r: &Record) -> Result<(), RecordError> {
        let key = name_key(&r.sandbox_id, r.name(), r.attempt());
        let txn = self.db.begin_write().map_err(db("begin"))?;
        {
            let mut names = txn.open_table(CONTAINER_NAMES).map_err(db("open names"))?;
            let owned = names
                .get(key.as_str())
                .map_err(db("get name"))?
                .map(|v| v.value() == r.id);
            if owned == Some(true) {
                names.remove(key.as_str()).map_err(db("remove name"))?;
            }
            let mut t = txn.open_table(CONTAINERS).map_err(db("open containers"))?;
            t.remove(r.id.as_str()).map_err(db("remove container"))?;
        }
        txn.commit().map_err(db("commit"))
    }
}

fn db_err<E: std::error::Error + Send + Sync + 'static>(what: &'static str) -> impl FnOnce(E) -> RecordError {
    db(what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cri_api::v1::ContainerMetadata;

    fn rec(id: &str, name: &str) -> Record {
        Record {
            id: id.into(),
            sandbox_id: "pod".into(),
            config: ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: name.into(),
                    attempt: 1,
                }),
                ..Default::default()
            },
            image_name: "busybox".into(),
            image_id: "sha256:ab".into(),
            image_ref: "sha256:ab".into(),
            log_path: None,
            cgroup_path: "/crius/pod/x".into(),
            systemd_cgroup: false,
            runtime: None,
            created_at: 1,
            stop_signal: None,
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            restored_from: None,
            status: Status::created(None),
        }
    }

    #[test]
    fn names_are_unique_per_pod_and_freed_on_remove() {
        let dir = tempfile::tempdir().unwrap();
        let db = std::sync::Arc::new(redb::Database::create(dir.path().join("t.redb")).unwrap());
        let r = Records::new(db).unwrap();
        r.insert(&rec("a", "web")).unwrap();
        assert!(matches!(r.insert(&rec("b", "web")), Err(RecordError::NameTaken { id, .. }) if id == "a"));
        assert_eq!(r.name_owner("pod/web/1").unwrap().as_deref(), Some("a"));
        let updated = r
            .update::<RecordError>("a", |s| {
                s.state = State::Running;
                Ok(())
            })
            .unwrap();
        assert_eq!(updated.status.state, State::Running);
        assert_eq!(r.get("a").unwrap().unwrap().status.state, State::Running);
        r.remove(&rec("a", "web")).unwrap();
        r.remove(&rec("a", "web")).unwrap();
        assert!(r.get("a").unwrap().is_none());
        r.insert(&rec("b", "web")).unwrap();
        assert_eq!(r.scan().unwrap().0.len(), 1);
    }

    fn put_raw(db: &redb::Database, id: &str, bytes: &[u8]) {
        let txn = db.begin_write().unwrap();
        txn.open_table(CONTAINERS).unwrap().insert(id, bytes).unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn unreadable_records_are_reported_salvaged_and_never_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let db = std::sync::Arc::new(redb::Database::create(dir.path().join("t.redb")).unwrap());
        let r = Records::new(db.clone()).unwrap();
        r.insert(&rec("a", "web")).unwrap();
        // A newer format: same document, one field changed type.
        let mut newer = serde_json::to_value(rec("b", "api")).unwrap();
        newer["status"]["state"] = serde_json::json!({"running": {"since": 1}});
        newer["status"]["pid"] = serde_json::json!(4242);
        put_raw(&db, "b", &serde_json::to_vec(&newer).unwrap());
        put_raw(&db, "c", b"\x00garbage");
        let (ok, bad) = r.scan().unwrap();
        assert_eq!(ok.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(bad.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        assert!(bad.iter().all(|u| !u.error.is_empty()));
        let b = bad[0].salvaged.as_ref().expect("b is salvaged");
        assert_eq!((b.sandbox_id.as_str(), b.name(), b.attempt()), ("pod", "api", 1));
        assert_eq!(b.status.state, State::Unknown);
        assert_eq!(b.status.pid, 4242);
        assert!(bad[1].salvaged.is_none());
        assert_eq!(r.salvage("b").unwrap().unwrap().name(), "api");
        assert!(r.salvage("a").unwrap().is_none());
        assert!(matches!(r.get("c"), Err(RecordError::Corrupt { .. })));
        let e = r.update::<RecordError>("c", |s| {
            s.state = State::Exited;
            Ok(())
        });
        assert!(matches!(e, Err(RecordError::Corrupt { .. })));
        let txn = redb::ReadableDatabase::begin_read(db.as_ref()).unwrap();
        let t = txn.open_table(CONTAINERS).unwrap();
        assert_eq!(t.get("c").unwrap().unwrap().value(), b"\x00garbage");
    }

    #[test]
    fn failed_update_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = std::sync::Arc::new(redb::Database::create(dir.path().join("t.redb")).unwrap());
        let r = Records::new(db).unwrap();
        r.insert(&rec("a", "web")).unwrap();
        let e = r.update::<RecordError>("a", |s| {
            s.state = State::Exited;
            Err(RecordError::NotFound("x".into()))
        });
        assert!(e.is_err());
        assert_eq!(r.get("a").unwrap().unwrap().status.state, State::Created);
    }
}
