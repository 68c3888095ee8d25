//! The daemon's Prometheus metrics: the registry, the series fed as events happen (RPCs by
//! method and code, image pulls), the collectors computed at scrape time (containers and pods
//! by state, shims, OOM kills, lost shims, start-up recovery: `node.rs`; the daemon's own
//! process: `process.rs`) and the `/metrics` endpoint serving them (`http.rs`).
//!
//! Every name starts with `crius_`; the README lists them with their labels.
//! Invariants: label values come from closed sets (CRI method names, gRPC code names, object
//! states, fixed result words), never from ids, names or client input, so the number of series
//! is bounded whatever the node runs. [`Metrics::encode`] reads the store and `/proc`: it runs
//! on the blocking pool only.

mod http;
pub mod node;
mod process;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use http::{MetricsError, MetricsServer};
pub use node::{NodeSource, Recovery};

/// Every method of the CRI v1 `RuntimeService` and `ImageService`; an RPC to any other path is
/// counted as [`UNKNOWN_METHOD`], so a client cannot mint label values.
pub const CRI_METHODS: [&str; 34] = [
    "Version",
    "RunPodSandbox",
    "StopPodSandbox",
    "RemovePodSandbox",
    "PodSandboxStatus",
    "ListPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "ListContainers",
    "ContainerStatus",
    "UpdateContainerResources",
    "ReopenContainerLog",
    "ExecSync",
    "Exec",
    "Attach",
    "PortForward",
    "ContainerStats",
    "ListContainerStats",
    "PodSandboxStats",
    "ListPodSandboxStats",
    "UpdateRuntimeConfig",
    "Status",
    "CheckpointContainer",
    "GetContainerEvents",
    "ListMetricDescriptors",
    "ListPodSandboxMetrics",
    "RuntimeConfig",
    "ListImages",
    "ImageStatus",
    "PullImage",
    "RemoveImage",
    "ImageFsInfo",
];
/// The method label of a request to a path that is no CRI method.
pub const UNKNOWN_METHOD: &str = "unknown";

/// Upper bounds (seconds) of the RPC latency buckets: a cached status read to a slow pull.
const RPC_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];
/// Upper bounds (seconds) of the image pull duration buckets.
const PULL_BUCKETS: [f64; 11] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0, 600.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Builds a histogram with fixed buckets for each new label set of a family.
#[derive(Clone, Copy)]
struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// The metrics of one daemon. Cheap to update from any thread (atomics and short locks).
pub struct Metrics {
    registry: Registry,
    rpcs: Family<RpcLabels, Counter>,
    rpc_seconds: Family<MethodLabel, Histogram, Buckets>,
    pulls: Family<ResultLabel, Counter>,
    pull_seconds: Family<ResultLabel, Histogram, Buckets>,
    recovery: Arc<OnceLock<Recovery>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The registry with every series, reading the node's state through `node` at scrape time.
    pub fn new(node: Arc<dyn NodeSource>) -> Arc<Metrics> {
        let mut registry = Registry::default();
        let rpcs = Family::<RpcLabels, Counter>::default();
        registry.register(
            "crius_grpc_requests",
            "CRI RPCs finished, by method and gRPC code",
            rpcs.clone(),
        );
        let rpc_seconds = Family::new_with_constructor(Buckets(&RPC_BUCKETS));
        registry.register(
            "crius_grpc_request_duration_seconds",
            "Time from receiving a CRI RPC to its response head, by method",
            rpc_seconds.clone(),
        );
        let pulls = Family::<ResultLabel, Counter>::default();
        registry.register(
            "crius_image_pulls",
            "PullImage calls finished, by result (success, failure)",
            pulls.clone(),
        );
        let pull_seconds = Family::new_with_constructor(Buckets(&PULL_BUCKETS));
        registry.register(
            "crius_image_pull_duration_seconds",
            "Time an image pull took, by result (success, failure)",
            pull_seconds.clone(),
        );
        let recovery = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(node::NodeCollector::new(node, recovery.clone())));
        registry.register_collector(Box::new(process::ProcessCollector));
        Arc::new(Metrics {
            registry,
            rpcs,
            rpc_seconds,
            pulls,
            pull_seconds,
            recovery,
        })
    }

    /// One finished RPC. `path` is the gRPC path (`/runtime.v1.RuntimeService/StartContainer`).
    pub fn observe_rpc(&self, path: &str, code: tonic::Code, elapsed: Duration) {
        let method = method_label(path);
        self.rpcs
            .get_or_create(&RpcLabels {
                method,
                code: code_label(code),
            })
            .inc();
        self.rpc_seconds
            .get_or_create(&MethodLabel { method })
            .observe(elapsed.as_secs_f64());
    }

    /// One finished PullImage.
    pub fn observe_pull(&self, ok: bool, elapsed: Duration) {
        let labels = ResultLabel {
            result: if ok { "success" } else { "failure" },
        };
        self.pulls.get_or_create(&labels).inc();
        self.pull_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// What start-up recovery did; set once, when it has finished (later calls are ignored).
    pub fn set_recovery(&self, r: Recovery) {
        let _ = self.recovery.set(r);
    }

    /// Every series in the Prometheus text exposition format (0.0.4). Blocking: reads the
    /// store and `/proc`.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 << 10);
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry) {
            // Only a collector can fail, and each logs its own read errors instead.
            tracing::warn!(error = %e, "encoding the metrics failed");
        }
        out
    }
}

/// The CRI method a gRPC path names, from the closed set; [`UNKNOWN_METHOD`] otherwise.
pub fn method_label(path: &str) -> &'static str {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or(("", ""));
    if !matches!(service, "runtime.v1.RuntimeService" | "runtime.v1.ImageService") {
        return UNKNOWN_METHOD;
    }
    CRI_METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or(UNKNOWN_METHOD)
}

/// The gRPC code's canonical name (`OK`, `NOT_FOUND`, ...), as gRPC's own metrics spell it.
pub fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
pub(crate) mod tests;
