//! CheckpointContainer through the real daemon. Where CRIU works (the test node's Debian 6.1
//! kernel), a container counting in a loop is checkpointed while it keeps counting, and the
//! archive has the layout CRI-O and containerd write: CRIU's images under `checkpoint/`,
//! `config.dump`, `spec.dump`, the writable layer as `rootfs-diff.tar` and `deleted.files`.
//! Where `criu check` fails (newer kernels than bookworm's CRIU knows), the call fails fast with
//! FailedPrecondition and CRIU's reason, and the container is untouched. Either way: a container
//! that is not running, a bad location and a restore request are refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crius_tests::containers::World;
use crius_tests::images::{ImageSpec, Layer};
use k8s_cri::v1::*;
use tonic::Code;

/// The container's loop: deletes an image file (a whiteout), replaces an image dir (an opaque
/// dir), writes a file into its writable layer, then counts into `/count` every 100 ms.
const COUNTER: &str = "rm /keep/gone.txt; rm -rf /data; mkdir /data; echo new > /data/new.txt; \
                       echo hello > /written.txt; i=0; \
                       while true; do i=$((i+1)); echo $i > /count; sleep 0.1; done";

fn image() -> ImageSpec {
    let mut spec = ImageSpec::busybox();
    spec.layers.push(Layer::Files(vec![
        ("keep/gone.txt".into(), b"gone".to_vec(), 0o644),
        ("keep/stays.txt".into(), b"stays".to_vec(), 0o644),
        ("data/doomed.txt".into(), b"doomed".to_vec(), 0o644),
    ]));
    spec
}

/// Whether `criu check` passes on this kernel (the daemon must agree with it).
fn criu_works() -> bool {
    let criu = ["/usr/sbin/criu", "/usr/local/sbin/criu", "/sbin/criu"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let Some(criu) = criu else { return false };
    let mut child = Command::new(criu)
        .arg("check")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run criu check");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("wait for criu check") {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("criu check did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn checkpoint(w: &mut World, id: &str, location: &Path, timeout: i64) -> Result<(), tonic::Status> {
    w.d.runtime
        .checkpoint_container(CheckpointContainerRequest {
            container_id: id.into(),
            location: location.to_string_lossy().into_owned(),
            timeout,
        })
        .await
        .map(|_| ())
}

async fn count(w: &mut World, id: &str) -> u64 {
    let out = w.exec(id, &["cat", "/count"], 10).await.expect("exec cat /count");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("count {:?}: {e}", String::from_utf8_lossy(&out.stdout)))
}

async fn wait_count_above(w: &mut World, id: &str, above: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = w.exec(id, &["cat", "/count"], 10).await.expect("exec");
        if let Ok(n) = String::from_utf8_lossy(&out.stdout).trim().parse::<u64>()
            && n > above
        {
            return n;
        }
        assert!(Instant::now() < deadline, "the counter never passed {above}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tar_list(archive: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .arg("tf")
        .arg(archive)
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "tar tf {}: {}",
        archive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn tar_extract(archive: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let out = Command::new("tar")
        .arg("xf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "tar xf: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn checkpoint_refuses_what_it_cannot_do() {
    let mut w = World::new().await.unwrap();
    let location = w.d.dir.join("refused.tar");

    let unknown = checkpoint(&mut w, "0123456789abcdef", &location, 10)
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    let created = w.create(w.config("created", &["sleep", "600"])).await.unwrap();
    let e = checkpoint(&mut w, &created, &location, 10).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("running"), "{e:?}");

    w.start(&created).await.unwrap();
    let e = checkpoint(&mut w, &created, Path::new("relative/c.tar"), 10)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let missing = w.d.dir.join("missing-dir/c.tar");
    let e = checkpoint(&mut w, &created, &missing, 10).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(!location.exists());

    // CRI-O restores when the image is an archive's path; crius cannot restore yet.
    let mut cfg = w.config("restored", &["sleep", "600"]);
    cfg.image.as_mut().unwrap().image = location.to_string_lossy().into_owned();
    let e = w.create(cfg).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("checkpoint archive"), "{e:?}");
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn a_running_container_is_checkpointed_and_keeps_running() {
    let works = criu_works();
    let mut w = World::with_image(image()).await.unwrap();
    let id = w.run("counter", &["sh", "-c", COUNTER]).await;
    let before = wait_count_above(&mut w, &id, 3).await;
    let location = w.d.dir.join("checkpoints/counter.tar");
    std::fs::create_dir_all(location.parent().unwrap()).unwrap();

    // Printed so a run's output (the test node shows it) says which kernel case was tested.
    if works {
        println!("criu check passes on this kernel: checkpointing a running container");
        checkpointed(&mut w, &id, &location, before).await;
    } else {
        println!("criu check fails on this kernel: expecting a fast FailedPrecondition");
        refused(&mut w, &id, &location, before).await;
    }
    w.teardown().await.unwrap();
}

/// This kernel is newer than the host's CRIU: refused at once, with CRIU's reason, twice (the
/// verdict is cached), and the container runs on.
async fn refused(w: &mut World, id: &str, location: &Path, before: u64) {
    for _ in 0..2 {
        let started = Instant::now();
        let e = checkpoint(w, id, location, 120).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("criu"), "names CRIU: {e:?}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "fast: {:?}",
            started.elapsed()
        );
    }
    assert!(!location.exists(), "no archive");
    assert_eq!(w.state(id).await.state, ContainerState::ContainerRunning as i32);
    assert!(wait_count_above(w, id, before).await > before, "still counting");
}

/// CRIU works: the dump leaves the container running and the archive has the layout.
async fn checkpointed(w: &mut World, id: &str, location: &Path, before: u64) {
    checkpoint(w, id, location, 120).await.unwrap();
    // Leave-running: the container is RUNNING and its counter goes on from where it was.
    assert_eq!(w.state(id).await.state, ContainerState::ContainerRunning as i32);
    let after = count(w, id).await;
    assert!(after >= before, "{after} >= {before}");
    assert!(wait_count_above(w, id, after).await > after, "still counting");

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(location).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the archive holds the spec and env: private");
    let entries = tar_list(location);
    println!("archive: {} entries", entries.len());
    for want in [
        "checkpoint/inventory.img",
        "checkpoint/pstree.img",
        "config.dump",
        "spec.dump",
        "rootfs-diff.tar",
        "deleted.files",
    ] {
        assert!(
            entries.iter().any(|e| e.trim_end_matches('/') == want),
            "{want} in {entries:?}"
        );
    }

    let out = w.d.dir.join("checkpoint-extracted");
    tar_extract(location, &out);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.dump")).unwrap()).unwrap();
    assert_eq!(config["id"], id);
    assert_eq!(config["name"], "counter");
    assert_eq!(config["rootfsImageName"], w.image.as_str());
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("spec.dump")).unwrap()).unwrap();
    assert!(spec["ociVersion"].is_string(), "spec.dump is the OCI spec");
    let deleted: Vec<String> =
        serde_json::from_slice(&std::fs::read(out.join("deleted.files")).unwrap()).unwrap();
    assert!(deleted.contains(&"/keep/gone.txt".to_string()), "{deleted:?}");
    assert!(deleted.contains(&"/data/doomed.txt".to_string()), "{deleted:?}");
    assert!(!deleted.iter().any(|d| d.contains("stays")), "{deleted:?}");
    let diff = tar_list(&out.join("rootfs-diff.tar"));
    for want in ["written.txt", "count", "data/new.txt"] {
        assert!(diff.iter().any(|e| e == want), "{want} in {diff:?}");
    }
    assert!(
        !diff.iter().any(|e| e.contains("gone")),
        "whiteouts stay out: {diff:?}"
    );
    let diff_dir = out.join("rootfs");
    tar_extract(&out.join("rootfs-diff.tar"), &diff_dir);
    assert_eq!(
        std::fs::read_to_string(diff_dir.join("written.txt")).unwrap(),
        "hello\n"
    );
    let saved: u64 = std::fs::read_to_string(diff_dir.join("count"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        saved >= before && saved <= after,
        "{before} <= {saved} <= {after}"
    );

    // Nothing of the work is left in the container's state, and a second checkpoint works.
    let work = w.d.root.join("containers").join(id).join("checkpoint.work");
    assert!(!work.exists(), "{} removed", work.display());
    checkpoint(w, id, location, 120).await.unwrap();

    // Restoring is refused clearly until crius can do it.
    let mut cfg = w.config("restored", &["sleep", "600"]);
    cfg.image.as_mut().unwrap().image = location.to_string_lossy().into_owned();
    let e = w.create(cfg).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
}
