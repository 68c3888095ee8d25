//! What stalls a process without being its own work, for telling a slow answer of the runtime
//! from a machine that was busy at that moment:
//! - steal: time the hypervisor ran something else on this machine's virtual CPUs (the `steal`
//!   column of `/proc/stat`, summed over CPUs; counted in clock ticks, 10 ms each here);
//! - queued: time a process's threads waited on a run queue of this kernel (the second field of
//!   `/proc/<pid>/task/<tid>/schedstat`, in ns; a thread that exits between two snapshots drops
//!   out of the sum);
//! - major page faults: pages the process touched that had to be read back from disk (field 12
//!   of `/proc/<pid>/stat`). Some hosts reclaim cold page cache on their own, so an idle
//!   process's binary pages may be gone when it wakes.
//!
//! Reading these files takes a fraction of a millisecond, so callers take snapshots outside the
//! interval they time.

use std::time::Duration;

use crius_tests::util;

/// The counters so far, or over an interval (the difference of two readings, [`Stalls::since`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stalls {
    pub steal: Duration,
    pub daemon_queued: Duration,
    pub bench_queued: Duration,
    pub daemon_major_faults: u64,
    pub bench_major_faults: u64,
}

impl Stalls {
    /// The counters now; `daemon` is the runtime's daemon (0: none).
    pub fn now(daemon: i32) -> Stalls {
        Stalls {
            steal: steal(),
            daemon_queued: if daemon > 0 {
                queued(daemon)
            } else {
                Duration::ZERO
            },
            bench_queued: queued(std::process::id() as i32),
            daemon_major_faults: if daemon > 0 { major_faults(daemon) } else { 0 },
            bench_major_faults: major_faults(std::process::id() as i32),
        }
    }

    /// What happened between `earlier` and this reading.
    pub fn since(&self, earlier: &Stalls) -> Stalls {
        Stalls {
            steal: self.steal.saturating_sub(earlier.steal),
            daemon_queued: self.daemon_queued.saturating_sub(earlier.daemon_queued),
            bench_queued: self.bench_queued.saturating_sub(earlier.bench_queued),
            daemon_major_faults: self
                .daemon_major_faults
                .saturating_sub(earlier.daemon_major_faults),
            bench_major_faults: self.bench_major_faults.saturating_sub(earlier.bench_major_faults),
        }
    }
}

/// Steal time of all CPUs so far (zero where `/proc/stat` cannot be read).
fn steal() -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    std::fs::read_to_string("/proc/stat").map_or(Duration::ZERO, |s| steal_of(&s, hz))
}

/// The steal column of the first ("cpu", all CPUs) line of `/proc/stat`, in clock ticks of `hz`:
/// "cpu  user nice system idle iowait irq softirq steal guest guest_nice".
fn steal_of(stat: &str, hz: u64) -> Duration {
    let ticks: u64 = stat
        .lines()
        .next()
        .filter(|l| l.starts_with("cpu "))
        .and_then(|l| l.split_whitespace().nth(8))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / hz.max(1))
}

/// Run-queue wait of all live threads of `pid` so far.
fn queued(pid: i32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .map(|s| queued_of(&s))
        .sum()
}

/// The run-queue wait of one `schedstat` line: "on-cpu-ns queued-ns timeslices".
fn queued_of(schedstat: &str) -> Duration {
    let ns = schedstat
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// Major page faults of `pid` so far (0 where it cannot be read).
fn major_faults(pid: i32) -> u64 {
    let stat = util::proc_stat(pid).unwrap_or_default();
    util::stat_field(&stat, 12)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_the_eighth_column_of_the_all_cpus_line() {
        let stat = "cpu  185005 0 33188 146361 1722 0 333 1357 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(steal_of(stat, 100), Duration::from_millis(13_570));
        assert_eq!(steal_of(stat, 250), Duration::from_millis(5_428));
        assert_eq!(steal_of("cpu0 1 2 3 4 5 6 7 8\n", 100), Duration::ZERO);
        assert_eq!(steal_of("", 100), Duration::ZERO);
    }

    #[test]
    fn queued_is_the_second_field_of_schedstat() {
        assert_eq!(queued_of("5163541 2750123 37\n"), Duration::from_nanos(2_750_123));
        assert_eq!(queued_of("garbage"), Duration::ZERO);
    }

    #[test]
    fn a_difference_never_goes_negative() {
        let early = Stalls::default();
        let late = Stalls {
            steal: Duration::from_millis(10),
            daemon_queued: Duration::from_millis(2),
            bench_queued: Duration::from_millis(3),
            daemon_major_faults: 4,
            bench_major_faults: 1,
        };
        let w = late.since(&early);
        assert_eq!(
            (w.steal, w.daemon_queued, w.bench_queued),
            (
                Duration::from_millis(10),
                Duration::from_millis(2),
                Duration::from_millis(3)
            )
        );
        assert_eq!((w.daemon_major_faults, w.bench_major_faults), (4, 1));
        let back = early.since(&late);
        assert_eq!(
            (back.steal, back.daemon_queued, back.bench_queued),
            (Duration::ZERO, Duration::ZERO, Duration::ZERO)
        );
        assert_eq!((back.daemon_major_faults, back.bench_major_faults), (0, 0));
    }
}
