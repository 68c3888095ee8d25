//! Container resources and stats through the real daemon: stats of a busy container are
//! non-zero, UpdateContainerResources shows up in the cgroup and in ContainerStatus, a container
//! over its memory limit ends OOMKilled, and two containers of one pod talk over localhost.

use std::time::Duration;

use crius_tests::containers::World;
use k8s_cri::v1::*;

/// The container's memory limit as its cgroup holds it (cgroup v1 or v2), found through the
/// cgroup path ContainerStatus reports.
async fn memory_limit(w: &mut World, id: &str) -> String {
    let path = w.cgroup_path(id).await;
    let cgroup = path.trim_start_matches('/');
    let root = std::path::Path::new("/sys/fs/cgroup");
    let file = if root.join("cgroup.controllers").exists() {
        root.join(cgroup).join("memory.max")
    } else {
        root.join("memory").join(cgroup).join("memory.limit_in_bytes")
    };
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .to_string()
}

#[tokio::test]
async fn stats_and_resource_updates() {
    let mut w = World::new().await.unwrap();
    let mut cfg = w.config("busy", &["sh", "-c", "while true; do :; done"]);
    cfg.labels.insert("role".into(), "busy".into());
    cfg.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_shares: 256,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = w.create(cfg).await.unwrap();
    w.start(&id).await.unwrap();
    assert_eq!(memory_limit(&mut w, &id).await, (64u64 << 20).to_string());

    let mut cpu = 0;
    for _ in 0..100 {
        let s =
            w.d.runtime
                .container_stats(ContainerStatsRequest {
                    container_id: id.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .stats
                .unwrap();
        let c = s.cpu.unwrap();
        let m = s.memory.unwrap();
        assert!(c.timestamp > 0 && m.timestamp > 0);
        assert!(m.working_set_bytes.unwrap().value > 0);
        assert!(s.writable_layer.unwrap().used_bytes.is_some());
        cpu = c.usage_core_nano_seconds.unwrap().value;
        if cpu > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cpu > 0, "a busy loop uses cpu");

    let listed =
        w.d.runtime
            .list_container_stats(ListContainerStatsRequest {
                filter: Some(ContainerStatsFilter {
                    label_selector: [("role".to_string(), "busy".to_string())].into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .stats;
    assert_eq!(listed.len(), 1);
    let pod_stats =
        w.d.runtime
            .pod_sandbox_stats(PodSandboxStatsRequest {
                pod_sandbox_id: w.pod.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
    let linux = pod_stats.linux.unwrap();
    assert_eq!(linux.containers.len(), 1);
    assert!(linux.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);

    w.d.runtime
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: 96 << 20,
                cpu_quota: 50_000,
                cpu_period: 100_000,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(memory_limit(&mut w, &id).await, (96u64 << 20).to_string());
    let r = w.state(&id).await.resources.unwrap().linux.unwrap();
    assert_eq!(
        (r.memory_limit_in_bytes, r.cpu_quota, r.cpu_shares),
        (96 << 20, 50_000, 256)
    );
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn over_the_memory_limit_is_oom_killed() {
    let mut w = World::new().await.unwrap();
    let mut cfg = w.config("hog", &["sh", "-c", "head -c 200000000 /dev/zero | tail"]);
    cfg.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 16 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = w.create(cfg).await.unwrap();
    w.start(&id).await.unwrap();
    let s = w.wait_exited(&id).await.unwrap();
    assert_eq!(s.reason, "OOMKilled", "{s:?}");
    assert_eq!(s.exit_code, 137);
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn two_containers_of_a_pod_share_localhost() {
    let mut w = World::new().await.unwrap();
    let server = w
        .run(
            "server",
            &[
                "sh",
                "-c",
                "mkdir -p /www && echo pong > /www/ping && exec httpd -f -p 127.0.0.1:8080 -h /www",
            ],
        )
        .await;
    let client = w.run("client", &["sleep", "1000"]).await;
    let mut got = Vec::new();
    for _ in 0..100 {
        let r = w
            .exec(
                &client,
                &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/ping"],
                10,
            )
            .await
            .unwrap();
        if r.exit_code == 0 {
            got = r.stdout;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got, b"pong\n");
    assert_eq!(
        w.state(&server).await.state,
        ContainerState::ContainerRunning as i32
    );
    w.teardown().await.unwrap();
}
