//! The bounded queue of container teardowns that RemoveContainer hands off once the record's
//! removal is durable, so the RPC answers without waiting for the shim's shutdown, the cgroup
//! rmdirs in every hierarchy, the unmount and the directory removals (`teardown.rs` does them,
//! in the background, exactly as it would inline).
//!
//! Invariants:
//! - A queued teardown belongs to a container whose record is gone (durably) or going: once
//!   RemoveContainer answered, the container is NotFound, unlisted and its name free; the
//!   teardown only removes what the container owned (its own dirs, cgroup, mount, lease).
//! - At most `capacity` teardowns are held, pending and failed together; when full (or closed),
//!   [`TeardownQueue::admit`] refuses and RemoveContainer tears down inline before the record
//!   goes (back-pressure: the queue never grows without bound).
//! - A failing teardown is retried after each of [`RETRY_DELAYS`], logged each time; after the
//!   last it is kept as failed until RemovePodSandbox of its pod runs it once more inline (and
//!   fails as the inline remove would have), or start-up recovery's orphan sweep — which
//!   removes whatever no record owns — finishes it after a restart or crash.
//! - RemovePodSandbox waits for its pod's pending teardowns before the pod's cgroup, mounts and
//!   namespaces go ([`TeardownQueue::wait_pod`]).
//! - At shutdown the queue closes and pending teardowns get a bounded time; one cut short is
//!   finished by the next start's orphan sweep (every teardown step tolerates a rerun).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use super::Containers;

/// Teardowns held at once (pending and failed) before RemoveContainer tears down inline.
pub(crate) const CAPACITY: usize = 64;
/// Teardowns run at once: enough to keep up with a pod teardown burst, few enough not to
/// crowd the blocking pool the RPCs use.
const WORKERS: usize = 4;
/// Pauses before each retry of a failed teardown (a busy mount, a cgroup still draining).
#[cfg(not(test))]
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_secs(1),
    Duration::from_secs(5),
];
/// The unit tests' retries: the same count, shorter pauses.
#[cfg(test)]
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(10),
    Duration::from_millis(10),
];

/// What a queued teardown needs: its pod (for RemovePodSandbox's wait) and its cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Job {
    pub sandbox_id: String,
    pub cgroup: String,
}

#[derive(Default)]
struct Held {
    pending: HashMap<String, Job>,
    /// Gave up after every retry; RemovePodSandbox of the pod tries once more.
    failed: HashMap<String, Job>,
    closed: bool,
}

pub(crate) struct TeardownQueue {
    capacity: usize,
    held: Mutex<Held>,
    /// Bumped whenever a pending teardown leaves `pending`; waiters re-check on each bump.
    finished: watch::Sender<u64>,
    workers: Arc<Semaphore>,
}

impl TeardownQueue {
    pub(crate) fn new(capacity: usize) -> TeardownQueue {
        TeardownQueue {
            capacity,
            held: Mutex::default(),
            finished: watch::Sender::new(0),
            workers: Arc::new(Semaphore::new(WORKERS)),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves a place for container `id`'s teardown; false when the queue is full or closed,
    /// and the caller must tear down inline.
    pub(crate) fn admit(&self, id: &str, job: Job) -> bool {
        let mut h = self.held();
        if h.closed || h.pending.len() + h.failed.len() >= self.capacity || h.pending.contains_key(id) {
            return false;
        }
        h.failed.remove(id);
        h.pending.insert(id.to_string(), job);
        true
    }

    /// Ends `id`'s place: its teardown finished, will not run (`failed: None`), or gave up.
    fn finish(&self, id: &str, failed: bool) {
        let mut h = self.held();
        if let Some(job) = h.pending.remove(id)
            && failed
        {
            h.failed.insert(id.to_string(), job);
        }
        drop(h);
        self.finished.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Gives back a place whose teardown will not run (the record's removal failed).
    pub(crate) fn cancel(&self, id: &str) {
        self.finish(id, false);
    }

    /// Pending teardowns of pod `sandbox_id`.
    fn pending_in(&self, sandbox_id: &str) -> usize {
        self.held()
            .pending
            .values()
            .filter(|j| j.sandbox_id == sandbox_id)
            .count()
    }

    /// Teardowns held (pending and failed).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let h = self.held();
        h.pending.len() + h.failed.len()
    }

    /// Waits until no teardown of pod `sandbox_id` is pending.
    pub(crate) async fn wait_pod(&self, sandbox_id: &str) {
        let mut rx = self.finished.subscribe();
        // Subscribed before the check: a finish after it is seen by `changed`.
        while self.pending_in(sandbox_id) > 0 {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Takes the failed teardowns of pod `sandbox_id`, for RemovePodSandbox to run inline.
    pub(crate) fn take_failed(&self, sandbox_id: &str) -> Vec<(String, Job)> {
        let mut h = self.held();
        let ids: Vec<String> = h
            .failed
            .iter()
            .filter(|(_, j)| j.sandbox_id == sandbox_id)
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| h.failed.remove(&id).map(|j| (id, j)))
            .collect()
    }

    /// Puts back a failed teardown that failed again inline (the place it had is free again,
    /// so it may exceed the capacity by the few a pod had: it is not a new admission).
    fn keep_failed(&self, id: String, job: Job) {
        self.held().failed.insert(id, job);
    }

    /// Refuses new teardowns (later removes run inline), then waits up to `grace` for the
    /// pending ones; returns how many were cut short.
    pub(crate) async fn close_and_drain(&self, grace: Duration) -> usize {
        self.held().closed = true;
        let mut rx = self.finished.subscribe();
        let wait = async {
            while !self.held().pending.is_empty() {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(grace, wait).await;
        self.held().pending.len()
    }
}

impl Containers {
    /// Runs the admitted teardown of container `id` in the background, retrying as the module
    /// says; must follow a successful [`TeardownQueue::admit`] and the record's removal.
    pub(crate) fn spawn_teardown(self: &Arc<Self>, id: String, job: Job) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut failed = false;
            for attempt in 0..=RETRY_DELAYS.len() {
                let permit = this.teardowns.workers.clone().acquire_owned().await;
                // Test-only: hold the teardown so a test can kill the daemon before it runs.
                this.blocking(|_| crius_sandbox::crash::point("remove-container:teardown"))
                    .await;
                let res = this.teardown(&id, Some(job.cgroup.clone())).await;
                drop(permit);
                match res {
                    Ok(()) => {
                        failed = false;
                        break;
                    }
                    Err(e) => {
                        failed = true;
                        match RETRY_DELAYS.get(attempt) {
                            Some(delay) => {
                                tracing::warn!(id, error = %e, retry_in = ?delay,
                                    "background container teardown failed; retrying");
                                tokio::time::sleep(*delay).await;
                            }
                            None => tracing::error!(id, error = %e,
                                "background container teardown failed for good; RemovePodSandbox \
                                 or start-up recovery removes what is left"),
                        }
                    }
                }
            }
            this.teardowns.finish(&id, failed);
        });
    }

    /// For RemovePodSandbox: waits for the pod's pending teardowns, then runs its failed ones
    /// once more inline; the first failure is returned (the pod's removal fails as an inline
    /// RemoveContainer would have made it, and its retry tries again).
    pub(crate) async fn finish_pod_teardowns(
        self: &Arc<Self>,
        sandbox_id: &str,
    ) -> Result<(), super::ContainerError> {
        self.teardowns.wait_pod(sandbox_id).await;
        let mut first = None;
        for (id, job) in self.teardowns.take_failed(sandbox_id) {
            if let Err(e) = self.teardown(&id, Some(job.cgroup.clone())).await {
                self.teardowns.keep_failed(id, job);
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(pod: &str) -> Job {
        Job {
            sandbox_id: pod.into(),
            cgroup: format!("/crius/{pod}/c"),
        }
    }

    #[test]
    fn admits_up_to_the_capacity_then_refuses_until_a_place_frees() {
        let q = TeardownQueue::new(2);
        assert!(q.admit("a", job("p")));
        assert!(!q.admit("a", job("p")), "one place per container");
        assert!(q.admit("b", job("p")));
        assert!(!q.admit("c", job("p")), "full: the caller tears down inline");
        assert_eq!(q.len(), 2);
        q.finish("a", false);
        assert!(q.admit("c", job("p")));
        // A teardown that gave up keeps its place until its pod's removal takes it.
        q.finish("b", true);
        assert!(!q.admit("d", job("p")));
        assert_eq!(q.take_failed("other"), vec![]);
        assert_eq!(q.take_failed("p"), vec![("b".to_string(), job("p"))]);
        assert!(q.admit("d", job("p")));
        q.cancel("d");
        assert_eq!(q.len(), 1);
    }

    #[tokio::test]
    async fn a_pod_waits_only_for_its_own_pending_teardowns() {
        let q = Arc::new(TeardownQueue::new(4));
        assert!(q.admit("a", job("p")));
        assert!(q.admit("b", job("other")));
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.wait_pod("p").await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "a's teardown is pending");
        q.finish("a", false);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the wait ends once a finished")
            .unwrap();
        // "other" still pending: waiting for a pod with nothing pending returns at once.
        tokio::time::timeout(Duration::from_secs(5), q.wait_pod("p"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn closing_refuses_new_teardowns_and_drains_within_the_grace() {
        let q = Arc::new(TeardownQueue::new(4));
        assert!(q.admit("a", job("p")));
        assert!(q.admit("b", job("p")));
        let q2 = q.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            q2.finish("a", false);
        });
        assert_eq!(
            q.close_and_drain(Duration::from_millis(300)).await,
            1,
            "b was cut short"
        );
        assert!(!q.admit("c", job("p")), "closed: inline from now on");
    }
}
