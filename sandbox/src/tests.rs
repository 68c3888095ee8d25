//! Manager-level tests: real namespaces and cgroups (root), a fake CNI plugin script, a temp
//! redb database. They cover the verbs' bookkeeping; tests/ covers real networking.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cri_api::v1::*;

use crate::podfiles::HostFiles;
use crate::{ContainerHook, ManagerConfig, SandboxError, SandboxManager, store};

struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    cgroup_root: PathBuf,
    manager: Arc<SandboxManager>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(self.dir.join("state/ns"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = crate::netns::unpin(&entry.path());
        }
        for entry in std::fs::read_dir(self.dir.join("state/pods"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = crate::podfiles::remove(&entry.path());
        }
        let _ = crate::cgroup::remove(&self.manager.cgroups, &self.cgroup_root);
    }
}

/// A fake plugin: ADD fails when the pod name is `fail`, otherwise returns 10.9.9.9 on eth0.
///
/// Panics when not root: the manager pins namespaces and mounts tmpfs.
fn env() -> Env {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the sandbox manager tests need root: they pin namespaces and mount tmpfs"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    for d in ["bin", "net.d", "state", "cache"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let plugin = dir.join("bin/fake");
    std::fs::write(
        &plugin,
        "#!/bin/sh\ncat >/dev/null\necho \"$CNI_COMMAND $CNI_ARGS\" >> \"$(dirname \"$0\")/calls\"\n\
         case \"$CNI_COMMAND:$CNI_ARGS\" in\n\
         ADD:*K8S_POD_NAME=fail*) echo '{\"code\":7,\"msg\":\"fake refuses\"}'; exit 1;;\n\
         ADD:*) printf '{\"cniVersion\":\"1.0.0\",\"interfaces\":[{\"name\":\"eth0\",\"sandbox\":\"%s\"}],\
         \"ips\":[{\"address\":\"10.9.9.9/24\",\"interface\":0},{\"address\":\"fd09::9/64\",\"interface\":0}]}' \"$CNI_NETNS\";;\n\
         esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.join("net.d/10-fake.conflist"),
        r#"{"cniVersion":"1.0.0","name":"fakenet","plugins":[{"type":"fake"}]}"#,
    )
    .unwrap();
    let cgroup_root = PathBuf::from(format!(
        "/crius-unit-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let db = Arc::new(redb::Database::create(dir.join("db.redb")).unwrap());
    let manager = SandboxManager::new(
        ManagerConfig {
            state_dir: dir.join("state"),
            cni_conf_dir: dir.join("net.d"),
            cni_bin_dirs: vec![dir.join("bin")],
            cni_cache_dir: dir.join("cache"),
            shim_path: dir.join("no-shim"),
            default_cgroup_parent: cgroup_root.clone(),
            cgroup_driver: crate::cgroup::Driver::Cgroupfs,
            host_files: HostFiles::default(),
            runtime_handlers: vec!["runc".into()],
        },
        db,
    )
    .unwrap();
    Env {
        _tmp: tmp,
        dir,
        cgroup_root,
        manager,
    }
}

fn config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "ns".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        labels: HashMap::from([("name".to_string(), name.to_string())]),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn request(name: &str) -> RunPodSandboxRequest {
    RunPodSandboxRequest {
        config: Some(config(name)),
        runtime_handler: String::new(),
    }
}

#[derive(Default)]
struct RecordingHook(Mutex<Vec<String>>);

impl ContainerHook for RecordingHook {
    fn stop_containers(&self, id: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.lock().unwrap().push(format!("stop {id}"));
        Ok(())
    }
    fn remove_containers(&self, id: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.lock().unwrap().push(format!("remove {id}"));
        Ok(())
    }
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|r| r.count()).unwrap_or(0)
}

#[tokio::test]
async fn run_records_status_and_cni_args_then_stop_and_remove_clean_up() {
    let env = env();
    let m = &env.manager;
    let hook = Arc::new(RecordingHook::default());
    m.set_container_hook(hook.clone());
    let id = m.run(request("web")).await.unwrap();
    let (st, info) = m.status(id[..10].to_string(), true).await.unwrap();
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    let net = st.network.unwrap();
    assert_eq!(net.ip, "10.9.9.9");
    assert_eq!(net.additional_ips, vec![PodIp { ip: "fd09::9".into() }]);
    assert!(info["info"].contains("fakenet"));
    let calls = std::fs::read_to_string(env.dir.join("bin/calls")).unwrap();
    assert_eq!(
        calls,
        format!(
            "ADD IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID={id};K8S_POD_UID=uid-web\n"
        )
    );
    let rec = m.sandbox(&id).unwrap().unwrap();
    assert_eq!(rec.meta.cgroup_parent, env.cgroup_root.join(&id));
    assert!(crate::netns::is_pinned(rec.meta.namespaces.net.as_ref().unwrap()));

    m.stop(id.clone()).await.unwrap();
    m.stop(id.clone()).await.unwrap();
    let calls = std::fs::read_to_string(env.dir.join("bin/calls")).unwrap();
    assert_eq!(
        calls.lines().filter(|l| l.starts_with("DEL")).count(),
        1,
        "DEL runs once"
    );
    m.remove(id.clone()).await.unwrap();
    m.remove(id.clone()).await.unwrap();
    assert_eq!(
        *hook.0.lock().unwrap(),
        vec![format!("stop {id}"), format!("stop {id}"), format!("remove {id}")]
    );
    assert!(matches!(
        m.status(id.clone(), false).await,
        Err(SandboxError::NotFound { .. })
    ));
    assert_eq!(count(&env.dir.join("state/ns")), 0);
    assert_eq!(count(&env.dir.join("state/pods")), 0);
    assert_eq!(count(&env.dir.join("cache/results")), 0);
    assert!(
        crate::cgroup::Hierarchies::detect()
            .unwrap()
            .v1
            .iter()
            .all(|h| !h.mount.join(&id).exists())
    );
}

#[tokio::test]
async fn failed_cni_add_rolls_everything_back_and_frees_the_name() {
    let env = env();
    let m = &env.manager;
    let e = m.run(request("fail")).await.unwrap_err();
    assert!(matches!(e, SandboxError::Network(_)), "{e}");
    assert!(e.to_string().contains("fake refuses"), "{e}");
    assert!(m.list(None).await.unwrap().is_empty());
    assert_eq!(count(&env.dir.join("state/ns")), 0);
    assert_eq!(count(&env.dir.join("state/pods")), 0);
    assert!(store::list(&m.db).unwrap().is_empty());
    // The rollback ran DEL for the partial ADD.
    let calls = std::fs::read_to_string(env.dir.join("bin/calls")).unwrap();
    assert!(calls.lines().any(|l| l.starts_with("DEL")), "{calls}");
    // Same name again: not AlreadyExists, the reservation went with the rollback.
    let e = m.run(request("fail")).await.unwrap_err();
    assert!(!matches!(e, SandboxError::NameReserved { .. }), "{e}");
}

#[tokio::test]
async fn names_are_reserved_and_list_filters_apply() {
    let env = env();
    let m = &env.manager;
    let a = m.run(request("a")).await.unwrap();
    let b = m.run(request("b")).await.unwrap();
    match m.run(request("a")).await.unwrap_err() {
        SandboxError::NameReserved { holder, .. } => assert_eq!(holder, a),
        other => panic!("{other}"),
    }
    let by_label = PodSandboxFilter {
        label_selector: HashMap::from([("name".to_string(), "b".to_string())]),
        ..Default::default()
    };
    let got: Vec<String> = m
        .list(Some(by_label))
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(got, vec![b.clone()]);
    m.stop(b.clone()).await.unwrap();
    let ready = PodSandboxFilter {
        state: Some(PodSandboxStateValue {
            state: PodSandboxState::SandboxReady as i32,
        }),
        ..Default::default()
    };
    let got: Vec<String> = m
        .list(Some(ready))
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(got, vec![a.clone()]);
    assert_eq!(m.count_by_state().unwrap(), (1, 1), "a READY, b NOTREADY");
    // A prefix shared by both ids (the empty-ish one-char prefix may be) is ambiguous for
    // status and matches nothing in list; ids that are not hex are refused.
    let common: String = a
        .chars()
        .zip(b.chars())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect();
    if !common.is_empty() {
        assert!(matches!(
            m.status(common.clone(), false).await,
            Err(SandboxError::Invalid(_))
        ));
        let f = PodSandboxFilter {
            id: common,
            ..Default::default()
        };
        assert!(m.list(Some(f)).await.unwrap().is_empty());
    }
    // An id crius never issues names no sandbox (and never reaches a path).
    assert!(matches!(
        m.status("../x".into(), false).await,
        Err(SandboxError::NotFound { .. })
    ));
    m.remove(a).await.unwrap();
    m.remove(b).await.unwrap();
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_is_created() {
    let env = env();
    let m = &env.manager;
    let mut no_meta = request("x");
    no_meta.config.as_mut().unwrap().metadata = None;
    let mut handler = request("x");
    handler.runtime_handler = "kata".into();
    let mut long_host = request("x");
    long_host.config.as_mut().unwrap().hostname = "h".repeat(65);
    let mut sysctl = request("x");
    sysctl.config.as_mut().unwrap().linux.as_mut().unwrap().sysctls =
        HashMap::from([("vm.swappiness".to_string(), "1".to_string())]);
    let mut cgroup = request("x");
    cgroup
        .config
        .as_mut()
        .unwrap()
        .linux
        .as_mut()
        .unwrap()
        .cgroup_parent = "/a/../../b".into();
    let mut port = request("x");
    port.config.as_mut().unwrap().port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 80,
        host_port: 70000,
        host_ip: String::new(),
    }];
    let mut injected = Vec::new();
    for (field, edit) in [
        (
            "config.hostname",
            (|c: &mut PodSandboxConfig| c.hostname = "web\n10.0.0.1 evil".into())
                as fn(&mut PodSandboxConfig),
        ),
        ("metadata.name", |c| {
            c.metadata.as_mut().unwrap().name = "x;K8S_POD_NAMESPACE=kube-system".into()
        }),
        ("metadata.namespace", |c| {
            c.metadata.as_mut().unwrap().namespace = "ns=x".into()
        }),
        ("metadata.uid", |c| {
            c.metadata.as_mut().unwrap().uid = "u\0id".into()
        }),
        ("dns_config.servers", |c| {
            c.dns_config = Some(DnsConfig {
                servers: vec!["1.1.1.1\nnameserver 6.6.6.6".into()],
                ..Default::default()
            })
        }),
        ("dns_config.searches", |c| {
            c.dns_config = Some(DnsConfig {
                searches: vec!["a.com b.com".into()],
                ..Default::default()
            })
        }),
        ("dns_config.options", |c| {
            c.dns_config = Some(DnsConfig {
                options: vec!["ndots:1\nsearch evil".into()],
                ..Default::default()
            })
        }),
        ("config.annotations", |c| {
            c.annotations.insert("k".into(), "v".repeat(256 * 1024));
        }),
        ("config.labels", |c| {
            c.labels.insert("k".repeat(318), "v".into());
        }),
    ] {
        let mut req = request("x");
        edit(req.config.as_mut().unwrap());
        injected.push((field, req));
    }
    for req in [no_meta, long_host, sysctl, cgroup, port] {
        let e = m.run(req).await.unwrap_err();
        assert!(e.is_invalid_argument(), "{e}");
    }
    // CRI: an unknown handler is NotFound, naming it.
    let e = m.run(handler).await.unwrap_err();
    assert!(
        matches!(&e, SandboxError::UnknownHandler(h) if h == "kata"),
        "{e}"
    );
    assert!(e.to_string().contains("\"kata\""), "{e}");
    for (field, req) in injected {
        let e = m.run(req).await.unwrap_err();
        assert!(e.is_invalid_argument(), "{field}: {e}");
        assert!(e.to_string().contains(field), "{field} not named in: {e}");
    }
    std::fs::remove_file(env.dir.join("net.d/10-fake.conflist")).unwrap();
    assert!(matches!(
        m.run(request("x")).await,
        Err(SandboxError::NetworkNotReady(_))
    ));
    assert_eq!(count(&env.dir.join("state/ns")), 0);
    assert!(store::list(&m.db).unwrap().is_empty());
}

/// A user namespace POD request: the kubelet's one-block mapping.
fn userns_request(name: &str) -> RunPodSandboxRequest {
    let mut req = request(name);
    let map = || {
        vec![IdMapping {
            host_id: 65536 * 3,
            container_id: 0,
            length: 65536,
        }]
    };
    let sc = req.config.as_mut().unwrap().linux.as_mut().unwrap();
    sc.security_context.as_mut().unwrap().namespace_options = Some(NamespaceOption {
        pid: NamespaceMode::Container as i32,
        userns_options: Some(UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: map(),
            gids: map(),
        }),
        ..Default::default()
    });
    req
}

#[tokio::test]
async fn a_pod_user_namespace_is_refused_where_the_host_cannot_have_one() {
    let env = env();
    let m = &env.manager;
    // Bad mappings are the request's fault, whatever the host supports.
    let mut bad = userns_request("bad");
    let sc = bad.config.as_mut().unwrap().linux.as_mut().unwrap();
    let opts = sc
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .as_mut()
        .unwrap();
    opts.userns_options.as_mut().unwrap().uids.clear();
    assert!(m.run(bad).await.unwrap_err().is_invalid_argument());

    m.set_user_namespaces(Err("no idmapped mounts on this kernel".into()));
    let e = m.run(userns_request("u")).await.unwrap_err();
    assert!(matches!(&e, SandboxError::HostUnsupported(_)), "{e}");
    assert!(!e.is_invalid_argument());
    assert!(e.to_string().contains("no idmapped mounts on this kernel"), "{e}");
    // Nothing was created: no record, no name, no namespaces, no pod files.
    assert!(store::list(&m.db).unwrap().is_empty());
    assert_eq!(count(&env.dir.join("state/ns")), 0);
    assert_eq!(count(&env.dir.join("state/pods")), 0);
    assert!(!env.dir.join("bin/calls").exists(), "no CNI call");
    // A pod in the host's user namespace is unaffected.
    let id = m.run(request("plain")).await.unwrap();
    m.remove(id).await.unwrap();
}

#[tokio::test]
async fn recovery_marks_pods_with_lost_namespaces_not_ready() {
    let env = env();
    let id = env.manager.run(request("r")).await.unwrap();
    let rec = env.manager.sandbox(&id).unwrap().unwrap();
    // What a reboot does to `state`: the pinned namespaces are gone.
    crate::netns::unpin(&rec.meta.ns_dir).unwrap();
    let orphan = env.dir.join("state/pods").join("ab".repeat(32));
    std::fs::create_dir_all(&orphan).unwrap();
    assert_eq!(
        env.manager.recovered(),
        crate::Recovered::default(),
        "nothing at start"
    );
    let found = env.manager.recover().unwrap();
    assert_eq!(found.sandboxes, 1);
    assert_eq!(found.marked_not_ready, 1);
    assert_eq!(found.orphans_removed, 1);
    assert!(!orphan.exists());
    let (st, _) = env.manager.status(id.clone(), false).await.unwrap();
    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32);
    // Removal still works: DEL with the recorded result, no namespace to pass.
    env.manager.remove(id).await.unwrap();
    assert_eq!(count(&env.dir.join("cache/results")), 0);
}

#[tokio::test]
async fn recovery_tears_down_a_pod_whose_run_never_finished() {
    let env = env();
    let id = env.manager.run(request("half")).await.unwrap();
    // What a crash just before READY leaves: every side effect done, the record still creating.
    store::update(&env.manager.db, &id, |s| {
        s.creating = true;
        s.state = crate::SandboxState::NotReady;
        s.cni_result = None;
    })
    .unwrap();
    let found = env.manager.recover().unwrap();
    assert_eq!(found.half_created_removed, 1);
    assert_eq!(found.sandboxes, 0);
    assert!(env.manager.sandbox(&id).unwrap().is_none());
    let calls = std::fs::read_to_string(env.dir.join("bin/calls")).unwrap();
    assert_eq!(calls.lines().filter(|l| l.starts_with("DEL")).count(), 1);
    assert_eq!(count(&env.dir.join("state/ns")), 0);
    assert_eq!(count(&env.dir.join("state/pods")), 0);
    assert_eq!(count(&env.dir.join("cache/results")), 0);
    // The name is free again: the kubelet's retry succeeds.
    let again = env.manager.run(request("half")).await.unwrap();
    env.manager.stop(again.clone()).await.unwrap();
    env.manager.remove(again).await.unwrap();
}

#[tokio::test]
async fn recovery_deletes_networks_no_record_owns() {
    let env = env();
    let id = env.manager.run(request("lost")).await.unwrap();
    let rec = env.manager.sandbox(&id).unwrap().unwrap();
    // The record is gone (a lost database), its network and namespaces are not.
    store::delete(&env.manager.db, &id, &rec.meta.name_key).unwrap();
    // An entry of another runtime sharing the cache dir is never touched.
    let foreign = env.dir.join("cache/results/othernet-ffff-eth0");
    std::fs::write(
        &foreign,
        r#"{"kind":"cniCacheV1","containerId":"ffff","config":"","ifName":"eth0","networkName":"othernet","netns":"/var/run/netns/x","cniArgs":[],"capabilityArgs":{},"result":null}"#,
    )
    .unwrap();
    let found = env.manager.recover().unwrap();
    assert_eq!(found.networks_deleted, 1);
    let calls = std::fs::read_to_string(env.dir.join("bin/calls")).unwrap();
    assert_eq!(calls.lines().filter(|l| l.starts_with("DEL")).count(), 1);
    assert!(foreign.exists());
    assert_eq!(count(&env.dir.join("cache/results")), 1);
    assert_eq!(count(&env.dir.join("state/ns")), 0);
    let _ = crate::cgroup::remove(&env.manager.cgroups, &rec.meta.cgroup_parent);
}

#[tokio::test]
async fn recovery_leaves_a_pod_with_an_unreadable_record_untouched() {
    let env = env();
    let id = env.manager.run(request("u")).await.unwrap();
    let rec = env.manager.sandbox(&id).unwrap().unwrap();
    store::put_raw_status(&env.manager.db, &id, b"{\"state\":{\"from\":\"a newer crius\"}}");
    let found = env.manager.recover().unwrap();
    assert_eq!(found.unreadable, 1);
    assert_eq!(found.orphans_removed, 0);
    assert_eq!(found.networks_deleted, 0);
    let ns = rec.meta.namespaces.net.clone().unwrap();
    assert!(
        crate::netns::is_pinned(&ns),
        "the pod's network namespace was unpinned"
    );
    assert!(rec.meta.files.dir.exists(), "the pod's files were removed");
    assert_eq!(
        count(&env.dir.join("cache/results")),
        1,
        "the pod's network was deleted"
    );
    let listed = env.manager.list(None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].state, PodSandboxState::SandboxNotready as i32);
    assert_eq!(listed[0].metadata.as_ref().unwrap().name, "u");
    // Stop refuses rather than act on what it cannot read; the test then repairs the record.
    assert!(env.manager.stop(id.clone()).await.is_err());
    assert!(crate::netns::is_pinned(&ns));
    let status = serde_json::to_vec(&rec.status).unwrap();
    store::put_raw_status(&env.manager.db, &id, &status);
    env.manager.remove(id).await.unwrap();
}
