//! ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats: cgroup usage read
//! by the daemon (`cgroup_usage`), the writable layer's size, and `usage_nano_cores` from the
//! previous reading; swap where the host accounts it, the pod's process count. A reading
//! answers every stats call for a second (`stats_cache`), so a pod's stats reuse its
//! containers' from the ListContainerStats just before. The pod's network counters are added
//! by the node (`node::netdev`), which knows the pod's namespace.
//!
//! Invariant: every returned usage carries a non-zero timestamp, also when the cgroup is gone
//! (an exited container reports what is left: nothing). Swap is `None` when the host keeps no
//! swap accounting (v1 without `memory.memsw.*`), not zero.

use std::collections::HashMap;

use cri_api::v1::{
    ContainerAttributes, ContainerStats, ContainerStatsFilter, CpuUsage, FilesystemIdentifier,
    FilesystemUsage, LinuxPodSandboxStats, MemoryUsage, PodSandboxAttributes, PodSandboxMetadata,
    PodSandboxStats, ProcessUsage, SwapUsage, UInt64Value,
};

use super::record::Record;
use super::stats_cache::{LayerUsage, StatsReading};
use super::{ContainerError, Containers};

/// What the pod stats need from the sandbox manager.
#[derive(Debug, Clone)]
pub struct PodStatsInput {
    pub id: String,
    pub metadata: Option<PodSandboxMetadata>,
    pub labels: HashMap<String, String>,
    pub annotations: HashMap<String, String>,
    pub cgroup_parent: String,
}

fn u(v: Option<u64>) -> Option<UInt64Value> {
    v.map(|value| UInt64Value { value })
}

impl Containers {
    /// CRI: ContainerStats.
    pub async fn stats(self: &std::sync::Arc<Self>, query: &str) -> Result<ContainerStats, ContainerError> {
        let id = self.find(query).await?;
        self.blocking(move |c| Ok(c.stats_of(&c.refreshed(&id)?))).await
    }

    /// CRI: ListContainerStats (filter: id prefix, pod id prefix, labels).
    pub async fn list_stats(
        self: &std::sync::Arc<Self>,
        f: Option<&ContainerStatsFilter>,
    ) -> Result<Vec<ContainerStats>, ContainerError> {
        let f = f.cloned();
        self.blocking(move |c| c.list_stats_blocking(f.as_ref())).await
    }

    fn list_stats_blocking(
        &self,
        f: Option<&ContainerStatsFilter>,
    ) -> Result<Vec<ContainerStats>, ContainerError> {
        let all = self.selected_shared(|_| true)?;
        Ok(all
            .iter()
            .filter(|r| {
                f.is_none_or(|f| {
                    (f.id.is_empty() || r.id.starts_with(&f.id))
                        && (f.pod_sandbox_id.is_empty() || r.sandbox_id.starts_with(&f.pod_sandbox_id))
                        && f.label_selector
                            .iter()
                            .all(|(k, v)| r.config.labels.get(k) == Some(v))
                })
            })
            .map(|r| self.stats_of(r))
            .collect())
    }

    /// The usage of container `id`'s layer directory when the stats RPCs measured it within
    /// the last second: ImageFsInfo takes it instead of walking the directory again.
    pub fn fresh_layer_usage(&self, id: &str) -> Option<crius_image::usage::Usage> {
        self.stats_cache.fresh_layer(id)
    }

    /// CRI: PodSandboxStats for one pod: its cgroup's usage plus each container's stats.
    pub async fn pod_stats(
        self: &std::sync::Arc<Self>,
        pod: &PodStatsInput,
    ) -> Result<PodSandboxStats, ContainerError> {
        let pod = pod.clone();
        self.blocking(move |c| c.pod_stats_blocking(&pod)).await
    }

    /// CRI: PodSandboxStats of several pods (ListPodSandboxStats), the container records read
    /// once for all of them.
    pub async fn pods_stats(
        self: &std::sync::Arc<Self>,
        pods: Vec<PodStatsInput>,
    ) -> Result<Vec<PodSandboxStats>, ContainerError> {
        self.blocking(move |c| {
            let all = c.selected_shared(|_| true)?;
            let mut by_pod: HashMap<&str, Vec<&Record>> = HashMap::new();
            for r in &all {
                by_pod.entry(r.sandbox_id.as_str()).or_default().push(r);
            }
            Ok(pods
                .iter()
                .map(|p| c.pod_stats_of(p, by_pod.get(p.id.as_str()).map_or(&[][..], Vec::as_slice)))
                .collect())
        })
        .await
    }

    fn pod_stats_blocking(&self, pod: &PodStatsInput) -> Result<PodSandboxStats, ContainerError> {
        let all = self.selected_shared(|_| true)?;
        let mine: Vec<&Record> = all
            .iter()
            .filter(|r| r.sandbox_id == pod.id)
            .map(|r| &**r)
            .collect();
        Ok(self.pod_stats_of(pod, &mine))
    }

    /// One pod's stats: its cgroup's reading and each of `containers` (the pod's records).
    fn pod_stats_of(&self, pod: &PodStatsInput, containers: &[&Record]) -> PodSandboxStats {
        let reading = self.stats_cache.get(&pod.id, &pod.cgroup_parent, || {
            (self.cgroups.usage(&pod.cgroup_parent, true), None)
        });
        let (cpu, memory) = cgroup_stats(&reading);
        let process = ProcessUsage {
            timestamp: reading.ts,
            process_count: u(reading.sample.processes),
        };
        let containers = containers.iter().map(|r| self.stats_of(r)).collect();
        PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: pod.id.clone(),
                metadata: pod.metadata.clone(),
                labels: pod.labels.clone(),
                annotations: pod.annotations.clone(),
            }),
            linux: Some(LinuxPodSandboxStats {
                cpu: Some(cpu),
                memory: Some(memory),
                network: None,
                process: Some(process),
                containers,
            }),
            windows: None,
        }
    }

    /// One container's stats from its reading: the cgroup's usage and the writable layer's.
    fn stats_of(&self, r: &Record) -> ContainerStats {
        let layer_dir = self.layer_dir(&r.id);
        let reading = self.stats_cache.get(&r.id, &r.cgroup_path, || {
            let (dir, upper) = crius_image::usage::measure_with_part(&layer_dir, "upper");
            (
                self.cgroups.usage(&r.cgroup_path, false),
                Some(LayerUsage { dir, upper }),
            )
        });
        let upper = layer_dir.join("upper");
        let (cpu, memory) = cgroup_stats(&reading);
        let (ts, sample) = (reading.ts, &reading.sample);
        let swap = sample.swap_usage.map(|used| SwapUsage {
            timestamp: ts,
            swap_available_bytes: u(sample.swap_available),
            swap_usage_bytes: u(Some(used)),
        });
        let used = reading.layer.unwrap_or_default().upper;
        ContainerStats {
            attributes: Some(ContainerAttributes {
                id: r.id.clone(),
                metadata: r.config.metadata.clone(),
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
            }),
            cpu: Some(cpu),
            memory: Some(memory),
            writable_layer: Some(FilesystemUsage {
                timestamp: ts,
                fs_id: Some(FilesystemIdentifier {
                    mountpoint: upper.to_string_lossy().into_owned(),
                }),
                used_bytes: u(Some(used.bytes)),
                inodes_used: u(Some(used.inodes)),
            }),
            swap,
        }
    }
}

/// CRI cpu and memory of one reading; `usage_nano_cores` from the reading before it.
fn cgroup_stats(reading: &StatsReading) -> (CpuUsage, MemoryUsage) {
    let (ts, sample) = (reading.ts, &reading.sample);
    let available = sample
        .memory_limit
        .zip(sample.working_set)
        .map(|(limit, ws)| limit.saturating_sub(ws));
    (
        CpuUsage {
            timestamp: ts,
            usage_core_nano_seconds: u(sample.cpu_total_ns),
            usage_nano_cores: u(reading.nano_cores),
        },
        MemoryUsage {
            timestamp: ts,
            working_set_bytes: u(sample.working_set),
            available_bytes: u(available),
            usage_bytes: u(sample.memory_usage),
            rss_bytes: u(sample.rss),
            page_faults: u(sample.pgfault_tree),
            major_page_faults: u(sample.pgmajfault_tree),
        },
    )
}
