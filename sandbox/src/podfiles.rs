//! Pod-level files under `<state>/pods/<sandbox-id>/` that containers bind-mount: `hostname`,
//! `hosts`, `resolv.conf`, and `shm/` (a 64 MiB tmpfs) when the pod has its own IPC namespace.
//!
//! Invariants: every file is written whole (temp file + rename); [`remove`] is idempotent and
//! unmounts `shm` before deleting the directory, so it never deletes through a mount.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cri_api::v1::DnsConfig;
use nix::mount::{MntFlags, MsFlags};

/// Size of the pod's /dev/shm.
pub const SHM_SIZE: &str = "64m";

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("cannot write pod file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mount the pod's shm tmpfs at {path}: {source}")]
    Shm {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot remove pod files {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Paths of a pod's files, for the containers that mount them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodFiles {
    pub dir: PathBuf,
    pub hostname: PathBuf,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    /// The pod's /dev/shm; None when the pod uses the host IPC namespace (and the host /dev/shm).
    pub shm: Option<PathBuf>,
}

impl PodFiles {
    /// The layout under `dir`; nothing is created.
    pub fn at(dir: PathBuf, shm: bool) -> PodFiles {
        PodFiles {
            hostname: dir.join("hostname"),
            hosts: dir.join("hosts"),
            resolv_conf: dir.join("resolv.conf"),
            shm: shm.then(|| dir.join("shm")),
            dir,
        }
    }
}

/// Where the host's versions of the files are read from (overridable in tests).
#[derive(Debug, Clone)]
pub struct HostFiles {
    pub resolv_conf: PathBuf,
    pub hosts: PathBuf,
}

impl Default for HostFiles {
    fn default() -> Self {
        HostFiles {
            resolv_conf: "/etc/resolv.conf".into(),
            hosts: "/etc/hosts".into(),
        }
    }
}

/// Writes `hostname` and `resolv.conf` and mounts `shm`. `hosts` needs the pod IP: [`write_hosts`].
pub fn create(
    files: &PodFiles,
    hostname: &str,
    dns: Option<&DnsConfig>,
    host: &HostFiles,
) -> Result<(), FilesError> {
    // Root's alone; containers reach the files through their bind mounts.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&files.dir)
        .map_err(|source| FilesError::Write {
            path: files.dir.clone(),
            source,
        })?;
    write_atomic(&files.hostname, format!("{hostname}\n").as_bytes())?;
    write_atomic(&files.resolv_conf, &resolv_conf(dns, &host.resolv_conf))?;
    if let Some(shm) = &files.shm {
        std::fs::create_dir_all(shm).map_err(|source| FilesError::Write {
            path: shm.clone(),
            source,
        })?;
        nix::mount::mount(
            Some("shm"),
            shm,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(format!("mode=1777,size={SHM_SIZE}").as_str()),
        )
        .map_err(|source| FilesError::Shm {
            path: shm.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Writes `hosts`: localhost entries plus the pod IP (if any) with the hostname; for a
/// host-network pod the host's own file.
pub fn write_hosts(
    files: &PodFiles,
    hostname: &str,
    host_network: bool,
    pod_ip: Option<&str>,
    host: &HostFiles,
) -> Result<(), FilesError> {
    let content = if host_network {
        std::fs::read(&host.hosts).unwrap_or_else(|_| hosts_file(hostname, None))
    } else {
        hosts_file(hostname, pod_ip)
    };
    write_atomic(&files.hosts, &content)
}

/// Gives the pod's files (`hostname`, `hosts`, `resolv.conf`) and the root of its shm tmpfs to
/// `uid:gid`: the host ids of the containers' root in a pod with its own user namespace, so
/// they are root's inside (0:0, as in a pod without one), as CRI-O does. Run after the last
/// write (`write_hosts` replaces `hosts`).
pub fn chown_to(files: &PodFiles, uid: u32, gid: u32) -> Result<(), FilesError> {
    let shm = files.shm.iter();
    for path in [&files.hostname, &files.hosts, &files.resolv_conf]
        .into_iter()
        .chain(shm)
    {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|source| FilesError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

fn hosts_file(hostname: &str, pod_ip: Option<&str>) -> Vec<u8> {
    let mut s = String::from(
        "# Kubernetes-managed hosts file (crius).\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    if let Some(ip) = pod_ip {
        s.push_str(&format!("{ip}\t{hostname}\n"));
    }
    s.into_bytes()
}

/// CRI: DNSConfig gives nameserver/search/options lines; an empty one means the host's file.
fn resolv_conf(dns: Option<&DnsConfig>, host: &Path) -> Vec<u8> {
    match dns {
        Some(d) if !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()) => {
            let mut s = String::new();
            if !d.searches.is_empty() {
                s.push_str(&format!("search {}\n", d.searches.join(" ")));
            }
            for server in &d.servers {
                s.push_str(&format!("nameserver {server}\n"));
            }
            if !d.options.is_empty() {
                s.push_str(&format!("options {}\n", d.options.join(" ")));
            }
            s.into_bytes()
        }
        _ => std::fs::read(host).unwrap_or_default(),
    }
}

fn write_atomic(path: &Path, content: &[u8]) -> Result<(), FilesError> {
    let err = |source| FilesError::Write {
        path: path.into(),
        source,
    };
    let tmp = path.with_extension("tmp");
    // 0644 whatever the umask: a container's non-root user reads them through the bind mount.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(err)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(err)?;
    f.write_all(content).map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)
}

/// Unmounts `shm` (if mounted) and deletes the pod directory. Idempotent.
pub fn remove(dir: &Path) -> Result<(), FilesError> {
    let shm = dir.join("shm");
    loop {
        match nix::mount::umount2(&shm, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
            Err(e) => {
                return Err(FilesError::Remove {
                    path: shm,
                    source: e.into(),
                });
            }
        }
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(FilesError::Remove {
            path: dir.into(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_config_becomes_resolv_conf_and_empty_means_host() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host-resolv");
        std::fs::write(&host, "nameserver 192.0.2.1\n").unwrap();
        let dns = DnsConfig {
            servers: vec!["10.10.10.10".into(), "10.10.10.11".into()],
            searches: vec!["google.com".into(), "example.org".into()],
            options: vec!["ndots:8".into()],
        };
        assert_eq!(
            String::from_utf8(resolv_conf(Some(&dns), &host)).unwrap(),
            "search google.com example.org\nnameserver 10.10.10.10\nnameserver 10.10.10.11\noptions ndots:8\n"
        );
        assert_eq!(
            resolv_conf(Some(&DnsConfig::default()), &host),
            b"nameserver 192.0.2.1\n"
        );
        assert_eq!(resolv_conf(None, &host), b"nameserver 192.0.2.1\n");
    }

    #[test]
    fn files_of_a_user_namespace_pod_belong_to_its_root() {
        use std::os::unix::fs::MetadataExt;
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root: chown and the shm tmpfs"
        );
        let tmp = tempfile::tempdir().unwrap();
        let host = HostFiles {
            resolv_conf: tmp.path().join("none"),
            hosts: tmp.path().join("none"),
        };
        let files = PodFiles::at(tmp.path().join("pods/u"), true);
        create(&files, "u", None, &host).unwrap();
        write_hosts(&files, "u", false, Some("10.85.0.9"), &host).unwrap();
        let result = chown_to(&files, 65536 * 5, 65536 * 6);
        let owners: Vec<_> = [
            &files.hostname,
            &files.hosts,
            &files.resolv_conf,
            files.shm.as_ref().unwrap(),
        ]
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| (m.uid(), m.gid())).unwrap())
        .collect();
        remove(&files.dir).unwrap();
        result.unwrap();
        assert_eq!(owners, vec![(65536 * 5, 65536 * 6); 4]);
    }

    #[test]
    fn files_are_written_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let host = HostFiles {
            resolv_conf: tmp.path().join("none"),
            hosts: tmp.path().join("hosts-host"),
        };
        std::fs::write(&host.hosts, "1.2.3.4 hosthost\n").unwrap();
        let files = PodFiles::at(tmp.path().join("pods/abc"), false);
        create(&files, "web-0", None, &host).unwrap();
        write_hosts(&files, "web-0", false, Some("10.85.0.4"), &host).unwrap();
        assert_eq!(std::fs::read_to_string(&files.hostname).unwrap(), "web-0\n");
        let hosts = std::fs::read_to_string(&files.hosts).unwrap();
        assert!(hosts.contains("127.0.0.1\tlocalhost\n"), "{hosts}");
        assert!(hosts.ends_with("10.85.0.4\tweb-0\n"), "{hosts}");
        assert_eq!(std::fs::read(&files.resolv_conf).unwrap(), b"");
        write_hosts(&files, "web-0", true, None, &host).unwrap();
        assert_eq!(
            std::fs::read_to_string(&files.hosts).unwrap(),
            "1.2.3.4 hosthost\n"
        );
        remove(&files.dir).unwrap();
        assert!(!files.dir.exists());
        remove(&files.dir).unwrap();
    }

    #[test]
    fn shm_is_a_64m_tmpfs_and_is_unmounted_on_remove() {
        assert!(nix::unistd::geteuid().is_root(), "needs root: mounts a tmpfs");
        let tmp = tempfile::tempdir().unwrap();
        let files = PodFiles::at(tmp.path().join("pods/abc"), true);
        create(&files, "h", None, &HostFiles::default()).unwrap();
        let shm = files.shm.clone().unwrap();
        let st = nix::sys::statvfs::statvfs(&shm).unwrap();
        assert_eq!(st.blocks() * st.fragment_size(), 64 << 20);
        remove(&files.dir).unwrap();
        assert!(!files.dir.exists());
    }
}
