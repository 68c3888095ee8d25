//! RemoveContainer: stop if needed, the one container teardown (`teardown.rs`), then forget the
//! record.
//!
//! Invariants: removing an unknown container succeeds; the record goes only after the teardown
//! fully succeeded, and every teardown step tolerates having been done already, so a remove that
//! failed half-way can simply be retried.

use std::sync::Arc;

use super::{ContainerError, Containers};

impl Containers {
    /// CRI: RemoveContainer.
    pub async fn remove(self: &Arc<Self>, query: &str) -> Result<(), ContainerError> {
        let Some(id) = self.resolve_off(query).await? else {
            return Ok(());
        };
        let id = id.as_str();
        let _guard = self.locks.lock(id).await;
        let r = match self.refreshed_off(id).await {
            Ok(r) => r,
            Err(ContainerError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        // A never-started container has nothing to stop (and its record goes anyway).
        if !super::stop::never_started(&r) {
            self.stop_locked(r.clone(), 0).await?;
        }
        self.teardown(id, Some(r.cgroup_path.clone())).await?;
        self.blocking(move |c| {
            c.records.remove(&r)?;
            c.stats_cache.forget(&r.id);
            c.events.send(&r.id, &r.sandbox_id, super::EventKind::Deleted);
            Ok(())
        })
        .await
    }
}
