//! Process-wide settings of the shim: its oom_score_adj after libcontainer changed it, the
//! child-subreaper bit, the SIGCHLD signalfd, fd flags.
//!
//! Invariant: none of these fail the shim on EACCES/EPERM — root here lacks CAP_SYS_RESOURCE,
//! so a lower oom_score_adj is clamped to what the kernel allows instead of failing.

use std::os::fd::{AsFd, AsRawFd};

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

const OOM_SCORE_ADJ: &str = "/proc/self/oom_score_adj";

pub fn read_oom_score_adj() -> Option<i32> {
    std::fs::read_to_string(OOM_SCORE_ADJ).ok()?.trim().parse().ok()
}

/// libcontainer writes the container's oom_score_adj into its caller. Put ours back (the value
/// from before the build); when the kernel refuses the lower value, keep the closest it allows.
pub fn after_libcontainer(before: Option<i32>) {
    let Some(want) = before else { return };
    if read_oom_score_adj() == Some(want) {
        return;
    }
    if let Err(e) = std::fs::write(OOM_SCORE_ADJ, want.to_string()) {
        note!(
            "crius-shim: oom_score_adj stays at {:?} (wanted {want}): {e}",
            read_oom_score_adj()
        );
    }
}

/// Names this process `crius-shim` in `ps` and `/proc/<pid>/comm`: exec'ing `/proc/self/exe`
/// (the monitor hand-over) would otherwise leave it called `exe`.
pub fn name_process() {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"crius-shim".as_ptr(), 0, 0, 0) };
}

/// Orphaned descendants of the container (host PID namespace) are re-parented to the shim.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        note!(
            "crius-shim: PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Blocks SIGCHLD and returns a non-blocking signalfd for it. Call only after libcontainer has
/// created the container: the mask is inherited by children.
pub fn sigchld_fd() -> nix::Result<SignalFd> {
    become_subreaper();
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

pub fn set_nonblocking(fd: &impl AsFd) -> nix::Result<()> {
    let raw = fd.as_fd().as_raw_fd();
    let flags = OFlag::from_bits_truncate(fcntl(raw, FcntlArg::F_GETFL)?);
    fcntl(raw, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

pub fn set_cloexec(fd: &impl AsFd, on: bool) -> nix::Result<()> {
    let flag = if on { FdFlag::FD_CLOEXEC } else { FdFlag::empty() };
    fcntl(fd.as_fd().as_raw_fd(), FcntlArg::F_SETFD(flag))?;
    Ok(())
}
