//! Pinned pod namespaces: network, IPC and UTS namespaces (and, for a pod with its own user
//! namespace, that one too) that live as long as a bind mount of their nsfs file under
//! `<state>/ns/<sandbox-id>/{net,ipc,uts,user}`, with no process inside.
//!
//! Invariants:
//! - Namespaces are created on a short-lived `std::thread` that unshares itself, configures the new
//!   namespaces (hostname, loopback up, sysctls), bind-mounts them and exits. No tokio worker (or
//!   any other long-lived thread) ever changes namespace. With a pod user namespace the thread
//!   cannot unshare (a multithreaded process cannot enter a user namespace): a
//!   [`crate::userns::Holder`] process creates the mapped user namespace and the others inside
//!   it, and the thread joins those instead.
//! - [`pin`] either returns every requested namespace pinned or leaves nothing behind.
//! - [`unpin`] is idempotent: detaching what is mounted and unlinking what exists, so it also
//!   cleans up after a crash half-way through [`pin`].

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::sysctl::Sysctl;

#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("cannot create namespace directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot unshare {what} namespaces: {source}")]
    Unshare {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot set hostname {hostname:?} in the pod UTS namespace: {source}")]
    Hostname {
        hostname: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot bring up the loopback interface in the pod network namespace: {source}")]
    Loopback {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set sysctl {name}={value:?} in the pod namespaces: {source}")]
    Sysctl {
        name: String,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot pin namespace at {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot unpin namespace at {path}: {source}")]
    Unpin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("namespace thread failed: {0}")]
    Thread(String),
    #[error("pod user namespace: {0}")]
    Userns(#[from] crate::userns::HolderError),
    #[error("cannot join the new {kind} namespace: {source}")]
    Join {
        kind: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// What to create.
#[derive(Debug, Clone)]
pub struct NsRequest {
    /// `<state>/ns/<sandbox-id>`; created if missing.
    pub dir: PathBuf,
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
    /// Set inside the new UTS namespace (only with `uts`).
    pub hostname: Option<String>,
    /// Already validated against the namespaces requested.
    pub sysctls: Vec<Sysctl>,
    /// A pod user namespace with these mappings, owning the other new namespaces.
    pub userns: Option<crate::userns::Mappings>,
}

/// The pinned namespace files; `None` means the pod uses the host's namespace of that kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PinnedNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// The pod's user namespace (absent in records written before user namespaces existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<PathBuf>,
}

impl PinnedNamespaces {
    /// Every pinned namespace file.
    pub fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.net, &self.ipc, &self.uts, &self.user]
            .into_iter()
            .flatten()
    }
}

const KINDS: [&str; 4] = ["net", "ipc", "uts", "user"];

/// Creates, configures and pins the requested namespaces. Nothing is left behind on error.
pub fn pin(req: NsRequest) -> Result<PinnedNamespaces, NsError> {
    if !(req.net || req.ipc || req.uts || req.userns.is_some()) {
        return Ok(PinnedNamespaces::default());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&req.dir)
        .map_err(|source| NsError::Dir {
            path: req.dir.clone(),
            source,
        })?;
    let dir = req.dir.clone();
    let result = std::thread::Builder::new()
        .name("crius-pinns".into())
        .spawn(move || pin_on_this_thread(&req))
        .map_err(|e| NsError::Thread(e.to_string()))?
        .join()
        .unwrap_or_else(|_| Err(NsError::Thread("namespace thread panicked".into())));
    if result.is_err()
        && let Err(e) = unpin(&dir)
    {
        tracing::warn!(error = %e, "cleaning up after a failed namespace pin");
    }
    result
}

/// Runs on a thread that is discarded afterwards: it ends up inside the pod's namespaces.
fn pin_on_this_thread(req: &NsRequest) -> Result<PinnedNamespaces, NsError> {
    let mut flags = CloneFlags::empty();
    let mut names = Vec::new();
    for (wanted, flag, name) in [
        (req.net, CloneFlags::CLONE_NEWNET, "net"),
        (req.ipc, CloneFlags::CLONE_NEWIPC, "ipc"),
        (req.uts, CloneFlags::CLONE_NEWUTS, "uts"),
    ] {
        if wanted {
            flags |= flag;
            names.push(name);
        }
    }
    // With a pod user namespace the holder owns the new namespaces until they are pinned.
    let holder = match &req.userns {
        Some(maps) => {
            let holder = crate::userns::Holder::spawn(maps, flags)?;
            for (name, flag) in names.iter().zip(flag_list(req)) {
                let join = |source| NsError::Join { kind: name, source };
                let f = std::fs::File::open(holder.ns_path(name)).map_err(join)?;
                nix::sched::setns(&f, flag).map_err(|e| join(e.into()))?;
            }
            Some(holder)
        }
        None => {
            nix::sched::unshare(flags).map_err(|source| NsError::Unshare {
                what: names.join("+"),
                source,
            })?;
            None
        }
    };
    if req.uts
        && let Some(hostname) = &req.hostname
    {
        nix::unistd::sethostname(hostname).map_err(|source| NsError::Hostname {
            hostname: hostname.clone(),
            source,
        })?;
    }
    if req.net {
        loopback_up().map_err(|source| NsError::Loopback { source })?;
    }
    for s in &req.sysctls {
        // /proc/sys resolves net and IPC sysctls against the namespaces of the calling thread.
        let path = Path::new("/proc/sys").join(&s.rel_path);
        std::fs::write(&path, s.value.as_bytes()).map_err(|source| NsError::Sysctl {
            name: s.name.clone(),
            value: s.value.clone(),
            source,
        })?;
    }
    let mut pinned = PinnedNamespaces::default();
    if let Some(holder) = &holder {
        let target = req.dir.join("user");
        bind_ns(&holder.ns_path("user"), &target)?;
        pinned.user = Some(target);
    }
    for name in names {
        let target = req.dir.join(name);
        bind_ns(Path::new(&format!("/proc/thread-self/ns/{name}")), &target)?;
        match name {
            "net" => pinned.net = Some(target),
            "ipc" => pinned.ipc = Some(target),
            _ => pinned.uts = Some(target),
        }
    }
    Ok(pinned)
}

/// The clone flags of the requested namespaces, in the order of [`pin_on_this_thread`]'s names.
fn flag_list(req: &NsRequest) -> Vec<CloneFlags> {
    [
        (req.net, CloneFlags::CLONE_NEWNET),
        (req.ipc, CloneFlags::CLONE_NEWIPC),
        (req.uts, CloneFlags::CLONE_NEWUTS),
    ]
    .into_iter()
    .filter_map(|(w, f)| w.then_some(f))
    .collect()
}

fn bind_ns(source: &Path, target: &Path) -> Result<(), NsError> {
    let err = |source| NsError::Pin {
        path: target.into(),
        source,
    };
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(target)
        .map_err(err)?;
    nix::mount::mount(Some(source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| err(e.into()))
}

/// Sets IFF_UP on `lo` in the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh, valid fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write an ifreq we own.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether `path` is a mounted namespace file (and not a leftover empty file).
pub fn is_pinned(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Detaches and removes every pinned namespace file in `dir`, then `dir` itself. Idempotent.
pub fn unpin(dir: &Path) -> Result<(), NsError> {
    for kind in KINDS {
        let path = dir.join(kind);
        // Unmount until nothing is stacked on the file any more (EINVAL: not a mount point).
        loop {
            match nix::mount::umount2(&path, MntFlags::MNT_DETACH) {
                Ok(()) => continue,
                Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
                Err(e) => {
                    return Err(NsError::Unpin {
                        path,
                        source: e.into(),
                    });
                }
            }
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(NsError::Unpin { path, source }),
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NsError::Unpin {
            path: dir.into(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::fs::File;

    use super::*;
    use crate::sysctl::{OwnedNamespaces, validate};

    /// Panics when not root: these tests create and pin namespaces.
    fn require_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root: creates and pins namespaces"
        );
    }

    /// Runs `f` on a fresh thread that joined the namespace at `path`.
    fn inside<T: Send + 'static>(path: &Path, kind: CloneFlags, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = File::open(path).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(&file, kind).unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn pins_configures_and_unpins() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ns").join("abc");
        let sysctls = validate(
            &HashMap::from([
                (
                    "net.ipv4.ip_unprivileged_port_start".to_string(),
                    "80".to_string(),
                ),
                ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
            ]),
            OwnedNamespaces {
                net: true,
                ipc: true,
                uts: true,
            },
        )
        .unwrap();
        let pinned = pin(NsRequest {
            dir: dir.clone(),
            net: true,
            ipc: true,
            uts: true,
            hostname: Some("pod-host".into()),
            sysctls,
            userns: None,
        })
        .unwrap();
        let net = pinned.net.clone().unwrap();
        assert!(is_pinned(&net));
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let hostname = inside(&pinned.uts.clone().unwrap(), CloneFlags::CLONE_NEWUTS, || {
            nix::unistd::gethostname().unwrap().into_string().unwrap()
        });
        assert_eq!(hostname, "pod-host");
        assert_eq!(
            std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
            host
        );
        let port = inside(&net, CloneFlags::CLONE_NEWNET, || {
            let lo = std::net::TcpListener::bind("127.0.0.1:0").map(|_| ());
            (
                std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap(),
                lo,
            )
        });
        assert_eq!(port.0.trim(), "80");
        assert!(port.1.is_ok(), "loopback is up: {:?}", port.1);
        let rmid = inside(&pinned.ipc.clone().unwrap(), CloneFlags::CLONE_NEWIPC, || {
            std::fs::read_to_string("/proc/sys/kernel/shm_rmid_forced").unwrap()
        });
        assert_eq!(rmid.trim(), "1");
        unpin(&dir).unwrap();
        assert!(!dir.exists());
        unpin(&dir).unwrap();
    }

    /// The inode of the user namespace that owns the namespace file at `path`.
    fn owner_ino(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        const NS_GET_USERNS: libc::c_ulong = 0xb701;
        let f = File::open(path).unwrap();
        // SAFETY: NS_GET_USERNS on an nsfs fd returns a new fd we own.
        let raw = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_USERNS) };
        assert!(raw >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: fresh fd.
        let owner = unsafe { File::from_raw_fd(raw) };
        owner.metadata().unwrap().ino()
    }

    #[test]
    fn a_pod_user_namespace_owns_the_pod_namespaces() {
        use std::os::unix::fs::MetadataExt;
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("u");
        let r = crate::userns::IdRange {
            container_id: 0,
            host_id: 65536 * 5,
            length: 65536,
        };
        let sysctls = validate(
            &HashMap::from([("net.ipv4.ping_group_range".to_string(), "0 0".to_string())]),
            OwnedNamespaces {
                net: true,
                ipc: true,
                uts: true,
            },
        )
        .unwrap();
        let pinned = pin(NsRequest {
            dir: dir.clone(),
            net: true,
            ipc: true,
            uts: true,
            hostname: Some("userns-pod".into()),
            sysctls,
            userns: Some(crate::userns::Mappings { uids: r, gids: r }),
        })
        .unwrap();
        let user = pinned.user.clone().unwrap();
        assert!(is_pinned(&user));
        let user_ino = std::fs::metadata(&user).unwrap().ino();
        for p in [&pinned.net, &pinned.ipc, &pinned.uts] {
            assert_eq!(
                owner_ino(p.as_ref().unwrap()),
                user_ino,
                "{p:?} is owned by the pod userns"
            );
        }
        let hostname = inside(&pinned.uts.clone().unwrap(), CloneFlags::CLONE_NEWUTS, || {
            nix::unistd::gethostname().unwrap().into_string().unwrap()
        });
        assert_eq!(hostname, "userns-pod");
        let range = inside(&pinned.net.clone().unwrap(), CloneFlags::CLONE_NEWNET, || {
            std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap()
        });
        assert_eq!(range.split_whitespace().collect::<Vec<_>>(), ["0", "0"]);
        unpin(&dir).unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn failed_sysctl_leaves_nothing() {
        require_root();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("x");
        let sysctls = validate(
            &HashMap::from([("net.ipv4.no_such_sysctl".to_string(), "1".to_string())]),
            OwnedNamespaces {
                net: true,
                ipc: false,
                uts: false,
            },
        )
        .unwrap();
        let e = pin(NsRequest {
            dir: dir.clone(),
            net: true,
            ipc: false,
            uts: false,
            hostname: None,
            sysctls,
            userns: None,
        })
        .unwrap_err();
        assert!(matches!(e, NsError::Sysctl { .. }), "{e}");
        assert!(!dir.exists());
    }
}
