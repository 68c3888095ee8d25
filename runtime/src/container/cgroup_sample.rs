//! One full sample of a cgroup for the metric RPCs (ListPodSandboxMetrics; the stats RPCs read
//! the subset in `cgroup_usage`): CPU time split by mode and throttling, the memory
//! breakdown, swap, OOM kills, processes and threads, hugetlb, and the limits set on it.
//! cgroup v1 (one hierarchy per controller) and v2 (unified) are parsed by pure functions over
//! the files' text, so both are unit-tested on any host.
//!
//! Invariants: every file is read through [`read_capped`] (at most [`FILE_CAP`] bytes); a file
//! that is missing or does not parse is `None` ("not available"), never an error and never 0;
//! directories are located only through the host's [`Hierarchies`], which refuse `..`.

use std::io::Read;
use std::path::{Path, PathBuf};

use crius_sandbox::cgroup::Hierarchies;

/// The most read from one cgroup file. `memory.stat` is ~2 KiB; `cgroup.procs` of a container
/// with many processes is the largest (7 bytes a pid: ~9000 pids).
pub(crate) const FILE_CAP: u64 = 64 * 1024;
/// The most cgroup directories visited when counting the processes of a tree.
const TREE_CAP: usize = 512;

/// A cgroup's usage and limits. Nanoseconds and bytes; `None`: not available on this host.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sample {
    pub cpu_total_ns: Option<u64>,
    pub cpu_user_ns: Option<u64>,
    pub cpu_system_ns: Option<u64>,
    pub cfs_periods: Option<u64>,
    pub cfs_throttled_periods: Option<u64>,
    pub cfs_throttled_ns: Option<u64>,
    pub memory_usage: Option<u64>,
    pub memory_max_usage: Option<u64>,
    pub working_set: Option<u64>,
    pub rss: Option<u64>,
    pub cache: Option<u64>,
    pub mapped_file: Option<u64>,
    pub kernel: Option<u64>,
    pub failcnt: Option<u64>,
    /// Page faults of this cgroup alone and of its whole subtree.
    pub pgfault: Option<u64>,
    pub pgmajfault: Option<u64>,
    pub pgfault_tree: Option<u64>,
    pub pgmajfault_tree: Option<u64>,
    pub swap_usage: Option<u64>,
    /// Swap still allowed: under the v2 swap limit, or under the v1 memory+swap limit.
    pub swap_available: Option<u64>,
    pub oom_kills: Option<u64>,
    /// Processes in the cgroup and every cgroup below it.
    pub processes: Option<u64>,
    /// Tasks (threads) counted by the pids controller.
    pub threads: Option<u64>,
    /// 0: unlimited.
    pub threads_max: Option<u64>,
    /// `(page size as "2MB", usage, max usage)`.
    pub hugetlb: Vec<(String, u64, Option<u64>)>,
    /// Limits: `None` when unset (unlimited) or unavailable.
    pub memory_limit: Option<u64>,
    pub memory_reservation: Option<u64>,
    /// Memory plus swap on v1 (`memsw`), swap alone on v2.
    pub swap_limit: Option<u64>,
    pub cpu_period: Option<u64>,
    pub cpu_quota: Option<u64>,
    pub cpu_shares: Option<u64>,
}

/// Reads at most [`FILE_CAP`] bytes of `path` as text.
pub(crate) fn read_capped(path: &Path) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(FILE_CAP)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

fn num(text: Option<String>) -> Option<u64> {
    text?.trim().parse().ok()
}

/// `key value` lines (`memory.stat`, `cpu.stat`, `memory.events`, `memory.oom_control`).
pub(crate) fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A limit file's value; `None` for "max", -1 and the v1 "unlimited" values (at or above 2^62).
fn limit(text: Option<String>) -> Option<u64> {
    let t = text?;
    let v: u64 = t.trim().parse().ok()?;
    (v < (1 << 62)).then_some(v)
}

/// Samples the cgroup at the absolute cgroupfs path `cgroup` (v1 or v2 by the host).
pub fn read(cgroup: &str) -> Sample {
    let host = Hierarchies::host();
    if host.unified_only() {
        let Some(d) = host.dir("", cgroup) else {
            return Sample::default();
        };
        let f = |name: &str| read_capped(&d.join(name));
        let mut s = parse_v2(&V2Files {
            cpu_stat: f("cpu.stat"),
            cpu_max: f("cpu.max"),
            cpu_weight: f("cpu.weight"),
            memory_stat: f("memory.stat"),
            memory_current: f("memory.current"),
            memory_peak: f("memory.peak"),
            memory_events: f("memory.events"),
            memory_max: f("memory.max"),
            memory_low: f("memory.low"),
            swap_current: f("memory.swap.current"),
            swap_max: f("memory.swap.max"),
            pids_current: f("pids.current"),
            pids_max: f("pids.max"),
        });
        s.processes = count_procs(&d);
        s.hugetlb = hugetlb(&d, "current", None);
        return s;
    }
    // The hierarchies are found by the controllers their mounts carry (`cpu,cpuacct` included).
    let dir = |c: &str| host.dir(c, cgroup);
    let f = |c: &str, name: &str| dir(c).and_then(|d| read_capped(&d.join(name)));
    let (acct, cpu) = ("cpuacct", "cpu");
    let mut s = parse_v1(&V1Files {
        cpuacct_usage: f(acct, "cpuacct.usage"),
        cpuacct_user: f(acct, "cpuacct.usage_user"),
        cpuacct_sys: f(acct, "cpuacct.usage_sys"),
        cpu_stat: f(cpu, "cpu.stat"),
        cfs_period: f(cpu, "cpu.cfs_period_us"),
        cfs_quota: f(cpu, "cpu.cfs_quota_us"),
        shares: f(cpu, "cpu.shares"),
        memory_stat: f("memory", "memory.stat"),
        usage: f("memory", "memory.usage_in_bytes"),
        max_usage: f("memory", "memory.max_usage_in_bytes"),
        failcnt: f("memory", "memory.failcnt"),
        kmem: f("memory", "memory.kmem.usage_in_bytes"),
        memsw: f("memory", "memory.memsw.usage_in_bytes"),
        oom_control: f("memory", "memory.oom_control"),
        limit: f("memory", "memory.limit_in_bytes"),
        soft_limit: f("memory", "memory.soft_limit_in_bytes"),
        memsw_limit: f("memory", "memory.memsw.limit_in_bytes"),
        pids_current: f("pids", "pids.current"),
        pids_max: f("pids", "pids.max"),
    });
    s.processes = v1_processes(host, cgroup);
    if let Some(d) = dir("hugetlb") {
        s.hugetlb = hugetlb(&d, "usage_in_bytes", Some("max_usage_in_bytes"));
    }
    s
}

/// The processes of a v1 cgroup's tree, counted in its pids hierarchy, or in its memory
/// hierarchy where the pids one has no such cgroup.
pub(crate) fn v1_processes(host: &Hierarchies, cgroup: &str) -> Option<u64> {
    host.dir("pids", cgroup)
        .filter(|d| d.exists())
        .or_else(|| host.dir("memory", cgroup))
        .and_then(|d| count_procs(&d))
}

/// The v1 files a sample is made of (their text, `None` when unreadable).
#[derive(Default)]
pub(crate) struct V1Files {
    pub cpuacct_usage: Option<String>,
    pub cpuacct_user: Option<String>,
    pub cpuacct_sys: Option<String>,
    pub cpu_stat: Option<String>,
    pub cfs_period: Option<String>,
    pub cfs_quota: Option<String>,
    pub shares: Option<String>,
    pub memory_stat: Option<String>,
    pub usage: Option<String>,
    pub max_usage: Option<String>,
    pub failcnt: Option<String>,
    pub kmem: Option<String>,
    pub memsw: Option<String>,
    pub oom_control: Option<String>,
    pub limit: Option<String>,
    pub soft_limit: Option<String>,
    pub memsw_limit: Option<String>,
    pub pids_current: Option<String>,
    pub pids_max: Option<String>,
}

pub(crate) fn parse_v1(f: &V1Files) -> Sample {
    let stat = f.memory_stat.as_deref().unwrap_or_default();
    let cpu_stat = f.cpu_stat.as_deref().unwrap_or_default();
    let usage = num(f.usage.clone());
    let inactive = field(stat, "total_inactive_file").unwrap_or(0);
    Sample {
        cpu_total_ns: num(f.cpuacct_usage.clone()),
        cpu_user_ns: num(f.cpuacct_user.clone()),
        cpu_system_ns: num(f.cpuacct_sys.clone()),
        cfs_periods: field(cpu_stat, "nr_periods"),
        cfs_throttled_periods: field(cpu_stat, "nr_throttled"),
        cfs_throttled_ns: field(cpu_stat, "throttled_time"),
        memory_usage: usage,
        memory_max_usage: num(f.max_usage.clone()),
        working_set: usage.map(|u| u.saturating_sub(inactive)),
        rss: field(stat, "total_rss"),
        cache: field(stat, "total_cache"),
        mapped_file: field(stat, "total_mapped_file"),
        kernel: num(f.kmem.clone()),
        failcnt: num(f.failcnt.clone()),
        pgfault: field(stat, "pgfault"),
        pgmajfault: field(stat, "pgmajfault"),
        pgfault_tree: field(stat, "total_pgfault"),
        pgmajfault_tree: field(stat, "total_pgmajfault"),
        // memsw counts memory plus swap; it exists only with swap accounting on.
        swap_usage: num(f.memsw.clone())
            .zip(usage)
            .map(|(sw, u)| sw.saturating_sub(u)),
        swap_available: limit(f.memsw_limit.clone())
            .zip(num(f.memsw.clone()))
            .map(|(l, sw)| l.saturating_sub(sw)),
        oom_kills: f.oom_control.as_deref().and_then(|t| field(t, "oom_kill")),
        processes: None,
        threads: num(f.pids_current.clone()),
        threads_max: f.pids_max.as_ref().map(|t| t.trim().parse().unwrap_or(0)),
        hugetlb: Vec::new(),
        memory_limit: limit(f.limit.clone()),
        memory_reservation: limit(f.soft_limit.clone()),
        swap_limit: limit(f.memsw_limit.clone()),
        cpu_period: num(f.cfs_period.clone()),
        // -1: no quota.
        cpu_quota: f.cfs_quota.as_ref().and_then(|t| t.trim().parse::<u64>().ok()),
        cpu_shares: num(f.shares.clone()),
    }
}

/// The v2 files a sample is made of.
#[derive(Default)]
pub(crate) struct V2Files {
    pub cpu_stat: Option<String>,
    pub cpu_max: Option<String>,
    pub cpu_weight: Option<String>,
    pub memory_stat: Option<String>,
    pub memory_current: Option<String>,
    pub memory_peak: Option<String>,
    pub memory_events: Option<String>,
    pub memory_max: Option<String>,
    pub memory_low: Option<String>,
    pub swap_current: Option<String>,
    pub swap_max: Option<String>,
    pub pids_current: Option<String>,
    pub pids_max: Option<String>,
}

pub(crate) fn parse_v2(f: &V2Files) -> Sample {
    let stat = f.memory_stat.as_deref().unwrap_or_default();
    let cpu_stat = f.cpu_stat.as_deref().unwrap_or_default();
    let events = f.memory_events.as_deref().unwrap_or_default();
    let usage = num(f.memory_current.clone());
    let inactive = field(stat, "inactive_file").unwrap_or(0);
    let us = |k: &str| field(cpu_stat, k).map(|v| v.saturating_mul(1000));
    // `cpu.max` is "<quota|max> <period>".
    let (quota, period) = f
        .cpu_max
        .as_deref()
        .and_then(|t| t.trim().split_once(' '))
        .map(|(q, p)| (q.parse().ok(), p.parse().ok()))
        .unwrap_or((None, None));
    // Kernels before 5.18 have no `kernel` line; its main parts are the stacks and slab.
    let kernel = field(stat, "kernel").or_else(|| {
        let parts = [
            field(stat, "kernel_stack"),
            field(stat, "slab"),
            field(stat, "sock"),
        ];
        parts
            .iter()
            .any(Option::is_some)
            .then(|| parts.iter().flatten().sum())
    });
    Sample {
        cpu_total_ns: us("usage_usec"),
        cpu_user_ns: us("user_usec"),
        cpu_system_ns: us("system_usec"),
        cfs_periods: field(cpu_stat, "nr_periods"),
        cfs_throttled_periods: field(cpu_stat, "nr_throttled"),
        cfs_throttled_ns: us("throttled_usec"),
        memory_usage: usage,
        memory_max_usage: num(f.memory_peak.clone()),
        working_set: usage.map(|u| u.saturating_sub(inactive)),
        rss: field(stat, "anon"),
        cache: field(stat, "file"),
        mapped_file: field(stat, "file_mapped"),
        kernel,
        // v2 counts the times usage hit memory.max as `max` events.
        failcnt: field(events, "max"),
        // v2's memory.stat is hierarchical: the subtree is the only scope there is.
        pgfault: field(stat, "pgfault"),
        pgmajfault: field(stat, "pgmajfault"),
        pgfault_tree: field(stat, "pgfault"),
        pgmajfault_tree: field(stat, "pgmajfault"),
        swap_usage: num(f.swap_current.clone()),
        swap_available: limit(f.swap_max.clone())
            .zip(num(f.swap_current.clone()))
            .map(|(l, sw)| l.saturating_sub(sw)),
        oom_kills: field(events, "oom_kill"),
        processes: None,
        threads: num(f.pids_current.clone()),
        threads_max: f.pids_max.as_ref().map(|t| t.trim().parse().unwrap_or(0)),
        hugetlb: Vec::new(),
        memory_limit: limit(f.memory_max.clone()),
        memory_reservation: limit(f.memory_low.clone()).filter(|&v| v > 0),
        swap_limit: limit(f.swap_max.clone()),
        cpu_period: period,
        cpu_quota: quota,
        cpu_shares: num(f.cpu_weight.clone()).map(weight_to_shares),
    }
}

/// cgroup v2 cpu.weight (1..10000) → CRI cpu shares (2..262144): the inverse of the curve
/// `cgroupfs::shares_to_weight` writes (`log10(w) = (l² + 125·l)/612 − 7/34`, `l = log2(s)`),
/// so 1 → 2, 100 → 1024, 10000 → 262144.
pub(crate) fn weight_to_shares(weight: u64) -> u64 {
    let e = (weight.clamp(1, 10_000) as f64).log10();
    let l = (-125.0 + (125.0f64 * 125.0 + 4.0 * 612.0 * (e + 7.0 / 34.0)).sqrt()) / 2.0;
    (2f64.powf(l).round() as u64).clamp(2, 262_144)
}

/// Processes in `dir` and every cgroup below it (at most [`TREE_CAP`] directories).
pub(super) fn count_procs(dir: &Path) -> Option<u64> {
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    let mut total = 0u64;
    let mut visited = 0;
    while let Some(d) = stack.pop() {
        visited += 1;
        if visited > TREE_CAP {
            break;
        }
        match read_capped(&d.join("cgroup.procs")) {
            Some(procs) => total += procs.lines().filter(|l| !l.trim().is_empty()).count() as u64,
            // The cgroup itself is gone: no data. A child removed during the walk: skipped.
            None if d == dir => return None,
            None => continue,
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    Some(total)
}

/// Hugetlb usage per page size from `hugetlb.<size>.<usage_file>` (and `<max_file>`).
fn hugetlb(dir: &Path, usage_file: &str, max_file: Option<&str>) -> Vec<(String, u64, Option<u64>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let size = name
                .strip_prefix("hugetlb.")?
                .strip_suffix(&format!(".{usage_file}"))?;
            // v2 also has `hugetlb.<size>.rsvd.current`; only the plain counters are usage.
            if size.contains('.') {
                return None;
            }
            let usage = num(read_capped(&e.path()))?;
            let max = max_file.and_then(|m| num(read_capped(&dir.join(format!("hugetlb.{size}.{m}")))));
            Some((size.to_string(), usage, max))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> Option<String> {
        Some(t.to_string())
    }

    const V1_MEMORY_STAT: &str = "cache 8192\nrss 4096\nmapped_file 0\npgfault 10\npgmajfault 1\n\
        inactive_file 4096\ntotal_cache 12288\ntotal_rss 1048576\ntotal_mapped_file 4096\n\
        total_inactive_file 8192\ntotal_pgfault 200\ntotal_pgmajfault 3\n";

    #[test]
    fn v1_files_parse_into_a_sample() {
        let s = parse_v1(&V1Files {
            cpuacct_usage: s("5000000000\n"),
            cpuacct_user: s("3000000000\n"),
            cpuacct_sys: s("2000000000\n"),
            cpu_stat: s("nr_periods 7\nnr_throttled 2\nthrottled_time 1500\nnr_bursts 0\n"),
            cfs_period: s("100000\n"),
            cfs_quota: s("-1\n"),
            shares: s("1024\n"),
            memory_stat: s(V1_MEMORY_STAT),
            usage: s("2097152\n"),
            max_usage: s("4194304\n"),
            failcnt: s("0\n"),
            kmem: s("65536\n"),
            memsw: s("2101248\n"),
            oom_control: s("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
            limit: s("9223372036854771712\n"),
            soft_limit: s("9223372036854771712\n"),
            memsw_limit: s("268435456\n"),
            pids_current: s("4\n"),
            pids_max: s("max\n"),
        });
        assert_eq!(s.cpu_total_ns, Some(5_000_000_000));
        assert_eq!(
            (s.cpu_user_ns, s.cpu_system_ns),
            (Some(3_000_000_000), Some(2_000_000_000))
        );
        assert_eq!(
            (s.cfs_periods, s.cfs_throttled_periods, s.cfs_throttled_ns),
            (Some(7), Some(2), Some(1500))
        );
        assert_eq!(s.memory_usage, Some(2_097_152));
        assert_eq!(s.working_set, Some(2_097_152 - 8192));
        assert_eq!(
            (s.rss, s.cache, s.mapped_file),
            (Some(1_048_576), Some(12288), Some(4096))
        );
        assert_eq!((s.pgfault, s.pgfault_tree), (Some(10), Some(200)));
        assert_eq!((s.pgmajfault, s.pgmajfault_tree), (Some(1), Some(3)));
        assert_eq!(s.swap_usage, Some(4096));
        assert_eq!(s.oom_kills, Some(3));
        assert_eq!((s.threads, s.threads_max), (Some(4), Some(0)));
        assert_eq!((s.memory_limit, s.memory_reservation), (None, None));
        assert_eq!(s.swap_limit, Some(268_435_456));
        assert_eq!(s.swap_available, Some(268_435_456 - 2_101_248));
        assert_eq!(
            (s.cpu_period, s.cpu_quota, s.cpu_shares),
            (Some(100000), None, Some(1024))
        );
    }

    #[test]
    fn v1_without_swap_accounting_has_no_swap() {
        let s = parse_v1(&V1Files {
            usage: s("100\n"),
            ..V1Files::default()
        });
        assert_eq!(s.swap_usage, None);
        assert_eq!(s.oom_kills, None);
        assert_eq!(s.cpu_total_ns, None);
    }

    #[test]
    fn v2_files_parse_into_a_sample() {
        let s = parse_v2(&V2Files {
            cpu_stat: s(
                "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\nnr_periods 9\n\
                nr_throttled 1\nthrottled_usec 250\n",
            ),
            cpu_max: s("50000 100000\n"),
            cpu_weight: s("100\n"),
            memory_stat: s("anon 1048576\nfile 8192\nkernel 32768\nfile_mapped 4096\n\
                inactive_file 4096\npgfault 77\npgmajfault 2\n"),
            memory_current: s("1200000\n"),
            memory_peak: s("2000000\n"),
            memory_events: s("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n"),
            memory_max: s("max\n"),
            memory_low: s("0\n"),
            swap_current: s("12288\n"),
            swap_max: s("max\n"),
            pids_current: s("3\n"),
            pids_max: s("1024\n"),
        });
        assert_eq!(s.cpu_total_ns, Some(5_000_000));
        assert_eq!(
            (s.cpu_user_ns, s.cpu_system_ns),
            (Some(3_000_000), Some(2_000_000))
        );
        assert_eq!(s.cfs_throttled_ns, Some(250_000));
        assert_eq!((s.cpu_quota, s.cpu_period), (Some(50000), Some(100000)));
        assert_eq!(s.cpu_shares, Some(weight_to_shares(100)));
        assert_eq!(s.working_set, Some(1_200_000 - 4096));
        assert_eq!(
            (s.rss, s.cache, s.kernel),
            (Some(1_048_576), Some(8192), Some(32768))
        );
        assert_eq!(s.memory_max_usage, Some(2_000_000));
        assert_eq!(s.failcnt, Some(5));
        assert_eq!(s.oom_kills, Some(1));
        // Swap on v2 is its own counter, not memory plus swap.
        assert_eq!(s.swap_usage, Some(12288));
        assert_eq!(
            (s.swap_limit, s.memory_limit, s.memory_reservation),
            (None, None, None)
        );
        assert_eq!((s.threads, s.threads_max), (Some(3), Some(1024)));
    }

    #[test]
    fn v2_kernel_is_summed_on_older_kernels() {
        let s = parse_v2(&V2Files {
            memory_stat: s("kernel_stack 100\nslab 1000\nsock 10\n"),
            cpu_max: s("max 100000\n"),
            ..V2Files::default()
        });
        assert_eq!(s.kernel, Some(1110));
        assert_eq!((s.cpu_quota, s.cpu_period), (None, Some(100000)));
    }

    #[test]
    fn weights_map_back_to_shares() {
        assert_eq!(weight_to_shares(1), 2);
        assert_eq!(weight_to_shares(100), 1024);
        assert_eq!(weight_to_shares(10000), 262144);
        // The weight is rounded up from the shares: mapping back lands at or just above them.
        for shares in [2u64, 512, 1024, 4096, 100_000] {
            let back = weight_to_shares(super::super::cgroupfs::shares_to_weight(shares));
            assert!(
                back >= shares && back <= shares + shares / 20 + 1,
                "{shares} -> {back}"
            );
        }
    }

    #[test]
    fn process_count_walks_the_tree() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.procs"), "1\n2\n").unwrap();
        std::fs::create_dir(root.path().join("child")).unwrap();
        std::fs::write(root.path().join("child/cgroup.procs"), "3\n").unwrap();
        assert_eq!(count_procs(root.path()), Some(3));
    }

    #[test]
    fn hugetlb_lists_plain_counters_only() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("hugetlb.2MB.current"), "4194304\n").unwrap();
        std::fs::write(d.path().join("hugetlb.2MB.rsvd.current"), "0\n").unwrap();
        assert_eq!(
            hugetlb(d.path(), "current", None),
            vec![("2MB".into(), 4194304, None)]
        );
    }

    #[test]
    fn reads_are_capped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big");
        std::fs::write(&p, vec![b'1'; FILE_CAP as usize * 2]).unwrap();
        assert_eq!(read_capped(&p).unwrap().len() as u64, FILE_CAP);
    }
}
