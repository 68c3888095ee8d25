//! Running `crius-shim checkpoint-helper` (see the shim's `checkpoint` module) within a
//! deadline.
//!
//! Invariants: the helper runs in its own process group, so a deadline kills it together with
//! the `criu` it started; the helper is always reaped, off the runtime.

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Instant;

use crius_shim_api::{CheckpointReport, CheckpointRequest, FrameError};

use super::{Child, ShimClient, ShimError, read_frame_async};

/// How a checkpoint helper ended.
#[derive(Debug, PartialEq, Eq)]
pub enum CheckpointOutcome {
    Done,
    /// The helper's (CRIU's) reason.
    Failed(String),
    /// The deadline passed; the helper and CRIU were killed.
    TimedOut,
}

impl ShimClient {
    /// Runs the checkpoint helper for `req` with `path_env` as its `PATH` (where it finds the
    /// `criu` the daemon checked) until `deadline`.
    pub async fn checkpoint(
        &self,
        req: &CheckpointRequest,
        path_env: &std::ffi::OsStr,
        deadline: Instant,
    ) -> Result<CheckpointOutcome, ShimError> {
        let json = serde_json::to_string(req).map_err(|e| ShimError::Exec(e.to_string()))?;
        let mut cmd = std::process::Command::new(&self.binary);
        cmd.arg("checkpoint-helper")
            .arg("--request")
            .arg(json)
            .env("PATH", path_env)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let (mut report, child) = self.spawn_with_report(cmd)?;
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        let mut child = Child(Some(child));
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = match tokio::time::timeout(left, read_frame_async(&mut report)).await {
            Ok(frame) => frame,
            Err(_) => {
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                child.reap().await;
                return Ok(CheckpointOutcome::TimedOut);
            }
        };
        child.reap().await;
        let frame = frame
            .map_err(ShimError::Report)?
            .ok_or(ShimError::Report(FrameError::Closed))?;
        Ok(
            match crius_shim_api::frame::decode(&frame).map_err(ShimError::Report)? {
                CheckpointReport::Done => CheckpointOutcome::Done,
                CheckpointReport::Failed { message } => CheckpointOutcome::Failed(message),
            },
        )
    }
}
