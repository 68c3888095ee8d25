//! The sandbox manager: the state every sandbox verb shares (configuration, database, CNI runner,
//! cgroup hierarchies, per-sandbox locks, the container hook) and the teardown they share.
//!
//! Invariants:
//! - Every verb runs on tokio's blocking pool, in a task the RPC cannot cancel: a client whose
//!   deadline passes never leaves a half-created or half-removed sandbox behind.
//! - Mutating verbs on one sandbox are serialised by that sandbox's lock.
//! - A sandbox being created is invisible to Status and List until it is READY (or rolled back).
//! - [`SandboxManager::teardown`] is idempotent: every step tolerates its work being done already.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::cgroup::{self, Hierarchies};
use crate::cni::{self, Cni};
use crate::error::{InvalidRequest, SandboxError};
use crate::podfiles::{self, HostFiles};
use crate::store::{self, Record};
use crate::{netns, pause};

/// How long teardown waits for the processes it SIGKILLs in an owned pod cgroup to go.
const CGROUP_KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Lets the container code plug into pod teardown (the containers issue implements it).
pub trait ContainerHook: Send + Sync {
    /// Stops every container of the sandbox. Idempotent; a sandbox without containers is Ok.
    fn stop_containers(&self, sandbox_id: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
    /// Stops and removes every container of the sandbox. Idempotent.
    fn remove_containers(&self, sandbox_id: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// Where things live; built by the daemon from its configuration.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// The daemon's `state` dir: `ns/<id>/` and `pods/<id>/` are created below it.
    pub state_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    /// Holds the CNI result cache `results/` (`/var/lib/cni` by default, as libcni).
    pub cni_cache_dir: PathBuf,
    /// The `crius-shim` binary (its `pause` mode is the pod infra process).
    pub shim_path: PathBuf,
    /// Parent of the pod cgroups crius creates when the request names none (cgroupfs driver;
    /// under systemd pods without a parent get a slice in `crius.slice`).
    pub default_cgroup_parent: PathBuf,
    /// cgroupfs or systemd, resolved by the daemon.
    pub cgroup_driver: cgroup::Driver,
    pub host_files: HostFiles,
    /// The configured runtime handlers besides the default `""` (a pod names one of these or
    /// none).
    pub runtime_handlers: Vec<String>,
}

pub struct SandboxManager {
    pub(crate) config: ManagerConfig,
    pub(crate) db: store::Store,
    pub(crate) cni: Cni,
    pub(crate) cgroups: Hierarchies,
    pub(crate) locks: cri_api::keyed::KeyedLocks,
    creating: Mutex<HashSet<String>>,
    hook: RwLock<Option<Arc<dyn ContainerHook>>>,
    /// What start-up reconciliation did; set once by `new`.
    recovered: std::sync::OnceLock<crate::Recovered>,
    /// Whether pods may have their own user namespace: the daemon's start-up probe, set once
    /// before it serves; until then (and for a manager without a probe) they may not.
    user_namespaces: std::sync::OnceLock<Result<(), String>>,
}

impl SandboxManager {
    /// Removes what crius made of the pod cgroup: all of an owned one (after killing what is
    /// left in it), else only the infra leaf. Under systemd an owned slice is stopped, which
    /// also kills what is left in it; scopes go by themselves once empty.
    fn cgroup_down(&self, rec: &Record) -> Result<(), SandboxError> {
        let pod = &rec.meta.cgroup_parent;
        match (rec.meta.cgroup_driver, rec.meta.cgroup_owned) {
            (cgroup::Driver::Cgroupfs, true) => {
                cgroup::kill_all(&self.cgroups, pod, CGROUP_KILL_WAIT);
                cgroup::remove(&self.cgroups, pod)?;
            }
            (cgroup::Driver::Cgroupfs, false) => {
                cgroup::remove(&self.cgroups, &pod.join(cgroup::INFRA_LEAF))?
            }
            (cgroup::Driver::Systemd, true) => {
                if let Some(name) = crate::slice::name_of(pod) {
                    pause::stop_unit(&self.config.shim_path, name)?;
                }
            }
            (cgroup::Driver::Systemd, false) => {}
        }
        Ok(())
    }

    /// Creates the tables, detects the cgroup hierarchies and reconciles existing records with
    /// the kernel (see `recover`). Runs before the daemon serves.
    pub fn new(config: ManagerConfig, db: Arc<redb::Database>) -> Result<Arc<SandboxManager>, SandboxError> {
        let db = store::Store::open(db)?;
        let cgroups = Hierarchies::detect()?;
        let cni = Cni {
            bin_dirs: config.cni_bin_dirs.clone(),
            cache_dir: config.cni_cache_dir.clone(),
        };
        let manager = Arc::new(SandboxManager {
            config,
            db,
            cni,
            cgroups,
            locks: Default::default(),
            creating: Mutex::default(),
            hook: RwLock::new(None),
            recovered: std::sync::OnceLock::new(),
            user_namespaces: std::sync::OnceLock::new(),
        });
        let recovered = manager.recover()?;
        let _ = manager.recovered.set(recovered);
        Ok(manager)
    }

    /// What start-up reconciliation found and did (the daemon's metrics report it).
    pub fn recovered(&self) -> crate::Recovered {
        self.recovered.get().cloned().unwrap_or_default()
    }

    /// Plugs in container stop/removal. Until then a pod has no containers to stop.
    pub fn set_container_hook(&self, hook: Arc<dyn ContainerHook>) {
        *self.hook.write().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// Records whether this host can give a pod its own user namespace (`Err` says why not);
    /// later calls are ignored. RunPodSandbox refuses user namespace mode POD until it is `Ok`.
    pub fn set_user_namespaces(&self, support: Result<(), String>) {
        let _ = self.user_namespaces.set(support);
    }

    /// Ok when pods may have their own user namespace, else the reason they may not.
    pub(crate) fn user_namespaces(&self) -> Result<(), String> {
        self.user_namespaces
            .get()
            .cloned()
            .unwrap_or_else(|| Err("the daemon has not probed for user namespace support".into()))
    }

    pub(crate) fn hook(&self) -> Option<Arc<dyn ContainerHook>> {
        self.hook.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The preamble of a verb that changes one pod and succeeds on an unknown one (Stop,
    /// Remove): resolves the client's id, holds the pod's lock and reads its record; `verb`
    /// runs, under the lock, only when the pod exists.
    pub(crate) fn on_existing(
        &self,
        id_or_prefix: &str,
        verb: impl FnOnce(&crate::store::Record) -> Result<(), SandboxError>,
    ) -> Result<(), SandboxError> {
        let Some(id) = self.resolve(id_or_prefix)? else {
            return Ok(());
        };
        let _guard = self.locks.blocking_lock(&id);
        match crate::store::get(&self.db, &id)? {
            Some(rec) => verb(&rec),
            None => Ok(()),
        }
    }

    /// Runs `op` of the container hook on pod `id`'s containers (without a hook there are none).
    pub(crate) fn containers_of(
        &self,
        id: &str,
        op: impl FnOnce(&dyn ContainerHook, &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>>,
    ) -> Result<(), SandboxError> {
        match self.hook() {
            Some(hook) => op(hook.as_ref(), id).map_err(|source| SandboxError::Containers {
                id: id.to_string(),
                source,
            }),
            None => Ok(()),
        }
    }

    /// The record of a READY or NOTREADY sandbox (not one being created), by id or unique
    /// prefix. This is
    /// what the container code reads: namespace paths, pod files, cgroup parent, infra pid.
    pub fn sandbox(&self, id_or_prefix: &str) -> Result<Option<Record>, SandboxError> {
        let Some(id) = self.resolve(id_or_prefix)? else {
            return Ok(None);
        };
        Ok(store::get(&self.db, &id)?)
    }

    /// Runs `f` on the blocking pool; the task finishes even if the caller is dropped.
    pub(crate) async fn detached<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&SandboxManager) -> Result<T, SandboxError> + Send + 'static,
    ) -> Result<T, SandboxError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| SandboxError::Task(e.to_string()))?
    }

    pub(crate) fn set_creating(&self, id: &str, on: bool) {
        let mut c = self.creating.lock().unwrap_or_else(|e| e.into_inner());
        if on {
            c.insert(id.to_string());
        } else {
            c.remove(id);
        }
    }

    pub(crate) fn is_creating(&self, id: &str) -> bool {
        self.creating
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    /// Resolves a full id or a unique prefix of one to a full id (the rule all verbs share,
    /// [`cri_api::validate::resolve_id`]); None when nothing matches or the pod is still being
    /// created.
    pub(crate) fn resolve(&self, id_or_prefix: &str) -> Result<Option<String>, SandboxError> {
        let matches = if cri_api::validate::plausible_id(id_or_prefix) {
            store::ids_with_prefix(&self.db, id_or_prefix, cri_api::validate::PREFIX_CANDIDATES)?
        } else {
            Vec::new()
        };
        let id = cri_api::validate::resolve_id("pod sandbox id", id_or_prefix, &matches)
            .map_err(InvalidRequest::from)?;
        Ok(id.filter(|id| !self.is_creating(id)))
    }

    pub(crate) fn ns_dir(&self, id: &str) -> PathBuf {
        self.config.state_dir.join("ns").join(id)
    }

    pub(crate) fn pod_dir(&self, id: &str) -> PathBuf {
        self.config.state_dir.join("pods").join(id)
    }

    /// Kills the infra process (and with it the pod PID namespace). Idempotent.
    pub(crate) fn stop_pause(&self, rec: &Record) -> Result<(), SandboxError> {
        if let Some(p) = &rec.status.pause {
            pause::kill(p)?;
        }
        Ok(())
    }

    /// CNI DEL for the pod, unless already done. Idempotent.
    pub(crate) fn network_down(&self, rec: &Record) -> Result<(), SandboxError> {
        let Some(plan) = &rec.meta.network else {
            return Ok(());
        };
        if rec.status.network_torn_down {
            return Ok(());
        }
        let net =
            cni::parse(plan.conflist.as_bytes(), Path::new("sandbox record")).map_err(cni::CniError::from)?;
        self.cni
            .del(&net, &plan.attachment, rec.status.cni_result.as_ref())?;
        Ok(())
    }

    /// Undoes everything a sandbox may own, then deletes its record and name. Every step runs
    /// even if an earlier one failed; the record stays (for a retry) unless all succeeded.
    pub(crate) fn teardown(&self, rec: &Record) -> Result<(), SandboxError> {
        let id = rec.meta.id.as_str();
        let mut first: Option<SandboxError> = None;
        let mut note = |step: &str, r: Result<(), SandboxError>| {
            if let Err(e) = r {
                tracing::warn!(sandbox = id, step, error = %e, "pod sandbox teardown step failed");
                first.get_or_insert(e);
            }
        };
        note("infra process", self.stop_pause(rec));
        note("network", self.network_down(rec));
        note("namespaces", netns::unpin(&rec.meta.ns_dir).map_err(Into::into));
        note("files", podfiles::remove(&rec.meta.files.dir).map_err(Into::into));
        note("cgroup", self.cgroup_down(rec));
        if let Some(e) = first {
            return Err(e);
        }
        store::delete(&self.db, id, &rec.meta.name_key)?;
        Ok(())
    }
}
