//! Start, stop and remove around a shim that dies, hangs, or an unmount that fails: each ends in
//! a recorded state a client can act on, and remove can always be retried to the end.

use super::fakes::{CgroupCall, INIT_PID, MountCall, ShimCall};
use super::*;
use crate::container::ContainerError;
use crate::container::record::{State, name_key};
use crate::shim_client::ShimError;
use crius_shim_api::Request;

#[tokio::test]
async fn shim_dying_before_the_start_request_is_a_start_error_then_remove_cleans_up() {
    let f = Fixture::new();
    let id = f.c.create(&f.pod(), config("app")).await.unwrap();
    let shim = f.shim.clone();
    f.shim.after_next_create(move |cfg| shim.die(&cfg.shim_dir));

    let err = f.c.start(&id).await.unwrap_err();
    assert!(
        matches!(
            &err,
            ContainerError::Shim {
                source: ShimError::Unreachable { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        crate::server::error::container(err).code(),
        tonic::Code::Unavailable
    );
    let r = f.record(&id).unwrap();
    assert_eq!(
        (r.status.state, r.status.exit_code, r.status.reason.as_str()),
        (State::Exited, 128, "StartError")
    );
    assert!(r.status.message.contains("not reachable"), "{}", r.status.message);

    // Exited: stop has nothing to do; remove asks the (dead) shim through its socket file,
    // sweeps, and removes the rest.
    f.c.stop(&id, 10).await.unwrap();
    f.c.remove(&id).await.unwrap();
    f.assert_gone(&id);
    assert_eq!(
        f.shim.calls(),
        vec![
            ShimCall::Create(id.clone()),
            ShimCall::Request(id.clone(), Request::Start),
            // The failed start's undo: the socket file is there, nobody answers, a sweep.
            ShimCall::Request(id.clone(), Request::Shutdown),
            ShimCall::KillHung(id.clone()),
            // Remove's teardown does the same again.
            ShimCall::Request(id.clone(), Request::Shutdown),
            ShimCall::KillHung(id.clone()),
        ]
    );
    assert_eq!(
        f.cgroups.calls(),
        vec![
            CgroupCall::KillAndRemove(f.cgroup(&id)),
            CgroupCall::KillAndRemove(f.cgroup(&id))
        ]
    );
    // Stop and remove of what is gone succeed.
    f.c.stop(&id, 10).await.unwrap();
    f.c.remove(&id).await.unwrap();
}

#[tokio::test]
async fn stop_around_a_hung_shim_kills_through_the_cgroup_and_records_137() {
    let f = Fixture::new();
    let id = f.c.create(&f.pod(), config("app")).await.unwrap();
    f.c.start(&id).await.unwrap();
    assert_eq!(f.record(&id).unwrap().status.state, State::Running);
    let cgroup = f.cgroup(&id);
    f.cgroups.populate(&cgroup, &[INIT_PID, INIT_PID + 7]);
    f.shim.hang(&f.c.shim_dir(&id));

    // The fake init ignores SIGTERM: the 1 s grace period runs out, then SIGKILL.
    f.c.stop(&id, 1).await.unwrap();
    let r = f.record(&id).unwrap();
    assert_eq!((r.status.state, r.status.exit_code), (State::Exited, 137));
    assert!(
        r.status.message.contains("killed through its cgroup"),
        "{}",
        r.status.message
    );
    assert_eq!(
        f.cgroups.calls(),
        vec![
            CgroupCall::Signal {
                cgroup: cgroup.clone(),
                init: INIT_PID,
                signal: libc::SIGTERM,
                all: false
            },
            CgroupCall::Signal {
                cgroup: cgroup.clone(),
                init: INIT_PID,
                signal: libc::SIGKILL,
                all: true
            },
        ]
    );
    // The hung shim was asked once, for the stop signal, never again.
    let kills = f
        .shim
        .calls()
        .into_iter()
        .filter(|c| matches!(c, ShimCall::Request(_, Request::Kill { .. })))
        .count();
    assert_eq!(kills, 1);

    // Remove: the shutdown request times out, the hung shim is killed, the rest goes.
    f.c.remove(&id).await.unwrap();
    f.assert_gone(&id);
    assert_eq!(
        f.shim.calls()[f.shim.calls().len() - 2..],
        [
            ShimCall::Request(id.clone(), Request::Shutdown),
            ShimCall::KillHung(id.clone())
        ]
    );
}

#[tokio::test]
async fn unmount_failing_during_remove_keeps_the_record_and_a_retry_finishes() {
    let f = Fixture::new();
    let id = f.c.create(&f.pod(), config("app")).await.unwrap();
    f.c.start(&id).await.unwrap();
    let rootfs = f.c.rootfs_dir(&id);
    f.mounter.fail_unmounts(1, nix::errno::Errno::EBUSY);

    let err = f.c.remove(&id).await.unwrap_err();
    assert!(
        matches!(&err, ContainerError::Io { what: "unmount", source, .. } if source.raw_os_error() == Some(libc::EBUSY)),
        "{err:?}"
    );
    // The shim stopped the container and shut down; the record stays for the retry.
    let r = f.record(&id).unwrap();
    assert_eq!(
        (r.status.state, r.status.exit_code),
        (State::Exited, 128 + libc::SIGKILL)
    );
    assert!(!f.shim.alive(&f.c.shim_dir(&id)));
    assert_eq!(f.mounter.mounted(), vec![rootfs.clone()]);
    // Nothing under a rootfs still mounted is removed, and its layers stay leased.
    assert!(f.c.bundle_dir(&id).is_dir() && f.c.layer_dir(&id).is_dir());
    assert!(f.leased(&id));
    let shim_calls = f.shim.calls().len();

    f.c.remove(&id).await.unwrap();
    f.assert_gone(&id);
    assert!(
        f.c.records
            .name_owner(&name_key(POD, "app", 0))
            .unwrap()
            .is_none()
    );
    // The retry repeated every step on what was already done: the shim's socket is gone, so
    // nothing is asked, only swept; the cgroup and lease went again without complaint.
    assert_eq!(f.shim.calls()[shim_calls..], [ShimCall::KillHung(id.clone())]);
    assert_eq!(
        f.mounter.calls(),
        vec![
            MountCall::Mount(rootfs.clone()),
            MountCall::Unmount(rootfs.clone()),
            MountCall::Unmount(rootfs)
        ]
    );
    assert_eq!(
        f.cgroups.calls(),
        vec![
            CgroupCall::KillAndRemove(f.cgroup(&id)),
            CgroupCall::KillAndRemove(f.cgroup(&id))
        ]
    );
    // The name is free again.
    f.c.create(&f.pod(), config("app")).await.unwrap();
}
