//! ContainerStatus: the record (with the shim's exit folded in) as CRI `ContainerStatus`, and in
//! verbose mode an `info` JSON with the pids and the OCI spec.

use std::collections::HashMap;

use cri_api::v1::{
    ContainerResources, ContainerStatus, ContainerStatusResponse, ContainerUser, ImageSpec,
    LinuxContainerUser,
};

use super::record::{Record, RecordError};
use super::{ContainerError, Containers};

impl Containers {
    /// CRI: ContainerStatus.
    pub async fn status(
        self: &std::sync::Arc<Self>,
        query: &str,
        verbose: bool,
    ) -> Result<ContainerStatusResponse, ContainerError> {
        // One trip to the blocking pool for the look-up and the status (kubelet asks per pod).
        let query = query.to_string();
        self.blocking(move |c| {
            let id = c
                .resolve(&query)?
                .ok_or_else(|| ContainerError::NotFound(query.clone()))?;
            c.status_blocking(id, verbose)
        })
        .await
    }

    fn status_blocking(&self, id: String, verbose: bool) -> Result<ContainerStatusResponse, ContainerError> {
        // An unreadable record answers with what could be read of it (state UNKNOWN).
        let r = match self.refreshed(&id) {
            Err(ContainerError::Record(RecordError::Corrupt { .. })) => self
                .records
                .salvage(&id)?
                .ok_or_else(|| ContainerError::NotFound(id.clone()))?,
            r => r?,
        };
        let mut info = HashMap::new();
        if verbose {
            let spec: serde_json::Value = std::fs::read(self.bundle_dir(&id).join("config.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(serde_json::Value::Null);
            let v = serde_json::json!({
                "sandboxID": r.sandbox_id,
                "pid": r.status.pid,
                "shimPid": r.status.shim_pid,
                "cgroupPath": r.cgroup_path,
                "runtimeSpec": spec,
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(ContainerStatusResponse {
            status: Some(to_cri(&r)),
            info,
        })
    }
}

pub(crate) fn image_spec(r: &Record) -> ImageSpec {
    ImageSpec {
        image: r.image_name.clone(),
        annotations: r
            .config
            .image
            .as_ref()
            .map(|i| i.annotations.clone())
            .unwrap_or_default(),
        user_specified_image: r.image_name.clone(),
        runtime_handler: String::new(),
    }
}

pub(crate) fn to_cri(r: &Record) -> ContainerStatus {
    ContainerStatus {
        id: r.id.clone(),
        metadata: Some(r.config.metadata.clone().unwrap_or_default()),
        state: r.status.state.to_cri() as i32,
        created_at: r.created_at,
        started_at: r.status.started_at,
        finished_at: r.status.finished_at,
        exit_code: r.status.exit_code,
        image: Some(image_spec(r)),
        image_ref: r.image_ref.clone(),
        reason: r.status.reason.clone(),
        message: r.status.message.clone(),
        labels: r.config.labels.clone(),
        annotations: r.config.annotations.clone(),
        mounts: r.config.mounts.clone(),
        log_path: r
            .log_path
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        resources: r.status.resources.clone().map(|l| ContainerResources {
            linux: Some(l),
            windows: None,
        }),
        image_id: r.image_id.clone(),
        user: Some(ContainerUser {
            linux: Some(LinuxContainerUser {
                uid: r.uid as i64,
                gid: r.gid as i64,
                supplemental_groups: r.additional_gids.iter().map(|g| *g as i64).collect(),
            }),
        }),
    }
}
