//! CreateContainer's rollback: every failure after the id was chosen leaves nothing behind and
//! the name free.

use super::fakes::{CgroupCall, MountCall, ShimCall};
use super::*;
use crate::container::ContainerError;
use crate::container::record::{State, name_key};
use crius_shim_api::Request;

/// The id the fake shim was asked to create last.
fn created_id(f: &Fixture) -> String {
    f.shim
        .calls()
        .iter()
        .rev()
        .find_map(|c| match c {
            ShimCall::Create(id) => Some(id.clone()),
            _ => None,
        })
        .expect("the shim was asked to create a container")
}

#[tokio::test]
async fn shim_create_failure_rolls_everything_back_and_frees_the_name() {
    let f = Fixture::new();
    f.shim.fail_next_create("libcontainer: cannot create container");
    let err = f.c.create(&f.pod(), config("app")).await.unwrap_err();
    assert!(
        matches!(&err, ContainerError::Shim { source: crate::shim_client::ShimError::CreateFailed(m), .. } if m.contains("libcontainer")),
        "{err:?}"
    );
    let id = created_id(&f);
    f.assert_gone(&id);
    let rootfs = f.c.rootfs_dir(&id);
    assert_eq!(
        f.mounter.calls(),
        vec![MountCall::Mount(rootfs.clone()), MountCall::Unmount(rootfs)]
    );
    // No shim reported, so no socket to ask: the sweep for hung shim processes ran instead.
    assert_eq!(
        f.shim.calls(),
        vec![ShimCall::Create(id.clone()), ShimCall::KillHung(id.clone())]
    );
    // The cgroup comes from the bundle's spec, which existed when the rollback ran.
    assert_eq!(f.cgroups.calls(), vec![CgroupCall::KillAndRemove(f.cgroup(&id))]);

    let again = f.c.create(&f.pod(), config("app")).await.unwrap();
    assert_ne!(again, id);
    assert_eq!(f.record(&again).unwrap().status.state, State::Created);
    assert!(f.leased(&again));
}

#[tokio::test]
async fn record_insert_failing_after_the_shim_reported_shuts_the_shim_down() {
    let f = Fixture::new();
    // Another container takes the name between the up-front check and the insert.
    let records = f.c.records.clone();
    let other = "f".repeat(64);
    let (o, pod) = (other.clone(), f.pod());
    f.shim.after_next_create(move |cfg| {
        let mut r = template_record(&cfg.id, &pod);
        r.id = o;
        records.insert(&r).unwrap();
    });
    let err = f.c.create(&f.pod(), config("app")).await.unwrap_err();
    let key = name_key(POD, "app", 0);
    assert!(
        matches!(&err, ContainerError::AlreadyExists { name, id } if *name == key && *id == other),
        "{err:?}"
    );
    let id = created_id(&f);
    f.assert_gone(&id);
    // The shim answered its shutdown, so it deleted the container itself: no kill sweep.
    assert_eq!(
        f.shim.calls(),
        vec![
            ShimCall::Create(id.clone()),
            ShimCall::Request(id.clone(), Request::Shutdown)
        ]
    );
    assert!(!f.shim.alive(&f.c.shim_dir(&id)));
    assert_eq!(f.cgroups.calls(), vec![CgroupCall::KillAndRemove(f.cgroup(&id))]);
    // The winner is untouched.
    assert_eq!(f.c.records.name_owner(&key).unwrap(), Some(other.clone()));
    assert!(f.record(&other).is_some());
}

#[tokio::test]
async fn mount_failure_rolls_back_without_asking_a_shim() {
    let f = Fixture::new();
    f.mounter.fail_next_mount(nix::errno::Errno::EINVAL);
    let err = f.c.create(&f.pod(), config("app")).await.unwrap_err();
    assert!(
        matches!(
            &err,
            ContainerError::Io {
                what: "mount overlay at",
                ..
            }
        ),
        "{err:?}"
    );
    let calls = f.mounter.calls();
    let MountCall::Mount(target) = &calls[0] else {
        panic!("first mount call: {calls:?}")
    };
    let id = target
        .parent()
        .and_then(Path::file_name)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    f.assert_gone(&id);
    assert_eq!(
        calls,
        vec![
            MountCall::Mount(target.clone()),
            MountCall::Unmount(target.clone())
        ]
    );
    // Never created, never asked: only the (empty) sweep for shim processes of the bundle.
    assert_eq!(f.shim.calls(), vec![ShimCall::KillHung(id.clone())]);
    // The spec was never written, so no cgroup is known to remove.
    assert_eq!(f.cgroups.calls(), vec![]);
    assert!(
        f.c.records
            .name_owner(&name_key(POD, "app", 0))
            .unwrap()
            .is_none()
    );
}

/// A record as create writes it, for a container `id` of `pod` named `app`.
fn template_record(id: &str, pod: &PodInfo) -> Record {
    use crate::container::record::Status;
    Record {
        id: id.into(),
        sandbox_id: pod.id.clone(),
        config: config("app"),
        image_name: IMAGE.into(),
        image_id: String::new(),
        image_ref: String::new(),
        log_path: None,
        cgroup_path: String::new(),
        systemd_cgroup: false,
        runtime: None,
        created_at: 0,
        stop_signal: None,
        uid: 0,
        gid: 0,
        additional_gids: Vec::new(),
        status: Status::created(None),
    }
}
