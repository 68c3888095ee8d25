//! The container's root filesystem: an overlay of the image's layer directories (read-only
//! lowers, top first) under the container's own `upper`/`work`, mounted at
//! `<state>/containers/<id>/rootfs`.
//!
//! Invariants: `mount` either mounts or leaves nothing mounted; `unmount` is idempotent (a
//! path that is not a mount point is fine) and detaches lazily so a busy mount cannot block
//! removal.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use super::{ContainerError, io_err};

/// Mount options are limited to one page.
const MAX_OPTIONS: usize = 4096;

pub fn overlay_options(lowers: &[PathBuf], upper: &Path, work: &Path) -> Result<String, ContainerError> {
    for p in lowers.iter().map(PathBuf::as_path).chain([upper, work]) {
        let s = p.to_string_lossy();
        if s.contains(',') || s.contains(':') {
            return Err(ContainerError::Invalid(format!(
                "overlay path {s:?} contains ',' or ':'"
            )));
        }
    }
    let lower = lowers
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join(":");
    let opts = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    if opts.len() >= MAX_OPTIONS {
        return Err(ContainerError::Invalid(format!(
            "overlay options for {} layers exceed one page",
            lowers.len()
        )));
    }
    Ok(opts)
}

/// Mounts the overlay at `target` (created if missing).
pub fn mount(lowers: &[PathBuf], layer_dir: &Path, target: &Path) -> Result<(), ContainerError> {
    if lowers.is_empty() {
        return Err(ContainerError::Invalid("image has no layers".into()));
    }
    prepare_dirs(layer_dir, target)?;
    mount_overlay(lowers, layer_dir, target, "mount overlay at")
}

/// Mounts an overlay of `lowers` (top first) with `layer_dir`'s `upper` and `work` at `target`;
/// `what` names the mount in the error.
pub(super) fn mount_overlay(
    lowers: &[PathBuf],
    layer_dir: &Path,
    target: &Path,
    what: &'static str,
) -> Result<(), ContainerError> {
    let opts = overlay_options(lowers, &layer_dir.join("upper"), &layer_dir.join("work"))?;
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| ContainerError::Io {
        what,
        path: target.into(),
        source: e.into(),
    })
}

/// Creates `layer_dir`'s `upper` and `work` and the mount point `target`.
pub(super) fn prepare_dirs(layer_dir: &Path, target: &Path) -> Result<(), ContainerError> {
    let upper = layer_dir.join("upper");
    let work = layer_dir.join("work");
    // The writable layer's parent and the overlay work dir are root's alone; `upper` is the
    // container's `/` (overlayfs takes the root's mode from it), so it stays searchable.
    crate::private::create_dir(layer_dir).map_err(io_err("create", layer_dir))?;
    crate::private::create_dir(&work).map_err(io_err("create", &work))?;
    for (d, mode) in [(&upper, 0o755), (&target.to_path_buf(), 0o755)] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(d)
            .map_err(io_err("create", d))?;
    }
    Ok(())
}

/// Detaches the overlay at `target` if mounted.
pub fn unmount(target: &Path) -> Result<(), ContainerError> {
    match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(ContainerError::Io {
            what: "unmount",
            path: target.into(),
            source: e.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_list_lowers_top_first_and_refuse_separators() {
        let o = overlay_options(
            &["/l/top".into(), "/l/base".into()],
            Path::new("/c/upper"),
            Path::new("/c/work"),
        )
        .unwrap();
        assert_eq!(o, "lowerdir=/l/top:/l/base,upperdir=/c/upper,workdir=/c/work");
        assert!(overlay_options(&["/l/a:b".into()], Path::new("/u"), Path::new("/w")).is_err());
        let many: Vec<PathBuf> = (0..100)
            .map(|i| PathBuf::from(format!("/{}/{i}", "x".repeat(60))))
            .collect();
        assert!(overlay_options(&many, Path::new("/u"), Path::new("/w")).is_err());
    }

    #[test]
    fn unmounting_a_plain_directory_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        unmount(dir.path()).unwrap();
        unmount(&dir.path().join("missing")).unwrap();
    }
}
