//! CRI RemovePodSandbox: remove every container of the pod (through the container hook), then
//! the shared teardown: infra process, CNI DEL (if Stop did not), namespaces, pod files, the pod
//! cgroup, and finally the record with its name reservation.
//!
//! Invariants: idempotent (an unknown id succeeds); the record is deleted only after every
//! resource is gone, so a failed removal can be retried and nothing is forgotten.

use std::sync::Arc;

use crate::error::SandboxError;
use crate::manager::SandboxManager;

impl SandboxManager {
    /// CRI RemovePodSandbox by id or unique id prefix.
    pub async fn remove(self: &Arc<Self>, id: String) -> Result<(), SandboxError> {
        self.detached(move |m| m.remove_blocking(&id)).await
    }

    fn remove_blocking(&self, id_or_prefix: &str) -> Result<(), SandboxError> {
        // CRI: removing a sandbox that does not exist is not an error.
        self.on_existing(id_or_prefix, |rec| {
            self.containers_of(&rec.meta.id, |hook, id| hook.remove_containers(id))?;
            self.teardown(rec)
        })
    }
}
