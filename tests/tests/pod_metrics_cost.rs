//! The daemon's CPU for one ListPodSandboxMetrics over many pods (the figure in
//! docs/PERFORMANCE.md). Ignored by default: it starts `CRIUS_METRICS_PODS` pods (default 110),
//! each with one running busybox container, which takes a minute. Run it alone:
//!
//! `CRIUS_BIN_DIR=target/release/dist cargo test --release -p crius-tests --test pod_metrics_cost -- --ignored --nocapture`
//!
//! CPU is the daemon's utime+stime from `/proc/<pid>/stat` (which keeps the time of threads that
//! already exited, such as the namespace reader) over `ROUNDS` calls, divided by `ROUNDS`, so the
//! clock-tick resolution (10 ms) is spread over the rounds.

use std::time::Instant;

use crius_tests::containers::World;
use crius_tests::{pods, util};
use k8s_cri::v1::*;

const ROUNDS: u32 = 20;

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    util::cpu_ticks(pid as i32).expect("the daemon's utime and stime")
}

#[tokio::test]
#[ignore = "starts 110 pods; run explicitly for docs/PERFORMANCE.md"]
async fn list_pod_sandbox_metrics_cpu_for_many_pods() {
    let n: usize = std::env::var("CRIUS_METRICS_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(110);
    let mut w = World::with_config("[metrics]\nincluded_pod_metrics = [\"all\"]\n")
        .await
        .unwrap();
    w.run("app", &["sleep", "3600"]).await;
    for i in 1..n {
        let mut cfg = pods::pod_config(&format!("m{i}"), &format!("uid-m{i}-{}", w.net.n));
        cfg.log_directory = w.log_dir.to_string_lossy().into_owned();
        let pod = w.d.run_pod(cfg.clone()).await.expect("RunPodSandbox");
        let req = CreateContainerRequest {
            pod_sandbox_id: pod,
            config: Some(w.config("app", &["sleep", "3600"])),
            sandbox_config: Some(cfg),
        };
        let id =
            w.d.runtime
                .create_container(req)
                .await
                .expect("create")
                .into_inner()
                .container_id;
        w.start(&id).await.expect("start");
    }
    let call = |mut rt: RuntimeServiceClient| async move {
        let got = rt
            .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
            .await
            .expect("ListPodSandboxMetrics")
            .into_inner()
            .pod_metrics;
        (rt, got)
    };
    let (rt, first) = call(w.d.runtime.clone()).await;
    assert_eq!(first.len(), n);
    for p in &first {
        assert_eq!(
            p.container_metrics.len(),
            1,
            "pod {} has its container",
            p.pod_sandbox_id
        );
        assert!(
            p.metrics
                .iter()
                .any(|m| m.name == "container_network_receive_bytes_total")
        );
    }
    let metrics: usize = first
        .iter()
        .map(|p| p.metrics.len() + p.container_metrics.iter().map(|c| c.metrics.len()).sum::<usize>())
        .sum();
    let pid = w.d.pid().expect("daemon runs");
    let hz: f64 = String::from_utf8(
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    let mut rt = rt;
    for _ in 0..ROUNDS {
        rt = call(rt).await.0;
    }
    let (wall, cpu) = (t0.elapsed(), cpu_ticks(pid) - c0);
    let cpu_ms = cpu as f64 / hz * 1000.0 / ROUNDS as f64;
    println!(
        "ListPodSandboxMetrics, {n} pods x 1 container, all groups, {metrics} metrics: \
         daemon CPU {cpu_ms:.1} ms per call, wall {:.1} ms per call ({ROUNDS} calls)",
        wall.as_secs_f64() * 1000.0 / ROUNDS as f64
    );
    assert!(cpu > 0, "the calls cost the daemon some CPU");
    w.teardown().await.unwrap();
}

type RuntimeServiceClient =
    k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>;
