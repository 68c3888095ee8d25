//! RemoveContainer: stop if needed, shim teardown (libcontainer state and the container's
//! cgroup), unmount the rootfs, delete its directories, release the image lease, drop the record.
//!
//! Invariants: removing an unknown container succeeds; every step tolerates having been done
//! already, so a remove that failed half-way can simply be retried.

use std::sync::Arc;

use crius_shim_api::Request;

use super::{ContainerError, Containers, cgroupfs, rootfs};
use crate::shim_client::ShimError;

impl Containers {
    /// CRI: RemoveContainer.
    pub async fn remove(self: &Arc<Self>, id: &str) -> Result<(), ContainerError> {
        let lock = self.lock(id);
        let _guard = lock.lock().await;
        let r = match self.refreshed_off(id).await {
            Ok(r) => r,
            Err(ContainerError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop_locked(r.clone(), 0).await?;
        let shim_gone = match self.shim.request(&self.shim_dir(id), Request::Shutdown).await {
            Ok(_) => false,
            Err(ShimError::Unreachable { .. }) => true,
            Err(e) => {
                return Err(ContainerError::Shim {
                    id: id.into(),
                    source: e,
                });
            }
        };
        self.blocking(move |c| c.remove_files(&r, shim_gone)).await?;
        drop(_guard);
        self.forget_lock(id);
        Ok(())
    }

    /// The blocking half of a remove, after the shim is gone: cgroup, rootfs mount,
    /// directories, image lease, record.
    fn remove_files(&self, r: &super::Record, shim_gone: bool) -> Result<(), ContainerError> {
        let id = r.id.as_str();
        if shim_gone {
            // No shim: delete what libcontainer would have.
            let _ = std::fs::remove_dir_all(self.youki_root().join(id));
        }
        cgroupfs::remove(&r.cgroup_path);
        rootfs::unmount(&self.rootfs_dir(id))?;
        for d in [self.bundle_dir(id), self.layer_dir(id)] {
            match std::fs::remove_dir_all(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ContainerError::Io {
                        what: "remove",
                        path: d,
                        source,
                    });
                }
            }
        }
        self.images.release(id).map_err(ContainerError::Image)?;
        self.records.remove(r)?;
        self.events.send(id, &r.sandbox_id, super::EventKind::Deleted);
        Ok(())
    }
}
