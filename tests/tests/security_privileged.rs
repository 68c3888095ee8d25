//! Privileged containers: every capability the runtime holds, the host's devices, no masked
//! or read-only /proc paths, writable /sys, no seccomp even when a profile is asked for — and a
//! privileged container in a pod that is not privileged is refused without leaving anything.

use crius_tests::containers::World;
use crius_tests::pods::{self, PodCleanup};
use crius_tests::security::*;
use k8s_cri::v1::*;

fn privileged_with_runtime_default() -> LinuxContainerSecurityContext {
    LinuxContainerSecurityContext {
        privileged: true,
        seccomp: Some(SecurityProfile {
            profile_type: security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn privileged_container_sees_the_host() {
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let (pod, pod_cfg) = run_pod(&mut w, "priv", |sc| sc.privileged = true).await.unwrap();
    let cfg = sleeper(&w, "priv", privileged_with_runtime_default());
    let id = create_in(&mut w, &pod, &pod_cfg, cfg).await.unwrap();
    w.start(&id).await.unwrap();

    let status = exec_ok(&mut w, &id, &["cat", "/proc/self/status"]).await;
    assert_eq!(cap_mask(&status_field(&status, "CapEff")), own_bounding_set());
    assert_eq!(
        status_field(&status, "Seccomp"),
        "0",
        "a privileged container ignores seccomp"
    );

    // Host devices beyond the default set, e.g. /dev/loop-control or /dev/kmsg when the host has them.
    let host_extra: Vec<_> = ["loop-control", "kmsg", "mem", "net/tun", "fuse"]
        .into_iter()
        .filter(|d| std::path::Path::new("/dev").join(d).exists())
        .collect();
    for d in &host_extra {
        exec_ok(&mut w, &id, &["test", "-e", &format!("/dev/{d}")]).await;
    }

    // No masked paths: /proc/keys and /proc/timer_list are the real files; /proc/sys is writable.
    let mounts = exec_ok(&mut w, &id, &["cat", "/proc/self/mountinfo"]).await;
    for p in ["/proc/keys", "/proc/timer_list", "/proc/acpi"] {
        assert!(
            !mounts.lines().any(|l| l.split(' ').nth(4) == Some(p)),
            "{p}: {mounts}"
        );
    }
    let sys = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/sys"))
        .expect("/sys mounted");
    assert!(sys.split(' ').nth(5).unwrap().starts_with("rw"), "{sys}");
    let cgroups: Vec<&str> = mounts
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|p| p.starts_with("/sys/fs/cgroup"))
        })
        .collect();
    assert!(!cgroups.is_empty(), "{mounts}");
    for l in cgroups {
        assert!(
            l.split(' ').nth(5).unwrap().starts_with("rw"),
            "writable cgroup fs: {l}"
        );
    }
    assert!(
        !mounts.lines().any(|l| l.split(' ').nth(4) == Some("/proc/sys")),
        "{mounts}"
    );
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn privileged_container_needs_a_privileged_pod() {
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let cfg = sleeper(&w, "priv", privileged_with_runtime_default());
    // The request's copy of the pod config claims privilege; the pod itself was not created so.
    let mut claimed = w.pod_config();
    pods::security_context(&mut claimed).privileged = true;
    let pod = w.pod.clone();
    let err = create_in(&mut w, &pod, &claimed, cfg).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert_no_containers_left(&mut w).await;
    w.teardown().await.unwrap();
}
