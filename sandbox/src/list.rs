//! CRI ListPodSandbox with its filters: id (full or unique prefix), state, label selector (every
//! pair must match).
//!
//! Invariant: read-only; sandboxes still being created are not listed; a sandbox whose record
//! cannot be read is listed NOTREADY when its metadata can still be read. A list without an id
//! filter is answered on the caller's async worker when the row cache is loaded (it then reads
//! only memory); anything else goes to the blocking pool.

use std::sync::Arc;

use cri_api::v1::{PodSandbox, PodSandboxFilter};

use crate::error::SandboxError;
use crate::manager::SandboxManager;
use crate::record::SandboxState;
use crate::status::cri_state;
use crate::store;

impl SandboxManager {
    /// CRI ListPodSandbox, oldest first.
    pub async fn list(
        self: &Arc<Self>,
        filter: Option<PodSandboxFilter>,
    ) -> Result<Vec<PodSandbox>, SandboxError> {
        let filter = filter.unwrap_or_default();
        if filter.id.is_empty()
            && let Some((records, unreadable)) = store::scan_cached(&self.db)
        {
            return Ok(self.answer(records, unreadable, &filter));
        }
        self.detached(move |m| m.list_blocking(filter)).await
    }

    /// Every readable sandbox record (READY or NOTREADY; not those being created), oldest
    /// first: what the node's stats and metrics read namespaces and cgroups from. Unreadable
    /// records are left out.
    pub async fn records(self: &Arc<Self>) -> Result<Vec<store::Record>, SandboxError> {
        self.detached(move |m| {
            let mut records = store::scan(&m.db)?.0;
            records.retain(|r| !m.is_creating(&r.meta.id));
            records.sort_by_key(|r| r.meta.created_at);
            Ok(records)
        })
        .await
    }

    /// Blocking. How many pods are READY and NOTREADY, as ListPodSandbox would list them
    /// (sandboxes being created left out, unreadable records NOTREADY when still listed).
    pub fn count_by_state(&self) -> Result<(u64, u64), SandboxError> {
        let (records, unreadable) = store::scan(&self.db)?;
        let (mut ready, mut not_ready) = (0, 0);
        for r in records.iter().filter(|r| !self.is_creating(&r.meta.id)) {
            match r.status.state {
                SandboxState::Ready => ready += 1,
                SandboxState::NotReady => not_ready += 1,
            }
        }
        not_ready += unreadable.iter().filter(|u| u.listed.is_some()).count() as u64;
        Ok((ready, not_ready))
    }

    fn list_blocking(&self, filter: PodSandboxFilter) -> Result<Vec<PodSandbox>, SandboxError> {
        let mut unreadable = Vec::new();
        let records = if filter.id.is_empty() {
            let (records, bad) = store::scan_shared(&self.db)?;
            unreadable = bad;
            records
        } else {
            // CRI: an id filter matches a full id or a unique prefix; anything else matches nothing.
            match self.resolve(&filter.id) {
                Ok(Some(id)) => match store::get(&self.db, &id) {
                    Ok(r) => r.into_iter().map(Arc::new).collect(),
                    Err(store::StoreError::Corrupt { .. }) => {
                        unreadable = store::scan(&self.db)?.1;
                        unreadable.retain(|u| u.id == id);
                        Vec::new()
                    }
                    Err(e) => return Err(e.into()),
                },
                Ok(None) | Err(SandboxError::Invalid(_)) => Vec::new(),
                Err(e) => return Err(e),
            }
        };
        Ok(self.answer(records, unreadable, &filter))
    }

    /// The CRI answer from records already read: memory only.
    fn answer(
        &self,
        mut records: Vec<Arc<store::Record>>,
        unreadable: Vec<store::Unreadable>,
        filter: &PodSandboxFilter,
    ) -> Vec<PodSandbox> {
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
        // Unreadable records are listed NOTREADY with what could be read of them.
        let salvaged = unreadable.into_iter().filter_map(|u| u.listed).filter(|p| {
            filter.state.as_ref().is_none_or(|s| s.state == p.state)
                && filter
                    .label_selector
                    .iter()
                    .all(|(k, v)| p.labels.get(k) == Some(v))
        });
        let mut items: Vec<PodSandbox> = records
            .into_iter()
            .map(|r| PodSandbox {
                state: cri_state(r.status.state),
                id: r.meta.id.clone(),
                metadata: r.meta.config.metadata.clone(),
                created_at: r.meta.created_at,
                labels: r.meta.config.labels.clone(),
                annotations: r.meta.config.annotations.clone(),
                runtime_handler: r.meta.runtime_handler.clone(),
            })
            .chain(salvaged)
            .collect();
        items.sort_by_key(|p| p.created_at);
        items
    }
}
