//! Pods with their own user namespace (CRI user namespace mode POD, Kubernetes `hostUsers:
//! false`), observed from inside and from the host: the kubelet's mapping in
//! `/proc/self/uid_map`, root inside is an unprivileged id outside (a file written to a plain
//! hostPath volume is owned by the mapped id; a mount with the pod's uid/gid mappings is
//! idmapped), the image's files and the pod's files (`/etc/hosts`, `/dev/shm`, ...) belong to
//! root inside, capabilities do not reach the host, the container's cgroup v2 is delegated to
//! its root, and the container survives a daemon restart. Refused requests (CONTAINER/TARGET
//! modes, bad mappings, a host that cannot idmap) create nothing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crius_tests::containers::World;
use crius_tests::pods::PodCleanup;
use crius_tests::security::*;
use k8s_cri::v1::*;

fn mapping(host_id: u32) -> Vec<IdMapping> {
    vec![IdMapping {
        host_id,
        container_id: 0,
        length: 65536,
    }]
}

/// User namespace mode POD with uids at `uid` and gids at `gid`; the pod's other namespaces
/// are its own (PID per container, as the kubelet sends it).
fn userns_ns(uid: u32, gid: u32) -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        ipc: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        target_id: String::new(),
        userns_options: Some(UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: mapping(uid),
            gids: mapping(gid),
        }),
    }
}

/// Host ids no other test uses: one 65536-block per test network.
fn ids(w: &World) -> (u32, u32) {
    let base = 65536 * (1000 + 2 * u32::from(w.net.n));
    (base, base + 65536)
}

#[tokio::test]
async fn userns_pod_maps_root_to_the_kubelet_range_and_survives_a_restart() {
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let status =
        w.d.runtime
            .status(StatusRequest::default())
            .await
            .unwrap()
            .into_inner();
    let features = status.runtime_handlers[0].features.unwrap();
    assert!(
        features.user_namespaces,
        "this host (6.x, ext4) supports idmapped layers"
    );

    let (uid, gid) = ids(&w);
    let (pod, pod_cfg) = run_pod(&mut w, "userns", |sc| {
        sc.namespace_options = Some(userns_ns(uid, gid))
    })
    .await
    .unwrap();
    let user_pin = crius_tests::pods::ns_path(&w.d.state, &pod, "user");
    assert!(crius_tests::pods::is_pinned(&user_pin));

    let vol = w.d.dir.join("userns-vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut sc = LinuxContainerSecurityContext {
        namespace_options: Some(userns_ns(uid, gid)),
        ..Default::default()
    };
    // Capabilities inside the user namespace only: none of them reaches the host. No seccomp
    // filter, so what refuses below is the kernel's capability check, not a filter.
    sc.capabilities = Some(Capability {
        add_capabilities: vec!["SYS_ADMIN".into(), "SYS_MODULE".into()],
        ..Default::default()
    });
    sc.seccomp = Some(SecurityProfile {
        profile_type: security_profile::ProfileType::Unconfined as i32,
        ..Default::default()
    });
    let mut c = sleeper(&w, "inside", sc);
    c.mounts = vec![Mount {
        container_path: "/vol".into(),
        host_path: vol.to_string_lossy().into_owned(),
        ..Default::default()
    }];
    let id = create_in(&mut w, &pod, &pod_cfg, c).await.unwrap();
    w.start(&id).await.unwrap();

    let uid_map = exec_ok(&mut w, &id, &["cat", "/proc/self/uid_map"]).await;
    assert_eq!(
        uid_map.split_whitespace().collect::<Vec<_>>(),
        ["0", &uid.to_string(), "65536"]
    );
    let gid_map = exec_ok(&mut w, &id, &["cat", "/proc/self/gid_map"]).await;
    assert_eq!(
        gid_map.split_whitespace().collect::<Vec<_>>(),
        ["0", &gid.to_string(), "65536"]
    );
    assert_eq!(exec_ok(&mut w, &id, &["id", "-u"]).await.trim(), "0");
    // The image's files are root's inside (idmapped layers), and so is the writable `/`.
    assert_eq!(
        exec_ok(&mut w, &id, &["stat", "-c", "%u:%g", "/bin/busybox"])
            .await
            .trim(),
        "0:0"
    );
    exec_ok(&mut w, &id, &["touch", "/new-file"]).await;
    assert_eq!(
        exec_ok(&mut w, &id, &["stat", "-c", "%u", "/new-file"])
            .await
            .trim(),
        "0"
    );

    // The pod's files and its /dev/shm are the container root's, as in a pod without a user
    // namespace (they belong to the mapped ids on the host).
    for f in ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/dev/shm"] {
        assert_eq!(
            exec_ok(&mut w, &id, &["stat", "-c", "%u:%g", f]).await.trim(),
            "0:0",
            "{f}"
        );
    }
    exec_ok(&mut w, &id, &["sh", "-c", "echo 10.0.0.1 extra >> /etc/hosts"]).await;

    // A file the container's root writes on a hostPath volume belongs to the mapped ids.
    exec_ok(&mut w, &id, &["touch", "/vol/made-inside"]).await;
    let meta = std::fs::metadata(vol.join("made-inside")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));

    // The init process runs as the mapped id on the host.
    let pid = w.pid(&id).await;
    let host_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(
        status_field(&host_status, "Uid").split_whitespace().next(),
        Some(&*uid.to_string())
    );

    // CAP_SYS_MODULE inside is no capability over the kernel: EPERM before the file is parsed
    // (ENOSYS on a kernel built without modules, as the host root would get too).
    let (code, out, err) = exec(&mut w, &id, &["insmod", "/bin/busybox"]).await;
    assert_ne!(code, 0);
    let said = format!("{out}{err}");
    let no_modules = !std::path::Path::new("/proc/modules").exists();
    assert!(
        said.contains("not permitted") || (no_modules && said.contains("not support")),
        "insmod: {said}"
    );
    // CAP_MKNOD inside (a default capability) makes no device node in a user namespace.
    let (code, out, err) = exec(&mut w, &id, &["mknod", "/tmp/null", "c", "1", "3"]).await;
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains("not permitted"),
        "mknod: {out}{err}"
    );
    // CAP_SYS_ADMIN inside can drop the container's read-only /proc/sys, but a host sysctl
    // stays the host root's.
    let before = std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap();
    let new = if before.trim() == "17" { "18" } else { "17" };
    let script = format!("umount /proc/sys 2>/dev/null; echo {new} > /proc/sys/vm/swappiness");
    let (code, _, err) = exec(&mut w, &id, &["sh", "-c", &script]).await;
    assert_ne!(code, 0, "writing a host sysctl must fail: {err}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap(),
        before
    );

    // sysfs is the pod network namespace's (owned by the pod's user namespace): its interfaces.
    let nets = exec_ok(&mut w, &id, &["ls", "/sys/class/net"]).await;
    assert_eq!(nets.split_whitespace().collect::<Vec<_>>(), ["eth0", "lo"]);

    // A daemon restart keeps the pinned user namespace and the running container.
    w.d.restart().await.unwrap();
    assert!(crius_tests::pods::is_pinned(&user_pin));
    assert_eq!(w.state(&id).await.state, ContainerState::ContainerRunning as i32);
    let uid_map = exec_ok(&mut w, &id, &["cat", "/proc/self/uid_map"]).await;
    assert!(uid_map.contains(&uid.to_string()), "{uid_map}");
    assert_eq!(exec_ok(&mut w, &id, &["id", "-u"]).await.trim(), "0");

    w.d.stop_pod(&pod).await.unwrap();
    w.d.remove_pod(&pod).await.unwrap();
    assert!(!user_pin.exists());
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn a_pod_shared_pid_namespace_belongs_to_the_pod_user_namespace() {
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let (uid, gid) = ids(&w);
    let mut n = userns_ns(uid, gid);
    n.pid = NamespaceMode::Pod as i32;
    let (pod, pod_cfg) = run_pod(&mut w, "userns-pidpod", |sc| {
        sc.namespace_options = Some(n.clone())
    })
    .await
    .unwrap();
    let sc = LinuxContainerSecurityContext {
        namespace_options: Some(n),
        ..Default::default()
    };
    let c = sleeper(&w, "shared", sc);
    let id = create_in(&mut w, &pod, &pod_cfg, c).await.unwrap();
    w.start(&id).await.unwrap();
    // PID 1 is the pod's infra process; /proc is mountable because its PID namespace is the
    // pod user namespace's.
    let pid1 = exec_ok(&mut w, &id, &["cat", "/proc/1/cmdline"]).await;
    assert!(pid1.contains("pause"), "{pid1:?}");
    let uid_map = exec_ok(&mut w, &id, &["cat", "/proc/self/uid_map"]).await;
    assert!(uid_map.contains(&uid.to_string()), "{uid_map}");
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn refused_user_namespace_requests_create_nothing() {
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let (uid, gid) = ids(&w);
    let pods_before = w.d.pods().await.len();
    let ns_before = std::fs::read_dir(w.d.state.join("ns")).unwrap().count();

    let mut cases: Vec<(&str, NamespaceOption)> = Vec::new();
    for (name, mode) in [
        ("container", NamespaceMode::Container),
        ("target", NamespaceMode::Target),
    ] {
        let mut n = userns_ns(uid, gid);
        n.userns_options.as_mut().unwrap().mode = mode as i32;
        cases.push((name, n));
    }
    let bad: [(&str, Vec<IdMapping>); 4] = [
        ("none", vec![]),
        ("host-root", mapping(0)),
        ("two", [mapping(uid), mapping(uid + 65536)].concat()),
        ("overflow", mapping(u32::MAX - 1000)),
    ];
    for (name, uids) in bad {
        let mut n = userns_ns(uid, gid);
        n.userns_options.as_mut().unwrap().uids = uids;
        cases.push((name, n));
    }
    let mut host_net = userns_ns(uid, gid);
    host_net.network = NamespaceMode::Node as i32;
    cases.push(("host-net", host_net));

    for (name, n) in cases {
        let err = run_pod(&mut w, name, |sc| sc.namespace_options = Some(n))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{name}: {err:?}");
    }
    assert_eq!(w.d.pods().await.len(), pods_before);
    assert_eq!(
        std::fs::read_dir(w.d.state.join("ns")).unwrap().count(),
        ns_before
    );

    // A container asking for a user namespace its pod does not have is refused too.
    let sc = LinuxContainerSecurityContext {
        namespace_options: Some(userns_ns(uid, gid)),
        ..Default::default()
    };
    let err = w.create(sleeper(&w, "no-pod-userns", sc)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert_no_containers_left(&mut w).await;
    w.teardown().await.unwrap();
}

/// Where the start-up probe finds that the layer store cannot be idmapped (here: ramfs, which no
/// kernel idmaps), the daemon advertises no user namespaces and RunPodSandbox refuses mode POD
/// up front with FailedPrecondition naming the reason; nothing of the pod is created.
#[tokio::test]
async fn a_host_that_cannot_idmap_refuses_user_namespace_pods_up_front() {
    let mut d = crius_tests::Daemon::start().await.unwrap();
    d.stop().await.unwrap();
    // The daemon's root on ramfs; the daemon's Drop unmounts everything under its dir.
    nix::mount::mount(
        Some("ramfs"),
        &d.root,
        Some("ramfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    d.restart().await.unwrap();
    let status = d
        .runtime
        .status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let default = status
        .runtime_handlers
        .iter()
        .find(|h| h.name.is_empty())
        .unwrap();
    assert!(!default.features.unwrap().user_namespaces);

    let mut cfg = crius_tests::pods::pod_config("userns-unsupported", "uid-userns-unsupported");
    *crius_tests::pods::namespace_options(&mut cfg) = userns_ns(65536 * 990, 65536 * 991);
    let err = d.run_pod(cfg.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("user namespace"), "{}", err.message());
    assert!(
        err.message().contains("idmap"),
        "the probe's reason: {}",
        err.message()
    );
    assert!(d.pods().await.is_empty());
    assert!(crius_tests::util::dir_entries(&d.state.join("ns")).is_empty());
    assert!(crius_tests::util::dir_entries(&d.state.join("pods")).is_empty());

    // Bad mappings stay the request's fault.
    crius_tests::pods::namespace_options(&mut cfg)
        .userns_options
        .as_mut()
        .unwrap()
        .uids
        .clear();
    let err = d.run_pod(cfg).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
}

/// On cgroup v2 a userns container has its own cgroup namespace and its cgroup is delegated to
/// its root (the dir and cgroup.procs/threads/subtree_control owned by the mapped ids), so root
/// inside can make and use sub-cgroups; the cgroup's own limits stay the host root's. On a
/// cgroup v1 host nothing is delegated: the container's cgroups stay the host root's.
#[tokio::test]
async fn a_userns_container_owns_its_cgroup_on_cgroup_v2() {
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let (uid, gid) = ids(&w);
    let (pod, pod_cfg) = run_pod(&mut w, "userns-cgroup", |sc| {
        sc.namespace_options = Some(userns_ns(uid, gid))
    })
    .await
    .unwrap();
    let sc = LinuxContainerSecurityContext {
        namespace_options: Some(userns_ns(uid, gid)),
        capabilities: Some(Capability {
            add_capabilities: vec!["SYS_ADMIN".into()],
            ..Default::default()
        }),
        seccomp: Some(SecurityProfile {
            profile_type: security_profile::ProfileType::Unconfined as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let c = sleeper(&w, "cgroup-owner", sc);
    let id = create_in(&mut w, &pod, &pod_cfg, c).await.unwrap();
    w.start(&id).await.unwrap();
    let pid = w.pid(&id).await;
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2 {
        let dir = crius_tests::util::cgroup_v2_dir(pid).expect("the container's cgroup v2 dir");
        for f in ["", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"] {
            let m = std::fs::metadata(dir.join(f)).unwrap();
            assert_eq!((m.uid(), m.gid()), (uid, gid), "{}/{f}", dir.display());
        }
        let limit = std::fs::metadata(dir.join("memory.max")).unwrap();
        assert_eq!(
            (limit.uid(), limit.gid()),
            (0, 0),
            "the cgroup's own limits stay the host's"
        );
        // Inside: its own cgroup namespace (root "/"), and root can make a sub-cgroup and move
        // a process into it through a cgroup2 mount of its own.
        assert_eq!(
            exec_ok(&mut w, &id, &["cat", "/proc/self/cgroup"]).await.trim(),
            "0::/"
        );
        let script = "mkdir -p /tmp/cg && mount -t cgroup2 none /tmp/cg && mkdir /tmp/cg/sub && \
                      echo $$ > /tmp/cg/sub/cgroup.procs && cat /proc/self/cgroup; \
                      rc=$?; umount /tmp/cg; exit $rc";
        let out = exec_ok(&mut w, &id, &["sh", "-c", script]).await;
        assert_eq!(out.trim(), "0::/sub");
        assert!(dir.join("sub").is_dir());
        let sub = std::fs::metadata(dir.join("sub")).unwrap();
        assert_eq!((sub.uid(), sub.gid()), (uid, gid));
        // Removing the container removes the sub-cgroup its root made, then its cgroup.
        w.stop(&id, 5).await.unwrap();
        w.remove(&id).await.unwrap();
        w.wait_torn_down(&id).await.unwrap();
        assert!(!dir.exists(), "{} is left behind", dir.display());
    } else {
        // cgroup v1: the memory hierarchy's dir of the container stays the host root's.
        let host_view = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let rel = host_view
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p))
            .expect("a memory cgroup on v1")
            .trim_start_matches('/');
        let m = std::fs::metadata(std::path::Path::new("/sys/fs/cgroup/memory").join(rel)).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0));
    }
    w.teardown().await.unwrap();
}

/// A mount with the pod's uid/gid mappings is idmapped: a file owned by host root is root's
/// inside, and what the container's root writes there is owned by host root on disk (unlike a
/// plain hostPath, where it is owned by the mapped id). Mappings in a pod without a user
/// namespace, or other than the pod's, are InvalidArgument; a filesystem that cannot be
/// idmapped (ramfs) is FailedPrecondition naming the mount; none leaves anything behind.
#[tokio::test]
async fn a_mount_with_the_pods_mappings_is_idmapped() {
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let (uid, gid) = ids(&w);
    let src = w.d.dir.join("idmapped-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("host-file"), "from the host\n").unwrap();
    let idmapped = |host: &std::path::Path, uids: u32, gids: u32| Mount {
        container_path: "/idm".into(),
        host_path: host.to_string_lossy().into_owned(),
        uid_mappings: mapping(uids),
        gid_mappings: mapping(gids),
        ..Default::default()
    };

    // The World's own pod has no user namespace.
    let mut c = sleeper(&w, "no-userns", LinuxContainerSecurityContext::default());
    c.mounts = vec![idmapped(&src, uid, gid)];
    let err = w.create(c).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    let (pod, pod_cfg) = run_pod(&mut w, "userns-idmap", |sc| {
        sc.namespace_options = Some(userns_ns(uid, gid))
    })
    .await
    .unwrap();
    let sc = LinuxContainerSecurityContext {
        namespace_options: Some(userns_ns(uid, gid)),
        ..Default::default()
    };
    let mut c = sleeper(&w, "other-maps", sc.clone());
    c.mounts = vec![idmapped(&src, uid + 65536 * 100, gid)];
    let err = create_in(&mut w, &pod, &pod_cfg, c).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    let ramfs = w.d.dir.join("ramfs-src");
    std::fs::create_dir_all(&ramfs).unwrap();
    // Unmounted by the daemon's Drop (everything under its dir) should an assert fail first.
    nix::mount::mount(
        Some("ramfs"),
        &ramfs,
        Some("ramfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let mut c = sleeper(&w, "ramfs", sc.clone());
    c.mounts = vec![idmapped(&ramfs, uid, gid)];
    let err = create_in(&mut w, &pod, &pod_cfg, c).await.unwrap_err();
    nix::mount::umount2(&ramfs, nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("/idm"),
        "names the mount: {}",
        err.message()
    );
    assert_no_containers_left(&mut w).await;
    assert_eq!(
        crius_tests::util::mounts_under(&w.d.state.join("containers")),
        Vec::<std::path::PathBuf>::new()
    );

    let plain = w.d.dir.join("plain-src");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut c = sleeper(&w, "idmapped", sc);
    c.mounts = vec![
        idmapped(&src, uid, gid),
        Mount {
            container_path: "/plain".into(),
            host_path: plain.to_string_lossy().into_owned(),
            ..Default::default()
        },
    ];
    let id = create_in(&mut w, &pod, &pod_cfg, c).await.unwrap();
    w.start(&id).await.unwrap();
    assert_eq!(
        exec_ok(&mut w, &id, &["stat", "-c", "%u:%g", "/idm/host-file"])
            .await
            .trim(),
        "0:0"
    );
    exec_ok(&mut w, &id, &["touch", "/idm/made-inside", "/plain/made-inside"]).await;
    let m = std::fs::metadata(src.join("made-inside")).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0), "idmapped: host root's on disk");
    let m = std::fs::metadata(plain.join("made-inside")).unwrap();
    assert_eq!((m.uid(), m.gid()), (uid, gid), "plain: the mapped ids");
    // The container's status reports the mount as requested.
    let status = w.status(&id).await.unwrap().status.unwrap();
    assert!(
        status
            .mounts
            .iter()
            .any(|m| m.host_path == src.to_string_lossy() && !m.uid_mappings.is_empty())
    );

    // The staging mount survives a daemon restart and goes with the container.
    w.d.restart().await.unwrap();
    assert!(
        exec_ok(&mut w, &id, &["cat", "/idm/host-file"])
            .await
            .contains("from the host")
    );
    let staged = crius_tests::util::mounts_under(&w.d.state.join("containers").join(&id));
    assert!(
        staged
            .iter()
            .any(|p| p.to_string_lossy().contains("idmapped-mounts")),
        "{staged:?}"
    );
    w.stop(&id, 5).await.unwrap();
    w.remove(&id).await.unwrap();
    w.wait_torn_down(&id).await.unwrap();
    assert_eq!(
        crius_tests::util::mounts_under(&w.d.state.join("containers").join(&id)),
        Vec::<std::path::PathBuf>::new()
    );
    assert!(src.join("host-file").exists(), "the volume's files stay");
    w.teardown().await.unwrap();
}
