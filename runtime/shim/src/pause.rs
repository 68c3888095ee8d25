//! `crius-shim pause [--cgroup DIR]... [--user P] [--net P] [--ipc P] [--uts P]`: the pod infra process,
//! needed only when the pod's containers share one PID namespace (CRI PID mode POD). A PID
//! namespace cannot be pinned by a bind mount (it dies with its init), so this process is that
//! init.
//!
//! The launcher starts a new session, moves itself into the pod's infra cgroup (each `--cgroup`
//! directory, one per hierarchy, or the systemd scope `--systemd-scope`), joins the pod's pinned namespaces, unshares a PID namespace
//! and forks, so the infra process is born inside the pod cgroup and never has to be migrated;
//! it prints the child's host pid on stdout and exits. The child is PID 1 of the new namespace:
//! stdio on /dev/null, it reaps every orphan re-parented to it and exits on SIGTERM or SIGINT.
//! It never touches the daemon again, so it survives daemon restarts.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::ForkResult;

/// Runs the pause mode; `args` are the arguments after `pause`. Returns the exit code.
pub fn main(args: &[String]) -> i32 {
    match launch(args) {
        Ok(()) => 0,
        Err(e) => {
            note!("crius-shim pause: {e}");
            1
        }
    }
}

fn launch(args: &[String]) -> Result<(), String> {
    let mut joins = Vec::new();
    let mut cgroups = Vec::new();
    let mut scope = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--systemd-scope" {
            scope = Some(it.next().ok_or("--systemd-scope needs a unit")?.clone());
            continue;
        }
        if flag == "--cgroup" {
            let dir = it.next().ok_or("--cgroup needs a cgroup directory")?;
            cgroups.push(std::path::PathBuf::from(dir));
            continue;
        }
        let kind = match flag.as_str() {
            "--net" => CloneFlags::CLONE_NEWNET,
            "--ipc" => CloneFlags::CLONE_NEWIPC,
            "--uts" => CloneFlags::CLONE_NEWUTS,
            "--user" => CloneFlags::CLONE_NEWUSER,
            other => return Err(format!("unknown argument {other:?}")),
        };
        let path = it
            .next()
            .ok_or_else(|| format!("{flag} needs a namespace path"))?;
        joins.push((kind, path.clone()));
    }
    // A new session: a signal to the daemon's process group never reaches the pod's init.
    let _ = nix::unistd::setsid();
    let me = std::process::id().to_string();
    for dir in &cgroups {
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, &me).map_err(|e| format!("cannot join cgroup {}: {e}", procs.display()))?;
    }
    if let Some(unit) = &scope {
        // The D-Bus connection is closed again before the fork: the init inherits no socket.
        crate::systemd::join_scope(unit)?;
    }
    for (kind, path) in &joins {
        let f = File::open(path).map_err(|e| format!("cannot open namespace {path}: {e}"))?;
        nix::sched::setns(&f, *kind).map_err(|e| format!("cannot join namespace {path}: {e}"))?;
    }
    nix::sched::unshare(CloneFlags::CLONE_NEWPID)
        .map_err(|e| format!("cannot unshare a PID namespace: {e}"))?;
    // Block the signals the init waits for before forking, so none is lost in between.
    let mut set = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    // SAFETY: this process is single-threaded (the shim creates no threads before this mode).
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("cannot fork the pod init: {e}"))? {
        ForkResult::Parent { child } => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{child}").map_err(|e| format!("cannot report the pod init pid: {e}"))?;
            out.flush()
                .map_err(|e| format!("cannot report the pod init pid: {e}"))?;
            Ok(())
        }
        ForkResult::Child => init(&set),
    }
}

/// PID 1 of the pod's PID namespace. Never returns.
fn init(set: &SigSet) -> ! {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors of this process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => reap(),
            Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => {
                // SAFETY: plain process exit.
                unsafe { libc::_exit(0) }
            }
            _ => {}
        }
    }
}

fn reap() {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
