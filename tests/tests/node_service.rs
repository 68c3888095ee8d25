//! crius as the systemd service of a node (`contrib/systemd/crius.service`): five running
//! containers survive `systemctl restart crius` and `systemctl stop crius` + `start`, keep their
//! processes, are listed again and keep logging; the daemon's unit holds only the daemon.
//!
//! Runs only where crius.service is installed and started (the test node guest sets
//! `CRIUS_NODE_SERVICE`: `make test-node NODE_SERVICE_TESTS=node_service`), hence `#[ignore]`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crius_tests::containers::read_log;
use crius_tests::daemon::lazy_channel;
use crius_tests::{Registry, images, pods, util};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

const SOCKET: &str = "/run/crius/crius.sock";

fn systemctl(args: &[&str]) {
    let out = Command::new("systemctl").args(args).output().expect("systemctl");
    assert!(
        out.status.success(),
        "systemctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main_pid() -> i32 {
    let out = Command::new("systemctl")
        .args(["show", "-p", "MainPID", "--value", "crius.service"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Waits until the daemon answers a CRI call after recovery (the gate answers UNAVAILABLE).
async fn serving(rt: &mut RuntimeServiceClient<Channel>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if rt.list_containers(ListContainersRequest::default()).await.is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "crius.service did not serve again within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn running(rt: &mut RuntimeServiceClient<Channel>, ids: &[String]) -> Vec<i32> {
    let mut pids = Vec::new();
    for id in ids {
        let r = rt
            .container_status(ContainerStatusRequest {
                container_id: id.clone(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status.unwrap().state,
            ContainerState::ContainerRunning as i32,
            "{id}"
        );
        let info: serde_json::Value = serde_json::from_str(&r.info["info"]).unwrap();
        pids.push(info["pid"].as_i64().unwrap() as i32);
    }
    pids
}

fn lines(log: &Path) -> usize {
    read_log(log).len()
}

#[tokio::test]
#[ignore = "needs crius running as crius.service: make test-node NODE_SERVICE_TESTS=node_service"]
async fn containers_survive_restart_and_stop_of_the_service() {
    assert!(
        std::env::var_os("CRIUS_NODE_SERVICE").is_some(),
        "CRIUS_NODE_SERVICE is not set: this test drives the installed crius.service"
    );
    let channel = lazy_channel(Path::new(SOCKET)).unwrap();
    let mut rt = RuntimeServiceClient::new(channel.clone());
    let mut im = ImageServiceClient::new(channel);
    serving(&mut rt).await;

    let reg = Registry::start().unwrap();
    let pushed = images::push(&reg, "test/busybox", "1", &images::ImageSpec::busybox())
        .await
        .unwrap();
    images::pull(&mut im, &pushed.reference).await.unwrap();

    let log_dir = tempfile::tempdir().unwrap();
    let mut pod_cfg = pods::pod_config("service", "uid-service");
    pod_cfg.log_directory = log_dir.path().to_string_lossy().into_owned();
    // Host network: the guest's CNI set-up is not what this test is about. PID mode POD: the
    // infra process must survive the restarts too.
    let ns = pods::namespace_options(&mut pod_cfg);
    ns.network = NamespaceMode::Node as i32;
    ns.pid = NamespaceMode::Pod as i32;
    let pod = rt
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;

    let mut ids = Vec::new();
    let mut logs: Vec<PathBuf> = Vec::new();
    for i in 0..5 {
        let name = format!("ticker{i}");
        let cfg = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.clone(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: pushed.reference.clone(),
                ..Default::default()
            }),
            command: [
                "sh",
                "-c",
                "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            log_path: format!("{name}.log"),
            ..Default::default()
        };
        let id = rt
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(cfg),
                sandbox_config: Some(pod_cfg.clone()),
            })
            .await
            .unwrap()
            .into_inner()
            .container_id;
        rt.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
        ids.push(id);
        logs.push(log_dir.path().join(format!("{name}.log")));
    }
    let pids = running(&mut rt, &ids).await;

    // The daemon's unit holds the daemon and nothing else: shims and containers live elsewhere.
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", main_pid())).unwrap();
    let unit_dir = PathBuf::from("/sys/fs/cgroup").join(own.trim().trim_start_matches("0::/"));
    let procs = std::fs::read_to_string(unit_dir.join("cgroup.procs")).unwrap();
    assert_eq!(
        procs.split_whitespace().collect::<Vec<_>>(),
        vec![main_pid().to_string()],
        "{} holds more than the daemon",
        unit_dir.display()
    );

    for (what, steps) in [
        ("restart", vec![vec!["restart", "crius.service"]]),
        (
            "stop + start",
            vec![vec!["stop", "crius.service"], vec!["start", "crius.service"]],
        ),
    ] {
        let before: Vec<usize> = logs.iter().map(|l| lines(l)).collect();
        for step in steps {
            systemctl(&step);
            if step[0] == "stop" {
                tokio::time::sleep(Duration::from_secs(1)).await;
                assert!(
                    pids.iter().all(|p| util::alive(*p)),
                    "a container died with `systemctl stop`"
                );
            }
        }
        serving(&mut rt).await;
        let listed = rt
            .list_containers(ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers;
        for id in &ids {
            assert!(listed.iter().any(|c| &c.id == id), "{id} is listed after {what}");
        }
        assert_eq!(
            running(&mut rt, &ids).await,
            pids,
            "the same processes after {what}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (log, n) in logs.iter().zip(before) {
            assert!(lines(log) > n, "{} keeps growing after {what}", log.display());
        }
    }

    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod })
        .await
        .unwrap();
    for p in pids {
        assert!(!util::alive(p), "container process {p} outlived its pod");
    }
}
