//! What runs in a container's process right before its `execve`, for the init process and for
//! exec'd processes alike (libcontainer's executor hook).
//!
//! Invariants:
//! - The workload starts with every signal libc lets a program set (1–31 and SIGRTMIN–SIGRTMAX)
//!   at its default disposition and none blocked, as under runc. The shim is a Rust program,
//!   which ignores SIGPIPE, and an ignored signal survives `execve`: without the reset
//!   `yes | head` in a container would see EPIPE and complain instead of dying quietly of
//!   SIGPIPE. glibc refuses `sigaction` on the two signals it reserves (32 and 33), so those
//!   keep what the shim inherited.
//! - The reset comes before the exec'd process's seccomp filter is loaded, so the filter cannot
//!   refuse it; for the init process libcontainer loaded the filter earlier, and a filter that
//!   refuses `rt_sigaction` only leaves the inherited dispositions (errors are ignored).
//! - libcontainer 0.7 drops `linux.seccomp` for tenants, so the exec'd process loads the
//!   container's filter itself ([`WorkloadExecutor::seccomp`]).

use libcontainer::seccomp::initialize_seccomp;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::{LinuxSeccomp, Spec};

/// Resets the signal state, loads `seccomp` if any, then execs like the default executor.
#[derive(Clone, Default)]
pub struct WorkloadExecutor {
    /// The container's filter, for an exec'd process (`None` for the init process).
    pub seccomp: Option<LinuxSeccomp>,
}

impl Executor for WorkloadExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        reset_signals();
        if let Some(filter) = &self.seccomp
            && initialize_seccomp(filter).is_err()
        {
            // Without CAP_SYS_ADMIN (dropped by now) the kernel only accepts a filter from a
            // no-new-privileges process; the init process got the same filter earlier.
            // SAFETY: prctl with integer arguments only.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            initialize_seccomp(filter)
                .map_err(|e| ExecutorError::Other(format!("load seccomp filter: {e}")))?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// Every catchable signal libc accepts back to `SIG_DFL` (glibc's reserved 32 and 33 fail and
/// are left) and an empty signal mask, in this process only.
fn reset_signals() {
    let standard = 1..libc::SIGRTMIN();
    let realtime = libc::SIGRTMIN()..=libc::SIGRTMAX();
    // SAFETY: a zeroed sigaction is SIG_DFL with no flags and an empty mask; sigaction and
    // sigprocmask only change this process's signal state (it is about to exec).
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut dfl.sa_mask);
        for sig in standard.chain(realtime) {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}
