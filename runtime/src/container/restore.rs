//! CreateContainer from a checkpoint archive: CRI-O's convention, the request's image is the
//! absolute path of an archive that CheckpointContainer wrote (`checkpoint_archive.rs`).
//!
//! ```text
//! archive --extract (capped, no escapes)--> <layer dir>/restore/   (0700)
//!         --config.dump--> the checkpointed container's image (must be present locally)
//! rootfs mounted as usual --rootfs-diff.tar, deleted.files--> the writable layer
//! record CREATED with `restored_from`
//! ```
//!
//! What comes from where, as in CRI-O: the new container's metadata, labels, annotations,
//! mounts, devices, resources, security context and log path are the request's; its image is
//! the checkpointed one (`config.dump`); its command, working dir and environment are the
//! checkpointed process's (`spec.dump`) unless the request sets them.
//!
//! Invariants: the extraction dir lives in the writable layer's dir, so the one container
//! teardown removes it with the layer (a failed create, RemoveContainer, recovery of orphans).
//! StartContainer of such a container restores the checkpointed processes (the shim runs
//! `criu restore`, see the shim's `restore`), never the spec's process in their place.

use std::path::{Path, PathBuf};

use cri_api::v1::{ContainerConfig, ImageSpec, KeyValue};

use super::checkpoint::CheckpointError;
use super::record::Record;
use super::restore_archive::{self as archive, Extracted, Limits};
use super::{ContainerError, Containers, io_err};

/// The extraction dir's name in the container's layer dir (beside `upper` and `work`).
pub(super) const RESTORE_DIR: &str = "restore";

/// A create from an archive, extracted.
pub(super) struct Restore {
    pub archive: PathBuf,
    pub extracted: Extracted,
}

impl Containers {
    /// When `config` names a checkpoint archive as its image: extracts it into the container's
    /// layer dir and rewrites `config` to the checkpointed container's image and process.
    /// `None` for an ordinary image reference. Runs on the blocking pool.
    pub(super) fn extract_checkpoint(
        &self,
        id: &str,
        config: &mut ContainerConfig,
    ) -> Result<Option<Restore>, ContainerError> {
        let image = config
            .image
            .as_ref()
            .map(|i| i.image.as_str())
            .unwrap_or_default();
        if !archive::is_archive_ref(image) {
            return Ok(None);
        }
        let path = PathBuf::from(image);
        let layer = self.layer_dir(id);
        crate::private::create_dir(&layer).map_err(io_err("create", &layer))?;
        let extracted = archive::extract(&path, &layer.join(RESTORE_DIR), &Limits::default())
            .map_err(CheckpointError::from)?;
        let candidates = extracted.config.image_candidates();
        // A name the store cannot parse is just not present; the next one may be.
        let found = candidates
            .iter()
            .find(|c| matches!(self.images.get(c), Ok(Some(_))))
            .map(|c| c.to_string());
        let Some(found) = found else {
            return Err(CheckpointError::RestoreImage {
                archive: path.display().to_string(),
                images: candidates.join(", "),
            }
            .into());
        };
        restored_config(config, &extracted, found);
        tracing::info!(id, archive = %path.display(), image = ?config.image, "creating a container from a checkpoint");
        Ok(Some(Restore {
            archive: path,
            extracted,
        }))
    }

    /// Applies the archive's writable-layer changes to the mounted `rootfs`.
    pub(super) fn apply_checkpoint_rootfs(&self, r: &Restore, rootfs: &Path) -> Result<(), ContainerError> {
        archive::apply_rootfs_changes(&r.archive, &r.extracted, rootfs, &Limits::default())
            .map_err(|e| CheckpointError::from(e).into())
    }
}

/// StartContainer of a container created from a checkpoint: the shim restores its processes
/// with CRIU, so a host where CRIU cannot run, an external runtime's container or one with a
/// terminal is refused at once (FailedPrecondition, with the reason) before a shim is
/// spawned; the start then fails as any start does (EXITED, `StartError`).
pub(super) async fn check_start(r: &Record) -> Result<(), ContainerError> {
    if r.restored_from.is_none() {
        return Ok(());
    }
    let unsupported = |reason: String| {
        Err(CheckpointError::RestoreUnavailable {
            id: r.id.clone(),
            reason,
        }
        .into())
    };
    // The shim restores with CRIU and libcontainer's state; an external runtime would not know
    // the container, and a terminal's pty cannot be handed over.
    if let Some(rt) = &r.runtime {
        return unsupported(format!(
            "restoring is done by the embedded runtime, not runtime handler {}",
            rt.handler
        ));
    }
    if r.config.tty {
        return unsupported("a container with a terminal cannot be restored".into());
    }
    match super::criu::available().await {
        Ok(_) => Ok(()),
        Err(reason) => unsupported(reason),
    }
}

/// The request with the checkpointed image, and the checkpointed process where the request
/// sets none.
fn restored_config(config: &mut ContainerConfig, x: &Extracted, image: String) {
    config.image = Some(ImageSpec {
        image,
        ..config.image.take().unwrap_or_default()
    });
    let Some(p) = x.spec.process() else {
        return;
    };
    if config.command.is_empty() && config.args.is_empty() {
        config.command = p.args().clone().unwrap_or_default();
    }
    if config.working_dir.is_empty() {
        config.working_dir = p.cwd().display().to_string();
    }
    if config.envs.is_empty() {
        config.envs = p
            .env()
            .iter()
            .flatten()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| KeyValue {
                key: k.into(),
                value: v.into(),
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_keeps_its_own_process_and_takes_the_checkpointed_one_otherwise() {
        let spec: oci_spec::runtime::Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["/bin/count"],"cwd":"/work","env":["A=1","B=x=y"]},"root":{"path":"rootfs"}}"#,
        )
        .unwrap();
        let x = Extracted {
            dir: PathBuf::new(),
            config: Default::default(),
            spec,
            deleted: Vec::new(),
        };
        let mut c = ContainerConfig {
            image: Some(ImageSpec {
                image: "/ckpt.tar".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        restored_config(&mut c, &x, "busybox".into());
        assert_eq!(c.image.as_ref().unwrap().image, "busybox");
        assert_eq!(c.command, vec!["/bin/count"]);
        assert_eq!(c.working_dir, "/work");
        assert_eq!(c.envs[1].key, "B");
        assert_eq!(c.envs[1].value, "x=y");

        let mut own = ContainerConfig {
            args: vec!["sleep".into()],
            working_dir: "/".into(),
            ..Default::default()
        };
        restored_config(&mut own, &x, "busybox".into());
        assert!(own.command.is_empty());
        assert_eq!(own.working_dir, "/");
    }
}
