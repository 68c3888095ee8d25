//! Pod sandboxes: pinned namespaces, the CNI client, pod files, the pod cgroup and sandbox records.
//!
//! This crate never sees tonic; errors are typed and mapped to gRPC codes once, in the daemon.

pub mod cni;
pub mod netns;
pub mod sysctl;
