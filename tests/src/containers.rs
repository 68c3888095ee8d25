//! Container helpers: a [`World`] with a registry holding busybox, a daemon that pulled it, a
//! READY pod with a log directory, and short wrappers around the container RPCs.
//!
//! Invariant: everything a `World` made lives under the daemon's temp dir or the test network,
//! so dropping it (daemon, then network, then registry) removes it all.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use k8s_cri::v1::*;

use crate::images::{self, ImageSpec};
use crate::pods::{self, TestNet};
use crate::{Daemon, Registry};

pub struct World {
    // Field order is drop order: the daemon (and its shims) goes first.
    pub d: Daemon,
    pub net: TestNet,
    pub reg: Registry,
    /// The pulled busybox image reference.
    pub image: String,
    pub pod: String,
    pub log_dir: PathBuf,
}

impl World {
    /// A world with busybox on a freshly allocated test network. Panics when not root.
    pub async fn new() -> Result<World> {
        World::with_image(ImageSpec::busybox()).await
    }

    /// Like [`World::new`], with `spec` pushed and pulled as the world's image.
    pub async fn with_image(spec: ImageSpec) -> Result<World> {
        World::with_image_and_config(spec, "").await
    }

    /// Like [`World::new`], with `extra_config` appended to the daemon's config file.
    pub async fn with_config(extra_config: &str) -> Result<World> {
        World::with_image_and_config(ImageSpec::busybox(), extra_config).await
    }

    /// Like [`World::with_image`], the daemon's configuration extended by `extra_config`.
    pub async fn with_image_and_config(spec: ImageSpec, extra_config: &str) -> Result<World> {
        crate::util::require_root();
        let net = TestNet::new();
        let n = net.n;
        let reg = Registry::start()?;
        let pushed = images::push(&reg, "test/busybox", "1", &spec).await?;
        let mut d = net.daemon_with(extra_config).await?;
        d.pull(&pushed.reference).await?;
        let log_dir = d.dir.join("pod-logs");
        std::fs::create_dir_all(&log_dir)?;
        let mut cfg = pods::pod_config("ctr-pod", &format!("uid-ctr-{n}"));
        cfg.log_directory = log_dir.to_string_lossy().into_owned();
        let pod = d.run_pod(cfg).await?;
        Ok(World {
            d,
            net,
            reg,
            image: pushed.reference,
            pod,
            log_dir,
        })
    }

    /// Stops and removes every pod of the daemon (the World's and any a test added, and so
    /// their containers), then drops everything else. Pods must go while the daemon runs: a
    /// [`crate::pods::PodCleanup`] declared after the World only runs once `teardown` has
    /// already dropped the daemon.
    pub async fn teardown(mut self) -> Result<()> {
        let mut ids = vec![self.pod.clone()];
        let listed = self
            .d
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await?
            .into_inner()
            .items;
        ids.extend(listed.into_iter().map(|p| p.id).filter(|id| *id != self.pod));
        for id in ids {
            self.d.stop_pod(&id).await?;
            self.d.remove_pod(&id).await?;
        }
        Ok(())
    }

    pub fn pod_config(&self) -> PodSandboxConfig {
        let mut cfg = pods::pod_config("ctr-pod", &format!("uid-ctr-{}", self.net.n));
        cfg.log_directory = self.log_dir.to_string_lossy().into_owned();
        cfg
    }

    /// A container named `name` running `cmd` from busybox, logging to `<name>.log`.
    pub fn config(&self, name: &str, cmd: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(k8s_cri::v1::ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            ..Default::default()
        }
    }

    pub async fn create(&mut self, config: ContainerConfig) -> Result<String, tonic::Status> {
        let req = CreateContainerRequest {
            pod_sandbox_id: self.pod.clone(),
            config: Some(config),
            sandbox_config: Some(self.pod_config()),
        };
        self.d
            .runtime
            .create_container(req)
            .await
            .map(|r| r.into_inner().container_id)
    }

    /// Creates and starts; panics on failure.
    pub async fn run(&mut self, name: &str, cmd: &[&str]) -> String {
        let id = self.create(self.config(name, cmd)).await.expect("create");
        self.start(&id).await.expect("start");
        id
    }

    pub async fn start(&mut self, id: &str) -> Result<(), tonic::Status> {
        let req = StartContainerRequest {
            container_id: id.into(),
        };
        self.d.runtime.start_container(req).await.map(|_| ())
    }

    pub async fn stop(&mut self, id: &str, timeout: i64) -> Result<(), tonic::Status> {
        let req = StopContainerRequest {
            container_id: id.into(),
            timeout,
        };
        self.d.runtime.stop_container(req).await.map(|_| ())
    }

    pub async fn remove(&mut self, id: &str) -> Result<(), tonic::Status> {
        let req = RemoveContainerRequest {
            container_id: id.into(),
        };
        self.d.runtime.remove_container(req).await.map(|_| ())
    }

    /// Waits (up to 5 s) for the teardown RemoveContainer leaves running in the background
    /// after it answers: until container `id`'s bundle (removed after its shim, cgroup and
    /// rootfs mount) and writable layer are gone.
    pub async fn wait_torn_down(&self, id: &str) -> Result<()> {
        let bundle = self.d.state.join("containers").join(id);
        let layer = self.d.root.join("containers").join(id);
        let deadline = Instant::now() + Duration::from_secs(5);
        while bundle.exists() || layer.exists() {
            if Instant::now() > deadline {
                bail!("container {id} not torn down within 5 s of its removal");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    pub async fn status(&mut self, id: &str) -> Result<ContainerStatusResponse, tonic::Status> {
        let req = ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        };
        self.d.runtime.container_status(req).await.map(|r| r.into_inner())
    }

    pub async fn state(&mut self, id: &str) -> ContainerStatus {
        self.status(id)
            .await
            .expect("status")
            .status
            .expect("status body")
    }

    /// The init pid from the verbose status.
    pub async fn pid(&mut self, id: &str) -> i32 {
        let st = self.status(id).await.expect("status");
        let info: serde_json::Value = serde_json::from_str(&st.info["info"]).expect("info json");
        info["pid"].as_i64().expect("pid") as i32
    }

    /// Polls until the container is EXITED (bounded at 60 s so a hang fails instead of blocking).
    pub async fn wait_exited(&mut self, id: &str) -> Result<ContainerStatus> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.state(id).await;
            if s.state == ContainerState::ContainerExited as i32 {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("container {id} did not exit: {s:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The container's cgroupfs path as ContainerStatus (verbose) reports it.
    pub async fn cgroup_path(&mut self, id: &str) -> String {
        let info = self
            .d
            .runtime
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .info;
        let v: serde_json::Value = serde_json::from_str(&info["info"]).expect("status info is JSON");
        v["cgroupPath"]
            .as_str()
            .expect("cgroupPath in the info")
            .to_string()
    }

    pub async fn exec(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<ExecSyncResponse, tonic::Status> {
        let req = ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        };
        self.d.runtime.exec_sync(req).await.map(|r| r.into_inner())
    }
}

/// One parsed CRI log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub time: String,
    pub stream: String,
    pub tag: String,
    pub text: String,
}

/// Parses a CRI log file (`<time> <stream> <P|F> <text>` per line).
pub fn read_log(path: &std::path::Path) -> Vec<LogRecord> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let mut p = l.splitn(4, ' ');
            LogRecord {
                time: p.next().unwrap_or("").into(),
                stream: p.next().unwrap_or("").into(),
                tag: p.next().unwrap_or("").into(),
                text: p.next().unwrap_or("").into(),
            }
        })
        .collect()
}

/// Joins `P` records up to each `F` into whole lines, per stream.
pub fn log_lines(records: &[LogRecord], stream: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for r in records.iter().filter(|r| r.stream == stream) {
        cur.push_str(&r.text);
        if r.tag == "F" {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}
