//! The daemon's own process: CPU time, resident and virtual memory, threads and open file
//! descriptors, read from `/proc/self` at scrape time.
//!
//! Invariants: every read is capped while reading (`stat` at [`STAT_BYTES`], the fd directory
//! at [`MAX_FDS_COUNTED`] entries); a value that cannot be read leaves its series out.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::node::family;

/// `/proc/self/stat` is a single line of about 300 bytes; a comm with odd characters cannot
/// make it longer than this.
const STAT_BYTES: u64 = 4096;
/// Open fds are counted up to this many (the series then says "at least").
const MAX_FDS_COUNTED: usize = 1 << 20;

/// The fields of `/proc/<pid>/stat` the collector reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stat {
    /// User plus system CPU time, in clock ticks.
    pub ticks: u64,
    pub threads: u64,
    pub vsize_bytes: u64,
    pub rss_pages: u64,
}

/// The reported fields of a `stat` line (utime 14, stime 15, num_threads 20, vsize 23, rss 24,
/// proc(5)).
pub(super) fn parse_stat(line: &str) -> Option<Stat> {
    let s = crate::proc_stat::Stat::parse(line)?;
    Some(Stat {
        ticks: s.field(14)? + s.field(15)?,
        threads: s.field(20)?,
        vsize_bytes: s.field(23)?,
        rss_pages: s.field(24)?,
    })
}

fn read_stat() -> Option<Stat> {
    parse_stat(&crate::proc_stat::read("self", STAT_BYTES)?)
}

fn open_fds() -> Option<u64> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    // The directory's own fd is counted too, as every reader of /proc/self/fd does.
    Some(dir.take(MAX_FDS_COUNTED).count() as u64)
}

fn max_fds() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `lim`, which outlives the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0).then_some(lim.rlim_cur)
}

fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads the name.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok().filter(|v| *v > 0)
}

fn gauge(v: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

#[derive(Debug)]
pub(super) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        if let (Some(stat), Some(hz), Some(page)) = (
            read_stat(),
            sysconf(libc::_SC_CLK_TCK),
            sysconf(libc::_SC_PAGESIZE),
        ) {
            family(
                &mut enc,
                "crius_process_cpu_seconds",
                "User and system CPU time the daemon has used.",
                &[([], ConstCounter::new(stat.ticks as f64 / hz as f64))],
            )?;
            family(
                &mut enc,
                "crius_process_resident_memory_bytes",
                "The daemon's resident set size.",
                &[([], gauge(stat.rss_pages.saturating_mul(page)))],
            )?;
            family(
                &mut enc,
                "crius_process_virtual_memory_bytes",
                "The daemon's virtual memory size.",
                &[([], gauge(stat.vsize_bytes))],
            )?;
            family(
                &mut enc,
                "crius_process_threads",
                "The daemon's threads.",
                &[([], gauge(stat.threads))],
            )?;
        }
        if let Some(n) = open_fds() {
            family(
                &mut enc,
                "crius_process_open_fds",
                "File descriptors the daemon has open.",
                &[([], gauge(n))],
            )?;
        }
        if let Some(n) = max_fds() {
            family(
                &mut enc,
                "crius_process_max_fds",
                "The daemon's limit on open file descriptors (RLIMIT_NOFILE, soft).",
                &[([], gauge(n))],
            )?;
        }
        Ok(())
    }
}
