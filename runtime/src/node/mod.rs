//! The node: the runtime-wide state the CRI handlers share ([`Crius`]) and the verbs that need
//! more than one domain crate — a container created in a pod (with the handover of creates that
//! outlive their client), a pod's stats and metrics, the pod a port-forward dials into — plus
//! the container event bus (`events.rs`), the streaming backend (`streams.rs`), the pods'
//! network counters (`netdev.rs`) and the metric RPCs (`pod_metrics.rs`,
//! `metric_descriptors.rs`).
//!
//! Invariants: the sandbox and container crates never call each other here except through the
//! records they expose; every read of the store runs on the blocking pool; a client that goes
//! away never cancels a create half-way (creates run detached inside [`handover::Handover`]);
//! `setns` happens only on a thread of its own (`on_own_thread`), never on a worker.

pub mod events;
pub mod handover;
pub mod metric_descriptors;
pub mod netdev;
pub mod pod_metrics;
pub mod streams;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cri_api::v1::{
    ContainerConfig, NetworkInterfaceUsage, NetworkUsage, PodSandboxFilter, PodSandboxStats,
    PodSandboxStatsFilter, RunPodSandboxRequest, UInt64Value,
};
use crius_sandbox::{Record as SandboxRecord, SandboxError};

use crate::config::Config;
use crate::container::{ContainerError, PodInfo, PodStatsInput};

/// A node verb's failure: from the sandbox side or the container side, mapped to gRPC by the
/// server like the crate's own errors.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// The host refused what the verb needs of it (a thread, a namespace read).
    #[error("{0}")]
    Host(String),
}

/// What the RPC handlers share. Invariant: `ready` goes false → true once, when start-up
/// recovery has finished; before that every RPC answers UNAVAILABLE.
pub struct Crius {
    pub config: Config,
    pub db: Arc<redb::Database>,
    /// Image records, blobs, layers and container leases on layers.
    pub images: Arc<crius_image::ImageStore>,
    /// Pod sandboxes: pinned namespaces, CNI, pod files and cgroups, sandbox records.
    pub sandboxes: Arc<crius_sandbox::SandboxManager>,
    /// Containers: records, rootfs, shims, exec, stats.
    pub containers: Arc<crate::container::Containers>,
    /// GetContainerEvents subscribers.
    pub events: Arc<events::EventBus>,
    /// Creates finished after their client gave up, kept for the retry.
    pub handover: Arc<handover::Handover>,
    /// The Exec/Attach/PortForward server, set once at start-up.
    pub streaming: std::sync::OnceLock<Arc<crius_streaming::StreamingServer>>,
    /// The Prometheus series (served on `metrics.address` when it is set).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The unpacked layers' disk usage, remembered between ImageFsInfo calls.
    pub layer_usage: crius_image::usage::ImmutableEntries,
    ready: AtomicBool,
}

impl Crius {
    pub fn new(
        config: Config,
        db: Arc<redb::Database>,
        images: Arc<crius_image::ImageStore>,
        sandboxes: Arc<crius_sandbox::SandboxManager>,
        containers: Arc<crate::container::Containers>,
    ) -> Arc<Crius> {
        let metrics = crate::metrics::Metrics::new(Arc::new(crate::metrics::node::Managers {
            containers: containers.clone(),
            sandboxes: sandboxes.clone(),
            images: images.clone(),
        }));
        Arc::new(Crius {
            config,
            db,
            images,
            sandboxes,
            containers,
            events: Arc::default(),
            handover: Arc::default(),
            streaming: std::sync::OnceLock::new(),
            metrics,
            layer_usage: Default::default(),
            ready: AtomicBool::new(false),
        })
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Opens the readiness gate. Called once, after recovery.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// CRI: RunPodSandbox. A pod created after an earlier attempt's client gave up is handed
    /// to this retry (same metadata), instead of the retry failing on the reserved name.
    pub async fn run_pod(&self, req: RunPodSandboxRequest) -> Result<String, SandboxError> {
        let sandboxes = self.sandboxes.clone();
        let Some(key) = pod_key(&req) else {
            // No metadata: the sandbox manager's validation refuses it.
            return sandboxes.run(req).await;
        };
        let probe = self.sandboxes.clone();
        let exists = Arc::new(move |id: &str| probe.sandbox(id).ok().flatten().is_some());
        self.handover
            .create(key, exists, async move { sandboxes.run(req).await })
            .await
    }

    /// CRI: CreateContainer in the pod `pod_query` names (id or unique prefix). Runs to its end
    /// (or full rollback) even if the client gives up; a container created after an earlier
    /// attempt's client gave up is handed to this retry. The request's copy of the pod config
    /// is not taken: the pod's recorded config decides what the pod allows.
    pub async fn create_container(
        &self,
        pod_query: &str,
        config: Option<ContainerConfig>,
    ) -> Result<String, NodeError> {
        let config = config.ok_or_else(|| ContainerError::Invalid("container config is required".into()))?;
        let pod = crate::container::pod_info(&self.pod_record(pod_query).await?);
        let meta = config.metadata.clone().unwrap_or_default();
        let key = format!("container\0{}\0{}\0{}", pod.id, meta.name, meta.attempt);
        let containers = self.containers.clone();
        let probe = self.containers.clone();
        let exists = Arc::new(move |id: &str| probe.exists(id));
        Ok(self
            .handover
            .create(key, exists, async move { containers.create(&pod, config).await })
            .await?)
    }

    /// The ready pod a port-forward dials into: its full id.
    pub async fn port_forward_pod(&self, pod_query: &str) -> Result<String, NodeError> {
        let pod: PodInfo = crate::container::pod_info(&self.pod_record(pod_query).await?);
        if !pod.ready {
            return Err(ContainerError::PodNotReady(pod.id).into());
        }
        Ok(pod.id)
    }

    /// CRI: PodSandboxStats: the pod cgroup's usage and process count, its interfaces'
    /// counters, and each container's stats.
    pub async fn pod_stats(&self, pod_query: &str) -> Result<PodSandboxStats, NodeError> {
        let record = self.pod_record(pod_query).await?;
        let mut stats = self.containers.pod_stats(&PodStatsInput::of(&record)).await?;
        self.add_network(&mut [(&record, &mut stats)]).await?;
        Ok(stats)
    }

    /// CRI: ListPodSandboxStats. A pod removed while the list is assembled is left out.
    pub async fn list_pod_stats(
        &self,
        filter: Option<PodSandboxStatsFilter>,
    ) -> Result<Vec<PodSandboxStats>, NodeError> {
        let f = filter.unwrap_or_default();
        let filter = PodSandboxFilter {
            id: f.id,
            state: None,
            label_selector: f.label_selector,
        };
        let listed = self.sandboxes.list(Some(filter)).await?;
        // One scan of the pod records and one of the container records for the whole list.
        let mut records: HashMap<String, SandboxRecord> = self
            .sandboxes
            .records()
            .await?
            .into_iter()
            .map(|r| (r.meta.id.clone(), r))
            .collect();
        let records: Vec<SandboxRecord> = listed.iter().filter_map(|p| records.remove(&p.id)).collect();
        let inputs = records.iter().map(PodStatsInput::of).collect();
        let mut stats = self.containers.pods_stats(inputs).await?;
        let mut pairs: Vec<_> = records.iter().zip(stats.iter_mut()).collect();
        self.add_network(&mut pairs).await?;
        Ok(stats)
    }

    /// Fills each pod's `network` from its namespace's counters, all read on one thread. A
    /// host-network pod (no namespace of its own) and a pod whose namespace is gone get none,
    /// as in CRI-O and containerd. `default_interface` is the CNI interface (eth0);
    /// `interfaces` lists every interface but `lo`, the default one included, as cAdvisor does.
    async fn add_network(
        &self,
        pods: &mut [(&SandboxRecord, &mut PodSandboxStats)],
    ) -> Result<(), NodeError> {
        let ifaces = pod_ifaces(pods.iter().map(|(r, _)| *r)).await?;
        let ts = crate::container::now_ns();
        for (record, stats) in pods.iter_mut() {
            if let (Some(ifaces), Some(linux)) = (ifaces.get(&record.meta.id), stats.linux.as_mut()) {
                linux.network = Some(network_usage(ifaces, ts));
            }
        }
        Ok(())
    }

    /// The record of the pod `query` names, read on the blocking pool; PodNotFound otherwise.
    async fn pod_record(&self, query: &str) -> Result<SandboxRecord, NodeError> {
        let sandboxes = self.sandboxes.clone();
        let q = query.to_string();
        let found = tokio::task::spawn_blocking(move || sandboxes.sandbox(&q))
            .await
            .map_err(|e| SandboxError::Task(e.to_string()))??;
        Ok(found.ok_or_else(|| ContainerError::PodNotFound(query.into()))?)
    }
}

/// The CRI network usage of a pod's interfaces.
fn network_usage(ifaces: &[netdev::Iface], ts: i64) -> NetworkUsage {
    let v = |value| Some(UInt64Value { value });
    let usage = |i: &netdev::Iface| NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: v(i.rx_bytes),
        rx_errors: v(i.rx_errors),
        tx_bytes: v(i.tx_bytes),
        tx_errors: v(i.tx_errors),
    };
    NetworkUsage {
        timestamp: ts,
        default_interface: ifaces
            .iter()
            .find(|i| i.name == crius_sandbox::cni::POD_IFNAME)
            .map(usage),
        interfaces: ifaces.iter().map(usage).collect(),
    }
}

/// The network interfaces of each of `pods` that has a namespace of its own, by pod id, all
/// read on one thread. Host-network pods, and pods whose namespace is gone, have no entry.
async fn pod_ifaces<'a>(
    pods: impl Iterator<Item = &'a SandboxRecord>,
) -> Result<HashMap<String, Vec<netdev::Iface>>, NodeError> {
    let (ids, paths): (Vec<_>, Vec<_>) = pods
        .filter_map(|p| Some((p.meta.id.clone(), p.meta.namespaces.net.clone()?)))
        .unzip();
    let read = netdev::read_namespaces(paths).await.map_err(NodeError::Host)?;
    Ok(ids
        .into_iter()
        .zip(read)
        .filter_map(|(id, v)| Some((id, v?)))
        .collect())
}

/// Runs `f` on a new OS thread named `name` and waits for its result without blocking a
/// worker. For `setns`: the thread exits when `f` returns, and the namespace it entered with it.
async fn on_own_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| format!("cannot start thread {name}: {e}"))?;
    rx.await.map_err(|_| format!("thread {name} vanished"))
}

/// The handover key of a RunPodSandbox: its metadata (None when missing).
fn pod_key(req: &RunPodSandboxRequest) -> Option<String> {
    let m = req.config.as_ref()?.metadata.as_ref()?;
    Some(format!(
        "pod\0{}\0{}\0{}\0{}",
        m.name, m.namespace, m.uid, m.attempt
    ))
}
