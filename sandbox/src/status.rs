//! CRI PodSandboxStatus: state, creation time, network status (pod IP and additional IPs),
//! namespace options, labels and annotations; `verbose` adds an `info` map entry holding the
//! sandbox's runtime details as JSON (paths, infra pid, cgroup, CNI result, config).
//!
//! Invariant: read-only; a sandbox still being created is reported as not found.

use std::collections::HashMap;
use std::sync::Arc;

use cri_api::v1::{
    LinuxPodSandboxStatus, Namespace, PodIp, PodSandboxNetworkStatus, PodSandboxState, PodSandboxStatus,
};
use serde_json::json;

use crate::error::SandboxError;
use crate::manager::SandboxManager;
use crate::record::SandboxState;
use crate::store::{self, Record};

impl SandboxManager {
    /// CRI PodSandboxStatus by id or unique id prefix. Unknown ids are NotFound.
    pub async fn status(
        self: &Arc<Self>,
        id: String,
        verbose: bool,
    ) -> Result<(PodSandboxStatus, HashMap<String, String>), SandboxError> {
        self.detached(move |m| m.status_blocking(&id, verbose)).await
    }

    fn status_blocking(
        &self,
        id_or_prefix: &str,
        verbose: bool,
    ) -> Result<(PodSandboxStatus, HashMap<String, String>), SandboxError> {
        let not_found = || SandboxError::NotFound {
            id: id_or_prefix.to_string(),
        };
        let id = self.resolve(id_or_prefix)?.ok_or_else(not_found)?;
        let rec = store::get(&self.db, &id)?.ok_or_else(not_found)?;
        let mut info = HashMap::new();
        if verbose {
            info.insert("info".to_string(), verbose_info(&rec).to_string());
        }
        Ok((cri_status(&rec), info))
    }
}

pub(crate) fn cri_state(s: SandboxState) -> i32 {
    match s {
        SandboxState::Ready => PodSandboxState::SandboxReady as i32,
        SandboxState::NotReady => PodSandboxState::SandboxNotready as i32,
    }
}

fn cri_status(rec: &Record) -> PodSandboxStatus {
    let m = &rec.meta;
    let network = rec
        .status
        .ips
        .split_first()
        .map(|(ip, rest)| PodSandboxNetworkStatus {
            ip: ip.clone(),
            additional_ips: rest.iter().map(|ip| PodIp { ip: ip.clone() }).collect(),
        });
    PodSandboxStatus {
        id: m.id.clone(),
        metadata: m.config.metadata.clone(),
        state: cri_state(rec.status.state),
        created_at: m.created_at,
        network: Some(network.unwrap_or_default()),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(m.namespace_options.clone()),
            }),
        }),
        labels: m.config.labels.clone(),
        annotations: m.config.annotations.clone(),
        runtime_handler: m.runtime_handler.clone(),
    }
}

fn verbose_info(rec: &Record) -> serde_json::Value {
    let m = &rec.meta;
    json!({
        "id": m.id,
        "pid": rec.status.pause.map(|p| p.pid),
        "hostname": m.hostname,
        "namespaces": m.namespaces,
        "podFiles": m.files,
        "cgroupParent": m.cgroup_parent,
        "network": m.network.as_ref().map(|n| json!({
            "name": n.name,
            "attachment": n.attachment,
            "result": rec.status.cni_result,
            "tornDown": rec.status.network_torn_down,
        })),
        "runtimeHandler": m.runtime_handler,
        "config": m.config,
    })
}
