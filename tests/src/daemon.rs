//! A real `crius` daemon for one test: its own root, state, socket, CNI config dir and log file
//! inside a fresh temp dir, tonic CRI clients over its unix socket, and short wrappers around the
//! pod and pull RPCs.
//!
//! Invariant: dropping a [`Daemon`] kills the daemon (if still running) and every process whose
//! command line names its directory (shims), detaches every mount below it and removes it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    PodSandboxConfig, PodSandboxStatusRequest, PodSandboxStatusResponse, RemovePodSandboxRequest,
    RunPodSandboxRequest, StopPodSandboxRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::util;

/// How long a daemon may take to answer its first RPC.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What to put in the daemon's configuration.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// Extra TOML appended to the generated config (e.g. `[registry."x"]` tables, `[streaming]`).
    pub extra_config: String,
    /// Extra top-level keys (e.g. `pinned_images = [...]`), written before the first table.
    pub top_config: String,
    /// A CNI conflist written to the daemon's own `cni.conf_dir` as `10-test.conflist`.
    pub cni_conflist: Option<String>,
    /// Plugin directories searched before the system ones (e.g. a test's fake plugins).
    pub cni_bin_dirs: Vec<PathBuf>,
}

pub struct Daemon {
    /// The temp dir holding everything this daemon made.
    pub dir: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub conf_dir: PathBuf,
    /// The daemon's own CNI result cache dir (`cni.cache_dir`), so tests never share one.
    pub cni_cache_dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    /// Extra environment for the next (re)start, e.g. the test-only `CRIUS_TEST_CRASH_AT`.
    pub env: Vec<(String, String)>,
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
}

impl Daemon {
    /// Starts a daemon with default options (no CNI config: NetworkReady is false).
    pub async fn start() -> Result<Daemon> {
        Daemon::start_with(DaemonOptions::default()).await
    }

    /// Every container the daemon lists (no filter). Panics if the RPC fails.
    pub async fn containers(&mut self) -> Vec<k8s_cri::v1::Container> {
        self.runtime
            .list_containers(k8s_cri::v1::ListContainersRequest::default())
            .await
            .expect("ListContainers")
            .into_inner()
            .containers
    }

    /// RunPodSandbox with `config` on the default runtime handler; the new pod's id.
    pub async fn run_pod(&mut self, config: PodSandboxConfig) -> Result<String, tonic::Status> {
        let req = RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        self.runtime
            .run_pod_sandbox(req)
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
    }

    /// PodSandboxStatus, verbose (with the `info` map).
    pub async fn pod_status(&mut self, id: &str) -> Result<PodSandboxStatusResponse, tonic::Status> {
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        };
        self.runtime.pod_sandbox_status(req).await.map(|r| r.into_inner())
    }

    /// The pod's IP address (its network status must have one).
    pub async fn pod_ip(&mut self, id: &str) -> String {
        let status = self.pod_status(id).await.unwrap().status.unwrap();
        status.network.expect("the pod has a network status").ip
    }

    pub async fn stop_pod(&mut self, id: &str) -> Result<(), tonic::Status> {
        let req = StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.runtime.stop_pod_sandbox(req).await.map(|_| ())
    }

    pub async fn remove_pod(&mut self, id: &str) -> Result<(), tonic::Status> {
        let req = RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.runtime.remove_pod_sandbox(req).await.map(|_| ())
    }

    /// PullImage of `image` without credentials; the image reference the daemon answers.
    pub async fn pull(&mut self, image: &str) -> Result<String, tonic::Status> {
        crate::images::pull(&mut self.images, image).await
    }

    /// Every pod sandbox the daemon lists (no filter). Panics if the RPC fails.
    pub async fn pods(&mut self) -> Vec<k8s_cri::v1::PodSandbox> {
        self.runtime
            .list_pod_sandbox(k8s_cri::v1::ListPodSandboxRequest::default())
            .await
            .expect("ListPodSandbox")
            .into_inner()
            .items
    }

    /// Starts a daemon with `opts`. Panics when not root: see [`util::require_root`].
    pub async fn start_with(opts: DaemonOptions) -> Result<Daemon> {
        util::require_root();
        let dir = tempfile::Builder::new()
            .prefix("crius-test.")
            .tempdir_in("/tmp")?
            .keep();
        // Searchable, as /run is: a pod user namespace's root reaches its rootfs by path.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))?;
        let root = dir.join("root");
        let state = dir.join("state");
        let conf_dir = dir.join("net.d");
        std::fs::create_dir_all(&conf_dir)?;
        if let Some(conflist) = &opts.cni_conflist {
            std::fs::write(conf_dir.join("10-test.conflist"), conflist)?;
        }
        let socket = state.join("crius.sock");
        let config_path = dir.join("config.toml");
        let cni_cache_dir = dir.join("cni-cache");
        let mut bin_dirs = opts.cni_bin_dirs.clone();
        bin_dirs.extend([PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")]);
        // The test node runs the whole suite once per cgroup driver.
        let driver = match std::env::var("CRIUS_TEST_CGROUP_MANAGER") {
            Ok(d) if !d.is_empty() => format!("cgroup_manager = {d:?}\n"),
            _ => String::new(),
        };
        let config = format!(
            "root = {root:?}\nstate = {state:?}\nlisten = {socket:?}\nlog_level = \"debug,h2=info,hyper=info,hyper_util=info,tower=info,rustls=info\"\n{driver}{}\n\
             [cni]\nconf_dir = {conf_dir:?}\nbin_dirs = {bin_dirs:?}\ncache_dir = {cni_cache_dir:?}\n\n{}\n",
            opts.top_config, opts.extra_config
        );
        std::fs::write(&config_path, config)?;
        let log_path = dir.join("crius.log");
        let mut d = Daemon {
            dir,
            root,
            state,
            socket: socket.clone(),
            conf_dir,
            cni_cache_dir,
            config_path,
            log_path,
            child: None,
            env: Vec::new(),
            runtime: RuntimeServiceClient::new(lazy_channel(&socket)?),
            images: ImageServiceClient::new(lazy_channel(&socket)?),
        };
        d.spawn().await?;
        Ok(d)
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the daemon keeps of containers on disk, each as `<what> <id>`: bundles
    /// (`state/containers`), writable layers (`root/containers`) and libcontainer state
    /// (`state/youki`). Empty once every container is torn down.
    pub fn container_leftovers(&self) -> Vec<String> {
        [
            ("bundle", self.state.join("containers")),
            ("writable layer", self.root.join("containers")),
            ("libcontainer state", self.state.join("youki")),
        ]
        .iter()
        .flat_map(|(what, dir)| {
            util::dir_entries(dir)
                .into_iter()
                .map(move |id| format!("{what} {id}"))
        })
        .collect()
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Runs `crius` with this daemon's config plus `args`, without waiting (e.g. a second daemon).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(util::bin("crius"));
        cmd.arg("--config").arg(&self.config_path);
        cmd
    }

    async fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let child = self
            .command()
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning crius")?;
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!("crius exited during start-up ({status}); log:\n{}", self.log());
            }
            // A stale socket from a killed daemon may refuse connections until the new one binds.
            if let (Ok(rt), Ok(img)) = (connect(&self.socket).await, connect(&self.socket).await) {
                self.runtime = RuntimeServiceClient::new(rt);
                self.images = ImageServiceClient::new(img);
                if self
                    .runtime
                    .version(k8s_cri::v1::VersionRequest::default())
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "crius did not become ready in {START_TIMEOUT:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits for the daemon to exit.
    pub async fn stop(&mut self) -> Result<ExitStatus> {
        self.signal_and_wait(nix::sys::signal::Signal::SIGTERM).await
    }

    /// Kills the daemon with SIGKILL (a crash) and waits for it.
    pub async fn kill(&mut self) -> Result<ExitStatus> {
        self.signal_and_wait(nix::sys::signal::Signal::SIGKILL).await
    }

    async fn signal_and_wait(&mut self, sig: nix::sys::signal::Signal) -> Result<ExitStatus> {
        let mut child = self.child.take().context("daemon is not running")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("crius did not exit within 30 s of {sig}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (up to 60 s) for a daemon that is expected to die on its own (a crash hook).
    pub async fn wait_exit(&mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().context("daemon is not running")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("crius did not exit on its own within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the daemon again on the same directories (after stop or kill).
    pub async fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.stop().await?;
        }
        self.spawn().await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Whether the daemon had already ended before this drop: a failing test says so first,
        // since a daemon that died mid-test explains the failure better than any log line.
        let mut ended = None;
        if let Some(mut child) = self.child.take() {
            ended = child.try_wait().ok().flatten();
            let _ = child.kill();
            let _ = child.wait();
        }
        // Containers outlive their shims: kill every process in a cgroup named after one of
        // this daemon's pods or containers, then the shims, then free mounts and cgroups.
        let ids = util::object_ids_under(&self.state);
        for pid in util::pids_in_cgroups_named(&ids) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
        let needle = self.dir.to_string_lossy().to_string();
        for pid in util::pids_mentioning(&needle) {
            if pid as u32 != std::process::id() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            }
        }
        util::unmount_all_under(&self.dir);
        util::remove_cgroups_named(&ids);
        if std::thread::panicking() {
            match ended {
                Some(status) => eprintln!("--- crius had ended before the test did: {status} ---"),
                None => eprintln!("--- crius was still running when the test failed ---"),
            }
            eprintln!(
                "--- crius log ({}) ---\n{}",
                self.log_path.display(),
                crate::util::last_lines(&self.log(), 200)
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A channel that connects to the unix socket on first use.
pub fn lazy_channel(socket: &Path) -> Result<Channel> {
    let socket = socket.to_path_buf();
    Ok(
        Endpoint::try_from("http://[::1]:50051")?.connect_with_connector_lazy(tower::service_fn(
            move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            },
        )),
    )
}

/// Connects a CRI channel to a unix socket now.
pub async fn connect(socket: &Path) -> Result<Channel> {
    let socket = socket.to_path_buf();
    let ch = Endpoint::try_from("http://[::1]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await?;
    Ok(ch)
}
