//! RemoveImage by tag, repo digest and id against a real daemon: untagging keeps the image while a
//! tag is left, removal frees blobs and layers, and removing twice succeeds.

use crius_tests::images::{self, ImageSpec};
use crius_tests::{Daemon, Registry, util};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

fn spec(image: &str) -> Option<k8s_cri::v1::ImageSpec> {
    Some(k8s_cri::v1::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

async fn pull(c: &mut ImageServiceClient<Channel>, image: &str) -> String {
    images::pull(c, image).await.unwrap()
}

async fn remove(c: &mut ImageServiceClient<Channel>, image: &str) {
    c.remove_image(RemoveImageRequest { image: spec(image) })
        .await
        .unwrap();
}

async fn get(c: &mut ImageServiceClient<Channel>, image: &str) -> Option<Image> {
    c.image_status(ImageStatusRequest {
        image: spec(image),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .image
}

#[tokio::test]
async fn remove_by_tag_then_digest_then_id() {
    let reg = Registry::start().unwrap();
    let bb = ImageSpec::busybox();
    let p = images::push(&reg, "rm/busybox", "a", &bb).await.unwrap();
    images::push(&reg, "rm/busybox", "b", &bb).await.unwrap();
    let mut d = Daemon::start().await.unwrap();
    let c = &mut d.images;
    let tag_b = format!("{}:b", p.repository);
    let digest = format!("{}@{}", p.repository, p.manifest_digest);
    pull(c, &p.reference).await;
    pull(c, &tag_b).await;

    remove(c, &p.reference).await;
    let img = get(c, &p.config_digest).await.expect("a tag is left");
    assert_eq!(img.repo_tags, vec![tag_b.clone()]);
    assert!(get(c, &p.reference).await.is_none());
    remove(c, &p.reference).await; // idempotent

    remove(c, &digest).await;
    let img = get(c, &tag_b)
        .await
        .expect("removing the digest name keeps the tagged image");
    assert!(img.repo_digests.is_empty());

    remove(c, &p.config_digest).await;
    assert!(get(c, &tag_b).await.is_none());
    assert!(
        c.list_images(ListImagesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .images
            .is_empty()
    );
    assert!(
        util::dir_entries(&d.root.join("layers")).is_empty(),
        "layers freed"
    );
    assert!(
        util::dir_entries(&d.root.join("content/blobs/sha256")).is_empty(),
        "blobs freed"
    );
    remove(c, &p.config_digest).await;
    remove(c, "never-pulled:1").await;
}

#[tokio::test]
async fn removing_the_last_tag_removes_the_image_and_a_repull_works() {
    let reg = Registry::start().unwrap();
    let p = images::push(&reg, "rm/once", "1", &ImageSpec::busybox())
        .await
        .unwrap();
    let mut d = Daemon::start().await.unwrap();
    pull(&mut d.images, &p.reference).await;
    remove(&mut d.images, &p.reference).await;
    assert!(get(&mut d.images, &p.config_digest).await.is_none());
    assert!(util::dir_entries(&d.root.join("layers")).is_empty());
    assert_eq!(pull(&mut d.images, &p.reference).await, p.config_digest);
    let layer = d
        .root
        .join("layers")
        .join(p.diff_ids[0].trim_start_matches("sha256:"));
    assert!(layer.join("bin/busybox").is_file());
}

#[tokio::test]
async fn images_survive_a_daemon_restart() {
    let reg = Registry::start().unwrap();
    let p = images::push(&reg, "rm/restart", "1", &ImageSpec::busybox())
        .await
        .unwrap();
    let mut d = Daemon::start().await.unwrap();
    pull(&mut d.images, &p.reference).await;
    d.restart().await.unwrap();
    let img = get(&mut d.images, &p.reference)
        .await
        .expect("image record persisted");
    assert_eq!(img.id, p.config_digest);
    let layer = d
        .root
        .join("layers")
        .join(p.diff_ids[0].trim_start_matches("sha256:"));
    assert!(
        layer.join("bin/busybox").is_file(),
        "start-up GC keeps referenced layers"
    );
}
