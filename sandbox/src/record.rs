//! The sandbox record: what is decided once at creation ([`SandboxMeta`]) and what changes
//! ([`SandboxStatus`]).
//!
//! ```text
//!   RunPodSandbox ──insert──▶ NotReady(creating, in memory) ──all steps done──▶ Ready
//!                                     │ any step fails: rollback, record deleted
//!   Ready ──StopPodSandbox──▶ NotReady ──RemovePodSandbox──▶ (record deleted)
//! ```
//! Invariant: every path in the metadata is derived from the sandbox id under the daemon's
//! `state` dir (or the validated cgroup parent), so teardown needs nothing but the record.

use std::path::PathBuf;

use cri_api::v1::{NamespaceOption, PodSandboxConfig};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cni::Attachment;
use crate::netns::PinnedNamespaces;
use crate::pause::PauseProcess;
use crate::podfiles::PodFiles;

/// CRI: SandboxState READY / NOTREADY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    Ready,
    NotReady,
}

/// The network a pod is attached to, fixed at creation: DEL uses exactly this, even if the
/// configuration directory changed since.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkPlan {
    pub name: String,
    /// The conflist document (as in the cniCacheV1 entry).
    pub conflist: String,
    pub attachment: Attachment,
}

/// Written once, when the name is reserved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxMeta {
    pub id: String,
    /// The name index key: name, namespace, uid, attempt.
    pub name_key: String,
    pub config: PodSandboxConfig,
    pub runtime_handler: String,
    /// Unix nanoseconds.
    pub created_at: i64,
    /// The effective namespace options (what the pod got, for PodSandboxStatus).
    pub namespace_options: NamespaceOption,
    /// `<state>/ns/<id>`.
    pub ns_dir: PathBuf,
    /// Pinned namespace files; None = the host's namespace.
    pub namespaces: PinnedNamespaces,
    pub hostname: String,
    pub files: PodFiles,
    /// Absolute cgroupfs path of the pod cgroup (containers go below it).
    pub cgroup_parent: PathBuf,
    /// Whether crius created the pod cgroup (and so removes it).
    pub cgroup_owned: bool,
    /// Who made the pod cgroup: under systemd `cgroup_parent` is a slice's path and the
    /// containers and the infra process are scopes in it.
    #[serde(default)]
    pub cgroup_driver: crate::cgroup::Driver,
    /// Whether an infra process is PID 1 of a pod PID namespace.
    pub pid_namespace: bool,
    /// The pod user namespace's mappings (pinned at `namespaces.user`); None = the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<crate::userns::Mappings>,
    /// None for a host-network pod.
    pub network: Option<NetworkPlan>,
}

impl SandboxMeta {
    /// `name/namespace (uid, attempt N)` for messages.
    pub fn display_name(&self) -> String {
        let m = self.config.metadata.clone().unwrap_or_default();
        format!(
            "{}/{} (uid {:?}, attempt {})",
            m.namespace, m.name, m.uid, m.attempt
        )
    }
}

/// The name index key of a pod's metadata. Names contain no control characters, so NUL separates.
pub fn name_key(name: &str, namespace: &str, uid: &str, attempt: u32) -> String {
    format!("{name}\0{namespace}\0{uid}\0{attempt}")
}

/// Changed only through `store::update`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxStatus {
    pub state: SandboxState,
    /// The final CNI ADD result (also cached under the CNI cache dir).
    pub cni_result: Option<Value>,
    /// Pod IP first, then additional IPs. Kept after stop, as the CRI status reports them.
    pub ips: Vec<String>,
    /// Set once CNI DEL succeeded, so it is not run again.
    pub network_torn_down: bool,
    pub pause: Option<PauseProcess>,
    /// True from the insert that reserves the name until the sandbox is READY: a record still
    /// `creating` at start-up belongs to a RunPodSandbox the daemon died in, and recovery
    /// tears it down. Absent in older records (= false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub creating: bool,
}

impl SandboxStatus {
    pub fn creating() -> SandboxStatus {
        SandboxStatus {
            state: SandboxState::NotReady,
            cni_result: None,
            ips: Vec::new(),
            network_torn_down: false,
            pause: None,
            creating: true,
        }
    }
}
