//! CheckpointContainer through the real daemon. Where CRIU works (the test node's Debian 6.1
//! kernel), a container counting in a loop is checkpointed while it keeps counting, and the
//! archive has the layout CRI-O and containerd write: CRIU's images under `checkpoint/`,
//! `config.dump`, `spec.dump`, the writable layer as `rootfs-diff.tar` and `deleted.files`.
//! Where `criu check` fails (newer kernels than bookworm's CRIU knows), the call fails fast with
//! FailedPrecondition and CRIU's reason, and the container is untouched. Either way: a container
//! that is not running and a bad location are refused.
//!
//! Restore: CreateContainer from an archive's path (hand-made archives here, so the host runs
//! it without CRIU) applies the writable layer's changes; hostile or incomplete archives are
//! InvalidArgument with nothing left behind; StartContainer of a container from a hand-made
//! archive fails (FailedPrecondition where CRIU cannot run) and leaves it EXITED. Where CRIU
//! works, the real archive's container is started: its processes are restored and run on.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crius_tests::containers::World;
use crius_tests::images::{ImageSpec, Layer};
use crius_tests::util;
use k8s_cri::v1::*;
use tonic::Code;

/// The container's loop: deletes an image file (a whiteout), replaces an image dir (an opaque
/// dir), writes a file into its writable layer, then counts into `/count` and its log every
/// 100 ms. `/count` is only ever appended to, one line per count ([`last_count`] reads the
/// last): an exec's `cat` or the dump's copy of the writable layer can land anywhere in the
/// loop and must see a whole number, and the loop stays shell builtins plus one child (`sleep`).
const COUNTER: &str = "rm /keep/gone.txt; rm -rf /data; mkdir /data; echo new > /data/new.txt; \
                       echo hello > /written.txt; i=0; \
                       while true; do i=$((i+1)); echo $i >> /count; echo $i; sleep 0.1; done";

/// The count in the text of `/count`: its last line.
fn last_count(text: &[u8]) -> Option<u64> {
    String::from_utf8_lossy(text).lines().last()?.trim().parse().ok()
}

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
    last_count(&out.stdout)
        .unwrap_or_else(|| panic!("no count in {:?}", String::from_utf8_lossy(&out.stdout)))
}

async fn wait_count_above(w: &mut World, id: &str, above: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = w.exec(id, &["cat", "/count"], 10).await.expect("exec");
        if let Some(n) = last_count(&out.stdout)
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

    // CRI-O restores when the image is an archive's path; this one does not exist.
    let mut cfg = w.config("restored", &["sleep", "600"]);
    cfg.image.as_mut().unwrap().image = location.to_string_lossy().into_owned();
    let e = w.create(cfg).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
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
        "checkpoint/descriptors.json",
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
    let saved = last_count(&std::fs::read(diff_dir.join("count")).unwrap()).expect("a count");
    assert!(
        saved >= before && saved <= after,
        "{before} <= {saved} <= {after}"
    );

    // Nothing of the work is left in the container's state, and a second checkpoint works.
    let work = w.d.root.join("containers").join(id).join("checkpoint.work");
    assert!(!work.exists(), "{} removed", work.display());
    let before_second = count(w, id).await;
    checkpoint(w, id, location, 120).await.unwrap();

    // A create from the archive restores the writable layer, a start the processes.
    let mut cfg = w.config("restored", &["sleep", "600"]);
    cfg.image.as_mut().unwrap().image = location.to_string_lossy().into_owned();
    let restored = w.create(cfg).await.unwrap();
    let upper = w.d.root.join("containers").join(&restored).join("upper");
    assert_eq!(
        std::fs::read_to_string(upper.join("written.txt")).unwrap(),
        "hello\n"
    );
    assert!(is_whiteout(&upper.join("keep/gone.txt")), "deleted.files applied");
    restored_runs(w, &restored, before_second).await;
}

/// The restored counter runs on from where the checkpoint left it: RUNNING, its log goes on
/// from `before` (the count before the dump), its files are there, exec works, and stop and
/// remove clean up.
async fn restored_runs(w: &mut World, id: &str, before: u64) {
    let restore_log =
        w.d.root
            .join("containers")
            .join(id)
            .join("restore/checkpoint/restore.log");
    if let Err(e) = w.start(id).await {
        panic!(
            "start of the restored container: {e:?}\nrestore.log:\n{}",
            tail(&restore_log, 80)
        );
    }
    assert_eq!(w.state(id).await.state, ContainerState::ContainerRunning as i32);
    let init = w.pid(id).await;
    let log_path = w.log_dir.join("restored.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    let numbers = loop {
        let lines =
            crius_tests::containers::log_lines(&crius_tests::containers::read_log(&log_path), "stdout");
        let numbers: Vec<u64> = lines.iter().filter_map(|l| l.trim().parse().ok()).collect();
        if numbers.len() >= 5 {
            break numbers;
        }
        assert!(
            Instant::now() < deadline,
            "the restored counter logs: {lines:?}\nits processes:\n{}restore.log:\n{}",
            processes_of(init),
            tail(&restore_log, 40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("restored counter logged {numbers:?} (count before the checkpoint: {before})");
    assert!(numbers[0] >= before, "continues from {before}: {numbers:?}");
    assert!(
        numbers.windows(2).all(|p| p[1] == p[0] + 1),
        "counts on: {numbers:?}"
    );
    let out = w
        .exec(id, &["cat", "/written.txt"], 10)
        .await
        .expect("exec into the restored container");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    let now = count(w, id).await;
    assert!(wait_count_above(w, id, now).await > now, "still counting");
    w.stop(id, 5).await.unwrap();
    assert_eq!(w.state(id).await.state, ContainerState::ContainerExited as i32);
    w.remove(id).await.unwrap();
    // The teardown finishes after RemoveContainer answered; it removes the layer (and with it
    // the extracted archive).
    w.wait_torn_down(id).await.unwrap();
}

/// The last `n` lines of the text file at `path`, or why there are none.
fn tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => util::last_lines(&text, n),
        Err(e) => format!("(no {}: {e})", path.display()),
    }
}

/// What the processes in `init`'s cgroup (v2; on v1 just `init`) are doing, one line each
/// (`stat` and `wchan`), for the message of a test that finds the container silent.
fn processes_of(init: i32) -> String {
    let procs = util::cgroup_v2_dir(init)
        .and_then(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
        .unwrap_or_else(|| init.to_string());
    procs
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .map(|pid| {
            let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
            format!(
                "{} wchan={wchan}\n",
                util::proc_stat(pid).unwrap_or_default().trim_end()
            )
        })
        .collect()
}

fn is_whiteout(p: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

/// Start of a container created from a hand-made archive (no real CRIU images): refused at
/// once with FailedPrecondition where CRIU cannot run, a failed restore (CRIU's log quoted)
/// where it can; either way the start failed like any (EXITED, `StartError`), and the
/// container is removed with its writable layer (and the extracted archive in it).
async fn failed_start(w: &mut World, id: &str) {
    let st = w.state(id).await;
    assert_eq!(st.state, ContainerState::ContainerCreated as i32);
    assert_eq!(
        st.image.as_ref().unwrap().image,
        w.image,
        "the checkpointed image"
    );
    let started = Instant::now();
    let e = w.start(id).await.unwrap_err();
    println!("start from a hand-made archive: {:?}: {}", e.code(), e.message());
    if criu_works() {
        // CRIU ran on images that are not CRIU's, failed, and its log is quoted.
        assert!(e.message().contains("could not restore"), "{e:?}");
        assert!(e.message().contains("restore.log ends with"), "{e:?}");
    } else {
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(
            e.message().contains("criu") || e.message().contains("CRIU"),
            "{e:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "fast: {:?}",
            started.elapsed()
        );
    }
    let st = w.state(id).await;
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert_eq!(st.reason, "StartError", "{st:?}");
    w.remove(id).await.unwrap();
    // The teardown finishes after RemoveContainer answered; it removes the layer (and with it
    // the extracted archive).
    w.wait_torn_down(id).await.unwrap();
}

/// Appends an entry under a raw name (the tar crate's setters refuse `..` and absolute names).
fn put(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    put(b, name, tar::EntryType::Regular, "", data);
}

/// An archive in CRI-O's layout made by hand: what CreateContainer reads before CRIU is needed.
/// `parts` leaves out the named layout files; `extra` appends entries.
fn handmade(image: &str, skip: &[&str], extra: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut diff = tar::Builder::new(Vec::new());
    file(&mut diff, "written.txt", b"hello\n");
    file(&mut diff, "count", b"7\n");
    let diff = diff.into_inner().unwrap();
    let config = serde_json::json!({"id": "c0", "name": "counter", "rootfsImageName": image}).to_string();
    let spec = r#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["sh","-c","sleep 600"],"cwd":"/"},"root":{"path":"rootfs"}}"#;
    let mut b = tar::Builder::new(Vec::new());
    let parts: [(&str, &[u8]); 6] = [
        ("checkpoint/inventory.img", b"inventory"),
        (
            "checkpoint/descriptors.json",
            br#"["/dev/null","pipe:[1]","pipe:[2]"]"#,
        ),
        ("config.dump", config.as_bytes()),
        ("spec.dump", spec.as_bytes()),
        ("rootfs-diff.tar", &diff),
        ("deleted.files", br#"["/keep/gone.txt"]"#),
    ];
    for (name, data) in parts {
        if !skip.contains(&name) {
            file(&mut b, name, data);
        }
    }
    extra(&mut b);
    b.into_inner().unwrap()
}

async fn create_from(w: &mut World, archive: &Path, name: &str) -> Result<String, tonic::Status> {
    let mut cfg = w.config(name, &["sleep", "600"]);
    cfg.image.as_mut().unwrap().image = archive.to_string_lossy().into_owned();
    w.create(cfg).await
}

#[tokio::test]
async fn a_restore_applies_the_writable_layer_and_a_bad_one_fails_to_start() {
    let mut w = World::with_image(image()).await.unwrap();
    let archive = w.d.dir.join("handmade.tar");
    std::fs::write(&archive, handmade(&w.image.clone(), &[], |_| {})).unwrap();
    let id = create_from(&mut w, &archive, "restored").await.unwrap();
    let upper = w.d.root.join("containers").join(&id).join("upper");
    assert_eq!(
        std::fs::read_to_string(upper.join("written.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(std::fs::read_to_string(upper.join("count")).unwrap(), "7\n");
    assert!(is_whiteout(&upper.join("keep/gone.txt")), "deleted.files applied");
    assert!(!upper.join("keep/stays.txt").exists());
    failed_start(&mut w, &id).await;
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn bad_archives_are_refused_and_leave_nothing() {
    use tar::EntryType as T;
    let mut w = World::with_image(image()).await.unwrap();
    let image = w.image.clone();
    let huge = |b: &mut tar::Builder<Vec<u8>>| {
        // A header announcing 64 GiB: refused before any data is read.
        let mut h = tar::Header::new_gnu();
        h.set_path("checkpoint/pages-1.img").unwrap();
        h.set_size(64 << 30);
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not-a-tar", b"just some text that is not a tar archive".to_vec()),
        ("no-config", handmade(&image, &["config.dump"], |_| {})),
        ("no-spec", handmade(&image, &["spec.dump"], |_| {})),
        (
            "no-images",
            handmade(
                &image,
                &["checkpoint/inventory.img", "checkpoint/descriptors.json"],
                |_| {},
            ),
        ),
        ("dotdot", handmade(&image, &[], |b| file(b, "../../escape", b"x"))),
        (
            "absolute",
            handmade(&image, &[], |b| file(b, "/tmp/escape", b"x")),
        ),
        (
            "symlink",
            handmade(&image, &[], |b| put(b, "checkpoint/l", T::Symlink, "/etc", b"")),
        ),
        (
            "hardlink",
            handmade(&image, &[], |b| put(b, "checkpoint/h", T::Link, "spec.dump", b"")),
        ),
        ("oversize", handmade(&image, &[], huge)),
    ];
    for (name, body) in cases {
        let archive = w.d.dir.join(format!("{name}.tar"));
        std::fs::write(&archive, body).unwrap();
        let e = create_from(&mut w, &archive, name).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name}: {e:?}");
        assert!(e.message().contains("checkpoint archive"), "{name}: {e:?}");
    }
    assert!(!w.d.dir.join("escape").exists() && !Path::new("/tmp/escape").exists());

    // A valid archive of an image that is not here: FailedPrecondition naming the image.
    let archive = w.d.dir.join("other-image.tar");
    std::fs::write(&archive, handmade("registry.invalid/absent:1", &[], |_| {})).unwrap();
    let e = create_from(&mut w, &archive, "absent").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("registry.invalid/absent:1"), "{e:?}");

    // Nothing of any attempt is left: no record, no writable layer, no bundle.
    let listed =
        w.d.runtime
            .list_containers(ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers;
    assert!(listed.is_empty(), "{listed:?}");
    for dir in [w.d.root.join("containers"), w.d.state.join("containers")] {
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{}: {left:?}", dir.display());
    }
    w.teardown().await.unwrap();
}
