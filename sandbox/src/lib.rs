//! Pod sandboxes: pinned namespaces, the CNI client, pod files, the pod cgroup, the infra process
//! and sandbox records, with the five CRI sandbox verbs on [`SandboxManager`] (one file each:
//! `run`, `stop`, `remove`, `status`, `list`).
//!
//! This crate never sees tonic; errors are typed ([`SandboxError`]) and mapped to gRPC codes
//! once, in the daemon. The container code reads a sandbox's namespace paths, pod files, cgroup
//! parent and infra pid from [`SandboxManager::sandbox`] and plugs container stop/removal into
//! pod teardown through [`ContainerHook`].

pub mod cgroup;
pub mod cni;
pub mod crash;
mod error;
mod list;
mod manager;
pub mod netns;
pub mod pause;
pub mod podfiles;
pub mod record;
mod recover;
mod remove;
pub mod rowcache;
mod run;
pub mod slice;
mod status;
mod stop;
pub mod store;
pub mod sysctl;
pub mod userns;

pub use error::{InvalidRequest, SandboxError};
pub use manager::{ContainerHook, ManagerConfig, SandboxManager};
pub use record::{SandboxMeta, SandboxState, SandboxStatus};
pub use recover::Recovered;
pub use store::Record;

#[cfg(test)]
mod tests;
