//! The seams between the container verbs and the host: the shim's lifecycle, the rootfs mount
//! and the container's cgroup, each a small trait that `Containers` holds as `Arc<dyn _>`. The
//! daemon uses the real implementations here (the `crius-shim` binary, overlayfs, cgroupfs);
//! the unit tests substitute recording fakes (`tests/fakes.rs`) to drive create, start, stop,
//! remove and recovery through failure orders the integration suite cannot produce.
//!
//! Contracts every implementation keeps (the verbs rely on them):
//! - [`ShimLifecycle`]: `create` either reports `(init pid, shim pid)` of a container that now
//!   exists in state created, or fails with nothing left running; `request_within` answers
//!   within `timeout` or fails with [`ShimError::Timeout`]; a shim that is gone (no control
//!   socket, nobody listening) is [`ShimError::Unreachable`], never a hang; `kill_hung` kills
//!   every shim process of a bundle whatever state it is in and may be called when there is none.
//! - [`RootfsMounter`]: `mount` either mounts or leaves nothing mounted; `unmount` of a path
//!   that is not mounted (or does not exist) succeeds; `is_mounted` never fails (unknown reads
//!   as not mounted).
//! - [`CgroupAccess`]: every method is a blocking call (run on the blocking pool); a cgroup that
//!   does not exist reads as empty, and signalling or removing it is a no-op.
//!
//! The exec paths (ExecSync, the streaming exec) keep the concrete [`ShimClient`]: they spawn
//! the exec helper and stream its stdio, which a trait would have to model fd by fd, and none of
//! the failure orders of create/start/stop/remove/recovery involves them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cri_api::v1::LinuxContainerResources;
use crius_shim_api::{Request, Response, ShimConfig};

use super::{ContainerError, cgroup_sample, cgroupfs, recover, rootfs, rootfs_idmap};
use crate::shim_client::{REQUEST_TIMEOUT, ShimClient, ShimError};

/// `/proc/<pid>/stat` is a line of about 300 bytes; [`CgroupAccess::runs_in`] reads this much.
const PROC_STAT_BYTES: u64 = 4096;

/// Launching and talking to a container's shim.
#[async_trait::async_trait]
pub(crate) trait ShimLifecycle: Send + Sync {
    /// Starts the shim of `cfg` and waits for its report: `(init pid, shim pid)`.
    async fn create(&self, cfg: &ShimConfig) -> Result<(i32, i32), ShimError>;

    /// One control request to the shim in `shim_dir`, answered within `timeout`.
    async fn request_within(
        &self,
        shim_dir: &Path,
        req: Request,
        timeout: Duration,
    ) -> Result<Response, ShimError>;

    /// One control request within [`REQUEST_TIMEOUT`].
    async fn request(&self, shim_dir: &Path, req: Request) -> Result<Response, ShimError> {
        self.request_within(shim_dir, req, REQUEST_TIMEOUT).await
    }

    /// SIGKILLs every shim process of the bundle `bundle` (a hung or half-started shim that
    /// cannot be asked to shut down); returns the pids it signalled. Blocking.
    fn kill_hung(&self, bundle: &Path) -> Vec<i32>;
}

/// The container's overlay root filesystem.
pub(crate) trait RootfsMounter: Send + Sync {
    /// Mounts `lowers` (top first) under `layer_dir`'s `upper`/`work` at `target`, creating the
    /// directories it needs; idmapped with `idmap`, or with the idmap `layer_dir` was first
    /// mounted with (`rootfs_idmap`).
    fn mount(
        &self,
        lowers: &[PathBuf],
        layer_dir: &Path,
        target: &Path,
        idmap: Option<&rootfs_idmap::Idmap>,
    ) -> Result<(), ContainerError>;
    /// Detaches whatever is mounted at `target`; fine when nothing is.
    fn unmount(&self, target: &Path) -> Result<(), ContainerError>;
    /// Whether `target` is a mount point in this mount namespace.
    fn is_mounted(&self, target: &Path) -> bool;
}

/// Reads and writes of a container's cgroup, named by its cgroupfs path (`Record::cgroup_path`).
pub(crate) trait CgroupAccess: Send + Sync {
    /// Every pid in the cgroup.
    fn pids(&self, cgroup: &str) -> Vec<i32>;
    /// Sends `signal` without the shim: to every process with `all`, else to `init` only while
    /// it is still in the cgroup.
    fn signal(&self, cgroup: &str, init: i32, signal: i32, all: bool);
    /// SIGKILLs everything in the cgroup and removes it, waiting up to `wait`; false when some
    /// of it is still there.
    fn kill_and_remove(&self, cgroup: &str, wait: Duration) -> bool;
    /// Writes `resources` (UpdateContainerResources) to the cgroup's files.
    fn apply(&self, cgroup: &str, resources: &LinuxContainerResources) -> Result<(), ContainerError>;
    /// Everything the metric RPCs report.
    fn sample(&self, cgroup: &str) -> cgroup_sample::Sample;
    /// What the stats RPCs report (`cgroup_usage::read_usage`); the full sample by default.
    fn usage(&self, cgroup: &str, _processes: bool) -> cgroup_sample::Sample {
        self.sample(cgroup)
    }
    /// Whether `pid` is a live process (not a zombie) in the cgroup: a container's init that
    /// still runs, never an unrelated process that reused its pid.
    fn runs_in(&self, cgroup: &str, pid: i32) -> bool;
}

#[async_trait::async_trait]
impl ShimLifecycle for ShimClient {
    async fn create(&self, cfg: &ShimConfig) -> Result<(i32, i32), ShimError> {
        ShimClient::create(self, cfg).await
    }

    async fn request_within(
        &self,
        shim_dir: &Path,
        req: Request,
        timeout: Duration,
    ) -> Result<Response, ShimError> {
        ShimClient::request_within(self, shim_dir, req, timeout).await
    }

    fn kill_hung(&self, bundle: &Path) -> Vec<i32> {
        let pids = pids_mentioning(bundle);
        for &pid in &pids {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        pids
    }
}

/// Processes whose command line names `dir` (a shim started with `--config <dir>/shim/…`).
fn pids_mentioning(dir: &Path) -> Vec<i32> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

/// Overlayfs through `mount(2)` (`rootfs.rs`); a new container's writable layer comes from
/// `spares` when one is ready (`layer_spares.rs`).
pub(crate) struct Overlay {
    pub spares: Arc<super::layer_spares::LayerSpares>,
}

impl RootfsMounter for Overlay {
    fn mount(
        &self,
        lowers: &[PathBuf],
        layer_dir: &Path,
        target: &Path,
        idmap: Option<&rootfs_idmap::Idmap>,
    ) -> Result<(), ContainerError> {
        match idmap
            .cloned()
            .map_or_else(|| rootfs_idmap::recorded(layer_dir), |m| Ok(Some(m)))?
        {
            Some(m) => rootfs_idmap::mount(lowers, layer_dir, target, &m),
            None => {
                // A new container (no writable layer yet) takes a spare set; `mount` then finds
                // its directories made. A remount after a restart keeps its own.
                if !layer_dir.exists() {
                    if layer_dir.parent().is_some_and(Path::is_dir) {
                        self.spares.take(layer_dir);
                    }
                    self.spares.refill_in_background();
                }
                rootfs::mount(lowers, layer_dir, target)
            }
        }
    }
    fn unmount(&self, target: &Path) -> Result<(), ContainerError> {
        rootfs::unmount(target)
    }
    fn is_mounted(&self, target: &Path) -> bool {
        recover::is_mount_point(target)
    }
}

/// The host's cgroup filesystem (`cgroupfs.rs`).
pub(crate) struct Cgroupfs;

impl CgroupAccess for Cgroupfs {
    fn pids(&self, cgroup: &str) -> Vec<i32> {
        cgroupfs::pids(cgroup)
    }
    fn signal(&self, cgroup: &str, init: i32, signal: i32, all: bool) {
        cgroupfs::signal(cgroup, init, signal, all)
    }
    fn kill_and_remove(&self, cgroup: &str, wait: Duration) -> bool {
        cgroupfs::kill_and_remove(cgroup, wait)
    }
    fn apply(&self, cgroup: &str, resources: &LinuxContainerResources) -> Result<(), ContainerError> {
        cgroupfs::apply(cgroup, resources)
    }
    fn sample(&self, cgroup: &str) -> cgroup_sample::Sample {
        cgroup_sample::read(cgroup)
    }
    fn usage(&self, cgroup: &str, processes: bool) -> cgroup_sample::Sample {
        super::cgroup_usage::read_usage(cgroup, processes)
    }
    fn runs_in(&self, cgroup: &str, pid: i32) -> bool {
        if pid <= 0 {
            return false;
        }
        let live = crate::proc_stat::read(pid, PROC_STAT_BYTES)
            .is_some_and(|stat| crate::proc_stat::Stat::parse(&stat).is_some_and(|s| s.live()));
        live && cgroup_sample::read_capped(Path::new(&format!("/proc/{pid}/cgroup")))
            .is_some_and(|c| crius_sandbox::cgroup::proc_in(&c, cgroup))
    }
}
