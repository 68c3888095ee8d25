//! StartContainer: asks the shim to let a CREATED container run, then records RUNNING.
//!
//! Invariant: only a CREATED container starts (FailedPrecondition otherwise); an exit that
//! happens right after start is never hidden — the record is refreshed from the exit file after
//! the update.

use std::sync::Arc;

use crius_shim_api::Request;

use super::record::State;
use super::{ContainerError, Containers, now_ns, require_state};

impl Containers {
    /// CRI: StartContainer.
    pub async fn start(self: &Arc<Self>, query: &str) -> Result<(), ContainerError> {
        let id = &self.find(query).await?;
        let _guard = self.locks.lock(id).await;
        let r = self.refreshed_off(id).await?;
        require_state(&r, &[State::Created], "start")?;
        if let Err(e) = self.shim.request(&self.shim_dir(id), Request::Start).await {
            let message = format!("start failed: {e}");
            let key = id.to_string();
            self.blocking(move |c| {
                c.records.update::<ContainerError>(&key, |s| {
                    s.message = message;
                    Ok(())
                })
            })
            .await?;
            return Err(ContainerError::Shim {
                id: id.into(),
                source: e,
            });
        }
        let id = id.clone();
        self.blocking(move |c| c.record_started(&id)).await
    }

    /// Records RUNNING after the shim let the container run; folds an exit that came already.
    fn record_started(&self, id: &str) -> Result<(), ContainerError> {
        let started = now_ns();
        let mut started_now = false;
        let order = self.events.order();
        let rec = self.records.update::<ContainerError>(id, |s| {
            s.started_at = started;
            if s.state == State::Created {
                s.state = State::Running;
                started_now = true;
            }
            Ok(())
        })?;
        if started_now {
            self.events.send(id, &rec.sandbox_id, super::EventKind::Started);
        }
        drop(order);
        self.fold_exit(rec)?;
        Ok(())
    }
}
