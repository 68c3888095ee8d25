//! Recording test doubles of the three host seams (`seams.rs`), in the manner of youki's
//! `TestHelperSyscall`: each call is logged in order, and a test scripts the next failure
//! (a shim that fails to create, dies, hangs; a mount or unmount that fails). They keep the
//! contracts of `seams.rs` so the verbs cannot tell them from the real ones: the fake shim puts
//! its control socket file where the real one would and writes the exit file when it kills
//! init, and the fake mounter creates the directories the real `mount` creates.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use cri_api::v1::LinuxContainerResources;
use crius_shim_api::{ExitStatus, ProcessStatus, Request, Response, ShimConfig, ShimState};

use crate::container::ContainerError;
use crate::container::seams::{CgroupAccess, RootfsMounter, ShimLifecycle};
use crate::shim_client::ShimError;

/// The init pid every fake shim reports: above the kernel's PID_MAX_LIMIT (2^22), so no process
/// can have it, and the few host calls not behind a seam (stop's SIGKILL to a lost init, the
/// `/proc/<pid>` reads of stop and recovery) find nothing to touch.
pub(crate) const INIT_PID: i32 = (1 << 22) + 4242;
pub(crate) const SHIM_PID: i32 = INIT_PID + 1;

/// One call to the fake shim, by container id (the shim directory's parent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ShimCall {
    Create(String),
    Request(String, Request),
    KillHung(String),
}

/// What the fake shim of one container is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Created,
    Running,
    /// Init exited; the shim lingers until shut down, as the real one does.
    Exited,
    /// Takes every request and never answers (each request times out at once).
    Hung,
}

type CreateHook = Box<dyn FnOnce(&ShimConfig) + Send>;

#[derive(Default)]
struct ShimInner {
    calls: Vec<ShimCall>,
    /// Live shims by shim directory; a dead one is absent (its socket file may be left).
    shims: HashMap<PathBuf, Life>,
    fail_create: Option<String>,
    after_create: Option<CreateHook>,
}

#[derive(Default)]
pub(crate) struct FakeShim(Mutex<ShimInner>);

fn container_of(shim_dir: &Path) -> String {
    shim_dir
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl FakeShim {
    fn inner(&self) -> std::sync::MutexGuard<'_, ShimInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn calls(&self) -> Vec<ShimCall> {
        self.inner().calls.clone()
    }
    /// The next `create` fails as a shim whose libcontainer create failed (nothing started).
    pub(crate) fn fail_next_create(&self, message: &str) {
        self.inner().fail_create = Some(message.into());
    }
    /// Runs `hook` right after the next successful `create`, before it reports.
    pub(crate) fn after_next_create(&self, hook: impl FnOnce(&ShimConfig) + Send + 'static) {
        self.inner().after_create = Some(Box::new(hook));
    }
    /// The shim of `shim_dir` dies (SIGKILL): its socket file stays, nobody listens.
    pub(crate) fn die(&self, shim_dir: &Path) {
        self.inner().shims.remove(shim_dir);
    }
    /// The shim of `shim_dir` stops answering.
    pub(crate) fn hang(&self, shim_dir: &Path) {
        self.inner().shims.insert(shim_dir.into(), Life::Hung);
    }
    /// Forgets every shim (a reboot, or a daemon restarted with all shims gone).
    pub(crate) fn forget_all(&self) {
        self.inner().shims.clear();
    }
    pub(crate) fn alive(&self, shim_dir: &Path) -> bool {
        self.inner().shims.contains_key(shim_dir)
    }
}

#[async_trait::async_trait]
impl ShimLifecycle for FakeShim {
    async fn create(&self, cfg: &ShimConfig) -> Result<(i32, i32), ShimError> {
        let hook = {
            let mut s = self.inner();
            s.calls.push(ShimCall::Create(cfg.id.clone()));
            if let Some(message) = s.fail_create.take() {
                return Err(ShimError::CreateFailed(message));
            }
            std::fs::write(cfg.shim_dir.join(crius_shim_api::CONTROL_SOCKET), b"")
                .expect("the shim directory exists before the shim is created");
            s.shims.insert(cfg.shim_dir.clone(), Life::Created);
            s.after_create.take()
        };
        if let Some(hook) = hook {
            hook(cfg);
        }
        Ok((INIT_PID, SHIM_PID))
    }

    async fn request_within(
        &self,
        shim_dir: &Path,
        req: Request,
        timeout: Duration,
    ) -> Result<Response, ShimError> {
        let mut s = self.inner();
        s.calls
            .push(ShimCall::Request(container_of(shim_dir), req.clone()));
        let Some(life) = s.shims.get(shim_dir).copied() else {
            return Err(ShimError::Unreachable {
                dir: shim_dir.into(),
                source: std::io::ErrorKind::ConnectionRefused.into(),
            });
        };
        let exited = |code| ExitStatus {
            exit_code: code,
            finished_at: crate::container::now_ns(),
            oom_killed: false,
        };
        let answer = match (life, req) {
            (Life::Hung, _) => return Err(ShimError::Timeout(timeout)),
            (Life::Created, Request::Start) => {
                s.shims.insert(shim_dir.into(), Life::Running);
                Response::Ok
            }
            (_, Request::Start) => {
                return Err(ShimError::Refused {
                    code: crius_shim_api::ErrorCode::WrongState,
                    message: "not created".into(),
                });
            }
            (Life::Created | Life::Running, Request::Kill { signal, .. }) => {
                exited(128 + signal)
                    .write_atomic(&shim_dir.join(crius_shim_api::EXIT_FILE))
                    .expect("exit file");
                s.shims.insert(shim_dir.into(), Life::Exited);
                Response::Ok
            }
            (_, Request::State) => {
                let exit = ExitStatus::read(&shim_dir.join(crius_shim_api::EXIT_FILE))
                    .ok()
                    .flatten();
                Response::State(ShimState {
                    pid: INIT_PID,
                    status: match life {
                        Life::Created => ProcessStatus::Created,
                        Life::Running => ProcessStatus::Running,
                        _ => ProcessStatus::Exited,
                    },
                    exit,
                })
            }
            (_, Request::Shutdown) => {
                let _ = std::fs::remove_file(shim_dir.join(crius_shim_api::CONTROL_SOCKET));
                s.shims.remove(shim_dir);
                Response::Ok
            }
            (_, _) => Response::Ok,
        };
        Ok(answer)
    }

    fn kill_hung(&self, bundle: &Path) -> Vec<i32> {
        let mut s = self.inner();
        s.calls.push(ShimCall::KillHung(
            bundle
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        ));
        let before = s.shims.len();
        s.shims.retain(|dir, _| !dir.starts_with(bundle));
        if s.shims.len() < before {
            vec![SHIM_PID]
        } else {
            Vec::new()
        }
    }
}

/// One call to the fake mounter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MountCall {
    Mount(PathBuf),
    Unmount(PathBuf),
}

type MountHook = Box<dyn FnOnce(&Path) + Send>;

#[derive(Default)]
struct MountInner {
    calls: Vec<MountCall>,
    after_mount: Option<MountHook>,
    mounted: HashSet<PathBuf>,
    fail_mount: Option<nix::errno::Errno>,
    /// How many of the next unmounts fail, and how.
    fail_unmount: Option<(usize, nix::errno::Errno)>,
}

#[derive(Default)]
pub(crate) struct FakeMounter(Mutex<MountInner>);

impl FakeMounter {
    fn inner(&self) -> std::sync::MutexGuard<'_, MountInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn calls(&self) -> Vec<MountCall> {
        self.inner().calls.clone()
    }
    pub(crate) fn mounted(&self) -> Vec<PathBuf> {
        self.inner().mounted.iter().cloned().collect()
    }
    pub(crate) fn fail_next_mount(&self, errno: nix::errno::Errno) {
        self.inner().fail_mount = Some(errno);
    }
    /// Runs `hook` with the target right after the next successful `mount`.
    pub(crate) fn after_next_mount(&self, hook: impl FnOnce(&Path) + Send + 'static) {
        self.inner().after_mount = Some(Box::new(hook));
    }
    pub(crate) fn fail_unmounts(&self, times: usize, errno: nix::errno::Errno) {
        self.inner().fail_unmount = Some((times, errno));
    }
    /// The mount vanished behind the daemon's back (a reboot, an admin's umount).
    pub(crate) fn lose(&self, target: &Path) {
        self.inner().mounted.remove(target);
    }
}

fn errno_err(what: &'static str, path: &Path, errno: nix::errno::Errno) -> ContainerError {
    ContainerError::Io {
        what,
        path: path.into(),
        source: errno.into(),
    }
}

impl RootfsMounter for FakeMounter {
    fn mount(
        &self,
        lowers: &[PathBuf],
        layer_dir: &Path,
        target: &Path,
        _idmap: Option<&crate::container::rootfs_idmap::Idmap>,
    ) -> Result<(), ContainerError> {
        let mut s = self.inner();
        s.calls.push(MountCall::Mount(target.into()));
        assert!(!lowers.is_empty(), "the image's layers are passed to the mount");
        // What the real mount creates before mount(2) itself.
        for d in [layer_dir.join("upper"), layer_dir.join("work"), target.into()] {
            std::fs::create_dir_all(&d).map_err(crate::container::io_err("create", &d))?;
        }
        if let Some(errno) = s.fail_mount.take() {
            return Err(errno_err("mount overlay at", target, errno));
        }
        s.mounted.insert(target.into());
        let hook = s.after_mount.take();
        drop(s);
        if let Some(hook) = hook {
            hook(target);
        }
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<(), ContainerError> {
        let mut s = self.inner();
        s.calls.push(MountCall::Unmount(target.into()));
        if let Some((n, errno)) = s.fail_unmount {
            s.fail_unmount = (n > 1).then_some((n - 1, errno));
            return Err(errno_err("unmount", target, errno));
        }
        s.mounted.remove(target);
        Ok(())
    }

    fn is_mounted(&self, target: &Path) -> bool {
        self.inner().mounted.contains(target)
    }
}

/// One call to the fake cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CgroupCall {
    Signal {
        cgroup: String,
        init: i32,
        signal: i32,
        all: bool,
    },
    KillAndRemove(String),
    Apply(String),
}

#[derive(Default)]
struct CgroupInner {
    calls: Vec<CgroupCall>,
    /// Processes per cgroup; a missing cgroup is empty. Only SIGKILL empties one (a fake init
    /// that ignores its stop signal).
    procs: HashMap<String, Vec<i32>>,
}

#[derive(Default)]
pub(crate) struct FakeCgroups(Mutex<CgroupInner>);

impl FakeCgroups {
    fn inner(&self) -> std::sync::MutexGuard<'_, CgroupInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn calls(&self) -> Vec<CgroupCall> {
        self.inner().calls.clone()
    }
    pub(crate) fn populate(&self, cgroup: &str, pids: &[i32]) {
        self.inner().procs.insert(cgroup.into(), pids.to_vec());
    }
}

impl CgroupAccess for FakeCgroups {
    fn pids(&self, cgroup: &str) -> Vec<i32> {
        self.inner().procs.get(cgroup).cloned().unwrap_or_default()
    }

    fn signal(&self, cgroup: &str, init: i32, signal: i32, all: bool) {
        let mut s = self.inner();
        s.calls.push(CgroupCall::Signal {
            cgroup: cgroup.into(),
            init,
            signal,
            all,
        });
        if signal == libc::SIGKILL
            && let Some(p) = s.procs.get_mut(cgroup)
        {
            p.retain(|pid| !all && *pid != init);
        }
    }

    fn runs_in(&self, cgroup: &str, pid: i32) -> bool {
        pid > 0 && self.pids(cgroup).contains(&pid)
    }

    fn kill_and_remove(&self, cgroup: &str, _wait: Duration) -> bool {
        let mut s = self.inner();
        s.calls.push(CgroupCall::KillAndRemove(cgroup.into()));
        s.procs.remove(cgroup);
        true
    }

    fn apply(&self, cgroup: &str, _resources: &LinuxContainerResources) -> Result<(), ContainerError> {
        self.inner().calls.push(CgroupCall::Apply(cgroup.into()));
        Ok(())
    }

    fn sample(&self, _cgroup: &str) -> crate::container::Sample {
        crate::container::Sample::default()
    }
}
