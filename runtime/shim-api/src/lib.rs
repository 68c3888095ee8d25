//! The daemon↔shim protocol: versioned, length-prefixed serde messages on a unix socket under the
//! shim's state directory, the create/exec reports sent over a pipe, and the exit file. Both
//! `crius` and `crius-shim` use these types; this crate pulls in neither tokio/tonic nor
//! libcontainer, only serde and std.
//!
//! Layout of one shim directory (`<state>/containers/<id>/shim/`, chosen by the daemon):
//! `shim.json` ([`ShimConfig`]), `ctl.sock` (control socket), `exit.json` ([`ExitStatus`]),
//! `shim.log` (the shim's own diagnostics), `runtime.log` and `init.pid` (an external OCI
//! runtime's `--log` and `--pid-file`, see [`OciRuntime`]).

pub mod attach;
pub mod checkpoint;
pub mod exit;
pub mod frame;
pub mod messages;
pub mod utc;

pub use checkpoint::{CheckpointReport, CheckpointRequest};
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
/// The attach socket (`SOCK_SEQPACKET`, see [`attach`]).
pub const ATTACH_SOCKET: &str = "attach.sock";
/// The fd on which `crius-shim exec-helper` writes its reports. `crius-shim create` reports on
/// its stdout instead, so the daemon can start it without a pre-exec hook (posix_spawn, no
/// fork of the daemon's address space).
pub const REPORT_FD: i32 = 3;

/// A name for `<dir>/<name>` that fits in a unix socket address (108 bytes) however long `dir`
/// is: `/proc/self/fd/<fd>/<name>`, valid while `dir` stays open in this process.
pub fn short_socket_path(dir: &std::fs::File, name: &str) -> std::path::PathBuf {
    use std::os::fd::AsRawFd;
    std::path::PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}

/// Connects to the control socket in `shim_dir` (any length of path).
pub fn connect_control(shim_dir: &std::path::Path) -> std::io::Result<std::os::unix::net::UnixStream> {
    let dir = std::fs::File::open(shim_dir)?;
    std::os::unix::net::UnixStream::connect(short_socket_path(&dir, CONTROL_SOCKET))
}

/// Binds `<dir>/<name>` as a listening unix socket (any length of path), replacing a stale one.
/// The socket is mode 0600: only root may connect (its directory is root's alone as well).
pub fn bind_socket(dir: &std::path::Path, name: &str) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(dir.join(name));
    let d = std::fs::File::open(dir)?;
    let path = short_socket_path(&d, name);
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_bind_and_connect_under_very_long_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let long = tmp.path().join("d".repeat(100)).join("e".repeat(60));
        std::fs::create_dir_all(&long).unwrap();
        let l = bind_socket(&long, CONTROL_SOCKET).unwrap();
        assert!(long.join(CONTROL_SOCKET).exists());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(long.join(CONTROL_SOCKET))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let _c = connect_control(&long).unwrap();
        l.accept().unwrap();
    }
}
