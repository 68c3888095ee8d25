//! The one container teardown, shared by RemoveContainer (after its stop), the rollback of a
//! failed CreateContainer and recovery's removal of state no record owns: shim, processes,
//! cgroup, libcontainer state, rootfs mount, bundle, writable layer, image lease.
//!
//! Invariants: every step tolerates having been done already and runs even when an earlier one
//! failed — except that nothing under a rootfs that is still mounted is removed, nor its image
//! lease released — so a teardown interrupted anywhere (a crash, a busy mount) is simply run again; the
//! first failure is returned and the caller keeps the record for that retry; only the
//! container's own directories and cgroup are touched (ids are validated hex, the cgroup comes
//! from the record or the container's own spec).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crius_shim_api::Request;

use super::{ContainerError, Containers};
use crate::shim_client::ShimError;

/// How long a shim may take to shut down (under systemd it deletes the container through
/// libcontainer).
const SHUTDOWN: Duration = Duration::from_secs(10);
/// How long killed processes may take to leave the container's cgroup.
const CGROUP_DRAIN: Duration = Duration::from_secs(2);

impl Containers {
    /// Tears down everything container `id` may own except its record. `cgroup` is its cgroupfs
    /// path when known; otherwise it is read from the bundle's `config.json`, if any.
    pub(crate) async fn teardown(
        self: &Arc<Self>,
        id: &str,
        cgroup: Option<String>,
    ) -> Result<(), ContainerError> {
        let shim_done = self.shutdown_shim(id).await;
        let id = id.to_string();
        self.blocking(move |c| c.teardown_files(&id, cgroup, shim_done))
            .await
    }

    /// The runtime half of [`Containers::teardown`], for a start that failed: the shim, the
    /// container's processes and cgroup, the runtime's state. The rootfs, bundle, writable layer
    /// and lease stay for RemoveContainer (which runs the whole teardown again).
    pub(crate) async fn teardown_runtime(
        self: &Arc<Self>,
        id: &str,
        cgroup: String,
    ) -> Result<(), ContainerError> {
        let shim_done = self.shutdown_shim(id).await;
        let id = id.to_string();
        self.blocking(move |c| {
            c.teardown_runtime_files(&id, Some(cgroup), shim_done)
                .map_or(Ok(()), Err)
        })
        .await
    }

    /// Asks the shim, if it has a control socket, to shut down; true when it answered.
    async fn shutdown_shim(self: &Arc<Self>, id: &str) -> bool {
        let shim_dir = self.shim_dir(id);
        let socket = shim_dir.join(crius_shim_api::CONTROL_SOCKET);
        if !self.blocking(move |_| socket.exists()).await {
            return false;
        }
        match tokio::time::timeout(SHUTDOWN, self.shim.request(&shim_dir, Request::Shutdown)).await {
            Ok(Ok(_)) => true,
            Ok(Err(ShimError::Unreachable { .. })) => false,
            Ok(Err(e)) => {
                tracing::warn!(id, error = %e, "shim shutdown failed; killing it");
                false
            }
            Err(_) => {
                tracing::warn!(id, timeout = ?SHUTDOWN, "shim did not shut down in time; killing it");
                false
            }
        }
    }

    /// The blocking runtime half: a shim that did not answer (`!shim_done`) is killed, then the
    /// runtime's state dirs and the cgroup go. Every step runs; the first failure is returned.
    pub(crate) fn teardown_runtime_files(
        &self,
        id: &str,
        cgroup: Option<String>,
        shim_done: bool,
    ) -> Option<ContainerError> {
        let bundle = self.bundle_dir(id);
        let mut first: Option<ContainerError> = None;
        let mut note = |step: &'static str, r: Result<(), ContainerError>| {
            if let Err(e) = r {
                tracing::warn!(id, step, error = %e, "container teardown step failed");
                first.get_or_insert(e);
            }
        };
        if !shim_done {
            for pid in self.shim.kill_hung(&bundle) {
                tracing::info!(id, pid, "killed the container's shim");
            }
        }
        // libcontainer's (or the handler's runtime's) state dir, whether or not a shim answered:
        // a shim deletes it only for a systemd-driven container or one with poststop hooks (see
        // `Request::Shutdown`), and removing it twice is fine.
        note("libcontainer state", remove_dir(&self.youki_root().join(id)));
        for root in self.handlers.roots() {
            note("runtime state", remove_dir(&root.join(id)));
        }
        if let Some(cgroup) = cgroup.or_else(|| bundle_cgroup(&bundle.join("config.json")))
            && !self.cgroups.kill_and_remove(&cgroup, CGROUP_DRAIN)
        {
            note(
                "cgroup",
                Err(ContainerError::Invalid(format!(
                    "container cgroup {cgroup} still has processes after SIGKILL"
                ))),
            );
        }
        first
    }

    /// The blocking half of [`Containers::teardown`], after the shim answered (`shim_done`)
    /// or was found gone or hung.
    fn teardown_files(
        &self,
        id: &str,
        cgroup: Option<String>,
        shim_done: bool,
    ) -> Result<(), ContainerError> {
        let bundle = self.bundle_dir(id);
        let mut first = self.teardown_runtime_files(id, cgroup, shim_done);
        let mut note = |step: &'static str, r: Result<(), ContainerError>| {
            if let Err(e) = r {
                tracing::warn!(id, step, error = %e, "container teardown step failed");
                first.get_or_insert(e);
            }
        };
        if let Err(e) = self.mounter.unmount(&self.rootfs_dir(id)) {
            // Still mounted: removing the bundle would walk into the container's filesystem,
            // removing the writable layer would pull the overlay's upper dir from under it, and
            // releasing the lease would let the image's layers go while they are in use. All of
            // that waits for the retry.
            note("rootfs mount", Err(e));
            return first.map_or(Ok(()), Err);
        }
        if let Err(e) = super::mount_idmap::unstage(&bundle) {
            // A staging mount is a volume's host path: the bundle waits for the retry.
            note("idmapped mounts", Err(e));
            return first.map_or(Ok(()), Err);
        }
        note("bundle", remove_dir(&bundle));
        note("writable layer", remove_dir(&self.layer_dir(id)));
        note(
            "image lease",
            self.images.release(id).map_err(ContainerError::Image),
        );
        first.map_or(Ok(()), Err)
    }
}

fn remove_dir(d: &Path) -> Result<(), ContainerError> {
    match std::fs::remove_dir_all(d) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(super::io_err("remove", d)(e)),
    }
}

/// The cgroupfs path of an OCI bundle's `linux.cgroupsPath`: as written (cgroupfs driver), or
/// the scope `<slice path>/<prefix>-<name>.scope` that `<slice>:<prefix>:<name>` names (systemd).
pub(super) fn bundle_cgroup(config: &Path) -> Option<String> {
    let body = std::fs::read(config).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let path = v.pointer("/linux/cgroupsPath")?.as_str()?;
    if path.starts_with('/') {
        return Some(path.to_string());
    }
    let mut parts = path.splitn(3, ':');
    let (slice, prefix, name) = (parts.next()?, parts.next()?, parts.next()?);
    let dir = crius_sandbox::slice::expand(slice).ok()?;
    Some(
        crius_sandbox::slice::scope_path(&dir, prefix, name)
            .to_string_lossy()
            .into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_cgroups_of_both_drivers() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.json");
        for (written, expected) in [
            ("/crius/p/c", "/crius/p/c"),
            (
                "kubepods-pod1.slice:crius:c1",
                "/kubepods.slice/kubepods-pod1.slice/crius-c1.scope",
            ),
        ] {
            std::fs::write(&f, format!(r#"{{"linux":{{"cgroupsPath":"{written}"}}}}"#)).unwrap();
            assert_eq!(bundle_cgroup(&f).as_deref(), Some(expected));
        }
        std::fs::write(&f, r#"{"linux":{"cgroupsPath":"bad/slice:x:y"}}"#).unwrap();
        assert_eq!(bundle_cgroup(&f), None);
    }

    #[test]
    fn bundle_cgroup_is_read_from_the_spec() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("config.json");
        std::fs::write(&p, r#"{"linux":{"cgroupsPath":"/crius/pod/ctr"}}"#).unwrap();
        assert_eq!(bundle_cgroup(&p).as_deref(), Some("/crius/pod/ctr"));
        assert_eq!(bundle_cgroup(&d.path().join("missing")), None);
    }
}
