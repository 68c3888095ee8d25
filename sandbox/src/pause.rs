//! The pod's infra process (`crius-shim pause`), started only when the pod shares one PID
//! namespace (PID mode POD): it is PID 1 of that namespace, reaps orphans and does nothing else.
//!
//! Invariants: the process is identified by pid *and* start time, so a recycled pid is never
//! signalled; [`kill`] is idempotent and returns once the process is gone (or a zombie).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::PinnedNamespaces;

/// How long [`kill`] waits for the process to disappear after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    #[error("cannot start the pod infra process {shim} pause: {source}")]
    Spawn {
        shim: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pod infra process failed to start: {0}")]
    Failed(String),
    #[error("cannot stop systemd slice {slice}: {message}")]
    StopSlice { slice: String, message: String },
    #[error("pod infra process {pid} did not exit within {KILL_WAIT:?} of SIGKILL")]
    Stuck { pid: i32 },
}

/// A running infra process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PauseProcess {
    /// Host pid (it is 1 inside the pod's PID namespace).
    pub pid: i32,
    /// `/proc/<pid>/stat` start time, in clock ticks since boot.
    pub start_time: u64,
}

/// Where the infra process is born.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// cgroupfs: these directories (the infra leaf in each hierarchy).
    Dirs(Vec<PathBuf>),
    /// systemd: a transient scope, as `<slice>:<prefix>:<name>`, that the launcher asks for.
    Scope(String),
}

/// Starts `<shim> pause`, joined to the pod's pinned namespaces and born inside `place`, and
/// returns its identity.
pub fn spawn(shim: &Path, ns: &PinnedNamespaces, place: &Placement) -> Result<PauseProcess, PauseError> {
    let mut cmd = Command::new(shim);
    cmd.arg("pause");
    match place {
        Placement::Dirs(dirs) => {
            for dir in dirs {
                cmd.arg("--cgroup").arg(dir);
            }
        }
        Placement::Scope(unit) => {
            cmd.arg("--systemd-scope").arg(unit);
        }
    }
    // The user namespace first: it owns the others, and the PID namespace is created in it.
    for (flag, path) in [
        ("--user", &ns.user),
        ("--net", &ns.net),
        ("--ipc", &ns.ipc),
        ("--uts", &ns.uts),
    ] {
        if let Some(p) = path {
            cmd.arg(flag).arg(p);
        }
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir("/")
        .spawn()
        .map_err(|source| PauseError::Spawn {
            shim: shim.into(),
            source,
        })?;
    // The launcher prints the pid of the namespace's init and exits; the init keeps no copy of
    // the pipe, so reading to the newline and waiting cannot hang on the long-lived process.
    let mut line = String::new();
    let read = std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
    let out = child.wait_with_output().map_err(|source| PauseError::Spawn {
        shim: shim.into(),
        source,
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let pid = match (read, line.trim().parse::<i32>()) {
        (Ok(_), Ok(pid)) if out.status.success() && pid > 0 => pid,
        _ => {
            return Err(PauseError::Failed(format!(
                "{} ({}): {stderr}",
                out.status,
                line.trim()
            )));
        }
    };
    let start_time =
        start_time(pid).ok_or_else(|| PauseError::Failed(format!("pid {pid} exited at once")))?;
    Ok(PauseProcess { pid, start_time })
}

/// Stops a systemd slice through `<shim> stop-slice NAME`, which kills what is left in it.
/// Idempotent: a slice that is not loaded is Ok.
pub fn stop_unit(shim: &Path, slice: &str) -> Result<(), PauseError> {
    let out = Command::new(shim)
        .arg("stop-slice")
        .arg(slice)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| PauseError::Spawn {
            shim: shim.into(),
            source,
        })?;
    if !out.status.success() {
        return Err(PauseError::StopSlice {
            slice: slice.to_string(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Start time and state of a process, from `/proc/<pid>/stat`.
fn stat(pid: i32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = s.get(s.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?.chars().next()?;
    // Field 22 of the full line is index 19 after pid and comm.
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

fn start_time(pid: i32) -> Option<u64> {
    stat(pid).map(|(_, t)| t)
}

/// Whether this exact process is still running (not a zombie, pid not recycled).
pub fn is_alive(p: &PauseProcess) -> bool {
    matches!(stat(p.pid), Some((state, t)) if t == p.start_time && state != 'Z' && state != 'X')
}

/// SIGKILLs the process (which takes every process of the pod PID namespace with it) and waits
/// until it is gone. Idempotent.
pub fn kill(p: &PauseProcess) -> Result<(), PauseError> {
    if !is_alive(p) {
        return Ok(());
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid), nix::sys::signal::SIGKILL);
    let deadline = Instant::now() + KILL_WAIT;
    while is_alive(p) {
        if Instant::now() > deadline {
            return Err(PauseError::Stuck { pid: p.pid });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_start_time_and_ignores_recycled_pids() {
        let me = std::process::id() as i32;
        let t = start_time(me).unwrap();
        assert!(is_alive(&PauseProcess {
            pid: me,
            start_time: t
        }));
        assert!(!is_alive(&PauseProcess {
            pid: me,
            start_time: t + 1
        }));
        // A process that is not the one recorded is never signalled.
        kill(&PauseProcess {
            pid: me,
            start_time: t + 1,
        })
        .unwrap();
    }
}
