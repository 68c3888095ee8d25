//! Idmapped volume mounts: a CRI `Mount` with `uid_mappings`/`gid_mappings` in a pod with its
//! own user namespace. crius makes the idmapped mount itself (libcontainer 0.7 ignores the OCI
//! `idmap` option): `open_tree` of the host path, `mount_setattr(MOUNT_ATTR_IDMAP)` with the
//! pod's user namespace, attached at a staging path in the container's bundle; the spec gets a
//! plain bind of the staging path (a bind of an idmapped mount keeps its idmap). Through it a
//! file owned by host root is root's inside, and what the container's root writes is owned by
//! host root on disk. Without mappings a mount stays a plain bind (the container's root writes
//! as its mapped id).
//!
//! Invariants:
//! - The mappings must be the pod's (the only user namespace crius can idmap with), one range
//!   each; a pod without a user namespace, other mappings or a non-private propagation are
//!   InvalidArgument; a filesystem that cannot be idmapped is FailedPrecondition naming the
//!   mount. Nothing stays mounted on error.
//! - Staging mounts live only under `<bundle>/idmapped-mounts/`, and [`unstage`] detaches them
//!   before the bundle is removed (teardown, rollback, recovery).

use std::path::{Path, PathBuf};

use cri_api::v1::{ContainerConfig, IdMapping, MountPropagation};
use nix::mount::MntFlags;

use super::{ContainerError, io_err};
use crate::spec::PodUserns;

/// The staging dir of a container's idmapped mounts.
pub fn staging_dir(bundle: &Path) -> PathBuf {
    bundle.join("idmapped-mounts")
}

/// Checks the idmapped mounts of `config` against the pod's user namespace; the indexes of the
/// mounts to idmap. No side effects.
pub fn plan(config: &ContainerConfig, pod: Option<&PodUserns>) -> Result<Vec<usize>, ContainerError> {
    let mut out = Vec::new();
    for (i, m) in config.mounts.iter().enumerate() {
        if m.uid_mappings.is_empty() && m.gid_mappings.is_empty() {
            continue;
        }
        let bad = |why: String| {
            ContainerError::Invalid(format!("mount at {:?} with id mappings: {why}", m.container_path))
        };
        let Some(pod) = pod else {
            return Err(bad("the pod has no user namespace of its own".into()));
        };
        let same = |maps: &[IdMapping], r: &crius_sandbox::userns::IdRange| matches!(maps, [m] if m.container_id == r.container_id && m.host_id == r.host_id && m.length == r.length);
        if !same(&m.uid_mappings, &pod.maps.uids) || !same(&m.gid_mappings, &pod.maps.gids) {
            return Err(bad(
                "the uid and gid mappings must each be the pod's user namespace mapping".into(),
            ));
        }
        if m.propagation != MountPropagation::PropagationPrivate as i32 {
            return Err(bad("an idmapped mount must have private propagation".into()));
        }
        out.push(i);
    }
    Ok(out)
}

/// Makes the idmapped mounts `which` (from [`plan`]) under `bundle` and returns the config the
/// spec is built from: those mounts' host paths replaced by their staging paths, mappings
/// cleared. On error every staging mount made so far is detached again.
pub fn stage(
    config: &ContainerConfig,
    which: &[usize],
    pod: &PodUserns,
    bundle: &Path,
) -> Result<ContainerConfig, ContainerError> {
    let dir = staging_dir(bundle);
    crate::private::create_dir(&dir).map_err(io_err("create", &dir))?;
    // The container's root opens the bind source by path while it sets itself up.
    std::os::unix::fs::lchown(&dir, None, Some(pod.maps.gids.host_id)).map_err(io_err("chown", &dir))?;
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o710))
        .map_err(io_err("chmod", &dir))?;
    let userns = std::fs::File::open(&pod.path).map_err(io_err("open the pod user namespace", &pod.path))?;
    let mut out = config.clone();
    let result = (|| {
        for &i in which {
            let m = &mut out.mounts[i];
            let src = crate::spec::host_source(&m.host_path)?;
            let at = dir.join(i.to_string());
            if src.is_dir() {
                std::fs::create_dir(&at).or_else(|e| if at.is_dir() { Ok(()) } else { Err(e) })
            } else {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&at)
                    .map(drop)
            }
            .map_err(io_err("create", &at))?;
            let what = format!("the idmapped mount at {:?}", m.container_path);
            super::rootfs_idmap::attach_idmapped(&src, &at, &userns, &what)?;
            m.host_path = at.to_string_lossy().into_owned();
            m.uid_mappings.clear();
            m.gid_mappings.clear();
        }
        Ok(())
    })();
    if let Err(e) = result {
        if let Err(ue) = unstage(bundle) {
            tracing::warn!(error = %ue, "cannot undo the idmapped mounts");
        }
        return Err(e);
    }
    Ok(out)
}

/// Detaches and removes every staging mount of the container. Idempotent.
pub fn unstage(bundle: &Path) -> Result<(), ContainerError> {
    let dir = staging_dir(bundle);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("read", &dir)(e)),
    };
    for entry in entries {
        let at = entry.map_err(io_err("read", &dir))?.path();
        loop {
            match nix::mount::umount2(&at, MntFlags::MNT_DETACH) {
                Ok(()) => continue,
                Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
                Err(e) => return Err(io_err("unmount", &at)(e.into())),
            }
        }
        // Never recursive: once unmounted it is an empty dir or file of our own.
        std::fs::remove_dir(&at)
            .or_else(|_| std::fs::remove_file(&at))
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(io_err("remove", &at))?;
    }
    std::fs::remove_dir(&dir)
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        })
        .map_err(io_err("remove", &dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cri_api::v1::Mount;
    use crius_sandbox::userns::{IdRange, Mappings};

    fn pod() -> PodUserns {
        let r = |host_id| IdRange {
            container_id: 0,
            host_id,
            length: 65536,
        };
        PodUserns {
            path: "/run/x/ns/user".into(),
            maps: Mappings {
                uids: r(65536 * 3),
                gids: r(65536 * 4),
            },
        }
    }

    fn map(host_id: u32) -> Vec<IdMapping> {
        vec![IdMapping {
            host_id,
            container_id: 0,
            length: 65536,
        }]
    }

    fn with(mounts: Vec<Mount>) -> ContainerConfig {
        ContainerConfig {
            mounts,
            ..Default::default()
        }
    }

    fn mount(uids: Vec<IdMapping>, gids: Vec<IdMapping>) -> Mount {
        Mount {
            container_path: "/data".into(),
            host_path: "/srv/data".into(),
            uid_mappings: uids,
            gid_mappings: gids,
            ..Default::default()
        }
    }

    #[test]
    fn only_the_pods_mappings_on_private_mounts_are_idmapped() {
        let p = pod();
        let plain = mount(vec![], vec![]);
        let good = mount(map(65536 * 3), map(65536 * 4));
        assert_eq!(
            plan(&with(vec![plain.clone(), good.clone()]), Some(&p)).unwrap(),
            vec![1]
        );
        assert_eq!(plan(&with(vec![plain]), None).unwrap(), Vec::<usize>::new());

        let mut rslave = good.clone();
        rslave.propagation = MountPropagation::PropagationHostToContainer as i32;
        let cases = [
            (good.clone(), None, "no user namespace"),
            (mount(map(65536 * 9), map(65536 * 4)), Some(&p), "the pod's"),
            (mount(map(65536 * 3), vec![]), Some(&p), "the pod's"),
            (mount(vec![], map(65536 * 4)), Some(&p), "the pod's"),
            (rslave, Some(&p), "private propagation"),
        ];
        for (m, pod, want) in cases {
            let e = plan(&with(vec![m.clone()]), pod).unwrap_err();
            assert!(matches!(e, ContainerError::Invalid(_)), "{m:?}: {e}");
            assert!(e.to_string().contains(want), "{m:?}: {e}");
            assert!(e.to_string().contains("/data"), "names the mount: {e}");
        }
    }

    #[test]
    fn unstage_of_nothing_is_fine() {
        let tmp = tempfile::tempdir().unwrap();
        unstage(tmp.path()).unwrap();
        std::fs::create_dir(staging_dir(tmp.path())).unwrap();
        std::fs::create_dir(staging_dir(tmp.path()).join("0")).unwrap();
        unstage(tmp.path()).unwrap();
        assert!(!staging_dir(tmp.path()).exists());
    }
}
