//! `crius-shim exec-helper --request <json>`: runs one process inside a running container with
//! libcontainer's tenant builder, then waits for it and exits with its exit code.
//!
//! The process gets the container's own `process` from its `config.json` (user, groups,
//! capabilities, env, cwd, rlimits, no-new-privileges) with `args` replaced; fds 0/1/2 of the
//! helper become its stdio, or, when the request names a console socket, the process gets a new
//! terminal whose master libcontainer sends to that socket. libcontainer 0.7 drops `linux.seccomp` for tenants, so
//! [`WorkloadExecutor`] loads the container's filter itself right before `execvp`.
//!
//! With an external OCI runtime (`ExecRequest::runtime`) the process runs through that runtime's
//! `exec --detach` instead (see `external`); the runtime applies the container's seccomp filter.
//!
//! Invariants: the helper never writes to fds 0/1/2 (they belong to the exec'd process); every
//! outcome is one or two [`ExecReport`] frames on fd 3; the scratch `process.json` is removed
//! before the process runs.

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;

use crius_shim_api::{ExecReport, ExecRequest, ExitStatus, PROTOCOL_VERSION, REPORT_FD, write_frame};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::wait::{WaitStatus, waitpid};
use oci_spec::runtime::{LinuxSeccomp, Spec};

use crate::create::error_chain;
use crate::workload::WorkloadExecutor;

#[derive(Debug, thiserror::Error)]
enum ExecError {
    #[error("bad exec request: {0}")]
    Request(String),
    #[error("cannot load the container's spec {path}: {message}")]
    Spec { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Scratch {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot exec in container {id}: {message}")]
    Build { id: String, message: String },
    #[error("cannot wait for the exec'd process: {0}")]
    Wait(#[source] nix::Error),
}

/// Entry point of the `exec-helper` mode. Returns the process exit code.
pub fn main(request: &str) -> i32 {
    // SAFETY: fd 3 was dup2'ed by the daemon onto its report pipe for this process alone.
    let mut report = unsafe { File::from_raw_fd(REPORT_FD) };
    let mut send = |r: &ExecReport| {
        let _ = write_frame(&mut report, r);
    };
    match run(request, &mut send) {
        Ok(code) => {
            send(&ExecReport::Exited { exit_code: code });
            code
        }
        Err(e) => {
            send(&ExecReport::Failed {
                message: e.to_string(),
            });
            126
        }
    }
}

fn run(request: &str, send: &mut dyn FnMut(&ExecReport)) -> Result<i32, ExecError> {
    let req: ExecRequest = serde_json::from_str(request).map_err(|e| ExecError::Request(e.to_string()))?;
    if req.version != PROTOCOL_VERSION {
        return Err(ExecError::Request(format!("protocol version {}", req.version)));
    }
    if req.args.is_empty() {
        return Err(ExecError::Request("empty command".into()));
    }
    let spec_path = req.bundle.join("config.json");
    let spec = Spec::load(&spec_path).map_err(|e| ExecError::Spec {
        path: spec_path.clone(),
        message: e.to_string(),
    })?;
    let mut process = spec.process().clone().ok_or_else(|| ExecError::Spec {
        path: spec_path.clone(),
        message: "no process".into(),
    })?;
    process
        .set_args(Some(req.args.clone()))
        .set_terminal(Some(req.console_socket.is_some()))
        .set_console_size(None);
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());

    let scratch = req.scratch_dir.join(format!("exec-{}.json", std::process::id()));
    let body = serde_json::to_vec(&process).map_err(|e| ExecError::Request(e.to_string()))?;
    std::fs::write(&scratch, body).map_err(|source| ExecError::Scratch {
        path: scratch.clone(),
        source,
    })?;
    // An external runtime's exec joins every namespace of the container itself, its user
    // namespace included; libcontainer's does not join the user namespace (see
    // `join_user_namespace`).
    let built = match &req.runtime {
        Some(rt) => crate::external::exec(&req, rt, &scratch).map_err(|message| ExecError::Build {
            id: req.id.clone(),
            message,
        }),
        None => crate::tenant_root::prepare(&req.youki_root, &req.id, &spec, &req.scratch_dir)
            .map_err(|message| ExecError::Build {
                id: req.id.clone(),
                message,
            })
            .and_then(|tenant| {
                join_user_namespace(&req.id, &spec)?;
                let root = tenant
                    .as_ref()
                    .map_or(req.youki_root.as_path(), |t| t.root.as_path());
                // The scratch root (if any) may go once the process runs: it is dropped here.
                build(&req, root, &scratch, seccomp)
            }),
    };
    let _ = std::fs::remove_file(&scratch);
    if let (Some(sock), None) = (&req.console_socket, &req.runtime) {
        remove_console_links(&req.youki_root.join(&req.id), sock);
    }
    let pid = built?;
    send(&ExecReport::Started { pid: pid.as_raw() });
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return Ok(ExitStatus::code_from_wait(None, Some(sig as i32)));
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(ExecError::Wait(e)),
        }
    }
}

fn build(
    req: &ExecRequest,
    youki_root: &std::path::Path,
    process_file: &std::path::Path,
    seccomp: Option<LinuxSeccomp>,
) -> Result<nix::unistd::Pid, ExecError> {
    let fail = |message: String| ExecError::Build {
        id: req.id.clone(),
        message,
    };
    let dup = |fd: i32| -> Result<OwnedFd, ExecError> {
        nix::unistd::dup(fd)
            // SAFETY: dup just returned this fd; nothing else owns it.
            .map(|d| unsafe { OwnedFd::from_raw_fd(d) })
            .map_err(|e| fail(format!("dup fd {fd}: {e}")))
    };
    let builder = ContainerBuilder::new(req.id.clone(), SyscallType::default())
        .with_root_path(youki_root)
        .map_err(|e| fail(error_chain(&e)))?
        .with_executor(WorkloadExecutor { seccomp });
    // libcontainer requires "detached" exactly when the process has a terminal; for a tenant
    // the flag means nothing else.
    let builder = match &req.console_socket {
        Some(sock) => builder
            .with_console_socket(Some(sock))
            .as_tenant()
            .with_detach(true),
        None => builder
            .with_stdin(dup(0)?)
            .with_stdout(dup(1)?)
            .with_stderr(dup(2)?)
            .as_tenant()
            .with_detach(false),
    };
    builder
        .with_process(Some(process_file))
        .build()
        .map_err(|e| fail(error_chain(&e)))
}

/// libcontainer 0.7's tenant joins the init's ipc/uts/net/pid/mnt/cgroup/time namespaces but
/// never its user namespace: a process exec'd into a container of a pod with its own user
/// namespace would run as the host's root. This helper is single-threaded, so it joins the
/// container's user namespace itself, first; the tenant and everything it starts live in it.
/// It keeps its host uid 0 as the owner of crius's root-only files (scratch, sockets).
fn join_user_namespace(id: &str, spec: &Spec) -> Result<(), ExecError> {
    let user = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|n| {
            n.iter()
                .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User)
        });
    let Some(user) = user else { return Ok(()) };
    let fail = |message: String| ExecError::Build {
        id: id.to_string(),
        message,
    };
    let path = user
        .path()
        .as_ref()
        .ok_or_else(|| fail("the container's user namespace has no path to join".into()))?;
    let f = std::fs::File::open(path).map_err(|e| fail(format!("open {}: {e}", path.display())))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(|e| fail(format!("join the user namespace {}: {e}", path.display())))
}

/// libcontainer links the console socket into the container's state dir under a random
/// `tenant-tty-*.sock` name and leaves the link behind; remove the ones pointing at ours.
fn remove_console_links(container_dir: &std::path::Path, sock: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(container_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with("tenant-tty-") {
            continue;
        }
        if std::fs::read_link(e.path()).is_ok_and(|t| t == sock) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
