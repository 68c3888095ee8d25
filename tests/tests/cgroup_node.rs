//! Cgroups as a node has them, through the real daemon: on cgroup v1 and v2, with the cgroupfs
//! and (where systemd is PID 1) the systemd driver (`CRIUS_TEST_CGROUP_MANAGER` picks it; the
//! test node runs this file once per driver). A container of a pod that shares its PID
//! namespace runs; its limits are in the kernel's files, seen from inside through its own cgroup
//! namespace (v2); updates reach the files; nothing of the pod's cgroups is left after removal.

use std::path::{Path, PathBuf};

use crius_tests::containers::World;
use crius_tests::pods;
use k8s_cri::v1::*;

const ROOT: &str = "/sys/fs/cgroup";

fn v2() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

fn systemd_driver() -> bool {
    match std::env::var("CRIUS_TEST_CGROUP_MANAGER").as_deref() {
        Ok("systemd") => true,
        Ok("cgroupfs") => false,
        _ => Path::new("/run/systemd/system").is_dir(),
    }
}

/// `<root>[/<controller>]<cgroup>/<file>`, trimmed.
fn read(controller: &str, cgroup: &str, file: &str) -> String {
    let mut p = PathBuf::from(ROOT);
    if !controller.is_empty() {
        p.push(controller);
    }
    p.push(cgroup.trim_start_matches('/'));
    std::fs::read_to_string(p.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", p.join(file).display()))
        .trim()
        .to_string()
}

fn resources(memory: i64) -> LinuxContainerResources {
    LinuxContainerResources {
        memory_limit_in_bytes: memory,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        cpu_shares: 512,
        ..Default::default()
    }
}

#[tokio::test]
async fn limits_reach_the_kernel_and_the_container_sees_its_own_cgroup() {
    let mut w = World::new().await.unwrap();
    let expected_driver = if systemd_driver() {
        CgroupDriver::Systemd
    } else {
        CgroupDriver::Cgroupfs
    };
    let rc =
        w.d.runtime
            .runtime_config(RuntimeConfigRequest {})
            .await
            .unwrap()
            .into_inner();
    assert_eq!(rc.linux.unwrap().cgroup_driver, expected_driver as i32);

    // A pod sharing one PID namespace (Kubernetes' shareProcessNamespace) has an infra process:
    // on cgroup v2 the container cgroups must still be creatable below the pod cgroup.
    let (pod, pod_cfg) = shared_pid_pod(&mut w).await;
    let mut cfg = w.config("limited", &["sleep", "3600"]);
    cfg.linux = Some(LinuxContainerConfig {
        resources: Some(resources(64 << 20)),
        ..Default::default()
    });
    let id =
        w.d.runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(cfg),
                sandbox_config: Some(pod_cfg),
            })
            .await
            .unwrap()
            .into_inner()
            .container_id;
    w.start(&id).await.unwrap();
    let cgroup = w.cgroup_path(&id).await;
    if systemd_driver() {
        assert!(
            cgroup.ends_with(&format!("/crius-{id}.scope")) && cgroup.contains(".slice/"),
            "a scope in the pod's slice: {cgroup}"
        );
    } else {
        assert!(cgroup.ends_with(&format!("/{id}")), "{cgroup}");
    }

    let limit = (64u64 << 20).to_string();
    let inside = if v2() {
        assert_eq!(read("", &cgroup, "memory.max"), limit);
        assert_eq!(read("", &cgroup, "cpu.max"), "50000 100000");
        // cpu.weight from shares on runc's and libcontainer's curve (1024 → 100).
        assert_eq!(read("", &cgroup, "cpu.weight"), "59");
        "/sys/fs/cgroup/memory.max"
    } else {
        assert_eq!(read("memory", &cgroup, "memory.limit_in_bytes"), limit);
        assert_eq!(read("cpu", &cgroup, "cpu.cfs_quota_us"), "50000");
        "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    };
    let seen = w.exec(&id, &["cat", inside], 10).await.unwrap();
    assert_eq!(seen.exit_code, 0, "{}", String::from_utf8_lossy(&seen.stderr));
    assert_eq!(
        String::from_utf8_lossy(&seen.stdout).trim(),
        limit,
        "the container's own cgroup"
    );
    if v2() {
        // Read-only for an unprivileged container.
        let write = w
            .exec(&id, &["sh", "-c", "echo max > /sys/fs/cgroup/memory.max"], 10)
            .await
            .unwrap();
        assert_ne!(
            write.exit_code, 0,
            "an unprivileged container cannot raise its own limit"
        );
    }

    let mut update = resources(96 << 20);
    if v2() {
        update
            .unified
            .insert("memory.high".into(), (80u64 << 20).to_string());
    }
    w.d.runtime
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(update),
            ..Default::default()
        })
        .await
        .unwrap();
    if v2() {
        assert_eq!(read("", &cgroup, "memory.max"), (96u64 << 20).to_string());
        assert_eq!(read("", &cgroup, "memory.high"), (80u64 << 20).to_string());
    } else {
        assert_eq!(
            read("memory", &cgroup, "memory.limit_in_bytes"),
            (96u64 << 20).to_string()
        );
    }

    // A `unified` key that names anything but a plain interface file is refused.
    let mut bad = resources(96 << 20);
    bad.unified.insert("../../cgroup.procs".into(), "1".into());
    let err =
        w.d.runtime
            .update_container_resources(UpdateContainerResourcesRequest {
                container_id: id.clone(),
                linux: Some(bad),
                ..Default::default()
            })
            .await
            .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    let unified_dir = PathBuf::from(ROOT).join(cgroup.trim_start_matches('/'));
    w.teardown().await.unwrap();
    assert!(
        pods::pod_cgroup_dirs(&pod).is_empty(),
        "the pod's cgroups are gone"
    );
    if v2() {
        assert!(!unified_dir.exists(), "{} is gone", unified_dir.display());
    }
}

/// A second pod of the World whose containers share one PID namespace (CRI PID mode POD).
async fn shared_pid_pod(w: &mut World) -> (String, PodSandboxConfig) {
    let mut cfg = w.pod_config();
    cfg.metadata.as_mut().unwrap().name = "shared-pid".into();
    pods::namespace_options(&mut cfg).pid = NamespaceMode::Pod as i32;
    let id = w.d.run_pod(cfg.clone()).await.unwrap();
    (id, cfg)
}

#[tokio::test]
async fn swap_limit_needs_a_memory_limit_at_least_as_large() {
    let mut w = World::new().await.unwrap();
    let mut cfg = w.config("swap", &["sleep", "3600"]);
    cfg.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 32 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    // Where the host accounts swap the total below the limit is refused; elsewhere the swap
    // limit is dropped (the host cannot enforce it) and the container is created.
    let swap_accounted = if v2() {
        std::fs::read_dir(ROOT)
            .unwrap()
            .flatten()
            .any(|e| e.path().join("memory.swap.max").exists())
    } else {
        Path::new(ROOT)
            .join("memory/memory.memsw.limit_in_bytes")
            .exists()
    };
    match w.create(cfg).await {
        Err(e) => {
            assert!(swap_accounted, "refused without swap accounting: {e:?}");
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        }
        Ok(id) => {
            assert!(
                !swap_accounted,
                "a swap total below the memory limit was accepted"
            );
            w.remove(&id).await.unwrap();
        }
    }
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn every_process_of_a_shared_pid_pod_is_in_its_own_cgroup() {
    let mut w = World::new().await.unwrap();
    let (pod, cfg) = shared_pid_pod(&mut w).await;
    let c =
        w.d.runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(w.config("own", &["sleep", "3600"])),
                sandbox_config: Some(cfg),
            })
            .await
            .unwrap()
            .into_inner()
            .container_id;
    w.start(&c).await.unwrap();
    let cgroup = w.cgroup_path(&c).await;
    let cgroups_of = |pid: i64| std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let init = w.pid(&c).await as i64;
    assert!(
        cgroups_of(init).lines().any(|l| l.ends_with(&cgroup)),
        "the container's init is in {cgroup}"
    );
    // The infra process (PID 1 of the pod's namespace) is in a cgroup of its own below the pod
    // cgroup, never in the pod cgroup that holds the containers' cgroups (cgroup v2 forbids it).
    let status = w.d.pod_status(&pod).await.unwrap();
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    let pod_cgroup = info["cgroupParent"].as_str().unwrap().to_string();
    let infra = info["pid"].as_i64().expect("the pod has an infra process");
    let infra_cgroups = cgroups_of(infra);
    assert!(
        !infra_cgroups.lines().any(|l| l.ends_with(&pod_cgroup)),
        "infra {infra} sits in the pod cgroup {pod_cgroup}: {infra_cgroups}"
    );
    assert!(
        infra_cgroups.contains(&format!("{pod_cgroup}/")),
        "infra {infra} below {pod_cgroup}: {infra_cgroups}"
    );
    w.teardown().await.unwrap();
    assert!(
        pods::pod_cgroup_dirs(&pod).is_empty(),
        "the pod's cgroups are gone"
    );
}
