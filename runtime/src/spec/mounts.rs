//! The OCI mounts and devices: the default Linux filesystems, the pod's files (hostname, hosts,
//! resolv.conf, /dev/shm), the CRI mounts and the CRI devices.
//!
//! Invariants: a CRI mount's host path must exist; a host path that is a symlink is resolved on
//! the host (CRI: the kubelet may hand symlinked volume paths); a CRI mount replaces a default
//! or pod mount at the same destination; CRI mounts are ordered parents-first; container paths
//! are absolute and free of `..`.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use cri_api::v1::{Device, Mount as CriMount, MountPropagation};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, Mount};

use super::{PodFiles, SpecError};

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.into())
        .set_typ(Some(typ.into()))
        .set_source(Some(source.into()))
        .set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

fn bind(dest: &str, source: &Path, readonly: bool, propagation: &str) -> Mount {
    let mut opts = vec!["rbind", propagation];
    opts.push(if readonly { "ro" } else { "rw" });
    let mut m = mount(dest, "bind", "", &opts);
    m.set_source(Some(source.to_path_buf()));
    m
}

/// The filesystems every Linux container gets (containerd's defaults). `/sys` and the cgroup
/// mount are read-only unless privileged.
pub fn defaults(privileged: bool) -> Vec<Mount> {
    let ro = if privileged { "rw" } else { "ro" };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", ro]),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", ro],
        ),
    ]
}

/// The pod's files, bind-mounted (read-only when the rootfs is), and its `/dev/shm` (or a
/// private 64 MiB tmpfs when the pod has none).
pub fn pod_files(pod: &PodFiles, readonly_rootfs: bool) -> Vec<Mount> {
    let mut out = Vec::new();
    for (dest, src) in [
        ("/etc/hostname", &pod.hostname),
        ("/etc/hosts", &pod.hosts),
        ("/etc/resolv.conf", &pod.resolv_conf),
    ] {
        if let Some(src) = src {
            out.push(bind(dest, src, readonly_rootfs, "rprivate"));
        }
    }
    match &pod.shm {
        Some(shm) => out.push(bind("/dev/shm", shm, false, "rprivate")),
        None => out.push(mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )),
    }
    out
}

/// Checks a container-side path: absolute, no `..`.
pub fn container_path(p: &str) -> Result<PathBuf, SpecError> {
    let path = Path::new(p);
    if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(SpecError::Invalid(format!(
            "container path {p:?} must be absolute without `..`"
        )));
    }
    Ok(path.to_path_buf())
}

/// What the propagation of the CRI mounts asks of the rootfs: `rshared` if any mount is
/// bidirectional, `rslave` if any is host-to-container, else nothing.
pub fn rootfs_propagation(mounts: &[CriMount]) -> Option<&'static str> {
    let has = |p: MountPropagation| mounts.iter().any(|m| m.propagation == p as i32);
    if has(MountPropagation::PropagationBidirectional) {
        Some("rshared")
    } else if has(MountPropagation::PropagationHostToContainer) {
        Some("rslave")
    } else {
        None
    }
}

/// CRI mounts as OCI bind mounts, host symlinks resolved, parents first.
pub fn cri_mounts(mounts: &[CriMount]) -> Result<Vec<Mount>, SpecError> {
    let mut out = Vec::new();
    for m in mounts {
        let dest = container_path(&m.container_path)?;
        if m.host_path.is_empty() {
            return Err(SpecError::Invalid(format!(
                "mount at {} has no host path",
                dest.display()
            )));
        }
        let host = std::fs::canonicalize(&m.host_path).map_err(|source| SpecError::MountSource {
            path: m.host_path.clone().into(),
            source,
        })?;
        let propagation = match MountPropagation::try_from(m.propagation) {
            Ok(MountPropagation::PropagationHostToContainer) => "rslave",
            Ok(MountPropagation::PropagationBidirectional) => "rshared",
            Ok(MountPropagation::PropagationPrivate) => "rprivate",
            Err(_) => {
                return Err(SpecError::Invalid(format!(
                    "unknown mount propagation {}",
                    m.propagation
                )));
            }
        };
        let mut om = bind(&dest.to_string_lossy(), &host, m.readonly, propagation);
        if m.recursive_read_only {
            if !m.readonly || propagation != "rprivate" {
                return Err(SpecError::Invalid(format!(
                    "recursive read-only mount {} must be read-only with private propagation",
                    dest.display()
                )));
            }
            let mut opts = om.options().clone().unwrap_or_default();
            opts.push("rro".into());
            om.set_options(Some(opts));
        }
        out.push(om);
    }
    out.sort_by_key(|m| m.destination().components().count());
    Ok(out)
}

/// Puts `extra` after `base`, dropping every `base` mount whose destination `extra` also has.
pub fn merge(base: Vec<Mount>, extra: Vec<Mount>) -> Vec<Mount> {
    let mut out: Vec<Mount> = base
        .into_iter()
        .filter(|b| !extra.iter().any(|e| e.destination() == b.destination()))
        .collect();
    out.extend(extra);
    out
}

/// CRI devices: the host node's type and numbers, plus a cgroup rule with the requested access.
pub fn devices(devs: &[Device]) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), SpecError> {
    let mut nodes = Vec::new();
    let mut rules = Vec::new();
    for d in devs {
        let dest = container_path(&d.container_path)?;
        let meta = std::fs::metadata(&d.host_path).map_err(|source| SpecError::MountSource {
            path: d.host_path.clone().into(),
            source,
        })?;
        let typ = if meta.file_type().is_char_device() {
            LinuxDeviceType::C
        } else if meta.file_type().is_block_device() {
            LinuxDeviceType::B
        } else {
            return Err(SpecError::Invalid(format!(
                "{} is not a device node",
                d.host_path
            )));
        };
        let access = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(SpecError::Invalid(format!(
                "device permissions {access:?} are not r/w/m"
            )));
        }
        let rdev = meta.rdev();
        let (major, minor) = (libc::major(rdev) as i64, libc::minor(rdev) as i64);
        let mut n = LinuxDevice::default();
        n.set_path(dest)
            .set_typ(typ)
            .set_major(major)
            .set_minor(minor)
            .set_file_mode(Some(meta.mode() & 0o7777))
            .set_uid(Some(meta.uid()))
            .set_gid(Some(meta.gid()));
        nodes.push(n);
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(true)
            .set_typ(Some(typ))
            .set_major(Some(major))
            .set_minor(Some(minor))
            .set_access(Some(access.into()));
        rules.push(r);
    }
    Ok((nodes, rules))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinked_host_path_is_resolved_and_missing_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let m = CriMount {
            container_path: "/data".into(),
            host_path: dir.path().join("link").to_string_lossy().into(),
            readonly: true,
            ..Default::default()
        };
        let out = cri_mounts(&[m.clone()]).unwrap();
        assert_eq!(out[0].source().as_deref(), Some(real.as_path()));
        assert_eq!(
            out[0].options().as_deref(),
            Some(&["rbind".to_string(), "rprivate".into(), "ro".into()][..])
        );
        let missing = CriMount {
            host_path: "/no/such/dir".into(),
            ..m
        };
        assert!(matches!(
            cri_mounts(&[missing]),
            Err(SpecError::MountSource { .. })
        ));
    }

    #[test]
    fn relative_or_escaping_container_paths_are_refused() {
        assert!(container_path("data").is_err());
        assert!(container_path("/a/../../etc").is_err());
        assert!(container_path("/var/lib/x").is_ok());
    }

    #[test]
    fn cri_mounts_replace_defaults_and_sort_parents_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().to_string_lossy().to_string();
        let ms = [
            CriMount {
                container_path: "/a/b/c".into(),
                host_path: p.clone(),
                ..Default::default()
            },
            CriMount {
                container_path: "/etc/hosts".into(),
                host_path: p.clone(),
                propagation: MountPropagation::PropagationHostToContainer as i32,
                ..Default::default()
            },
        ];
        let pod = PodFiles {
            hosts: Some("/pod/hosts".into()),
            ..Default::default()
        };
        let merged = merge(pod_files(&pod, false), cri_mounts(&ms).unwrap());
        let hosts: Vec<_> = merged
            .iter()
            .filter(|m| m.destination() == Path::new("/etc/hosts"))
            .collect();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].source().as_deref(), Some(dir.path()));
        let dests: Vec<_> = merged.iter().map(|m| m.destination().clone()).collect();
        let pos = |d: &str| dests.iter().position(|x| x == Path::new(d)).unwrap();
        assert!(pos("/etc/hosts") < pos("/a/b/c"));
        assert_eq!(rootfs_propagation(&ms), Some("rslave"));
    }

    #[test]
    fn device_rule_carries_numbers_and_access() {
        let d = Device {
            container_path: "/dev/mynull".into(),
            host_path: "/dev/null".into(),
            permissions: "rw".into(),
        };
        let (nodes, rules) = devices(&[d]).unwrap();
        assert_eq!((nodes[0].major(), nodes[0].minor()), (1, 3));
        assert_eq!(rules[0].access().as_deref(), Some("rw"));
        let bad = Device {
            container_path: "/dev/x".into(),
            host_path: "/etc/hostname".into(),
            permissions: String::new(),
        };
        assert!(devices(&[bad]).is_err());
    }
}
