//! The daemon process: socket mode, refusing a second daemon, stale sockets, SIGTERM, bad configs.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Stdio;

use crius_tests::Daemon;
use crius_tests::util;
use k8s_cri::v1::VersionRequest;

#[tokio::test]
async fn socket_is_root_only() {
    let d = Daemon::start().await.unwrap();
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(d.root.join("crius.redb").is_file(), "database created under root");
}

#[tokio::test]
async fn second_daemon_on_same_socket_refuses() {
    let mut d = Daemon::start().await.unwrap();
    let out = d.command().stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already serving"), "{err}");
    // The first daemon is untouched.
    d.runtime.version(VersionRequest::default()).await.unwrap();
    assert!(d.socket.exists());
}

#[tokio::test]
async fn sigterm_removes_socket_and_exits_zero() {
    let mut d = Daemon::start().await.unwrap();
    let status = d.stop().await.unwrap();
    assert!(status.success(), "{status}");
    assert!(!d.socket.exists(), "socket left behind");
    assert!(d.log().contains("shutting down"), "{}", d.log());
}

#[tokio::test]
async fn stale_socket_from_a_crash_is_replaced() {
    let mut d = Daemon::start().await.unwrap();
    let status = d.kill().await.unwrap();
    assert!(!status.success());
    assert!(d.socket.exists(), "SIGKILL leaves the socket file");
    d.restart().await.unwrap();
    d.runtime.version(VersionRequest::default()).await.unwrap();
}

fn run_with_config(contents: Option<&str>) -> (i32, String) {
    let dir = tempfile::Builder::new()
        .prefix("crius-test-cfg.")
        .tempdir_in("/tmp")
        .unwrap();
    let path = dir.path().join("config.toml");
    if let Some(c) = contents {
        std::fs::write(&path, c).unwrap();
    }
    let out = std::process::Command::new(util::bin("crius"))
        .arg("--config")
        .arg(&path)
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--listen")
        .arg(dir.path().join("state/crius.sock"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_key_exits_2_and_names_it() {
    let (code, err) = run_with_config(Some("[cni]\nconfdir = \"/etc/cni\"\n"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cni.confdir"), "{err}");
}

#[test]
fn wrong_type_exits_2_and_names_it() {
    let (code, err) = run_with_config(Some("[streaming]\nport = \"ten\"\n"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("streaming.port"), "{err}");
}

#[test]
fn unreadable_config_exits_2() {
    let (code, err) = run_with_config(None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot read config file"), "{err}");
}

#[test]
fn default_config_prints_and_loads() {
    let out = std::process::Command::new(util::bin("crius"))
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("root = \"/var/lib/crius\""), "{text}");
    assert!(text.contains("[cni]") && text.contains("[streaming]"), "{text}");

    // The printed file is a valid config: a daemon starts on it (paths overridden by flags).
    let dir = tempfile::Builder::new()
        .prefix("crius-test-cfg.")
        .tempdir_in("/tmp")
        .unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let socket = dir.path().join("state/crius.sock");
    let mut child = std::process::Command::new(util::bin("crius"))
        .arg("--config")
        .arg(&path)
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--listen")
        .arg(format!("unix://{}", socket.display()))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..400 {
        if socket.exists() {
            up = true;
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(up, "daemon did not start on the default config");
    assert!(status.success(), "{status}");
    assert!(!socket.exists());
}
