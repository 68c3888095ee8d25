//! What the metrics read of the containers: how many are in each state, how many shims are
//! alive, and the exits counted as they are recorded ([`ExitCounts`]).
//!
//! Invariants: the census only reads (records as stored, `/proc`); each count in
//! [`ExitCounts`] is raised by the one record update that made the change it counts, so an
//! exit is counted once however many readers fold it.

use std::sync::atomic::{AtomicU64, Ordering};

use super::record::State;
use super::{ContainerError, Containers};

/// The comm a shim gives itself (`crius-shim`'s `proc_setup`).
const SHIM_COMM: &str = "crius-shim";
/// `/proc/<pid>/stat` is read up to this many bytes: the pid, the comm (at most 16 bytes, in
/// parentheses) and the state come first.
const STAT_PREFIX_BYTES: u64 = 128;

/// Containers by recorded state, and their live shims.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerCensus {
    pub created: u64,
    pub running: u64,
    pub exited: u64,
    /// UNKNOWN records, and records that do not decode.
    pub unknown: u64,
    /// Records whose recorded shim pid is a live (not zombie) `crius-shim` process.
    pub shims_alive: u64,
}

/// Exits counted since the daemon started.
#[derive(Debug, Default)]
pub struct ExitCounts {
    oom_kills: AtomicU64,
    shims_lost: AtomicU64,
}

impl ExitCounts {
    pub fn oom_kills(&self) -> u64 {
        self.oom_kills.load(Ordering::Relaxed)
    }
    pub fn shims_lost(&self) -> u64 {
        self.shims_lost.load(Ordering::Relaxed)
    }
    /// Called by the record update that recorded an OOMKilled exit.
    pub(crate) fn oom_killed(&self) {
        self.oom_kills.fetch_add(1, Ordering::Relaxed);
    }
    /// Called by the record update that recorded an exit without the shim's exit file.
    pub(crate) fn shim_lost(&self) {
        self.shims_lost.fetch_add(1, Ordering::Relaxed);
    }
}

impl Containers {
    /// Blocking. States as recorded: an exit the watcher has not folded in yet counts in its
    /// earlier state until it is.
    pub fn census(&self) -> Result<ContainerCensus, ContainerError> {
        let (records, unreadable) = self.records.scan()?;
        let mut c = ContainerCensus {
            unknown: unreadable.len() as u64,
            ..Default::default()
        };
        for r in &records {
            match r.status.state {
                State::Created => c.created += 1,
                State::Running => c.running += 1,
                State::Exited => c.exited += 1,
                State::Unknown => c.unknown += 1,
            }
            if shim_alive(r.status.shim_pid) {
                c.shims_alive += 1;
            }
        }
        Ok(c)
    }

    /// The exit counters (OOM kills, lost shims).
    pub fn exit_counts(&self) -> &ExitCounts {
        self.events.exit_counts()
    }
}

/// Whether `pid` is a live `crius-shim`: a recycled pid naming another program is not one.
fn shim_alive(pid: i32) -> bool {
    pid > 0 && crate::proc_stat::read(pid, STAT_PREFIX_BYTES).is_some_and(|stat| is_live_shim(&stat))
}

/// `<pid> (<comm>) <state> ...`: comm is the shim's and the state is not zombie or dead.
fn is_live_shim(stat: &str) -> bool {
    crate::proc_stat::Stat::parse(stat).is_some_and(|s| s.comm == SHIM_COMM && s.live())
}

#[cfg(test)]
mod tests {
    use super::is_live_shim;

    #[test]
    fn a_shim_is_alive_by_its_comm_and_state() {
        assert!(is_live_shim("42 (crius-shim) S 1 42 42 0 -1"));
        assert!(!is_live_shim("42 (crius-shim) Z 1 42 42 0 -1"));
        assert!(!is_live_shim("42 (sleep) S 1 42 42 0 -1"));
        assert!(!is_live_shim("42 (a) b) S 1"));
        assert!(!is_live_shim("42 (crius-shim"));
        assert!(!is_live_shim(""));
    }
}
