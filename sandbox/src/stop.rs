//! CRI StopPodSandbox: stop every container of the pod (through the container hook), kill the
//! infra process, run CNI DEL, and mark the sandbox NOTREADY.
//!
//! Invariants: idempotent (an unknown id, or a sandbox already stopped, succeeds); namespaces,
//! pod files and the cgroup stay until RemovePodSandbox; a failed step leaves the sandbox as it
//! was for the kubelet's retry, and the network is torn down at most once.

use std::sync::Arc;

use crate::error::SandboxError;
use crate::manager::SandboxManager;
use crate::record::SandboxState;
use crate::store;

impl SandboxManager {
    /// CRI StopPodSandbox by id or unique id prefix.
    pub async fn stop(self: &Arc<Self>, id: String) -> Result<(), SandboxError> {
        self.detached(move |m| m.stop_blocking(&id)).await
    }

    fn stop_blocking(&self, id_or_prefix: &str) -> Result<(), SandboxError> {
        // CRI: stopping a sandbox that does not exist is not an error.
        self.on_existing(id_or_prefix, |rec| {
            self.containers_of(&rec.meta.id, |hook, id| hook.stop_containers(id))?;
            self.stop_pause(rec)?;
            self.network_down(rec)?;
            store::update(&self.db, &rec.meta.id, |s| {
                s.state = SandboxState::NotReady;
                s.pause = None;
                if rec.meta.network.is_some() {
                    s.network_torn_down = true;
                }
            })?;
            Ok(())
        })
    }
}
