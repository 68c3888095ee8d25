//! `crius-shim checkpoint-helper --request <json>`: dumps a running container's processes with
//! CRIU into the request's image directory and leaves them running (a forensic checkpoint).
//!
//! The daemon spawns this helper as it spawns the exec helper: a fresh single-threaded process,
//! so libcontainer (which reads the container's state and spawns `criu swrk`) never runs in the
//! daemon, and the ptracing is CRIU's alone, in a grandchild of the daemon. The container's
//! shim is not involved: CRIU seizes the container's processes wherever their parent is, and
//! the shim's event loop keeps draining the container's stdio while they are frozen for the
//! dump (a pipe the dump holds back only fills up; nothing is lost).
//!
//! With libcontainer, bind mounts (pod files, volumes) and the pod's network namespace are
//! declared external to CRIU, as runc and crun do; an external OCI runtime runs its own
//! `checkpoint --leave-running`.
//!
//! Invariants: exactly one [`CheckpointReport`] frame on fd 3; the helper never writes to the
//! container's state; a failure's message carries the tail of CRIU's `dump.log`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::FromRawFd;
use std::path::Path;
use std::time::Duration;

use crius_shim_api::{CheckpointReport, CheckpointRequest, PROTOCOL_VERSION, REPORT_FD, write_frame};
use libcontainer::container::{CheckpointOptions, Container};

use crate::create::error_chain;

/// CRIU's log in the image directory (libcontainer's name; runc and crun use it too).
const DUMP_LOG: &str = "dump.log";
/// The most bytes of `dump.log` quoted in an error.
const LOG_TAIL: u64 = 2048;
/// An external runtime's own bound; the daemon's deadline (it kills this helper) is the real one.
const RUNTIME_TIMEOUT: Duration = Duration::from_secs(3600);

/// Entry point of the `checkpoint-helper` mode. Returns the process exit code.
pub fn main(request: &str) -> i32 {
    // SAFETY: fd 3 was dup2'ed by the daemon onto its report pipe for this process alone.
    let mut report = unsafe { File::from_raw_fd(REPORT_FD) };
    let (report_msg, code) = match run(request) {
        Ok(()) => (CheckpointReport::Done, 0),
        Err(message) => (CheckpointReport::Failed { message }, 1),
    };
    let _ = write_frame(&mut report, &report_msg);
    code
}

fn run(request: &str) -> Result<(), String> {
    let req: CheckpointRequest =
        serde_json::from_str(request).map_err(|e| format!("bad checkpoint request: {e}"))?;
    if req.version != PROTOCOL_VERSION {
        return Err(format!(
            "bad checkpoint request: protocol version {}",
            req.version
        ));
    }
    let result = match &req.runtime {
        Some(rt) => with_runtime(&req, rt),
        None => with_libcontainer(&req),
    };
    result.map_err(|e| match log_tail(&req.image_dir.join(DUMP_LOG)) {
        Some(tail) => format!("{e}; criu's log ends with: {tail}"),
        None => e,
    })
}

fn with_libcontainer(req: &CheckpointRequest) -> Result<(), String> {
    let mut container = Container::load(req.youki_root.join(&req.id))
        .map_err(|e| format!("load container {}: {}", req.id, error_chain(&e)))?;
    let opts = CheckpointOptions {
        // Sockets to the outside, locks and TCP connections are not the evidence a forensic
        // checkpoint is for; asking for them only makes the dump fail on more containers.
        ext_unix_sk: false,
        file_locks: false,
        tcp_established: false,
        shell_job: false,
        link_remap: false,
        image_path: req.image_dir.clone(),
        work_path: None,
        // The container keeps running: kubelet's checkpoint API is forensic.
        leave_running: true,
        manage_cgroups_mode: rust_criu::CgMode::SOFT,
    };
    container
        .checkpoint(&opts)
        .map_err(|e| format!("checkpoint container {}: {}", req.id, error_chain(&e)))
}

/// `RUNTIME --root R [--systemd-cgroup] checkpoint --leave-running --image-path DIR ID`.
fn with_runtime(req: &CheckpointRequest, rt: &crius_shim_api::OciRuntime) -> Result<(), String> {
    let mut cmd = std::process::Command::new(&rt.path);
    cmd.arg("--root").arg(&rt.root);
    if req.systemd_cgroup {
        cmd.arg("--systemd-cgroup");
    }
    cmd.args(["checkpoint", "--leave-running", "--image-path"])
        .arg(&req.image_dir)
        .arg(&req.id);
    crate::oci_cli::run(rt, cmd, "checkpoint", RUNTIME_TIMEOUT).map(|_| ())
}

/// The last [`LOG_TAIL`] bytes of a CRIU log, from a line start, on one line.
pub(crate) fn log_tail(path: &Path) -> Option<String> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL))).ok()?;
    let mut buf = Vec::with_capacity(LOG_TAIL as usize);
    f.take(LOG_TAIL).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let text = match (len > LOG_TAIL, text.find('\n')) {
        (true, Some(i)) => &text[i + 1..],
        _ => &text[..],
    };
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    (!lines.is_empty()).then(|| lines.join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_starts_at_a_line_and_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(DUMP_LOG);
        let mut body = String::new();
        for i in 0..500 {
            body.push_str(&format!("(00.{i:06}) line {i}\n"));
        }
        body.push_str("Error (criu/cr-dump.c:1): something failed\n");
        std::fs::write(&p, &body).unwrap();
        let tail = log_tail(&p).unwrap();
        // Lines joined by " | " instead of newlines: at most LOG_TAIL bytes of the log.
        assert!(
            tail.replace(" | ", "\n").len() <= LOG_TAIL as usize,
            "{}",
            tail.len()
        );
        assert!(tail.ends_with("something failed"), "{tail}");
        assert!(tail.starts_with("(00."), "{tail}");
        assert!(log_tail(&dir.path().join("missing")).is_none());
    }
}
