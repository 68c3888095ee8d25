//! Images whose `/etc/passwd` or `/etc/group` is not a regular file (a FIFO, a device node, a
//! directory, a symlink to one of those): CreateContainer fails with InvalidArgument in bounded
//! time, nothing is left behind, and the daemon keeps answering `Version` within a second while
//! more such creates than it has worker threads are in flight.

use std::time::{Duration, Instant};

use crius_tests::containers::World;
use crius_tests::images::{self, ImageSpec, Layer};
use crius_tests::pods::PodCleanup;
use crius_tests::security::assert_no_containers_left;
use k8s_cri::v1::*;

/// How long one refused create may take (pull is done; this is lease, mount, check, undo).
const CREATE_BOUND: Duration = Duration::from_secs(30);

enum Entry {
    Fifo,
    CharDevice,
    Dir,
    Symlink(&'static str),
}

/// A layer over busybox that replaces `etc/<file>` with `entry`, plus a FIFO at `etc/fifo` and a
/// directory `etc/dir` for symlinks to point at.
fn layer(file: &str, entry: Entry) -> Layer {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, target: Option<&str>, dev: Option<(u32, u32)>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(0);
        h.set_mtime(1);
        // Every entry carries device numbers (0 0 unless a device): the unpacker reads them.
        let (major, minor) = dev.unwrap_or((0, 0));
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        if let Some(t) = target {
            h.set_link_name(t).unwrap();
        }
        h.set_cksum();
        b.append_data(&mut h, name, std::io::empty()).unwrap();
    };
    add("etc/", tar::EntryType::Directory, None, None);
    add("etc/fifo", tar::EntryType::Fifo, None, None);
    add("etc/dir/", tar::EntryType::Directory, None, None);
    let path = format!("etc/{file}");
    match entry {
        Entry::Fifo => add(&path, tar::EntryType::Fifo, None, None),
        // /dev/zero: reading it would never end, and a read cap alone would not make it a file.
        Entry::CharDevice => add(&path, tar::EntryType::Char, None, Some((1, 5))),
        Entry::Dir => add(&format!("{path}/"), tar::EntryType::Directory, None, None),
        Entry::Symlink(to) => add(&path, tar::EntryType::Symlink, Some(to), None),
    }
    Layer::RawTar(b.into_inner().unwrap())
}

#[tokio::test]
async fn special_passwd_and_group_are_invalid_and_never_stall_the_daemon() {
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let cases = [
        ("passwd", Entry::Fifo, "is a FIFO"),
        ("group", Entry::Fifo, "is a FIFO"),
        ("passwd", Entry::CharDevice, "is a character device"),
        ("passwd", Entry::Dir, "is a directory"),
        ("group", Entry::Symlink("/etc/fifo"), "is a FIFO"),
        ("passwd", Entry::Symlink("../../etc/dir"), "is a directory"),
    ];
    let mut refs = Vec::new();
    for (i, (file, entry, why)) in cases.into_iter().enumerate() {
        let spec = ImageSpec {
            layers: vec![Layer::Busybox, layer(file, entry)],
            ..ImageSpec::busybox()
        };
        let pushed = images::push(&w.reg, "special", &format!("{i}"), &spec)
            .await
            .unwrap();
        w.d.pull(&pushed.reference).await.unwrap();
        refs.push((pushed.reference, file, why));
    }

    // Two rounds of every case at once: 12 creates against 2 worker threads (2 cores).
    let mut creates = Vec::new();
    for round in 0..2 {
        for (i, (image, file, why)) in refs.iter().enumerate() {
            let mut config = w.config(&format!("special-{round}-{i}"), &["true"]);
            config.image = Some(image_ref(image.clone()));
            let req = CreateContainerRequest {
                pod_sandbox_id: w.pod.clone(),
                config: Some(config),
                sandbox_config: Some(w.pod_config()),
            };
            let mut client = w.d.runtime.clone();
            let (file, why) = (file.to_string(), why.to_string());
            creates.push(tokio::spawn(async move {
                let t = Instant::now();
                let got = tokio::time::timeout(CREATE_BOUND, client.create_container(req)).await;
                (file, why, got, t.elapsed())
            }));
        }
    }
    // The daemon answers Version promptly the whole time.
    let mut version = w.d.runtime.clone();
    let mut slowest = Duration::ZERO;
    while !creates.iter().all(|c| c.is_finished()) {
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(1), version.version(VersionRequest::default()))
            .await
            .expect("Version answered within 1 s while the creates were in flight")
            .unwrap();
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for c in creates {
        let (file, why, got, took) = c.await.unwrap();
        let status = match got {
            Ok(Err(s)) => s,
            Ok(Ok(r)) => panic!("/etc/{file} ({why}): created {}", r.into_inner().container_id),
            Err(_) => panic!("/etc/{file} ({why}): CreateContainer still running after {CREATE_BOUND:?}"),
        };
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "/etc/{file}: {status:?}"
        );
        let wanted = format!("/etc/{file} {why}");
        assert!(
            status.message().contains(&wanted),
            "wanted {wanted:?} in {:?}",
            status.message()
        );
        eprintln!("/etc/{file} {why}: refused in {took:?}");
    }
    eprintln!("slowest Version during the creates: {slowest:?}");
    assert_no_containers_left(&mut w).await;
    // The pod still works: a plain busybox container creates.
    let id = w.run("after", &["sleep", "60"]).await;
    w.stop(&id, 0).await.unwrap();
    w.teardown().await.unwrap();
}

fn image_ref(image: String) -> k8s_cri::v1::ImageSpec {
    k8s_cri::v1::ImageSpec {
        image,
        ..Default::default()
    }
}
