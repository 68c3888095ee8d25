//! StartContainer: spawns the container's shim, which builds the container (libcontainer, or
//! `create` of the pod handler's OCI runtime) — or, for a container created from a checkpoint
//! archive, restores its processes with CRIU (`restore`) — and reports its init pid; writes
//! resources that UpdateContainerResources changed while the container was CREATED into the
//! new cgroup; asks the shim to let the container run; records RUNNING.
//!
//! Invariants: only a CREATED container starts (FailedPrecondition otherwise). A CREATED record
//! whose `pid` is 0 has no shim yet; one with a pid has a shim that a start interrupted by a
//! daemon crash spawned (recovery filled the pid in), and only the start request remains. A
//! start that fails records the container EXITED — exit code 128, reason `StartError`, the
//! error as its message, as containerd does — before it undoes what it did (shim, processes,
//! cgroup, runtime state; the rootfs and bundle stay for RemoveContainer), so no reader ever
//! sees a CREATED container with half a runtime. An exit that happens right after start is never
//! hidden: the record is refreshed from the exit file after the update.

use std::sync::Arc;

use crius_shim_api::{Request, ShimConfig};

use super::record::{Record, State};
use super::{ContainerError, Containers, io_err, now_ns, require_state};

/// CRI: the exit code and reason of a container whose start failed (containerd's, after Docker).
pub(crate) const START_ERROR_EXIT_CODE: i32 = 128;
pub(crate) const START_ERROR_REASON: &str = "StartError";
/// `shim.json` is a few hundred bytes; a larger one is not ours.
const SHIM_CONFIG_CAP: u64 = 1 << 20;

impl Containers {
    /// CRI: StartContainer.
    pub async fn start(self: &Arc<Self>, query: &str) -> Result<(), ContainerError> {
        let id = &self.find(query).await?;
        let _guard = self.locks.lock(id).await;
        let r = self.refreshed_off(id).await?;
        require_state(&r, &[State::Created], "start")?;
        match self.start_steps(&r).await {
            Ok(spawned) => {
                let id = id.clone();
                self.blocking(move |c| c.record_started(&id, spawned)).await
            }
            Err(e) => {
                self.start_failed(&r, &e).await;
                Err(e)
            }
        }
    }

    /// Shim (unless it exists), resources, start request. Returns `(init pid, shim pid)` of a
    /// shim spawned here.
    async fn start_steps(self: &Arc<Self>, r: &Record) -> Result<Option<(i32, i32)>, ContainerError> {
        let id = r.id.as_str();
        let mut spawned = None;
        if r.status.pid == 0 {
            super::restore::check_start(r).await?;
            let key = id.to_string();
            let cfg = self.blocking(move |c| c.shim_config_of(&key)).await?;
            spawned = Some(self.shim.create(&cfg).await.map_err(ContainerError::shim(id))?);
            crius_sandbox::crash::point("start-container:after-shim");
            // The spec carried the resources of the create; later updates were only recorded.
            if let Some(res) = updated_resources(r) {
                let cgroup = r.cgroup_path.clone();
                self.blocking(move |c| c.cgroups.apply(&cgroup, &res)).await?;
            }
        }
        self.shim
            .request(&self.shim_dir(id), Request::Start)
            .await
            .map_err(ContainerError::shim(id))?;
        Ok(spawned)
    }

    /// The shim configuration CreateContainer wrote (`prepare` in `create.rs`).
    pub(super) fn shim_config_of(&self, id: &str) -> Result<ShimConfig, ContainerError> {
        use std::io::Read;
        let path = self.shim_dir(id).join(crius_shim_api::CONFIG_FILE);
        let mut body = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(SHIM_CONFIG_CAP).read_to_end(&mut body))
            .map_err(io_err("read", &path))?;
        serde_json::from_slice(&body).map_err(|e| ContainerError::Io {
            what: "decode",
            path,
            source: std::io::Error::other(e),
        })
    }

    /// Records RUNNING (and the pids of a shim spawned by this start) after the shim let the
    /// container run; folds an exit that came already.
    fn record_started(&self, id: &str, spawned: Option<(i32, i32)>) -> Result<(), ContainerError> {
        let started = now_ns();
        let mut started_now = false;
        let order = self.events.order();
        let rec = self.records.update::<ContainerError>(id, |s| {
            if let Some((pid, shim_pid)) = spawned {
                s.pid = pid;
                s.shim_pid = shim_pid;
            }
            s.started_at = started;
            if s.state == State::Created {
                s.state = State::Running;
                started_now = true;
            }
            Ok(())
        })?;
        if started_now {
            self.events.send(id, &rec.sandbox_id, super::EventKind::Started);
        }
        drop(order);
        self.fold_exit(rec)?;
        Ok(())
    }

    /// A failed start: EXITED with `StartError` first, then the runtime half of the teardown.
    /// Failures here are logged; RemoveContainer's teardown finishes what is left.
    async fn start_failed(self: &Arc<Self>, r: &Record, e: &ContainerError) {
        tracing::debug!(id = %r.id, error = %e, "StartContainer failed; undoing it");
        let (key, message) = (r.id.clone(), e.to_string());
        if let Err(re) = self.blocking(move |c| c.record_start_error(&key, message)).await {
            tracing::error!(id = %r.id, error = %re, "cannot record the failed start");
        }
        if let Err(te) = self.teardown_runtime(&r.id, r.cgroup_path.clone()).await {
            tracing::warn!(id = %r.id, error = %te, "undoing a failed start is incomplete; remove finishes it");
        }
    }

    fn record_start_error(&self, id: &str, message: String) -> Result<(), ContainerError> {
        let _order = self.events.order();
        let r = self.records.update::<ContainerError>(id, |s| {
            s.state = State::Exited;
            s.pid = 0;
            s.finished_at = now_ns();
            s.exit_code = START_ERROR_EXIT_CODE;
            s.reason = START_ERROR_REASON.into();
            s.message = message;
            Ok(())
        })?;
        self.events.send(id, &r.sandbox_id, super::EventKind::Stopped);
        Ok(())
    }
}

/// The resources recorded for `r` when UpdateContainerResources changed them after create (the
/// spec holds the create's).
fn updated_resources(r: &Record) -> Option<cri_api::v1::LinuxContainerResources> {
    let at_create = r.config.linux.as_ref().and_then(|l| l.resources.as_ref());
    match &r.status.resources {
        Some(now) if at_create != Some(now) => Some(now.clone()),
        _ => None,
    }
}
