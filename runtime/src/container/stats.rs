//! ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats: cgroup usage read
//! by the daemon, the writable layer's size, and `usage_nano_cores` from the previous sample;
//! swap where the host accounts it, the pod's process count. The pod's network counters are
//! added by the node (`node::netdev`), which knows the pod's namespace.
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

use super::cgroup_sample::Sample;
use super::record::Record;
use super::{ContainerError, Containers, now_ns};

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
        let all = self.all()?;
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
            let all = c.all()?;
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
        let all = self.all()?;
        let mine: Vec<&Record> = all.iter().filter(|r| r.sandbox_id == pod.id).collect();
        Ok(self.pod_stats_of(pod, &mine))
    }

    /// One pod's stats: its cgroup's sample and each of `containers` (the pod's records).
    fn pod_stats_of(&self, pod: &PodStatsInput, containers: &[&Record]) -> PodSandboxStats {
        let sample = self.cgroups.sample(&pod.cgroup_parent);
        let (cpu, memory) = self.cgroup_stats(&pod.cgroup_parent, &sample);
        let process = ProcessUsage {
            timestamp: now_ns(),
            process_count: u(sample.processes),
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

    fn stats_of(&self, r: &Record) -> ContainerStats {
        let sample = self.cgroups.sample(&r.cgroup_path);
        let (cpu, memory) = self.cgroup_stats(&r.cgroup_path, &sample);
        let ts = now_ns();
        let swap = sample.swap_usage.map(|used| SwapUsage {
            timestamp: ts,
            swap_available_bytes: u(sample.swap_available),
            swap_usage_bytes: u(Some(used)),
        });
        let upper = self.layer_dir(&r.id).join("upper");
        let used = crius_image::usage::measure(&upper);
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

    /// CRI cpu and memory of one sample of `cgroup`; `usage_nano_cores` from the previous
    /// sample of the same cgroup.
    fn cgroup_stats(&self, cgroup: &str, sample: &Sample) -> (CpuUsage, MemoryUsage) {
        let ts = now_ns();
        let nano_cores = sample.cpu_total_ns.and_then(|now_usage| {
            let mut samples = self.cpu_samples.lock().unwrap_or_else(|e| e.into_inner());
            let prev = samples.insert(cgroup.to_string(), (ts, now_usage));
            let (t0, u0) = prev?;
            let dt = (ts - t0) as u64;
            (dt > 0).then(|| now_usage.saturating_sub(u0).saturating_mul(1_000_000_000) / dt)
        });
        let available = sample
            .memory_limit
            .zip(sample.working_set)
            .map(|(limit, ws)| limit.saturating_sub(ws));
        (
            CpuUsage {
                timestamp: ts,
                usage_core_nano_seconds: u(sample.cpu_total_ns),
                usage_nano_cores: u(nano_cores),
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
}
