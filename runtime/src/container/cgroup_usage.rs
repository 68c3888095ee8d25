//! The part of a cgroup the stats RPCs report (ContainerStats, PodSandboxStats and their
//! lists): CPU time, memory usage, working set, RSS, page faults, limit, swap and, for a pod,
//! its process count. Kubelet polls these for every container and pod each housekeeping
//! period, so only the files they need are opened: 6 on v1 where the full sample of
//! `cgroup_sample` (for the metric RPCs) opens 19 and walks two directories.
//!
//! Invariants: as in `cgroup_sample`: every file is read capped, a missing file is `None`,
//! directories are found only through the host's `Hierarchies`. Fields not read stay `None`.

use crius_sandbox::cgroup::Hierarchies;

use super::cgroup_sample::{
    Sample, V1Files, V2Files, count_procs, parse_v1, parse_v2, read_capped, v1_processes,
};

/// Samples what the stats RPCs report of the cgroup at the absolute cgroupfs path `cgroup`;
/// with `processes`, also the processes of its tree.
pub fn read_usage(cgroup: &str, processes: bool) -> Sample {
    let host = Hierarchies::host();
    if host.unified_only() {
        let Some(d) = host.dir("", cgroup) else {
            return Sample::default();
        };
        let f = |name: &str| read_capped(&d.join(name));
        let mut s = parse_v2(&V2Files {
            cpu_stat: f("cpu.stat"),
            memory_stat: f("memory.stat"),
            memory_current: f("memory.current"),
            memory_max: f("memory.max"),
            swap_current: f("memory.swap.current"),
            swap_max: f("memory.swap.max"),
            ..V2Files::default()
        });
        s.processes = processes.then(|| count_procs(&d)).flatten();
        return s;
    }
    let dir = |c: &str| host.dir(c, cgroup);
    let memory = dir("memory");
    let m = |name: &str| memory.as_ref().and_then(|d| read_capped(&d.join(name)));
    let mut s = parse_v1(&V1Files {
        cpuacct_usage: dir("cpuacct").and_then(|d| read_capped(&d.join("cpuacct.usage"))),
        memory_stat: m("memory.stat"),
        usage: m("memory.usage_in_bytes"),
        limit: m("memory.limit_in_bytes"),
        memsw: m("memory.memsw.usage_in_bytes"),
        memsw_limit: m("memory.memsw.limit_in_bytes"),
        ..V1Files::default()
    });
    if processes {
        s.processes = v1_processes(host, cgroup);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's cgroup: its memory hierarchy's path on v1, the unified one on v2.
    fn own_cgroup() -> String {
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        text.lines()
            .find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                (controllers.split(',').any(|c| c == "memory") || controllers.is_empty())
                    .then(|| path.to_string())
            })
            .unwrap()
    }

    #[test]
    fn usage_has_every_field_the_full_sample_has_for_the_stats() {
        let cgroup = own_cgroup();
        let (full, usage) = (
            super::super::cgroup_sample::read(&cgroup),
            read_usage(&cgroup, true),
        );
        let present = |s: &Sample| {
            [
                s.cpu_total_ns.is_some(),
                s.memory_usage.is_some(),
                s.working_set.is_some(),
                s.rss.is_some(),
                s.pgfault_tree.is_some(),
                s.pgmajfault_tree.is_some(),
                s.memory_limit.is_some(),
                s.swap_usage.is_some(),
                s.swap_available.is_some(),
                s.processes.is_some(),
            ]
        };
        assert_eq!(present(&usage), present(&full), "{cgroup}: {usage:?} vs {full:?}");
        assert_eq!(usage.memory_limit, full.memory_limit);
        // Without `processes`, no walk of the tree.
        assert_eq!(read_usage(&cgroup, false).processes, None);
        // What the metric RPCs alone need is not read.
        assert_eq!(
            (usage.cpu_shares, usage.threads, usage.oom_kills),
            (None, None, None)
        );
    }
}
