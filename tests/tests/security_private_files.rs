//! Private files: a local unprivileged user (`setpriv --reuid=65534`, nobody) can neither read
//! the database nor a container's spec or shim config, nor run a setuid binary that a pulled
//! layer carries; modes an older crius left open are tightened when the daemon starts.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crius_tests::containers::World;
use crius_tests::images::{BUSYBOX, ImageSpec, Layer};
use crius_tests::util;
use k8s_cri::v1::KeyValue;

const SUID: &str = "bin/suid-busybox";

/// Runs `args` as nobody, with no supplementary groups. A shell in between execs `args`:
/// setpriv itself still holds root's capabilities when it calls execve, so its own exec would
/// search root-only directories that nobody cannot.
fn as_nobody(args: &[&Path]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["/bin/sh", "-c", "exec \"$@\"", "sh"])
        .args(args)
        .output()
        .expect("running setpriv")
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// busybox plus a setuid-root copy of busybox in its own layer.
fn suid_image() -> ImageSpec {
    let mut spec = ImageSpec::busybox();
    let busybox = std::fs::read(BUSYBOX).unwrap();
    spec.layers
        .push(Layer::Files(vec![(SUID.into(), busybox, 0o4755)]));
    spec
}

/// The unpacked layer directory holding the setuid copy.
fn suid_in_layers(root: &Path) -> PathBuf {
    std::fs::read_dir(root.join("layers"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join(SUID))
        .find(|p| p.exists())
        .expect("the setuid layer is unpacked")
}

/// Every entry whose mode the daemon promises, with that mode.
fn promised(w: &World, id: &str) -> Vec<(PathBuf, u32)> {
    let (root, state) = (&w.d.root, &w.d.state);
    let bundle = state.join("containers").join(id);
    vec![
        (root.clone(), 0o700),
        // Searchable, not listable: a pod user namespace's root reaches its files by path.
        (state.clone(), 0o711),
        (root.join("crius.redb"), 0o600),
        (root.join("content"), 0o700),
        (root.join("layers"), 0o700),
        (root.join("containers"), 0o700),
        (root.join("containers").join(id), 0o700),
        (state.join("containers"), 0o711),
        (state.join("youki"), 0o700),
        (state.join("pods"), 0o711),
        (state.join("ns"), 0o711),
        (bundle.clone(), 0o700),
        (bundle.join("config.json"), 0o600),
        (bundle.join("shim"), 0o700),
        (bundle.join("shim/shim.json"), 0o600),
        (bundle.join("shim/ctl.sock"), 0o600),
        (w.d.socket.clone(), 0o600),
    ]
}

#[tokio::test]
async fn an_unprivileged_user_reads_no_state_and_runs_no_setuid_binary_from_a_layer() {
    let mut w = World::with_image(suid_image()).await.unwrap();
    let mut cfg = w.config("private", &["sleep", "3600"]);
    cfg.envs = vec![KeyValue {
        key: "API_TOKEN".into(),
        value: "s3cr3t-token".into(),
    }];
    let id = w.create(cfg).await.unwrap();
    w.start(&id).await.unwrap();
    // tempfile made the test's own directory 0700; open it so that only the modes crius sets
    // stand between nobody and its state.
    chmod(&w.d.dir, 0o755);
    let control = w.d.dir.join("config.toml");
    assert!(
        as_nobody(&[Path::new("/bin/cat"), &control]).status.success(),
        "setpriv control"
    );

    for (path, want) in promised(&w, &id) {
        assert_eq!(mode(&path), want, "{}", path.display());
    }
    // The next create takes a writable layer made ahead of time (layer_spares.rs): it has the
    // modes of one the create makes itself.
    let spares = w.d.root.join("layer-spares");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while util::dir_entries(&spares).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no spare writable layer was made"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(mode(&spares), 0o700, "{}", spares.display());
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let ready: Vec<u64> = util::dir_entries(&spares)
        .iter()
        .map(|n| inode(&spares.join(n)))
        .collect();
    let second = w.config("second", &["sleep", "3600"]);
    let second = w.create(second).await.unwrap();
    let layer = w.d.root.join("containers").join(&second);
    assert!(ready.contains(&inode(&layer)), "the create took a spare set");
    for (path, want) in [
        (layer.clone(), 0o700),
        (layer.join("work"), 0o700),
        (layer.join("upper"), 0o755),
    ] {
        assert_eq!(mode(&path), want, "{}", path.display());
    }
    let bundle = w.d.state.join("containers").join(&id);
    let spec = bundle.join("config.json");
    assert!(std::fs::read_to_string(&spec).unwrap().contains("s3cr3t-token"));
    for secret in [w.d.root.join("crius.redb"), spec, bundle.join("shim/shim.json")] {
        let out = as_nobody(&[Path::new("/bin/cat"), &secret]);
        assert!(!out.status.success(), "nobody read {}", secret.display());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{}: {}",
            secret.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let in_layer = suid_in_layers(&w.d.root);
    assert_eq!(mode(&in_layer) & 0o4000, 0o4000, "the layer keeps the setuid bit");
    let in_rootfs = bundle.join("rootfs").join(SUID);
    assert_eq!(mode(&in_rootfs) & 0o4000, 0o4000);
    for suid in [&in_layer, &in_rootfs] {
        let out = as_nobody(&[suid.as_path(), Path::new("id"), Path::new("-u")]);
        assert!(
            !out.status.success() && !String::from_utf8_lossy(&out.stdout).contains('0'),
            "nobody ran {}: {:?}",
            suid.display(),
            out
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn modes_left_open_are_tightened_at_start_up() {
    let mut w = World::new().await.unwrap();
    let id = w.run("tighten", &["sleep", "3600"]).await;
    w.d.stop().await.unwrap();
    // What an older crius (0711/0755 directories, 0644 files) left behind.
    let entries = promised(&w, &id);
    for (path, _) in &entries {
        if path == &w.d.socket {
            continue;
        }
        chmod(path, if path.is_dir() { 0o755 } else { 0o644 });
    }
    w.d.restart().await.unwrap();
    for (path, want) in &entries {
        assert_eq!(mode(path), *want, "{} after restart", path.display());
    }
    // The container's own `/` is not the daemon's to tighten.
    let upper = w.d.root.join("containers").join(&id).join("upper");
    assert_eq!(mode(&upper), 0o755);
    assert_eq!(
        w.state(&id).await.state,
        k8s_cri::v1::ContainerState::ContainerRunning as i32
    );
    w.teardown().await.unwrap();
}
