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
//! update commits before the caller answers its RPC.

use std::path::PathBuf;

use cri_api::v1::ContainerConfig;
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
    /// Init's pid in the host PID namespace (0 before create finished).
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
    pub created_at: i64,
    /// Image config `StopSignal` (e.g. `SIGQUIT`), if any.
    pub stop_signal: Option<String>,
    /// The effective uid/gid/groups of the process (CRI `ContainerStatus.user`).
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
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

/// Typed access to the two container tables.
#[derive(Clone)]
pub struct Records {
    db: std::sync::Arc<redb::Database>,
}

impl Records {
    pub fn new(db: std::sync::Arc<redb::Database>) -> Result<Records, RecordError> {
        let txn = db.begin_write().map_err(db_err("begin"))?;
        txn.open_table(CONTAINERS).map_err(db_err("create containers"))?;
        txn.open_table(CONTAINER_NAMES)
            .map_err(db_err("create container names"))?;
        txn.commit().map_err(db_err("commit"))?;
        Ok(Records { db })
    }

    /// The id holding a name, if any.
    pub fn name_owner(&self, key: &str) -> Result<Option<String>, RecordError> {
        let txn = self.db.begin_read().map_err(db("begin read"))?;
        let t = txn.open_table(CONTAINER_NAMES).map_err(db("open names"))?;
        Ok(t.get(key).map_err(db("get name"))?.map(|v| v.value().to_string()))
    }

    /// Inserts a new record and its name in one transaction; a taken name is refused.
    pub fn insert(&self, r: &Record) -> Result<(), RecordError> {
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

    pub fn list(&self) -> Result<Vec<Record>, RecordError> {
        let txn = self.db.begin_read().map_err(db("begin read"))?;
        let t = txn.open_table(CONTAINERS).map_err(db("open containers"))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db("scan containers"))? {
            let (k, v) = item.map_err(db("scan containers"))?;
            match serde_json::from_slice(v.value()) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(id = k.value(), "skipping corrupt container record: {e}"),
            }
        }
        Ok(out)
    }

    /// The one door for status changes: `f` edits a copy, which is committed if `f` succeeds.
    pub fn update<E: From<RecordError>>(
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
            created_at: 1,
            stop_signal: None,
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            status: Status {
                state: State::Created,
                pid: 0,
                shim_pid: 0,
                started_at: 0,
                finished_at: 0,
                exit_code: 0,
                reason: String::new(),
                message: String::new(),
                resources: None,
            },
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
        assert_eq!(r.list().unwrap().len(), 1);
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
