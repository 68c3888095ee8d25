//! The metric groups `[metrics] included_pod_metrics` selects (CRI-O's names) and the
//! descriptor of every metric ListPodSandboxMetrics can return: cAdvisor's names, help texts
//! and label keys, which kubelet turns into Prometheus descriptors unchanged.
//!
//! Invariants: [`DEFS`] is the only list of metrics; ListMetricDescriptors answers exactly the
//! entries of the selected groups, and the metric builder (`pod_metrics.rs`) refuses to emit a
//! name that is not in [`DEFS`] or label values that do not match its keys, so every metric
//! returned has a descriptor whose `label_keys` line up with its `label_values`.

use cri_api::v1::{MetricDescriptor, MetricType};

/// A group of metrics, as named in `included_pod_metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Cpu,
    Disk,
    Hugetlb,
    Memory,
    Network,
    Oom,
    Process,
    Spec,
}

impl Group {
    pub const ALL: [Group; 8] = [
        Group::Cpu,
        Group::Disk,
        Group::Hugetlb,
        Group::Memory,
        Group::Network,
        Group::Oom,
        Group::Process,
        Group::Spec,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Group::Cpu => "cpu",
            Group::Disk => "disk",
            Group::Hugetlb => "hugetlb",
            Group::Memory => "memory",
            Group::Network => "network",
            Group::Oom => "oom",
            Group::Process => "process",
            Group::Spec => "spec",
        }
    }
}

/// The groups a configured list selects: `["all"]` is every group (and must stand alone);
/// otherwise each name once, in [`Group::ALL`] order. An unknown name is an error naming it.
pub fn parse_groups(names: &[String]) -> Result<Vec<Group>, String> {
    if names.iter().any(|n| n == "all") {
        if names.len() != 1 {
            return Err("\"all\" must be the only entry when given".into());
        }
        return Ok(Group::ALL.to_vec());
    }
    let mut groups = Vec::new();
    for n in names {
        let g = Group::ALL.into_iter().find(|g| g.name() == n).ok_or_else(|| {
            let known: Vec<_> = Group::ALL.iter().map(|g| g.name()).collect();
            format!("unknown metric group {n:?} (known: all, {})", known.join(", "))
        })?;
        groups.push(g);
    }
    groups.sort();
    groups.dedup();
    Ok(groups)
}

/// Label keys every metric starts with, cAdvisor's: the CRI container name, the container
/// (or pod sandbox) id, the image as requested, the runtime's name for it, and the pod's
/// Kubernetes namespace and name.
pub const BASE_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

/// One metric: its group (`None`: reported whenever any group is), name, help, the label
/// keys after [`BASE_LABELS`], and its type.
pub struct Def {
    pub group: Option<Group>,
    pub name: &'static str,
    pub help: &'static str,
    pub extra_labels: &'static [&'static str],
    pub kind: MetricType,
}

const fn def(
    group: Option<Group>,
    name: &'static str,
    help: &'static str,
    extra_labels: &'static [&'static str],
    kind: MetricType,
) -> Def {
    Def {
        group,
        name,
        help,
        extra_labels,
        kind,
    }
}

use Group::*;
use MetricType::{Counter as C, Gauge as G};

const IF: &[&str] = &["interface"];

#[rustfmt::skip]
pub static DEFS: &[Def] = &[
    def(None, "container_last_seen", "Last time the container was seen by the runtime (unix seconds).", &[], G),
    def(Some(Cpu), "container_cpu_user_seconds_total", "Cumulative user CPU time consumed, in whole seconds.", &[], C),
    def(Some(Cpu), "container_cpu_system_seconds_total", "Cumulative system CPU time consumed, in whole seconds.", &[], C),
    def(Some(Cpu), "container_cpu_usage_seconds_total", "Cumulative CPU time consumed, in whole seconds.", &["cpu"], C),
    def(Some(Cpu), "container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", &[], C),
    def(Some(Cpu), "container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", &[], C),
    def(Some(Cpu), "container_cpu_cfs_throttled_seconds_total", "Total time the container has been throttled, in whole seconds.", &[], C),
    def(Some(Disk), "container_fs_usage_bytes", "Bytes used by the container's writable layer.", &[], G),
    def(Some(Disk), "container_fs_limit_bytes", "Size of the filesystem holding the writable layer, in bytes.", &[], G),
    def(Some(Disk), "container_fs_inodes_total", "Inodes of the filesystem holding the writable layer.", &[], G),
    def(Some(Disk), "container_fs_inodes_free", "Free inodes of the filesystem holding the writable layer.", &[], G),
    def(Some(Hugetlb), "container_hugetlb_usage_bytes", "Current hugepage usage in bytes.", &["pagesize"], G),
    def(Some(Hugetlb), "container_hugetlb_max_usage_bytes", "Maximum hugepage usage recorded in bytes.", &["pagesize"], G),
    def(Some(Memory), "container_memory_cache", "Page cache memory in bytes.", &[], G),
    def(Some(Memory), "container_memory_rss", "Anonymous memory (RSS) in bytes.", &[], G),
    def(Some(Memory), "container_memory_kernel_usage", "Kernel memory in bytes.", &[], G),
    def(Some(Memory), "container_memory_mapped_file", "Memory-mapped files in bytes.", &[], G),
    def(Some(Memory), "container_memory_swap", "Swap usage in bytes.", &[], G),
    def(Some(Memory), "container_memory_failcnt", "Number of times memory usage hit the limit.", &[], C),
    def(Some(Memory), "container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed.", &[], G),
    def(Some(Memory), "container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes.", &[], G),
    def(Some(Memory), "container_memory_working_set_bytes", "Current working set in bytes.", &[], G),
    def(Some(Memory), "container_memory_failures_total", "Cumulative count of memory allocation failures (page faults).", &["failure_type", "scope"], C),
    def(Some(Network), "container_network_receive_bytes_total", "Cumulative count of bytes received.", IF, C),
    def(Some(Network), "container_network_receive_packets_total", "Cumulative count of packets received.", IF, C),
    def(Some(Network), "container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving.", IF, C),
    def(Some(Network), "container_network_receive_errors_total", "Cumulative count of errors encountered while receiving.", IF, C),
    def(Some(Network), "container_network_transmit_bytes_total", "Cumulative count of bytes transmitted.", IF, C),
    def(Some(Network), "container_network_transmit_packets_total", "Cumulative count of packets transmitted.", IF, C),
    def(Some(Network), "container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting.", IF, C),
    def(Some(Network), "container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting.", IF, C),
    def(Some(Oom), "container_oom_events_total", "Count of out-of-memory kills in the container's cgroup.", &[], C),
    def(Some(Process), "container_processes", "Number of processes running in the container.", &[], G),
    def(Some(Process), "container_threads", "Number of threads running in the container.", &[], G),
    def(Some(Process), "container_threads_max", "Maximum number of threads allowed in the container; 0 is unlimited.", &[], G),
    def(Some(Process), "container_file_descriptors", "Number of open file descriptors of the container's processes.", &[], G),
    def(Some(Process), "container_sockets", "Number of open sockets of the container's processes.", &[], G),
    def(Some(Spec), "container_spec_cpu_period", "CPU CFS period of the container, in microseconds.", &[], G),
    def(Some(Spec), "container_spec_cpu_quota", "CPU CFS quota of the container, in microseconds.", &[], G),
    def(Some(Spec), "container_spec_cpu_shares", "CPU shares of the container.", &[], G),
    def(Some(Spec), "container_spec_memory_limit_bytes", "Memory limit of the container in bytes.", &[], G),
    def(Some(Spec), "container_spec_memory_reservation_limit_bytes", "Memory reservation (soft limit) of the container in bytes.", &[], G),
    def(Some(Spec), "container_spec_memory_swap_limit_bytes", "Swap limit of the container in bytes (memory plus swap on cgroup v1).", &[], G),
];

/// The definition named `name`.
pub fn find(name: &str) -> Option<&'static Def> {
    DEFS.iter().find(|d| d.name == name)
}

/// CRI: ListMetricDescriptors for `groups`: nothing when no group is selected, else the
/// always-reported metrics and those of each group.
pub fn descriptors(groups: &[Group]) -> Vec<MetricDescriptor> {
    if groups.is_empty() {
        return Vec::new();
    }
    DEFS.iter()
        .filter(|d| d.group.is_none_or(|g| groups.contains(&g)))
        .map(|d| MetricDescriptor {
            name: d.name.to_string(),
            help: d.help.to_string(),
            label_keys: BASE_LABELS
                .iter()
                .chain(d.extra_labels)
                .map(|s| s.to_string())
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn groups_parse_like_crio() {
        assert_eq!(parse_groups(&[]).unwrap(), Vec::<Group>::new());
        assert_eq!(parse_groups(&names(&["all"])).unwrap(), Group::ALL.to_vec());
        assert_eq!(
            parse_groups(&names(&["network", "cpu", "cpu"])).unwrap(),
            vec![Group::Cpu, Group::Network]
        );
        let e = parse_groups(&names(&["cpu", "gpu"])).unwrap_err();
        assert!(e.contains("\"gpu\"") && e.contains("network"), "{e}");
        assert!(
            parse_groups(&names(&["all", "cpu"]))
                .unwrap_err()
                .contains("only entry")
        );
    }

    #[test]
    fn every_group_has_metrics_and_names_are_unique() {
        for g in Group::ALL {
            assert!(DEFS.iter().any(|d| d.group == Some(g)), "{g:?} has no metric");
        }
        let mut seen = std::collections::HashSet::new();
        for d in DEFS {
            assert!(seen.insert(d.name), "{} twice", d.name);
            assert!(d.name.starts_with("container_"));
        }
    }

    #[test]
    fn descriptors_follow_the_selection() {
        assert!(descriptors(&[]).is_empty());
        let oom = descriptors(&[Group::Oom]);
        let got: Vec<_> = oom.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(got, vec!["container_last_seen", "container_oom_events_total"]);
        let net = descriptors(&[Group::Network]);
        let rx = net
            .iter()
            .find(|d| d.name == "container_network_receive_bytes_total")
            .unwrap();
        assert_eq!(rx.label_keys.last().map(String::as_str), Some("interface"));
        assert_eq!(rx.label_keys.len(), BASE_LABELS.len() + 1);
        assert_eq!(descriptors(&Group::ALL).len(), DEFS.len());
    }
}
