//! Creates that outlive their client (CRI-O's "resource store" behaviour). RunPodSandbox and
//! CreateContainer run detached, so a create whose client gave up (deadline) still finishes; the
//! finished object is then parked under its name and handed to the client's retry with the same
//! name — instead of that retry failing with AlreadyExists while the object sits unused. A retry
//! that arrives while the first attempt is still running waits for it and gets its result.
//!
//! Invariants: one create per name runs at a time; a parked object is handed out only while it
//! still exists (the `exists` check), and at most once (the handler that receives it unparks
//! it); a failed create parks nothing, so the retry simply runs again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Slot {
    Running,
    /// Finished: `Some(id)` created (parked until claimed), `None` failed.
    Done(Option<String>),
}

#[derive(Default)]
pub struct Handover {
    slots: Mutex<HashMap<String, Arc<watch::Sender<Slot>>>>,
}

/// Whether the object a parked id names still exists (a store read: run on the blocking pool).
pub type Exists = Arc<dyn Fn(&str) -> bool + Send + Sync>;

impl Handover {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<watch::Sender<Slot>>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `work` (creating the object named `key`) in its own task, or joins/claims an
    /// earlier attempt for the same key. Returns the object's id or `work`'s error.
    pub async fn create<E, F>(self: &Arc<Self>, key: String, exists: Exists, work: F) -> Result<String, E>
    where
        E: Send + 'static,
        F: Future<Output = Result<String, E>> + Send + 'static,
    {
        let mut work = Some(work);
        loop {
            let existing = self.slots().get(&key).cloned();
            let Some(slot) = existing else { break };
            let mut rx = slot.subscribe();
            let done = match rx.wait_for(|s| *s != Slot::Running).await {
                Ok(s) => s.clone(),
                Err(_) => Slot::Done(None),
            };
            let alive = match &done {
                Slot::Done(Some(id)) => {
                    let (exists, id) = (exists.clone(), id.clone());
                    tokio::task::spawn_blocking(move || exists(&id))
                        .await
                        .unwrap_or(false)
                }
                _ => false,
            };
            let mut slots = self.slots();
            let same = slots.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot));
            match done {
                Slot::Done(Some(id)) if alive => {
                    if same {
                        slots.remove(&key);
                    }
                    tracing::info!(key = %printable(&key), id, "handing a create that finished after its client gave up to the retry");
                    return Ok(id);
                }
                _ => {
                    // Failed, or the object is gone since: forget it and create anew.
                    if same {
                        slots.remove(&key);
                    }
                }
            }
        }
        let work = work.take().expect("work is used once");
        let slot = Arc::new(watch::Sender::new(Slot::Running));
        self.slots().insert(key.clone(), slot.clone());
        let this = self.clone();
        let task_key = key.clone();
        let task_slot = slot.clone();
        // The task finishes (and parks its result) even if this handler is dropped.
        let handle = tokio::spawn(async move {
            let res = work.await;
            let id = res.as_ref().ok().cloned();
            if id.is_none() {
                let mut slots = this.slots();
                if slots.get(&task_key).is_some_and(|s| Arc::ptr_eq(s, &task_slot)) {
                    slots.remove(&task_key);
                }
            }
            task_slot.send_replace(Slot::Done(id));
            res
        });
        let res = match handle.await {
            Ok(res) => res,
            Err(e) => {
                // The task panicked: nothing to park.
                self.unpark(&key, &slot);
                std::panic::resume_unwind(e.into_panic());
            }
        };
        // Delivered to the client that asked: claimed.
        self.unpark(&key, &slot);
        res
    }

    fn unpark(&self, key: &str, slot: &Arc<watch::Sender<Slot>>) {
        let mut slots = self.slots();
        if slots.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(key);
        }
    }

    /// Names with a create running or a parked result (tests, logs).
    pub fn pending(&self) -> usize {
        self.slots().len()
    }
}

fn printable(key: &str) -> String {
    key.replace('\0', "/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn yes() -> Exists {
        Arc::new(|_| true)
    }

    #[tokio::test]
    async fn a_create_whose_client_left_is_handed_to_the_retry() {
        let h = Arc::new(Handover::default());
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let h2 = h.clone();
        let first = tokio::spawn(async move {
            h2.create::<String, _>("pod/a".into(), yes(), async move {
                let _ = go_rx.await;
                Ok("id-1".to_string())
            })
            .await
        });
        while h.pending() == 0 {
            tokio::task::yield_now().await;
        }
        // The client gives up before the create finished.
        first.abort();
        let _ = first.await;
        go_tx.send(()).unwrap();
        let got = h
            .create::<String, _>("pod/a".into(), yes(), async { Ok("id-2".to_string()) })
            .await;
        assert_eq!(got.unwrap(), "id-1");
        assert_eq!(h.pending(), 0, "claimed once");
        let again = h
            .create::<String, _>("pod/a".into(), yes(), async { Err("taken".to_string()) })
            .await;
        assert_eq!(
            again.unwrap_err(),
            "taken",
            "a claimed object is not handed out twice"
        );
    }

    #[tokio::test]
    async fn a_failed_or_vanished_create_is_not_handed_out() {
        let h = Arc::new(Handover::default());
        let r = h
            .create::<String, _>("k".into(), yes(), async { Err("boom".to_string()) })
            .await;
        assert_eq!(r.unwrap_err(), "boom");
        assert_eq!(h.pending(), 0);
        // Park a result whose object is then removed.
        let h2 = h.clone();
        let t = tokio::spawn(async move {
            h2.create::<String, _>("k".into(), yes(), async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok("gone".to_string())
            })
            .await
        });
        while h.pending() == 0 {
            tokio::task::yield_now().await;
        }
        t.abort();
        let _ = t.await;
        let r = h
            .create::<String, _>("k".into(), Arc::new(|id| id != "gone"), async {
                Ok("fresh".to_string())
            })
            .await;
        assert_eq!(r.unwrap(), "fresh");
    }

    #[tokio::test]
    async fn concurrent_creates_of_one_name_run_once() {
        let h = Arc::new(Handover::default());
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (h, runs) = (h.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                h.create::<String, _>("same".into(), yes(), async move {
                    runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok("one".to_string())
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), "one");
        }
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
