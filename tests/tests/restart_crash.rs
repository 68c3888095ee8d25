//! A daemon that dies inside RunPodSandbox or CreateContainer (the test-only crash hook
//! `CRIUS_TEST_CRASH_AT` aborts it at a named step) leaves nothing behind once it restarts —
//! no namespace, pod files, IP, veth, cgroup, mount, shim process or directory — and the
//! kubelet's retry of the same RPC succeeds. One that dies inside StartContainer, after the
//! shim built the container, finds that shim again and the container can still be started. A CreateContainer or RemoveContainer that has
//! answered is on disk, whatever crash follows.

use crius_tests::containers::World;
use crius_tests::daemon_db::records_and_leases;
use crius_tests::pods::{self, PodCleanup, TestNet};
use crius_tests::{Daemon, util};
use k8s_cri::v1::*;

const CRASH_ENV: &str = "CRIUS_TEST_CRASH_AT";

/// Restarts `d` with the crash hook armed at `step`.
async fn arm(d: &mut Daemon, step: &str) {
    d.stop().await.unwrap();
    d.env = vec![(CRASH_ENV.to_string(), step.to_string())];
    d.restart().await.unwrap();
}

/// Waits for the armed daemon to abort, then starts it normally.
async fn recover_from_crash(d: &mut Daemon, step: &str) {
    let status = d.wait_exit().await.unwrap();
    assert!(!status.success(), "{step}: the daemon aborted ({status})");
    assert!(d.log().contains(step), "{step}: the hook logged the step");
    d.env.clear();
    d.restart().await.unwrap();
}

#[tokio::test]
async fn crash_inside_run_pod_sandbox_leaks_nothing_and_the_retry_succeeds() {
    let net = TestNet::new();
    let mut d = net.daemon().await.unwrap();
    let _cleanup = PodCleanup::new(&d);
    let req = || RunPodSandboxRequest {
        config: Some(pods::pod_config("crashy", "uid-crashy")),
        runtime_handler: String::new(),
    };
    for step in [
        "run-pod-sandbox:after-record",
        "run-pod-sandbox:after-namespaces",
        "run-pod-sandbox:after-cni",
        "run-pod-sandbox:after-cgroup",
    ] {
        arm(&mut d, step).await;
        assert!(d.runtime.run_pod_sandbox(req()).await.is_err(), "{step}");
        let mut ids = util::dir_entries(&d.state.join("ns"));
        ids.extend(util::dir_entries(&d.state.join("pods")));
        if step != "run-pod-sandbox:after-record" {
            assert!(
                !ids.is_empty(),
                "{step}: the crash left pod state for recovery to remove"
            );
        }
        recover_from_crash(&mut d, step).await;

        let listed = d.pods().await;
        assert!(listed.is_empty(), "{step}: {listed:?}");
        assert!(
            util::dir_entries(&d.state.join("ns")).is_empty(),
            "{step}: pinned namespaces left"
        );
        assert!(
            util::dir_entries(&d.state.join("pods")).is_empty(),
            "{step}: pod files left"
        );
        assert!(
            util::dir_entries(&d.cni_cache_dir.join("results")).is_empty(),
            "{step}: CNI cache left"
        );
        assert!(
            net.allocated_ips().is_empty(),
            "{step}: IPs left: {:?}",
            net.allocated_ips()
        );
        assert!(net.veths().is_empty(), "{step}: veths left: {:?}", net.veths());
        for id in &ids {
            assert!(
                pods::pod_cgroup_dirs(id).is_empty(),
                "{step}: cgroup of {id} left"
            );
        }

        let id = d
            .runtime
            .run_pod_sandbox(req())
            .await
            .unwrap_or_else(|e| panic!("{step}: retry: {e}"))
            .into_inner()
            .pod_sandbox_id;
        d.stop_pod(&id).await.unwrap();
        d.remove_pod(&id).await.unwrap();
    }
}

#[tokio::test]
async fn crash_inside_create_container_leaks_nothing_and_the_retry_succeeds() {
    let mut w = World::new().await.unwrap();
    let _cleanup = PodCleanup::new(&w.d);
    let containers = w.d.state.join("containers");
    for step in [
        "create-container:after-lease",
        "create-container:after-mount",
        "create-container:after-spec",
    ] {
        arm(&mut w.d, step).await;
        let cfg = w.config("crashy", &["sh", "-c", "sleep 1000"]);
        assert!(w.create(cfg.clone()).await.is_err(), "{step}");
        if step != "create-container:after-lease" {
            assert!(
                !util::dir_entries(&containers).is_empty(),
                "{step}: the crash left a bundle for recovery to remove"
            );
        }
        recover_from_crash(&mut w.d, step).await;

        let listed = w.d.containers().await;
        assert!(listed.is_empty(), "{step}: {listed:?}");
        let left = w.d.container_leftovers();
        assert!(left.is_empty(), "{step}: left {left:?}");
        let mounts: Vec<_> = util::mounts_under(&containers);
        assert!(mounts.is_empty(), "{step}: mounts left: {mounts:?}");
        let shims = util::pids_mentioning(&containers.to_string_lossy());
        assert!(shims.is_empty(), "{step}: shim processes left: {shims:?}");
        assert!(
            pods::container_cgroup_dirs(&w.pod).is_empty(),
            "{step}: container cgroups left"
        );

        let id = w
            .create(cfg)
            .await
            .unwrap_or_else(|e| panic!("{step}: retry: {e}"));
        w.start(&id).await.unwrap();
        let out = w.exec(&id, &["echo", "ok"], 10).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
        w.stop(&id, 0).await.unwrap();
        w.remove(&id).await.unwrap();
    }
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn crash_inside_start_container_keeps_the_built_container_startable() {
    let mut w = World::new().await.unwrap();
    let _cleanup = PodCleanup::new(&w.d);
    let id = w
        .create(w.config("half-started", &["sh", "-c", "sleep 1000"]))
        .await
        .unwrap();
    let step = "start-container:after-shim";
    arm(&mut w.d, step).await;
    // The armed restart kept the created container.
    assert_eq!(w.state(&id).await.state(), ContainerState::ContainerCreated);
    assert!(w.start(&id).await.is_err(), "{step}");
    assert!(
        !util::pids_mentioning(&id).is_empty(),
        "{step}: the shim the start spawned runs on"
    );
    recover_from_crash(&mut w.d, step).await;

    // Recovery adopted the shim: still CREATED, now with the init pid, and startable once.
    let s = w.state(&id).await;
    assert_eq!(s.state(), ContainerState::ContainerCreated);
    assert!(w.pid(&id).await > 0);
    w.start(&id).await.unwrap();
    assert_eq!(w.state(&id).await.state(), ContainerState::ContainerRunning);
    let out = w.exec(&id, &["echo", "ok"], 10).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    w.stop(&id, 0).await.unwrap();
    w.remove(&id).await.unwrap();
    // The teardown runs in the background after the answer; the shim exits once shut down.
    w.wait_torn_down(&id).await.unwrap();
    for _ in 0..100 {
        if util::pids_mentioning(&id).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(util::pids_mentioning(&id).is_empty(), "processes left");
    assert!(
        pods::container_cgroup_dirs(&w.pod).is_empty(),
        "container cgroups left"
    );
    assert!(
        util::dir_entries(&w.d.state.join("containers")).is_empty(),
        "bundles left"
    );
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn create_container_retried_after_a_client_deadline_gets_one_container() {
    let mut w = World::new().await.unwrap();
    let _cleanup = PodCleanup::new(&w.d);
    let cfg = w.config("late", &["sh", "-c", "sleep 1000"]);
    // The daemon holds every create at its spec step for 0.5 s (test-only delay hook), so the
    // client's deadline surely passes while the create is under way.
    w.d.stop().await.unwrap();
    w.d.env = vec![(
        "CRIUS_TEST_DELAY_AT".to_string(),
        "create-container:after-spec".to_string(),
    )];
    w.d.restart().await.unwrap();
    let mut req = tonic::Request::new(CreateContainerRequest {
        pod_sandbox_id: w.pod.clone(),
        config: Some(cfg.clone()),
        sandbox_config: Some(w.pod_config()),
    });
    req.set_timeout(std::time::Duration::from_millis(100));
    let first = w.d.runtime.create_container(req).await;
    // The kubelet retries with the same metadata: it gets the container the first attempt made,
    // never AlreadyExists.
    let gave_up = first.unwrap_err().code();
    assert!(
        matches!(gave_up, tonic::Code::DeadlineExceeded | tonic::Code::Cancelled),
        "the client gave up first: {gave_up:?}"
    );
    let id = w.create(cfg.clone()).await.unwrap();
    assert!(
        w.d.log()
            .contains("handing a create that finished after its client gave up"),
        "the retry got the first attempt's container"
    );
    let listed = w.d.containers().await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, id);
    assert_eq!(
        util::dir_entries(&w.d.state.join("containers")),
        vec![id.clone()],
        "no second bundle"
    );
    w.start(&id).await.unwrap();
    // Handed out once: a later duplicate create is refused with the holder's id.
    let e = w.create(cfg).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists);
    assert!(e.message().contains(&id));
    w.teardown().await.unwrap();
}

/// The daemon's database file and the two tables a container owns rows in (its record, its
/// image lease): the on-disk contract of the store.
#[tokio::test]
async fn create_and_remove_that_answered_survive_a_sigkill() {
    let mut w = World::new().await.unwrap();
    let _cleanup = PodCleanup::new(&w.d);
    let cfg = w.config("durable", &["sh", "-c", "sleep 1000"]);
    let id = w.create(cfg).await.unwrap();
    w.d.kill().await.unwrap();
    // The lease commits without its own fsync; the record's commit, before the answer, carries it.
    let (records, leases) = records_and_leases(&w.d.root);
    assert_eq!(records, vec![id.clone()], "the record is on disk");
    assert_eq!(leases, vec![id.clone()], "the image lease is on disk");

    w.d.restart().await.unwrap();
    assert_eq!(w.state(&id).await.state(), ContainerState::ContainerCreated);
    w.start(&id).await.unwrap();
    let out = w.exec(&id, &["echo", "ok"], 10).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    w.stop(&id, 0).await.unwrap();
    w.remove(&id).await.unwrap();
    w.d.kill().await.unwrap();
    // The record's removal is durable at the answer. The lease goes with the teardown, which
    // runs in the background after the answer (and commits without its own fsync): it may be
    // on disk still, for recovery to release.
    let (records, _) = records_and_leases(&w.d.root);
    assert!(records.is_empty(), "removed record back: {records:?}");

    w.d.restart().await.unwrap();
    let listed = w.d.containers().await;
    assert!(listed.is_empty(), "{listed:?}");
    let containers = w.d.state.join("containers");
    assert!(util::dir_entries(&containers).is_empty(), "bundles left");
    assert!(
        util::dir_entries(&w.d.state.join("youki")).is_empty(),
        "libcontainer state left"
    );
    assert!(
        pods::container_cgroup_dirs(&w.pod).is_empty(),
        "container cgroups left"
    );
    // Recovery released the lease (no fsync of its own); the next durable commit, this create's
    // record, carries it to the disk.
    let probe = w.create(w.config("probe", &["sleep", "1000"])).await.unwrap();
    w.d.kill().await.unwrap();
    let (_, leases) = records_and_leases(&w.d.root);
    assert_eq!(leases, vec![probe], "released lease back");
    w.d.restart().await.unwrap();
    w.teardown().await.unwrap();
}
