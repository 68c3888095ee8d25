//! Start-up recovery against shims that are gone, alive, or never had a record.

use super::fakes::{CgroupCall, MountCall, ShimCall};
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
