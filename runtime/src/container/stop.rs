//! StopContainer: the image's stop signal (or SIGTERM), up to `timeout` seconds, then SIGKILL to
//! every process of the container.
//!
//! A CREATED container that was never started has no process: it is recorded EXITED as if its
//! init had been SIGKILLed before it ran (137), as stopping a created runc container does.
//!
//! Invariants: stopping an unknown or exited container succeeds (CRI idempotence); the call
//! returns only once the exit is recorded (or the shim is found gone, which records an exit).
//! A shim that does not answer a signal request within [`SIGNAL_TIMEOUT`] does not keep the
//! container alive: the daemon signals it through its cgroup itself (the stop signal to init,
//! then SIGKILL to every process, without asking that shim again), and once the cgroup is empty
//! and init is dead it records the exit itself if the shim has not (a hung shim never will). The
//! grace period counts from the call, so a hung shim does not lengthen it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crius_shim_api::Request;

use super::record::{Record, State};
use super::seams::CgroupAccess;
use super::{ContainerError, Containers, now_ns};
use crate::shim_client::ShimError;

/// How long to wait for init to die after SIGKILL before giving up.
const KILL_GRACE: Duration = Duration::from_secs(30);
/// How long the shim may take to answer a signal request (it answers in microseconds when well).
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(5);

impl Containers {
    /// CRI: StopContainer.
    pub async fn stop(self: &Arc<Self>, query: &str, timeout_seconds: i64) -> Result<(), ContainerError> {
        let Some(id) = self.resolve_off(query).await? else {
            return Ok(());
        };
        let _guard = self.locks.lock(&id).await;
        let r = match self.refreshed_off(&id).await {
            Ok(r) => r,
            Err(ContainerError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop_locked(r, timeout_seconds).await
    }

    /// Stops a container whose lock the caller holds.
    pub(crate) async fn stop_locked(
        self: &Arc<Self>,
        r: Record,
        timeout_seconds: i64,
    ) -> Result<(), ContainerError> {
        // UNKNOWN (recovery found the shim gone, init alive) is stopped like RUNNING.
        if !matches!(r.status.state, State::Running | State::Created | State::Unknown) {
            return Ok(());
        }
        if never_started(&r) {
            let id = r.id.clone();
            return self.blocking(move |c| c.record_stopped_unstarted(&id)).await;
        }
        let id = r.id.as_str();
        let started = Instant::now();
        let mut shim_answers = true;
        if timeout_seconds > 0 && r.status.state == State::Running {
            let signal = stop_signal(r.stop_signal.as_deref());
            match self.kill(&r, signal, false).await? {
                Signalled::ShimGone => return Ok(()),
                Signalled::ByCgroup => shim_answers = false,
                Signalled::ByShim => {}
            }
            let deadline = started + Duration::from_secs(timeout_seconds as u64);
            if self.wait_exit(&r, deadline, !shim_answers, signal).await? {
                return Ok(());
            }
            tracing::info!(
                id,
                timeout_seconds,
                "container ignored its stop signal; killing it"
            );
        }
        if shim_answers {
            match self.kill(&r, libc::SIGKILL, true).await? {
                Signalled::ShimGone => return Ok(()),
                Signalled::ByCgroup => shim_answers = false,
                Signalled::ByShim => {}
            }
        } else {
            let (cgroup, init) = (r.cgroup_path.clone(), r.status.pid);
            self.blocking(move |c| c.cgroups.signal(&cgroup, init, libc::SIGKILL, true))
                .await;
        }
        if self
            .wait_exit(&r, Instant::now() + KILL_GRACE, !shim_answers, libc::SIGKILL)
            .await?
        {
            return Ok(());
        }
        Err(ContainerError::Shim {
            id: id.into(),
            source: ShimError::Timeout(KILL_GRACE),
        })
    }

    /// Records the stop of a container that never ran (unless a start got in first).
    fn record_stopped_unstarted(&self, id: &str) -> Result<(), ContainerError> {
        let mut changed = false;
        let _order = self.events.order();
        let r = self.records.update::<ContainerError>(id, |s| {
            if s.state == State::Created && s.pid == 0 {
                let killed = crius_shim_api::ExitStatus {
                    exit_code: 128 + libc::SIGKILL,
                    finished_at: now_ns(),
                    oom_killed: false,
                };
                super::mark_exited(s, &killed);
                s.message = "stopped before it was started".into();
                changed = true;
            }
            Ok(())
        })?;
        if changed {
            self.events.send(&r.id, &r.sandbox_id, super::EventKind::Stopped);
        }
        Ok(())
    }

    /// Sends a signal through the shim, or through the cgroup when the shim does not answer.
    async fn kill(self: &Arc<Self>, r: &Record, signal: i32, all: bool) -> Result<Signalled, ContainerError> {
        match self
            .shim
            .request_within(
                &self.shim_dir(&r.id),
                Request::Kill { signal, all },
                SIGNAL_TIMEOUT,
            )
            .await
        {
            Ok(_) => Ok(Signalled::ByShim),
            Err(ShimError::Timeout(t)) => {
                tracing::warn!(
                    id = r.id,
                    signal,
                    "the shim did not answer a signal request within {t:?}; signalling through the cgroup"
                );
                let (cgroup, init) = (r.cgroup_path.clone(), r.status.pid);
                self.blocking(move |c| c.cgroups.signal(&cgroup, init, signal, all))
                    .await;
                Ok(Signalled::ByCgroup)
            }
            Err(ShimError::Unreachable { .. }) => {
                let r = r.clone();
                self.blocking(move |c| c.shim_gone(&r)).await?;
                Ok(Signalled::ShimGone)
            }
            Err(e) => Err(ContainerError::Shim {
                id: r.id.clone(),
                source: e,
            }),
        }
    }

    /// The shim died: kills whatever is left in the container's cgroup ourselves and records an
    /// unknown end (unless the shim recorded the exit before it went). Only through the cgroup:
    /// the recorded init pid may since belong to an unrelated process.
    fn shim_gone(&self, r: &Record) -> Result<(), ContainerError> {
        self.cgroups
            .signal(&r.cgroup_path, r.status.pid, libc::SIGKILL, true);
        if self.fold_exit(self.refreshed(&r.id)?)?.status.state == State::Exited {
            return Ok(());
        }
        let exit = crius_shim_api::ExitStatus {
            exit_code: 255,
            finished_at: now_ns(),
            oom_killed: false,
        };
        self.record_lost_exit(&r.id, &exit, "the container's shim is gone; exit status unknown")?;
        Ok(())
    }

    /// Polls for the exit until `deadline`; true once the record says EXITED. With
    /// `shim_hung`, a container whose cgroup is empty and whose init is dead counts as exited
    /// too: the exit is recorded here, as `signal` would have ended it (the shim cannot).
    async fn wait_exit(
        self: &Arc<Self>,
        r: &Record,
        deadline: Instant,
        shim_hung: bool,
        signal: i32,
    ) -> Result<bool, ContainerError> {
        let id = r.id.as_str();
        let mut pause = Duration::from_millis(5);
        loop {
            if self.refreshed_off(id).await?.status.state == State::Exited {
                return Ok(true);
            }
            if shim_hung {
                let (cgroup, init) = (r.cgroup_path.clone(), r.status.pid);
                if self
                    .blocking(move |c| dead(c.cgroups.as_ref(), &cgroup, init))
                    .await
                {
                    let id = id.to_string();
                    self.blocking(move |c| c.record_hung_shim_exit(&id, signal))
                        .await?;
                    return Ok(true);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Records the end of a container killed around its hung shim: 128 + SIGKILL when that was
    /// the signal (nothing else can have ended it after that), else unknown (255).
    fn record_hung_shim_exit(&self, id: &str, signal: i32) -> Result<(), ContainerError> {
        let exit = crius_shim_api::ExitStatus {
            exit_code: if signal == libc::SIGKILL {
                128 + signal
            } else {
                255
            },
            finished_at: now_ns(),
            oom_killed: false,
        };
        let msg = format!(
            "killed through its cgroup: the container's shim did not answer within {SIGNAL_TIMEOUT:?}"
        );
        self.record_lost_exit(id, &exit, &msg)?;
        Ok(())
    }
}

/// A CREATED container whose shim was never spawned (StartContainer spawns it).
pub(crate) fn never_started(r: &Record) -> bool {
    r.status.state == State::Created && r.status.pid == 0
}

/// How a signal reached the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signalled {
    ByShim,
    /// The shim did not answer in time; the daemon signalled the cgroup itself.
    ByCgroup,
    /// The shim is gone and an exit was recorded.
    ShimGone,
}

/// No process is left in the container's cgroup and `init` no longer runs there (gone, or a
/// zombie a hung shim cannot reap).
fn dead(cgroups: &dyn CgroupAccess, cgroup: &str, init: i32) -> bool {
    cgroups.pids(cgroup).is_empty() && !cgroups.runs_in(cgroup, init)
}

/// The image's `StopSignal` (`SIGQUIT`, `QUIT`, `3`), else SIGTERM.
pub fn stop_signal(name: Option<&str>) -> i32 {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return libc::SIGTERM;
    };
    if let Ok(n) = name.parse::<i32>() {
        return n;
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .unwrap_or(libc::SIGTERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signal_names() {
        assert_eq!(stop_signal(None), libc::SIGTERM);
        assert_eq!(stop_signal(Some("SIGQUIT")), libc::SIGQUIT);
        assert_eq!(stop_signal(Some("quit")), libc::SIGQUIT);
        assert_eq!(stop_signal(Some("9")), 9);
        assert_eq!(stop_signal(Some("SIGNOPE")), libc::SIGTERM);
    }
}
