//! The text the registry and its collectors produce, over a fake node.

use std::sync::Arc;
use std::time::Duration;

use super::node::{Census, NodeSource, Recovery};
use super::{Metrics, UNKNOWN_METHOD, method_label};
use crate::container::ContainerCensus;

struct FakeNode(Census);

impl NodeSource for FakeNode {
    fn census(&self) -> Census {
        self.0.clone()
    }
}

pub(crate) fn metrics_with(census: Census) -> Arc<Metrics> {
    Metrics::new(Arc::new(FakeNode(census)))
}

/// The value of the series written exactly as `series` (name and labels), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn method_labels_come_from_the_cri_methods_only() {
    assert_eq!(
        method_label("/runtime.v1.RuntimeService/StartContainer"),
        "StartContainer"
    );
    assert_eq!(method_label("/runtime.v1.ImageService/PullImage"), "PullImage");
    for path in [
        "/runtime.v1.RuntimeService/NoSuchMethod",
        "/runtime.v1.ImageService/StartContainer/x",
        "/runtime.v1alpha2.RuntimeService/Version",
        "/grpc.health.v1.Health/Check",
        "",
        "/",
    ] {
        assert_eq!(method_label(path), UNKNOWN_METHOD, "{path}");
    }
    assert_eq!(super::code_label(tonic::Code::NotFound), "NOT_FOUND");
}

#[test]
fn events_and_the_node_census_are_encoded_with_bounded_labels() {
    let m = metrics_with(Census {
        containers: Some(ContainerCensus {
            created: 1,
            running: 2,
            exited: 3,
            unknown: 0,
            shims_alive: 6,
        }),
        pods: Some((4, 1)),
        oom_kills: 1,
        shims_lost: 2,
        pull_bytes: 1234,
    });
    let start = "/runtime.v1.RuntimeService/StartContainer";
    m.observe_rpc(start, tonic::Code::Ok, Duration::from_millis(3));
    m.observe_rpc(start, tonic::Code::Ok, Duration::from_millis(300));
    m.observe_rpc(start, tonic::Code::NotFound, Duration::from_micros(100));
    m.observe_rpc("/evil/f00d", tonic::Code::Unimplemented, Duration::ZERO);
    m.observe_pull(true, Duration::from_secs(2));
    m.observe_pull(false, Duration::from_millis(50));
    let text = m.encode();

    let v = |series: &str| value(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert_eq!(
        v(r#"crius_grpc_requests_total{method="StartContainer",code="OK"}"#),
        2.0
    );
    assert_eq!(
        v(r#"crius_grpc_requests_total{method="StartContainer",code="NOT_FOUND"}"#),
        1.0
    );
    assert_eq!(
        v(r#"crius_grpc_requests_total{method="unknown",code="UNIMPLEMENTED"}"#),
        1.0
    );
    assert_eq!(
        v(r#"crius_grpc_request_duration_seconds_count{method="StartContainer"}"#),
        3.0
    );
    assert_eq!(
        v(r#"crius_grpc_request_duration_seconds_bucket{method="StartContainer",le="0.005"}"#),
        2.0
    );
    assert_eq!(v(r#"crius_image_pulls_total{result="success"}"#), 1.0);
    assert_eq!(v(r#"crius_image_pulls_total{result="failure"}"#), 1.0);
    assert_eq!(
        v(r#"crius_image_pull_duration_seconds_sum{result="success"}"#),
        2.0
    );
    assert_eq!(v(r#"crius_containers{state="running"}"#), 2.0);
    assert_eq!(v(r#"crius_containers{state="unknown"}"#), 0.0);
    assert_eq!(v("crius_shims_alive"), 6.0);
    assert_eq!(v(r#"crius_pods{state="ready"}"#), 4.0);
    assert_eq!(v(r#"crius_pods{state="notready"}"#), 1.0);
    assert_eq!(v("crius_container_oom_kills_total"), 1.0);
    assert_eq!(v("crius_container_shims_lost_total"), 2.0);
    assert_eq!(v("crius_image_pull_bytes_total"), 1234.0);
    assert!(v("crius_process_resident_memory_bytes") > 0.0);
    assert!(v("crius_process_open_fds") >= 3.0);
    assert!(v("crius_process_threads") >= 1.0);
    assert!(v("crius_process_cpu_seconds_total") >= 0.0);
    // Nothing about recovery until it has finished.
    assert!(!text.contains("crius_recovery"), "{text}");

    let mut types = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            assert!(
                types.insert(t.split(' ').next().unwrap().to_string()),
                "{line} twice"
            );
        } else if !line.starts_with("# HELP ") {
            assert!(line.starts_with("crius_"), "{line}");
        }
    }
}

#[test]
fn recovery_is_reported_once_finished_and_unreadable_sources_are_left_out() {
    let m = metrics_with(Census::default());
    let mut r = Recovery {
        duration: Duration::from_millis(1500),
        ..Default::default()
    };
    r.containers.reconnected = 3;
    r.containers.orphans_removed = 2;
    r.pods.marked_not_ready = 1;
    r.pods.networks_deleted = 4;
    m.set_recovery(r);
    m.set_recovery(Recovery::default());
    let text = m.encode();
    let v = |series: &str| value(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert_eq!(v("crius_recovery_duration_seconds"), 1.5);
    assert_eq!(
        v(r#"crius_recovery_objects{kind="container",result="reconnected"}"#),
        3.0
    );
    assert_eq!(
        v(r#"crius_recovery_objects{kind="pod",result="marked_not_ready"}"#),
        1.0
    );
    assert_eq!(v(r#"crius_recovery_orphans_removed{kind="container"}"#), 2.0);
    assert_eq!(v(r#"crius_recovery_orphans_removed{kind="pod_network"}"#), 4.0);
    // The census could not read the records: no made-up zeros.
    assert!(!text.contains("crius_containers"), "{text}");
    assert!(!text.contains("crius_pods"), "{text}");
    assert_eq!(v("crius_container_oom_kills_total"), 0.0);
}

#[test]
fn process_stat_fields_are_counted_after_the_comm() {
    let line = "4242 (cri) us (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 \
                12345 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
    let s = super::process::parse_stat(line).unwrap();
    assert_eq!(s.ticks, 300);
    assert_eq!(s.threads, 7);
    assert_eq!(s.vsize_bytes, 104857600);
    assert_eq!(s.rss_pages, 2560);
    assert_eq!(super::process::parse_stat("4242 (cri) S 1"), None);
}
