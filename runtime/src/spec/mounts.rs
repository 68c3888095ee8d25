//! The OCI mounts: the default Linux filesystems, the pod's files (hostname, hosts,
//! resolv.conf, /dev/shm) and the CRI mounts with their propagation.
//!
//! Invariants: a CRI mount's host path is absolute; a missing one is created as a directory
//! (0755, root), as containerd and CRI-O do, and one that exists but cannot be resolved is
//! refused; a host path that is a symlink is resolved on
//! the host (CRI: the kubelet may hand symlinked volume paths); a CRI mount replaces a default
//! or pod mount at the same destination; CRI mounts are ordered parents-first; container paths
//! are absolute and free of `..`.

use std::path::{Component, Path, PathBuf};

use cri_api::v1::{Mount as CriMount, MountPropagation};
use oci_spec::runtime::Mount;

use super::{PodFiles, SpecError};

pub use crius_sandbox::cgroup::unescape_mountinfo;

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
/// filesystem are read-only unless privileged.
///
/// cgroup v1 (`v1_hierarchies` non-empty): libcontainer 0.7 mounts v1 hierarchies read-write
/// whatever the options say (and the `name=systemd` one at its root), so an unprivileged
/// container instead gets a tmpfs with a read-only bind of its own cgroup in each controller
/// hierarchy (`<hierarchy>/<cgroups_path>`, which exists by the time mounts are made). A
/// privileged container keeps libcontainer's writable mount.
pub fn defaults(privileged: bool, v1_hierarchies: &[PathBuf], cgroups_path: &str) -> Vec<Mount> {
    let ro = if privileged { "rw" } else { "ro" };
    let mut out = vec![
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
    ];
    if privileged || v1_hierarchies.is_empty() {
        out.push(mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", ro],
        ));
        return out;
    }
    out.push(mount(
        "/sys/fs/cgroup",
        "tmpfs",
        "tmpfs",
        &["nosuid", "noexec", "nodev", "mode=755", "size=64k"],
    ));
    for h in v1_hierarchies {
        let Some(name) = h.file_name() else { continue };
        let mut m = mount(
            &Path::new("/sys/fs/cgroup").join(name).to_string_lossy(),
            "bind",
            "",
            &["rbind", "rprivate", "ro", "nosuid", "noexec", "nodev"],
        );
        m.set_source(Some(h.join(cgroups_path.trim_start_matches('/'))));
        out.push(m);
    }
    out
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

/// What the propagation of the CRI mounts asks of the rootfs (containerd's rule): shared if
/// any mount is bidirectional, slave if any is host-to-container, else private. Spelled
/// `shared`/`slave`/`private`: libcontainer 0.7 knows no `r` forms here and always applies
/// them recursively.
///
/// libcontainer 0.7 ignores propagation options on bind mounts (it clones the source with
/// open_tree), so a bind mount inherits the propagation its source has in the container's
/// mount namespace after the rootfs propagation was applied to every mount there: this rootfs
/// propagation is what makes a mount of a shared host source rslave, rshared or private.
/// Known limit: when private mounts are mixed with propagating ones, the private ones
/// propagate like the others (a slave of a shared source, or shared).
pub fn rootfs_propagation(mounts: &[CriMount]) -> &'static str {
    let has = |p: MountPropagation| mounts.iter().any(|m| m.propagation == p as i32);
    if has(MountPropagation::PropagationBidirectional) {
        "shared"
    } else if has(MountPropagation::PropagationHostToContainer) {
        "slave"
    } else {
        "private"
    }
}

/// The propagation of the host mount holding `path`, from mountinfo text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePropagation {
    pub shared: bool,
    pub slave: bool,
}

/// Finds the mount `path` (canonical) lives on in `/proc/self/mountinfo` text: the last listed
/// mount whose mount point is the longest prefix of `path`.
pub fn source_propagation(mountinfo: &str, path: &Path) -> Option<SourcePropagation> {
    let mut best: Option<(usize, SourcePropagation)> = None;
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 7 {
            continue;
        }
        let point = unescape_mountinfo(f[4]);
        if !path.starts_with(&point) {
            continue;
        }
        let opt = f[6..].iter().take_while(|x| **x != "-");
        let mut prop = SourcePropagation {
            shared: false,
            slave: false,
        };
        for o in opt {
            prop.shared |= o.starts_with("shared:");
            prop.slave |= o.starts_with("master:");
        }
        let len = point.components().count();
        if best.is_none_or(|(l, _)| len >= l) {
            best = Some((len, prop));
        }
    }
    best.map(|(_, p)| p)
}

/// CRI (containerd's checks): a bidirectional mount needs a shared host source, a
/// host-to-container one a shared or slave source; otherwise nothing would propagate.
fn check_source(host: &Path, propagation: MountPropagation, mountinfo: &str) -> Result<(), SpecError> {
    let prop = source_propagation(mountinfo, host);
    let ok = match propagation {
        MountPropagation::PropagationPrivate => true,
        MountPropagation::PropagationBidirectional => prop.is_some_and(|p| p.shared),
        MountPropagation::PropagationHostToContainer => prop.is_some_and(|p| p.shared || p.slave),
    };
    if ok {
        return Ok(());
    }
    let wanted = if propagation == MountPropagation::PropagationBidirectional {
        "shared"
    } else {
        "shared or slave"
    };
    Err(SpecError::Unsupported(format!(
        "mount propagation {} needs the host mount holding {} to be {wanted}",
        propagation.as_str_name(),
        host.display()
    )))
}

/// CRI mounts as OCI bind mounts, host symlinks resolved, parents first. `mountinfo` is read
/// (once) only when a mount asks for non-private propagation.
pub fn cri_mounts(
    mounts: &[CriMount],
    mountinfo: &mut dyn FnMut() -> String,
) -> Result<Vec<Mount>, SpecError> {
    let mut info: Option<String> = None;
    let mut out = Vec::new();
    for m in mounts {
        let dest = container_path(&m.container_path)?;
        if m.host_path.is_empty() {
            return Err(SpecError::Invalid(format!(
                "mount at {} has no host path",
                dest.display()
            )));
        }
        let host = host_source(&m.host_path)?;
        let kind = MountPropagation::try_from(m.propagation)
            .map_err(|_| SpecError::Invalid(format!("unknown mount propagation {}", m.propagation)))?;
        let propagation = match kind {
            MountPropagation::PropagationHostToContainer => "rslave",
            MountPropagation::PropagationBidirectional => "rshared",
            MountPropagation::PropagationPrivate => "rprivate",
        };
        if m.recursive_read_only && (!m.readonly || kind != MountPropagation::PropagationPrivate) {
            // CRI: recursive read-only needs readonly and private propagation.
            return Err(SpecError::Invalid(format!(
                "recursive read-only mount {} must be read-only with private propagation",
                dest.display()
            )));
        }
        if kind != MountPropagation::PropagationPrivate {
            let text = info.get_or_insert_with(&mut *mountinfo);
            check_source(&host, kind, text)?;
        }
        let mut om = bind(&dest.to_string_lossy(), &host, m.readonly, propagation);
        if m.recursive_read_only {
            let mut opts = om.options().clone().unwrap_or_default();
            opts.push("rro".into());
            om.set_options(Some(opts));
        }
        out.push(om);
    }
    out.sort_by_key(|m| m.destination().components().count());
    Ok(out)
}

/// A CRI mount's source on the host, symlinks resolved. A path that does not exist is created
/// as a directory, parents included (0755, owned by root); a dangling symlink, or a path below
/// a regular file, is an error (InvalidArgument naming the path).
pub(crate) fn host_source(path: &str) -> Result<PathBuf, SpecError> {
    use std::os::unix::fs::DirBuilderExt;
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(SpecError::Invalid(format!(
            "mount host path {path:?} is not absolute"
        )));
    }
    let failed = |source| SpecError::MountSource {
        path: p.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(p)
            .map_err(failed)?,
        Err(e) => return Err(failed(e)),
        Ok(_) => {}
    }
    std::fs::canonicalize(p).map_err(failed)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinked_host_path_is_resolved_and_missing_one_created() {
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
        let out = cri_mounts(std::slice::from_ref(&m), &mut String::new).unwrap();
        assert_eq!(out[0].source().as_deref(), Some(real.as_path()));
        assert_eq!(
            out[0].options().as_deref(),
            Some(&["rbind".to_string(), "rprivate".into(), "ro".into()][..])
        );
        let made = dir.path().join("made/by/create");
        let missing = CriMount {
            host_path: made.to_string_lossy().into(),
            ..m.clone()
        };
        let out = cri_mounts(&[missing], &mut String::new).unwrap();
        assert_eq!(out[0].source().as_deref(), Some(made.as_path()));
        assert!(made.is_dir());
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join("dangling")).unwrap();
        for unusable in [file.join("below"), dir.path().join("dangling")] {
            let m = CriMount {
                host_path: unusable.to_string_lossy().into(),
                ..m.clone()
            };
            assert!(
                matches!(
                    cri_mounts(&[m], &mut String::new),
                    Err(SpecError::MountSource { .. })
                ),
                "{}",
                unusable.display()
            );
        }
        let relative = CriMount {
            host_path: "relative/dir".into(),
            ..m
        };
        assert!(matches!(
            cri_mounts(&[relative], &mut String::new),
            Err(SpecError::Invalid(_))
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
        let info = format!("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 0:5 / {p} rw master:3 - tmpfs t rw\n");
        let merged = merge(
            pod_files(&pod, false),
            cri_mounts(&ms, &mut || info.clone()).unwrap(),
        );
        let hosts: Vec<_> = merged
            .iter()
            .filter(|m| m.destination() == Path::new("/etc/hosts"))
            .collect();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].source().as_deref(), Some(dir.path()));
        let dests: Vec<_> = merged.iter().map(|m| m.destination().clone()).collect();
        let pos = |d: &str| dests.iter().position(|x| x == Path::new(d)).unwrap();
        assert!(pos("/etc/hosts") < pos("/a/b/c"));
        assert_eq!(rootfs_propagation(&ms), "slave");
    }

    #[test]
    fn propagation_needs_a_shared_or_slave_source_and_rro_needs_private_readonly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().to_string_lossy().to_string();
        let m = |prop: MountPropagation, readonly: bool, rro: bool| CriMount {
            container_path: "/data".into(),
            host_path: p.clone(),
            propagation: prop as i32,
            readonly,
            recursive_read_only: rro,
            ..Default::default()
        };
        let private = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n".to_string();
        let shared = format!("{private}7 1 0:9 / {p} rw shared:12 - tmpfs t rw\n");
        let bidi = m(MountPropagation::PropagationBidirectional, false, false);
        let h2c = m(MountPropagation::PropagationHostToContainer, false, false);
        for one in [&bidi, &h2c] {
            assert!(matches!(
                cri_mounts(std::slice::from_ref(one), &mut || private.clone()),
                Err(SpecError::Unsupported(_))
            ));
            let ok = cri_mounts(std::slice::from_ref(one), &mut || shared.clone()).unwrap();
            assert_eq!(ok.len(), 1);
        }
        assert_eq!(rootfs_propagation(&[h2c.clone(), bidi]), "shared");
        assert_eq!(
            rootfs_propagation(&[m(MountPropagation::PropagationPrivate, false, false)]),
            "private"
        );
        assert_eq!(rootfs_propagation(&[]), "private");

        let rro = cri_mounts(
            &[m(MountPropagation::PropagationPrivate, true, true)],
            &mut || unreachable!("private mounts need no mountinfo"),
        )
        .unwrap();
        assert!(rro[0].options().as_ref().unwrap().contains(&"rro".to_string()));
        for bad in [
            m(MountPropagation::PropagationPrivate, false, true),
            m(MountPropagation::PropagationHostToContainer, true, true),
        ] {
            assert!(matches!(
                cri_mounts(&[bad], &mut || shared.clone()),
                Err(SpecError::Invalid(_))
            ));
        }
    }

    #[test]
    fn mountinfo_escapes_and_longest_prefix() {
        let info = "1 0 8:1 / / rw shared:1 - ext4 /dev/sda1 rw\n\
                    2 1 0:5 / /mnt/my\\040dir rw - tmpfs t rw\n";
        let at = |p: &str| source_propagation(info, Path::new(p)).unwrap();
        assert!(at("/var/lib").shared);
        assert!(!at("/mnt/my dir/x").shared, "the private submount wins");
    }
}
