//! The seam to the sandbox manager: a sandbox record as the [`PodInfo`] a container is built
//! from, and the hook through which StopPodSandbox/RemovePodSandbox stop and remove a pod's
//! containers.
//!
//! Invariant: the hook runs on tokio's blocking pool (where the sandbox manager calls it) and
//! drives the async verbs with the runtime handle it was built with.

use std::path::PathBuf;
use std::sync::Arc;

use crius_sandbox::{ContainerHook, Record as SandboxRecord, SandboxState};

use super::{Containers, PodInfo};
use crate::spec::{Namespace, PodFiles, PodNamespaces, PodUserns};

/// Grace period StopPodSandbox gives each container: none, as containerd does — the kubelet
/// has already stopped the containers with the pod's grace period before it stops the pod.
const POD_STOP_TIMEOUT_SECONDS: i64 = 0;

pub fn pod_info(r: &SandboxRecord) -> PodInfo {
    let m = &r.meta;
    let join = |p: &Option<PathBuf>| match p {
        Some(p) => Namespace::Join(p.clone()),
        None => Namespace::Host,
    };
    let pid = match (&r.status.pause, m.pid_namespace) {
        (Some(p), true) => Namespace::Join(PathBuf::from(format!("/proc/{}/ns/pid", p.pid))),
        _ => Namespace::New,
    };
    PodInfo {
        id: m.id.clone(),
        config: m.config.clone(),
        ready: r.status.state == SandboxState::Ready,
        namespaces: PodNamespaces {
            network: join(&m.namespaces.net),
            ipc: join(&m.namespaces.ipc),
            uts: join(&m.namespaces.uts),
            pid,
            user: m
                .namespaces
                .user
                .clone()
                .zip(m.userns)
                .map(|(path, maps)| PodUserns { path, maps }),
        },
        files: PodFiles {
            hostname: Some(m.files.hostname.clone()),
            hosts: Some(m.files.hosts.clone()),
            resolv_conf: Some(m.files.resolv_conf.clone()),
            shm: m.files.shm.clone(),
        },
        cgroup_parent: m.cgroup_parent.to_string_lossy().into_owned(),
        cgroup_driver: m.cgroup_driver,
        runtime_handler: m.runtime_handler.clone(),
    }
}

/// Plugs the container verbs into pod teardown.
pub struct PodHook {
    containers: Arc<Containers>,
    runtime: tokio::runtime::Handle,
}

impl PodHook {
    /// Must be called inside the daemon's runtime.
    pub fn new(containers: Arc<Containers>) -> PodHook {
        PodHook {
            containers,
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

type HookResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

impl ContainerHook for PodHook {
    fn stop_containers(&self, sandbox_id: &str) -> HookResult {
        for id in self.containers.ids_in_pod(sandbox_id)? {
            self.runtime
                .block_on(self.containers.stop(&id, POD_STOP_TIMEOUT_SECONDS))?;
        }
        Ok(())
    }

    fn remove_containers(&self, sandbox_id: &str) -> HookResult {
        for id in self.containers.ids_in_pod(sandbox_id)? {
            self.runtime.block_on(self.containers.remove(&id))?;
        }
        // The pod's cgroup, mounts and namespaces go next: its containers' background
        // teardowns (these removes' and earlier RemoveContainers') must be done first.
        self.runtime
            .block_on(self.containers.finish_pod_teardowns(sandbox_id))?;
        // The pod's own reading (its record goes next).
        self.containers.stats_cache.forget(sandbox_id);
        Ok(())
    }
}

impl super::PodStatsInput {
    /// What the pod stats need from a pod's record.
    pub fn of(r: &SandboxRecord) -> super::PodStatsInput {
        super::PodStatsInput {
            id: r.meta.id.clone(),
            metadata: r.meta.config.metadata.clone(),
            labels: r.meta.config.labels.clone(),
            annotations: r.meta.config.annotations.clone(),
            cgroup_parent: r.meta.cgroup_parent.to_string_lossy().into_owned(),
        }
    }
}
