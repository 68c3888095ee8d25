//! The node: the runtime-wide state the CRI handlers share ([`Crius`]) and the verbs that need
//! more than one domain crate — a container created in a pod (with the handover of creates that
//! outlive their client), a pod's stats, the pod a port-forward dials into — plus the container
//! event bus (`events.rs`) and the streaming backend (`streams.rs`).
//!
//! Invariants: the sandbox and container crates never call each other here except through the
//! records they expose; every read of the store runs on the blocking pool; a client that goes
//! away never cancels a create half-way (creates run detached inside [`handover::Handover`]).

pub mod events;
pub mod handover;
pub mod streams;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cri_api::v1::{
    ContainerConfig, PodSandboxFilter, PodSandboxStats, PodSandboxStatsFilter, RunPodSandboxRequest,
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

    /// CRI: PodSandboxStats: the pod cgroup's usage and each container's stats.
    pub async fn pod_stats(&self, pod_query: &str) -> Result<PodSandboxStats, NodeError> {
        let input = PodStatsInput::of(&self.pod_record(pod_query).await?);
        Ok(self.containers.pod_stats(&input).await?)
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
        let pods = self.sandboxes.list(Some(filter)).await?;
        let mut stats = Vec::with_capacity(pods.len());
        for p in pods {
            match self.pod_stats(&p.id).await {
                Ok(s) => stats.push(s),
                Err(NodeError::Container(ContainerError::PodNotFound(_))) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(stats)
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

/// The handover key of a RunPodSandbox: its metadata (None when missing).
fn pod_key(req: &RunPodSandboxRequest) -> Option<String> {
    let m = req.config.as_ref()?.metadata.as_ref()?;
    Some(format!(
        "pod\0{}\0{}\0{}\0{}",
        m.name, m.namespace, m.uid, m.attempt
    ))
}
