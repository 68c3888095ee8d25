//! The hand-over from the pre-start shim to the small `monitor` mode: after `start`, the shim
//! execs its own binary again, keeping its pid (so it stays the parent of the container's init)
//! and the fds it owns, and drops the address space libcontainer grew: measured with 20 idle
//! shims, re-exec took a shim from 4.3 MB to 2.9 MB RSS (585 kB to 459 kB PSS), mostly
//! libcontainer's code pages.
//!
//! Invariant: only the fds named in the [`Handoff`] lose FD_CLOEXEC; the resumed monitor sets
//! it again on each of them, so the container never inherits them.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use crius_shim_api::ProcessStatus;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::attach::AttachHub;
use crate::log::{LogFile, Stream};
use crate::monitor::{Monitor, Output};
use crate::{create, proc_setup};

/// What the monitor needs to resume; passed as one JSON argument.
#[derive(Debug, Serialize, Deserialize)]
pub struct Handoff {
    pub config: PathBuf,
    pub pid: i32,
    pub status: ProcessStatus,
    pub ctl: RawFd,
    pub stdout: Option<RawFd>,
    pub stderr: Option<RawFd>,
    pub stdin: Option<RawFd>,
    /// The attach listener (clients already accepted are not carried over; there are none
    /// before the container runs).
    #[serde(default)]
    pub attach: Option<RawFd>,
}

/// Execs `crius-shim monitor <handoff>`. Returns only on failure.
pub fn into_monitor(mut m: Monitor) -> std::io::Error {
    m.flush_partials();
    let handoff = Handoff {
        config: m.cfg.shim_dir.join(crius_shim_api::CONFIG_FILE),
        pid: m.pid.as_raw(),
        status: m.status,
        ctl: m.ctl.as_raw_fd(),
        stdout: m.stdout.as_ref().map(|o| o.fd.as_raw_fd()),
        stderr: m.stderr.as_ref().map(|o| o.fd.as_raw_fd()),
        stdin: m.stdin.as_ref().map(|f| f.as_raw_fd()),
        attach: m.attach.as_ref().map(|a| a.listener().as_raw_fd()),
    };
    let keep: Vec<_> = [Some(m.ctl.as_fd()), m.stdout.as_ref().map(|o| o.fd.as_fd())]
        .into_iter()
        .chain([
            m.stderr.as_ref().map(|o| o.fd.as_fd()),
            m.stdin.as_ref().map(|f| f.as_fd()),
            m.attach.as_ref().map(|a| a.listener()),
        ])
        .flatten()
        .collect();
    for fd in &keep {
        if let Err(e) = proc_setup::set_cloexec(fd, false) {
            return e.into();
        }
    }
    let arg = match serde_json::to_string(&handoff) {
        Ok(a) => a,
        Err(e) => return std::io::Error::other(e),
    };
    let (Ok(exe), Ok(mode), Ok(arg0), Ok(arg)) = (
        CString::new("/proc/self/exe"),
        CString::new("monitor"),
        CString::new("crius-shim"),
        CString::new(arg),
    ) else {
        return std::io::Error::other("NUL in the monitor arguments");
    };
    match nix::unistd::execv(&exe, &[arg0, mode, arg]) {
        Err(e) => e.into(),
        Ok(never) => match never {},
    }
}

/// `crius-shim monitor <handoff>`: rebuilds the [`Monitor`] and serves until removal.
pub fn main(arg: &str) -> i32 {
    proc_setup::name_process();
    let h: Handoff = match serde_json::from_str(arg) {
        Ok(h) => h,
        Err(e) => {
            note!("crius-shim monitor: bad hand-off: {e}");
            return 2;
        }
    };
    let cfg = match create::load_config(&h.config) {
        Ok(c) => c,
        Err(e) => {
            note!("crius-shim monitor: {e}");
            return 2;
        }
    };
    // SAFETY: the pre-start shim passed these fds across execve for us alone.
    let own = |fd: RawFd| unsafe { OwnedFd::from_raw_fd(fd) };
    let ctl = own(h.ctl);
    let stdout = h.stdout.map(own);
    let stderr = h.stderr.map(own);
    let stdin = h.stdin.map(own);
    let attach = h.attach.map(own);
    for fd in [
        Some(&ctl),
        stdout.as_ref(),
        stderr.as_ref(),
        stdin.as_ref(),
        attach.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        let _ = proc_setup::set_cloexec(fd, true);
    }
    let log = match LogFile::open(cfg.log_path.clone()) {
        Ok(l) => l,
        Err(e) => {
            note!("crius-shim monitor: cannot open log: {e}");
            LogFile::open(None).expect("a log without a path opens nothing")
        }
    };
    let sigfd = match proc_setup::sigchld_fd() {
        Ok(s) => s,
        Err(e) => {
            note!("crius-shim monitor: signalfd: {e}");
            return 1;
        }
    };
    let mut monitor = Monitor::new(
        cfg,
        Pid::from_raw(h.pid),
        h.status,
        stdout.map(|fd| Output::new(fd, Stream::Stdout)),
        stderr.map(|fd| Output::new(fd, Stream::Stderr)),
        stdin,
        UnixListener::from(ctl),
        log,
        sigfd,
        crate::teardown::delete_container,
    );
    let stdin_once = monitor.cfg.stdin_once;
    monitor.attach = attach.map(|fd| AttachHub::from_listener(fd, stdin_once));
    match monitor.run() {
        Ok(_) => 0,
        Err(e) => {
            note!("crius-shim monitor: event loop failed: {e}");
            1
        }
    }
}
