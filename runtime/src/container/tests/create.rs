//! CreateContainer and the StartContainer that builds what it prepared: create spawns no shim;
//! every create failure after the id was chosen leaves nothing behind and the name free; a
//! failed start records StartError and undoes its runtime half; what changed while the
//! container was CREATED (resources, a stop) holds.

use super::fakes::{CgroupCall, INIT_PID, MountCall, SHIM_PID, ShimCall};
use super::*;
use crate::container::ContainerError;
use crate::container::record::{State, name_key};
use crius_shim_api::Request;

#[tokio::test]
async fn create_spawns_no_shim_and_start_builds_the_container() {
    let f = Fixture::new();
    let id = f.c.create(&f.pod(), config("app")).await.unwrap();
    let r = f.record(&id).unwrap();
    assert_eq!(
        (r.status.state, r.status.pid, r.status.shim_pid),
        (State::Created, 0, 0)
    );
    assert!(r.created_at > 0);
    assert_eq!(f.shim.calls(), vec![]);
    assert_eq!(f.cgroups.calls(), vec![]);
    // The shim's configuration waits in the shim directory for StartContainer.
    let cfg: crius_shim_api::ShimConfig =
        serde_json::from_slice(&std::fs::read(f.c.shim_dir(&id).join(crius_shim_api::CONFIG_FILE)).unwrap())
            .unwrap();
    assert_eq!(
        (cfg.id.as_str(), cfg.cgroup_path.as_str()),
        (id.as_str(), f.cgroup(&id).as_str())
    );

    f.c.start(&id).await.unwrap();
    let r = f.record(&id).unwrap();
    assert_eq!(
        (r.status.state, r.status.pid, r.status.shim_pid),
        (State::Running, INIT_PID, SHIM_PID)
    );
    assert!(r.status.started_at > 0);
    assert_eq!(
        f.shim.calls(),
        vec![
            ShimCall::Create(id.clone()),
            ShimCall::Request(id.clone(), Request::Start)
        ]
    );
}

#[tokio::test]
async fn shim_create_failure_at_start_records_start_error_and_undoes_the_runtime() {
    let f = Fixture::new();
    let id = f.c.create(&f.pod(), config("app")).await.unwrap();
    f.shim.fail_next_create("libcontainer: cannot create container");
    let err = f.c.start(&id).await.unwrap_err();
    assert!(
        matches!(&err, ContainerError::Shim { source: crate::shim_client::ShimError::CreateFailed(m), .. } if m.contains("libcontainer")),
        "{err:?}"
    );
    let r = f.record(&id).unwrap();
    assert_eq!(
        (
            r.status.state,
            r.status.exit_code,
            r.status.reason.as_str(),
            r.status.pid
        ),
        (State::Exited, 128, "StartError", 0)
    );
    assert!(r.status.finished_at > 0);
    assert!(r.status.message.contains("libcontainer"), "{}", r.status.message);
    // No shim reported, so no socket to ask: the sweep for shim processes ran, and the
    // cgroup the build may have made went; the rootfs and bundle stay for remove.
    assert_eq!(
        f.shim.calls(),
        vec![ShimCall::Create(id.clone()), ShimCall::KillHung(id.clone())]
    );
    assert_eq!(f.cgroups.calls(), vec![CgroupCall::KillAndRemove(f.cgroup(&id))]);
    assert_eq!(f.mounter.mounted(), vec![f.c.rootfs_dir(&id)]);
    assert!(f.c.bundle_dir(&id).is_dir());
    // An exited container does not start again; stop is a no-op; remove clears everything.
    assert!(matches!(
        f.c.start(&id).await.unwrap_err(),
        ContainerError::WrongState { .. }
    ));
    f.c.stop(&id, 10).await.unwrap();
    assert_eq!(f.record(&id).unwrap().status.reason, "StartError");
    f.c.remove(&id).await.unwrap();
    f.assert_gone(&id);
    let again = f.c.create(&f.pod(), config("app")).await.unwrap();
    assert_ne!(again, id);
}

#[tokio::test]
async fn resources_updated_while_created_are_written_at_start() {
    let f = Fixture::new();
    let id = f.c.create(&f.pod(), config("app")).await.unwrap();
    let update = cri_api::v1::LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    };
    // A bad request is refused as it is for a running container, though no cgroup exists.
    let mut bad = update.clone();
    bad.unified.insert("../../cgroup.procs".into(), "1".into());
    assert!(matches!(
        f.c.update_resources(&id, Some(bad)).await.unwrap_err(),
        ContainerError::Invalid(_)
    ));
    assert_eq!(f.record(&id).unwrap().status.resources, None);
    f.c.update_resources(&id, Some(update)).await.unwrap();
    // No cgroup yet: only recorded.
    assert_eq!(f.cgroups.calls(), vec![]);
    let r = f.record(&id).unwrap();
    assert_eq!(r.status.resources.unwrap().memory_limit_in_bytes, 64 << 20);
    f.c.start(&id).await.unwrap();
    assert_eq!(f.cgroups.calls(), vec![CgroupCall::Apply(f.cgroup(&id))]);
    assert_eq!(
        f.shim.calls(),
        vec![
            ShimCall::Create(id.clone()),
            ShimCall::Request(id.clone(), Request::Start)
        ]
    );
}

#[tokio::test]
async fn stop_of_a_never_started_container_records_it_exited_without_a_shim() {
    let f = Fixture::new();
    let id = f.c.create(&f.pod(), config("app")).await.unwrap();
    f.c.stop(&id, 10).await.unwrap();
    let r = f.record(&id).unwrap();
    assert_eq!((r.status.state, r.status.exit_code), (State::Exited, 137));
    assert!(r.status.finished_at > 0);
    f.c.stop(&id, 10).await.unwrap();
    assert_eq!(f.shim.calls(), vec![]);
    assert_eq!(f.c.exit_counts().shims_lost(), 0);
    f.c.remove(&id).await.unwrap();
    f.assert_gone(&id);
}

#[tokio::test]
async fn record_insert_failing_rolls_everything_back() {
    let f = Fixture::new();
    // Another container takes the name between the up-front check and the insert.
    let records = f.c.records.clone();
    let other = "f".repeat(64);
    let (o, pod) = (other.clone(), f.pod());
    f.mounter.after_next_mount(move |target| {
        let id = target
            .parent()
            .and_then(Path::file_name)
            .unwrap()
            .to_string_lossy();
        let mut r = template_record(&id, &pod);
        r.id = o;
        records.insert(&r).unwrap();
    });
    let err = f.c.create(&f.pod(), config("app")).await.unwrap_err();
    let key = name_key(POD, "app", 0);
    assert!(
        matches!(&err, ContainerError::AlreadyExists { name, id } if *name == key && *id == other),
        "{err:?}"
    );
    let MountCall::Mount(target) = &f.mounter.calls()[0] else {
        panic!("no mount")
    };
    let id = target
        .parent()
        .and_then(Path::file_name)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    f.assert_gone(&id);
    // No shim was ever spawned: only the sweep for shim processes of the bundle.
    assert_eq!(f.shim.calls(), vec![ShimCall::KillHung(id.clone())]);
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
        restored_from: None,
        status: Status::created(None),
    }
}
