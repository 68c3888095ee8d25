//! The root filesystem of a container whose pod has its own user namespace: the same overlay as
//! `rootfs.rs`, but every image layer is an idmapped mount (`mount_setattr(MOUNT_ATTR_IDMAP)`
//! with the pod's user namespace), so a file owned by 0 in the image is owned by the
//! container's root without copying or chowning a layer. The writable layer's `upper` is owned
//! by the mapped root.
//!
//! Invariants:
//! - The idmapped layer mounts exist only while the overlay is mounted: overlayfs keeps private
//!   clones of its layers, so they are detached right after `mount(2)`, success or not.
//! - A layer dir once mounted idmapped records the user namespace in `<layer_dir>/idmap.json`;
//!   every later mount of it (recovery) is idmapped with that namespace or fails. The
//!   container never gets its root without the mapping.
//! - A kernel or filesystem that cannot idmap is a clear FailedPrecondition
//!   ([`SpecError::Unsupported`]), never a silent fallback.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::mount::MntFlags;

use super::{ContainerError, io_err, rootfs};
use crate::spec::SpecError;

/// The record of an idmapped rootfs: the pod's pinned user namespace and its root's host ids.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Idmap {
    pub userns: PathBuf,
    pub root_uid: u32,
    pub root_gid: u32,
}

impl Idmap {
    /// The idmap of a container of the pod with this user namespace.
    pub fn of(u: &crate::spec::PodUserns) -> Idmap {
        Idmap {
            userns: u.path.clone(),
            root_uid: u.maps.uids.host_id,
            root_gid: u.maps.gids.host_id,
        }
    }
}

/// Lets the container's root (its mapped gid) search the bundle, which holds the rootfs mount
/// point it reaches by path while it sets itself up; 0710, as containerd does.
pub fn open_bundle(bundle: &Path, idmap: &Idmap) -> Result<(), ContainerError> {
    std::os::unix::fs::lchown(bundle, None, Some(idmap.root_gid)).map_err(io_err("chown", bundle))?;
    std::fs::set_permissions(bundle, std::os::unix::fs::PermissionsExt::from_mode(0o710))
        .map_err(io_err("chmod", bundle))
}

const MARKER: &str = "idmap.json";
/// The record is a few hundred bytes.
const MAX_MARKER: u64 = 4096;

/// The idmap a layer dir was first mounted with, if any.
pub fn recorded(layer_dir: &Path) -> Result<Option<Idmap>, ContainerError> {
    let path = layer_dir.join(MARKER);
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", &path)(e)),
    };
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_MARKER), &mut buf)
        .map_err(io_err("read", &path))?;
    serde_json::from_slice(&buf)
        .map(Some)
        .map_err(|e| ContainerError::Invalid(format!("{}: {e}", path.display())))
}

/// Mounts the idmapped overlay at `target`; nothing stays mounted on error.
pub fn mount(
    lowers: &[PathBuf],
    layer_dir: &Path,
    target: &Path,
    idmap: &Idmap,
) -> Result<(), ContainerError> {
    if lowers.is_empty() {
        return Err(ContainerError::Invalid("image has no layers".into()));
    }
    let userns = File::open(&idmap.userns).map_err(io_err("open the pod user namespace", &idmap.userns))?;
    let upper = layer_dir.join("upper");
    let fresh = !upper.exists();
    rootfs::prepare_dirs(layer_dir, target)?;
    if fresh {
        // The container's `/`: its root must own it (overlayfs takes the owner from upper).
        std::os::unix::fs::lchown(&upper, Some(idmap.root_uid), Some(idmap.root_gid))
            .map_err(io_err("chown", &upper))?;
    }
    let marker = layer_dir.join(MARKER);
    let json = serde_json::to_vec(idmap).expect("idmap record serializes");
    std::fs::write(&marker, json).map_err(io_err("write", &marker))?;

    let stage = layer_dir.join("idmapped");
    crate::private::create_dir(&stage).map_err(io_err("create", &stage))?;
    let mut staged = Vec::with_capacity(lowers.len());
    let result = (|| {
        for (i, lower) in lowers.iter().enumerate() {
            let at = stage.join(i.to_string());
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&at)
                .or_else(|e| if at.is_dir() { Ok(()) } else { Err(e) })
                .map_err(io_err("create", &at))?;
            attach_idmapped(lower, &at, &userns, "an idmapped root filesystem")?;
            staged.push(at);
        }
        rootfs::mount_overlay(&staged, layer_dir, target, "mount the idmapped overlay at")
    })();
    for at in &staged {
        if let Err(e) = nix::mount::umount2(at, MntFlags::MNT_DETACH) {
            tracing::warn!(path = %at.display(), error = %e, "cannot detach an idmapped layer");
        }
    }
    let _ = std::fs::remove_dir_all(&stage);
    result
}

/// `open_tree(OPEN_TREE_CLONE)` of `src`, idmapped with `userns`, attached at `at`. `what` names
/// the mount in the FailedPrecondition that a kernel or filesystem without idmapped mounts gives.
pub(super) fn attach_idmapped(
    src: &Path,
    at: &Path,
    userns: &File,
    what: &str,
) -> Result<(), ContainerError> {
    let unsupported = |step: &str, e: std::io::Error| {
        ContainerError::Spec(SpecError::Unsupported(format!(
            "cannot give the container {what} ({step} {}: {e}); this kernel or filesystem does not \
             support idmapped mounts, which a pod with its own user namespace needs",
            src.display()
        )))
    };
    let c_src = std::ffi::CString::new(src.as_os_str().as_encoded_bytes())
        .map_err(|_| ContainerError::Invalid(format!("layer path {} has a NUL byte", src.display())))?;
    // SAFETY: open_tree with a valid C string; the returned fd is owned right away.
    let raw = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c_src.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(unsupported("open_tree", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd returned by open_tree.
    let tree = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr on our detached tree with a properly sized mount_attr.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc < 0 {
        return Err(unsupported(
            "mount_setattr(MOUNT_ATTR_IDMAP)",
            std::io::Error::last_os_error(),
        ));
    }
    let c_at = std::ffi::CString::new(at.as_os_str().as_encoded_bytes())
        .map_err(|_| ContainerError::Invalid(format!("path {} has a NUL byte", at.display())))?;
    // SAFETY: move_mount of our detached tree onto a directory we created.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c_at.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(ContainerError::Io {
            what: "attach an idmapped layer at",
            path: at.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Whether this host can give containers an idmapped overlay root: a scratch user namespace,
/// an idmapped mount of a directory under `dir` (the layer store's filesystem) and an overlay
/// over it. Everything it creates is removed again.
pub fn probe(dir: &Path) -> Result<(), String> {
    let scratch = dir.join(format!(".idmap-probe-{}", std::process::id()));
    let result = probe_in(&scratch);
    let _ = nix::mount::umount2(&scratch.join("rootfs"), MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn probe_in(scratch: &Path) -> Result<(), String> {
    use crius_sandbox::userns::{Holder, IdRange, Mappings};
    // One unprivileged host id above the host's usual users: owns nothing, so nothing leaks.
    let range = IdRange {
        container_id: 0,
        host_id: 65536,
        length: 1,
    };
    let holder = Holder::spawn(
        &Mappings {
            uids: range,
            gids: range,
        },
        nix::sched::CloneFlags::empty(),
    )
    .map_err(|e| e.to_string())?;
    let lower = scratch.join("lower");
    std::fs::create_dir_all(&lower).map_err(|e| format!("create {}: {e}", lower.display()))?;
    let idmap = Idmap {
        userns: holder.ns_path("user"),
        root_uid: range.host_id,
        root_gid: range.host_id,
    };
    mount(&[lower], &scratch.join("layer"), &scratch.join("rootfs"), &idmap).map_err(|e| e.to_string())
}
