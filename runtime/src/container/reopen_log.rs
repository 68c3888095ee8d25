//! ReopenContainerLog: the shim closes the log file and opens the same path again (after the
//! kubelet rotated it).
//!
//! Invariant: only a RUNNING container's log can be reopened (CRI: error otherwise).

use crius_shim_api::Request;

use super::{ContainerError, Containers};

impl Containers {
    /// CRI: ReopenContainerLog.
    pub async fn reopen_log(self: &std::sync::Arc<Self>, query: &str) -> Result<(), ContainerError> {
        let id = &self.running_off(query, "reopen its log").await?;
        self.shim
            .request(&self.shim_dir(id), Request::ReopenLog)
            .await
            .map_err(ContainerError::shim(id))?;
        Ok(())
    }
}
