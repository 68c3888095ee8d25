//! TEST-ONLY crash injection. `CRIUS_TEST_CRASH_AT=<step>` in the daemon's environment makes
//! [`point`] abort the whole process (`std::process::abort`, no unwinding, no clean-up) when a
//! create reaches the named step, so integration tests can prove that start-up recovery leaves
//! nothing behind after a crash between two steps. `CRIUS_TEST_DELAY_AT=<step>` makes [`point`]
//! sleep [`DELAY`] there instead, so a test can hold a create in progress (a client deadline
//! that passes mid-create); only steps that run on a blocking thread are delayed that way.
//! Production deployments never set either.
//!
//! Steps: `run-pod-sandbox:after-record`, `:after-namespaces`, `:after-cni`, `:after-cgroup` (the
//! last two once CNI ADD and the pod cgroup with its infra process, which run concurrently, are
//! both done);
//! `create-container:after-lease`, `:after-mount`, `:after-spec` (blocking thread);
//! `start-container:after-shim` (the shim built the container, the record is not updated yet);
//! `remove-container:teardown` (blocking thread: a background teardown after RemoveContainer
//! answered and its record's removal is durable, before any teardown step).
//!
//! Invariant: the variable is read once, at start-up ([`init`]); without it [`point`] is a no-op.

use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable naming the step to crash at (test-only).
pub const CRASH_ENV: &str = "CRIUS_TEST_CRASH_AT";

/// The environment variable naming the step to pause at (test-only).
pub const DELAY_ENV: &str = "CRIUS_TEST_DELAY_AT";
/// How long [`DELAY_ENV`]'s step sleeps.
pub const DELAY: Duration = Duration::from_millis(500);

static STEP: OnceLock<Option<String>> = OnceLock::new();
static DELAY_STEP: OnceLock<Option<String>> = OnceLock::new();

/// Reads [`CRASH_ENV`]; returns the armed step, if any (the daemon logs it loudly).
pub fn init() -> Option<&'static str> {
    STEP.get_or_init(|| std::env::var(CRASH_ENV).ok().filter(|s| !s.is_empty()))
        .as_deref()
}

/// Aborts the process if the test-only crash hook is armed for `step`; sleeps [`DELAY`] if the
/// delay hook is.
pub fn point(step: &str) {
    if init() == Some(step) {
        eprintln!("{CRASH_ENV}={step}: aborting the daemon (test-only crash hook)");
        std::process::abort();
    }
    let delayed = DELAY_STEP.get_or_init(|| std::env::var(DELAY_ENV).ok().filter(|s| !s.is_empty()));
    if delayed.as_deref() == Some(step) {
        std::thread::sleep(DELAY);
    }
}
