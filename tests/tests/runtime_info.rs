//! Version, Status, RuntimeConfig, ImageFsInfo and UNIMPLEMENTED answers of a real daemon.

use crius_tests::pods::TestNet;
use crius_tests::{Daemon, DaemonOptions};
use k8s_cri::v1::*;

#[tokio::test]
async fn version_names_crius_and_v1() {
    let mut d = Daemon::start().await.unwrap();
    let v = d
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "crius");
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.version, "0.1.0");
}

fn condition(s: &StatusResponse, kind: &str) -> RuntimeCondition {
    s.status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.r#type == kind)
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn network_not_ready_without_cni_config() {
    let mut d = Daemon::start().await.unwrap();
    let s = d
        .runtime
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(condition(&s, "RuntimeReady").status);
    let net = condition(&s, "NetworkReady");
    assert!(!net.status);
    assert_eq!(net.reason, "NetworkPluginNotReady");
    assert!(
        net.message.contains(&d.conf_dir.display().to_string()),
        "{}",
        net.message
    );
    assert!(s.info.is_empty(), "info only when verbose");
}

#[tokio::test]
async fn network_ready_with_cni_config_and_verbose_info() {
    let test_net = TestNet::new();
    let opts = DaemonOptions {
        cni_conflist: Some(test_net.conflist("")),
        ..Default::default()
    };
    let mut d = Daemon::start_with(opts).await.unwrap();
    let s = d
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    assert!(condition(&s, "RuntimeReady").status);
    let net = condition(&s, "NetworkReady");
    assert!(net.status, "{net:?}");
    let config: serde_json::Value = serde_json::from_str(&s.info["config"]).unwrap();
    assert_eq!(config["root"], d.root.display().to_string());
    assert_eq!(config["cni"]["conf_dir"], d.conf_dir.display().to_string());
}

#[tokio::test]
async fn network_goes_ready_when_config_appears() {
    let test_net = TestNet::new();
    let mut d = Daemon::start().await.unwrap();
    let s = d
        .runtime
        .status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!condition(&s, "NetworkReady").status);
    std::fs::write(d.conf_dir.join("10-late.conflist"), test_net.conflist("")).unwrap();
    let s = d
        .runtime
        .status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(condition(&s, "NetworkReady").status);
}

#[tokio::test]
async fn runtime_config_reports_cgroupfs() {
    let mut d = Daemon::start().await.unwrap();
    let r = d
        .runtime
        .runtime_config(RuntimeConfigRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.linux.unwrap().cgroup_driver, CgroupDriver::Cgroupfs as i32);
}

#[tokio::test]
async fn image_fs_info_measures_root() {
    let mut d = Daemon::start().await.unwrap();
    let blobs = d.root.join("content/blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join("feed"), vec![0x5au8; 64 * 1024]).unwrap();
    let r = d
        .images
        .image_fs_info(ImageFsInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    let img = &r.image_filesystems[0];
    assert!(img.timestamp > 0);
    assert_eq!(
        img.fs_id.as_ref().unwrap().mountpoint,
        d.root.display().to_string()
    );
    assert!(img.used_bytes.unwrap().value >= 64 * 1024, "{img:?}");
    assert!(img.inodes_used.unwrap().value >= 4, "{img:?}");
    let ctr = &r.container_filesystems[0];
    assert!(ctr.timestamp > 0);
    assert!(
        ctr.fs_id
            .as_ref()
            .unwrap()
            .mountpoint
            .starts_with(&d.root.display().to_string())
    );
}

/// Every CRI RPC is served now (CheckpointContainer was the last to answer UNIMPLEMENTED): a
/// request that names no container, or an unknown one, gets the same codes as the other verbs.
#[tokio::test]
async fn checkpoint_container_is_served_and_refuses_bad_requests() {
    let mut d = Daemon::start().await.unwrap();
    let e = d
        .runtime
        .checkpoint_container(CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = d
        .runtime
        .checkpoint_container(CheckpointContainerRequest {
            container_id: "0123456789abcdef".into(),
            location: "/tmp/crius-test-never-written.tar".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(!std::path::Path::new("/tmp/crius-test-never-written.tar").exists());
}
