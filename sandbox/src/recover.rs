//! Start-up reconciliation of sandbox records with the kernel (run once by
//! [`SandboxManager::new`], before the daemon serves).
//!
//! Invariants: a READY sandbox whose pinned namespaces are gone (a reboot cleared `state`) or
//! whose infra process died is marked NOTREADY; namespace and pod directories under `state` that
//! no record owns are unpinned and removed; one unreadable or failing record never stops the
//! others or the daemon. A record still marked `creating` (the daemon died inside
//! RunPodSandbox) is torn down completely — CNI DEL (with the cached ADD result), namespaces,
//! files, cgroup — and its name freed, so the kubelet's retry succeeds. Network state of other
//! records is left alone: Stop/Remove still run CNI DEL from the record. A cached CNI attachment
//! of one of this daemon's pods (namespace under `state/ns`) that no record owns gets CNI DEL.
//! A record that does not decode is owned state all the same: its namespaces, pod files and
//! network are never treated as orphans, and its id and decode error are logged.

use std::collections::HashSet;
use std::path::Path;

use crate::error::SandboxError;
use crate::manager::SandboxManager;
use crate::record::SandboxState;
use crate::store::{self, Record};
use crate::{netns, pause, podfiles};

/// What recovery found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub sandboxes: usize,
    pub marked_not_ready: usize,
    /// Half-created sandboxes (crash inside RunPodSandbox) torn down.
    pub half_created_removed: usize,
    pub orphans_removed: usize,
    /// CNI attachments of this crius's pods that no record owns, deleted.
    pub networks_deleted: usize,
    /// Records that do not decode; their pods are left untouched.
    pub unreadable: usize,
}

impl SandboxManager {
    pub(crate) fn recover(&self) -> Result<Recovered, SandboxError> {
        let (mut records, unreadable) = store::scan(&self.db)?;
        for u in &unreadable {
            tracing::error!(
                sandbox = %u.id,
                error = %u.error,
                listed = u.listed.is_some(),
                "pod sandbox record cannot be read; the pod is left untouched (namespaces, files, \
                 cgroup, infra process and network kept)"
            );
        }
        let mut out = Recovered {
            unreadable: unreadable.len(),
            ..Default::default()
        };
        records.retain(|rec| {
            if !rec.status.creating {
                return true;
            }
            tracing::warn!(sandbox = %rec.meta.id, "RunPodSandbox did not finish before the daemon stopped; removing the half-created pod");
            match self.teardown(rec) {
                Ok(()) => {
                    out.half_created_removed += 1;
                    false
                }
                Err(e) => {
                    tracing::error!(sandbox = %rec.meta.id, error = %e, "cannot remove a half-created pod sandbox; it stays NOTREADY for RemovePodSandbox");
                    if let Err(e) = store::update(&self.db, &rec.meta.id, |s| s.creating = false) {
                        tracing::error!(sandbox = %rec.meta.id, error = %e, "cannot update sandbox status");
                    }
                    true
                }
            }
        });
        out.sandboxes = records.len();
        for rec in &records {
            let Some(why) = lost(rec) else { continue };
            tracing::warn!(sandbox = %rec.meta.id, reason = why, "pod sandbox is no longer ready");
            let alive = rec.status.pause.filter(pause::is_alive);
            match store::update(&self.db, &rec.meta.id, |s| {
                s.state = SandboxState::NotReady;
                s.pause = alive;
            }) {
                Ok(_) => out.marked_not_ready += 1,
                Err(e) => tracing::error!(sandbox = %rec.meta.id, error = %e, "cannot update sandbox status"),
            }
        }
        // Unreadable records own their state like any other: never orphans.
        let known: HashSet<&str> = records
            .iter()
            .map(|r| r.meta.id.as_str())
            .chain(unreadable.iter().map(|u| u.id.as_str()))
            .collect();
        for (dir, ns) in [
            (self.config.state_dir.join("ns"), true),
            (self.config.state_dir.join("pods"), false),
        ] {
            out.orphans_removed += remove_orphans(&dir, &known, ns);
        }
        out.networks_deleted = self.delete_orphan_networks(&known);
        tracing::info!(
            sandboxes = out.sandboxes,
            networks = out.networks_deleted,
            not_ready = out.marked_not_ready,
            orphans = out.orphans_removed,
            half_created = out.half_created_removed,
            unreadable = out.unreadable,
            "pod sandboxes recovered"
        );
        Ok(out)
    }
}

impl SandboxManager {
    /// CNI DEL for cached attachments of pods that no record owns (only entries whose namespace
    /// lived under this daemon's `state/ns`, so other runtimes' pods in a shared cache are never
    /// touched).
    fn delete_orphan_networks(&self, known: &HashSet<&str>) -> usize {
        let ns_root = self.config.state_dir.join("ns");
        let mut deleted = 0;
        for e in crate::cni::cache::entries_below(&self.cni.cache_dir, &ns_root) {
            if known.contains(e.attachment.container_id.as_str()) {
                continue;
            }
            let net = match crate::cni::parse(&e.network, &e.path) {
                Ok(n) => n,
                Err(err) => {
                    tracing::warn!(entry = %e.path.display(), error = %err, "unreadable CNI cache entry");
                    continue;
                }
            };
            match self.cni.del(&net, &e.attachment, e.result.as_ref()) {
                Ok(()) => {
                    tracing::info!(sandbox = %e.attachment.container_id, network = %net.name, "deleted an orphaned pod network");
                    deleted += 1;
                }
                Err(err) => {
                    tracing::warn!(sandbox = %e.attachment.container_id, error = %err, "CNI DEL of an orphaned pod network failed")
                }
            }
        }
        deleted
    }
}

/// Why a READY sandbox cannot be READY any more, if so.
fn lost(rec: &Record) -> Option<&'static str> {
    if rec.status.state != SandboxState::Ready {
        return None;
    }
    let ns = &rec.meta.namespaces;
    if ns.paths().any(|p| !netns::is_pinned(p)) {
        return Some("its pinned namespaces are gone");
    }
    if rec.meta.pid_namespace && !rec.status.pause.as_ref().is_some_and(pause::is_alive) {
        return Some("its infra process exited");
    }
    None
}

fn remove_orphans(dir: &Path, known: &HashSet<&str>, namespaces: bool) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if known.contains(name.as_str()) || cri_api::validate::object_id("sandbox id", &name).is_err() {
            continue;
        }
        let path = entry.path();
        let r = if namespaces {
            netns::unpin(&path).map_err(SandboxError::from)
        } else {
            podfiles::remove(&path).map_err(SandboxError::from)
        };
        match r {
            Ok(()) => removed += 1,
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove orphaned pod state"),
        }
    }
    removed
}
