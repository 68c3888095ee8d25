//! The ids an RPC is about, recorded on its tracing span (`rpc_span`), so the one log line the
//! RPC leaves (`log_layer.rs`) and every line logged while it runs name the pod, container or
//! image: what the request names on the way in, what a create made on the way out.
//!
//! Invariant: only ids and image references go on the span, never a config, env or credentials.

use cri_api::v1::*;
use tracing::Span;

/// The span fields `rpc_span` declares empty for these to fill.
pub const POD: &str = "pod";
pub const CONTAINER: &str = "container";
pub const IMAGE: &str = "image";

/// Records `value` as the current RPC's `field` (nothing when empty).
pub fn record(field: &'static str, value: &str) {
    if !value.is_empty() {
        Span::current().record(field, tracing::field::display(value));
    }
}

/// A request that names objects.
pub trait Ids {
    fn record_ids(&self);
}

/// The request's message, its ids recorded first: what the handlers use instead of `into_inner`.
pub fn inner<T: Ids>(req: tonic::Request<T>) -> T {
    let r = req.into_inner();
    r.record_ids();
    r
}

macro_rules! ids {
    ($($t:ty => $($field:ident as $label:ident),+;)*) => {
        $(impl Ids for $t {
            fn record_ids(&self) {
                $(record($label, &self.$field);)+
            }
        })*
    };
}

ids! {
    StopPodSandboxRequest => pod_sandbox_id as POD;
    RemovePodSandboxRequest => pod_sandbox_id as POD;
    PodSandboxStatusRequest => pod_sandbox_id as POD;
    PodSandboxStatsRequest => pod_sandbox_id as POD;
    PortForwardRequest => pod_sandbox_id as POD;
    CreateContainerRequest => pod_sandbox_id as POD;
    StartContainerRequest => container_id as CONTAINER;
    StopContainerRequest => container_id as CONTAINER;
    RemoveContainerRequest => container_id as CONTAINER;
    ContainerStatusRequest => container_id as CONTAINER;
    UpdateContainerResourcesRequest => container_id as CONTAINER;
    ReopenContainerLogRequest => container_id as CONTAINER;
    ExecSyncRequest => container_id as CONTAINER;
    ExecRequest => container_id as CONTAINER;
    AttachRequest => container_id as CONTAINER;
    ContainerStatsRequest => container_id as CONTAINER;
    CheckpointContainerRequest => container_id as CONTAINER;
}

/// RunPodSandbox names no id yet: its pod's `namespace/name` stands in until the id exists.
impl Ids for RunPodSandboxRequest {
    fn record_ids(&self) {
        if let Some(m) = self.config.as_ref().and_then(|c| c.metadata.as_ref()) {
            record(POD, &format!("{}/{}", m.namespace, m.name));
        }
    }
}

macro_rules! image_ids {
    ($($t:ty),*) => {
        $(impl Ids for $t {
            fn record_ids(&self) {
                if let Some(i) = &self.image {
                    record(IMAGE, &i.image);
                }
            }
        })*
    };
}

image_ids!(PullImageRequest, ImageStatusRequest, RemoveImageRequest);
