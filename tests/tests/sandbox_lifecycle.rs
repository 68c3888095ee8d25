//! Pod sandbox round trips through a real daemon and the real Debian CNI plugins: run, status,
//! list filters, stop, remove, name reservation, host network, pod files, sysctls, PID sharing.

use std::collections::HashMap;

use crius_tests::pods::{self, TestNet};
use crius_tests::{Daemon, util};
use k8s_cri::v1::*;

async fn list(d: &mut Daemon, filter: PodSandboxFilter) -> Vec<String> {
    let req = ListPodSandboxRequest { filter: Some(filter) };
    let items = d.runtime.list_pod_sandbox(req).await.unwrap().into_inner().items;
    items.into_iter().map(|p| p.id).collect()
}

#[tokio::test]
async fn run_status_list_stop_remove_round_trip() {
    let net = TestNet::new();
    let mut d = net.daemon().await.unwrap();
    let _cleanup = pods::PodCleanup::new(&d);
    let a = d.run_pod(pods::pod_config("alpha", "uid-a")).await.unwrap();
    let mut cfg_b = pods::pod_config("beta", "uid-b");
    cfg_b.labels.insert("tier".into(), "backend".into());
    let b = d.run_pod(cfg_b).await.unwrap();
    assert_eq!(a.len(), 64);

    let st = d.pod_status(&a).await.unwrap();
    let s = st.status.unwrap();
    assert_eq!(s.id, a);
    assert_eq!(s.state, PodSandboxState::SandboxReady as i32);
    assert!(s.created_at > 0);
    assert_eq!(s.metadata.unwrap().name, "alpha");
    let ip = s.network.unwrap().ip;
    assert!(ip.starts_with(&net.ip_prefix()), "pod IP {ip:?}");
    let opts = s.linux.unwrap().namespaces.unwrap().options.unwrap();
    assert_eq!(opts.network, NamespaceMode::Pod as i32);
    assert_eq!(opts.pid, NamespaceMode::Container as i32);
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    assert_eq!(
        info["network"]["result"]["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next(),
        Some(ip.as_str())
    );
    assert!(pods::is_pinned(&pods::ns_path(&d.state, &a, "net")));
    assert!(pods::is_pinned(&pods::ns_path(&d.state, &a, "ipc")));
    assert!(pods::is_pinned(&pods::ns_path(&d.state, &a, "uts")));
    assert!(
        d.cni_cache_dir
            .join(format!("results/{}-{a}-eth0", net.name))
            .is_file()
    );
    assert_eq!(net.allocated_ips().len(), 2);

    // Filters: id, unique prefix, state, labels.
    let mut all = list(&mut d, PodSandboxFilter::default()).await;
    all.sort();
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(all, expected);
    assert_eq!(
        list(
            &mut d,
            PodSandboxFilter {
                id: a.clone(),
                ..Default::default()
            }
        )
        .await,
        vec![a.clone()]
    );
    let prefix = &b[..12];
    assert_eq!(
        list(
            &mut d,
            PodSandboxFilter {
                id: prefix.into(),
                ..Default::default()
            }
        )
        .await,
        vec![b.clone()]
    );
    let by_label = PodSandboxFilter {
        label_selector: HashMap::from([("tier".to_string(), "backend".to_string())]),
        ..Default::default()
    };
    assert_eq!(list(&mut d, by_label).await, vec![b.clone()]);
    let nomatch = PodSandboxFilter {
        label_selector: HashMap::from([
            ("app".to_string(), "alpha".into()),
            ("tier".into(), "backend".into()),
        ]),
        ..Default::default()
    };
    assert!(list(&mut d, nomatch).await.is_empty());

    d.stop_pod(&a).await.unwrap();
    d.stop_pod(&a).await.unwrap();
    let s = d.pod_status(&a).await.unwrap().status.unwrap();
    assert_eq!(s.state, PodSandboxState::SandboxNotready as i32);
    assert_eq!(net.allocated_ips().len(), 1, "stop released the IP");
    assert!(
        !d.cni_cache_dir
            .join(format!("results/{}-{a}-eth0", net.name))
            .exists()
    );
    let not_ready = PodSandboxFilter {
        state: Some(PodSandboxStateValue {
            state: PodSandboxState::SandboxNotready as i32,
        }),
        ..Default::default()
    };
    assert_eq!(list(&mut d, not_ready).await, vec![a.clone()]);
    let ready = PodSandboxFilter {
        state: Some(PodSandboxStateValue {
            state: PodSandboxState::SandboxReady as i32,
        }),
        ..Default::default()
    };
    assert_eq!(list(&mut d, ready).await, vec![b.clone()]);

    d.remove_pod(&a).await.unwrap();
    d.remove_pod(&a).await.unwrap();
    d.remove_pod(&b).await.unwrap();
    let e = d.pod_status(&a).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(list(&mut d, PodSandboxFilter::default()).await.is_empty());
    assert!(!d.state.join("ns").join(&a).exists());
    assert!(!d.state.join("pods").join(&b).exists());
    assert!(pods::pod_cgroup_dirs(&a).is_empty());
    assert!(net.allocated_ips().is_empty());
    assert!(net.veths().is_empty());
    // CRI: stop and remove of something unknown succeed.
    d.stop_pod(&"f".repeat(64)).await.unwrap();
    d.remove_pod(&"f".repeat(64)).await.unwrap();
}

#[tokio::test]
async fn same_metadata_twice_is_already_exists_naming_the_holder() {
    let net = TestNet::new();
    let mut d = net.daemon().await.unwrap();
    let _cleanup = pods::PodCleanup::new(&d);
    let a = d.run_pod(pods::pod_config("dup", "uid-dup")).await.unwrap();
    let e = d.run_pod(pods::pod_config("dup", "uid-dup")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains(&a), "{}", e.message());
    // A new attempt is a different pod.
    let mut next = pods::pod_config("dup", "uid-dup");
    next.metadata.as_mut().unwrap().attempt = 1;
    let b = d.run_pod(next).await.unwrap();
    d.remove_pod(&a).await.unwrap();
    // The name is free again once the holder is gone.
    let c = d.run_pod(pods::pod_config("dup", "uid-dup")).await.unwrap();
    d.remove_pod(&b).await.unwrap();
    d.remove_pod(&c).await.unwrap();
    assert!(net.allocated_ips().is_empty());
}

#[tokio::test]
async fn host_network_pod_has_no_netns_and_the_hosts_files() {
    let net = TestNet::new();
    let mut d = net.daemon().await.unwrap();
    let _cleanup = pods::PodCleanup::new(&d);
    let mut cfg = pods::pod_config("hostnet", "uid-h");
    let ns = pods::namespace_options(&mut cfg);
    ns.network = NamespaceMode::Node as i32;
    let id = d.run_pod(cfg).await.unwrap();
    assert!(!pods::ns_path(&d.state, &id, "net").exists());
    assert!(
        !pods::ns_path(&d.state, &id, "uts").exists(),
        "UTS follows the host network"
    );
    assert!(pods::is_pinned(&pods::ns_path(&d.state, &id, "ipc")));
    let s = d.pod_status(&id).await.unwrap().status.unwrap();
    assert_eq!(s.network.unwrap_or_default().ip, "");
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let pod_dir = d.state.join("pods").join(&id);
    assert_eq!(
        std::fs::read_to_string(pod_dir.join("hostname")).unwrap(),
        format!("{host}\n")
    );
    assert_eq!(
        std::fs::read(pod_dir.join("hosts")).unwrap(),
        std::fs::read("/etc/hosts").unwrap()
    );
    assert!(net.allocated_ips().is_empty(), "no CNI for a host-network pod");
    d.remove_pod(&id).await.unwrap();
    assert!(!pod_dir.exists());
}

#[tokio::test]
async fn hostname_resolv_conf_and_hosts_come_from_the_config() {
    let net = TestNet::new();
    let mut d = net.daemon().await.unwrap();
    let _cleanup = pods::PodCleanup::new(&d);
    let mut cfg = pods::pod_config("files", "uid-f");
    cfg.hostname = "test-hostname".into();
    cfg.dns_config = Some(DnsConfig {
        servers: vec!["10.10.10.10".into()],
        searches: vec!["google.com".into()],
        options: vec!["ndots:8".into()],
    });
    let id = d.run_pod(cfg).await.unwrap();
    let ip = d.pod_ip(&id).await;
    let pod_dir = d.state.join("pods").join(&id);
    assert_eq!(
        std::fs::read_to_string(pod_dir.join("hostname")).unwrap(),
        "test-hostname\n"
    );
    assert_eq!(
        std::fs::read_to_string(pod_dir.join("resolv.conf")).unwrap(),
        "search google.com\nnameserver 10.10.10.10\noptions ndots:8\n"
    );
    let hosts = std::fs::read_to_string(pod_dir.join("hosts")).unwrap();
    assert!(hosts.contains("127.0.0.1\tlocalhost"), "{hosts}");
    assert!(hosts.contains(&format!("{ip}\ttest-hostname")), "{hosts}");
    let uts = pods::ns_path(&d.state, &id, "uts");
    let in_pod = pods::in_namespace(&uts, "uts", || {
        nix::unistd::gethostname().unwrap().into_string().unwrap()
    });
    assert_eq!(in_pod, "test-hostname");
    // The pod-shared IPC namespace comes with a 64 MiB /dev/shm.
    let st = nix::sys::statvfs::statvfs(&pod_dir.join("shm")).unwrap();
    assert_eq!(st.blocks() * st.fragment_size(), 64 << 20);

    // Empty DNSConfig: the host's resolv.conf.
    let mut plain = pods::pod_config("files2", "uid-f2");
    plain.dns_config = Some(DnsConfig::default());
    let id2 = d.run_pod(plain).await.unwrap();
    assert_eq!(
        std::fs::read(d.state.join("pods").join(&id2).join("resolv.conf")).unwrap(),
        std::fs::read("/etc/resolv.conf").unwrap_or_default()
    );
    d.remove_pod(&id).await.unwrap();
    d.remove_pod(&id2).await.unwrap();
}

#[tokio::test]
async fn safe_and_unsafe_sysctls_are_set_inside_the_pod() {
    let net = TestNet::new();
    let mut d = net.daemon().await.unwrap();
    let _cleanup = pods::PodCleanup::new(&d);
    let mut cfg = pods::pod_config("sysctl", "uid-s");
    cfg.linux.as_mut().unwrap().sysctls = HashMap::from([
        ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
        ("fs.mqueue.msg_max".to_string(), "100".to_string()),
        (
            "net.ipv4.ip_unprivileged_port_start".to_string(),
            "80".to_string(),
        ),
    ]);
    let id = d.run_pod(cfg).await.unwrap();
    let read = |p: &'static str| move || std::fs::read_to_string(p).unwrap().trim().to_string();
    let ipc = pods::ns_path(&d.state, &id, "ipc");
    let netns = pods::ns_path(&d.state, &id, "net");
    assert_eq!(
        pods::in_namespace(&ipc, "ipc", read("/proc/sys/kernel/shm_rmid_forced")),
        "1"
    );
    assert_eq!(
        pods::in_namespace(&ipc, "ipc", read("/proc/sys/fs/mqueue/msg_max")),
        "100"
    );
    assert_eq!(
        pods::in_namespace(
            &netns,
            "net",
            read("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        ),
        "80"
    );
    d.remove_pod(&id).await.unwrap();

    // Host-wide sysctls, and net.* without a pod network namespace, are refused up front.
    let mut bad = pods::pod_config("sysctl-bad", "uid-sb");
    bad.linux.as_mut().unwrap().sysctls = HashMap::from([("kernel.panic".to_string(), "1".to_string())]);
    let e = d.run_pod(bad).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("kernel.panic"), "{}", e.message());
    let mut hostnet = pods::pod_config("sysctl-hostnet", "uid-sh");
    let linux = hostnet.linux.as_mut().unwrap();
    linux.sysctls = HashMap::from([("net.core.somaxconn".to_string(), "1024".to_string())]);
    linux
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .as_mut()
        .unwrap()
        .network = NamespaceMode::Node as i32;
    let e = d.run_pod(hostnet).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // A value the kernel refuses fails the RPC and leaves nothing behind.
    let mut refused = pods::pod_config("sysctl-refused", "uid-sr");
    refused.linux.as_mut().unwrap().sysctls = HashMap::from([(
        "net.ipv4.ip_unprivileged_port_start".to_string(),
        "not-a-number".to_string(),
    )]);
    let e = d.run_pod(refused).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("ip_unprivileged_port_start"),
        "{}",
        e.message()
    );
    assert!(list(&mut d, PodSandboxFilter::default()).await.is_empty());
    assert_eq!(
        std::fs::read_dir(d.state.join("ns"))
            .map(|r| r.count())
            .unwrap_or(0),
        0
    );
    assert!(net.allocated_ips().is_empty());
}

#[tokio::test]
async fn pod_pid_namespace_has_an_infra_process_as_pid_1() {
    let net = TestNet::new();
    let mut d = net.daemon().await.unwrap();
    let _cleanup = pods::PodCleanup::new(&d);
    let mut cfg = pods::pod_config("pidpod", "uid-p");
    pods::namespace_options(&mut cfg).pid = NamespaceMode::Pod as i32;
    let id = d.run_pod(cfg).await.unwrap();
    let info: serde_json::Value =
        serde_json::from_str(&d.pod_status(&id).await.unwrap().info["info"]).unwrap();
    let pid = info["pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .expect("infra pid in verbose info");
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid = st.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.split_whitespace().last() == Some("1"), "{nspid}");
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        cmdline.contains("crius-shim") && cmdline.contains("pause"),
        "{cmdline:?}"
    );
    let net_of = |p: String| std::fs::read_link(p).unwrap();
    let pinned = std::fs::metadata(pods::ns_path(&d.state, &id, "net")).unwrap();
    use std::os::unix::fs::MetadataExt;
    let infra_net = std::fs::metadata(format!("/proc/{pid}/ns/net")).unwrap();
    assert_eq!(pinned.ino(), infra_net.ino(), "infra process is in the pod netns");
    assert_ne!(
        net_of(format!("/proc/{pid}/ns/pid")),
        net_of("/proc/self/ns/pid".into())
    );
    // The infra process sits in the pod cgroup's infra leaf, in every v1 hierarchy (it is born
    // there): never in the pod cgroup itself, which holds the containers' cgroups.
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cg.contains(&format!("/crius/{id}/crius-infra")), "{cg}");
    for line in cg
        .lines()
        .filter(|l| l.split(':').nth(1).is_some_and(|c| !c.is_empty()))
    {
        assert!(line.ends_with(&format!("/crius/{id}/crius-infra")), "{line}");
    }
    d.stop_pod(&id).await.unwrap();
    assert!(!util::alive(pid), "infra process killed by stop");
    d.remove_pod(&id).await.unwrap();
    assert!(pods::pod_cgroup_dirs(&id).is_empty());
}
