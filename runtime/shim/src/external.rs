//! The shim's external-runtime mode: a container whose runtime handler names an OCI runtime
//! binary (runc, crun) is created, started, signalled, deleted and exec'd into through that
//! binary's command line (`oci_cli`), while the shim keeps what it owns for every handler: the
//! container's stdio (pipes it makes, or the pty master the runtime sends to its console
//! socket), the CRI log, the attach socket and the exit status.
//!
//! Invariants: the shim is a child subreaper before the runtime runs, so the container's init
//! (which the runtime leaves behind when it exits) is re-parented to the shim, which reaps it
//! and records its exit like libcontainer's; a failed create leaves no runtime state behind
//! (`delete --force`); deleting a container the runtime no longer knows succeeds.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crius_shim_api::{ExecRequest, OciRuntime, ShimConfig};
use nix::unistd::Pid;

use crate::create::{CreateError, ShimStdio, receive_pty_master};
use crate::log::LogFile;
use crate::monitor::Monitor;
use crate::oci_cli::{self, CREATE_TIMEOUT, Cli, RUNTIME_LOG, VERB_TIMEOUT};
use crate::proc_setup;

fn cli<'a>(cfg: &ShimConfig, rt: &'a OciRuntime, log: &'a Path) -> Cli<'a> {
    Cli {
        rt,
        systemd: cfg.systemd_cgroup,
        log: Some(log),
    }
}

/// `RUNTIME create` with the stdio of `io`; returns the monitor serving the created container.
pub fn create(
    cfg: ShimConfig,
    rt: OciRuntime,
    mut io: ShimStdio,
    ctl: UnixListener,
    ctl_path: &Path,
    log: LogFile,
) -> Result<(Monitor, Pid), CreateError> {
    let fail = |message: String| CreateError::External {
        id: cfg.id.clone(),
        message,
    };
    proc_setup::become_subreaper();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&rt.root)
        .map_err(|e| fail(format!("create runtime root {}: {e}", rt.root.display())))?;
    let runtime_log = cfg.shim_dir.join(RUNTIME_LOG);
    let c = cli(&cfg, &rt, &runtime_log);
    let pid_file = oci_cli::pid_file(&cfg.shim_dir, "init");
    let console = io.console.as_ref().map(|(_, p)| p.clone());
    let short = console
        .as_deref()
        .map(short_socket_path)
        .transpose()
        .map_err(&fail)?;
    let short_path = short.as_ref().map(|(_, p)| p.as_path());
    let mut cmd = c.command(c.create(&cfg.id, &cfg.bundle, &pid_file, short_path));
    // Without a terminal the runtime hands its own stdio to the container's init.
    match io.container.take() {
        Some((i, o, e)) => cmd
            .stdin(Stdio::from(i))
            .stdout(Stdio::from(o))
            .stderr(Stdio::from(e)),
        None => cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    };
    let created = oci_cli::run_captured(&rt, cmd, "create", CREATE_TIMEOUT).and_then(|out| {
        if out.status.success() {
            return oci_cli::read_pid_file(&pid_file);
        }
        // Nothing ran in the container yet: what its stderr pipe holds is the runtime's.
        let mut stderr = out.stderr;
        if let Some(fd) = &io.stderr {
            oci_cli::drain(fd, &mut stderr);
        }
        Err(oci_cli::failure(
            &rt,
            "create",
            &out.status,
            &stderr,
            Some(&runtime_log),
        ))
    });
    let undo = |message: String| {
        let _ = delete(&cfg, &rt);
        let _ = fs::remove_file(ctl_path);
        if let Some(p) = &console {
            let _ = fs::remove_file(p);
        }
        fail(message)
    };
    drop(short);
    let pid = Pid::from_raw(created.map_err(&undo)?);
    let stdout_fd: Option<OwnedFd> = match io.console.take() {
        Some((listener, path)) => {
            let master = receive_pty_master(&listener);
            let _ = fs::remove_file(&path);
            Some(master.map_err(|e| undo(e.to_string()))?)
        }
        None => io.stdout.take(),
    };
    let mut monitor = crate::create::created_monitor(cfg.clone(), pid, stdout_fd, &mut io, ctl, log)
        .map_err(|(what, e)| undo(format!("{what}: {e}")))?;
    let start_cfg = monitor.cfg.clone();
    monitor.starter = Some(Box::new(move || {
        let c = cli(&start_cfg, &rt, &runtime_log);
        oci_cli::run(&rt, c.command(c.start(&start_cfg.id)), "start", VERB_TIMEOUT).map(|_| ())
    }));
    Ok((monitor, pid))
}

/// `RUNTIME kill [--all] ID SIGNAL`.
pub fn kill(cfg: &ShimConfig, rt: &OciRuntime, signal: i32, all: bool) -> Result<(), String> {
    let log = cfg.shim_dir.join(RUNTIME_LOG);
    let c = cli(cfg, rt, &log);
    oci_cli::run(rt, c.command(c.kill(&cfg.id, signal, all)), "kill", VERB_TIMEOUT).map(|_| ())
}

/// `RUNTIME delete --force ID`; a container the runtime does not know (`state` fails too) is
/// already deleted: its state directory, if any is left, is removed.
pub fn delete(cfg: &ShimConfig, rt: &OciRuntime) -> Result<(), String> {
    let log = cfg.shim_dir.join(RUNTIME_LOG);
    let c = cli(cfg, rt, &log);
    let Err(e) = oci_cli::run(rt, c.command(c.delete(&cfg.id)), "delete", VERB_TIMEOUT) else {
        return Ok(());
    };
    if let Ok(state) = oci_cli::run(rt, c.command(c.state(&cfg.id)), "state", VERB_TIMEOUT) {
        let status = serde_json::from_slice::<serde_json::Value>(&state.stdout)
            .ok()
            .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
        return Err(format!("{e}; the runtime still has the container ({status})"));
    }
    match fs::remove_dir_all(rt.root.join(&cfg.id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("remove {}: {e}", rt.root.join(&cfg.id).display()))
        }
        _ => Ok(()),
    }
}

/// `RUNTIME exec --detach` of `process_file` with the helper's own stdio (or the request's
/// console socket); returns the exec'd process, which the helper (a subreaper) then waits for.
pub fn exec(req: &ExecRequest, rt: &OciRuntime, process_file: &Path) -> Result<Pid, String> {
    proc_setup::become_subreaper();
    // The report pipe is the helper's alone: the runtime must not hold it open.
    // SAFETY: REPORT_FD is open for the helper's whole life (the daemon dup2'ed it there).
    let report = unsafe { std::os::fd::BorrowedFd::borrow_raw(crius_shim_api::REPORT_FD) };
    let _ = proc_setup::set_cloexec(&report, true);
    let scratch =
        |ext: &str| -> PathBuf { req.scratch_dir.join(format!("exec-{}.{ext}", std::process::id())) };
    let (pid_file, log) = (scratch("pid"), scratch("log"));
    let c = Cli {
        rt,
        systemd: req.systemd_cgroup,
        log: Some(&log),
    };
    let short = req.console_socket.as_deref().map(short_socket_path).transpose()?;
    let console = short.as_ref().map(|(_, p)| p.as_path());
    let mut cmd = c.command(c.exec(&req.id, process_file, &pid_file, console));
    if req.console_socket.is_some() {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
    }
    let result = oci_cli::run_captured(rt, cmd, "exec", VERB_TIMEOUT).and_then(|out| {
        if out.status.success() {
            oci_cli::read_pid_file(&pid_file)
        } else {
            Err(oci_cli::failure(rt, "exec", &out.status, &out.stderr, Some(&log)))
        }
    });
    drop(short);
    let _ = fs::remove_file(&pid_file);
    let _ = fs::remove_file(&log);
    result.map(Pid::from_raw)
}

/// A name for the unix socket `path` that fits a socket address however deep `path` is:
/// `/proc/self/fd/<dir fd>/<name>`, which the runtime resolves through its own copy of the
/// directory fd (inherited; the runtime's container processes close it). Valid while the
/// returned directory stays open.
fn short_socket_path(path: &Path) -> Result<(fs::File, PathBuf), String> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(format!("console socket {} has no directory", path.display()));
    };
    let d = fs::File::open(dir).map_err(|e| format!("open {}: {e}", dir.display()))?;
    proc_setup::set_cloexec(&d, false).map_err(|e| format!("console socket dir fd: {e}"))?;
    let short = crius_shim_api::short_socket_path(&d, &name.to_string_lossy());
    Ok((d, short))
}
