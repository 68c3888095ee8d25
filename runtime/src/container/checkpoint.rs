//! CheckpointContainer: a running container's processes are dumped with CRIU while they keep
//! running (kubelet's forensic checkpoint), and the dump, the container's config and its
//! writable layer's changes become one archive at the client's location
//! (`checkpoint_archive.rs` has the layout).
//!
//! ```text
//! RUNNING --criu dump (leave running)--> images in <root>/containers/<id>/checkpoint.work/checkpoint/
//!         --config, spec, rootfs diff--> <location>   (the work dir is always removed)
//! ```
//!
//! Invariants: only a RUNNING container is checkpointed (FailedPrecondition otherwise); a host
//! without a usable CRIU answers FailedPrecondition with the reason, checked once (`criu.rs`);
//! the dump runs in a fresh `crius-shim checkpoint-helper` process, never in the daemon; the
//! whole call is bounded by its timeout (DeadlineExceeded, nothing left at the location); the
//! container's lock is held throughout, so it is not stopped or removed under the dump.
//!
//! Restoring from an archive (CreateContainer with the archive's path as image) is `restore.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crius_shim_api::CheckpointRequest;

use super::checkpoint_archive::{self as archive, ArchiveError, ConfigDump};
use super::record::{Record, State};
use super::{ContainerError, Containers, now_ns};
use crate::shim_client::CheckpointOutcome;

/// The bound when the client gives none (CRI: `timeout` 0). Kubelet's own default for the
/// call is its runtime request timeout; a CRIU dump of a large container can take minutes.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// The scratch dir beside the writable layer: CRIU's images (as large as the container's
/// memory, so on the root's disk, not in the state tmpfs), then the archive's other files.
/// Removed after each call; a leftover from a crash goes with the next call or the container.
const WORK_DIR: &str = "checkpoint.work";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint location {location:?}: {reason}")]
    Location { location: String, reason: String },
    #[error("cannot checkpoint container {id}: {reason}")]
    Unavailable { id: String, reason: String },
    #[error("cannot restore the processes of container {id}: {reason}")]
    RestoreUnavailable { id: String, reason: String },
    #[error("checkpoint of container {id} did not finish within {seconds}s")]
    Deadline { id: String, seconds: u64 },
    #[error("checkpoint of container {id} failed: {message}")]
    Failed { id: String, message: String },
    #[error("checkpoint archive of container {id}: {source}")]
    Archive {
        id: String,
        #[source]
        source: ArchiveError,
    },
    /// The archive is refused (InvalidArgument) or could not be extracted (Internal).
    #[error(transparent)]
    Restore(#[from] super::restore_archive::RestoreError),
    #[error(
        "checkpoint archive {archive}: the checkpointed container's image is not present locally \
         (tried {images}); pull it first"
    )]
    RestoreImage { archive: String, images: String },
}

impl CheckpointError {
    /// The client's request cannot be served on this host or in this state (FailedPrecondition).
    pub fn is_precondition(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::RestoreUnavailable { .. } | Self::RestoreImage { .. }
        )
    }
    /// The call's own timeout passed (DeadlineExceeded).
    pub fn is_deadline(&self) -> bool {
        matches!(
            self,
            Self::Deadline { .. }
                | Self::Archive {
                    source: ArchiveError::Deadline,
                    ..
                }
        )
    }
    /// The request itself is bad (InvalidArgument).
    pub fn is_invalid(&self) -> bool {
        matches!(
            self,
            Self::Location { .. } | Self::Restore(super::restore_archive::RestoreError::Invalid { .. })
        )
    }
}

impl Containers {
    /// CRI: CheckpointContainer.
    pub async fn checkpoint(
        self: &Arc<Self>,
        query: &str,
        location: &str,
        timeout_seconds: i64,
    ) -> Result<(), ContainerError> {
        let started = Instant::now();
        let timeout = match timeout_seconds {
            t if t > 0 => Duration::from_secs(t as u64),
            _ => DEFAULT_TIMEOUT,
        };
        let deadline = started + timeout;
        let location = checked_location(location)?;
        let id = self.find(query).await?;
        let _guard = self.locks.lock(&id).await;
        let r = self.refreshed_off(&id).await?;
        super::require_state(&r, &[State::Running], "checkpoint")?;
        // The request's own arguments are checked before the host's CRIU.
        let (work, loc) = (self.layer_dir(&id).join(WORK_DIR), location.clone());
        self.blocking(move |_| prepare(&work, &loc)).await?;
        let result = match super::criu::available().await {
            Ok(criu) => self.dump_and_archive(&r, &criu, &location, deadline).await,
            Err(reason) => Err(CheckpointError::Unavailable {
                id: id.clone(),
                reason,
            }
            .into()),
        };
        let work = self.layer_dir(&id).join(WORK_DIR);
        self.blocking(move |_| std::fs::remove_dir_all(&work)).await.ok();
        result.map_err(|e| match e {
            ContainerError::Checkpoint(CheckpointError::Archive {
                source: ArchiveError::Deadline,
                ..
            }) => CheckpointError::Deadline {
                id: id.clone(),
                seconds: timeout.as_secs(),
            }
            .into(),
            other => other,
        })?;
        tracing::info!(id, location = %location.display(), elapsed = ?started.elapsed(), "container checkpointed");
        Ok(())
    }

    async fn dump_and_archive(
        self: &Arc<Self>,
        r: &Record,
        criu: &super::criu::Criu,
        location: &Path,
        deadline: Instant,
    ) -> Result<(), ContainerError> {
        let id = r.id.clone();
        let work = self.layer_dir(&id).join(WORK_DIR);
        let req = CheckpointRequest {
            version: crius_shim_api::PROTOCOL_VERSION,
            id: id.clone(),
            youki_root: self.youki_root(),
            image_dir: work.join(archive::CHECKPOINT_DIR),
            runtime: r.runtime.clone(),
            systemd_cgroup: r.systemd_cgroup,
        };
        let path_env = helper_path(&criu.path);
        let outcome = self
            .exec
            .checkpoint(&req, &path_env, deadline)
            .await
            .map_err(ContainerError::shim(&id))?;
        match outcome {
            CheckpointOutcome::Done => {}
            CheckpointOutcome::Failed(message) => return Err(CheckpointError::Failed { id, message }.into()),
            // Reported as the call's deadline by `checkpoint`.
            CheckpointOutcome::TimedOut => {
                return Err(CheckpointError::Archive {
                    id,
                    source: ArchiveError::Deadline,
                }
                .into());
            }
        }
        let config = ConfigDump {
            id: id.clone(),
            name: r.name().to_string(),
            rootfs_image: r.image_name.clone(),
            rootfs_image_ref: r.image_id.clone(),
            rootfs_image_name: r.image_name.clone(),
            runtime: r
                .runtime
                .as_ref()
                .map(|rt| rt.path.display().to_string())
                .unwrap_or_else(|| "crius".into()),
            created_time: archive::rfc3339(r.created_at),
            checkpointed_time: archive::rfc3339(now_ns()),
        };
        let upper = self.layer_dir(&id).join("upper");
        let spec = self.bundle_dir(&id).join("config.json");
        let (location, image_id) = (location.to_path_buf(), r.image_id.clone());
        self.blocking(move |c| {
            let lowers = c.images.layer_dirs(&image_id).unwrap_or_else(|e| {
                // Without the image's layers only what an opaque dir hides goes unlisted.
                tracing::warn!(id, "checkpoint: image layers unknown: {e}");
                Vec::new()
            });
            let parts = archive::Parts {
                work: &work,
                config: &config,
                spec: &spec,
                upper: &upper,
                lowers: &lowers,
            };
            archive::write(&parts, &location, deadline)
                .map_err(|source| CheckpointError::Archive { id, source }.into())
        })
        .await
    }
}

/// The location must be an absolute path whose parent is a directory and that is not one
/// itself; the archive file is created there (replacing a file of that name).
fn checked_location(location: &str) -> Result<PathBuf, ContainerError> {
    let bad = |reason: &str| -> ContainerError {
        CheckpointError::Location {
            location: location.into(),
            reason: reason.into(),
        }
        .into()
    };
    let p = Path::new(location);
    if location.is_empty() || !p.is_absolute() {
        return Err(bad("must be an absolute path"));
    }
    if p.components().any(|c| c == std::path::Component::ParentDir) || p.file_name().is_none() {
        return Err(bad("must name a file, without `..`"));
    }
    Ok(p.to_path_buf())
}

/// Makes the empty work dir (0700, with CRIU's image dir) and checks the location's directory.
fn prepare(work: &Path, location: &Path) -> Result<(), ContainerError> {
    use std::os::unix::fs::DirBuilderExt;
    let parent = location.parent().unwrap_or(Path::new("/"));
    let bad = |reason: String| -> ContainerError {
        CheckpointError::Location {
            location: location.display().to_string(),
            reason,
        }
        .into()
    };
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(bad(format!("{} is not a directory", parent.display()))),
        Err(e) => return Err(bad(format!("{}: {e}", parent.display()))),
    }
    if std::fs::symlink_metadata(location).is_ok_and(|m| m.is_dir()) {
        return Err(bad("is a directory".into()));
    }
    match std::fs::remove_dir_all(work) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(super::io_err("remove", work)(e));
        }
        _ => {}
    }
    let mut b = std::fs::DirBuilder::new();
    b.mode(0o700).recursive(true);
    let images = work.join(archive::CHECKPOINT_DIR);
    b.create(&images).map_err(super::io_err("create", &images))
}

/// The helper's `PATH`: the checked `criu`'s dir first (libcontainer runs `criu` by name).
fn helper_path(criu: &Path) -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> = criu.parent().map(Path::to_path_buf).into_iter().collect();
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_must_be_absolute_file_paths() {
        assert!(checked_location("/var/lib/kubelet/checkpoints/c.tar").is_ok());
        for bad in ["", "rel/c.tar", "/a/../c.tar", "/"] {
            let e = checked_location(bad).unwrap_err();
            assert!(
                matches!(&e, ContainerError::Checkpoint(c) if c.is_invalid()),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn the_helper_finds_the_checked_criu_first() {
        let p = helper_path(Path::new("/opt/criu/sbin/criu"));
        let first = std::env::split_paths(&p).next().unwrap();
        assert_eq!(first, Path::new("/opt/criu/sbin"));
    }

    #[test]
    fn prepare_refuses_a_missing_directory_and_empties_the_work_dir() {
        let t = tempfile::tempdir().unwrap();
        let work = t.path().join("w");
        std::fs::create_dir_all(work.join("checkpoint")).unwrap();
        std::fs::write(work.join("checkpoint/stale.img"), b"x").unwrap();
        prepare(&work, &t.path().join("out.tar")).unwrap();
        assert_eq!(std::fs::read_dir(work.join("checkpoint")).unwrap().count(), 0);
        let e = prepare(&work, &t.path().join("missing/out.tar")).unwrap_err();
        assert!(
            matches!(&e, ContainerError::Checkpoint(c) if c.is_invalid()),
            "{e}"
        );
        let e = prepare(&work, t.path()).unwrap_err();
        assert!(
            matches!(&e, ContainerError::Checkpoint(c) if c.is_invalid()),
            "{e}"
        );
    }
}
