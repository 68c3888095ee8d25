//! RemoveContainer: stop if needed, forget the record (durably), and hand the one container
//! teardown (`teardown.rs`) to the background queue (`teardown_queue.rs`) — or, when the queue
//! is full or closed, run it inline before the record goes, as before there was a queue.
//!
//! Invariants: removing an unknown container succeeds (a second remove of the same id too);
//! once the RPC answered, the record's removal is on disk (its commit is fsynced), so after any
//! crash the container never comes back — its leftovers are orphans that start-up recovery
//! removes; the container is NotFound and its name free at the answer. Inline, the record goes
//! only after the teardown fully succeeded, so a remove that failed half-way can be retried.

use std::sync::Arc;

use super::record::{Record, State};
use super::teardown_queue::Job;
use super::{ContainerError, Containers};

/// What the first look at a container under its lock found or did.
enum First {
    /// No such container (any more).
    Gone,
    /// Stopped, and its record removed: the queued teardown is left to start.
    Removed(Job),
    /// Still to stop, or the queue had no place: the rest is done step by step.
    Rest(Box<Record>),
}

impl Containers {
    /// CRI: RemoveContainer.
    pub async fn remove(self: &Arc<Self>, query: &str) -> Result<(), ContainerError> {
        // A full id (what the kubelet sends) is its own resolution: locked at once, and looked
        // up in the hop below; only a prefix costs a resolving hop first.
        let id = if cri_api::validate::full_id(query) {
            query.to_string()
        } else {
            match self.resolve_off(query).await? {
                Some(id) => id,
                None => return Ok(()),
            }
        };
        let _guard = self.locks.lock(&id).await;
        // The common case — an exited container, a place in the queue — in one blocking hop.
        let first = {
            let id = id.clone();
            self.blocking(move |c| c.remove_if_stopped(&id)).await?
        };
        let r = match first {
            First::Gone => return Ok(()),
            First::Removed(job) => {
                self.spawn_teardown(id, job);
                return Ok(());
            }
            First::Rest(r) => *r,
        };
        // A never-started container has nothing to stop (and its record goes anyway).
        if !super::stop::never_started(&r) {
            self.stop_locked(r.clone(), 0).await?;
        }
        let queued = {
            let r = r.clone();
            self.blocking(move |c| c.forget_queued(&r)).await?
        };
        if let Some(job) = queued {
            self.spawn_teardown(id, job);
            return Ok(());
        }
        // Back-pressure: the queue is full (or the daemon is stopping).
        self.teardown(&id, Some(r.cgroup_path.clone())).await?;
        self.blocking(move |c| c.forget(&r)).await
    }

    /// Under the container's lock: removes the record of a container with nothing left to
    /// stop when the queue admits its teardown (the caller then starts it).
    fn remove_if_stopped(&self, id: &str) -> Result<First, ContainerError> {
        let r = match self.refreshed(id) {
            Ok(r) => r,
            Err(ContainerError::NotFound(_)) => return Ok(First::Gone),
            Err(e) => return Err(e),
        };
        let live = matches!(r.status.state, State::Running | State::Created | State::Unknown);
        if live && !super::stop::never_started(&r) {
            return Ok(First::Rest(Box::new(r)));
        }
        Ok(match self.forget_queued(&r)? {
            Some(job) => First::Removed(job),
            None => First::Rest(Box::new(r)),
        })
    }

    /// When the queue admits the teardown of `r`: removes its record ([`Containers::forget`])
    /// and returns the queued job for the caller to start. `None` (queue full or closed):
    /// nothing was done. A failed removal takes the job back out of the queue.
    fn forget_queued(&self, r: &Record) -> Result<Option<Job>, ContainerError> {
        let job = job_of(r);
        if !self.teardowns.admit(&r.id, job.clone()) {
            return Ok(None);
        }
        match self.forget(r) {
            Ok(()) => Ok(Some(job)),
            Err(e) => {
                self.teardowns.cancel(&r.id);
                Err(e)
            }
        }
    }

    /// Removes the record and its name (one durable commit), the container's stats reading,
    /// and publishes CONTAINER_DELETED.
    fn forget(&self, r: &Record) -> Result<(), ContainerError> {
        self.records.remove(r)?;
        self.stats_cache.forget(&r.id);
        self.events.send(&r.id, &r.sandbox_id, super::EventKind::Deleted);
        Ok(())
    }
}

fn job_of(r: &Record) -> Job {
    Job {
        sandbox_id: r.sandbox_id.clone(),
        cgroup: r.cgroup_path.clone(),
    }
}
