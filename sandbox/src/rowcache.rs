//! An in-memory copy of a redb table's decoded rows, so the reads kubelet repeats every second
//! (ListPodSandbox, ListContainers, the status calls) neither open a transaction nor decode JSON.
//!
//! Invariants:
//! - Every write to the table goes through [`RowCache::write`], which serialises writes and
//!   applies each committed change to the copy before the next write begins: the copy changes
//!   in commit order and equals the table after every commit.
//! - A write whose commit fails, or whose change cannot be applied, drops the copy; the next
//!   read loads it again from the database (under the write lock, so no commit can slip between
//!   the load and its installation).
//! - Readers share one snapshot (`Arc`); a writer copies the map only while a reader holds the
//!   old one, and rows are `Arc`s or small, so that copy is cheap.
//! - The lock on the copy is never held across I/O (loads and commits run under the write lock
//!   only), so [`RowCache::cached`] may be called on an async worker.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

pub type Rows<T> = Arc<BTreeMap<String, T>>;

pub struct RowCache<T> {
    writes: Mutex<()>,
    rows: Mutex<Option<Rows<T>>>,
}

impl<T: Clone> Default for RowCache<T> {
    fn default() -> Self {
        RowCache {
            writes: Mutex::new(()),
            rows: Mutex::new(None),
        }
    }
}

impl<T: Clone> RowCache<T> {
    /// The current rows, loaded with `load` (a full read of the table) when there is no copy.
    pub fn rows<E>(&self, load: impl FnOnce() -> Result<BTreeMap<String, T>, E>) -> Result<Rows<T>, E> {
        if let Some(rows) = self.snapshot() {
            return Ok(rows);
        }
        let _w = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rows) = self.snapshot() {
            return Ok(rows);
        }
        let rows = Arc::new(load()?);
        *self.rows.lock().unwrap_or_else(PoisonError::into_inner) = Some(rows.clone());
        Ok(rows)
    }

    /// Runs `commit` (one write transaction, committed or abandoned inside it) with writes
    /// serialised, then lets `apply` change the copy to match; `apply` returning false (it
    /// could not tell the new row) drops the copy, as does a failed commit.
    pub fn write<R, E>(
        &self,
        commit: impl FnOnce() -> Result<R, E>,
        apply: impl FnOnce(&R, &mut BTreeMap<String, T>) -> bool,
    ) -> Result<R, E> {
        let _w = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        let out = commit();
        let mut rows = self.rows.lock().unwrap_or_else(PoisonError::into_inner);
        match (&out, rows.as_mut()) {
            (Ok(r), Some(copy)) => {
                if !apply(r, Arc::make_mut(copy)) {
                    *rows = None;
                }
            }
            (Err(_), _) => *rows = None,
            (Ok(_), None) => {}
        }
        out
    }

    /// The current rows if they are loaded, without waiting on a write or reading the table:
    /// what a reader on an async worker takes before it falls back to [`RowCache::rows`] on the
    /// blocking pool.
    pub fn cached(&self) -> Option<Rows<T>> {
        self.snapshot()
    }

    fn snapshot(&self) -> Option<Rows<T>> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(n: &mut u32, rows: &[(&str, u32)]) -> Result<BTreeMap<String, u32>, ()> {
        *n += 1;
        Ok(rows.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    }

    #[test]
    fn loads_once_and_follows_writes() {
        let c = RowCache::<u32>::default();
        let mut loads = 0;
        assert_eq!(c.rows(|| load(&mut loads, &[("a", 1)])).unwrap()["a"], 1);
        let before = c.rows(|| load(&mut loads, &[])).unwrap();
        c.write(|| Ok::<_, ()>(2), |v, m| m.insert("a".into(), *v).is_some())
            .unwrap();
        // The snapshot a reader held is unchanged; new readers see the write.
        assert_eq!(before["a"], 1);
        assert_eq!(c.rows(|| load(&mut loads, &[])).unwrap()["a"], 2);
        assert_eq!(loads, 1);
    }

    #[test]
    fn a_failed_commit_or_an_unknown_change_drops_the_copy() {
        let c = RowCache::<u32>::default();
        let mut loads = 0;
        c.rows(|| load(&mut loads, &[("a", 1)])).unwrap();
        assert!(c.write(|| Err::<u32, _>("disk"), |_, _| true).is_err());
        assert_eq!(c.rows(|| load(&mut loads, &[("a", 5)])).unwrap()["a"], 5);
        c.write(|| Ok::<_, ()>(()), |_, _| false).unwrap();
        assert_eq!(c.rows(|| load(&mut loads, &[("a", 7)])).unwrap()["a"], 7);
        assert_eq!(loads, 3);
    }

    #[test]
    fn cached_is_none_until_loaded_and_after_a_dropped_copy() {
        let c = RowCache::<u32>::default();
        assert!(c.cached().is_none());
        let mut loads = 0;
        c.rows(|| load(&mut loads, &[("a", 1)])).unwrap();
        assert_eq!(c.cached().unwrap()["a"], 1);
        c.write(|| Ok::<_, ()>(3), |v, m| m.insert("a".into(), *v).is_some())
            .unwrap();
        assert_eq!(c.cached().unwrap()["a"], 3);
        assert!(c.write(|| Err::<u32, _>("disk"), |_, _| true).is_err());
        assert!(c.cached().is_none());
    }

    #[test]
    fn a_write_before_the_first_read_is_not_lost() {
        let c = RowCache::<u32>::default();
        c.write(|| Ok::<_, ()>(()), |_, m| m.insert("x".into(), 1).is_none())
            .unwrap();
        let mut loads = 0;
        // No copy existed, so the write changed only the table; the load reads it from there.
        assert_eq!(c.rows(|| load(&mut loads, &[("x", 9)])).unwrap()["x"], 9);
    }
}
