//! CRI ListPodSandbox with its filters: id (full or unique prefix), state, label selector (every
//! pair must match).
//!
//! Invariant: read-only; sandboxes still being created are not listed.

use std::sync::Arc;

use cri_api::v1::{PodSandbox, PodSandboxFilter};

use crate::error::SandboxError;
use crate::manager::SandboxManager;
use crate::status::cri_state;
use crate::store;

impl SandboxManager {
    /// CRI ListPodSandbox, oldest first.
    pub async fn list(
        self: &Arc<Self>,
        filter: Option<PodSandboxFilter>,
    ) -> Result<Vec<PodSandbox>, SandboxError> {
        self.detached(move |m| m.list_blocking(filter)).await
    }

    fn list_blocking(&self, filter: Option<PodSandboxFilter>) -> Result<Vec<PodSandbox>, SandboxError> {
        let filter = filter.unwrap_or_default();
        let mut records = if filter.id.is_empty() {
            store::list(&self.db)?
        } else {
            // CRI: an id filter matches a full id or a unique prefix; anything else matches nothing.
            match self.resolve(&filter.id) {
                Ok(Some(id)) => store::get(&self.db, &id)?.into_iter().collect(),
                Ok(None) | Err(SandboxError::Invalid(_)) => Vec::new(),
                Err(e) => return Err(e),
            }
        };
        records.retain(|r| !self.is_creating(&r.meta.id));
        if let Some(state) = &filter.state {
            records.retain(|r| cri_state(r.status.state) == state.state);
        }
        records.retain(|r| {
            filter
                .label_selector
                .iter()
                .all(|(k, v)| r.meta.config.labels.get(k) == Some(v))
        });
        records.sort_by_key(|r| r.meta.created_at);
        Ok(records
            .into_iter()
            .map(|r| PodSandbox {
                state: cri_state(r.status.state),
                id: r.meta.id,
                metadata: r.meta.config.metadata.clone(),
                created_at: r.meta.created_at,
                labels: r.meta.config.labels.clone(),
                annotations: r.meta.config.annotations.clone(),
                runtime_handler: r.meta.runtime_handler,
            })
            .collect())
    }
}
