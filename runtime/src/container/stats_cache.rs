//! The stats RPCs' latest reading of each container's and pod's cgroup (and a container's
//! writable layer). One reading serves every stats call of the same housekeeping instant —
//! kubelet asks ListContainerStats and ListPodSandboxStats back to back, and each pod's stats
//! carry its containers' — and the previous reading gives `usage_nano_cores`.
//!
//! Invariants: a reading is reused only for the owner (container or pod id) and cgroup it was
//! taken for, and only while younger than [`FRESH`]; ids are random and never reused, so a
//! removed container's reading is never returned for another. An entry not read again for
//! [`FORGET`] is dropped (at most once per [`FRESH`], on the next reading), so the map holds
//! only owners polled within that window. The lock is never held while reading the host.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crius_image::usage::Usage;

use super::cgroup_sample::Sample;

/// How long a reading answers the stats RPCs before the cgroup is read again. kubelet's
/// housekeeping period is 10 s; cAdvisor caches its samples in the same way.
pub(crate) const FRESH: Duration = Duration::from_secs(1);
/// How long an unread entry is kept for `usage_nano_cores`.
const FORGET: Duration = Duration::from_secs(300);

/// A container's layer directory (`upper`, `work`) and, within it, its writable layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LayerUsage {
    pub dir: Usage,
    pub upper: Usage,
}

/// One reading: the cgroup's sample and, for a container, its layer's usage.
#[derive(Debug, Clone, Default)]
pub(crate) struct StatsReading {
    /// When it was taken (ns since the epoch): every CRI timestamp of the reading.
    pub ts: i64,
    pub sample: Sample,
    /// CPU used since the previous reading of the same owner and cgroup, in nanocores.
    pub nano_cores: Option<u64>,
    pub layer: Option<LayerUsage>,
}

struct Entry {
    at: Instant,
    cgroup: String,
    reading: StatsReading,
}

#[derive(Default)]
struct Map {
    entries: HashMap<String, Entry>,
    swept: Option<Instant>,
}

#[derive(Default)]
pub(crate) struct StatsCache {
    map: Mutex<Map>,
}

impl StatsCache {
    fn lock(&self) -> MutexGuard<'_, Map> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The reading of `owner`'s `cgroup`: the last one while it is fresh, else a new one that
    /// `read` takes (sample, layer usage).
    pub(crate) fn get(
        &self,
        owner: &str,
        cgroup: &str,
        read: impl FnOnce() -> (Sample, Option<LayerUsage>),
    ) -> StatsReading {
        if let Some(e) = self.lock().entries.get(owner)
            && e.cgroup == cgroup
            && e.at.elapsed() < FRESH
        {
            return e.reading.clone();
        }
        let (sample, layer) = read();
        let (at, ts) = (Instant::now(), super::now_ns());
        let mut map = self.lock();
        let prev = map
            .entries
            .get(owner)
            .filter(|e| e.cgroup == cgroup)
            .and_then(|e| Some((e.reading.ts, e.reading.sample.cpu_total_ns?)));
        let nano_cores = sample.cpu_total_ns.zip(prev).and_then(|(now, (t0, u0))| {
            let dt = ts.checked_sub(t0).filter(|&d| d > 0)? as u64;
            Some((u128::from(now.saturating_sub(u0)) * 1_000_000_000 / u128::from(dt)) as u64)
        });
        let reading = StatsReading {
            ts,
            sample,
            nano_cores,
            layer,
        };
        if map.swept.is_none_or(|s| s.elapsed() >= FRESH) {
            map.entries.retain(|_, e| e.at.elapsed() < FORGET);
            map.swept = Some(at);
        }
        map.entries.insert(
            owner.to_string(),
            Entry {
                at,
                cgroup: cgroup.to_string(),
                reading: reading.clone(),
            },
        );
        reading
    }

    /// The usage of `owner`'s layer directory while its reading is fresh (ImageFsInfo asked
    /// in the same housekeeping instant as the stats).
    pub(crate) fn fresh_layer(&self, owner: &str) -> Option<Usage> {
        let map = self.lock();
        let e = map.entries.get(owner)?;
        (e.at.elapsed() < FRESH).then_some(e.reading.layer?.dir)
    }

    /// Drops `owner`'s reading (its container or pod is removed).
    pub(crate) fn forget(&self, owner: &str) {
        self.lock().entries.remove(owner);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn sample(cpu: u64) -> (Sample, Option<LayerUsage>) {
        let s = Sample {
            cpu_total_ns: Some(cpu),
            ..Sample::default()
        };
        (s, None)
    }

    #[test]
    fn a_fresh_reading_is_reused_for_its_owner_and_cgroup_only() {
        let r = StatsCache::default();
        let reads = Cell::new(0);
        let read = |cpu| {
            reads.set(reads.get() + 1);
            sample(cpu)
        };
        let first = r.get("a", "/a", || read(10));
        assert_eq!(first.nano_cores, None, "no previous reading");
        let again = r.get("a", "/a", || read(20));
        assert_eq!((reads.get(), again.ts), (1, first.ts), "fresh: not read again");
        // Another owner, or the same owner under another cgroup, is read.
        r.get("b", "/a", || read(30));
        let moved = r.get("a", "/other", || read(40));
        assert_eq!(reads.get(), 3);
        assert_eq!(moved.sample.cpu_total_ns, Some(40));
        assert_eq!(moved.nano_cores, None, "no previous reading of that cgroup");
        assert_eq!(r.fresh_layer("b"), None, "no layer read");
        r.forget("a");
        r.get("a", "/other", || read(50));
        assert_eq!(reads.get(), 4, "forgotten: read again");
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn nano_cores_come_from_the_previous_reading() {
        let r = StatsCache::default();
        let first = r.get("a", "/a", || sample(1_000));
        // Age the entry past FRESH instead of sleeping.
        let aged = Instant::now().checked_sub(FRESH).unwrap();
        {
            let mut map = r.lock();
            let e = map.entries.get_mut("a").unwrap();
            e.at = aged;
            e.reading.ts = first.ts - 1_000_000_000;
        }
        let second = r.get("a", "/a", || sample(500_001_000));
        // 0.5 s of CPU over about 1 s of wall time: about half a core.
        let cores = second.nano_cores.unwrap();
        assert!((400_000_000..=500_000_000).contains(&cores), "{cores}");
    }

    #[test]
    fn unread_entries_are_dropped() {
        let r = StatsCache::default();
        r.get("old", "/old", || sample(1));
        {
            let mut map = r.lock();
            map.entries.get_mut("old").unwrap().at = Instant::now().checked_sub(FORGET).unwrap();
            map.swept = None;
        }
        r.get("new", "/new", || sample(1));
        assert_eq!(r.len(), 1);
    }
}
