//! Users and groups from the security context, checked with `id` inside the container and in
//! ContainerStatus `user.linux`: RunAsUser, RunAsUserName (the image's /etc/passwd), RunAsGroup
//! (refused without a user), SupplementalGroups merged with the image's /etc/group (policy
//! Merge) or not (Strict).

use crius_tests::containers::World;
use crius_tests::images::{ImageSpec, Layer};
use crius_tests::pods::PodCleanup;
use crius_tests::security::*;
use k8s_cri::v1::*;

/// busybox whose /etc/group makes www-data (33) a member of `web` (70) and `video` (44).
fn image_with_groups() -> ImageSpec {
    let mut spec = ImageSpec::busybox();
    spec.layers.push(Layer::Files(vec![(
        "etc/group".into(),
        b"root:x:0:\nwww-data:x:33:\nweb:x:70:www-data\nvideo:x:44:alice,www-data\nnogroup:x:65534:\n"
            .to_vec(),
        0o644,
    )]));
    spec
}

async fn ids(
    w: &mut World,
    name: &str,
    sc: LinuxContainerSecurityContext,
) -> (String, String, LinuxContainerUser) {
    let id = w.create(sleeper(w, name, sc)).await.expect("create");
    w.start(&id).await.expect("start");
    let out = exec_ok(w, &id, &["id"]).await;
    let groups = exec_ok(w, &id, &["id", "-G"]).await;
    let user = w.state(&id).await.user.unwrap().linux.unwrap();
    (out.trim().to_string(), groups.trim().to_string(), user)
}

fn int(v: i64) -> Option<Int64Value> {
    Some(Int64Value { value: v })
}

#[tokio::test]
async fn run_as_user_name_and_group() {
    let mut w = World::with_image(image_with_groups()).await.unwrap();
    let _clean = PodCleanup::new(&w.d);

    let (id, _, user) = ids(
        &mut w,
        "uid",
        LinuxContainerSecurityContext {
            run_as_user: int(1234),
            ..Default::default()
        },
    )
    .await;
    assert!(id.starts_with("uid=1234 gid=0"), "{id}");
    assert_eq!((user.uid, user.gid), (1234, 0));

    let (id, groups, user) = ids(
        &mut w,
        "name",
        LinuxContainerSecurityContext {
            run_as_username: "www-data".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(id.starts_with("uid=33(www-data) gid=33(www-data)"), "{id}");
    assert_eq!(
        groups, "33 44 70",
        "primary group plus the image's /etc/group memberships"
    );
    assert_eq!((user.uid, user.gid), (33, 33));

    let (id, _, user) = ids(
        &mut w,
        "uid-gid",
        LinuxContainerSecurityContext {
            run_as_user: int(1000),
            run_as_group: int(2000),
            ..Default::default()
        },
    )
    .await;
    assert!(id.starts_with("uid=1000 gid=2000"), "{id}");
    assert_eq!((user.uid, user.gid), (1000, 2000));

    for (name, sc) in [
        (
            "group-only",
            LinuxContainerSecurityContext {
                run_as_group: int(2000),
                ..Default::default()
            },
        ),
        (
            "unknown-name",
            LinuxContainerSecurityContext {
                run_as_username: "nobody-here".into(),
                ..Default::default()
            },
        ),
    ] {
        let err = w.create(sleeper(&w, name, sc)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{name}: {err:?}");
    }
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn supplemental_groups_merge_and_strict() {
    let mut w = World::with_image(image_with_groups()).await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let status =
        w.d.runtime
            .status(StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner();
    assert!(status.features.unwrap().supplemental_groups_policy);

    let (_, groups, user) = ids(
        &mut w,
        "merge",
        LinuxContainerSecurityContext {
            run_as_user: int(33),
            supplemental_groups: vec![1234, 5678],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(groups, "33 44 70 1234 5678");
    let mut sup = user.supplemental_groups.clone();
    sup.sort();
    assert_eq!((user.uid, user.gid, sup), (33, 33, vec![33, 44, 70, 1234, 5678]));

    let (_, groups, user) = ids(
        &mut w,
        "strict",
        LinuxContainerSecurityContext {
            run_as_user: int(33),
            supplemental_groups: vec![1234],
            supplemental_groups_policy: SupplementalGroupsPolicy::Strict as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(groups, "33 1234", "Strict ignores the image's /etc/group");
    let mut sup = user.supplemental_groups.clone();
    sup.sort();
    assert_eq!(sup, vec![33, 1234]);
    w.teardown().await.unwrap();
}
