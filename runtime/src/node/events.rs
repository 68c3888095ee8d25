//! The container event bus behind `GetContainerEvents`: every raw container event (created,
//! started, stopped, deleted — see `container::events`) is turned once into a CRI
//! `ContainerEventResponse` carrying the pod sandbox status and the statuses of the pod's
//! containers (what kubelet's evented PLEG reads), then broadcast to every subscriber.
//!
//! Invariants: events reach subscribers in the order the container code sent them; publishing
//! never waits for a subscriber — each subscriber reads from a bounded ring ([`CAPACITY`]) and
//! one that falls behind by more than that is dropped ([`Lagged`]) instead of slowing anyone;
//! [`EventBus::close`] (shutdown) ends every stream so a graceful stop is not held up by them.

use std::sync::Arc;

use cri_api::v1::ContainerEventResponse;
use futures_util::Stream;
use tokio::sync::broadcast;

use crate::container::{Containers, Event};

/// Events a subscriber may have unread before it is dropped.
pub const CAPACITY: usize = 256;

/// A subscriber fell more than [`CAPACITY`] events behind and was dropped.
#[derive(Debug, thiserror::Error)]
#[error("event subscriber fell {0} events behind and was dropped")]
pub struct Lagged(pub u64);

pub struct EventBus {
    /// None once closed (shutdown): subscribers' streams then end after what they have.
    tx: std::sync::RwLock<Option<broadcast::Sender<Arc<ContainerEventResponse>>>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            tx: std::sync::RwLock::new(Some(broadcast::channel(CAPACITY).0)),
        }
    }
}

impl EventBus {
    /// Publishes the container code's events until the daemon exits. Call inside the runtime.
    pub fn start(
        self: &Arc<Self>,
        containers: Arc<Containers>,
        sandboxes: Arc<crius_sandbox::SandboxManager>,
    ) -> tokio::task::JoinHandle<()> {
        let mut raw = containers.events().subscribe();
        let bus = self.clone();
        tokio::spawn(async move {
            loop {
                let ev = match raw.recv().await {
                    Ok(ev) => ev,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "event bus fell behind the container code; events lost"
                        );
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                // Enriching costs a pod status and every container status of the pod; with
                // nobody subscribed there is no one to read it. A subscriber that arrives
                // meanwhile only ever receives events published after it subscribed.
                if bus.subscribers() == 0 {
                    continue;
                }
                let resp = enrich(&containers, &sandboxes, ev).await;
                bus.publish(resp);
            }
        })
    }

    /// A new subscriber's stream: every event published from now on, ending with [`Lagged`]
    /// if the subscriber reads too slowly.
    pub fn subscribe(&self) -> impl Stream<Item = Result<ContainerEventResponse, Lagged>> + Send + 'static {
        let rx = self.sender().map(|tx| tx.subscribe());
        futures_util::stream::unfold(rx, |rx| async move {
            let mut rx = rx?;
            match rx.recv().await {
                Ok(ev) => Some((Ok((*ev).clone()), Some(rx))),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "dropping a slow GetContainerEvents subscriber");
                    Some((Err(Lagged(n)), None))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
    }

    /// Subscribers currently connected.
    pub fn subscribers(&self) -> usize {
        self.sender().map_or(0, |tx| tx.receiver_count())
    }

    /// Ends every subscriber's stream (after the events it has not read yet); daemon shutdown.
    pub fn close(&self) {
        self.tx.write().unwrap_or_else(|e| e.into_inner()).take();
    }

    fn sender(&self) -> Option<broadcast::Sender<Arc<ContainerEventResponse>>> {
        self.tx.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn publish(&self, ev: ContainerEventResponse) {
        if let Some(tx) = self.sender() {
            // No subscriber is fine.
            let _ = tx.send(Arc::new(ev));
        }
    }
}

async fn enrich(
    containers: &Arc<Containers>,
    sandboxes: &Arc<crius_sandbox::SandboxManager>,
    ev: Event,
) -> ContainerEventResponse {
    let pod_sandbox_status = match sandboxes.status(ev.sandbox_id.clone(), false).await {
        Ok((status, _)) => Some(status),
        Err(e) => {
            tracing::debug!(sandbox = %ev.sandbox_id, error = %e, "event without pod status");
            None
        }
    };
    let containers_statuses = containers
        .pod_statuses_off(&ev.sandbox_id)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(sandbox = %ev.sandbox_id, error = %e, "event without container statuses");
            Vec::new()
        });
    ContainerEventResponse {
        container_id: ev.id,
        container_event_type: ev.kind.to_cri() as i32,
        created_at: ev.at,
        pod_sandbox_status,
        containers_statuses,
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    fn event(n: i64) -> Arc<ContainerEventResponse> {
        Arc::new(ContainerEventResponse {
            container_id: format!("c{n}"),
            created_at: n,
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_dropped_and_the_others_keep_everything_in_order() {
        let bus = EventBus::default();
        let slow = bus.subscribe();
        let fast = bus.subscribe();
        tokio::pin!(slow);
        tokio::pin!(fast);
        assert_eq!(bus.subscribers(), 2);
        let total = CAPACITY as i64 + 10;
        for n in 0..total {
            // Publishing never waits, whoever reads.
            bus.publish((*event(n)).clone());
            let got = fast.next().await.unwrap().unwrap();
            assert_eq!(got.created_at, n);
        }
        match slow.next().await {
            Some(Err(Lagged(missed))) => assert_eq!(missed, 10),
            other => panic!("expected the slow subscriber to be dropped, got {other:?}"),
        }
        assert!(slow.next().await.is_none(), "a dropped subscriber's stream ends");
        assert_eq!(bus.subscribers(), 1);
        bus.close();
        assert!(fast.next().await.is_none(), "closing ends the streams");
        let late = bus.subscribe();
        tokio::pin!(late);
        assert!(
            late.next().await.is_none(),
            "a subscriber after close gets nothing"
        );
    }
}
