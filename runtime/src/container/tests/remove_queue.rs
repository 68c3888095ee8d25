//! RemoveContainer through the background teardown queue: the container is gone for every
//! reader at the answer and its name free, the teardown follows (retried when a step fails),
//! a full queue makes the remove tear down inline, and the pod's removal finishes what is left.

use std::time::Duration;

use super::fakes::MountCall;
use super::*;
use crate::container::ContainerError;

/// A fixture whose `Containers` holds up to `capacity` background teardowns.
fn queued(capacity: usize) -> Fixture {
    let mut f = Fixture::new();
    f.c = Arc::new(
        Containers::new(
            f.db.clone(),
            f.images.clone(),
            &f.dir.path().join("root"),
            &f.dir.path().join("state"),
        )
        .unwrap()
        .with_seams(f.shim.clone(), f.mounter.clone(), f.cgroups.clone())
        .with_teardown_capacity(capacity),
    );
    f
}

/// Created, started and stopped: what the kubelet removes.
async fn exited(f: &Fixture, name: &str) -> String {
    let id = f.c.create(&f.pod(), config(name)).await.unwrap();
    f.c.start(&id).await.unwrap();
    f.c.stop(&id, 0).await.unwrap();
    id
}

/// Waits (bounded) until the fake mounter was asked to unmount `target`.
async fn unmount_tried(f: &Fixture, target: &Path) {
    let asked = || f.mounter.calls().contains(&MountCall::Unmount(target.into()));
    for _ in 0..500 {
        if asked() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} was never unmounted", target.display());
}

#[tokio::test]
async fn a_queued_remove_answers_with_the_container_gone_and_the_teardown_follows() {
    let f = queued(4);
    let id = exited(&f, "app").await;
    f.c.remove(&id).await.unwrap();

    assert!(f.record(&id).is_none(), "the record went before the answer");
    let err = f.c.status(&id, false).await.unwrap_err();
    assert!(matches!(err, ContainerError::NotFound(_)), "{err:?}");
    assert!(f.c.list(None).await.unwrap().is_empty());
    // The name is free at once, and a second remove of the same id succeeds.
    let again = f.c.create(&f.pod(), config("app")).await.unwrap();
    f.c.remove(&id).await.unwrap();

    f.c.finish_pod_teardowns(POD).await.unwrap();
    assert!(!f.c.bundle_dir(&id).exists() && !f.c.layer_dir(&id).exists() && !f.leased(&id));
    // The new container of the same name is untouched by the old one's teardown.
    assert!(f.record(&again).is_some());
    assert_eq!(f.mounter.mounted(), vec![f.c.rootfs_dir(&again)]);

    f.c.remove(&again).await.unwrap();
    f.c.finish_pod_teardowns(POD).await.unwrap();
    f.assert_gone(&id);
    f.assert_gone(&again);
    assert_eq!(f.c.teardowns.len(), 0);
}

#[tokio::test]
async fn a_full_queue_makes_the_remove_tear_down_inline() {
    let f = queued(1);
    let first = exited(&f, "first").await;
    let second = exited(&f, "second").await;
    // The first teardown fails once (busy mount) and waits for its retry, holding the only place.
    f.mounter.fail_unmounts(1, nix::errno::Errno::EBUSY);
    f.c.remove(&first).await.unwrap();
    unmount_tried(&f, &f.c.rootfs_dir(&first)).await;
    assert_eq!(f.c.teardowns.len(), 1);

    f.c.remove(&second).await.unwrap();
    // No place: the second remove tore down before it answered.
    assert!(f.record(&second).is_none());
    assert!(!f.c.bundle_dir(&second).exists() && !f.c.layer_dir(&second).exists());
    assert!(!f.leased(&second));
    assert!(
        f.mounter.mounted().contains(&f.c.rootfs_dir(&first)),
        "first still waits"
    );

    // The retry finishes the first.
    f.c.finish_pod_teardowns(POD).await.unwrap();
    f.assert_gone(&first);
    assert_eq!(f.c.teardowns.len(), 0);
}

#[tokio::test]
async fn a_teardown_that_keeps_failing_is_finished_by_the_pods_removal() {
    let f = queued(4);
    let id = exited(&f, "app").await;
    // The first attempt and every retry fail, then the pod's removal's own attempt once more.
    f.mounter.fail_unmounts(5, nix::errno::Errno::EBUSY);
    f.c.remove(&id).await.unwrap();
    assert!(f.record(&id).is_none());

    let err = f.c.finish_pod_teardowns(POD).await.unwrap_err();
    assert!(
        matches!(&err, ContainerError::Io { what: "unmount", .. }),
        "{err:?}"
    );
    // Nothing under the still-mounted rootfs went; its layers stay leased; the failed teardown
    // keeps its place for the pod removal's retry.
    assert!(f.c.bundle_dir(&id).is_dir() && f.leased(&id));
    assert_eq!(f.c.teardowns.len(), 1);

    f.c.finish_pod_teardowns(POD).await.unwrap();
    f.assert_gone(&id);
    assert_eq!(f.c.teardowns.len(), 0);
}

/// Layer directories in the fixture's layer store.
fn layer_dirs(f: &Fixture) -> usize {
    std::fs::read_dir(f.dir.path().join("root/layers"))
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn an_image_removed_before_the_teardown_is_freed_once_the_lease_goes() {
    let f = queued(4);
    let id = exited(&f, "app").await;
    assert_eq!(layer_dirs(&f), 2);
    // RemoveImage while the container still holds its lease: the layers stay.
    f.images.remove(IMAGE).unwrap();
    assert_eq!(layer_dirs(&f), 2, "leased layers stay");

    f.c.remove(&id).await.unwrap();
    f.c.finish_pod_teardowns(POD).await.unwrap();
    // The release, a moment after the answer, found the image gone and ran the GC.
    assert!(!f.leased(&id));
    assert_eq!(layer_dirs(&f), 0, "layers freed with the lease");
}
