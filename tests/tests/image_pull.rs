//! PullImage / ImageStatus / ListImages against the real local registry: every reference form,
//! tags of one image, mirrors (including `fallback = false` for a host that does not exist),
//! gzip/zstd/raw layers, and concurrent pulls of one image.

use crius_tests::images::{self, Compression, ImageSpec, Pushed, pull};
use crius_tests::{Daemon, DaemonOptions, Registry};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

fn spec(image: &str) -> Option<k8s_cri::v1::ImageSpec> {
    Some(k8s_cri::v1::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

async fn status(c: &mut ImageServiceClient<Channel>, image: &str, verbose: bool) -> ImageStatusResponse {
    c.image_status(ImageStatusRequest {
        image: spec(image),
        verbose,
    })
    .await
    .unwrap()
    .into_inner()
}

async fn list(c: &mut ImageServiceClient<Channel>, filter: Option<&str>) -> Vec<Image> {
    c.list_images(ListImagesRequest {
        filter: filter.map(|f| ImageFilter { image: spec(f) }),
    })
    .await
    .unwrap()
    .into_inner()
    .images
}

#[tokio::test]
async fn tag_digest_and_untagged_references_make_one_image_found_every_way() {
    let reg = Registry::start().unwrap();
    let bb = ImageSpec::busybox();
    let mut pushed: Vec<Pushed> = Vec::new();
    for tag in ["1.0", "latest", "stable"] {
        pushed.push(images::push(&reg, "test/busybox", tag, &bb).await.unwrap());
    }
    let p = &pushed[0];
    let mut d = Daemon::start().await.unwrap();
    let c = &mut d.images;

    // Tag, no tag (→ latest), another tag: same content, one image with three tags.
    assert_eq!(pull(c, &p.reference).await.unwrap(), p.config_digest);
    assert_eq!(pull(c, &p.repository).await.unwrap(), p.config_digest);
    assert_eq!(
        pull(c, &format!("{}:stable", p.repository)).await.unwrap(),
        p.config_digest
    );
    let by_digest = format!("{}@{}", p.repository, p.manifest_digest);
    assert_eq!(pull(c, &by_digest).await.unwrap(), p.config_digest);

    let all = list(c, None).await;
    assert_eq!(all.len(), 1, "{all:?}");
    let img = &all[0];
    assert_eq!(img.id, p.config_digest);
    let mut tags = img.repo_tags.clone();
    tags.sort();
    assert_eq!(
        tags,
        vec![
            format!("{}:1.0", p.repository),
            format!("{}:latest", p.repository),
            format!("{}:stable", p.repository)
        ]
    );
    assert_eq!(
        img.repo_digests,
        vec![by_digest.clone()],
        "the digest each tag resolved to"
    );
    assert!(img.size > 0);
    assert_eq!(img.spec.as_ref().unwrap().image, p.config_digest);

    let hex = p.config_digest.trim_start_matches("sha256:");
    for q in [
        p.config_digest.as_str(),
        hex,
        &hex[..12],
        &p.reference,
        &format!("{}:stable", p.repository),
        &p.repository,
        &by_digest,
    ] {
        let s = status(c, q, false).await;
        assert_eq!(
            s.image.as_ref().map(|i| i.id.as_str()),
            Some(p.config_digest.as_str()),
            "{q}"
        );
        assert_eq!(list(c, Some(q)).await.len(), 1, "filter {q}");
    }

    let unknown = status(c, &format!("{}:nope", p.repository), false).await;
    assert!(unknown.image.is_none());
    assert!(list(c, Some("busybox:nope")).await.is_empty());

    let verbose = status(c, &p.reference, true).await;
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    assert_eq!(info["chainID"], p.diff_ids[0], "one layer: chain ID = diff ID");
    assert_eq!(info["imageSpec"]["rootfs"]["diff_ids"][0], p.diff_ids[0]);
    assert_eq!(info["imageSpec"]["config"]["Cmd"][0], "sh");

    // The layer is unpacked once, under its chain ID, with busybox inside.
    let layer = d
        .root
        .join("layers")
        .join(p.diff_ids[0].trim_start_matches("sha256:"));
    assert!(layer.join("bin/busybox").is_file());
    assert!(
        std::fs::symlink_metadata(layer.join("bin/sh"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[tokio::test]
async fn pull_by_digest_records_exactly_that_digest_and_no_tag() {
    let reg = Registry::start().unwrap();
    let p = images::push(&reg, "bydigest", "1", &ImageSpec::busybox())
        .await
        .unwrap();
    let mut d = Daemon::start().await.unwrap();
    let by_digest = format!("{}@{}", p.repository, p.manifest_digest);
    assert_eq!(pull(&mut d.images, &by_digest).await.unwrap(), p.config_digest);
    let img = status(&mut d.images, &by_digest, false).await.image.unwrap();
    assert!(img.repo_tags.is_empty(), "{:?}", img.repo_tags);
    assert_eq!(img.repo_digests, vec![by_digest]);
}

#[tokio::test]
async fn user_field_maps_to_uid_or_username() {
    let reg = Registry::start().unwrap();
    let mut d = Daemon::start().await.unwrap();
    for (tag, user, uid, name) in [
        ("uid", "1002", Some(1002), ""),
        ("uidgid", "1003:1003", Some(1003), ""),
        ("name", "www-data", None, "www-data"),
        ("namegroup", "www-data:www-data", None, "www-data"),
    ] {
        let p = images::push(&reg, "users", tag, &ImageSpec::busybox_user(user))
            .await
            .unwrap();
        pull(&mut d.images, &p.reference).await.unwrap();
        let img = status(&mut d.images, &p.reference, false).await.image.unwrap();
        assert_eq!(img.uid.map(|u| u.value), uid, "{user}");
        assert_eq!(img.username, name, "{user}");
    }
}

#[tokio::test]
async fn short_names_pull_through_a_docker_io_mirror_and_keep_their_name() {
    let reg = Registry::start().unwrap();
    let p = images::push(&reg, "library/busybox", "latest", &ImageSpec::busybox())
        .await
        .unwrap();
    let mut d = Daemon::start_with(DaemonOptions {
        extra_config: format!(
            "[registry.\"docker.io\"]\nendpoints = [\"http://{}\"]\nfallback = false\n",
            reg.addr
        ),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(pull(&mut d.images, "busybox").await.unwrap(), p.config_digest);
    let img = status(&mut d.images, "docker.io/library/busybox:latest", false)
        .await
        .image
        .unwrap();
    assert_eq!(img.repo_tags, vec!["docker.io/library/busybox:latest"]);
    assert_eq!(
        img.repo_digests,
        vec![format!("docker.io/library/busybox@{}", p.manifest_digest)]
    );
    for q in ["busybox", "busybox:latest", "library/busybox"] {
        assert!(status(&mut d.images, q, false).await.image.is_some(), "{q}");
    }
}

#[tokio::test]
async fn mirror_without_fallback_serves_a_host_that_does_not_exist() {
    // `.invalid` never resolves (RFC 2606); with fallback = false crius must not even try.
    let host = "registry.crius-test.invalid";
    let reg = Registry::start().unwrap();
    let p = images::push(&reg, "pause", "3.9", &ImageSpec::busybox())
        .await
        .unwrap();
    let mut d = Daemon::start_with(DaemonOptions {
        extra_config: format!(
            "[registry.\"{host}\"]\nendpoints = [\"http://{}\"]\nfallback = false\n",
            reg.addr
        ),
        ..Default::default()
    })
    .await
    .unwrap();
    let name = format!("{host}/pause:3.9");
    assert_eq!(pull(&mut d.images, &name).await.unwrap(), p.config_digest);
    let img = status(&mut d.images, &name, false).await.image.unwrap();
    assert_eq!(img.repo_tags, vec![name.clone()]);
    assert_eq!(
        img.repo_digests,
        vec![format!("{host}/pause@{}", p.manifest_digest)]
    );

    // An unknown tag is the mirror's NOT_FOUND, in the registry's words, not a DNS failure.
    let err = pull(&mut d.images, &format!("{host}/pause:missing"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(
        err.message().to_lowercase().contains("manifest unknown"),
        "{}",
        err.message()
    );
    assert!(
        !d.log().contains(&format!("endpoint={host}")),
        "the made-up host was tried"
    );
}

#[tokio::test]
async fn gzip_zstd_and_raw_layers_unpack_to_the_same_tree() {
    let reg = Registry::start().unwrap();
    let mut d = Daemon::start().await.unwrap();
    for (repo, compression) in [
        ("gz", Compression::Gzip),
        ("zst", Compression::Zstd),
        ("raw", Compression::None),
    ] {
        let spec = ImageSpec {
            compression,
            layers: vec![images::Layer::Files(vec![(
                "srv/hello.txt".into(),
                format!("hello {repo}").into_bytes(),
                0o4755,
            )])],
            ..ImageSpec::busybox()
        };
        let p = images::push(&reg, repo, "1", &spec).await.unwrap();
        pull(&mut d.images, &p.reference).await.unwrap();
        let layer = d
            .root
            .join("layers")
            .join(p.diff_ids[0].trim_start_matches("sha256:"));
        let file = layer.join("srv/hello.txt");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("hello {repo}"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777,
            0o4755
        );
    }
}

#[tokio::test]
async fn concurrent_pulls_of_one_image_download_it_once() {
    let reg = Registry::start().unwrap();
    let p = images::push(&reg, "big", "1", &ImageSpec::busybox_with_random_mb(20))
        .await
        .unwrap();
    let d = Daemon::start().await.unwrap();
    let pulls: Vec<_> = (0..3)
        .map(|_| {
            let mut c = d.images.clone();
            let r = p.reference.clone();
            tokio::spawn(async move { pull(&mut c, &r).await })
        })
        .collect();
    for t in pulls {
        assert_eq!(t.await.unwrap().unwrap(), p.config_digest);
    }
    let log = d.log();
    let fetches = log.lines().filter(|l| l.contains("fetching blob")).count();
    assert_eq!(fetches, 3, "config + 2 layers, each fetched once:\n{log}");
    let mut c = d.images.clone();
    assert_eq!(list(&mut c, None).await.len(), 1);
}

/// A whiteout and an opaque directory in an upper layer hide lower content once the layer dirs
/// are stacked by overlayfs, as a container's rootfs will be.
#[tokio::test]
async fn whiteouts_hide_lower_files_under_overlayfs() {
    let reg = Registry::start().unwrap();
    let lower = images::Layer::Files(vec![
        ("etc/gone".into(), b"x".to_vec(), 0o644),
        ("etc/kept".into(), b"k".to_vec(), 0o644),
        ("opaque/old".into(), b"o".to_vec(), 0o644),
    ]);
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind) in [
        ("etc/", tar::EntryType::Directory),
        ("etc/.wh.gone", tar::EntryType::Regular),
        ("opaque/", tar::EntryType::Directory),
        ("opaque/.wh..wh..opq", tar::EntryType::Regular),
        ("opaque/new", tar::EntryType::Regular),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(0);
        h.set_mtime(1);
        h.set_cksum();
        b.append_data(&mut h, name, std::io::empty()).unwrap();
    }
    let upper = images::Layer::RawTar(b.into_inner().unwrap());
    let spec = ImageSpec {
        layers: vec![lower, upper],
        ..ImageSpec::busybox()
    };
    let p = images::push(&reg, "whiteouts", "1", &spec).await.unwrap();
    let mut d = Daemon::start().await.unwrap();
    pull(&mut d.images, &p.reference).await.unwrap();

    let c1 = p.diff_ids[0].clone();
    let c2 = images::sha256_digest(format!("{c1} {}", p.diff_ids[1]).as_bytes());
    let dir = |c: &str| d.root.join("layers").join(c.trim_start_matches("sha256:"));
    let mnt = d.dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // Two lower dirs and no upper dir: a read-only overlay (the Daemon fixture unmounts it).
    let opts = format!("lowerdir={}:{}", dir(&c2).display(), dir(&c1).display());
    nix::mount::mount(
        Some("overlay"),
        &mnt,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(opts.as_str()),
    )
    .unwrap();
    let seen = (
        mnt.join("etc/gone").exists(),
        mnt.join("etc/kept").exists(),
        mnt.join("opaque/old").exists(),
        mnt.join("opaque/new").exists(),
    );
    nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert_eq!(seen, (false, true, false, true), "(gone, kept, old, new)");
}
