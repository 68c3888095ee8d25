//! The daemon↔shim protocol: versioned, length-prefixed serde messages on a unix socket under the
//! shim's state directory, the create/exec reports sent over a pipe, and the exit file. Both
//! `crius` and `crius-shim` use these types; this crate pulls in neither tokio/tonic nor
//! libcontainer, only serde and std.
//!
//! Layout of one shim directory (`<state>/containers/<id>/shim/`, chosen by the daemon):
//! `shim.json` ([`ShimConfig`]), `ctl.sock` (control socket), `exit.json` ([`ExitStatus`]),
//! `shim.log` (the shim's own diagnostics).

pub mod exit;
pub mod frame;
pub mod messages;

pub use exit::{ExitFileError, ExitStatus};
pub use frame::{FrameError, MAX_FRAME, read_frame, write_frame};
pub use messages::*;

/// Bumped whenever a message changes shape; a daemon refuses a shim that speaks another version.
pub const PROTOCOL_VERSION: u32 = 1;

/// File names inside a shim directory.
pub const CONFIG_FILE: &str = "shim.json";
pub const CONTROL_SOCKET: &str = "ctl.sock";
pub const EXIT_FILE: &str = "exit.json";
pub const SHIM_LOG: &str = "shim.log";
/// The fd on which `crius-shim create` and `crius-shim exec-helper` write their reports.
pub const REPORT_FD: i32 = 3;
