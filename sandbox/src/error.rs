//! The crate's error: one variant per kind of failure the daemon maps to a distinct gRPC code,
//! each carrying the module error it came from.

use crate::cgroup::CgroupError;
use crate::cni::{CniError, ConfigError};
use crate::netns::NsError;
use crate::pause::PauseError;
use crate::podfiles::FilesError;
use crate::store::StoreError;
use crate::sysctl::SysctlError;

/// Request content that crius refuses (gRPC InvalidArgument).
#[derive(Debug, thiserror::Error)]
pub enum InvalidRequest {
    #[error("{what} is missing")]
    Missing { what: &'static str },
    #[error(transparent)]
    Input(#[from] cri_api::validate::InvalidInput),
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    #[error("cgroup_parent: {0}")]
    CgroupParent(#[source] CgroupError),
    #[error("{0}")]
    Unsupported(String),
    #[error("port mapping {mapping}: {reason}")]
    PortMapping { mapping: String, reason: &'static str },
    #[error(transparent)]
    Userns(#[from] crate::userns::UsernsError),
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid pod sandbox request: {0}")]
    Invalid(#[from] InvalidRequest),
    #[error("pod sandbox {id} not found")]
    NotFound { id: String },
    /// CRI: RunPodSandbox with a runtime handler the runtime does not have is NotFound.
    #[error("runtime handler {0:?} is not configured")]
    UnknownHandler(String),
    #[error("pod sandbox name {name} is already reserved by sandbox {holder}")]
    NameReserved { name: String, holder: String },
    /// A request this host cannot serve (gRPC FailedPrecondition), e.g. a pod user namespace
    /// where the kernel or the layer store's filesystem cannot idmap.
    #[error("{0}")]
    HostUnsupported(String),
    #[error("network not ready: {0}")]
    NetworkNotReady(#[source] ConfigError),
    #[error("pod namespaces: {0}")]
    Namespaces(#[from] NsError),
    #[error("pod network: {0}")]
    Network(#[from] CniError),
    #[error("pod files: {0}")]
    Files(#[from] FilesError),
    #[error("pod cgroup: {0}")]
    Cgroup(#[from] CgroupError),
    #[error("pod infra process: {0}")]
    Pause(#[from] PauseError),
    #[error("{0}")]
    Store(StoreError),
    #[error("containers of pod sandbox {id}: {source}")]
    Containers {
        id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("pod sandbox task failed: {0}")]
    Task(String),
}

impl From<StoreError> for SandboxError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NameReserved { name, holder } => SandboxError::NameReserved { name, holder },
            StoreError::NotFound { id } => SandboxError::NotFound { id },
            other => SandboxError::Store(other),
        }
    }
}

impl SandboxError {
    /// Whether the failure is in what the client asked for (an invalid sysctl value the kernel
    /// refused counts: the request named it).
    pub fn is_invalid_argument(&self) -> bool {
        matches!(
            self,
            SandboxError::Invalid(_)
                | SandboxError::Namespaces(NsError::Sysctl { .. } | NsError::Hostname { .. })
        )
    }
}
