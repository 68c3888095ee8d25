//! ReopenContainerLog: the shim closes the log file and opens the same path again (after the
//! kubelet rotated it).
//!
//! Invariant: only a RUNNING container's log can be reopened (CRI: error otherwise).

use crius_shim_api::Request;

use super::record::State;
use super::{ContainerError, Containers};

impl Containers {
    /// CRI: ReopenContainerLog.
    pub async fn reopen_log(self: &std::sync::Arc<Self>, query: &str) -> Result<(), ContainerError> {
        let id = &self.find(query).await?;
        let r = self.refreshed_off(id).await?;
        if r.status.state != State::Running {
            return Err(ContainerError::WrongState {
                id: id.clone(),
                state: r.status.state,
                action: "reopen its log",
                wanted: "a running container",
            });
        }
        self.shim
            .request(&self.shim_dir(id), Request::ReopenLog)
            .await
            .map_err(ContainerError::shim(id))?;
        Ok(())
    }
}
