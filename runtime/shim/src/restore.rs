//! Restore mode of `crius-shim create`: when `shim.json` names checkpoint images
//! (`restore_images`), the shim brings the checkpointed processes back with CRIU instead of
//! building a fresh container, and stays their monitor exactly as for a built one.
//!
//! The `criu` command line is used rather than rust-criu's RPC: the restored init must become
//! the shim's child (a subreaper catches it when `criu --restore-detached` exits), the fds CRIU
//! is to inherit are simply left open across its exec, and its `restore.log` is the one place a
//! failure is explained.
//!
//! What the new container supplies, mapped onto what libcontainer's dump declared external:
//! - the root: CRIU's `--root` is the new rootfs (the dump named the bundle);
//! - bind mounts (declared with key = destination): `--ext-mount-map <dest>:<new source>`;
//! - namespaces the spec joins by path (net, pid; declared `<ns>[<ino>]:extRoot<Ns>NS`): an
//!   open fd of the new path, `--inherit-fd fd[N]:extRoot<Ns>NS`;
//! - stdio: the checkpointed `pipe:[ino]` of fds 0-2 (`descriptors.json`) → the ends of the
//!   shim's new pipes, `--inherit-fd fd[N]:pipe:[ino]`, so the CRI log keeps flowing;
//! - the cgroup: created as a normal start creates it (libcgroups, either driver, with the
//!   spec's resources), CRIU itself is moved into it before it runs, and `--cgroup-root` puts
//!   the restored tasks there.
//!
//! Invariants: after a failure nothing restored runs (the cgroup's processes are killed) and no
//! libcontainer state exists; on success the state is written so that exec, stop and stats
//! through libcontainer treat the restored init as any running container's.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crius_shim_api::ShimConfig;
use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt};
use libcontainer::config::YoukiConfig;
use libcontainer::container::{Container, ContainerStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::create::{CreateError, ShimStdio};

/// CRIU's log in the image directory.
pub const RESTORE_LOG: &str = "restore.log";
/// CRIU's pidfile (the restored init, as the shim sees it), in the shim dir.
const PID_FILE: &str = "restore.pid";
/// How long one `criu restore` may take before it is killed: well inside the daemon's wait for
/// the shim's create report (`CREATE_TIMEOUT`, 60 s), so a slow restore fails with CRIU's own
/// story instead of the daemon abandoning a shim that is still restoring.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(45);
/// The most bytes of `descriptors.json` read.
const DESCRIPTORS_CAP: u64 = 64 * 1024;
/// Where `criu` is looked for after `PATH`.
const FALLBACK_DIRS: [&str; 3] = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// Restores the container of `cfg` from `images`; returns the restored init.
pub fn restore(cfg: &ShimConfig, images: &Path, io: &mut ShimStdio) -> Result<Pid, CreateError> {
    let fail = |message: String| CreateError::Restore {
        id: cfg.id.clone(),
        message: format!("from {}: {message}", images.display()),
    };
    if cfg.terminal {
        return Err(fail("a container with a terminal cannot be restored".into()));
    }
    crate::proc_setup::become_subreaper();
    let spec = Spec::load(cfg.bundle.join("config.json")).map_err(|e| fail(e.to_string()))?;
    let manager = libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path: spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .unwrap_or_default(),
        systemd_cgroup: cfg.systemd_cgroup,
        container_name: cfg.id.clone(),
    })
    .map_err(|e| fail(format!("cgroup manager: {e}")))?;
    match run_criu(cfg, &spec, images, io, &manager).and_then(|pid| save_state(cfg, &spec, pid).map(|_| pid))
    {
        Ok(pid) => Ok(pid),
        Err(e) => {
            crate::cgroup::kill_remaining(&cfg.cgroup_path, Duration::from_millis(500));
            let _ = manager.remove();
            let _ = fs::remove_dir_all(cfg.youki_root.join(&cfg.id));
            let e = match crate::checkpoint::log_tail(&images.join(RESTORE_LOG)) {
                Some(tail) => format!("{e}; criu's restore.log ends with: {tail}"),
                None => e,
            };
            Err(fail(e))
        }
    }
}

/// Runs `criu restore` in the container's cgroup; returns the pid from its pidfile.
fn run_criu(
    cfg: &ShimConfig,
    spec: &Spec,
    images: &Path,
    io: &mut ShimStdio,
    manager: &libcgroups::common::AnyCgroupManager,
) -> Result<Pid, String> {
    let criu = find_criu().ok_or_else(|| {
        format!(
            "restoring needs CRIU: no `criu` binary in PATH or {}",
            FALLBACK_DIRS.join(", ")
        )
    })?;
    let rootfs = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .ok_or("the spec has no root")?;
    let pid_file = cfg.shim_dir.join(PID_FILE);
    let _ = fs::remove_file(&pid_file);
    let mut cmd = Command::new(&criu);
    cmd.arg("restore")
        .arg("-D")
        .arg(images)
        .arg("--root")
        .arg(&rootfs)
        .arg("--restore-detached")
        .arg("--pidfile")
        .arg(&pid_file)
        .args(["-o", RESTORE_LOG, "-v4", "--manage-cgroups=soft", "--cgroup-root"])
        .arg(&cfg.cgroup_path);
    for (dest, source) in bind_mounts(spec) {
        cmd.arg("--ext-mount-map").arg(format!("{dest}:{source}"));
    }
    // Every fd CRIU inherits stays open (without close-on-exec) until it has been spawned.
    let mut inherited: Vec<OwnedFd> = Vec::new();
    for (typ, key) in [
        (LinuxNamespaceType::Network, "extRootNetNS"),
        (LinuxNamespaceType::Pid, "extRootPidNS"),
    ] {
        if let Some(path) = namespace_path(spec, typ) {
            let f = File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
            cmd.arg("--inherit-fd")
                .arg(format!("fd[{}]:{key}", f.as_raw_fd()));
            inherited.push(f.into());
        }
    }
    let descriptors = read_descriptors(images)?;
    if let Some((stdin, stdout, stderr)) = io.container.take() {
        for (i, fd) in [stdin, stdout, stderr].into_iter().enumerate() {
            if let Some(d) = descriptors.get(i).filter(|d| d.starts_with("pipe:"))
                && !inherited_key(&cmd, d)
            {
                cmd.arg("--inherit-fd").arg(format!("fd[{}]:{d}", fd.as_raw_fd()));
            }
            inherited.push(fd);
        }
    }
    for fd in &inherited {
        crate::proc_setup::set_cloexec(fd, false).map_err(|e| format!("fd for criu: {e}"))?;
    }
    // CRIU waits on this pipe until it is in the container's cgroup: what it forks is restored
    // there, never in the shim's. (A fork of our own: `Command::spawn` waits for the exec.)
    let (gate_r, gate_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the shim is single-threaded here; the child only reads the gate and execs.
    let child = match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(gate_w);
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(gate_r.as_raw_fd(), &mut b);
            let e = cmd.exec();
            note!("crius-shim: exec {}: {e}", criu.display());
            // SAFETY: leaves the forked child without running the shim's exit path.
            unsafe { libc::_exit(127) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => child,
        Err(e) => return Err(format!("fork for criu: {e}")),
    };
    drop(inherited);
    drop(gate_r);
    let mut gate_w = File::from(gate_w);
    let kill = |child: Pid| {
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(child, None);
    };
    if let Err(e) = place(cfg, spec, manager, child) {
        kill(child);
        return Err(e);
    }
    if let Err(e) = gate_w.write_all(b"x") {
        kill(child);
        return Err(format!("start criu: {e}"));
    }
    drop(gate_w);
    let deadline = Instant::now() + RESTORE_TIMEOUT;
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, 0)) => break,
            Ok(WaitStatus::Exited(_, code)) => {
                return Err(format!("criu restore failed (exit status {code})"));
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => return Err(format!("criu restore was killed by {sig}")),
            Ok(_) | Err(nix::errno::Errno::EINTR) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {
                kill(child);
                return Err(format!("criu restore did not finish within {RESTORE_TIMEOUT:?}"));
            }
            Err(e) => return Err(format!("wait for criu: {e}")),
        }
    }
    let text = fs::read_to_string(&pid_file).map_err(|e| format!("read {}: {e}", pid_file.display()))?;
    let _ = fs::remove_file(&pid_file);
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| format!("criu's pidfile says {:?}", text.trim()))?;
    Ok(Pid::from_raw(pid))
}

/// Moves CRIU into the container's cgroup (created here, as libcontainer creates it for a
/// normal start) and applies the spec's resources.
fn place(
    cfg: &ShimConfig,
    spec: &Spec,
    manager: &libcgroups::common::AnyCgroupManager,
    pid: Pid,
) -> Result<(), String> {
    manager
        .add_task(pid)
        .map_err(|e| format!("cgroup {}: {e}", cfg.cgroup_path))?;
    if let Some(res) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
        manager
            .apply(&ControllerOpt {
                resources: res,
                disable_oom_killer: false,
                oom_score_adj: None,
                freezer_state: None,
            })
            .map_err(|e| format!("cgroup resources: {e}"))?;
    }
    Ok(())
}

/// libcontainer's state of a running container whose init is `pid` (what its builder writes).
fn save_state(cfg: &ShimConfig, spec: &Spec, pid: Pid) -> Result<(), String> {
    let dir = cfg.youki_root.join(&cfg.id);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("create {}: {e}", dir.display()))?;
    let mut c = Container::new(
        &cfg.id,
        ContainerStatus::Created,
        Some(pid.as_raw()),
        &cfg.bundle,
        &dir,
    )
    .map_err(|e| format!("libcontainer state: {e}"))?;
    c.set_systemd(cfg.systemd_cgroup)
        .set_annotations(spec.annotations().clone())
        .set_creator(nix::unistd::geteuid().as_raw())
        .set_status(ContainerStatus::Running);
    YoukiConfig::from_spec(spec, &cfg.id)
        .and_then(|y| y.save(&dir))
        .map_err(|e| format!("libcontainer config: {e}"))?;
    c.save().map_err(|e| format!("libcontainer state: {e}"))
}

/// Whether `cmd` already inherits an fd under `key` (stdout and stderr may be one pipe).
fn inherited_key(cmd: &Command, key: &str) -> bool {
    let suffix = format!(":{key}");
    cmd.get_args().any(|a| a.to_string_lossy().ends_with(&suffix))
}

/// What the checkpointed init's fds 0-2 were (`descriptors.json`, libcontainer's).
fn read_descriptors(images: &Path) -> Result<Vec<String>, String> {
    let path = images.join("descriptors.json");
    let mut body = Vec::new();
    File::open(&path)
        .and_then(|f| f.take(DESCRIPTORS_CAP).read_to_end(&mut body))
        .map_err(|e| format!("read {}: {e}", path.display()))?;
    serde_json::from_slice(&body).map_err(|e| format!("parse {}: {e}", path.display()))
}

/// `(destination, source)` of the spec's bind mounts (libcontainer's `is_bind`).
fn bind_mounts(spec: &Spec) -> Vec<(String, String)> {
    spec.mounts()
        .iter()
        .flatten()
        .filter(|m| {
            m.typ().as_deref() == Some("bind")
                || m.options().iter().flatten().any(|o| o == "bind" || o == "rbind")
        })
        .filter_map(|m| {
            let src = m.source().as_ref()?;
            Some((m.destination().display().to_string(), src.display().to_string()))
        })
        .collect()
}

fn namespace_path(spec: &Spec, typ: LinuxNamespaceType) -> Option<PathBuf> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|n| n.typ() == typ)?
        .path()
        .clone()
}

fn find_criu() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join("criu"))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_mounts_and_joined_namespaces_are_what_criu_needs() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","mounts":[
                {"destination":"/etc/hosts","source":"/pod/hosts","options":["rbind","ro"]},
                {"destination":"/v","type":"bind","source":"/vol"},
                {"destination":"/proc","type":"proc","source":"proc"}],
              "linux":{"namespaces":[{"type":"network","path":"/run/netns/p"},{"type":"pid"}]}}"#,
        )
        .unwrap();
        assert_eq!(
            bind_mounts(&spec),
            vec![
                ("/etc/hosts".to_string(), "/pod/hosts".to_string()),
                ("/v".to_string(), "/vol".to_string())
            ]
        );
        assert_eq!(
            namespace_path(&spec, LinuxNamespaceType::Network),
            Some(PathBuf::from("/run/netns/p"))
        );
        assert_eq!(namespace_path(&spec, LinuxNamespaceType::Pid), None);
    }
}
