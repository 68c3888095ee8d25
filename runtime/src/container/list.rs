//! ListContainers: every record matching the CRI filter (id or unique prefix, state, pod id or
//! prefix, label selector — all given parts must match).

use cri_api::v1::{Container, ContainerFilter};

use super::record::Record;
use super::status::image_spec;
use super::{ContainerError, Containers};

impl Containers {
    /// CRI: ListContainers.
    pub async fn list(
        self: &std::sync::Arc<Self>,
        filter: Option<&ContainerFilter>,
    ) -> Result<Vec<Container>, ContainerError> {
        let filter = filter.cloned();
        self.blocking(move |c| {
            // Id, pod and labels first (no clone of the others); the state once exits are folded.
            let f = filter.as_ref();
            let selected = c.selected(|r| matches_ignoring_state(r, f))?;
            Ok(selected.iter().filter(|r| matches(r, f)).map(to_cri).collect())
        })
        .await
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
