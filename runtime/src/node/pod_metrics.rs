//! ListMetricDescriptors and ListPodSandboxMetrics, as CRI-O answers them: per pod, the
//! network group at pod level (from the pod's network namespace) and every other selected
//! group per running container (from its cgroup, writable layer and processes). The groups
//! come from `[metrics] included_pod_metrics`; none selected: both RPCs answer empty lists.
//!
//! Invariants: every metric is built through [`Builder::push`], which emits only names listed
//! in `metric_descriptors::DEFS` of a selected group, with exactly as many label values as the
//! descriptor has keys (the base labels, then the metric's own); a value the host cannot
//! provide is left out, never reported as 0. Values are whole units as the CRI's `UInt64Value`
//! allows: seconds are truncated. Each metric carries the time its source was read.
//! A host-network pod has no namespace of its own, and so no network metrics (CRI-O and
//! containerd report none either: the host's interfaces are not the pod's).

use std::collections::{HashMap, HashSet};

use cri_api::v1::{ContainerMetrics, Metric, MetricDescriptor, PodSandboxMetrics, UInt64Value};

use super::metric_descriptors::{self as md, Group};
use super::netdev::Iface;
use super::{Crius, NodeError};
use crate::container::{ContainerReading, ReadingParts};

const NS_PER_S: u64 = 1_000_000_000;

/// The pod-side values of the base labels.
pub struct PodLabels {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
}

/// Collects the metrics of one pod or container; see the module's invariants.
pub struct Builder<'a> {
    groups: &'a [Group],
    base: Vec<String>,
    timestamp: i64,
    out: Vec<Metric>,
}

impl<'a> Builder<'a> {
    pub fn new(groups: &'a [Group], base: Vec<String>, timestamp: i64) -> Builder<'a> {
        debug_assert_eq!(base.len(), md::BASE_LABELS.len());
        Builder {
            groups,
            base,
            timestamp,
            out: Vec::new(),
        }
    }

    /// Adds `name` with the metric's own label values `extra`, if `value` is known.
    pub fn push(&mut self, name: &str, extra: &[&str], value: Option<u64>) {
        let Some(value) = value else {
            return;
        };
        let Some(def) = md::find(name) else {
            debug_assert!(false, "metric {name} has no descriptor");
            return;
        };
        if def.group.is_some_and(|g| !self.groups.contains(&g)) {
            return;
        }
        if extra.len() != def.extra_labels.len() {
            debug_assert!(
                false,
                "metric {name}: labels {extra:?} do not match its descriptor"
            );
            return;
        }
        let mut label_values = self.base.clone();
        label_values.extend(extra.iter().map(|s| s.to_string()));
        self.out.push(Metric {
            name: name.to_string(),
            timestamp: self.timestamp,
            metric_type: def.kind as i32,
            label_values,
            value: Some(UInt64Value { value }),
        });
    }

    pub fn finish(self) -> Vec<Metric> {
        self.out
    }
}

/// Base label values of a pod's own metrics: container "POD", as the runtimes name the
/// sandbox.
fn pod_base(p: &PodLabels) -> Vec<String> {
    let name = format!("k8s_POD_{}_{}_{}_{}", p.name, p.namespace, p.uid, p.attempt);
    vec![
        "POD".into(),
        p.id.clone(),
        String::new(),
        name,
        p.namespace.clone(),
        p.name.clone(),
    ]
}

fn container_base(p: &PodLabels, r: &ContainerReading) -> Vec<String> {
    // The kubelet's docker-era container name, which cAdvisor's `name` label carried.
    let name = format!(
        "k8s_{}_{}_{}_{}_{}",
        r.name, p.name, p.namespace, p.uid, r.attempt
    );
    vec![
        r.name.clone(),
        r.id.clone(),
        r.image.clone(),
        name,
        p.namespace.clone(),
        p.name.clone(),
    ]
}

/// The pod-level metrics: its interfaces' counters.
pub fn pod_level(groups: &[Group], pod: &PodLabels, ifaces: Option<&[Iface]>, ts: i64) -> Vec<Metric> {
    let mut b = Builder::new(groups, pod_base(pod), ts);
    for i in ifaces.unwrap_or_default() {
        let l = [i.name.as_str()];
        b.push("container_network_receive_bytes_total", &l, Some(i.rx_bytes));
        b.push("container_network_receive_packets_total", &l, Some(i.rx_packets));
        b.push(
            "container_network_receive_packets_dropped_total",
            &l,
            Some(i.rx_dropped),
        );
        b.push("container_network_receive_errors_total", &l, Some(i.rx_errors));
        b.push("container_network_transmit_bytes_total", &l, Some(i.tx_bytes));
        b.push("container_network_transmit_packets_total", &l, Some(i.tx_packets));
        b.push(
            "container_network_transmit_packets_dropped_total",
            &l,
            Some(i.tx_dropped),
        );
        b.push("container_network_transmit_errors_total", &l, Some(i.tx_errors));
    }
    b.finish()
}

/// One running container's metrics of the selected groups.
pub fn container_level(groups: &[Group], pod: &PodLabels, r: &ContainerReading) -> Vec<Metric> {
    let s = &r.sample;
    let secs = |ns: Option<u64>| ns.map(|v| v / NS_PER_S);
    let mut b = Builder::new(groups, container_base(pod, r), r.timestamp);
    b.push("container_last_seen", &[], Some(r.timestamp as u64 / NS_PER_S));
    b.push("container_cpu_user_seconds_total", &[], secs(s.cpu_user_ns));
    b.push("container_cpu_system_seconds_total", &[], secs(s.cpu_system_ns));
    b.push(
        "container_cpu_usage_seconds_total",
        &["total"],
        secs(s.cpu_total_ns),
    );
    b.push("container_cpu_cfs_periods_total", &[], s.cfs_periods);
    b.push(
        "container_cpu_cfs_throttled_periods_total",
        &[],
        s.cfs_throttled_periods,
    );
    b.push(
        "container_cpu_cfs_throttled_seconds_total",
        &[],
        secs(s.cfs_throttled_ns),
    );
    if let Some(fs) = &r.fs {
        b.push("container_fs_usage_bytes", &[], Some(fs.used_bytes));
        b.push("container_fs_limit_bytes", &[], Some(fs.limit_bytes));
        b.push("container_fs_inodes_total", &[], Some(fs.inodes_total));
        b.push("container_fs_inodes_free", &[], Some(fs.inodes_free));
    }
    for (size, usage, max) in &s.hugetlb {
        b.push("container_hugetlb_usage_bytes", &[size], Some(*usage));
        b.push("container_hugetlb_max_usage_bytes", &[size], *max);
    }
    b.push("container_memory_cache", &[], s.cache);
    b.push("container_memory_rss", &[], s.rss);
    b.push("container_memory_kernel_usage", &[], s.kernel);
    b.push("container_memory_mapped_file", &[], s.mapped_file);
    b.push("container_memory_swap", &[], s.swap_usage);
    b.push("container_memory_failcnt", &[], s.failcnt);
    b.push("container_memory_usage_bytes", &[], s.memory_usage);
    b.push("container_memory_max_usage_bytes", &[], s.memory_max_usage);
    b.push("container_memory_working_set_bytes", &[], s.working_set);
    let failures = "container_memory_failures_total";
    b.push(failures, &["pgfault", "container"], s.pgfault);
    b.push(failures, &["pgmajfault", "container"], s.pgmajfault);
    b.push(failures, &["pgfault", "hierarchy"], s.pgfault_tree);
    b.push(failures, &["pgmajfault", "hierarchy"], s.pgmajfault_tree);
    b.push("container_oom_events_total", &[], s.oom_kills);
    b.push("container_processes", &[], s.processes);
    b.push("container_threads", &[], s.threads);
    b.push("container_threads_max", &[], s.threads_max);
    b.push("container_file_descriptors", &[], r.files.map(|f| f.0));
    b.push("container_sockets", &[], r.files.map(|f| f.1));
    b.push("container_spec_cpu_period", &[], s.cpu_period);
    b.push("container_spec_cpu_quota", &[], s.cpu_quota);
    b.push("container_spec_cpu_shares", &[], s.cpu_shares);
    b.push("container_spec_memory_limit_bytes", &[], s.memory_limit);
    b.push(
        "container_spec_memory_reservation_limit_bytes",
        &[],
        s.memory_reservation,
    );
    b.push("container_spec_memory_swap_limit_bytes", &[], s.swap_limit);
    b.finish()
}

impl Crius {
    /// The groups the configuration selects (validated at load, so never an error here).
    fn metric_groups(&self) -> Vec<Group> {
        md::parse_groups(&self.config.metrics.included_pod_metrics).unwrap_or_default()
    }

    /// CRI: ListMetricDescriptors.
    pub fn metric_descriptors(&self) -> Vec<MetricDescriptor> {
        md::descriptors(&self.metric_groups())
    }

    /// CRI: ListPodSandboxMetrics: every pod (oldest first) with its pod-level metrics and one
    /// entry per running container. One scan of each store, one thread for all namespaces.
    pub async fn list_pod_metrics(&self) -> Result<Vec<PodSandboxMetrics>, NodeError> {
        let groups = self.metric_groups();
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let pods = self.sandboxes.records().await?;
        let parts = ReadingParts {
            disk: groups.contains(&Group::Disk),
            files: groups.contains(&Group::Process),
        };
        let ids: HashSet<String> = pods.iter().map(|p| p.meta.id.clone()).collect();
        let mut by_pod: HashMap<String, Vec<ContainerReading>> = HashMap::new();
        for r in self.containers.readings(ids, parts).await? {
            by_pod.entry(r.sandbox_id.clone()).or_default().push(r);
        }
        // Only pods with a namespace of their own are read (host-network pods: none).
        let ifaces: HashMap<String, Vec<Iface>> = if groups.contains(&Group::Network) {
            super::pod_ifaces(pods.iter()).await?
        } else {
            HashMap::new()
        };
        let ts = crate::container::now_ns();
        Ok(pods
            .iter()
            .map(|p| {
                let m = p.meta.config.metadata.clone().unwrap_or_default();
                let labels = PodLabels {
                    id: p.meta.id.clone(),
                    name: m.name,
                    namespace: m.namespace,
                    uid: m.uid,
                    attempt: m.attempt,
                };
                let containers = by_pod.remove(&p.meta.id).unwrap_or_default();
                PodSandboxMetrics {
                    pod_sandbox_id: p.meta.id.clone(),
                    metrics: pod_level(&groups, &labels, ifaces.get(&p.meta.id).map(Vec::as_slice), ts),
                    container_metrics: containers
                        .iter()
                        .map(|r| ContainerMetrics {
                            container_id: r.id.clone(),
                            metrics: container_level(&groups, &labels, r),
                        })
                        .collect(),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{FsReading, Sample};

    fn pod() -> PodLabels {
        PodLabels {
            id: "p1".into(),
            name: "web".into(),
            namespace: "default".into(),
            uid: "u1".into(),
            attempt: 0,
        }
    }

    /// A reading with every field known.
    fn full() -> ContainerReading {
        let n = Some(7);
        ContainerReading {
            id: "c1".into(),
            sandbox_id: "p1".into(),
            name: "app".into(),
            attempt: 2,
            image: "busybox:latest".into(),
            timestamp: 5 * NS_PER_S as i64,
            sample: Sample {
                cpu_total_ns: Some(3 * NS_PER_S + 1),
                cpu_user_ns: n,
                cpu_system_ns: n,
                cfs_periods: n,
                cfs_throttled_periods: n,
                cfs_throttled_ns: n,
                memory_usage: n,
                memory_max_usage: n,
                working_set: n,
                rss: n,
                cache: n,
                mapped_file: n,
                kernel: n,
                failcnt: n,
                pgfault: n,
                pgmajfault: n,
                pgfault_tree: n,
                pgmajfault_tree: n,
                swap_usage: n,
                swap_available: n,
                oom_kills: n,
                processes: n,
                threads: n,
                threads_max: n,
                hugetlb: vec![("2MB".into(), 7, Some(7))],
                memory_limit: n,
                memory_reservation: n,
                swap_limit: n,
                cpu_period: n,
                cpu_quota: n,
                cpu_shares: n,
            },
            fs: Some(FsReading::default()),
            files: Some((3, 1)),
        }
    }

    fn iface() -> Iface {
        Iface {
            name: "eth0".into(),
            rx_bytes: 100,
            tx_bytes: 50,
            ..Iface::default()
        }
    }

    #[test]
    fn every_metric_has_a_descriptor_with_matching_labels() {
        let groups = Group::ALL.to_vec();
        let descs = md::descriptors(&groups);
        let mut metrics = container_level(&groups, &pod(), &full());
        metrics.extend(pod_level(&groups, &pod(), Some(&[iface()]), 1));
        let mut names = HashSet::new();
        for m in &metrics {
            let d = descs.iter().find(|d| d.name == m.name).expect(&m.name);
            assert_eq!(d.label_keys.len(), m.label_values.len(), "{}", m.name);
            names.insert(m.name.clone());
        }
        // A full reading reports every descriptor.
        assert_eq!(names.len(), descs.len());
    }

    #[test]
    fn only_selected_groups_are_reported() {
        let groups = [Group::Oom];
        let got: Vec<_> = container_level(&groups, &pod(), &full())
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(got, vec!["container_last_seen", "container_oom_events_total"]);
        assert!(pod_level(&groups, &pod(), Some(&[iface()]), 1).is_empty());
    }

    #[test]
    fn labels_values_and_types() {
        let groups = Group::ALL.to_vec();
        let m = container_level(&groups, &pod(), &full());
        let cpu = m
            .iter()
            .find(|m| m.name == "container_cpu_usage_seconds_total")
            .unwrap();
        assert_eq!(
            cpu.label_values,
            vec![
                "app",
                "c1",
                "busybox:latest",
                "k8s_app_web_default_u1_2",
                "default",
                "web",
                "total"
            ]
        );
        assert_eq!(cpu.value, Some(UInt64Value { value: 3 }), "whole seconds");
        assert_eq!(cpu.metric_type, cri_api::v1::MetricType::Counter as i32);
        assert_eq!(cpu.timestamp, 5 * NS_PER_S as i64);
        let net = pod_level(&groups, &pod(), Some(&[iface()]), 9);
        let rx = net
            .iter()
            .find(|m| m.name == "container_network_receive_bytes_total")
            .unwrap();
        assert_eq!(rx.label_values[0], "POD");
        assert_eq!(rx.label_values.last().map(String::as_str), Some("eth0"));
        assert_eq!(rx.value, Some(UInt64Value { value: 100 }));
    }

    #[test]
    fn unknown_values_are_left_out() {
        let mut r = full();
        r.sample = Sample::default();
        r.fs = None;
        r.files = None;
        let got: Vec<_> = container_level(&Group::ALL, &pod(), &r)
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(got, vec!["container_last_seen"]);
    }
}
