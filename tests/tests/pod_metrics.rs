//! The metric RPCs and the pod stats against a real daemon with `included_pod_metrics =
//! ["all"]`: every metric returned has a descriptor whose label keys line up with its values;
//! the pod's network counters (stats and metrics) match what netlink (`ip -s -j link` inside the
//! pod's pinned namespace) shows after traffic the test sends to the pod's own address; the
//! process count is the container's processes; swap is reported exactly when the host accounts
//! it; a host-network pod gets no network counters.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crius_tests::containers::World;
use crius_tests::pods;
use k8s_cri::v1::*;

/// `(rx_bytes, tx_bytes)` of `eth0` in the namespace pinned at `netns`, read over netlink by
/// iproute2 (not the daemon's `/proc/net/dev` path).
fn netlink_counters(netns: &Path) -> (u64, u64) {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-s", "-j", "link", "show", "dev", "eth0"])
        .output()
        .expect("run nsenter ip");
    assert!(
        out.status.success(),
        "ip link: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j gives JSON");
    let s = &v[0]["stats64"];
    (
        s["rx"]["bytes"].as_u64().expect("rx bytes"),
        s["tx"]["bytes"].as_u64().expect("tx bytes"),
    )
}

/// The pod's eth0 counters as PodSandboxStats reports them.
async fn stats_counters(w: &mut World, pod: &str) -> (u64, u64) {
    let stats =
        w.d.runtime
            .pod_sandbox_stats(PodSandboxStatsRequest {
                pod_sandbox_id: pod.into(),
            })
            .await
            .expect("PodSandboxStats")
            .into_inner()
            .stats
            .expect("stats");
    let net = stats.linux.expect("linux stats").network.expect("network stats");
    let eth0 = net.default_interface.expect("eth0 is the default interface");
    assert_eq!(eth0.name, "eth0");
    assert!(net.interfaces.iter().any(|i| i.name == "eth0") && net.interfaces.iter().all(|i| i.name != "lo"));
    (eth0.rx_bytes.expect("rx").value, eth0.tx_bytes.expect("tx").value)
}

async fn descriptors(w: &mut World) -> HashMap<String, MetricDescriptor> {
    w.d.runtime
        .list_metric_descriptors(ListMetricDescriptorsRequest {})
        .await
        .expect("ListMetricDescriptors")
        .into_inner()
        .descriptors
        .into_iter()
        .map(|d| (d.name.clone(), d))
        .collect()
}

async fn pod_metrics(w: &mut World) -> Vec<PodSandboxMetrics> {
    w.d.runtime
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .expect("ListPodSandboxMetrics")
        .into_inner()
        .pod_metrics
}

/// The value of `name` whose last label is `last_label` (any, when None).
fn value(metrics: &[Metric], name: &str, last_label: Option<&str>) -> Option<u64> {
    metrics
        .iter()
        .find(|m| {
            m.name == name && last_label.is_none_or(|l| m.label_values.last().map(String::as_str) == Some(l))
        })
        .and_then(|m| m.value.as_ref().map(|v| v.value))
}

/// Processes in the cgroup directory `dir` and below it, counted by the test itself.
fn procs_below(dir: &Path) -> u64 {
    let mut n = std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().count() as u64)
        .unwrap_or(0);
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            n += procs_below(&e.path());
        }
    }
    n
}

#[tokio::test]
async fn metrics_and_pod_stats_report_what_the_kernel_shows() {
    let mut w = World::with_config("[metrics]\nincluded_pod_metrics = [\"all\"]\n")
        .await
        .unwrap();
    let pod = w.pod.clone();
    let ctr = w
        .run("app", &["sh", "-c", "sleep 3600 & sleep 3600 & wait"])
        .await;
    let netns = pods::ns_path(&w.d.state, &pod, "net");
    let ip = w.d.pod_ip(&pod).await;
    // sh and its two sleeps.
    let mut procs = 0;
    for _ in 0..50 {
        procs = value(
            &metrics_of(&pod_metrics(&mut w).await, &pod, &ctr),
            "container_processes",
            None,
        )
        .unwrap_or(0);
        if procs == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(procs, 3, "sh and two sleeps");

    // Descriptors cover every metric, with label keys and values lined up.
    let descs = descriptors(&mut w).await;
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_rss",
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
        "container_fs_usage_bytes",
        "container_processes",
        "container_oom_events_total",
    ] {
        assert!(descs.contains_key(name), "{name} is described");
    }
    let before_traffic = stats_counters(&mut w, &pod).await;

    // Traffic into the pod: datagrams to a closed port on its own address (each arrives on
    // eth0 and is answered with an ICMP port-unreachable, so both directions move).
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    for _ in 0..20 {
        sock.send_to(&[0x5a; 1000], (ip.as_str(), 9)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let low = netlink_counters(&netns);
    let from_stats = stats_counters(&mut w, &pod).await;
    let all = pod_metrics(&mut w).await;
    let high = netlink_counters(&netns);
    assert!(
        from_stats.0 >= before_traffic.0 + 20 * 1000,
        "{before_traffic:?} -> {from_stats:?}"
    );
    assert!(
        from_stats.1 > before_traffic.1,
        "port-unreachable replies: {before_traffic:?} -> {from_stats:?}"
    );
    assert!(
        low.0 <= from_stats.0 && from_stats.0 <= high.0,
        "rx {low:?} {from_stats:?} {high:?}"
    );
    assert!(
        low.1 <= from_stats.1 && from_stats.1 <= high.1,
        "tx {low:?} {from_stats:?} {high:?}"
    );

    let entry = all
        .iter()
        .find(|p| p.pod_sandbox_id == pod)
        .expect("the pod is listed");
    let rx = value(
        &entry.metrics,
        "container_network_receive_bytes_total",
        Some("eth0"),
    )
    .expect("rx metric");
    let tx = value(
        &entry.metrics,
        "container_network_transmit_bytes_total",
        Some("eth0"),
    )
    .expect("tx metric");
    assert!(
        low.0 <= rx && rx <= high.0,
        "rx metric {rx} within {low:?}..{high:?}"
    );
    assert!(
        low.1 <= tx && tx <= high.1,
        "tx metric {tx} within {low:?}..{high:?}"
    );
    let mut seen = std::collections::HashSet::new();
    for m in all.iter().flat_map(|p| {
        p.metrics
            .iter()
            .chain(p.container_metrics.iter().flat_map(|c| &c.metrics))
    }) {
        let d = descs
            .get(&m.name)
            .unwrap_or_else(|| panic!("{} has no descriptor", m.name));
        assert_eq!(
            d.label_keys.len(),
            m.label_values.len(),
            "{}: {:?} vs {:?}",
            m.name,
            d.label_keys,
            m.label_values
        );
        assert!(m.timestamp > 0, "{}", m.name);
        seen.insert(m.name.clone());
    }
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_rss",
        "container_fs_usage_bytes",
        "container_oom_events_total",
    ] {
        assert!(seen.contains(name), "{name} is reported");
    }
    let c = metrics_of(&all, &pod, &ctr);
    let cpu = c
        .iter()
        .find(|m| m.name == "container_cpu_usage_seconds_total")
        .unwrap();
    let keys = &descs["container_cpu_usage_seconds_total"].label_keys;
    let label = |k: &str| cpu.label_values[keys.iter().position(|x| x == k).unwrap()].clone();
    assert_eq!(
        (label("container"), label("id"), label("cpu")),
        ("app".into(), ctr.clone(), "total".into())
    );
    assert_eq!(label("image"), w.image);

    // Pod stats: the pod cgroup's processes, as the test counts them.
    let stats =
        w.d.runtime
            .pod_sandbox_stats(PodSandboxStatsRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
    let linux = stats.linux.unwrap();
    let counted = pods::pod_cgroup_dirs(&pod)
        .into_iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/pids"))
        .map(|d| procs_below(&d))
        .expect("the pod has a pids cgroup");
    let reported = linux
        .process
        .expect("process stats")
        .process_count
        .expect("count")
        .value;
    assert_eq!(reported, counted);
    assert!(reported >= 3);

    // Swap: reported exactly when the host accounts it (v1 memsw, or v2 memory.swap.*).
    let swap_accounted = Path::new("/sys/fs/cgroup/memory/memory.memsw.usage_in_bytes").exists()
        || Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let cs =
        w.d.runtime
            .container_stats(ContainerStatsRequest {
                container_id: ctr.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
    assert_eq!(
        cs.swap
            .as_ref()
            .and_then(|s| s.swap_usage_bytes.as_ref())
            .is_some(),
        swap_accounted,
        "{:?}",
        cs.swap
    );

    // A host-network pod: no namespace of its own, so no network counters.
    let mut cfg = pods::pod_config("host-net", &format!("uid-hostnet-{}", w.net.n));
    pods::namespace_options(&mut cfg).network = NamespaceMode::Node as i32;
    let host_pod = w.d.run_pod(cfg).await.unwrap();
    let hs =
        w.d.runtime
            .pod_sandbox_stats(PodSandboxStatsRequest {
                pod_sandbox_id: host_pod.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
    assert!(hs.linux.unwrap().network.is_none());
    let hm = pod_metrics(&mut w).await;
    let host_entry = hm
        .iter()
        .find(|p| p.pod_sandbox_id == host_pod)
        .expect("host pod listed");
    assert!(
        host_entry
            .metrics
            .iter()
            .all(|m| !m.name.starts_with("container_network_"))
    );

    w.teardown().await.unwrap();
}

fn metrics_of(all: &[PodSandboxMetrics], pod: &str, ctr: &str) -> Vec<Metric> {
    all.iter()
        .find(|p| p.pod_sandbox_id == pod)
        .and_then(|p| p.container_metrics.iter().find(|c| c.container_id == ctr))
        .map(|c| c.metrics.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn no_groups_means_no_metrics() {
    let mut w = World::new().await.unwrap();
    w.run("idle", &["sleep", "3600"]).await;
    assert!(descriptors(&mut w).await.is_empty());
    assert!(pod_metrics(&mut w).await.is_empty());
    w.teardown().await.unwrap();
}
