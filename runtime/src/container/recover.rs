//! Start-up recovery of containers (run by the daemon before the readiness gate opens), and the
//! removal of container state no record owns.
//!
//! Per record, each bounded by [`PER_CONTAINER`] and run concurrently: the image lease is taken
//! again if it is missing; an exit file is folded in (EXITED with its code and time); otherwise
//! the shim is asked for its state — alive ⇒ reconnected (CREATED/RUNNING kept, the exit watcher
//! re-armed, a vanished rootfs mount restored); shim gone and the container's init gone ⇒
//! EXITED, exit code 255, reason `Unknown`; shim gone but init still running in the container's
//! cgroup ⇒ UNKNOWN (StopContainer then kills it). A CREATED record without an init pid was
//! never started (StartContainer spawns the shim): with no shim answering it stays CREATED
//! (whatever an interrupted start left — a shim still building, a cgroup, runtime state — is
//! removed, so a later start begins afresh); a shim that answers was spawned by a start the
//! crash interrupted and is adopted as it is (its pid recorded; RUNNING if it already runs).
//!
//! Orphans (a crash between two create steps, or between two remove steps): shim directories
//! and bundles under `<state>/containers`, libcontainer state under `<state>/youki`, writable
//! layers under `<root>/containers`, the cgroups named in an orphan bundle, shim processes of an
//! orphan directory and image leases held by no record are removed.
//!
//! A record that does not decode (a newer crius's format, damage) is no orphan: its container
//! is not probed, marked, stopped or cleaned; its id counts as known, so its bundle, shim,
//! writable layer and image lease stay; the key and the decode error are logged.
//!
//! Invariants: one broken container is logged and marked (its `message` says why), never stops
//! start-up; nothing a record owns is removed, readable or not; only entries named like
//! container ids are touched.

use crate::spec::unescape_mountinfo;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crius_shim_api::{ExitStatus, ProcessStatus, Request, Response};

use super::record::{Record, State};
use super::{ContainerError, Containers, now_ns};

/// How long recovering one container may take before it is marked and skipped.
pub const PER_CONTAINER: Duration = Duration::from_secs(15);
/// How long a shim may take to answer `state` during recovery.
const PROBE: Duration = Duration::from_secs(5);

/// What recovery found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub containers: usize,
    /// Kept live: reconnected to its shim, or CREATED and not started yet.
    pub reconnected: usize,
    pub exited: usize,
    pub unknown: usize,
    pub failed: usize,
    /// Records that do not decode; their containers are left untouched.
    pub unreadable: usize,
    pub orphans_removed: usize,
}

/// What the shim of a live record answered.
enum Probe {
    Alive(ProcessStatus, i32),
    Exited(Option<ExitStatus>),
    Gone(String),
}

enum Outcome {
    Reconnected,
    Exited,
    Unknown,
    Untouched,
}

impl Containers {
    /// Reconciles every container record with the shims and the kernel, then removes orphans.
    pub async fn recover(self: &Arc<Self>) -> Recovered {
        let (records, unreadable) = match self.records.scan() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot list container records; skipping container recovery");
                return Recovered::default();
            }
        };
        for u in &unreadable {
            tracing::error!(
                id = %u.id,
                error = %u.error,
                listed = u.salvaged.is_some(),
                "container record cannot be read; the container is left untouched (shim, mounts, \
                 writable layer, cgroup and image lease kept)"
            );
        }
        let leased: HashSet<String> = match self.images.leased_containers() {
            Ok(l) => l.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list image leases");
                HashSet::new()
            }
        };
        let mut out = Recovered {
            containers: records.len(),
            unreadable: unreadable.len(),
            ..Default::default()
        };
        // Unreadable records own their state like any other: never orphans.
        let known: HashSet<String> = records
            .iter()
            .map(|r| r.id.clone())
            .chain(unreadable.iter().map(|u| u.id.clone()))
            .collect();
        let tasks = records.into_iter().map(|r| {
            let this = self.clone();
            let has_lease = leased.contains(&r.id);
            async move {
                let id = r.id.clone();
                let res = tokio::time::timeout(PER_CONTAINER, this.recover_one(r, has_lease)).await;
                (this, id, res)
            }
        });
        for (this, id, res) in futures_util::future::join_all(tasks).await {
            match res {
                Ok(Ok(Outcome::Reconnected)) => out.reconnected += 1,
                Ok(Ok(Outcome::Exited)) => out.exited += 1,
                Ok(Ok(Outcome::Unknown)) => out.unknown += 1,
                Ok(Ok(Outcome::Untouched)) => {}
                Ok(Err(e)) => {
                    out.failed += 1;
                    tracing::error!(id, error = %e, "cannot recover container");
                    this.mark(&id, &format!("recovery failed: {e}"));
                }
                Err(_) => {
                    out.failed += 1;
                    tracing::error!(id, timeout = ?PER_CONTAINER, "container recovery timed out");
                    this.mark(&id, "recovery timed out");
                }
            }
        }
        out.orphans_removed = self.remove_orphans(known, leased).await;
        tracing::info!(
            containers = out.containers,
            reconnected = out.reconnected,
            exited = out.exited,
            unknown = out.unknown,
            failed = out.failed,
            unreadable = out.unreadable,
            orphans = out.orphans_removed,
            "containers recovered"
        );
        out
    }

    fn mark(&self, id: &str, message: &str) {
        let r = self.records.update::<ContainerError>(id, |s| {
            s.message = message.into();
            Ok(())
        });
        if let Err(e) = r {
            tracing::error!(id, error = %e, "cannot mark container");
        }
    }

    /// One record: the blocking reads and writes run on the blocking pool, only the shim probe
    /// on the async runtime.
    async fn recover_one(self: &Arc<Self>, r: Record, has_lease: bool) -> Result<Outcome, ContainerError> {
        let r = self
            .blocking(move |c| {
                if !has_lease {
                    // A crash between the lease and the record, or a lost lease: take it again
                    // so image GC keeps the layers this container's rootfs stands on.
                    if let Err(e) = c.images.lease(&r.image_id, &r.id) {
                        tracing::warn!(id = %r.id, error = %e, "cannot take the image lease again");
                    }
                }
                c.fold_exit(r)
            })
            .await?;
        if !matches!(r.status.state, State::Running | State::Created | State::Unknown) {
            return Ok(Outcome::Untouched);
        }
        let probe =
            tokio::time::timeout(PROBE, self.shim.request(&self.shim_dir(&r.id), Request::State)).await;
        let probe = match probe {
            Ok(Ok(Response::State(st))) if st.status != ProcessStatus::Exited && st.exit.is_none() => {
                Probe::Alive(st.status, st.pid)
            }
            Ok(Ok(Response::State(st))) => Probe::Exited(st.exit),
            Ok(Ok(resp)) => Probe::Gone(format!("unexpected answer {resp:?}")),
            Ok(Err(e)) => Probe::Gone(e.to_string()),
            Err(_) => Probe::Gone(format!("no answer within {PROBE:?}")),
        };
        self.blocking(move |c| c.settle(r, probe)).await
    }

    /// Records what the probe of a live record found.
    fn settle(&self, r: Record, probe: Probe) -> Result<Outcome, ContainerError> {
        let id = r.id.clone();
        match probe {
            Probe::Alive(status, pid) => {
                if super::stop::never_started(&r) {
                    self.adopt_started_shim(&id, status, pid)?;
                } else if r.status.state == State::Unknown {
                    self.records.update::<ContainerError>(&id, |s| {
                        s.state = if status == ProcessStatus::Running {
                            State::Running
                        } else {
                            State::Created
                        };
                        s.message.clear();
                        Ok(())
                    })?;
                }
                self.ensure_rootfs(&r);
                self.watch_exit(&id);
                tracing::debug!(id, pid, "reconnected to the container's shim");
                Ok(Outcome::Reconnected)
            }
            Probe::Exited(exit) => {
                // The shim lingers after init exited; its exit file is the truth, else its answer.
                let r = self.fold_exit(self.refreshed(&id)?)?;
                if r.status.state != State::Exited {
                    let exit = exit.unwrap_or(ExitStatus {
                        exit_code: 255,
                        finished_at: now_ns(),
                        oom_killed: false,
                    });
                    self.record_lost_exit(&id, &exit, "")?;
                }
                Ok(Outcome::Exited)
            }
            Probe::Gone(_) if super::stop::never_started(&r) => {
                if let Some(e) = self.teardown_runtime_files(&id, Some(r.cgroup_path.clone()), false) {
                    tracing::warn!(id, error = %e, "cannot remove what an interrupted start left");
                }
                self.ensure_rootfs(&r);
                self.watch_exit(&id);
                Ok(Outcome::Reconnected)
            }
            Probe::Gone(why) => {
                if self.cgroups.runs_in(&r.cgroup_path, r.status.pid) {
                    tracing::warn!(
                        id,
                        pid = r.status.pid,
                        "shim is gone but the container still runs: {why}"
                    );
                    self.records.update::<ContainerError>(&id, |s| {
                        s.state = State::Unknown;
                        s.message = format!("the container's shim is gone ({why}); its processes still run");
                        Ok(())
                    })?;
                    return Ok(Outcome::Unknown);
                }
                tracing::warn!(id, "shim and container are gone without an exit file: {why}");
                let exit = ExitStatus {
                    exit_code: 255,
                    finished_at: now_ns(),
                    oom_killed: false,
                };
                self.record_lost_exit(
                    &id,
                    &exit,
                    "the container's shim exited without recording an exit status",
                )?;
                self.records.update::<ContainerError>(&id, |s| {
                    s.reason = "Unknown".into();
                    Ok(())
                })?;
                Ok(Outcome::Exited)
            }
        }
    }

    /// A CREATED record without a pid whose shim answers: a start spawned it and the daemon
    /// went down before recording it. Its pid is recorded; RUNNING if the start request had
    /// reached the shim (STARTED is published then).
    fn adopt_started_shim(&self, id: &str, status: ProcessStatus, pid: i32) -> Result<(), ContainerError> {
        let mut started = false;
        let _order = self.events.order();
        let r = self.records.update::<ContainerError>(id, |s| {
            s.pid = pid;
            if status == ProcessStatus::Running && s.state == State::Created {
                s.state = State::Running;
                s.started_at = now_ns();
                started = true;
            }
            Ok(())
        })?;
        if started {
            self.events.send(id, &r.sandbox_id, super::EventKind::Started);
        }
        Ok(())
    }

    /// Mounts the rootfs again if its mount vanished while the container is still recorded live.
    fn ensure_rootfs(&self, r: &Record) {
        let target = self.rootfs_dir(&r.id);
        if self.mounter.is_mounted(&target) {
            return;
        }
        tracing::warn!(id = %r.id, "rootfs mount is missing; mounting it again");
        let res = self
            .images
            .lease(&r.image_id, &r.id)
            .map_err(ContainerError::Image)
            .and_then(|lowers| self.mounter.mount(&lowers, &self.layer_dir(&r.id), &target, None));
        if let Err(e) = res {
            tracing::error!(id = %r.id, error = %e, "cannot restore the rootfs mount");
            self.mark(
                &r.id,
                &format!("rootfs mount is missing and could not be restored: {e}"),
            );
        }
    }

    /// Tears down container state that no record owns, through the one container teardown;
    /// returns how many containers' worth.
    async fn remove_orphans(self: &Arc<Self>, known: HashSet<String>, leased: HashSet<String>) -> usize {
        let orphans: HashSet<String> = self
            .blocking(move |c| {
                [
                    c.state.join("containers"),
                    c.youki_root(),
                    c.root.join("containers"),
                ]
                .iter()
                .flat_map(|dir| orphan_ids(dir, &known))
                .chain(leased.into_iter().filter(|id| !known.contains(id)))
                .collect()
            })
            .await;
        let tasks = orphans.iter().map(|id| async move {
            match tokio::time::timeout(PER_CONTAINER, self.teardown(id, None)).await {
                Ok(Ok(())) => tracing::info!(id, "removed orphaned container state"),
                Ok(Err(e)) => tracing::warn!(id, error = %e, "cannot remove all orphaned container state"),
                Err(_) => tracing::warn!(id, "removing orphaned container state timed out"),
            }
        });
        futures_util::future::join_all(tasks).await;
        orphans.len()
    }
}

/// Entries of `dir` named like container ids that no record owns.
fn orphan_ids(dir: &Path, known: &HashSet<String>) -> Vec<String> {
    let mut ids = crate::dir_names::id_names(dir);
    ids.retain(|n| !known.contains(n));
    ids
}

/// Whether `path` is a mount point in this mount namespace (`/proc/self/mountinfo`).
pub(crate) fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| unescape_mountinfo(m) == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_a_mount_point_and_a_fresh_dir_is_not() {
        assert!(is_mount_point(Path::new("/proc")));
        let d = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(d.path()));
    }

    #[test]
    fn only_unknown_container_ids_are_orphans() {
        let d = tempfile::tempdir().unwrap();
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        for n in [a.as_str(), b.as_str(), "not-an-id", "youki"] {
            std::fs::create_dir(d.path().join(n)).unwrap();
        }
        let known: HashSet<String> = [a.clone()].into();
        assert_eq!(orphan_ids(d.path(), &known), vec![b]);
    }
}
