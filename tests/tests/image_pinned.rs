//! `pinned_images` in the configuration: ListImages and ImageStatus report the images it names
//! (by tag or by digest) as pinned, and no other.

use crius_tests::images::{self, ImageSpec};
use crius_tests::{Daemon, DaemonOptions, Registry};
use k8s_cri::v1::*;

#[tokio::test]
async fn configured_images_are_pinned_by_tag_and_by_digest() {
    let reg = Registry::start().unwrap();
    let by_tag = images::push(&reg, "pin/tagged", "1", &ImageSpec::busybox())
        .await
        .unwrap();
    let by_digest = images::push(&reg, "pin/digested", "1", &ImageSpec::busybox_user("nobody"))
        .await
        .unwrap();
    let loose = images::push(&reg, "pin/loose", "1", &ImageSpec::busybox_with_random_mb(1))
        .await
        .unwrap();
    let digest_ref = format!("{}@{}", by_digest.repository, by_digest.manifest_digest);
    let mut d = Daemon::start_with(DaemonOptions {
        top_config: format!("pinned_images = [{:?}, {digest_ref:?}]\n", by_tag.reference),
        ..Default::default()
    })
    .await
    .unwrap();
    for p in [&by_tag, &by_digest, &loose] {
        images::pull(&mut d.images, &p.reference).await.unwrap();
    }

    let listed = d
        .images
        .list_images(ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images;
    let pinned = |id: &str| listed.iter().find(|i| i.id == id).map(|i| i.pinned);
    assert_eq!(pinned(&by_tag.config_digest), Some(true));
    assert_eq!(pinned(&by_digest.config_digest), Some(true));
    assert_eq!(pinned(&loose.config_digest), Some(false));

    for (name, want) in [(&by_tag.reference, true), (&loose.reference, false)] {
        let status = d
            .images
            .image_status(ImageStatusRequest {
                image: Some(k8s_cri::v1::ImageSpec {
                    image: name.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.image.unwrap().pinned, want, "{name}");
    }
}
