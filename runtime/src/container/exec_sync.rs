//! ExecSync: runs a command in a running container through `crius-shim exec-helper` and returns
//! its output and exit code.
//!
//! Invariants: only a RUNNING container accepts an exec (FailedPrecondition otherwise); a
//! `timeout` (seconds, 0 = none) kills the exec'd process and answers DeadlineExceeded; stdout
//! plus stderr never exceed [`MAX_OUTPUT`] (the CRI client's message limit).

use std::time::Duration;

use cri_api::v1::ExecSyncResponse;

use super::{ContainerError, Containers};

/// CRI clients accept messages up to 16 MiB; leave room for the envelope.
pub const MAX_OUTPUT: usize = (16 << 20) - (64 << 10);

impl Containers {
    /// CRI: ExecSync.
    pub async fn exec_sync(
        self: &std::sync::Arc<Self>,
        query: &str,
        cmd: Vec<String>,
        timeout_seconds: i64,
    ) -> Result<ExecSyncResponse, ContainerError> {
        if cmd.is_empty() || cmd[0].is_empty() {
            return Err(ContainerError::Invalid("exec needs a command".into()));
        }
        let r = self.running_record_off(query, "exec").await?;
        let id = &r.id;
        let req = self.exec_request_for(&r, cmd);
        let timeout = (timeout_seconds > 0).then(|| Duration::from_secs(timeout_seconds as u64));
        let out = self
            .exec
            .exec(&req, timeout, MAX_OUTPUT)
            .await
            .map_err(ContainerError::shim(id))?;
        let Some(exit_code) = out.exit_code else {
            return Err(ContainerError::ExecTimeout {
                id: id.into(),
                seconds: timeout_seconds,
            });
        };
        let (stdout, stderr) = cap(out.stdout, out.stderr, MAX_OUTPUT);
        Ok(ExecSyncResponse {
            stdout,
            stderr,
            exit_code,
        })
    }
}

/// Cuts stderr first, then stdout, so that both together fit in `max`.
fn cap(mut stdout: Vec<u8>, mut stderr: Vec<u8>, max: usize) -> (Vec<u8>, Vec<u8>) {
    stdout.truncate(max);
    stderr.truncate(max - stdout.len());
    (stdout, stderr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped_together() {
        let (o, e) = cap(vec![1; 10], vec![2; 10], 15);
        assert_eq!((o.len(), e.len()), (10, 5));
        let (o, e) = cap(vec![1; 20], vec![2; 10], 15);
        assert_eq!((o.len(), e.len()), (15, 0));
    }
}
