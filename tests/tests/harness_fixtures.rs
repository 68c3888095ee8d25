//! The harness's own fixtures: the local registry answers, the busybox test images push and
//! pull back with the digests the builder computed, and test networks are allocated.

use crius_tests::Registry;
use crius_tests::images::{self, Compression, ImageSpec};
use crius_tests::pods::TestNet;
use nix::fcntl::{Flock, FlockArg};
use oci_client::secrets::RegistryAuth;

#[tokio::test]
async fn registry_serves_pushed_test_images() {
    let reg = Registry::start().unwrap();
    assert_eq!(reg.get_status("/v2/").unwrap(), 200);
    let specs = [
        ("busybox", ImageSpec::busybox()),
        ("busybox-user", ImageSpec::busybox_user("1002")),
        ("busybox-random", ImageSpec::busybox_with_random_mb(20)),
        (
            "busybox-zstd",
            ImageSpec {
                compression: Compression::Zstd,
                ..ImageSpec::busybox()
            },
        ),
    ];
    for (repo, spec) in specs {
        let pushed = images::push(&reg, repo, "1.0", &spec).await.unwrap();
        let reference: oci_client::Reference = pushed.reference.parse().unwrap();
        let (manifest, digest, config) = images::client()
            .pull_manifest_and_config(&reference, &RegistryAuth::Anonymous)
            .await
            .unwrap();
        assert_eq!(digest, pushed.manifest_digest, "{repo}");
        assert_eq!(manifest.config.digest, pushed.config_digest, "{repo}");
        assert_eq!(manifest.layers.len(), spec.layers.len(), "{repo}");
        let config: serde_json::Value = serde_json::from_str(&config).unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"].as_array().unwrap().len(),
            spec.layers.len()
        );
        if let Some(user) = &spec.user {
            assert_eq!(config["config"]["User"], *user);
        }
    }
    // The random layer makes a ~20 MB image: its blob is at least 20 MiB (incompressible data).
    let tar = images::layer_tar(&images::Layer::Random {
        path: "x".into(),
        bytes: 20 << 20,
        seed: 1,
    })
    .unwrap();
    let (gz, _) = images::compress(&tar, Compression::Gzip).unwrap();
    assert!(
        gz.len() >= 20 << 20,
        "random data must not compress: {}",
        gz.len()
    );
}

#[test]
fn busybox_layer_links_a_shell() {
    let tar = images::layer_tar(&images::Layer::Busybox).unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    for needed in [
        "bin/busybox",
        "bin/sh",
        "bin/sleep",
        "bin/cat",
        "bin/echo",
        "etc/passwd",
        "etc/group",
    ] {
        assert!(
            names.iter().any(|n| n == needed),
            "{needed} missing from the busybox layer"
        );
    }
}

/// Two networks at once get different numbers, so different bridges and subnets; a number stays
/// taken (for every process on the host) while its TestNet lives and is free once it drops.
#[test]
fn test_networks_are_allocated_and_released() {
    let a = TestNet::new();
    let b = TestNet::new();
    assert_ne!(a.n, b.n);
    assert_ne!(a.bridge, b.bridge);
    assert_ne!(a.ip_prefix(), b.ip_prefix());
    let lock = TestNet::lock_path(a.n);
    let free = || {
        let file = std::fs::File::open(&lock).unwrap();
        Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok()
    };
    assert!(!free(), "{} is free while its TestNet lives", lock.display());
    drop(a);
    assert!(
        free(),
        "{} still locked after its TestNet dropped",
        lock.display()
    );
}
