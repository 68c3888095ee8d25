//! Running pods survive the daemon: SIGKILL with 5 pods running, then restart — same ids,
//! pids and IPs, logs keep growing, exec works, an exit that happened while the daemon was down
//! is reported with its real code; SIGTERM leaves containers running, and after the restart
//! their exits are published as events again.

use std::path::Path;
use std::time::{Duration, Instant};

use crius_tests::containers::{World, log_lines, read_log};
use crius_tests::pods::{self, PodCleanup};
use crius_tests::util;
use k8s_cri::v1::*;

const LOOP: &str = "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.1; done";

async fn pod_ip(w: &mut World, pod: &str) -> String {
    let st = w.d.pod_status(pod).await.unwrap().status.unwrap();
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32, "pod {pod}");
    st.network.unwrap().ip
}

async fn create_in(
    w: &mut World,
    pod: &str,
    pod_config: &PodSandboxConfig,
    name: &str,
    cmd: &[&str],
) -> String {
    let req = CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(w.config(name, cmd)),
        sandbox_config: Some(pod_config.clone()),
    };
    let id =
        w.d.runtime
            .create_container(req)
            .await
            .unwrap()
            .into_inner()
            .container_id;
    w.start(&id).await.unwrap();
    id
}

fn log_len(w: &World, name: &str) -> usize {
    log_lines(&read_log(&w.log_dir.join(format!("{name}.log"))), "stdout").len()
}

/// Waits (bounded) until the container's log has more than `than` stdout lines.
async fn wait_log_grows(w: &World, name: &str, than: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while log_len(w, name) <= than {
        assert!(
            Instant::now() < deadline,
            "log of {name} stopped growing at {than} lines"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while util::alive(pid) {
        assert!(Instant::now() < deadline, "pid {pid} did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn five_running_pods_survive_sigkill() {
    let mut w = World::new().await.unwrap();
    let _cleanup = PodCleanup::new(&w.d);
    let mut pods_ = vec![(w.pod.clone(), w.pod_config())];
    for i in 1..5 {
        let mut cfg = pods::pod_config(&format!("survivor-{i}"), &format!("uid-survivor-{i}"));
        cfg.log_directory = w.log_dir.to_string_lossy().into_owned();
        let id = w.d.run_pod(cfg.clone()).await.unwrap();
        pods_.push((id, cfg));
    }
    let mut before = Vec::new();
    for (i, (pod, cfg)) in pods_.iter().enumerate() {
        let name = format!("c{i}");
        let id = create_in(&mut w, pod, cfg, &name, &["sh", "-c", LOOP]).await;
        let pid = w.pid(&id).await;
        let ip = pod_ip(&mut w, pod).await;
        before.push((pod.clone(), id, pid, ip, name));
    }
    let (pod0, cfg0) = pods_[0].clone();
    let quitter = create_in(
        &mut w,
        &pod0,
        &cfg0,
        "quitter",
        &["sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.1; done; exit 7"],
    )
    .await;
    let quitter_pid = w.pid(&quitter).await;
    for (_, _, _, _, name) in &before {
        wait_log_grows(&w, name, 0).await;
    }

    w.d.kill().await.unwrap();
    // While the daemon is down: one container exits (the shim records it), the others log on.
    std::fs::write(
        w.d.state.join("containers").join(&quitter).join("rootfs/tmp/go"),
        b"",
    )
    .unwrap();
    wait_gone(quitter_pid).await;
    // Someone detached a running container's host-side rootfs mount: recovery mounts it again.
    let rootfs1 = w.d.state.join("containers").join(&before[1].1).join("rootfs");
    nix::mount::umount2(&rootfs1, nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert!(!util::mounts_under(&rootfs1).contains(&rootfs1));
    let logged: Vec<usize> = before.iter().map(|b| log_len(&w, &b.4)).collect();
    for ((_, _, _, _, name), n) in before.iter().zip(&logged) {
        wait_log_grows(&w, name, *n).await;
    }
    w.d.restart().await.unwrap();

    let listed = w.d.pods().await;
    assert_eq!(listed.len(), 5);
    let running =
        w.d.runtime
            .list_containers(ListContainersRequest {
                filter: Some(ContainerFilter {
                    state: Some(ContainerStateValue {
                        state: ContainerState::ContainerRunning as i32,
                    }),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .containers;
    assert_eq!(running.len(), 5, "{running:?}");
    for (pod, id, pid, ip, name) in &before {
        assert!(
            listed
                .iter()
                .any(|p| &p.id == pod && p.state == PodSandboxState::SandboxReady as i32)
        );
        assert!(running.iter().any(|c| &c.id == id && &c.pod_sandbox_id == pod));
        assert_eq!(w.pid(id).await, *pid, "{name} kept its pid");
        assert_eq!(&pod_ip(&mut w, pod).await, ip, "{name}'s pod kept its IP");
        let n = log_len(&w, name);
        wait_log_grows(&w, name, n).await;
        let out = w.exec(id, &["echo", "still here"], 10).await.unwrap();
        assert_eq!(out.exit_code, 0);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "still here\n");
    }
    assert!(
        util::mounts_under(&rootfs1).contains(&rootfs1),
        "rootfs mounted again"
    );
    assert!(rootfs1.join("bin/sh").exists());
    let q = w.state(&quitter).await;
    assert_eq!(q.state, ContainerState::ContainerExited as i32);
    assert_eq!(q.exit_code, 7);
    assert_eq!(q.reason, "Error");
    assert!(q.finished_at > q.started_at);

    // The recovered containers are fully manageable: stop one and see its exit.
    let (_, id0, ..) = &before[0];
    w.stop(id0, 0).await.unwrap();
    assert_eq!(w.state(id0).await.state, ContainerState::ContainerExited as i32);
    for (pod, ..) in pods_.iter().skip(1) {
        w.d.remove_pod(pod).await.unwrap();
    }
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn sigterm_leaves_containers_running() {
    let mut w = World::new().await.unwrap();
    let _cleanup = PodCleanup::new(&w.d);
    let id = w
        .run(
            "calm",
            &[
                "sh",
                "-c",
                "while [ ! -e /tmp/go ]; do echo line; sleep 0.1; done; exit 4",
            ],
        )
        .await;
    let pid = w.pid(&id).await;
    let status = w.d.stop().await.unwrap();
    assert!(status.success(), "graceful stop exits 0: {status}");
    assert!(
        util::alive(pid),
        "a graceful stop leaves the container {pid} running"
    );
    let n = log_len(&w, "calm");
    wait_log_grows(&w, "calm", n).await;
    w.d.restart().await.unwrap();
    let st = w.state(&id).await;
    assert_eq!(st.state, ContainerState::ContainerRunning as i32);
    assert_eq!(w.pid(&id).await, pid);
    // The restarted daemon watches the container again: its exit is published unasked.
    let mut events =
        w.d.runtime
            .clone()
            .get_container_events(GetEventsRequest {})
            .await
            .unwrap()
            .into_inner();
    std::fs::write(w.d.state.join("containers").join(&id).join("rootfs/tmp/go"), b"").unwrap();
    let stopped = loop {
        let ev = tokio::time::timeout(Duration::from_secs(60), events.message())
            .await
            .expect("no STOPPED event within 60 s")
            .unwrap()
            .expect("stream ended");
        if ev.container_id == id
            && ev.container_event_type == ContainerEventType::ContainerStoppedEvent as i32
        {
            break ev;
        }
    };
    let st = stopped
        .containers_statuses
        .iter()
        .find(|c| c.id == id)
        .expect("own status");
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 4);
    w.teardown().await.unwrap();
}

/// The shim pid from the verbose status.
async fn shim_pid(w: &mut World, id: &str) -> i32 {
    let st = w.status(id).await.expect("status");
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).expect("info json");
    info["shimPid"].as_i64().expect("shimPid") as i32
}

fn kill9(pid: i32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
}

#[tokio::test]
async fn containers_whose_shim_died_with_the_daemon_are_unknown_or_exited() {
    let mut w = World::new().await.unwrap();
    let _cleanup = PodCleanup::new(&w.d);
    let orphan = w.run("orphan", &["sh", "-c", LOOP]).await;
    let lost = w.run("lost", &["sh", "-c", LOOP]).await;
    let (orphan_pid, orphan_shim) = (w.pid(&orphan).await, shim_pid(&mut w, &orphan).await);
    let (lost_pid, lost_shim) = (w.pid(&lost).await, shim_pid(&mut w, &lost).await);
    // A started container's shim has re-exec'd into its monitor mode under its own name.
    let comm = std::fs::read_to_string(format!("/proc/{orphan_shim}/comm")).unwrap();
    assert_eq!(comm.trim(), "crius-shim");
    w.d.kill().await.unwrap();
    // While the daemon is down: one shim dies alone, the other with its container.
    kill9(orphan_shim);
    kill9(lost_shim);
    kill9(lost_pid);
    wait_gone(orphan_shim).await;
    wait_gone(lost_shim).await;
    wait_gone(lost_pid).await;
    w.d.restart().await.unwrap();

    let st = w.state(&lost).await;
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert_eq!(st.reason, "Unknown");
    assert_eq!(st.exit_code, 255);

    // The container still runs without its shim: UNKNOWN, and StopContainer still ends it.
    let st = w.state(&orphan).await;
    assert_eq!(st.state, ContainerState::ContainerUnknown as i32, "{st:?}");
    assert!(Path::new(&format!("/proc/{orphan_pid}")).exists());
    w.stop(&orphan, 0).await.unwrap();
    assert_eq!(
        w.state(&orphan).await.state,
        ContainerState::ContainerExited as i32
    );
    wait_gone(orphan_pid).await;
    w.remove(&orphan).await.unwrap();
    w.remove(&lost).await.unwrap();
    // Their teardowns run in the background after the answers.
    w.wait_torn_down(&orphan).await.unwrap();
    w.wait_torn_down(&lost).await.unwrap();
    assert!(
        std::fs::read_dir(w.d.state.join("containers"))
            .unwrap()
            .next()
            .is_none(),
        "removed containers leave no bundle"
    );
    w.teardown().await.unwrap();
}
