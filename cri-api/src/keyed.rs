//! Locks by key (an image blob digest, a layer chain id, a pod or container id): whoever holds
//! the lock for a key is the only one changing that object. Used by the image store, the sandbox
//! manager and the container verbs alike.
//!
//! Invariants: an entry exists only while someone holds or waits for its lock, so ids that were
//! only queried, or objects long removed, leave nothing behind; two holders of one key never
//! exist at once (the map entry is removed only when the map is the mutex's last owner).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds the lock for one key; releasing it forgets the key when nobody else wants it.
pub struct KeyGuard<'a> {
    owner: &'a KeyedLocks,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    fn entry(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key.to_string()).or_default().clone()
    }

    fn guard(&self, key: &str, guard: tokio::sync::OwnedMutexGuard<()>) -> KeyGuard<'_> {
        KeyGuard {
            owner: self,
            key: key.to_string(),
            guard: Some(guard),
        }
    }

    /// Waits for the lock of `key` on an async task.
    pub async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let m = self.entry(key);
        let g = m.lock_owned().await;
        self.guard(key, g)
    }

    /// Waits for the lock of `key` with the calling thread: only from blocking-pool threads,
    /// never on an async worker (it would panic there).
    pub fn blocking_lock(&self, key: &str) -> KeyGuard<'_> {
        let m = self.entry(key);
        let g = m.blocking_lock_owned();
        self.guard(key, g)
    }

    /// Keys held or waited for right now.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.owner.map.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map holds the mutex: nobody holds or awaits it.
        if map.get(&self.key).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serialises_one_key_and_forgets_it() {
        let locks = Arc::new(KeyedLocks::default());
        let g = locks.lock("a").await;
        let other = locks.lock("b").await;
        let l2 = locks.clone();
        let waiter = tokio::spawn(async move {
            let _g = l2.lock("a").await;
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(g);
        waiter.await.unwrap();
        drop(other);
        assert_eq!(locks.len(), 0);
    }

    #[tokio::test]
    async fn blocking_and_async_holders_exclude_each_other() {
        let locks = Arc::new(KeyedLocks::default());
        let g = locks.lock("a").await;
        let l2 = locks.clone();
        let t = tokio::task::spawn_blocking(move || {
            let _g = l2.blocking_lock("a");
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!t.is_finished());
        drop(g);
        t.await.unwrap();
        assert!(locks.is_empty());
    }
}
