//! ListContainers: every record matching the CRI filter (id or unique prefix, state, pod id or
//! prefix, label selector — all given parts must match).
//!
//! Invariant: a list is answered on the caller's async worker only when it reads nothing but
//! memory: the row cache is loaded and no selected record could take an exit that only its exit
//! file would show. Otherwise it goes to the blocking pool.

use std::sync::Arc;

use cri_api::v1::{Container, ContainerFilter};

use super::record::{Record, State};
use super::status::image_spec;
use super::{ContainerError, Containers};

impl Containers {
    /// CRI: ListContainers.
    pub async fn list(
        self: &std::sync::Arc<Self>,
        filter: Option<&ContainerFilter>,
    ) -> Result<Vec<Container>, ContainerError> {
        // Id, pod and labels first (no clone of the others); the state once exits are folded.
        let selected = match self.selected_in_memory(filter) {
            Some(selected) => selected,
            None => {
                let filter = filter.cloned();
                self.blocking(move |c| c.selected_shared(|r| matches_ignoring_state(r, filter.as_ref())))
                    .await?
            }
        };
        Ok(selected
            .iter()
            .filter(|r| matches(r, filter))
            .map(|r| to_cri(r))
            .collect())
    }

    /// What [`Containers::selected_shared`] would select for `f`, from the row cache alone; None
    /// when that needs a read of the table or of an exit file.
    pub(super) fn selected_in_memory(&self, f: Option<&ContainerFilter>) -> Option<Vec<Arc<Record>>> {
        let (mut selected, unreadable) = self.records.select_cached(|r| matches_ignoring_state(r, f))?;
        if selected.iter().any(|r| self.may_take_exit(r)) {
            return None;
        }
        selected.extend(
            unreadable
                .into_iter()
                .filter_map(|u| u.salvaged)
                .filter(|r| matches_ignoring_state(r, f))
                .map(Arc::new),
        );
        Some(selected)
    }

    /// [`Containers::selected`] sharing the records with the row cache: a record is copied
    /// only when an exit is folded into it. For the reads repeated every second.
    pub(crate) fn selected_shared(
        &self,
        keep: impl Fn(&Record) -> bool,
    ) -> Result<Vec<Arc<Record>>, ContainerError> {
        let unreadable = self.records.unreadable()?;
        let mut all = self
            .records
            .select_shared(&keep)?
            .into_iter()
            .map(|r| self.fold_exit_shared(r))
            .collect::<Result<Vec<_>, _>>()?;
        all.extend(
            unreadable
                .into_iter()
                .filter_map(|u| u.salvaged)
                .filter(|r| keep(r))
                .map(Arc::new),
        );
        Ok(all)
    }

    /// [`Containers::fold_exit`] of a shared record: unchanged, and not copied, unless it may
    /// take an exit and its shim's exit file is there. A RUNNING container whose shim directory
    /// the exit watcher watches is left as recorded: the watcher folds its exit as soon as the
    /// shim writes it, so its exit file is not looked for on every list.
    fn fold_exit_shared(&self, r: Arc<Record>) -> Result<Arc<Record>, ContainerError> {
        if !self.may_take_exit(&r) || !self.shim_dir(&r.id).join(crius_shim_api::EXIT_FILE).exists() {
            return Ok(r);
        }
        Ok(Arc::new(self.fold_exit(Record::clone(&r))?))
    }

    /// Whether `r`'s recorded state may be behind an exit file its shim wrote: not for an
    /// EXITED record, nor for a RUNNING one whose shim directory the exit watcher watches.
    fn may_take_exit(&self, r: &Record) -> bool {
        match r.status.state {
            State::Running => !self.watcher.get().is_some_and(|w| w.watches(&r.id)),
            State::Unknown | State::Created => true,
            State::Exited => false,
        }
    }
}

pub(crate) fn matches(r: &Record, f: Option<&ContainerFilter>) -> bool {
    let Some(f) = f else { return true };
    if let Some(s) = &f.state
        && s.state != r.status.state.to_cri() as i32
    {
        return false;
    }
    matches_ignoring_state(r, Some(f))
}

fn matches_ignoring_state(r: &Record, f: Option<&ContainerFilter>) -> bool {
    let Some(f) = f else { return true };
    if !f.id.is_empty() && !r.id.starts_with(&f.id) {
        return false;
    }
    if !f.pod_sandbox_id.is_empty() && !r.sandbox_id.starts_with(&f.pod_sandbox_id) {
        return false;
    }
    f.label_selector
        .iter()
        .all(|(k, v)| r.config.labels.get(k) == Some(v))
}

fn to_cri(r: &Record) -> Container {
    Container {
        id: r.id.clone(),
        pod_sandbox_id: r.sandbox_id.clone(),
        metadata: r.config.metadata.clone(),
        image: Some(image_spec(r)),
        image_ref: r.image_ref.clone(),
        state: r.status.state.to_cri() as i32,
        created_at: r.created_at,
        labels: r.config.labels.clone(),
        annotations: r.config.annotations.clone(),
        image_id: r.image_id.clone(),
    }
}
