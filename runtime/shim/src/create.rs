//! `crius-shim create --config <shim dir>/shim.json`: detaches from the daemon, builds the
//! container with libcontainer while the process is still single-threaded (or, for a runtime
//! handler with an external OCI runtime, through that runtime's command line: `external`), reports
//! `{pid}` or the error on the pipe it got as stdout, then serves the container until it is
//! started (and re-execs into `monitor`) or removed.
//!
//! Invariants: nothing here creates a thread; libcontainer runs before the signalfd, the
//! subreaper bit and the SIGCHLD mask exist (the container must not inherit a blocked SIGCHLD);
//! a failed build leaves no libcontainer state, cgroup or console socket behind.

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crius_shim_api::{CreateReport, PROTOCOL_VERSION, ProcessStatus, ShimConfig, write_frame};
use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::unistd::{ForkResult, Pid, fork, pipe2, setsid};

use crate::attach::AttachHub;
use crate::log::{LogFile, Stream};
use crate::monitor::{Monitor, Outcome, Output};
use crate::workload::WorkloadExecutor;
use crate::{proc_setup, reexec};

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("cannot read shim config {path}: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("shim config {path} is invalid: {source}")]
    ConfigFormat {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("shim config speaks protocol {0}, this shim speaks {PROTOCOL_VERSION}")]
    Version(u32),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("libcontainer could not create container {id}: {message}")]
    Build { id: String, message: String },
    #[error("could not create container {id}: {message}")]
    External { id: String, message: String },
    #[error("could not restore container {id}: {message}")]
    Restore { id: String, message: String },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CreateError {
    let what = what.into();
    move |source| CreateError::Io { what, source }
}

/// Entry point of the `create` mode. Returns the process exit code.
pub fn main(config_path: &Path) -> i32 {
    let report = match take_report_channel() {
        Ok(r) => r,
        Err(e) => {
            note!("crius-shim: no report channel on stdout: {e}");
            return 1;
        }
    };
    // Detach: the daemon's child exits at once; the grandchild leads a new session and is
    // re-parented away from the daemon, so it survives daemon restarts.
    // SAFETY: single-threaded here; the child only continues this same code.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => return 0,
        Ok(ForkResult::Child) => {}
        Err(e) => {
            send(
                report,
                &CreateReport::Failed {
                    message: format!("fork: {e}"),
                },
            );
            return 1;
        }
    }
    let _ = setsid();
    match create(config_path) {
        Ok((monitor, pid)) => {
            send(
                report,
                &CreateReport::Created {
                    pid: pid.as_raw(),
                    shim_pid: std::process::id() as i32,
                },
            );
            serve(monitor)
        }
        Err(e) => {
            note!("crius-shim: {e}");
            send(
                report,
                &CreateReport::Failed {
                    message: e.to_string(),
                },
            );
            1
        }
    }
}

/// The daemon's report pipe arrives as stdout. It moves to a close-on-exec fd of its own and
/// /dev/null takes fd 1, so nothing printed later (nor any child) can hold or write the pipe.
fn take_report_channel() -> std::io::Result<File> {
    let fd = nix::fcntl::fcntl(1, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: F_DUPFD_CLOEXEC just returned this fd to us alone.
    let report = unsafe { File::from_raw_fd(fd) };
    let null = fs::OpenOptions::new().write(true).open("/dev/null")?;
    nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1)?;
    Ok(report)
}

fn send(mut report: File, msg: &CreateReport) {
    if let Err(e) = write_frame(&mut report, msg) {
        note!("crius-shim: cannot report to the daemon: {e}");
    }
    let _ = report.flush();
}

fn serve(mut monitor: Monitor) -> i32 {
    match monitor.run() {
        Ok(Outcome::Reexec) => {
            let err = reexec::into_monitor(monitor);
            note!("crius-shim: cannot re-exec into monitor mode: {err}");
            1
        }
        Ok(Outcome::Exit) => 0,
        Err(e) => {
            note!("crius-shim: event loop failed: {e}");
            1
        }
    }
}

pub fn load_config(path: &Path) -> Result<ShimConfig, CreateError> {
    let text = fs::read(path).map_err(|source| CreateError::Config {
        path: path.into(),
        source,
    })?;
    let cfg: ShimConfig = serde_json::from_slice(&text).map_err(|source| CreateError::ConfigFormat {
        path: path.into(),
        source,
    })?;
    if cfg.version != PROTOCOL_VERSION {
        return Err(CreateError::Version(cfg.version));
    }
    Ok(cfg)
}

/// Stdio handed to the container's runtime (libcontainer or an external one), and the ends the
/// shim keeps.
pub(crate) struct ShimStdio {
    /// The container's stdin, stdout, stderr (none with a terminal).
    pub container: Option<(OwnedFd, OwnedFd, OwnedFd)>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    pub stdin: Option<OwnedFd>,
    /// The console socket the runtime sends the pty master to.
    pub console: Option<(UnixListener, PathBuf)>,
}

fn stdio(cfg: &ShimConfig) -> Result<ShimStdio, CreateError> {
    let (in_r, in_w) = if cfg.stdin {
        let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| io_err("stdin pipe")(e.into()))?;
        (r, Some(w))
    } else {
        let null = File::open("/dev/null").map_err(io_err("open /dev/null"))?;
        (OwnedFd::from(null), None)
    };
    if cfg.terminal {
        let path = cfg.shim_dir.join("console.sock");
        let listener = crius_shim_api::bind_socket(&cfg.shim_dir, "console.sock")
            .map_err(io_err(format!("bind {}", path.display())))?;
        return Ok(ShimStdio {
            container: None,
            stdout: None,
            stderr: None,
            stdin: in_w,
            console: Some((listener, path)),
        });
    }
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| io_err("stdout pipe")(e.into()))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| io_err("stderr pipe")(e.into()))?;
    Ok(ShimStdio {
        container: Some((in_r, out_w, err_w)),
        stdout: Some(out_r),
        stderr: Some(err_r),
        stdin: in_w,
        console: None,
    })
}

fn create(config_path: &Path) -> Result<(Monitor, Pid), CreateError> {
    let cfg = load_config(config_path)?;
    if let Some(place) = &cfg.shim_cgroup {
        crate::systemd::leave_daemon_cgroup(place).map_err(|message| CreateError::Build {
            id: cfg.id.clone(),
            message,
        })?;
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.youki_root)
        .map_err(io_err(format!("create {}", cfg.youki_root.display())))?;
    let ctl_path = cfg.shim_dir.join(crius_shim_api::CONTROL_SOCKET);
    let ctl = crius_shim_api::bind_socket(&cfg.shim_dir, crius_shim_api::CONTROL_SOCKET)
        .map_err(io_err(format!("bind {}", ctl_path.display())))?;
    let log = LogFile::open(cfg.log_path.clone()).map_err(io_err(format!(
        "open log {}",
        cfg.log_path.as_deref().unwrap_or(Path::new("")).display()
    )))?;
    let mut io = stdio(&cfg)?;
    if let Some(images) = cfg.restore_images.clone() {
        return restored(cfg, &images, io, ctl, &ctl_path, log);
    }
    if let Some(rt) = cfg.runtime.clone() {
        return crate::external::create(cfg, rt, io, ctl, &ctl_path, log);
    }
    let oom_before = proc_setup::read_oom_score_adj();
    if let Some(points) = &cfg.cgroup_v1_mounts {
        // Before libcontainer clones its processes, which inherit them.
        libcgroups::v1::util::assume_mount_points(points.clone());
    }

    let built = build(&cfg, &mut io);
    let container = match built {
        Ok(c) => c,
        Err(e) => {
            let _ = crate::teardown::delete_container(&cfg);
            let _ = fs::remove_file(&ctl_path);
            if let Some((_, p)) = &io.console {
                let _ = fs::remove_file(p);
            }
            return Err(e);
        }
    };
    let pid = container.pid().unwrap_or(Pid::from_raw(0));

    let stdout_fd = match io.console.take() {
        Some((listener, path)) => {
            let master = receive_pty_master(&listener);
            let _ = fs::remove_file(&path);
            match master {
                Ok(m) => Some(m),
                Err(e) => {
                    let _ = crate::teardown::delete_container(&cfg);
                    let _ = fs::remove_file(&ctl_path);
                    return Err(e);
                }
            }
        }
        None => io.stdout.take(),
    };

    proc_setup::after_libcontainer(oom_before);
    let mut monitor = created_monitor(cfg, pid, stdout_fd, &mut io, ctl, log)
        .map_err(|(what, e)| io_err(what)(e.into()))?;
    let mut container = container;
    monitor.starter = Some(Box::new(move || {
        container.start().map_err(|e| format!("start: {e}"))
    }));
    Ok((monitor, pid))
}

/// A container restored from checkpoint images (`restore`): its processes already run, so
/// the daemon's start request only lets the monitor take over.
fn restored(
    cfg: ShimConfig,
    images: &Path,
    mut io: ShimStdio,
    ctl: UnixListener,
    ctl_path: &Path,
    log: LogFile,
) -> Result<(Monitor, Pid), CreateError> {
    let pid = match crate::restore::restore(&cfg, images, &mut io) {
        Ok(pid) => pid,
        Err(e) => {
            let _ = fs::remove_file(ctl_path);
            return Err(e);
        }
    };
    let stdout_fd = io.stdout.take();
    let mut monitor = created_monitor(cfg, pid, stdout_fd, &mut io, ctl, log).map_err(|(what, e)| {
        let _ = fs::remove_file(ctl_path);
        io_err(what)(e.into())
    })?;
    monitor.starter = Some(Box::new(|| Ok(())));
    Ok((monitor, pid))
}

/// The monitor of a created container whose init is `pid`, for both the embedded and an
/// external runtime: the OOM baseline under systemd, non-blocking output fds, SIGCHLD through a
/// signalfd, and the attach socket (a container runs without one if it cannot be bound). The
/// error names the step that failed.
pub(crate) fn created_monitor(
    cfg: ShimConfig,
    pid: Pid,
    stdout_fd: Option<OwnedFd>,
    io: &mut ShimStdio,
    ctl: UnixListener,
    log: LogFile,
) -> Result<Monitor, (&'static str, nix::Error)> {
    // Before the container's process runs; a container that cannot be delegated still runs,
    // as one in the host's user namespace would, without sub-cgroups of its own.
    if let Err(e) = crate::cgroup_delegate::delegate(&cfg.bundle, &cfg.shim_dir, pid) {
        note!(
            "crius-shim {}: cgroup not delegated to the container's root: {e}",
            cfg.id
        );
    }
    if cfg.systemd_cgroup
        && let Some(n) = crate::cgroup::parent_oom_kills(&cfg.cgroup_path)
    {
        // Before the container runs: see cgroup::oom_killed.
        let _ = fs::write(cfg.shim_dir.join(crate::cgroup::OOM_BASELINE), n.to_string());
    }
    let sigfd = proc_setup::sigchld_fd().map_err(|e| ("signalfd", e))?;
    for fd in [&stdout_fd, &io.stderr].into_iter().flatten() {
        proc_setup::set_nonblocking(fd).map_err(|e| ("O_NONBLOCK", e))?;
    }
    let mut monitor = Monitor::new(
        cfg,
        pid,
        ProcessStatus::Created,
        stdout_fd.map(|fd| Output::new(fd, Stream::Stdout)),
        io.stderr.take().map(|fd| Output::new(fd, Stream::Stderr)),
        io.stdin.take(),
        ctl,
        log,
        sigfd,
        crate::teardown::delete_container,
    );
    monitor.attach = match AttachHub::bind(&monitor.cfg.shim_dir, monitor.cfg.stdin_once) {
        Ok(hub) => Some(hub),
        Err(e) => {
            note!("crius-shim {}: no attach socket: {e}", monitor.cfg.id);
            None
        }
    };
    Ok(monitor)
}

fn build(cfg: &ShimConfig, io: &mut ShimStdio) -> Result<Container, CreateError> {
    let fail = |message: String| CreateError::Build {
        id: cfg.id.clone(),
        message,
    };
    let mut builder = ContainerBuilder::new(cfg.id.clone(), SyscallType::default())
        .with_root_path(&cfg.youki_root)
        .map_err(|e| fail(e.to_string()))?
        .with_executor(WorkloadExecutor::default());
    if let Some((stdin, stdout, stderr)) = io.container.take() {
        builder = builder.with_stdin(stdin).with_stdout(stdout).with_stderr(stderr);
    }
    if let Some((_, path)) = &io.console {
        builder = builder.with_console_socket(Some(path));
    }
    builder
        .as_init(&cfg.bundle)
        .with_systemd(cfg.systemd_cgroup)
        .with_detach(true)
        .build()
        .map_err(|e| fail(error_chain(&e)))
}

/// `e: cause: cause` — libcontainer's top-level messages alone are often too vague.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

/// Accepts libcontainer's console connection and receives the pty master it sends with
/// SCM_RIGHTS.
pub(crate) fn receive_pty_master(listener: &UnixListener) -> Result<OwnedFd, CreateError> {
    let timeout = Duration::from_secs(10);
    let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(listener), PollFlags::POLLIN)];
    let ready = poll(
        &mut fds,
        PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX),
    )
    .map_err(|e| io_err("poll console socket")(e.into()))?;
    if ready == 0 {
        return Err(io_err("console socket")(std::io::Error::other(
            "no connection from the container",
        )));
    }
    let (conn, _) = listener.accept().map_err(io_err("accept console socket"))?;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        std::os::fd::AsRawFd::as_raw_fd(&conn),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| io_err("receive pty master")(e.into()))?;
    for c in msg.cmsgs().map_err(|e| io_err("receive pty master")(e.into()))? {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just installed this fd for us; nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Err(io_err("receive pty master")(std::io::Error::other(
        "no fd in the console message",
    )))
}
