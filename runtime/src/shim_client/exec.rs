//! Interactive exec through `crius-shim exec-helper` (the streaming Exec): the helper runs with
//! its stdio on pipes the daemon keeps, or, for a terminal, the daemon binds a console socket in
//! the shim dir, passes its path in the request and receives the pty master (SCM_RIGHTS).
//!
//! Invariants: the console socket file exists only while the helper starts; an
//! [`InteractiveExec`] dropped before its exit was read SIGKILLs the exec'd process and the
//! helper, and reaps the helper off the runtime — an abandoned exec leaves nothing running.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Stdio;
use std::time::Duration;

use crius_shim_api::{ExecReport, ExecRequest, FrameError};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::Interest;
use tokio::net::unix::pipe;

use super::{ShimClient, ShimError, read_frame_async};

/// How long libcontainer may take to send the pty master of a terminal exec.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The exec'd process's stdio on the daemon's side.
pub enum ExecStdio {
    Pipes {
        /// `None` when no stdin was asked for (the process reads /dev/null).
        stdin: Option<pipe::Sender>,
        stdout: pipe::Receiver,
        stderr: pipe::Receiver,
    },
    /// The terminal's master, non-blocking.
    Pty(OwnedFd),
}

/// A running exec.
pub struct InteractiveExec {
    pub pid: i32,
    pub stdio: Option<ExecStdio>,
    report: pipe::Receiver,
    child: Option<std::process::Child>,
    exited: bool,
}

/// Kills an exec'd process (and its process group when it leads one); copyable so it can be
/// used while the exit is awaited.
#[derive(Debug, Clone, Copy)]
pub struct Killer(i32);

impl Killer {
    pub fn kill(self) {
        let pid = Pid::from_raw(self.0);
        if nix::unistd::getpgid(Some(pid)) == Ok(pid) {
            let _ = killpg(pid, Signal::SIGKILL);
        }
        let _ = kill(pid, Signal::SIGKILL);
    }
}

impl ShimClient {
    /// Starts `req.args` in the container with pipes (`tty` false; `stdin` says whether the
    /// process gets a stdin pipe) or with a terminal.
    pub async fn exec_interactive(
        &self,
        mut req: ExecRequest,
        stdin: bool,
        tty: bool,
    ) -> Result<InteractiveExec, ShimError> {
        let console = if tty {
            let name = format!("exec-{:016x}.sock", rand::random::<u64>());
            let listener = crius_shim_api::bind_socket(&req.scratch_dir, &name)
                .and_then(|l| l.set_nonblocking(true).map(|_| l))
                .and_then(tokio::net::UnixListener::from_std)
                .map_err(|e| ShimError::Exec(format!("console socket: {e}")))?;
            let path = req.scratch_dir.join(&name);
            req.console_socket = Some(path.clone());
            Some((listener, RemoveOnDrop(path)))
        } else {
            None
        };
        let json = serde_json::to_string(&req).map_err(|e| ShimError::Exec(e.to_string()))?;
        let mut cmd = std::process::Command::new(&self.binary);
        cmd.arg("exec-helper").arg("--request").arg(json);
        if tty {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        } else {
            let input = if stdin { Stdio::piped() } else { Stdio::null() };
            cmd.stdin(input).stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        let (report, mut child) = self.spawn_with_report(cmd)?;
        let pipes = (!tty).then(|| {
            (
                child.stdin.take().map(OwnedFd::from),
                child.stdout.take().map(OwnedFd::from),
                child.stderr.take().map(OwnedFd::from),
            )
        });
        let mut exec = InteractiveExec {
            pid: 0,
            stdio: None,
            report,
            child: Some(child),
            exited: false,
        };
        let master = match &console {
            Some((listener, _)) => Some(exec.start_with_console(listener).await?),
            None => {
                exec.pid = exec.first_frame().await?;
                None
            }
        };
        drop(console);
        exec.stdio = Some(match (master, pipes) {
            (Some(m), _) => ExecStdio::Pty(m),
            (None, Some((i, Some(o), Some(e)))) => ExecStdio::Pipes {
                stdin: i.map(pipe::Sender::from_owned_fd).transpose().map_err(exec_io)?,
                stdout: pipe::Receiver::from_owned_fd(o).map_err(exec_io)?,
                stderr: pipe::Receiver::from_owned_fd(e).map_err(exec_io)?,
            },
            _ => return Err(ShimError::Exec("exec helper has no stdio".into())),
        });
        Ok(exec)
    }
}

fn exec_io(e: std::io::Error) -> ShimError {
    ShimError::Exec(e.to_string())
}

impl InteractiveExec {
    pub fn killer(&self) -> Killer {
        Killer(self.pid)
    }

    /// Reads `Started{pid}` (or the failure).
    async fn first_frame(&mut self) -> Result<i32, ShimError> {
        let body = read_frame_async(&mut self.report)
            .await
            .map_err(ShimError::Report)?
            .ok_or(ShimError::Report(FrameError::Closed))?;
        match crius_shim_api::frame::decode(&body).map_err(ShimError::Report)? {
            ExecReport::Started { pid } => Ok(pid),
            ExecReport::Failed { message } => Err(ShimError::Exec(message)),
            ExecReport::Exited { exit_code } => {
                Err(ShimError::Exec(format!("exit {exit_code} reported before start")))
            }
        }
    }

    /// Waits for both the pty master and `Started`, whichever comes first; a failure report
    /// ends the wait at once.
    async fn start_with_console(
        &mut self,
        listener: &tokio::net::UnixListener,
    ) -> Result<OwnedFd, ShimError> {
        let mut master = None;
        let mut pid = None;
        {
            let recv = tokio::time::timeout(CONSOLE_TIMEOUT, receive_master(listener));
            tokio::pin!(recv);
            let first = read_frame_async(&mut self.report);
            tokio::pin!(first);
            while master.is_none() || pid.is_none() {
                tokio::select! {
                    m = &mut recv, if master.is_none() => {
                        let m = m
                            .map_err(|_| ShimError::Exec("no terminal from the exec'd process".into()))?
                            .map_err(|e| ShimError::Exec(format!("receive pty master: {e}")))?;
                        master = Some(m);
                    }
                    f = &mut first, if pid.is_none() => {
                        let body = f.map_err(ShimError::Report)?.ok_or(ShimError::Report(FrameError::Closed))?;
                        match crius_shim_api::frame::decode(&body).map_err(ShimError::Report)? {
                            ExecReport::Started { pid: p } => pid = Some(p),
                            ExecReport::Failed { message } => return Err(ShimError::Exec(message)),
                            ExecReport::Exited { .. } => {
                                return Err(ShimError::Exec("exit reported before start".into()));
                            }
                        }
                    }
                }
            }
        }
        self.pid = pid.unwrap_or_default();
        Ok(master.expect("loop ends with a master"))
    }

    /// Waits for the exec'd process's exit code and reaps the helper.
    pub async fn wait(&mut self) -> Result<i32, ShimError> {
        let body = read_frame_async(&mut self.report)
            .await
            .map_err(ShimError::Report)?;
        self.exited = true;
        if let Some(mut c) = self.child.take() {
            let _ = tokio::task::spawn_blocking(move || c.wait()).await;
        }
        let body = body.ok_or(ShimError::Report(FrameError::Closed))?;
        match crius_shim_api::frame::decode(&body).map_err(ShimError::Report)? {
            ExecReport::Exited { exit_code } => Ok(exit_code),
            ExecReport::Failed { message } => Err(ShimError::Exec(message)),
            ExecReport::Started { .. } => Err(ShimError::Exec("started twice".into())),
        }
    }
}

impl Drop for InteractiveExec {
    fn drop(&mut self) {
        if !self.exited && self.pid > 0 {
            self.killer().kill();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            std::thread::spawn(move || c.wait());
        }
    }
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Accepts libcontainer's console connection and receives the master it sends.
async fn receive_master(listener: &tokio::net::UnixListener) -> std::io::Result<OwnedFd> {
    let (conn, _) = listener.accept().await?;
    let fd = conn
        .async_io(Interest::READABLE, || recv_fd(conn.as_raw_fd()))
        .await?;
    crate::container::stdio::set_nonblocking(&fd)?;
    Ok(fd)
}

fn recv_fd(sock: RawFd) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just installed this fd for us; nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Err(std::io::Error::other("console message carried no fd"))
}
