//! Mounts and devices from the request, observed from inside: propagation PRIVATE,
//! HOST_TO_CONTAINER (rslave) and BIDIRECTIONAL (rshared) in /proc/self/mountinfo and in what
//! crosses the boundary; a source that cannot propagate is refused; read-only and recursive
//! read-only mounts; a host path that is a symlink; devices with their permissions.

use std::path::{Path, PathBuf};

use crius_tests::containers::World;
use crius_tests::pods::PodCleanup;
use crius_tests::security::*;
use k8s_cri::v1::*;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// Host mounts a test made, detached (newest first) and their temp dir removed on drop.
struct HostMounts {
    dir: tempfile::TempDir,
    points: Vec<PathBuf>,
}

impl HostMounts {
    fn new() -> HostMounts {
        HostMounts {
            dir: tempfile::tempdir().unwrap(),
            points: Vec::new(),
        }
    }

    /// `<dir>/<name>` bind-mounted on itself with `propagation` (MS_SHARED, MS_PRIVATE, ...).
    fn source(&mut self, name: &str, propagation: MsFlags) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        mount(
            Some(&p),
            &p,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap();
        self.points.push(p.clone());
        mount(
            None::<&str>,
            &p,
            None::<&str>,
            propagation | MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap();
        p
    }

    fn tmpfs(&mut self, at: &Path) {
        std::fs::create_dir_all(at).unwrap();
        mount(Some("tmpfs"), at, Some("tmpfs"), MsFlags::empty(), None::<&str>).unwrap();
        self.points.push(at.to_path_buf());
    }
}

impl Drop for HostMounts {
    fn drop(&mut self) {
        for p in self.points.iter().rev() {
            let _ = umount2(p, MntFlags::MNT_DETACH);
        }
    }
}

fn bind(host: &Path, ctr: &str, propagation: MountPropagation, readonly: bool, rro: bool) -> Mount {
    Mount {
        container_path: ctr.into(),
        host_path: host.to_string_lossy().into_owned(),
        readonly,
        recursive_read_only: rro,
        propagation: propagation as i32,
        ..Default::default()
    }
}

/// The optional fields (`shared:N`, `master:N`) of the mount at `point` in mountinfo text.
fn optional_fields(mountinfo: &str, point: &str) -> Option<String> {
    mountinfo.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(4) == Some(&point)).then(|| {
            f[6..]
                .iter()
                .take_while(|x| **x != "-")
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
        })
    })
}

async fn run_with_mounts(
    w: &mut World,
    pod: (&str, &PodSandboxConfig),
    name: &str,
    privileged: bool,
    mounts: Vec<Mount>,
) -> Result<String, tonic::Status> {
    let mut c = sleeper(
        w,
        name,
        LinuxContainerSecurityContext {
            privileged,
            ..Default::default()
        },
    );
    c.mounts = mounts;
    let id = create_in(w, pod.0, pod.1, c).await?;
    w.start(&id).await?;
    Ok(id)
}

async fn mountinfo(w: &mut World, id: &str) -> String {
    exec_ok(w, id, &["cat", "/proc/self/mountinfo"]).await
}

#[tokio::test]
async fn mount_propagation_modes() {
    let mut host = HostMounts::new();
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let (pod, pod_cfg) = run_pod(&mut w, "prop", |sc| sc.privileged = true).await.unwrap();
    let pod = (pod.as_str(), &pod_cfg);

    // Even a shared source stays private to a container whose mounts are all private.
    let private = host.source("private", MsFlags::MS_SHARED);
    let slave = host.source("slave", MsFlags::MS_SHARED);
    let shared = host.source("shared", MsFlags::MS_SHARED);
    use MountPropagation::*;
    let p = run_with_mounts(
        &mut w,
        pod,
        "private",
        false,
        vec![bind(&private, "/m", PropagationPrivate, false, false)],
    )
    .await
    .unwrap();
    let s = run_with_mounts(
        &mut w,
        pod,
        "slave",
        false,
        vec![bind(&slave, "/m", PropagationHostToContainer, false, false)],
    )
    .await
    .unwrap();
    let b = run_with_mounts(
        &mut w,
        pod,
        "shared",
        true,
        vec![bind(&shared, "/m", PropagationBidirectional, false, false)],
    )
    .await
    .unwrap();

    let fields = optional_fields(&mountinfo(&mut w, &p).await, "/m").unwrap();
    assert!(
        !fields.contains("shared:") && !fields.contains("master:"),
        "private: {fields}"
    );
    let fields = optional_fields(&mountinfo(&mut w, &s).await, "/m").unwrap();
    assert!(
        fields.contains("master:") && !fields.contains("shared:"),
        "rslave: {fields}"
    );
    let fields = optional_fields(&mountinfo(&mut w, &b).await, "/m").unwrap();
    assert!(fields.contains("shared:"), "rshared: {fields}");

    // Host → container: a new host mount under each source.
    for src in [&private, &slave, &shared] {
        host.tmpfs(&src.join("from-host"));
    }
    assert!(optional_fields(&mountinfo(&mut w, &p).await, "/m/from-host").is_none());
    assert!(optional_fields(&mountinfo(&mut w, &s).await, "/m/from-host").is_some());
    assert!(optional_fields(&mountinfo(&mut w, &b).await, "/m/from-host").is_some());

    // Container → host: only the bidirectional mount carries it back.
    exec_ok(
        &mut w,
        &b,
        &[
            "sh",
            "-c",
            "mkdir -p /m/from-ctr && mount -t tmpfs none /m/from-ctr",
        ],
    )
    .await;
    let host_info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let back = shared.join("from-ctr");
    assert!(
        optional_fields(&host_info, &back.to_string_lossy()).is_some(),
        "{host_info}"
    );
    host.points.push(back);
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn propagation_from_a_private_source_is_refused() {
    let mut host = HostMounts::new();
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let (pod, pod_cfg) = run_pod(&mut w, "prop", |sc| sc.privileged = true).await.unwrap();
    let private = host.source("private", MsFlags::MS_PRIVATE);
    for prop in [
        MountPropagation::PropagationHostToContainer,
        MountPropagation::PropagationBidirectional,
    ] {
        let err = run_with_mounts(
            &mut w,
            (&pod, &pod_cfg),
            "refused",
            true,
            vec![bind(&private, "/m", prop, false, false)],
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{prop:?}: {err:?}");
    }
    assert_no_containers_left(&mut w).await;
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn readonly_and_recursive_readonly_mounts() {
    let mut host = HostMounts::new();
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let status =
        w.d.runtime
            .status(StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner();
    assert!(
        status.runtime_handlers[0]
            .features
            .unwrap()
            .recursive_read_only_mounts
    );
    let pod = w.pod.clone();
    let pod_cfg = w.pod_config();
    let src = host.source("vol", MsFlags::MS_PRIVATE);
    host.tmpfs(&src.join("sub"));
    use MountPropagation::PropagationPrivate as P;

    let ro = run_with_mounts(
        &mut w,
        (&pod, &pod_cfg),
        "ro",
        false,
        vec![bind(&src, "/m", P, true, false)],
    )
    .await
    .unwrap();
    let (code, _, err) = exec(&mut w, &ro, &["touch", "/m/x"]).await;
    assert!(code != 0 && err.contains("Read-only file system"), "{err}");
    exec_ok(&mut w, &ro, &["touch", "/m/sub/x"]).await;

    let rro = run_with_mounts(
        &mut w,
        (&pod, &pod_cfg),
        "rro",
        false,
        vec![bind(&src, "/m", P, true, true)],
    )
    .await
    .unwrap();
    let (code, _, err) = exec(&mut w, &rro, &["touch", "/m/sub/y"]).await;
    assert!(
        code != 0 && err.contains("Read-only file system"),
        "recursive: {err}"
    );

    for (name, m) in [
        ("rro-rw", bind(&src, "/m", P, false, true)),
        (
            "rro-slave",
            bind(
                &src,
                "/m",
                MountPropagation::PropagationHostToContainer,
                true,
                true,
            ),
        ),
    ] {
        let err = run_with_mounts(&mut w, (&pod, &pod_cfg), name, false, vec![m])
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{name}: {err:?}");
    }
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn symlinked_host_path_and_devices() {
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::fs::write(dir.path().join("real/file"), "through the link").unwrap();
    std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
    let mut c = w.config("devs", &["sleep", "1000"]);
    c.mounts = vec![bind(
        &dir.path().join("link"),
        "/v",
        MountPropagation::PropagationPrivate,
        false,
        false,
    )];
    // A device outside libcontainer's default set (those are always rwm in the device cgroup).
    let extra = ["/dev/loop-control", "/dev/fuse", "/dev/net/tun"]
        .into_iter()
        .find(|d| Path::new(d).exists());
    c.devices = vec![Device {
        container_path: "/dev/rw-zero".into(),
        host_path: "/dev/zero".into(),
        permissions: "rw".into(),
    }];
    if let Some(d) = extra {
        c.devices.push(Device {
            container_path: "/dev/read-only".into(),
            host_path: d.into(),
            permissions: "r".into(),
        });
    }
    let id = w.create(c).await.unwrap();
    w.start(&id).await.unwrap();
    assert_eq!(
        exec_ok(&mut w, &id, &["cat", "/v/file"]).await,
        "through the link"
    );
    let out = exec_ok(
        &mut w,
        &id,
        &[
            "sh",
            "-c",
            "head -c 4 /dev/rw-zero | wc -c && echo x > /dev/rw-zero",
        ],
    )
    .await;
    assert_eq!(out.trim(), "4");
    if extra.is_some() {
        exec_ok(&mut w, &id, &["sh", "-c", ": < /dev/read-only"]).await;
        let (code, _, err) = exec(&mut w, &id, &["sh", "-c", ": > /dev/read-only"]).await;
        assert_ne!(code, 0, "opening a read-only device for writing");
        assert!(err.contains("Operation not permitted"), "{err}");
    } else {
        eprintln!("no device outside the default set on this host: read-only device not checked");
    }
    w.teardown().await.unwrap();
}
