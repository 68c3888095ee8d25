//! The Prometheus endpoint of a real daemon, scraped over HTTP while pods run: the series move
//! with what happens — a pull raises the pull counter and the bytes, containers show up by
//! state with their shims, an OOM kill and a lost shim are counted, each RPC is counted under
//! its method and gRPC code, and a restart reports what recovery found.

use crius_tests::containers::World;
use crius_tests::images::{self, ImageSpec};
use crius_tests::metrics::{self, scrape};
use crius_tests::util;
use k8s_cri::v1::*;

fn rpcs(method: &str, code: &str) -> String {
    format!(r#"crius_grpc_requests_total{{method="{method}",code="{code}"}}"#)
}

fn containers(state: &str) -> String {
    format!(r#"crius_containers{{state="{state}"}}"#)
}

const PULLED: &str = r#"crius_image_pulls_total{result="success"}"#;
const PULL_FAILED: &str = r#"crius_image_pulls_total{result="failure"}"#;
const BYTES: &str = "crius_image_pull_bytes_total";

#[tokio::test]
async fn scrapes_follow_pulls_containers_oom_kills_lost_shims_and_rpcs() {
    let mut w = World::with_config(metrics::CONFIG).await.unwrap();
    let addr = metrics::address(&w.d).unwrap();
    assert!(addr.ip().is_loopback(), "{addr}");
    let (status, _) = metrics::get(addr, "/").unwrap();
    assert_eq!(status, 404);

    // The world pulled busybox and ran its pod.
    let s = scrape(&w.d);
    assert_eq!(s.value(PULLED), 1.0);
    assert_eq!(s.value(&rpcs("PullImage", "OK")), 1.0);
    let bytes = s.value(BYTES);
    assert!(bytes > 0.0, "busybox was downloaded");
    assert_eq!(s.value(r#"crius_pods{state="ready"}"#), 1.0);
    assert_eq!(s.value(r#"crius_pods{state="notready"}"#), 0.0);
    assert_eq!(s.value(&containers("running")), 0.0);
    assert_eq!(s.value("crius_container_oom_kills_total"), 0.0);
    assert!(s.value("crius_recovery_duration_seconds") >= 0.0);
    assert!(s.value("crius_process_resident_memory_bytes") > 0.0);
    assert!(s.value("crius_process_open_fds") > 0.0);
    assert!(s.value("crius_process_threads") > 0.0);

    // A pull raises the pull counter and the bytes; a failed one the failure counter.
    let big = images::push(&w.reg, "test/big", "1", &ImageSpec::busybox_with_random_mb(2))
        .await
        .unwrap();
    w.d.pull(&big.reference).await.unwrap();
    let absent = big.reference.replace("test/big:1", "test/absent:1");
    let e = w.d.pull(&absent).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let s = scrape(&w.d);
    assert_eq!(s.value(PULLED), 2.0);
    assert_eq!(s.value(PULL_FAILED), 1.0);
    assert_eq!(
        s.value(r#"crius_image_pull_duration_seconds_count{result="success"}"#),
        2.0
    );
    assert!(
        s.value(BYTES) >= bytes + (2 << 20) as f64,
        "2 MiB of random layer: {} then {}",
        bytes,
        s.value(BYTES)
    );
    assert_eq!(s.value(&rpcs("PullImage", "NOT_FOUND")), 1.0, "{e:?}");

    // Containers by state, their shims, and the RPCs that made them.
    let sleeper = w.run("sleeper", &["sleep", "3600"]).await;
    let missing = w.status("feedface").await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let s = scrape(&w.d);
    assert_eq!(s.value(&containers("running")), 1.0);
    assert_eq!(s.value(&containers("created")), 0.0);
    assert_eq!(s.value("crius_shims_alive"), 1.0);
    assert_eq!(s.value(&rpcs("CreateContainer", "OK")), 1.0);
    assert_eq!(s.value(&rpcs("StartContainer", "OK")), 1.0);
    assert_eq!(s.value(&rpcs("ContainerStatus", "NOT_FOUND")), 1.0);
    assert_eq!(
        s.value(r#"crius_grpc_request_duration_seconds_count{method="StartContainer"}"#),
        1.0
    );

    // An OOM kill.
    let mut hog = w.config("hog", &["sh", "-c", "head -c 200000000 /dev/zero | tail"]);
    hog.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 16 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let hog = w.create(hog).await.unwrap();
    w.start(&hog).await.unwrap();
    assert_eq!(w.wait_exited(&hog).await.unwrap().reason, "OOMKilled");
    let s = scrape(&w.d);
    assert_eq!(s.value("crius_container_oom_kills_total"), 1.0);
    assert_eq!(s.value(&containers("exited")), 1.0);
    assert_eq!(s.value(&containers("running")), 1.0);
    // An exited container's shim stays until the container is removed.
    assert_eq!(s.value("crius_shims_alive"), 2.0);

    // A restart: recovery reports what it found; the counters start again.
    w.d.restart().await.unwrap();
    let s = scrape(&w.d);
    let recovered = |result: &str| {
        s.value(&format!(
            r#"crius_recovery_objects{{kind="container",result="{result}"}}"#
        ))
    };
    assert_eq!(recovered("found"), 2.0);
    assert_eq!(recovered("reconnected"), 1.0, "the sleeper; the hog had exited");
    assert_eq!(
        s.value(r#"crius_recovery_objects{kind="pod",result="found"}"#),
        1.0
    );
    assert_eq!(s.or_zero(PULLED), 0.0);
    assert_eq!(s.value(&containers("running")), 1.0);

    // A shim that dies: stopping its container records the end without it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(util::shim_of(&sleeper)),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    w.stop(&sleeper, 5).await.unwrap();
    let s = scrape(&w.d);
    assert_eq!(s.value("crius_container_shims_lost_total"), 1.0);
    assert_eq!(s.value(&containers("exited")), 2.0);
    assert_eq!(s.value("crius_shims_alive"), 1.0, "the hog's");
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn a_taken_metrics_address_stops_start_up_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let e = crius_tests::Daemon::start_with(crius_tests::DaemonOptions {
        extra_config: format!("[metrics]\naddress = \"{addr}\"\n"),
        ..Default::default()
    })
    .await
    .err()
    .expect("the daemon must not start");
    let e = format!("{e:#}");
    assert!(e.contains(&format!("cannot listen for metrics on {addr}")), "{e}");
}
