//! Starting and stopping the runtimes under comparison, each with its own directories and socket.
//! crius comes from the build; containerd 1.6 from Debian's package, configured from
//! `tests/bench/containerd/*.in`. Both are driven through the same tonic CRI client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use crius_tests::util;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

/// Pids of a runtime's shims and pod infra processes.
#[derive(Debug, Default)]
pub struct PodProcesses {
    pub shims: Vec<i32>,
    pub infra: Vec<i32>,
}

pub struct Runtime {
    pub name: &'static str,
    pub rt: RuntimeServiceClient<Channel>,
    pub img: ImageServiceClient<Channel>,
    /// Everything this runtime keeps lives here (its root, config, logs, socket).
    pub dir: PathBuf,
    /// Its volatile state (shim sockets, bundles, mount points): on tmpfs, as `/run` is on a
    /// node, for both runtimes alike.
    pub state: PathBuf,
    child: Option<Child>,
    /// Process name of its per-container (crius) or per-pod (containerd) shim.
    pub shim_name: &'static str,
    /// Where it serves Prometheus metrics (loopback), and the path: crius `/metrics`,
    /// containerd `/v1/metrics`.
    pub metrics: SocketAddr,
    pub metrics_path: &'static str,
}

/// A loopback address with a port free right now, for a runtime's metrics endpoint.
fn free_loopback() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn bench_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench").join(rel)
}

fn scratch(name: &str) -> Result<PathBuf> {
    Ok(tempfile::Builder::new()
        .prefix(&format!("crius-bench-{name}."))
        .tempdir_in("/tmp")?
        .keep())
}

/// A directory for a runtime's volatile state: under /dev/shm (tmpfs) when it is one, as `/run`
/// is on a node (both runtimes default their state to `/run`), else inside `dir`.
fn volatile(name: &str, dir: &Path) -> Result<PathBuf> {
    let shm = Path::new("/dev/shm");
    let tmpfs =
        nix::sys::statfs::statfs(shm).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    if !tmpfs {
        return Ok(dir.join("state"));
    }
    Ok(tempfile::Builder::new()
        .prefix(&format!("crius-bench-{name}-state."))
        .tempdir_in(shm)?
        .keep())
}

impl Runtime {
    pub async fn start_crius(registry: &str) -> Result<Runtime> {
        let metrics = free_loopback()?;
        let dir = scratch("crius")?;
        let state = volatile("crius", &dir)?;
        std::fs::create_dir_all(dir.join("net.d"))?;
        std::fs::copy(
            bench_file("cni/crius.conflist"),
            dir.join("net.d/10-bench.conflist"),
        )?;
        let config = format!(
            "root = \"{d}/root\"\nstate = \"{s}\"\nlisten = \"{s}/crius.sock\"\nlog_level = \"{log_level}\"\n\n\
             [cni]\nconf_dir = \"{d}/net.d\"\nbin_dirs = [\"/usr/lib/cni\"]\n\n\
             [metrics]\naddress = \"{metrics}\"\n\n\
             [registry.\"{registry}\"]\nendpoints = [\"http://{registry}\"]\nfallback = false\n",
            d = dir.display(),
            s = state.display(),
            log_level = std::env::var("CRIUS_BENCH_LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
        );
        std::fs::write(dir.join("config.toml"), config)?;
        let mut cmd = Command::new(util::bin("crius"));
        cmd.arg("--config").arg(dir.join("config.toml"));
        let socket = state.join("crius.sock");
        Runtime::spawn("crius", "crius-shim", dir, state, cmd, &socket, metrics).await
    }

    pub async fn start_containerd(registry: &str, pause: &str) -> Result<Runtime> {
        let metrics = free_loopback()?;
        let dir = scratch("containerd")?;
        let state = volatile("containerd", &dir)?;
        let fill = |s: String| {
            s.replace("@DIR@", &dir.display().to_string())
                .replace("@METRICS@", &metrics.to_string())
                .replace("@STATE@", &state.display().to_string())
                .replace("@PAUSE@", pause)
        };
        std::fs::write(
            dir.join("config.toml"),
            fill(std::fs::read_to_string(bench_file("containerd/config.toml.in"))?),
        )?;
        let hosts =
            std::fs::read_to_string(bench_file("containerd/hosts.toml.in"))?.replace("@HOST@", registry);
        std::fs::create_dir_all(dir.join("certs.d").join(registry))?;
        std::fs::write(dir.join("certs.d").join(registry).join("hosts.toml"), hosts)?;
        std::fs::create_dir_all(dir.join("net.d"))?;
        std::fs::copy(
            bench_file("cni/containerd.conflist"),
            dir.join("net.d/10-bench.conflist"),
        )?;
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(dir.join("config.toml"));
        let socket = dir.join("containerd.sock");
        Runtime::spawn(
            "containerd",
            "containerd-shim-runc-v2",
            dir,
            state,
            cmd,
            &socket,
            metrics,
        )
        .await
    }

    async fn spawn(
        name: &'static str,
        shim_name: &'static str,
        dir: PathBuf,
        state: PathBuf,
        mut cmd: Command,
        socket: &Path,
        metrics: SocketAddr,
    ) -> Result<Runtime> {
        let log = std::fs::File::create(dir.join("daemon.log"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last_err = String::new();
        loop {
            if Instant::now() > deadline {
                bail!(
                    "{name} not ready: {last_err}; log in {}",
                    dir.join("daemon.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let Ok(ch) = crius_tests::daemon::connect(socket).await else {
                continue;
            };
            let mut rt = RuntimeServiceClient::new(ch.clone());
            match rt.status(StatusRequest::default()).await {
                Ok(s) => {
                    let ready = s.into_inner().status.is_some_and(|s| {
                        s.conditions
                            .iter()
                            .all(|c| c.status || c.r#type != "RuntimeReady")
                    });
                    if ready {
                        let rt = rt.max_decoding_message_size(16 << 20);
                        let img = ImageServiceClient::new(ch).max_decoding_message_size(16 << 20);
                        return Ok(Runtime {
                            name,
                            rt,
                            img,
                            dir,
                            state,
                            child: Some(child),
                            shim_name,
                            metrics,
                            metrics_path: if name == "containerd" {
                                "/v1/metrics"
                            } else {
                                "/metrics"
                            },
                        });
                    }
                }
                Err(e) => last_err = e.to_string(),
            }
        }
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// This runtime's shims, and crius's pod infra processes (`crius-shim pause`) apart from
    /// them: crius runs one shim per container plus one infra process per pod, containerd one
    /// shim per pod (its pause container, a busybox stand-in here, is not counted).
    pub fn pod_processes(&self) -> PodProcesses {
        let comm = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim().to_string())
                .unwrap_or_default()
        };
        let argv1 = |pid: i32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .ok()
                .and_then(|c| {
                    c.split(|b| *b == 0)
                        .nth(1)
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                })
                .unwrap_or_default()
        };
        let name = &self.shim_name[..self.shim_name.len().min(15)];
        let mut out = PodProcesses::default();
        let mut pids = util::pids_mentioning(&self.dir.display().to_string());
        pids.extend(util::pids_mentioning(&self.state.display().to_string()));
        pids.sort_unstable();
        pids.dedup();
        for pid in pids {
            if comm(pid) != name {
                continue;
            }
            if argv1(pid) == "pause" {
                out.infra.push(pid);
            } else {
                out.shims.push(pid);
            }
        }
        out
    }

    /// RunPodSandbox with `cfg`; returns the pod's id.
    pub async fn run_pod(&mut self, cfg: &PodSandboxConfig) -> std::result::Result<String, tonic::Status> {
        Ok(self
            .rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(cfg.clone()),
                ..Default::default()
            })
            .await?
            .into_inner()
            .pod_sandbox_id)
    }

    /// Removes every pod this runtime still has (each stopped first).
    pub async fn remove_all_pods(&mut self) -> std::result::Result<(), tonic::Status> {
        let pods = self
            .rt
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await?
            .into_inner()
            .items;
        for p in pods {
            let _ = self
                .rt
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: p.id.clone(),
                })
                .await;
            self.rt
                .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: p.id })
                .await?;
        }
        Ok(())
    }

    /// Stops the runtime and removes everything it made.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.remove_all_pods().await {
            eprintln!("{}: removing pods at shutdown: {e}", self.name);
        }
        self.kill_and_clean();
    }

    fn kill_and_clean(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in [&self.dir, &self.state] {
            for pid in util::pids_mentioning(&dir.display().to_string()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            }
        }
        let bridge = bench_bridge(&self.dir);
        for dir in [&self.state, &self.dir] {
            util::unmount_all_under(dir);
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(bridge) = bridge {
            remove_idle_bridge(&bridge);
        }
    }
}

/// The bridge the runtime's bench network (`net.d/10-bench.conflist`) puts its pods on.
fn bench_bridge(dir: &Path) -> Option<String> {
    let conf = std::fs::read(dir.join("net.d/10-bench.conflist")).ok()?;
    let conf: serde_json::Value = serde_json::from_slice(&conf).ok()?;
    conf["plugins"]
        .as_array()?
        .iter()
        .find_map(|p| p["bridge"].as_str().map(str::to_string))
}

/// The bridge plugin creates the bench's bridge and never deletes it; left behind (down, with
/// the gateway address), it keeps the routes of its subnet. Removed once no pod is on it.
fn remove_idle_bridge(bridge: &str) {
    let ports = Path::new("/sys/class/net").join(bridge).join("brif");
    if std::fs::read_dir(&ports).is_ok_and(|mut d| d.next().is_none()) {
        let _ = Command::new("ip").args(["link", "del", bridge]).status();
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.kill_and_clean();
    }
}
