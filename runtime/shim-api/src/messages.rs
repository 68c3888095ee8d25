//! The messages: the shim's start-up configuration, the reports sent over the report pipe, and
//! the control-socket requests and responses.
//!
//! Invariant: every control request travels in a [`RequestEnvelope`] carrying
//! [`PROTOCOL_VERSION`]; a shim answers a request of another version with
//! [`Response::Error`] and does nothing else. One request per connection.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;
use crate::exit::ExitStatus;

/// What `crius-shim create --config <shim dir>/shim.json` needs. Written by the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimConfig {
    pub version: u32,
    /// Container id (validated by the daemon: `[A-Za-z0-9][A-Za-z0-9_.-]*`).
    pub id: String,
    /// OCI bundle: `config.json`; its `root.path` is absolute.
    pub bundle: PathBuf,
    /// libcontainer's state root; the container's state lives in `<youki_root>/<id>/`.
    pub youki_root: PathBuf,
    /// The shim directory: control socket, exit file, console socket.
    pub shim_dir: PathBuf,
    /// CRI log file, written by the shim. `None` discards the output.
    pub log_path: Option<PathBuf>,
    /// OCI `process.terminal`: the shim receives the pty master instead of pipes.
    pub terminal: bool,
    /// CRI `stdin`: the shim keeps the write end of the container's stdin open.
    pub stdin: bool,
    /// CRI `stdin_once`: the shim closes the container's stdin once the first attach client that
    /// wrote to it detaches (absent in configs written before attach existed).
    #[serde(default)]
    pub stdin_once: bool,
    /// The container's cgroup as an absolute cgroupfs path (for the OOM counter and killing
    /// every process); under the systemd driver the path of its scope, not `linux.cgroupsPath`.
    pub cgroup_path: String,
    /// The systemd cgroup driver: libcontainer asks systemd for the container's scope, named by
    /// the spec's `<slice>:<prefix>:<id>` cgroupsPath.
    #[serde(default)]
    pub systemd_cgroup: bool,
    /// Where the shim moves itself before it builds the container, out of the daemon's own
    /// cgroup, so that stopping or restarting a daemon run by systemd never takes the shims
    /// with it. None: stay where the daemon started it.
    #[serde(default)]
    pub shim_cgroup: Option<ShimCgroup>,
    /// The container shares a PID namespace (the pod's, another container's or the host's), so
    /// its other processes outlive init: the shim SIGKILLs what is left in its cgroup when init
    /// exits, as runc's shim does. A container with its own PID namespace needs no help: the
    /// kernel kills the namespace with its init.
    #[serde(default)]
    pub kill_all_on_exit: bool,
    /// The spec has poststop hooks (CDI devices can bring them): the shim's Shutdown deletes
    /// through libcontainer, which runs them, even where the daemon removes the cgroup itself.
    #[serde(default)]
    pub poststop_hooks: bool,
    /// The external OCI runtime of the container's runtime handler; `None` (and configs written
    /// before handlers existed): the embedded libcontainer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<OciRuntime>,
    /// Every cgroup v1 mount point of the host, in mount-table order, as the daemon found them
    /// when it started: libcgroups takes them instead of reading `/proc/self/mountinfo`, whose
    /// length grows with every container and pod on the node. `None` (a pure cgroup v2 host, an
    /// unreadable table, configs written before this existed): libcgroups reads the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_v1_mounts: Option<Vec<PathBuf>>,
    /// The container was created from a checkpoint archive: the shim restores its processes
    /// from these CRIU images (the extracted archive's `checkpoint/`) instead of building it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_images: Option<PathBuf>,
}

/// An external OCI runtime binary (runc, crun, ...) that the shim drives through the OCI
/// runtime command line instead of the embedded libcontainer. Recorded with the container, so
/// a restarted daemon and a re-exec'd shim use the runtime the container was created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciRuntime {
    /// The runtime handler's name (`[runtimes.NAME]`).
    pub handler: String,
    /// The runtime binary.
    pub path: PathBuf,
    /// The runtime's state directory (`--root`), crius's own per handler.
    pub root: PathBuf,
}

/// A shim's own cgroup (see [`ShimConfig::shim_cgroup`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShimCgroup {
    /// cgroupfs directories (one per hierarchy systemd tracks), made if missing.
    Dirs(Vec<PathBuf>),
    /// A systemd transient scope, `<slice>:<prefix>:<name>`.
    Scope(String),
}

/// The one frame `crius-shim create` writes on its report fd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum CreateReport {
    /// The container exists (libcontainer status `created`); `pid` is its init, in the host PID
    /// namespace, a child of the shim; `shim_pid` is the shim that serves its control socket.
    Created {
        pid: i32,
        shim_pid: i32,
    },
    Failed {
        message: String,
    },
}

/// A control request with the protocol version it was written for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    pub version: u32,
    pub request: Request,
}

impl RequestEnvelope {
    pub fn new(request: Request) -> Self {
        RequestEnvelope {
            version: PROTOCOL_VERSION,
            request,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Request {
    /// Where the container's init is: answered with [`Response::State`].
    State,
    /// Lets a created container run its process. Only valid once, in state `created`.
    Start,
    /// Sends `signal` to init, or to every process of the container's cgroup when `all`.
    /// A container whose init has exited answers `Ok` (nothing left to signal).
    Kill { signal: i32, all: bool },
    /// Closes the CRI log file and opens the same path again (log rotation).
    ReopenLog,
    /// Sets the pty window size (terminal containers only).
    Resize { width: u16, height: u16 },
    /// The container is being removed: kill what is left, reap it, flush the log, answer `Ok`
    /// and exit. Under the systemd cgroup driver the shim also deletes libcontainer's state and
    /// the container's scope; otherwise the daemon removes both itself after the answer.
    /// Idempotent from the daemon's side: a shim that is gone has nothing left to do.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    pub version: u32,
    pub response: Response,
}

impl ResponseEnvelope {
    pub fn new(response: Response) -> Self {
        ResponseEnvelope {
            version: PROTOCOL_VERSION,
            response,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Response {
    Ok,
    State(ShimState),
    /// The request was understood but could not be done; `code` says why in a typed way.
    Error {
        code: ErrorCode,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The container is not in a state that allows the request (start twice, resize without tty).
    WrongState,
    /// The request's version is not ours.
    Version,
    /// The operating system refused.
    Failed,
}

/// The container's process as the shim sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimState {
    pub pid: i32,
    pub status: ProcessStatus,
    /// Set once init has been reaped (and the exit file written).
    pub exit: Option<ExitStatus>,
}

/// ```text
/// created --start--> running --init exits--> exited
///    \_______________init killed_____________/
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessStatus {
    Created,
    Running,
    Exited,
}

/// What `crius-shim exec-helper --request <json>` runs: `args` inside the running container
/// `id`, with the user, groups, capabilities, env, cwd and seccomp filter of its `config.json`.
/// The helper's fds 0/1/2 become the process's stdio; fd [`crate::REPORT_FD`] carries
/// [`ExecReport`] frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub version: u32,
    pub id: String,
    pub youki_root: PathBuf,
    pub bundle: PathBuf,
    /// A directory the helper may write a scratch `process.json` into.
    pub scratch_dir: PathBuf,
    pub args: Vec<String>,
    /// Run the process with a terminal: libcontainer connects to this listening unix socket and
    /// sends the pty master (SCM_RIGHTS); the helper's fds 0/1/2 are then unused. `None` (and
    /// requests from daemons that predate it): no terminal, fds 0/1/2 are the process's stdio.
    #[serde(default)]
    pub console_socket: Option<PathBuf>,
    /// The container's external OCI runtime (`runtime exec`); `None`: libcontainer's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<OciRuntime>,
    /// The systemd cgroup driver is in force (the runtime gets `--systemd-cgroup`).
    #[serde(default)]
    pub systemd_cgroup: bool,
}

/// Frames written by the exec helper: `Started` then `Exited`, or one `Failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum ExecReport {
    /// The exec'd process runs as `pid` (host PID namespace, a child of the helper).
    Started {
        pid: i32,
    },
    /// `exit_code` is 128+signal when the process was killed by a signal.
    Exited {
        exit_code: i32,
    },
    Failed {
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape_is_stable() {
        let req = RequestEnvelope::new(Request::Kill {
            signal: 15,
            all: false,
        });
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"version":1,"request":{"op":"kill","signal":15,"all":false}}"#
        );
        let resp = ResponseEnvelope::new(Response::Error {
            code: ErrorCode::WrongState,
            message: "x".into(),
        });
        assert_eq!(
            serde_json::to_string(&resp).unwrap(),
            r#"{"version":1,"response":{"kind":"error","code":"wrong_state","message":"x"}}"#
        );
        let rep = CreateReport::Created { pid: 7, shim_pid: 6 };
        assert_eq!(
            serde_json::to_string(&rep).unwrap(),
            r#"{"result":"created","pid":7,"shim_pid":6}"#
        );
    }

    #[test]
    fn state_round_trips() {
        let s = ResponseEnvelope::new(Response::State(ShimState {
            pid: 42,
            status: ProcessStatus::Exited,
            exit: Some(ExitStatus {
                exit_code: 137,
                finished_at: 1_700_000_000_123_456_789,
                oom_killed: true,
            }),
        }));
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<ResponseEnvelope>(&text).unwrap(), s);
    }
}
