//! Containers through the real daemon: create/start/stop/remove in every state, idempotent stop
//! and remove, name uniqueness, clear errors for bad input, SIGKILL → 137, and nothing left
//! behind after removal (mounts, cgroups, shim processes, directories).

use crius_tests::containers::World;
use crius_tests::util;
use k8s_cri::v1::*;
use tonic::Code;

fn state(s: &ContainerStatus) -> ContainerState {
    ContainerState::try_from(s.state).unwrap()
}

fn cgroup_dirs_named(id: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<std::path::PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("crius"))
        .collect();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                if e.file_name() == id {
                    out.push(e.path());
                }
                stack.push(e.path());
            }
        }
    }
    out
}

async fn assert_nothing_left(w: &mut World, id: &str) {
    let st = w.status(id).await.unwrap_err();
    assert_eq!(st.code(), Code::NotFound);
    // RemoveContainer answers before its teardown finishes in the background.
    w.wait_torn_down(id).await.unwrap();
    let mounts: Vec<_> = util::mounts_under(&w.d.state)
        .into_iter()
        .filter(|m| m.to_string_lossy().contains(id))
        .collect();
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    assert!(
        cgroup_dirs_named(id).is_empty(),
        "cgroups left: {:?}",
        cgroup_dirs_named(id)
    );
    assert!(!w.d.state.join("containers").join(id).exists());
    assert!(!w.d.root.join("containers").join(id).exists());
    // The shim exits right after answering the removal; give it a moment to be reaped.
    for _ in 0..100 {
        if util::pids_mentioning(id).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        util::pids_mentioning(id).is_empty(),
        "processes left: {:?}",
        util::pids_mentioning(id)
    );
}

#[tokio::test]
async fn every_state_stops_and_removes_cleanly() {
    let mut w = World::new().await.unwrap();

    // Created, then removed without ever starting.
    let created = w.create(w.config("created", &["sleep", "1000"])).await.unwrap();
    assert_eq!(created.len(), 64);
    let s = w.state(&created).await;
    assert_eq!(state(&s), ContainerState::ContainerCreated);
    assert!(s.created_at > 0 && s.started_at == 0);
    assert!(s.log_path.starts_with('/'), "absolute log path {:?}", s.log_path);
    assert_eq!(s.image.as_ref().unwrap().image, w.image);
    assert!(s.image_ref.contains("sha256:"));
    w.remove(&created).await.unwrap();
    assert_nothing_left(&mut w, &created).await;

    // Created, then stopped (→ exited), then removed.
    let c2 = w
        .create(w.config("created-stopped", &["sleep", "1000"]))
        .await
        .unwrap();
    w.stop(&c2, 5).await.unwrap();
    assert_eq!(state(&w.state(&c2).await), ContainerState::ContainerExited);
    w.remove(&c2).await.unwrap();
    assert_nothing_left(&mut w, &c2).await;

    // Running, stopped with SIGTERM honoured by a shell trap.
    let trap = w
        .run(
            "trap",
            &["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
        )
        .await;
    assert_eq!(state(&w.state(&trap).await), ContainerState::ContainerRunning);
    let start_again = w.start(&trap).await.unwrap_err();
    assert_eq!(start_again.code(), Code::FailedPrecondition);
    w.stop(&trap, 30).await.unwrap();
    let s = w.state(&trap).await;
    assert_eq!(state(&s), ContainerState::ContainerExited);
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));
    assert!(s.finished_at >= s.started_at && s.started_at > 0);
    w.stop(&trap, 30).await.unwrap();

    // Running and ignoring SIGTERM (PID 1 of its namespace): killed after the timeout.
    let stubborn = w.run("stubborn", &["sleep", "1000"]).await;
    w.stop(&stubborn, 1).await.unwrap();
    let s = w.state(&stubborn).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"));

    // Exited on its own.
    let done = w.run("done", &["sh", "-c", "exit 3"]).await;
    let s = w.wait_exited(&done).await.unwrap();
    assert_eq!((s.exit_code, s.reason.as_str()), (3, "Error"));
    assert!(w.start(&done).await.is_err());

    // Removing a running container stops it first.
    let running = w.run("running", &["sleep", "1000"]).await;
    w.remove(&running).await.unwrap();
    assert_nothing_left(&mut w, &running).await;

    for id in [&trap, &stubborn, &done] {
        w.remove(id).await.unwrap();
        w.remove(id).await.unwrap();
        w.stop(id, 0).await.unwrap();
        assert_nothing_left(&mut w, id).await;
    }
    let unknown = "0".repeat(64);
    w.stop(&unknown, 0).await.unwrap();
    w.remove(&unknown).await.unwrap();
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn sigkill_from_outside_shows_exit_137() {
    let mut w = World::new().await.unwrap();
    let id = w.run("victim", &["sleep", "1000"]).await;
    let pid = w.pid(&id).await;
    assert!(pid > 1);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let s = w.wait_exited(&id).await.unwrap();
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"));
    w.remove(&id).await.unwrap();
    assert_nothing_left(&mut w, &id).await;
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn names_images_and_pods_are_checked() {
    let mut w = World::new().await.unwrap();
    let a = w.create(w.config("dup", &["sleep", "1000"])).await.unwrap();
    let dup = w.create(w.config("dup", &["sleep", "1000"])).await.unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    let mut next_attempt = w.config("dup", &["sleep", "1000"]);
    next_attempt.metadata.as_mut().unwrap().attempt = 1;
    let b = w.create(next_attempt).await.unwrap();

    let mut missing = w.config("noimage", &["true"]);
    missing.image.as_mut().unwrap().image = "127.0.0.1:1/nothing:here".into();
    assert_eq!(w.create(missing).await.unwrap_err().code(), Code::NotFound);

    // A host path that does not exist is made a directory (containerd's and CRI-O's rule); one
    // that exists but cannot be used (below a regular file) is refused.
    let scratch = tempfile::tempdir().unwrap();
    let made = scratch.path().join("made/by/crius");
    let mut auto_dir = w.config("automount", &["true"]);
    auto_dir.mounts.push(Mount {
        container_path: "/data".into(),
        host_path: made.to_string_lossy().into(),
        ..Default::default()
    });
    let c = w.create(auto_dir).await.unwrap();
    let meta = std::fs::metadata(&made).unwrap();
    assert!(meta.is_dir());
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
        0o755
    );
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
    w.remove(&c).await.unwrap();
    let file = scratch.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let mut bad_mount = w.config("badmount", &["true"]);
    bad_mount.mounts.push(Mount {
        container_path: "/data".into(),
        host_path: file.join("below").to_string_lossy().into(),
        ..Default::default()
    });
    assert_eq!(
        w.create(bad_mount).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    let mut group_only = w.config("grouponly", &["true"]);
    group_only.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            run_as_group: Some(Int64Value { value: 10 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(
        w.create(group_only).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // A missing entrypoint is found when the container is built, which StartContainer does
    // (as containerd's `runc create` in its StartContainer): the start fails and the container
    // is EXITED with reason StartError (128), then removed like any exited one.
    let bad_cmd = w.create(w.config("badcmd", &["/no/such/binary"])).await.unwrap();
    let e = w.start(&bad_cmd).await.unwrap_err();
    assert!(e.message().contains("/no/such/binary"), "{}", e.message());
    let s = w.state(&bad_cmd).await;
    assert_eq!(state(&s), ContainerState::ContainerExited);
    assert_eq!((s.exit_code, s.reason.as_str()), (128, "StartError"));
    assert!(s.message.contains("/no/such/binary"), "{}", s.message);
    assert!(s.finished_at > 0);
    assert!(
        util::pids_mentioning(&bad_cmd).is_empty(),
        "a failed start leaves no process: {:?}",
        util::pids_mentioning(&bad_cmd)
    );
    assert!(
        cgroup_dirs_named(&bad_cmd).is_empty(),
        "a failed start leaves no cgroup"
    );
    w.stop(&bad_cmd, 0).await.unwrap();
    assert_eq!(w.state(&bad_cmd).await.reason, "StartError");
    w.remove(&bad_cmd).await.unwrap();
    assert_nothing_left(&mut w, &bad_cmd).await;

    let unknown_pod = CreateContainerRequest {
        pod_sandbox_id: "f".repeat(64),
        config: Some(w.config("orphan", &["true"])),
        sandbox_config: None,
    };
    let e = w.d.runtime.create_container(unknown_pod).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Nothing of the failed creates remains: only the two good containers exist.
    let list =
        w.d.runtime
            .list_containers(ListContainersRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .containers;
    let mut ids: Vec<_> = list.iter().map(|c| c.id.clone()).collect();
    ids.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(ids, want);
    let dirs = std::fs::read_dir(w.d.state.join("containers")).unwrap().count();
    assert_eq!(dirs, 2, "no bundle left by a failed create");

    // Filters: state, pod, id prefix, labels.
    w.start(&a).await.unwrap();
    let running = ListContainersRequest {
        filter: Some(ContainerFilter {
            state: Some(ContainerStateValue {
                state: ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        }),
    };
    let got =
        w.d.runtime
            .list_containers(running)
            .await
            .unwrap()
            .into_inner()
            .containers;
    assert_eq!(
        got.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [a.as_str()]
    );
    let by_prefix = ListContainersRequest {
        filter: Some(ContainerFilter {
            id: b[..12].to_string(),
            pod_sandbox_id: w.pod.clone(),
            ..Default::default()
        }),
    };
    let got =
        w.d.runtime
            .list_containers(by_prefix)
            .await
            .unwrap()
            .into_inner()
            .containers;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, b);

    // Removing the pod removes its containers.
    let pod = w.pod.clone();
    w.d.stop_pod(&pod).await.unwrap();
    assert_eq!(state(&w.state(&a).await), ContainerState::ContainerExited);
    w.d.remove_pod(&pod).await.unwrap();
    assert_nothing_left(&mut w, &a).await;
    assert_nothing_left(&mut w, &b).await;
}
