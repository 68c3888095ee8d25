//! What a container may write and see: ReadOnlyRootfs, the default masked and read-only /proc
//! paths, MaskedPaths/ReadonlyPaths from the request, and NoNewPrivileges.

use crius_tests::containers::World;
use crius_tests::pods::PodCleanup;
use crius_tests::security::*;
use k8s_cri::v1::*;

fn mounted_at(mountinfo: &str, point: &str) -> bool {
    mountinfo.lines().any(|l| l.split(' ').nth(4) == Some(point))
}

#[tokio::test]
async fn readonly_rootfs_and_default_masks() {
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let id = w
        .create(sleeper(
            &w,
            "ro",
            LinuxContainerSecurityContext {
                readonly_rootfs: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    w.start(&id).await.unwrap();
    let (code, _, err) = exec(&mut w, &id, &["touch", "/tmp/x"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");

    // Defaults (containerd's): /proc/keys and /proc/timer_list masked (read as empty), /proc/sys
    // read-only.
    let mounts = exec_ok(&mut w, &id, &["cat", "/proc/self/mountinfo"]).await;
    for masked in ["/proc/keys", "/proc/timer_list", "/proc/acpi"] {
        if std::path::Path::new(masked).exists() {
            assert!(mounted_at(&mounts, masked), "{masked} masked: {mounts}");
        }
    }
    // /sys and every cgroup filesystem are read-only unless privileged (on cgroup v1 the
    // /sys/fs/cgroup tmpfs holding them is not, like runc's before its final remount).
    for l in mounts.lines() {
        let point = l.split(' ').nth(4).unwrap_or("");
        let fstype = l
            .split(" - ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap_or("");
        if point == "/sys" || (point.starts_with("/sys/fs/cgroup") && fstype != "tmpfs") {
            assert!(
                l.split(' ').nth(5).unwrap().starts_with("ro"),
                "read-only: {l}\n{mounts}"
            );
        }
    }
    if std::path::Path::new("/sys/fs/cgroup/memory").is_dir() {
        let (code, _, err) = exec(
            &mut w,
            &id,
            &[
                "sh",
                "-c",
                "echo 1073741824 > /sys/fs/cgroup/memory/memory.limit_in_bytes",
            ],
        )
        .await;
        assert!(
            code != 0 && err.contains("Read-only file system"),
            "own limit: {err}"
        );
        assert!(
            !mounts.contains("name=systemd"),
            "the host's name=systemd hierarchy is not exposed: {mounts}"
        );
    }
    let keys = exec_ok(&mut w, &id, &["wc", "-c", "/proc/keys"]).await;
    assert!(keys.trim().starts_with('0'), "{keys}");
    let (code, _, err) = exec(&mut w, &id, &["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn requested_masked_and_readonly_paths() {
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let id = w
        .create(sleeper(
            &w,
            "masks",
            LinuxContainerSecurityContext {
                masked_paths: vec!["/etc/passwd".into(), "/var".into()],
                readonly_paths: vec!["/tmp".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    w.start(&id).await.unwrap();
    // A masked file reads as /dev/null, a masked directory as an empty read-only tmpfs.
    let passwd = exec_ok(&mut w, &id, &["wc", "-c", "/etc/passwd"]).await;
    assert!(passwd.trim().starts_with('0'), "{passwd}");
    let (code, _, err) = exec(&mut w, &id, &["touch", "/var/x"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    let (code, _, err) = exec(&mut w, &id, &["touch", "/tmp/x"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    // The request's lists replace the defaults: /proc/keys is not masked here.
    let mounts = exec_ok(&mut w, &id, &["cat", "/proc/self/mountinfo"]).await;
    assert!(!mounted_at(&mounts, "/proc/keys"), "{mounts}");
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn no_new_privileges_only_when_asked() {
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    for (name, nnp, want) in [("nnp", true, "1"), ("plain", false, "0")] {
        let id = w
            .create(sleeper(
                &w,
                name,
                LinuxContainerSecurityContext {
                    no_new_privs: nnp,
                    ..Default::default()
                },
            ))
            .await
            .unwrap();
        w.start(&id).await.unwrap();
        let status = exec_ok(&mut w, &id, &["cat", "/proc/self/status"]).await;
        assert_eq!(status_field(&status, "NoNewPrivs"), want, "{name}");
        let init = exec_ok(&mut w, &id, &["cat", "/proc/1/status"]).await;
        assert_eq!(status_field(&init, "NoNewPrivs"), want, "{name} init");
    }
    w.teardown().await.unwrap();
}
