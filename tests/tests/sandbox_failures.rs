//! Failure and scale: a failing CNI plugin leaves nothing behind, and 20 pods created and
//! removed concurrently leave no netns mount, veth, IP, iptables rule, cgroup, file or record.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crius_tests::pods::{self, TestNet};
use crius_tests::{Daemon, DaemonOptions, util};
use k8s_cri::v1::*;

/// Everything a set of sandboxes could have left on the host.
fn assert_no_leaks(d: &Daemon, net: &TestNet, ids: &[String]) {
    let leftovers = |dir: &Path| std::fs::read_dir(dir).map(|r| r.count()).unwrap_or(0);
    assert_eq!(leftovers(&d.state.join("ns")), 0, "namespace dirs left");
    assert_eq!(leftovers(&d.state.join("pods")), 0, "pod dirs left");
    assert_eq!(
        leftovers(&d.cni_cache_dir.join("results")),
        0,
        "CNI cache entries left"
    );
    assert!(
        util::mounts_under(&d.state).is_empty(),
        "mounts left: {:?}",
        util::mounts_under(&d.state)
    );
    assert!(net.veths().is_empty(), "veths left: {:?}", net.veths());
    assert!(
        net.allocated_ips().is_empty(),
        "IPs left: {:?}",
        net.allocated_ips()
    );
    for id in ids {
        assert!(
            pods::iptables_rules_mentioning(id).is_empty(),
            "iptables rules left for {id}"
        );
        assert!(pods::pod_cgroup_dirs(id).is_empty(), "cgroups left for {id}");
    }
}

#[tokio::test]
async fn failing_cni_plugin_fails_the_rpc_and_leaves_nothing() {
    let net = TestNet::new();
    let bin = tempfile::tempdir().unwrap();
    let plugin = bin.path().join("crius-test-fail");
    std::fs::write(
        &plugin,
        "#!/bin/sh\ncat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then\n\
         echo '{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"crius test plugin refuses\",\"details\":\"on purpose\"}'\n\
         exit 1\nfi\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut d = Daemon::start_with(DaemonOptions {
        cni_conflist: Some(net.conflist(r#"{"type":"crius-test-fail"}"#)),
        cni_bin_dirs: vec![bin.path().into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let _cleanup = pods::PodCleanup::new(&d);
    let mut cfg = pods::pod_config("doomed", "uid-doomed");
    // A host port, so portmap installs rules before the failing plugin runs.
    cfg.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 80,
        host_port: util::free_port() as i32,
        host_ip: String::new(),
    }];
    let e = d.run_pod(cfg.clone()).await.unwrap_err();
    assert!(
        e.message().contains("crius test plugin refuses: on purpose"),
        "{}",
        e.message()
    );
    let items = d.pods().await;
    assert!(items.is_empty(), "{items:?}");
    // The sandbox id never reached the client: look for any rule of this network instead.
    assert!(
        pods::iptables_rules_mentioning(&net.name).is_empty(),
        "iptables rules left"
    );
    assert_no_leaks(&d, &net, &[]);
    // The name was released with the rollback.
    let e = d.run_pod(cfg).await.unwrap_err();
    assert_ne!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
}

#[tokio::test]
async fn twenty_concurrent_pods_leave_no_leak() {
    let net = TestNet::new();
    let d = net.daemon().await.unwrap();
    let _cleanup = pods::PodCleanup::new(&d);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut client = d.runtime.clone();
        let mut cfg = pods::pod_config(&format!("many-{i}"), &format!("uid-many-{i}"));
        if i % 4 == 0 {
            pods::namespace_options(&mut cfg).pid = NamespaceMode::Pod as i32;
        }
        tasks.push(tokio::spawn(async move {
            let req = RunPodSandboxRequest {
                config: Some(cfg),
                runtime_handler: String::new(),
            };
            client
                .run_pod_sandbox(req)
                .await
                .map(|r| r.into_inner().pod_sandbox_id)
        }));
    }
    let mut ids = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(id) => ids.push(id),
            Err(e) => errors.push(e),
        }
    }
    let mut client = d.runtime.clone();
    let mut ips = Vec::new();
    for id in &ids {
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        };
        let st = client
            .pod_sandbox_status(req)
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
        ips.push(st.network.unwrap().ip);
    }
    let mut removals = Vec::new();
    for id in ids.clone() {
        let mut client = d.runtime.clone();
        removals.push(tokio::spawn(async move {
            let req = RemovePodSandboxRequest { pod_sandbox_id: id };
            client.remove_pod_sandbox(req).await
        }));
    }
    for r in removals {
        r.await.unwrap().unwrap();
    }
    assert!(errors.is_empty(), "concurrent RunPodSandbox failed: {errors:?}");
    assert_eq!(ids.len(), 20);
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 20, "every pod got its own IP");
    let items = client
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(items.is_empty());
    assert_no_leaks(&d, &net, &ids);
}

/// Requests whose strings would inject lines into resolv.conf/hosts or keys into CNI_ARGS.
fn injected_requests() -> Vec<(&'static str, PodSandboxConfig)> {
    let edits: [(&'static str, fn(&mut PodSandboxConfig)); 7] = [
        ("config.hostname", |c| {
            c.hostname = "evil\n10.0.0.1 kubernetes.default".into()
        }),
        ("metadata.name", |c| {
            c.metadata.as_mut().unwrap().name = "x;K8S_POD_NAMESPACE=kube-system".into()
        }),
        ("metadata.namespace", |c| {
            c.metadata.as_mut().unwrap().namespace = "a=b".into()
        }),
        ("metadata.uid", |c| {
            c.metadata.as_mut().unwrap().uid = "uid\nx".into()
        }),
        ("dns_config.servers", |c| {
            c.dns_config = Some(DnsConfig {
                servers: vec!["10.96.0.10\nnameserver 6.6.6.6".into()],
                ..Default::default()
            })
        }),
        ("dns_config.searches", |c| {
            c.dns_config = Some(DnsConfig {
                searches: vec!["svc.cluster.local evil.example".into()],
                ..Default::default()
            })
        }),
        ("dns_config.options", |c| {
            c.dns_config = Some(DnsConfig {
                options: vec!["ndots:5\nnameserver 6.6.6.6".into()],
                ..Default::default()
            })
        }),
    ];
    edits
        .into_iter()
        .map(|(field, edit)| {
            let mut cfg = pods::pod_config("injected", "uid-injected");
            edit(&mut cfg);
            (field, cfg)
        })
        .collect()
}

#[tokio::test]
async fn injected_dns_hostname_and_names_are_refused_and_leave_nothing() {
    let net = TestNet::new();
    let mut d = net.daemon().await.unwrap();
    let _cleanup = pods::PodCleanup::new(&d);
    for (field, cfg) in injected_requests() {
        let e = d.run_pod(cfg).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{field}: {e:?}");
        assert!(
            e.message().contains(field),
            "{field} not named in {:?}",
            e.message()
        );
        assert!(d.pods().await.is_empty());
        assert_no_leaks(&d, &net, &[]);
    }
    // Nothing was reserved either: the same pod with clean strings runs (and is then removed).
    let id = d
        .run_pod(pods::pod_config("injected", "uid-injected"))
        .await
        .unwrap();
    let resolv = std::fs::read_to_string(d.state.join("pods").join(&id).join("resolv.conf")).unwrap();
    assert!(!resolv.contains("6.6.6.6"), "{resolv}");
    d.remove_pod(&id).await.unwrap();
    assert_no_leaks(&d, &net, &[id]);
}
