//! Start-up recovery against shims that are gone, alive, or never had a record.

use super::fakes::{CgroupCall, INIT_PID, MountCall, ShimCall};
use super::*;
use crate::container::Recovered;
use crate::container::record::State;
use crate::container::seams::CgroupAccess;
use crius_shim_api::Request;

#[tokio::test]
async fn running_record_whose_shim_and_init_are_gone_becomes_exited_unknown() {
    let f = Fixture::new();
    let id = f.c.create(&f.pod(), config("app")).await.unwrap();
    f.c.start(&id).await.unwrap();
    // The host rebooted: no shim, no mount, an empty cgroup.
    f.shim.forget_all();
    f.mounter.lose(&f.c.rootfs_dir(&id));

    let c = f.restarted();
    let got = c.recover().await;
    assert_eq!(
        got,
        Recovered {
            containers: 1,
            exited: 1,
            ..Default::default()
        }
    );
    let r = f.record(&id).unwrap();
    assert_eq!(
        (r.status.state, r.status.exit_code, r.status.reason.as_str()),
        (State::Exited, 255, "Unknown")
    );
    assert!(
        r.status.message.contains("without recording an exit status"),
        "{}",
        r.status.message
    );
    // An exited container's rootfs is not mounted again; its lease and files stay for remove.
    assert!(f.mounter.mounted().is_empty());
    assert!(f.leased(&id) && f.c.bundle_dir(&id).exists());
    c.remove(&id).await.unwrap();
    f.assert_gone(&id);
}

#[tokio::test]
async fn live_shim_is_reconnected_and_a_lost_rootfs_mount_restored() {
    let f = Fixture::new();
    let id = f.c.create(&f.pod(), config("app")).await.unwrap();
    f.c.start(&id).await.unwrap();
    let rootfs = f.c.rootfs_dir(&id);
    f.mounter.lose(&rootfs);

    let got = f.restarted().recover().await;
    assert_eq!(
        got,
        Recovered {
            containers: 1,
            reconnected: 1,
            ..Default::default()
        }
    );
    assert_eq!(f.record(&id).unwrap().status.state, State::Running);
    assert_eq!(
        f.shim.calls().last(),
        Some(&ShimCall::Request(id.clone(), Request::State))
    );
    assert_eq!(f.mounter.mounted(), vec![rootfs.clone()]);
    assert_eq!(f.mounter.calls().last(), Some(&MountCall::Mount(rootfs)));
}

#[tokio::test]
async fn state_no_record_owns_is_torn_down_as_an_orphan() {
    let f = Fixture::new();
    // What a crash between the shim's start and the record's insert leaves: bundle with spec
    // and shim socket, writable layer, libcontainer state, an image lease, a shim process.
    let id = "e".repeat(64);
    let c = &f.c;
    std::fs::create_dir_all(c.shim_dir(&id)).unwrap();
    std::fs::write(c.shim_dir(&id).join(crius_shim_api::CONTROL_SOCKET), b"").unwrap();
    let cgroup = f.cgroup(&id);
    std::fs::write(
        c.bundle_dir(&id).join("config.json"),
        format!(r#"{{"linux":{{"cgroupsPath":"{cgroup}"}}}}"#),
    )
    .unwrap();
    std::fs::create_dir_all(c.layer_dir(&id).join("upper")).unwrap();
    std::fs::create_dir_all(c.youki_root().join(&id)).unwrap();
    f.images.lease(IMAGE, &id).unwrap();
    // Not an id: left alone.
    std::fs::create_dir_all(c.bundle_dir("not-an-id")).unwrap();

    let got = f.restarted().recover().await;
    assert_eq!(
        got,
        Recovered {
            orphans_removed: 1,
            ..Default::default()
        }
    );
    f.assert_gone(&id);
    assert!(c.bundle_dir("not-an-id").exists());
    assert_eq!(
        f.shim.calls(),
        vec![
            ShimCall::Request(id.clone(), Request::Shutdown),
            ShimCall::KillHung(id.clone())
        ]
    );
    assert_eq!(f.cgroups.calls(), vec![CgroupCall::KillAndRemove(cgroup)]);
    assert_eq!(f.mounter.calls(), vec![MountCall::Unmount(c.rootfs_dir(&id))]);
}

#[tokio::test]
async fn shim_gone_while_init_runs_is_unknown_and_stop_kills_through_the_cgroup() {
    let f = Fixture::new();
    let id = f.c.create(&f.pod(), config("app")).await.unwrap();
    f.c.start(&id).await.unwrap();
    let init = f.record(&id).unwrap().status.pid;
    assert!(init > 0);
    // The shim was killed with the daemon; the container's init goes on in its cgroup.
    f.shim.forget_all();
    f.cgroups.populate(&f.cgroup(&id), &[init]);

    let c = f.restarted();
    let got = c.recover().await;
    assert_eq!(
        got,
        Recovered {
            containers: 1,
            unknown: 1,
            ..Default::default()
        }
    );
    let r = f.record(&id).unwrap();
    assert_eq!(r.status.state, State::Unknown);
    assert!(r.status.message.contains("still run"), "{}", r.status.message);

    // Stop reaches the processes through the cgroup and records the kill.
    c.stop(&id, 0).await.unwrap();
    let r = f.record(&id).unwrap();
    assert_eq!(r.status.state, State::Exited);
    assert!(f.cgroups.pids(&f.cgroup(&id)).is_empty());
    assert!(
        f.cgroups.calls().iter().any(|call| matches!(
            call,
            CgroupCall::Signal { signal, .. } if *signal == libc::SIGKILL
        )),
        "{:?}",
        f.cgroups.calls()
    );
    c.remove(&id).await.unwrap();
    f.assert_gone(&id);
}

#[tokio::test]
async fn created_container_survives_a_restart_and_starts_after_it() {
    let f = Fixture::new();
    let id = f.c.create(&f.pod(), config("app")).await.unwrap();
    let rootfs = f.c.rootfs_dir(&id);
    f.mounter.lose(&rootfs);

    let c = f.restarted();
    let got = c.recover().await;
    assert_eq!(
        got,
        Recovered {
            containers: 1,
            reconnected: 1,
            ..Default::default()
        }
    );
    let r = f.record(&id).unwrap();
    assert_eq!((r.status.state, r.status.pid), (State::Created, 0));
    assert!(r.status.message.is_empty(), "{}", r.status.message);
    // No shim answered: whatever a start could have left is swept, the rootfs is back.
    assert_eq!(
        f.shim.calls(),
        vec![
            ShimCall::Request(id.clone(), Request::State),
            ShimCall::KillHung(id.clone())
        ]
    );
    assert_eq!(f.cgroups.calls(), vec![CgroupCall::KillAndRemove(f.cgroup(&id))]);
    assert_eq!(f.mounter.mounted(), vec![rootfs]);

    c.start(&id).await.unwrap();
    assert_eq!(f.record(&id).unwrap().status.state, State::Running);
    c.remove(&id).await.unwrap();
    f.assert_gone(&id);
}

#[tokio::test]
async fn a_shim_spawned_by_an_interrupted_start_is_adopted() {
    use crate::container::seams::ShimLifecycle;
    for already_running in [false, true] {
        let f = Fixture::new();
        let id = f.c.create(&f.pod(), config("app")).await.unwrap();
        // The daemon went down inside StartContainer: the shim built the container (and maybe
        // got the start request), the record still says CREATED without a pid.
        let cfg = f.c.shim_config_of(&id).unwrap();
        f.shim.create(&cfg).await.unwrap();
        if already_running {
            f.shim.request(&f.c.shim_dir(&id), Request::Start).await.unwrap();
        }

        let c = f.restarted();
        assert_eq!(c.recover().await.reconnected, 1);
        let r = f.record(&id).unwrap();
        assert_eq!(r.status.pid, INIT_PID);
        if already_running {
            assert_eq!(r.status.state, State::Running);
            assert!(r.status.started_at > 0);
            assert!(matches!(
                c.start(&id).await.unwrap_err(),
                crate::container::ContainerError::WrongState { .. }
            ));
        } else {
            assert_eq!(r.status.state, State::Created);
            let before = f.shim.calls().len();
            c.start(&id).await.unwrap();
            // Only the start request: the adopted shim is not spawned again.
            assert_eq!(
                f.shim.calls()[before..],
                [ShimCall::Request(id.clone(), Request::Start)]
            );
            assert_eq!(f.record(&id).unwrap().status.state, State::Running);
        }
        c.remove(&id).await.unwrap();
        f.assert_gone(&id);
    }
}
