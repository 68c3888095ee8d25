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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    #[tokio::test]
    async fn a_helper_past_the_deadline_is_killed_with_its_children() {
        let t = tempfile::tempdir().unwrap();
        let pid_file = t.path().join("child.pid");
        // Stands in for the helper: starts a child (as the helper starts criu), then hangs.
        let script = t.path().join("helper");
        std::fs::write(
            &script,
            format!("#!/bin/sh\nsleep 600 &\necho $! > {}\nwait\n", pid_file.display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let client = ShimClient { binary: script };
        let req = CheckpointRequest {
            version: crius_shim_api::PROTOCOL_VERSION,
            id: "c1".into(),
            youki_root: t.path().into(),
            image_dir: t.path().into(),
            runtime: None,
            systemd_cgroup: false,
        };
        let started = Instant::now();
        let deadline = started + Duration::from_millis(700);
        let out = client
            .checkpoint(&req, std::ffi::OsStr::new("/usr/bin:/bin"), deadline)
            .await
            .unwrap();
        assert_eq!(out, CheckpointOutcome::TimedOut);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let child: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild got the group's SIGKILL: gone, or a zombie until init reaps it.
        let gone_deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
            if stat.is_empty() || state == Some('Z') {
                break;
            }
            assert!(
                Instant::now() < gone_deadline,
                "child {child} still alive: {stat}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
