//! `crius-shim`: the per-container process that owns a container's init, stdio, CRI log and exit
//! file, plus the short-lived exec helper. libcontainer lives in this crate and nowhere else.
//!
//! Modes (argv[1]):
//! - `create --config <shim dir>/shim.json`: started by the daemon per container (see `create`).
//! - `monitor <hand-off>`: what `create` re-execs into after `start` (see `reexec`).
//! - `exec-helper --request <json>`: one process per exec (see `exec_helper`).
//! - `checkpoint-helper --request <json>`: one CRIU dump of a running container (see `checkpoint`).
//! - `pause [--cgroup DIR].. | [--systemd-scope UNIT] [--user P] [--net P] [--ipc P] [--uts P]`: PID 1 of
//!   a pod-shared PID namespace (see `pause`).
//! - `stop-slice NAME.slice`: stops a pod slice of the systemd driver (see `systemd`).

#[macro_use]
mod diag;

mod attach;
mod cgroup;
mod cgroup_delegate;
mod checkpoint;
mod create;
mod exec_helper;
mod external;
mod log;
mod monitor;
mod oci_cli;
mod pause;
mod proc_setup;
mod reexec;
mod restore;
mod systemd;
mod teardown;
mod tenant_root;
mod workload;

use std::path::Path;
use std::process::ExitCode;

fn usage() -> ExitCode {
    note!(
        "usage: crius-shim create --config <shim.json> | exec-helper --request <json> | \
         checkpoint-helper --request <json> (protocol {})",
        crius_shim_api::PROTOCOL_VERSION
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| -> Option<&str> {
        (args.get(2).map(String::as_str) == Some(flag))
            .then(|| args.get(3).map(String::as_str))
            .flatten()
    };
    let code = match args.get(1).map(String::as_str) {
        Some("create") => match arg("--config") {
            Some(path) => create::main(Path::new(path)),
            None => return usage(),
        },
        Some("monitor") => match args.get(2) {
            Some(handoff) => reexec::main(handoff),
            None => return usage(),
        },
        Some("pause") => pause::main(&args[2..]),
        Some("stop-slice") => systemd::stop_slice_main(&args[2..]),
        Some("exec-helper") => match arg("--request") {
            Some(req) => exec_helper::main(req),
            None => return usage(),
        },
        Some("checkpoint-helper") => match arg("--request") {
            Some(req) => checkpoint::main(req),
            None => return usage(),
        },
        _ => return usage(),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}
