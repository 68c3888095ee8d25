//! Runtime handlers: pods whose `runtime_handler` names an external OCI runtime (Debian's runc
//! and crun, configured as `[runtimes.runc]` / `[runtimes.crun]`) run their containers through
//! that runtime under crius-shim, and everything crius-shim owns works as with the embedded
//! runtime: the CRI log, ExecSync, exec with a terminal and attach through the streaming server,
//! stop with the right exit codes, stats from the cgroup, events, and survival of a daemon
//! restart. Status lists the handlers; an unknown handler is NotFound naming it.
//!
//! A missing runtime binary fails the test with the reason (`make deps` installs both).
//!
//! crun 1.8 refuses to create any container on a cgroup v1 host whose cgroup2 hierarchy
//! (`/sys/fs/cgroup/unified`) holds a controller ("cgroups in hybrid mode not supported"), as
//! this kind of host's does (hugetlb). There the handler's `runtime_path` is a two-line wrapper
//! that runs crun in its own mount namespace without that mount, so crun sees a plain v1 host;
//! everything else (arguments, cgroup path, state dir) is crun's as crius calls it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crius_tests::containers::{World, log_lines, read_log};
use crius_tests::security::{exec, exec_ok, sleeper};
use crius_tests::streaming::{RemoteCommand, Stdio};
use futures_util::StreamExt;
use k8s_cri::v1::*;
use tonic::Code;

const RUNC: &str = "/usr/sbin/runc";
const CRUN: &str = "/usr/bin/crun";

/// The handlers' configuration; the directory holds crun's wrapper when the host needs one.
struct Runtimes {
    _dir: tempfile::TempDir,
    crun: PathBuf,
}

impl Runtimes {
    fn new() -> Runtimes {
        for bin in [RUNC, CRUN] {
            assert!(
                Path::new(bin).is_file(),
                "{bin} is missing: install Debian's runc and crun (`make deps`)"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let v2_controllers = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
            .map(|c| !c.trim().is_empty())
            .unwrap_or(false);
        let crun = if v2_controllers {
            let w = dir.path().join("crun");
            let script = format!(
                "#!/bin/sh\nexec unshare --mount --propagation unchanged \
                 sh -c 'mount --make-rprivate /sys/fs/cgroup && umount /sys/fs/cgroup/unified \
                 && exec {CRUN} \"$@\"' crun \"$@\"\n"
            );
            std::fs::write(&w, script).unwrap();
            std::fs::set_permissions(&w, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
            w
        } else {
            PathBuf::from(CRUN)
        };
        Runtimes { _dir: dir, crun }
    }

    fn config(&self) -> String {
        format!(
            "[runtimes.runc]\nruntime_path = \"{RUNC}\"\n[runtimes.crun]\nruntime_path = \"{}\"\n",
            self.crun.display()
        )
    }
}

/// The runtime binary and state dir (`--root`) of `handler` in `w`'s daemon.
fn runtime_of(w: &World, rts: &Runtimes, handler: &str) -> (PathBuf, PathBuf) {
    let bin = if handler == "runc" {
        PathBuf::from(RUNC)
    } else {
        rts.crun.clone()
    };
    (bin, w.d.state.join("runtimes").join(handler))
}

/// `RUNTIME --root R state ID` as JSON; `None` when the runtime does not know the container.
fn runtime_state(w: &World, rts: &Runtimes, handler: &str, id: &str) -> Option<serde_json::Value> {
    let (bin, root) = runtime_of(w, rts, handler);
    let out = std::process::Command::new(bin)
        .arg("--root")
        .arg(root)
        .args(["state", id])
        .output()
        .expect("run the runtime");
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("state is JSON"))
}

/// A second pod in `w` served by `handler`; it becomes the pod `w.create` uses.
async fn handler_pod(w: &mut World, handler: &str) -> Result<String, tonic::Status> {
    handler_pod_with(w, handler, false).await
}

async fn handler_pod_with(w: &mut World, handler: &str, privileged: bool) -> Result<String, tonic::Status> {
    let mut cfg = w.pod_config();
    cfg.metadata.as_mut().unwrap().name = format!("{handler}-pod");
    crius_tests::pods::security_context(&mut cfg).privileged = privileged;
    let id =
        w.d.runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(cfg),
                runtime_handler: handler.into(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
    w.pod = id.clone();
    Ok(id)
}

async fn wait_log(w: &World, name: &str, stream: &str, line: &str) {
    let path = w.log_dir.join(format!("{name}.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log_lines(&read_log(&path), stream).iter().any(|l| l == line) {
        assert!(
            Instant::now() < deadline,
            "{line:?} never reached the {stream} of {}: {:?}",
            path.display(),
            std::fs::read_to_string(&path)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn url(w: &mut World, id: &str, cmd: Option<&[&str]>, io: Stdio) -> String {
    match cmd {
        Some(cmd) => {
            let req = ExecRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                tty: io.tty,
                stdin: io.stdin,
                stdout: io.stdout,
                stderr: io.stderr,
            };
            w.d.runtime.exec(req).await.expect("Exec").into_inner().url
        }
        None => {
            let req = AttachRequest {
                container_id: id.into(),
                stdin: io.stdin,
                tty: io.tty,
                stdout: io.stdout,
                stderr: io.stderr,
            };
            w.d.runtime.attach(req).await.expect("Attach").into_inner().url
        }
    }
}

async fn events_for(s: &mut tonic::Streaming<ContainerEventResponse>, id: &str, n: usize) -> Vec<i32> {
    let mut out = Vec::new();
    while out.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(60), s.next())
            .await
            .unwrap_or_else(|_| panic!("no event for {id} after {out:?}"))
            .expect("stream ended")
            .expect("stream error");
        if ev.container_id == id {
            out.push(ev.container_event_type);
        }
    }
    out
}

/// The whole life of containers under `handler`, with every crius-shim feature on the way.
async fn lifecycle_under(handler: &str) {
    let rts = Runtimes::new();
    let mut w = World::with_config(&rts.config()).await.unwrap();
    let names: Vec<String> = {
        let st =
            w.d.runtime
                .status(StatusRequest { verbose: false })
                .await
                .unwrap();
        st.into_inner()
            .runtime_handlers
            .into_iter()
            .map(|h| h.name)
            .collect()
    };
    assert_eq!(names, ["", "crun", "runc"], "Status lists every handler");
    let e = handler_pod(&mut w, "kata").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("\"kata\""), "{}", e.message());

    let pod = handler_pod(&mut w, handler).await.unwrap();
    let pst = w.d.pod_status(&pod).await.unwrap().status.unwrap();
    assert_eq!(pst.runtime_handler, handler);
    let mut events =
        w.d.runtime
            .clone()
            .get_container_events(GetEventsRequest {})
            .await
            .unwrap()
            .into_inner();

    // A container that writes to both streams, then sleeps as PID 1 (ignoring SIGTERM).
    let app = w
        .run(
            "app",
            &["sh", "-c", "echo out-line; echo err-line >&2; exec sleep 3600"],
        )
        .await;
    let st = runtime_state(&w, &rts, handler, &app).expect("the runtime knows the container");
    assert_eq!(st["status"], "running", "{st}");
    assert_eq!(st["pid"].as_i64().unwrap() as i32, w.pid(&app).await);
    use ContainerEventType::*;
    let (created, started) = (ContainerCreatedEvent as i32, ContainerStartedEvent as i32);
    assert_eq!(events_for(&mut events, &app, 2).await, [created, started]);
    wait_log(&w, "app", "stdout", "out-line").await;
    wait_log(&w, "app", "stderr", "err-line").await;

    // ExecSync: exact output and exit code.
    let r = w
        .exec(&app, &["sh", "-c", "echo hi; echo oops >&2; exit 3"], 30)
        .await
        .unwrap();
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"hi\n"[..], &b"oops\n"[..], 3)
    );

    // Exec with a terminal through the streaming server.
    let tty = Stdio {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: true,
    };
    let u = url(
        &mut w,
        &app,
        Some(&["sh", "-c", "tty; read x; echo got-$x; exit 4"]),
        tty,
    )
    .await;
    let mut rc = RemoteCommand::start(&u, tty).await.unwrap();
    rc.read_stdout_until(|s| s.contains("/dev/pts/")).await;
    rc.write(b"abc\n").await;
    let f = rc.finish().await;
    assert!(
        String::from_utf8_lossy(&f.stdout).contains("got-abc\r\n"),
        "{:?}",
        f.stdout
    );
    assert_eq!(f.exit_code(), 4);

    // Stats come from the container's cgroup, the one the runtime put it in.
    let stats =
        w.d.runtime
            .container_stats(ContainerStatsRequest {
                container_id: app.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
    assert!(stats.memory.unwrap().working_set_bytes.unwrap().value > 0);
    let cgroup = w.cgroup_path(&app).await;
    let procs = std::fs::read_to_string(format!("/sys/fs/cgroup/pids{cgroup}/cgroup.procs"))
        .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/unified{cgroup}/cgroup.procs")))
        .unwrap_or_else(|e| panic!("cgroup {cgroup}: {e}"));
    let init = w.pid(&app).await.to_string();
    assert!(procs.lines().any(|p| p.trim() == init), "{procs}");

    // Attach: critest's shell with stdin_once.
    let mut cfg = w.config("shell", &["/bin/sh"]);
    cfg.stdin = true;
    cfg.stdin_once = true;
    let shell = w.create(cfg).await.unwrap();
    w.start(&shell).await.unwrap();
    let io = Stdio {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let u = url(&mut w, &shell, None, io).await;
    let mut a = RemoteCommand::start(&u, io).await.unwrap();
    a.write(b"echo -n hello\n").await;
    assert_eq!(a.read_stdout_until(|s| s.contains("hello")).await, "hello");
    a.close_stdin().await;
    assert_eq!(a.finish().await.exit_code(), 0);
    assert_eq!(w.wait_exited(&shell).await.unwrap().exit_code, 0, "sh read EOF");

    // The daemon restarts: the container keeps running under the same runtime.
    let pid = w.pid(&app).await;
    w.d.restart().await.unwrap();
    let s = w.state(&app).await;
    assert_eq!(s.state, ContainerState::ContainerRunning as i32);
    assert_eq!(w.pid(&app).await, pid);
    assert!(w.d.containers().await.iter().any(|c| c.id == app));
    assert_eq!(
        exec_ok(&mut w, &app, &["echo", "after-restart"]).await,
        "after-restart\n"
    );

    // Stop: PID 1 ignores SIGTERM, so the timeout's SIGKILL ends it (137); a shell that traps
    // SIGTERM exits 0. The event stream from before the restart ended with the old daemon.
    let mut events =
        w.d.runtime
            .clone()
            .get_container_events(GetEventsRequest {})
            .await
            .unwrap()
            .into_inner();
    let polite = w
        .run(
            "polite",
            &["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"],
        )
        .await;
    w.stop(&polite, 10).await.unwrap();
    assert_eq!(w.wait_exited(&polite).await.unwrap().exit_code, 0);
    w.remove(&polite).await.unwrap();
    assert_eq!(
        events_for(&mut events, &polite, 4).await,
        [
            created,
            started,
            ContainerStoppedEvent as i32,
            ContainerDeletedEvent as i32
        ]
    );
    w.stop(&app, 1).await.unwrap();
    let s = w.wait_exited(&app).await.unwrap();
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"));
    w.remove(&app).await.unwrap();
    // The teardown (runtime state, then bundle and layer) finishes after the answer.
    w.wait_torn_down(&app).await.unwrap();
    assert!(
        runtime_state(&w, &rts, handler, &app).is_none(),
        "the runtime forgot it"
    );
    assert!(!runtime_of(&w, &rts, handler).1.join(&app).exists());
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn runc_handler_runs_the_whole_lifecycle() {
    lifecycle_under("runc").await;
}

#[tokio::test]
async fn crun_handler_runs_the_whole_lifecycle() {
    lifecycle_under("crun").await;
}

/// Security settings reach the external runtime's spec and are honoured: a read-only rootfs
/// and a dropped capability under runc.
#[tokio::test]
async fn runc_honours_readonly_rootfs_and_dropped_capabilities() {
    let rts = Runtimes::new();
    let mut w = World::with_config(&rts.config()).await.unwrap();
    handler_pod(&mut w, "runc").await.unwrap();
    let sc = LinuxContainerSecurityContext {
        readonly_rootfs: true,
        capabilities: Some(Capability {
            drop_capabilities: vec!["CHOWN".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = w.create(sleeper(&w, "locked", sc)).await.unwrap();
    w.start(&id).await.unwrap();
    assert!(runtime_state(&w, &rts, "runc", &id).is_some(), "runc runs it");
    let (code, _, err) = exec(&mut w, &id, &["touch", "/newfile"]).await;
    assert_ne!(code, 0, "the rootfs is read-only");
    assert!(err.contains("Read-only file system"), "{err}");
    let status = exec_ok(&mut w, &id, &["cat", "/proc/self/status"]).await;
    let eff = crius_tests::security::cap_mask(&crius_tests::security::status_field(&status, "CapEff"));
    assert_eq!(eff & 1, 0, "CAP_CHOWN (bit 0) was dropped: {eff:x}");
    assert_ne!(eff, 0, "the other default capabilities stay");
    let (code, _, err) = exec(
        &mut w,
        &id,
        &["sh", "-c", "touch /dev/shm/f && chown 1:1 /dev/shm/f"],
    )
    .await;
    assert_ne!(code, 0, "chown needs CAP_CHOWN");
    assert!(err.contains("Operation not permitted"), "{err}");
    w.teardown().await.unwrap();
}

/// A handler with `privileged_without_host_devices`: its privileged containers see no host
/// device nodes, while the same container under the plain runc handler sees them.
#[tokio::test]
async fn privileged_without_host_devices_under_runc() {
    let rts = Runtimes::new();
    let nodev = format!(
        "{}[runtimes.nodev]\nruntime_path = \"{RUNC}\"\nprivileged_without_host_devices = true\n",
        rts.config()
    );
    let mut w = World::with_config(&nodev).await.unwrap();
    let privileged = LinuxContainerSecurityContext {
        privileged: true,
        ..Default::default()
    };
    let mut seen = Vec::new();
    for handler in ["runc", "nodev"] {
        handler_pod_with(&mut w, handler, true).await.unwrap();
        let id = w.create(sleeper(&w, handler, privileged.clone())).await.unwrap();
        w.start(&id).await.unwrap();
        let (code, _, _) = exec(&mut w, &id, &["test", "-c", "/dev/loop-control"]).await;
        seen.push(code == 0);
    }
    assert!(Path::new("/dev/loop-control").exists(), "the host has the device");
    assert_eq!(seen, [true, false], "host devices under runc, none under nodev");
    w.teardown().await.unwrap();
}

/// A pod with its own user namespace under runc: runc joins the pod's pinned user namespace
/// (the kubelet's mapping in uid_map; root inside is the mapped id on the host), the rootfs
/// crius idmapped shows the image's files as root's, and exec joins the user namespace too.
#[tokio::test]
async fn runc_runs_a_container_of_a_user_namespace_pod() {
    let rts = Runtimes::new();
    let mut w = World::with_config(&rts.config()).await.unwrap();
    // Host ids no other test uses.
    let host_id = 65536 * (3000 + u32::from(w.net.n));
    let maps = || {
        vec![IdMapping {
            host_id,
            container_id: 0,
            length: 65536,
        }]
    };
    let ns = NamespaceOption {
        network: NamespaceMode::Pod as i32,
        ipc: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        target_id: String::new(),
        userns_options: Some(UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: maps(),
            gids: maps(),
        }),
    };
    let mut cfg = w.pod_config();
    cfg.metadata.as_mut().unwrap().name = "runc-userns-pod".into();
    *crius_tests::pods::namespace_options(&mut cfg) = ns.clone();
    let pod =
        w.d.runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(cfg),
                runtime_handler: "runc".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
    w.pod = pod;
    let sc = LinuxContainerSecurityContext {
        namespace_options: Some(ns),
        ..Default::default()
    };
    let id = w.create(sleeper(&w, "userns", sc)).await.unwrap();
    w.start(&id).await.unwrap();
    assert!(runtime_state(&w, &rts, "runc", &id).is_some(), "runc runs it");
    let uid_map = exec_ok(&mut w, &id, &["cat", "/proc/self/uid_map"]).await;
    assert_eq!(
        uid_map.split_whitespace().collect::<Vec<_>>(),
        ["0", &host_id.to_string(), "65536"]
    );
    assert_eq!(exec_ok(&mut w, &id, &["id", "-u"]).await.trim(), "0");
    assert_eq!(
        exec_ok(
            &mut w,
            &id,
            &["stat", "-c", "%u:%g", "/bin/busybox", "/etc/hosts"]
        )
        .await
        .split_whitespace()
        .collect::<Vec<_>>(),
        ["0:0", "0:0"]
    );
    let pid = w.pid(&id).await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(
        crius_tests::security::status_field(&status, "Uid")
            .split_whitespace()
            .next(),
        Some(&*host_id.to_string())
    );
    w.teardown().await.unwrap();
}
