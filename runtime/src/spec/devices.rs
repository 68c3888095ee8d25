//! The OCI devices: the CRI devices (host node numbers plus a device-cgroup rule with the
//! requested access) and, for privileged containers, every device node of the host.
//!
//! Invariants: a CRI device's host path must be a character or block device and its
//! permissions only `r`, `w`, `m`; container paths are absolute and free of `..`.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use cri_api::v1::Device;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use super::SpecError;
use super::mounts::container_path;

/// Every device node under the host's `/dev` (what a privileged container sees, as in
/// containerd): directories of other mounts (`pts`, `shm`, `mqueue`, `fd`) and `console` are
/// skipped; unreadable entries are skipped, not fatal.
pub fn host_devices(dev: &Path) -> Vec<LinuxDevice> {
    const SKIP_DIRS: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];
    let mut out = Vec::new();
    let mut stack = vec![dev.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let name = e.file_name();
            let ft = meta.file_type();
            if ft.is_dir() {
                if !SKIP_DIRS.iter().any(|s| name == *s) {
                    stack.push(path);
                }
                continue;
            }
            if name == "console" {
                continue;
            }
            let typ = if ft.is_char_device() {
                LinuxDeviceType::C
            } else if ft.is_block_device() {
                LinuxDeviceType::B
            } else {
                continue;
            };
            let Ok(rel) = path.strip_prefix(dev) else {
                continue;
            };
            let rdev = meta.rdev();
            let mut n = LinuxDevice::default();
            n.set_path(Path::new("/dev").join(rel))
                .set_typ(typ)
                .set_major(libc::major(rdev) as i64)
                .set_minor(libc::minor(rdev) as i64)
                .set_file_mode(Some(meta.mode() & 0o7777))
                .set_uid(Some(meta.uid()))
                .set_gid(Some(meta.gid()));
            out.push(n);
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
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
    fn host_devices_lists_nodes_with_numbers() {
        let devs = host_devices(Path::new("/dev"));
        let null = devs.iter().find(|d| d.path() == Path::new("/dev/null")).unwrap();
        assert_eq!(
            (null.major(), null.minor(), null.typ()),
            (1, 3, LinuxDeviceType::C)
        );
        assert!(devs.iter().all(|d| !d.path().starts_with("/dev/pts")));
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
