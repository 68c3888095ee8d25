//! RemoveContainer answers once the record's removal is on disk and tears the container down in
//! the background: at the answer the container is NotFound, unlisted and its name free; a
//! RemovePodSandbox right after it still leaves no cgroup, mount, bundle or writable layer; and
//! a crash right after the answer (the teardown held by the test-only delay hook) never brings
//! the container back, while recovery removes what it left.

use crius_tests::containers::World;
use crius_tests::daemon_db::records_and_leases;
use crius_tests::pods::{self, PodCleanup};
use crius_tests::util;
use k8s_cri::v1::*;
use tonic::Code;

/// Processes mentioning `needle`, after giving shims that were just shut down up to 2 s to exit.
async fn pids_after_reaping(needle: &str) -> Vec<i32> {
    for _ in 0..100 {
        if util::pids_mentioning(needle).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    util::pids_mentioning(needle)
}

/// A started-then-stopped container named `name`: what the kubelet removes.
async fn exited(w: &mut World, name: &str) -> String {
    let id = w.run(name, &["sleep", "1000"]).await;
    w.stop(&id, 0).await.unwrap();
    id
}

#[tokio::test]
async fn a_removed_container_is_gone_at_the_answer_and_the_pod_removal_right_after_leaves_nothing() {
    let mut w = World::new().await.unwrap();
    let _cleanup = PodCleanup::new(&w.d);
    let id = exited(&mut w, "app").await;
    w.remove(&id).await.unwrap();

    // At the answer, whatever the teardown still does in the background.
    assert_eq!(w.status(&id).await.unwrap_err().code(), Code::NotFound);
    let listed = w.d.containers().await;
    assert!(listed.iter().all(|c| c.id != id), "{listed:?}");
    let again = w.create(w.config("app", &["sleep", "1000"])).await.unwrap();
    assert_ne!(again, id);
    w.remove(&id).await.unwrap();

    // A running one, removed (stopped first), and the pod removed at once after it.
    w.start(&again).await.unwrap();
    w.remove(&again).await.unwrap();
    let pod = w.pod.clone();
    let cgroups = pods::pod_cgroup_dirs(&pod);
    assert!(!cgroups.is_empty(), "the pod has cgroups to check");
    w.d.stop_pod(&pod).await.unwrap();
    w.d.remove_pod(&pod).await.unwrap();

    assert!(pods::pod_cgroup_dirs(&pod).is_empty(), "pod cgroups left");
    let containers = w.d.state.join("containers");
    let mounts = util::mounts_under(&w.d.state);
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    let left = w.d.container_leftovers();
    assert!(left.is_empty(), "left: {left:?}");
    let shims = pids_after_reaping(&containers.to_string_lossy()).await;
    assert!(shims.is_empty(), "shim processes left: {shims:?}");
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn a_crash_right_after_the_answer_never_brings_the_container_back() {
    let mut w = World::new().await.unwrap();
    let _cleanup = PodCleanup::new(&w.d);
    // Every background teardown waits 0.5 s first (test-only delay hook): the crash below
    // surely comes between the answer and the teardown.
    w.d.stop().await.unwrap();
    w.d.env = vec![(
        "CRIUS_TEST_DELAY_AT".to_string(),
        "remove-container:teardown".to_string(),
    )];
    w.d.restart().await.unwrap();
    let id = exited(&mut w, "doomed").await;
    let keep = w.run("kept", &["sleep", "1000"]).await;

    w.remove(&id).await.unwrap();
    w.d.kill().await.unwrap();
    let bundle = w.d.state.join("containers").join(&id);
    assert!(bundle.exists(), "the crash came before the teardown");
    let (records, _) = records_and_leases(&w.d.root);
    assert_eq!(records, vec![keep.clone()], "the removed record is not on disk");

    w.d.env.clear();
    w.d.restart().await.unwrap();
    assert_eq!(w.status(&id).await.unwrap_err().code(), Code::NotFound);
    let listed: Vec<String> = w.d.containers().await.into_iter().map(|c| c.id).collect();
    assert_eq!(listed, vec![keep.clone()]);
    // Recovery's orphan sweep removed the leftovers; the other container is untouched.
    assert!(!bundle.exists(), "bundle left");
    let left: Vec<String> =
        w.d.container_leftovers()
            .into_iter()
            .filter(|l| l.ends_with(&id))
            .collect();
    assert!(left.is_empty(), "left: {left:?}");
    let mounts: Vec<_> = util::mounts_under(&w.d.state)
        .into_iter()
        .filter(|m| m.to_string_lossy().contains(&id))
        .collect();
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    let cgroups: Vec<_> = pods::container_cgroup_dirs(&w.pod)
        .into_iter()
        .filter(|c| c.ends_with(&id))
        .collect();
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    let shims = pids_after_reaping(&id).await;
    assert!(shims.is_empty(), "shim of {id} left: {shims:?}");
    assert_eq!(w.state(&keep).await.state(), ContainerState::ContainerRunning);
    // Recovery released the orphan lease without an fsync of its own; the next durable commit
    // (this create's record) carries it to the disk.
    let probe = w.create(w.config("probe", &["sleep", "1000"])).await.unwrap();
    w.d.kill().await.unwrap();
    let (mut records, leases) = records_and_leases(&w.d.root);
    records.sort();
    let mut live = vec![keep.clone(), probe.clone()];
    live.sort();
    assert_eq!(records, live);
    assert!(
        !leases.contains(&id),
        "the removed container's lease is back: {leases:?}"
    );
    w.d.restart().await.unwrap();
    w.teardown().await.unwrap();
}
