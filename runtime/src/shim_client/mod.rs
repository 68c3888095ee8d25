//! The daemon's side of the shim protocol: spawning `crius-shim create` and reading its report,
//! control requests over the shim's `ctl.sock`, and running `crius-shim exec-helper`, for
//! ExecSync here and for the interactive exec of the streaming server in `exec.rs`.
//!
//! Invariants: nothing here blocks a tokio worker (socket I/O runs in `spawn_blocking`, pipes
//! are read asynchronously); every wait is bounded; the report pipe's write end exists in the
//! daemon only with FD_CLOEXEC, so concurrently spawned children never hold it open.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crius_shim_api::{
    CreateReport, ExecReport, ExecRequest, FrameError, MAX_FRAME, PROTOCOL_VERSION, REPORT_FD, Request,
    RequestEnvelope, Response, ResponseEnvelope, ShimConfig,
};
use tokio::io::{AsyncRead, AsyncReadExt};

mod checkpoint;
mod exec;
pub use checkpoint::CheckpointOutcome;
pub use exec::{ExecStdio, InteractiveExec, Killer};

/// How long `crius-shim create` may take to report (libcontainer needs ~20 ms on an idle host).
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one control request may take (`shutdown` waits up to 10 s for a SIGKILLed init).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("cannot run {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write shim config {path}: {source}")]
    Config {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("shim did not answer within {0:?}")]
    Timeout(Duration),
    #[error("shim report: {0}")]
    Report(#[source] FrameError),
    #[error("{0}")]
    CreateFailed(String),
    #[error("shim at {dir} is not reachable: {source}")]
    Unreachable {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("shim at {dir}: {source}")]
    Protocol {
        dir: PathBuf,
        #[source]
        source: FrameError,
    },
    #[error("shim refused ({code:?}): {message}")]
    Refused {
        code: crius_shim_api::ErrorCode,
        message: String,
    },
    #[error("exec helper: {0}")]
    Exec(String),
}

/// The result of an exec that finished (or was cut off by its timeout).
#[derive(Debug, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// `None` when the timeout killed the process.
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone)]
pub struct ShimClient {
    pub binary: PathBuf,
}

impl ShimClient {
    /// `crius-shim` next to the running daemon binary, else from `PATH`.
    pub fn locate() -> ShimClient {
        let sibling = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("crius-shim")))
            .filter(|p| p.exists());
        ShimClient {
            binary: sibling.unwrap_or_else(|| PathBuf::from("crius-shim")),
        }
    }

    /// Starts `crius-shim create` on the `shim.json` in `cfg.shim_dir` (written by
    /// CreateContainer; `cfg` is its content) and waits for its report.
    /// Returns `(init pid, shim pid)`.
    pub async fn create(&self, cfg: &ShimConfig) -> Result<(i32, i32), ShimError> {
        let spawn_err = |source| ShimError::Spawn {
            binary: self.binary.clone(),
            source,
        };
        // The log file and the spawn are blocking calls: off the async workers.
        let (binary, owned_cfg) = (self.binary.clone(), cfg.clone());
        let (mut child, r) = tokio::task::spawn_blocking(move || spawn_create(&binary, &owned_cfg))
            .await
            .map_err(|e| spawn_err(std::io::Error::other(e)))??;
        let report = receiver(r).map_err(spawn_err)?;
        // The first process only forks and exits; reap it off the runtime.
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        let body = tokio::time::timeout(CREATE_TIMEOUT, read_frame_async(report))
            .await
            .map_err(|_| ShimError::Timeout(CREATE_TIMEOUT))?
            .map_err(ShimError::Report)?;
        let body = body.ok_or(ShimError::Report(FrameError::Closed))?;
        match crius_shim_api::frame::decode(&body).map_err(ShimError::Report)? {
            CreateReport::Created { pid, shim_pid } => Ok((pid, shim_pid)),
            CreateReport::Failed { message } => Err(ShimError::CreateFailed(message)),
        }
    }

    /// Spawns `cmd` with a report pipe on fd 3; returns the async read end.
    pub(crate) fn spawn_with_report(
        &self,
        mut cmd: std::process::Command,
    ) -> Result<(tokio::net::unix::pipe::Receiver, std::process::Child), ShimError> {
        let spawn_err = |source| ShimError::Spawn {
            binary: self.binary.clone(),
            source,
        };
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| spawn_err(e.into()))?;
        let wfd = w.as_raw_fd();
        // SAFETY: only dup2 (async-signal-safe) runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || nix::unistd::dup2(wfd, REPORT_FD).map(|_| ()).map_err(Into::into));
        }
        let child = cmd.spawn().map_err(spawn_err)?;
        drop(w);
        let rx = receiver(r).map_err(spawn_err)?;
        Ok((rx, child))
    }

    /// One control request. A shim that is gone is [`ShimError::Unreachable`].
    pub async fn request(&self, shim_dir: &Path, req: Request) -> Result<Response, ShimError> {
        self.request_within(shim_dir, req, REQUEST_TIMEOUT).await
    }

    /// One control request answered within `timeout` ([`ShimError::Timeout`] otherwise).
    pub async fn request_within(
        &self,
        shim_dir: &Path,
        req: Request,
        timeout: Duration,
    ) -> Result<Response, ShimError> {
        let dir = shim_dir.to_path_buf();
        let fut = tokio::task::spawn_blocking(move || request_blocking(&dir, req));
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(r)) => r,
            Ok(Err(join)) => Err(ShimError::Unreachable {
                dir: shim_dir.into(),
                source: std::io::Error::other(join),
            }),
            Err(_) => Err(ShimError::Timeout(timeout)),
        }
    }

    /// Runs `crius-shim exec-helper` and collects up to `cap` bytes of each stream. On timeout
    /// the exec'd process is SIGKILLed and `exit_code` is `None`.
    pub async fn exec(
        &self,
        req: &ExecRequest,
        timeout: Option<Duration>,
        cap: usize,
    ) -> Result<ExecOutput, ShimError> {
        let json = serde_json::to_string(req).map_err(|e| ShimError::Exec(e.to_string()))?;
        let mut std_cmd = std::process::Command::new(&self.binary);
        std_cmd
            .arg("exec-helper")
            .arg("--request")
            .arg(json)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (mut report, child) = self.spawn_with_report(std_cmd)?;
        let mut child = Child(Some(child));
        let (out, err) = {
            let c = child.0.as_mut().expect("child present");
            (c.stdout.take(), c.stderr.take())
        };
        let out = tokio::spawn(read_capped(out.and_then(|o| to_async(o.into())), cap));
        let err = tokio::spawn(read_capped(err.and_then(|e| to_async(e.into())), cap));

        // First frame: Started{pid} or Failed.
        let first = match timeout {
            Some(t) => tokio::time::timeout(t, read_frame_async(&mut report))
                .await
                .map_err(|_| ShimError::Exec("exec helper did not start in time".into()))?,
            None => read_frame_async(&mut report).await,
        }
        .map_err(ShimError::Report)?
        .ok_or(ShimError::Report(FrameError::Closed))?;
        let pid = match crius_shim_api::frame::decode(&first).map_err(ShimError::Report)? {
            ExecReport::Started { pid } => pid,
            ExecReport::Failed { message } => return Err(ShimError::Exec(message)),
            ExecReport::Exited { exit_code } => {
                return Err(ShimError::Exec(format!("exit {exit_code} reported before start")));
            }
        };
        let finish = async {
            let frame = read_frame_async(&mut report).await;
            let out = out.await.unwrap_or_default();
            let err = err.await.unwrap_or_default();
            (frame, out, err)
        };
        let waited = match timeout {
            Some(t) => tokio::time::timeout(t, finish).await.ok(),
            None => Some(finish.await),
        };
        let Some((frame, stdout, stderr)) = waited else {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            child.reap().await;
            return Ok(ExecOutput::default());
        };
        child.reap().await;
        let frame = frame
            .map_err(ShimError::Report)?
            .ok_or(ShimError::Report(FrameError::Closed))?;
        match crius_shim_api::frame::decode(&frame).map_err(ShimError::Report)? {
            ExecReport::Exited { exit_code } => Ok(ExecOutput {
                stdout,
                stderr,
                exit_code: Some(exit_code),
            }),
            ExecReport::Failed { message } => Err(ShimError::Exec(message)),
            ExecReport::Started { .. } => Err(ShimError::Exec("started twice".into())),
        }
    }
}

/// Owns the helper process; reaps it off the runtime (killing it first if it is still there
/// when dropped on an error path).
struct Child(Option<std::process::Child>);

impl Child {
    async fn reap(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = tokio::task::spawn_blocking(move || c.wait()).await;
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            std::thread::spawn(move || c.wait());
        }
    }
}

/// Opens the shim's log file and spawns `crius-shim create` on the `shim.json` that
/// CreateContainer wrote (`cfg` is that file's content), with its report pipe as stdout.
/// Returns the child (the first process, which only forks and exits) and the pipe's read end.
fn spawn_create(binary: &Path, cfg: &ShimConfig) -> Result<(std::process::Child, OwnedFd), ShimError> {
    let cfg_path = cfg.shim_dir.join(crius_shim_api::CONFIG_FILE);
    let log_path = cfg.shim_dir.join(crius_shim_api::SHIM_LOG);
    let log = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|source| ShimError::Config {
            path: log_path,
            source,
        })?;
    let spawn_err = |source| ShimError::Spawn {
        binary: binary.to_path_buf(),
        source,
    };
    // The report pipe is the shim's stdout: no pre-exec hook, so std can posix_spawn
    // (vfork) instead of forking the daemon's whole address space.
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| spawn_err(e.into()))?;
    let mut cmd = std::process::Command::new(binary);
    cmd.arg("create").arg("--config").arg(&cfg_path);
    cmd.stdin(Stdio::null()).stdout(Stdio::from(w)).stderr(log);
    let child = cmd.spawn().map_err(spawn_err)?;
    // Our copy of the write end goes with `cmd`, so EOF means every shim process closed it.
    drop(cmd);
    Ok((child, r))
}

fn receiver(fd: OwnedFd) -> std::io::Result<tokio::net::unix::pipe::Receiver> {
    tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
}

fn to_async(fd: OwnedFd) -> Option<tokio::net::unix::pipe::Receiver> {
    receiver(fd).ok()
}

/// Reads one frame; `Ok(None)` on EOF before any byte.
pub(crate) async fn read_frame_async<R: AsyncRead + Unpin>(mut r: R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; 4];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(header);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len as u64));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            e.into()
        }
    })?;
    Ok(Some(body))
}

/// Reads a stream to EOF keeping at most `cap` bytes (the rest is drained and dropped so the
/// writer never blocks).
async fn read_capped<R: AsyncRead + Unpin>(r: Option<R>, cap: usize) -> Vec<u8> {
    let Some(mut r) = r else { return Vec::new() };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => {
                let room = cap.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

fn request_blocking(dir: &Path, req: Request) -> Result<Response, ShimError> {
    let unreachable = |source| ShimError::Unreachable {
        dir: dir.into(),
        source,
    };
    let mut s = crius_shim_api::connect_control(dir).map_err(unreachable)?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(unreachable)?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT)).map_err(unreachable)?;
    let proto = |source| ShimError::Protocol {
        dir: dir.into(),
        source,
    };
    crius_shim_api::write_frame(&mut s, &RequestEnvelope::new(req)).map_err(proto)?;
    let env: ResponseEnvelope = crius_shim_api::read_frame(&mut s).map_err(proto)?;
    if env.version != PROTOCOL_VERSION {
        return Err(ShimError::Refused {
            code: crius_shim_api::ErrorCode::Version,
            message: format!("shim speaks protocol {}", env.version),
        });
    }
    match env.response {
        Response::Error { code, message } => Err(ShimError::Refused { code, message }),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn capped_reader_keeps_the_head_and_drains_the_rest() {
        let data = vec![7u8; 100_000];
        let got = read_capped(Some(&data[..]), 1000).await;
        assert_eq!(got.len(), 1000);
    }

    #[tokio::test]
    async fn async_frames_match_the_sync_codec() {
        let mut buf = Vec::new();
        crius_shim_api::write_frame(&mut buf, &CreateReport::Created { pid: 5, shim_pid: 4 }).unwrap();
        let mut r = &buf[..];
        let body = read_frame_async(&mut r).await.unwrap().unwrap();
        let rep: CreateReport = crius_shim_api::frame::decode(&body).unwrap();
        assert_eq!(rep, CreateReport::Created { pid: 5, shim_pid: 4 });
        assert!(read_frame_async(&mut r).await.unwrap().is_none());
    }
}
