//! Every container and pod verb takes the same id forms: the full id or a unique prefix of one
//! resolves to that object; a prefix shared by two objects is InvalidArgument naming both and
//! changes nothing. Random ids share a first hex digit after a handful of objects, so the tests
//! create objects until two do (at most 17, by the pigeonhole principle).

use std::collections::HashMap;

use crius_tests::containers::World;
use k8s_cri::v1::*;
use tonic::Code;

/// The first hex digit two of `ids` share, with those two ids.
fn shared_first_digit(ids: &[String]) -> Option<(String, String, String)> {
    let mut seen: HashMap<char, &String> = HashMap::new();
    for id in ids {
        let c = id.chars().next()?;
        if let Some(other) = seen.insert(c, id) {
            return Some((c.to_string(), other.clone(), id.clone()));
        }
    }
    None
}

/// The shortest prefix of `id` that no other of `ids` starts with, at least 2 characters.
fn unique_prefix(id: &str, ids: &[String]) -> String {
    (2..=id.len())
        .map(|n| &id[..n])
        .find(|p| ids.iter().filter(|o| o.starts_with(p)).count() == 1)
        .expect("ids are distinct")
        .to_string()
}

fn assert_ambiguous<T: std::fmt::Debug>(verb: &str, r: Result<T, tonic::Status>, a: &str, b: &str) {
    let e = r.expect_err(&format!("{verb} with an ambiguous prefix must fail"));
    assert_eq!(e.code(), Code::InvalidArgument, "{verb}: {e:?}");
    assert!(e.message().contains("ambiguous"), "{verb}: {}", e.message());
    for id in [a, b] {
        assert!(
            e.message().contains(&id[..12]),
            "{verb} names candidate {id}: {}",
            e.message()
        );
    }
}

#[tokio::test]
async fn container_verbs_resolve_unique_prefixes_and_refuse_ambiguous_ones() {
    let mut w = World::new().await.unwrap();
    let mut ids = Vec::new();
    let (shared, a, b) = loop {
        let n = ids.len();
        assert!(n <= 16, "17 random ids always share a first digit");
        ids.push(w.run(&format!("c{n}"), &["sleep", "3600"]).await);
        if let Some(found) = shared_first_digit(&ids) {
            break found;
        }
    };
    // A created (not started) container for StartContainer.
    let created = w.create(w.config("created", &["sleep", "3600"])).await.unwrap();
    ids.push(created.clone());
    assert!(ids.iter().filter(|i| i.starts_with(&shared)).count() >= 2);

    // Ambiguous: every verb refuses, nothing changes.
    assert_ambiguous("ContainerStatus", w.status(&shared).await, &a, &b);
    assert_ambiguous("StartContainer", w.start(&shared).await, &a, &b);
    assert_ambiguous("StopContainer", w.stop(&shared, 0).await, &a, &b);
    assert_ambiguous("RemoveContainer", w.remove(&shared).await, &a, &b);
    assert_ambiguous("ExecSync", w.exec(&shared, &["true"], 5).await, &a, &b);
    let rt = &mut w.d.runtime;
    let update = UpdateContainerResourcesRequest {
        container_id: shared.clone(),
        ..Default::default()
    };
    assert_ambiguous(
        "UpdateContainerResources",
        rt.update_container_resources(update).await,
        &a,
        &b,
    );
    let reopen = ReopenContainerLogRequest {
        container_id: shared.clone(),
    };
    assert_ambiguous(
        "ReopenContainerLog",
        rt.reopen_container_log(reopen).await,
        &a,
        &b,
    );
    let stats = ContainerStatsRequest {
        container_id: shared.clone(),
    };
    assert_ambiguous("ContainerStats", rt.container_stats(stats).await, &a, &b);
    let exec = ExecRequest {
        container_id: shared.clone(),
        cmd: vec!["true".into()],
        stdout: true,
        ..Default::default()
    };
    assert_ambiguous("Exec", rt.exec(exec).await, &a, &b);
    let attach = AttachRequest {
        container_id: shared.clone(),
        stdout: true,
        ..Default::default()
    };
    assert_ambiguous("Attach", rt.attach(attach).await, &a, &b);
    for id in [&a, &b] {
        assert_eq!(w.state(id).await.state, ContainerState::ContainerRunning as i32);
    }

    // Unique prefixes act on their container only.
    let pa = unique_prefix(&a, &ids);
    assert_eq!(w.status(&pa).await.unwrap().status.unwrap().id, a);
    let out = w.exec(&pa, &["echo", "hi"], 5).await.unwrap();
    assert_eq!(out.stdout, b"hi\n");
    let rt = &mut w.d.runtime;
    let stats = ContainerStatsRequest {
        container_id: pa.clone(),
    };
    let stats = rt.container_stats(stats).await.unwrap().into_inner();
    assert_eq!(stats.stats.unwrap().attributes.unwrap().id, a);
    let reopen = ReopenContainerLogRequest {
        container_id: pa.clone(),
    };
    rt.reopen_container_log(reopen).await.unwrap();
    let update = UpdateContainerResourcesRequest {
        container_id: pa.clone(),
        linux: Some(LinuxContainerResources {
            cpu_shares: 512,
            ..Default::default()
        }),
        ..Default::default()
    };
    rt.update_container_resources(update).await.unwrap();
    let exec = ExecRequest {
        container_id: pa.clone(),
        cmd: vec!["true".into()],
        stdout: true,
        ..Default::default()
    };
    assert!(!rt.exec(exec).await.unwrap().into_inner().url.is_empty());
    let attach = AttachRequest {
        container_id: pa.clone(),
        stdout: true,
        ..Default::default()
    };
    assert!(!rt.attach(attach).await.unwrap().into_inner().url.is_empty());

    let pc = unique_prefix(&created, &ids);
    w.start(&pc).await.unwrap();
    assert_eq!(
        w.state(&created).await.state,
        ContainerState::ContainerRunning as i32
    );

    w.stop(&pa, 0).await.unwrap();
    assert_eq!(w.state(&a).await.state, ContainerState::ContainerExited as i32);
    assert_eq!(w.state(&b).await.state, ContainerState::ContainerRunning as i32);
    w.remove(&pa).await.unwrap();
    assert_eq!(w.status(&a).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(w.state(&b).await.state, ContainerState::ContainerRunning as i32);
    // Stop and Remove of what a prefix no longer names succeed (CRI idempotence).
    w.stop(&pa, 0).await.unwrap();
    w.remove(&pa).await.unwrap();
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn pod_verbs_resolve_unique_prefixes_and_refuse_ambiguous_ones() {
    let mut w = World::new().await.unwrap();
    let mut ids = vec![w.pod.clone()];
    let (shared, a, b) = loop {
        let n = ids.len();
        assert!(n <= 16, "17 random ids always share a first digit");
        let mut cfg = w.pod_config();
        cfg.metadata.as_mut().unwrap().name = format!("prefix-pod-{n}");
        cfg.metadata.as_mut().unwrap().uid = format!("prefix-uid-{n}");
        let req = RunPodSandboxRequest {
            config: Some(cfg),
            runtime_handler: String::new(),
        };
        ids.push(
            w.d.runtime
                .run_pod_sandbox(req)
                .await
                .unwrap()
                .into_inner()
                .pod_sandbox_id,
        );
        if let Some(found) = shared_first_digit(&ids) {
            break found;
        }
    };
    let rt = &mut w.d.runtime;
    let status = |id: &str| PodSandboxStatusRequest {
        pod_sandbox_id: id.into(),
        verbose: false,
    };
    let stop = |id: &str| StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    };
    let remove = |id: &str| RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    };
    let stats = |id: &str| PodSandboxStatsRequest {
        pod_sandbox_id: id.into(),
    };
    let forward = |id: &str| PortForwardRequest {
        pod_sandbox_id: id.into(),
        port: vec![80],
    };
    assert_ambiguous(
        "PodSandboxStatus",
        rt.pod_sandbox_status(status(&shared)).await,
        &a,
        &b,
    );
    assert_ambiguous("StopPodSandbox", rt.stop_pod_sandbox(stop(&shared)).await, &a, &b);
    assert_ambiguous(
        "RemovePodSandbox",
        rt.remove_pod_sandbox(remove(&shared)).await,
        &a,
        &b,
    );
    assert_ambiguous(
        "PodSandboxStats",
        rt.pod_sandbox_stats(stats(&shared)).await,
        &a,
        &b,
    );
    assert_ambiguous("PortForward", rt.port_forward(forward(&shared)).await, &a, &b);
    let image = w.image.clone();
    let create = |pod: &str| CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "in-prefixed-pod".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            command: vec!["sleep".into(), "3600".into()],
            ..Default::default()
        }),
        sandbox_config: None,
    };
    assert_ambiguous(
        "CreateContainer",
        rt.create_container(create(&shared)).await,
        &a,
        &b,
    );
    for id in [&a, &b] {
        let st = rt.pod_sandbox_status(status(id)).await.unwrap().into_inner();
        assert_eq!(st.status.unwrap().state, PodSandboxState::SandboxReady as i32);
    }

    let pa = unique_prefix(&a, &ids);
    let st = rt.pod_sandbox_status(status(&pa)).await.unwrap().into_inner();
    assert_eq!(st.status.unwrap().id, a);
    let s = rt.pod_sandbox_stats(stats(&pa)).await.unwrap().into_inner();
    assert_eq!(s.stats.unwrap().attributes.unwrap().id, a);
    assert!(
        !rt.port_forward(forward(&pa))
            .await
            .unwrap()
            .into_inner()
            .url
            .is_empty()
    );
    let c = rt
        .create_container(create(&pa))
        .await
        .unwrap()
        .into_inner()
        .container_id;
    let listed = w.d.containers().await;
    assert_eq!(listed.iter().find(|x| x.id == c).unwrap().pod_sandbox_id, a);
    let rt = &mut w.d.runtime;
    rt.stop_pod_sandbox(stop(&pa)).await.unwrap();
    let st = rt.pod_sandbox_status(status(&a)).await.unwrap().into_inner();
    assert_eq!(st.status.unwrap().state, PodSandboxState::SandboxNotready as i32);
    let st = rt.pod_sandbox_status(status(&b)).await.unwrap().into_inner();
    assert_eq!(st.status.unwrap().state, PodSandboxState::SandboxReady as i32);
    rt.remove_pod_sandbox(remove(&pa)).await.unwrap();
    let gone = rt.pod_sandbox_status(status(&a)).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    rt.stop_pod_sandbox(stop(&pa)).await.unwrap();
    rt.remove_pod_sandbox(remove(&pa)).await.unwrap();
    w.teardown().await.unwrap();
}
