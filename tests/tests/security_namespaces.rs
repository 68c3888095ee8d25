//! Namespaces from the security context, observed from inside: PID modes CONTAINER, POD (the
//! pod's infra process is PID 1), NODE and TARGET; host IPC (a SysV shm segment made on the
//! host is visible only there); host network (the host's interfaces are visible only there).

use crius_tests::containers::World;
use crius_tests::pods::PodCleanup;
use crius_tests::security::*;
use k8s_cri::v1::*;

fn ns(pid: NamespaceMode, ipc: NamespaceMode, network: NamespaceMode) -> NamespaceOption {
    NamespaceOption {
        pid: pid as i32,
        ipc: ipc as i32,
        network: network as i32,
        ..Default::default()
    }
}

fn with_ns(n: NamespaceOption) -> LinuxContainerSecurityContext {
    LinuxContainerSecurityContext {
        namespace_options: Some(n),
        ..Default::default()
    }
}

async fn pid1_cmdline(w: &mut World, id: &str) -> String {
    exec_ok(w, id, &["cat", "/proc/1/cmdline"])
        .await
        .replace('\0', " ")
}

#[tokio::test]
async fn pid_namespace_modes() {
    use NamespaceMode::*;
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);

    // CONTAINER: the container's own command is PID 1.
    let mut c = w.config("own", &["sleep", "1001"]);
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(with_ns(ns(Container, Pod, Pod))),
        ..Default::default()
    });
    let own = w.create(c).await.unwrap();
    w.start(&own).await.unwrap();
    assert_eq!(pid1_cmdline(&mut w, &own).await.trim(), "sleep 1001");

    // TARGET: joins `own`'s PID namespace, so PID 1 is `own`'s sleep.
    let mut target = with_ns(ns(Target, Pod, Pod));
    target.namespace_options.as_mut().unwrap().target_id = own.clone();
    let joined = w.create(sleeper(&w, "joined", target.clone())).await.unwrap();
    w.start(&joined).await.unwrap();
    assert_eq!(pid1_cmdline(&mut w, &joined).await.trim(), "sleep 1001");
    let ps = exec_ok(&mut w, &joined, &["ps", "-o", "args"]).await;
    assert!(ps.contains("sleep 1000") && ps.contains("sleep 1001"), "{ps}");

    // TARGET of a container that is not running, or does not exist, is refused.
    w.stop(&own, 0).await.unwrap();
    let err = w.create(sleeper(&w, "late", target.clone())).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    target.namespace_options.as_mut().unwrap().target_id = "f".repeat(64);
    let err = w.create(sleeper(&w, "nobody", target)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // A container cannot ask for a user namespace its pod was created without: refused, not
    // silently run in the host's.
    let mut userns = with_ns(ns(Container, Pod, Pod));
    userns.namespace_options.as_mut().unwrap().userns_options = Some(UserNamespace {
        mode: Pod as i32,
        uids: vec![IdMapping {
            host_id: 100000,
            container_id: 0,
            length: 65536,
        }],
        gids: vec![IdMapping {
            host_id: 100000,
            container_id: 0,
            length: 65536,
        }],
    });
    let err = w.create(sleeper(&w, "userns", userns)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // NODE: the host's PID 1.
    let (pod, pod_cfg) = run_pod(&mut w, "hostpid", |sc| {
        sc.namespace_options = Some(ns(Node, Pod, Pod));
    })
    .await
    .unwrap();
    let c = sleeper(&w, "hostpid", with_ns(ns(Node, Pod, Pod)));
    let id = create_in(&mut w, &pod, &pod_cfg, c).await.unwrap();
    w.start(&id).await.unwrap();
    let host_pid1 = std::fs::read_to_string("/proc/1/cmdline")
        .unwrap()
        .replace('\0', " ");
    assert_eq!(pid1_cmdline(&mut w, &id).await, host_pid1);
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn pod_shared_pid_namespace_has_the_infra_process_as_pid_1() {
    use NamespaceMode::*;
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let (pod, pod_cfg) = run_pod(&mut w, "podpid", |sc| {
        sc.namespace_options = Some(ns(Pod, Pod, Pod));
    })
    .await
    .unwrap();
    let mut ids = Vec::new();
    for name in ["a", "b"] {
        let c = sleeper(&w, name, with_ns(ns(Pod, Pod, Pod)));
        let id = create_in(&mut w, &pod, &pod_cfg, c).await.unwrap();
        w.start(&id).await.unwrap();
        ids.push(id);
    }
    let pid1 = pid1_cmdline(&mut w, &ids[0]).await;
    assert!(
        !pid1.contains("sleep"),
        "PID 1 is the pod's infra process, not an app: {pid1}"
    );
    assert_eq!(
        pid1_cmdline(&mut w, &ids[1]).await,
        pid1,
        "both containers share it"
    );
    let ps = exec_ok(&mut w, &ids[1], &["ps", "-o", "args"]).await;
    assert_eq!(ps.matches("sleep 1000").count(), 2, "each sees the other: {ps}");

    // Without namespace options a container takes the proto default (POD) and joins too; when
    // its init exits, what it left behind in the shared namespace is killed with it.
    let mut c = w.config("c", &["sh", "-c", "sleep 1001 & exec sleep 1002"]);
    c.linux = None;
    let id = create_in(&mut w, &pod, &pod_cfg, c).await.unwrap();
    w.start(&id).await.unwrap();
    assert_eq!(
        pid1_cmdline(&mut w, &id).await,
        pid1,
        "the default PID mode is POD"
    );
    let ps = exec_ok(&mut w, &ids[1], &["ps", "-o", "args"]).await;
    assert!(ps.contains("sleep 1001") && ps.contains("sleep 1002"), "{ps}");
    w.stop(&id, 10).await.unwrap();
    let ps = exec_ok(&mut w, &ids[1], &["ps", "-o", "args"]).await;
    assert!(
        !ps.contains("sleep 1001"),
        "the orphan died with the container's init: {ps}"
    );
    w.teardown().await.unwrap();
}

/// A SysV shared memory segment of the host's IPC namespace, removed on drop.
struct HostShm(i32);

impl HostShm {
    fn new() -> HostShm {
        // SAFETY: plain syscall wrappers with integer arguments.
        let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) };
        assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
        HostShm(id)
    }
}

impl Drop for HostShm {
    fn drop(&mut self) {
        // SAFETY: removes the segment this test created.
        unsafe { libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

fn has_shm(sysvipc: &str, id: i32) -> bool {
    sysvipc
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(&id.to_string()))
}

#[tokio::test]
async fn host_ipc_and_host_network() {
    use NamespaceMode::*;
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let shm = HostShm::new();
    let (pod, pod_cfg) = run_pod(&mut w, "hostns", |sc| {
        sc.namespace_options = Some(ns(Container, Node, Node));
    })
    .await
    .unwrap();
    let c = sleeper(&w, "hostns", with_ns(ns(Container, Node, Node)));
    let host = create_in(&mut w, &pod, &pod_cfg, c).await.unwrap();
    w.start(&host).await.unwrap();
    let isolated = w.run("isolated", &["sleep", "1000"]).await;

    let inside = exec_ok(&mut w, &host, &["cat", "/proc/sysvipc/shm"]).await;
    assert!(
        has_shm(&inside, shm.0),
        "host IPC sees segment {}: {inside}",
        shm.0
    );
    let inside = exec_ok(&mut w, &isolated, &["cat", "/proc/sysvipc/shm"]).await;
    assert!(!has_shm(&inside, shm.0), "pod IPC does not: {inside}");

    // The test network's bridge exists on the host only.
    let bridge = w.net.bridge.clone();
    let devs = exec_ok(&mut w, &host, &["cat", "/proc/net/dev"]).await;
    assert!(devs.contains(&format!("{bridge}:")), "host network: {devs}");
    let devs = exec_ok(&mut w, &isolated, &["cat", "/proc/net/dev"]).await;
    assert!(
        !devs.contains(&format!("{bridge}:")) && devs.contains("eth0:"),
        "{devs}"
    );
    w.teardown().await.unwrap();
}
