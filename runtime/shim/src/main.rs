//! `crius-shim`: the per-container process that will own a container's init, stdio, CRI log and
//! exit file (issue: containers). Until that lands it refuses every mode with a clear message.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mode = std::env::args().nth(1).unwrap_or_default();
    eprintln!(
        "crius-shim (protocol {}): mode {mode:?} is not implemented yet",
        crius_shim_api::PROTOCOL_VERSION
    );
    ExitCode::from(2)
}
