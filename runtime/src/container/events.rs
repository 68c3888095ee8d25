//! Container lifecycle events as the container code sees them: which container, which pod, what
//! happened. The daemon's event bus (`crate::node::events`) turns them into CRI `ContainerEventResponse`s
//! with the pod's statuses for `GetContainerEvents`.
//!
//! Invariants: an event is sent only after the record change it reports has committed, and
//! exactly once per transition (the transitions are decided inside the record update); sending
//! never blocks (a broadcast ring: with no listener the event is simply dropped). Code that
//! changes a state and reports it holds [`Events::order`] across both, so two reporters (the
//! exit watcher and StartContainer, say) can never publish out of order.

use tokio::sync::broadcast;

/// How many raw events may wait for the daemon's event bus before the oldest are overwritten.
const CAPACITY: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

impl EventKind {
    pub fn to_cri(self) -> cri_api::v1::ContainerEventType {
        use cri_api::v1::ContainerEventType as T;
        match self {
            EventKind::Created => T::ContainerCreatedEvent,
            EventKind::Started => T::ContainerStartedEvent,
            EventKind::Stopped => T::ContainerStoppedEvent,
            EventKind::Deleted => T::ContainerDeletedEvent,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub sandbox_id: String,
    pub kind: EventKind,
    /// Nanoseconds since the epoch.
    pub at: i64,
}

/// The sending side, shared by the verbs and the exit watcher.
/// The exit counters travel with it: every code path that records an exit holds an `Events`.
#[derive(Clone)]
pub struct Events(
    broadcast::Sender<Event>,
    std::sync::Arc<std::sync::Mutex<()>>,
    std::sync::Arc<super::census::ExitCounts>,
);

impl Default for Events {
    fn default() -> Self {
        Events(
            broadcast::channel(CAPACITY).0,
            Default::default(),
            Default::default(),
        )
    }
}

impl Events {
    /// Held across "update the record, send its event" (short, synchronous sections only).
    pub(crate) fn order(&self) -> std::sync::MutexGuard<'_, ()> {
        self.1.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn send(&self, id: &str, sandbox_id: &str, kind: EventKind) {
        tracing::debug!(id, sandbox = sandbox_id, event = ?kind, "container event");
        let _ = self.0.send(Event {
            id: id.into(),
            sandbox_id: sandbox_id.into(),
            kind,
            at: super::now_ns(),
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.0.subscribe()
    }

    /// Raised by the record update that recorded the exit (see `census.rs`).
    pub(crate) fn exit_counts(&self) -> &super::census::ExitCounts {
        &self.2
    }
}

impl super::Containers {
    /// Whether a record with this full id exists.
    pub fn exists(&self, id: &str) -> bool {
        self.records.get(id).ok().flatten().is_some()
    }

    /// [`Containers::pod_statuses`] on the blocking pool.
    pub async fn pod_statuses_off(
        self: &std::sync::Arc<Self>,
        sandbox_id: &str,
    ) -> Result<Vec<cri_api::v1::ContainerStatus>, super::ContainerError> {
        let sandbox_id = sandbox_id.to_string();
        self.blocking(move |c| c.pod_statuses(&sandbox_id)).await
    }

    /// The CRI statuses of every container of a pod (exits folded in), for events.
    pub fn pod_statuses(
        &self,
        sandbox_id: &str,
    ) -> Result<Vec<cri_api::v1::ContainerStatus>, super::ContainerError> {
        Ok(self
            .selected(|r| r.sandbox_id == sandbox_id)?
            .iter()
            .map(super::status::to_cri)
            .collect())
    }
}
