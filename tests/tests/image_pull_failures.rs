//! Pulls that fail say why with the right code and leave nothing behind: unknown images, bad
//! references, a corrupted blob in the registry; the next pull of a good image works.

use crius_tests::images::{self, ImageSpec, pull};
use crius_tests::{Daemon, Registry};
use k8s_cri::v1::*;

/// Every file under `dir`, relative.
fn files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    out
}

#[tokio::test]
async fn unknown_images_and_bad_references_fail_with_their_codes() {
    let reg = Registry::start().unwrap();
    let mut d = Daemon::start().await.unwrap();
    let err = pull(&mut d.images, &format!("{}/nothing/here:1", reg.addr))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("unknown"),
        "the registry's words: {}",
        err.message()
    );
    for bad in [
        "",
        "Bad Name!",
        "a@sha256:short",
        &format!("sha256:{}", "a".repeat(64)),
    ] {
        let err = pull(&mut d.images, bad).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}: {err:?}");
    }
    // A registry that is not listening: UNAVAILABLE, not a hang or a panic.
    let port = crius_tests::util::free_port();
    let err = pull(&mut d.images, &format!("127.0.0.1:{port}/x:1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        files(&d.root.join("content"))
            .iter()
            .all(|f| f == "blobs" || f == "blobs/sha256")
    );
}

#[tokio::test]
async fn corrupted_blob_is_rejected_and_leaves_nothing() {
    let reg = Registry::start().unwrap();
    let spec = ImageSpec::busybox_with_random_mb(1);
    let p = images::push(&reg, "corrupt", "1", &spec).await.unwrap();
    // Flip bytes of the random layer's blob in the registry's storage (same size, wrong digest).
    let manifest: serde_json::Value = {
        let (m, _) = images::client()
            .pull_manifest_raw(
                &p.reference.parse().unwrap(),
                &oci_client::secrets::RegistryAuth::Anonymous,
                &[oci_client::manifest::OCI_IMAGE_MEDIA_TYPE],
            )
            .await
            .unwrap();
        serde_json::from_slice(&m).unwrap()
    };
    let layer = manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let blob = reg
        .storage()
        .join("docker/registry/v2/blobs/sha256")
        .join(&layer[..2])
        .join(&layer)
        .join("data");
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    bytes[mid + 1] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();

    let mut d = Daemon::start().await.unwrap();
    let err = pull(&mut d.images, &p.reference).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err:?}");
    assert!(
        err.message().contains(&layer),
        "names the blob: {}",
        err.message()
    );
    let status = d
        .images
        .image_status(ImageStatusRequest {
            image: Some(k8s_cri::v1::ImageSpec {
                image: p.reference.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.is_none(), "no record");
    let left: Vec<String> = files(&d.root.join("content"))
        .into_iter()
        .chain(files(&d.root.join("layers")))
        .filter(|f| f != "blobs" && f != "blobs/sha256")
        .collect();
    assert!(left.is_empty(), "nothing left behind: {left:?}");

    // The daemon is fine: a good image pulls next.
    let good = images::push(&reg, "good", "1", &ImageSpec::busybox())
        .await
        .unwrap();
    assert_eq!(
        pull(&mut d.images, &good.reference).await.unwrap(),
        good.config_digest
    );
}

#[tokio::test]
async fn a_pull_cut_by_the_client_deadline_completes_or_rolls_back_on_its_own() {
    let reg = Registry::start().unwrap();
    let p = images::push(&reg, "deadline", "1", &ImageSpec::busybox_with_random_mb(20))
        .await
        .unwrap();
    let mut d = Daemon::start().await.unwrap();
    let mut req = tonic::Request::new(PullImageRequest {
        image: Some(k8s_cri::v1::ImageSpec {
            image: p.reference.clone(),
            ..Default::default()
        }),
        ..Default::default()
    });
    req.set_timeout(std::time::Duration::from_millis(1));
    // Whether or not the deadline beat the pull, the daemon must end in a clean state.
    let _ = d.images.pull_image(req).await;
    assert_eq!(pull(&mut d.images, &p.reference).await.unwrap(), p.config_digest);
    let temps: Vec<String> = files(&d.root.join("content"))
        .into_iter()
        .chain(files(&d.root.join("layers")))
        .filter(|f| f.contains(".tmp-"))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
    // Layer dirs are keyed by chain ID: c1 = d1, c2 = sha256(c1 + " " + d2).
    let c1 = p.diff_ids[0].clone();
    let c2 = images::sha256_digest(format!("{c1} {}", p.diff_ids[1]).as_bytes());
    for chain in [c1, c2] {
        assert!(
            d.root
                .join("layers")
                .join(chain.trim_start_matches("sha256:"))
                .is_dir(),
            "{chain}"
        );
    }
}
