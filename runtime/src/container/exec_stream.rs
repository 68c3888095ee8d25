//! The streaming Exec: a command in a running container through `crius-shim exec-helper`, its
//! stdio pumped to and from the client's channels (pipes, or a terminal whose size follows the
//! client's resize messages). Also the running-container check the Exec and Attach RPCs share.
//!
//! Invariants: only a RUNNING container accepts an exec (FailedPrecondition otherwise); when the
//! client goes away the exec'd process is SIGKILLed and its exit awaited, so nothing it started
//! through us keeps running; output is drained until end of stream, at most [`DRAIN_GRACE`]
//! past the exit (a background child may hold the pipe open forever). With a terminal the
//! client's stdin half-close only stops input: the pty stays open until the process exits.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::record::State;
use super::stdio::{RawIo, copy_out, set_winsize};
use super::{ContainerError, Containers};
use crate::shim_client::ExecStdio;
use crius_streaming::ProcessIo;

/// CRI: a stream needs at least one of stdin/stdout/stderr, and a terminal merges stderr into
/// stdout, so `tty` with `stderr` is refused (crictl sends `stderr: !tty`).
fn stdio_wanted(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Result<(), ContainerError> {
    if tty && stderr {
        return Err(ContainerError::Invalid(
            "tty and stderr cannot both be true".into(),
        ));
    }
    if !(stdin || stdout || stderr) {
        return Err(ContainerError::Invalid(
            "one of stdin, stdout or stderr must be true".into(),
        ));
    }
    Ok(())
}

/// How long output may keep flowing after the exec'd process exited.
pub const DRAIN_GRACE: Duration = Duration::from_secs(5);

impl Containers {
    /// The full id of the RUNNING container `query` names; `action` names the verb in the
    /// FailedPrecondition error.
    pub fn running(&self, query: &str, action: &'static str) -> Result<String, ContainerError> {
        self.running_record(query, action).map(|r| r.id)
    }

    /// [`Containers::running`], returning the container's record.
    fn running_record(&self, query: &str, action: &'static str) -> Result<super::Record, ContainerError> {
        let full = self
            .resolve(query)?
            .ok_or_else(|| ContainerError::NotFound(query.into()))?;
        let r = self.refreshed(&full)?;
        super::require_state(&r, &[State::Running], action)?;
        Ok(r)
    }

    /// [`Containers::running_record`] on the blocking pool.
    pub(crate) async fn running_record_off(
        self: &Arc<Self>,
        query: &str,
        action: &'static str,
    ) -> Result<super::Record, ContainerError> {
        let query = query.to_string();
        self.blocking(move |c| c.running_record(&query, action)).await
    }

    /// [`Containers::running`] on the blocking pool.
    pub async fn running_off(
        self: &Arc<Self>,
        id: &str,
        action: &'static str,
    ) -> Result<String, ContainerError> {
        let id = id.to_string();
        self.blocking(move |c| c.running(&id, action)).await
    }

    /// CRI: Exec, before its streaming URL is issued: a command, a usable stdio combination and
    /// a RUNNING container, whose full id the returned request carries. The streaming server
    /// runs only requests that passed here.
    pub async fn exec_request(
        self: &Arc<Self>,
        mut req: cri_api::v1::ExecRequest,
    ) -> Result<cri_api::v1::ExecRequest, ContainerError> {
        if req.cmd.first().is_none_or(String::is_empty) {
            return Err(ContainerError::Invalid("exec needs a command".into()));
        }
        stdio_wanted(req.tty, req.stdin, req.stdout, req.stderr)?;
        req.container_id = self.running_off(&req.container_id, "exec").await?;
        Ok(req)
    }

    /// CRI: Attach, before its streaming URL is issued (as [`Containers::exec_request`]).
    pub async fn attach_request(
        self: &Arc<Self>,
        mut req: cri_api::v1::AttachRequest,
    ) -> Result<cri_api::v1::AttachRequest, ContainerError> {
        stdio_wanted(req.tty, req.stdin, req.stdout, req.stderr)?;
        req.container_id = self.running_off(&req.container_id, "attach").await?;
        Ok(req)
    }

    /// Streaming Exec: runs `req.cmd` with the client's stdio; returns its exit code.
    pub async fn exec_stream(
        self: &Arc<Self>,
        req: &cri_api::v1::ExecRequest,
        io: ProcessIo,
    ) -> Result<i32, ContainerError> {
        // Validated by `exec_request` when the URL was issued; the container may have stopped since.
        let r = self.running_record_off(&req.container_id, "exec").await?;
        let shim_req = self.exec_request_for(&r, req.cmd.clone());
        let id = r.id;
        let mut exec = self
            .exec
            .exec_interactive(shim_req, io.stdin.is_some(), io.tty)
            .await
            .map_err(ContainerError::shim(&id))?;
        let ProcessIo {
            stdin,
            stdout,
            stderr,
            resize,
            client_gone,
            ..
        } = io;
        let mut input = Vec::new();
        let mut output = Vec::new();
        match exec.stdio.take() {
            Some(ExecStdio::Pipes {
                stdin: pipe_in,
                stdout: pipe_out,
                stderr: pipe_err,
            }) => {
                if let (Some(mut rx), Some(mut w)) = (stdin, pipe_in) {
                    input.push(tokio::spawn(async move {
                        while let Some(chunk) = rx.recv().await {
                            if w.write_all(&chunk).await.is_err() {
                                return;
                            }
                        }
                        // Dropping `w` closes the process's stdin: the client half-closed.
                    }));
                }
                output.push(tokio::spawn(copy_out(pipe_out, stdout)));
                output.push(tokio::spawn(copy_out(pipe_err, stderr)));
            }
            Some(ExecStdio::Pty(master)) => {
                let pty = Arc::new(RawIo::new(master).map_err(|e| pty_err(&id, e))?);
                if let Some(mut rx) = stdin {
                    let w = pty.clone();
                    input.push(tokio::spawn(async move {
                        while let Some(chunk) = rx.recv().await {
                            if w.write_all(&chunk).await.is_err() {
                                return;
                            }
                        }
                    }));
                }
                if let Some(mut sizes) = resize {
                    let p = pty.clone();
                    input.push(tokio::spawn(async move {
                        while let Some(size) = sizes.recv().await {
                            if let Err(e) = set_winsize(p.fd(), size) {
                                tracing::debug!(error = %e, "exec resize failed");
                            }
                        }
                    }));
                }
                output.push(tokio::spawn(copy_out(pty, stdout)));
            }
            None => return Err(pty_err(&id, std::io::Error::other("exec has no stdio"))),
        }

        let killer = exec.killer();
        let code = {
            let wait = exec.wait();
            tokio::pin!(wait);
            tokio::select! {
                r = &mut wait => r,
                () = gone(client_gone) => {
                    tracing::debug!(%id, "exec client went away; killing the exec'd process");
                    killer.kill();
                    wait.await
                }
            }
        };
        for t in &input {
            t.abort();
        }
        let drain = async {
            for t in &mut output {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(DRAIN_GRACE, drain).await.is_err() {
            tracing::debug!(%id, "exec output still open after the process exited; closing it");
        }
        for t in &output {
            t.abort();
        }
        code.map_err(ContainerError::shim(&id))
    }
}

fn pty_err(id: &str, e: std::io::Error) -> ContainerError {
    ContainerError::Io {
        what: "exec terminal of container",
        path: id.into(),
        source: e,
    }
}

/// Resolves when the client's connection is gone (never, if nobody can tell us).
pub async fn gone(mut rx: watch::Receiver<bool>) {
    if rx.wait_for(|g| *g).await.is_err() {
        std::future::pending::<()>().await;
    }
}
