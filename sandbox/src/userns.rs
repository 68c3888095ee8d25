//! The pod user namespace (CRI `NamespaceOption.userns_options`, mode POD): validation of the
//! kubelet's id mappings and the short-lived holder process that creates the namespace.
//!
//! Invariants:
//! - [`validate`] has no side effects. A mapping that passes maps container id 0, is one range
//!   per kind, fits in u32 on both sides and never maps onto host id 0. Which host ids a pod
//!   gets is the kubelet's choice (it hands out multiples of 65536 from its own range; critest
//!   maps from 1000), as in containerd and CRI-O.
//! - A user namespace can only be created or entered by a single-threaded process, and the
//!   daemon has many threads: [`Holder::spawn`] forks a child that unshares a user namespace and
//!   waits until the parent has written its uid/gid maps. Only then does it unshare the pod's
//!   net/IPC/UTS namespaces, so those are owned by the pod's user namespace (a container root
//!   can mount sysfs, mqueue, proc in them) and nothing ever runs in the namespace unmapped.
//!   The pinning thread joins the child's namespaces and bind-mounts them; dropping the
//!   [`Holder`] kills and reaps the child, which never leaves its raw-syscall loop (it is a fork
//!   of a multithreaded process: no allocation, no locks).

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use cri_api::v1::{IdMapping, NamespaceMode, UserNamespace};
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// One id range: container ids `container_id..container_id+length` are host ids
/// `host_id..host_id+length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdRange {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

impl IdRange {
    /// The line written to `/proc/<pid>/{uid,gid}_map`.
    pub fn map_line(&self) -> String {
        format!("{} {} {}\n", self.container_id, self.host_id, self.length)
    }

    /// The host id container id `id` is mapped to, if it is mapped.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        let off = id.checked_sub(self.container_id)?;
        (off < self.length).then(|| self.host_id + off)
    }
}

/// A pod user namespace's mappings, as validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mappings {
    pub uids: IdRange,
    pub gids: IdRange,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernsError {
    #[error(
        "user namespace mode {0} is not supported: a user namespace is the pod's (POD) or the host's (NODE)"
    )]
    Mode(&'static str),
    #[error(
        "user namespace mode POD needs the pod's own {0} namespace: the host's is owned by the host user namespace"
    )]
    HostNamespace(&'static str),
    #[error("user namespace {kind} mappings: {reason}")]
    Mapping { kind: &'static str, reason: String },
}

/// The pod's user namespace mappings: `None` for the host's user namespace (mode NODE, or no
/// options), the validated mappings for mode POD. CONTAINER and TARGET are refused, as
/// containerd does: kubelet sends only POD and NODE.
pub fn validate(opts: Option<&UserNamespace>) -> Result<Option<Mappings>, UsernsError> {
    let Some(opts) = opts else { return Ok(None) };
    match NamespaceMode::try_from(opts.mode) {
        Ok(NamespaceMode::Node) => Ok(None),
        Ok(NamespaceMode::Pod) => Ok(Some(Mappings {
            uids: range("uid", &opts.uids)?,
            gids: range("gid", &opts.gids)?,
        })),
        Ok(NamespaceMode::Container) => Err(UsernsError::Mode("CONTAINER")),
        Ok(NamespaceMode::Target) => Err(UsernsError::Mode("TARGET")),
        Err(_) => Err(UsernsError::Mode("(unknown)")),
    }
}

fn range(kind: &'static str, maps: &[IdMapping]) -> Result<IdRange, UsernsError> {
    let bad = |reason: String| UsernsError::Mapping { kind, reason };
    let [m] = maps else {
        return Err(bad(format!("exactly one range is supported, got {}", maps.len())));
    };
    let r = IdRange {
        container_id: m.container_id,
        host_id: m.host_id,
        length: m.length,
    };
    if r.length == 0 {
        return Err(bad("length is 0".into()));
    }
    if r.container_id != 0 {
        return Err(bad(format!(
            "the range must start at container id 0 (root), got {}",
            r.container_id
        )));
    }
    let end = u64::from(r.host_id) + u64::from(r.length);
    if end > u64::from(u32::MAX) {
        return Err(bad(format!(
            "host range {}+{} does not fit in 32 bits",
            r.host_id, r.length
        )));
    }
    if r.host_id == 0 {
        return Err(bad(
            "host range starts at 0: the container's root would be the host's root".into(),
        ));
    }
    Ok(r)
}

/// Lets the pod's containers' root (the mapped `gid` on the host) search `dir`, a per-pod dir
/// under `state` (pinned namespaces, pod files): the container is set up by its root, inside
/// the user namespace, and opens what its spec names by path. `dir` becomes 0710 with group
/// `gid`, its parent 0711 (searchable, not listable), as containerd does for bundles.
pub fn open_dir_to_group(dir: &std::path::Path, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = dir.parent() {
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711))?;
    }
    std::os::unix::fs::lchown(dir, None, Some(gid))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o710))
}

/// A child process that owns a fresh, mapped user namespace and the pod namespaces created in
/// it. Killed and reaped on drop.
#[derive(Debug)]
pub struct Holder {
    pid: Pid,
    /// The write end of the child's `go` pipe: the child lives while it is open.
    _go: OwnedFd,
}

#[derive(Debug, thiserror::Error)]
pub enum HolderError {
    #[error("cannot create the user namespace holder process: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("cannot {step} in the pod user namespace holder: {source}")]
    Child {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Map {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Holder {
    /// Forks the holder: it unshares a user namespace, which gets `maps`, then unshares `flags`
    /// (net/IPC/UTS) inside it and waits to be killed.
    pub fn spawn(maps: &Mappings, flags: CloneFlags) -> Result<Holder, HolderError> {
        let (ready_r, ready_w) = pipe().map_err(HolderError::Spawn)?;
        let (go_r, go_w) = pipe().map_err(HolderError::Spawn)?;
        // SAFETY: the child runs only async-signal-safe raw syscalls (see `child`) and exits
        // with _exit; it never returns into Rust code of this process.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(HolderError::Spawn(std::io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: as above; the fds are valid in the child.
            unsafe {
                // The parent's ends: with them closed, the parent's death is EOF on `go`.
                libc::close(ready_r.as_raw_fd());
                libc::close(go_w.as_raw_fd());
                child(ready_w.as_raw_fd(), go_r.as_raw_fd(), flags.bits())
            }
        }
        drop((ready_w, go_r));
        // From here on, dropping the holder kills and reaps the child.
        let holder = Holder {
            pid: Pid::from_raw(pid),
            _go: go_w,
        };
        status(&ready_r).map_err(|source| HolderError::Child {
            step: "unshare a user namespace",
            source,
        })?;
        for (file, r) in [("uid_map", &maps.uids), ("gid_map", &maps.gids)] {
            let path = PathBuf::from(format!("/proc/{pid}/{file}"));
            // One write(2) of the whole line: the kernel takes a map in a single write.
            File::options()
                .write(true)
                .open(&path)
                .and_then(|mut f| f.write_all(r.map_line().as_bytes()))
                .map_err(|source| HolderError::Map { path, source })?;
        }
        write_byte(&holder._go).map_err(HolderError::Spawn)?;
        status(&ready_r).map_err(|source| HolderError::Child {
            step: "unshare the pod namespaces",
            source,
        })?;
        Ok(holder)
    }

    /// `/proc/<pid>/ns/<kind>` of the holder.
    pub fn ns_path(&self, kind: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/{kind}", self.pid))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = kill(self.pid, Signal::SIGKILL);
        // ECHILD: someone else reaped it; either way it is gone.
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// The holder child. Raw syscalls only: this is a fork of a multithreaded process.
///
/// # Safety
/// Call only in a freshly forked child, with valid pipe fds.
unsafe fn child(ready: i32, go: i32, flags: i32) -> ! {
    // SAFETY: raw syscalls on fds this process owns; no allocation, no locks.
    unsafe {
        // Killed with the thread that forked it, should the daemon die before dropping it.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        let report = |rc: i32| {
            let errno = if rc == 0 { 0 } else { *libc::__errno_location() };
            let b = errno.to_ne_bytes();
            libc::write(ready, b.as_ptr().cast(), b.len());
            if errno != 0 {
                libc::_exit(1);
            }
        };
        report(libc::unshare(libc::CLONE_NEWUSER));
        let mut b = [0u8; 1];
        if libc::read(go, b.as_mut_ptr().cast(), 1) != 1 {
            libc::_exit(1);
        }
        report(if flags == 0 { 0 } else { libc::unshare(flags) });
        // Wait for SIGKILL; EOF (the daemon died) ends it too.
        while libc::read(go, b.as_mut_ptr().cast(), 1) > 0 {}
        libc::_exit(0)
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds that we own from here on.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fds, owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn write_byte(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: write of one byte from a local buffer.
    if unsafe { libc::write(fd.as_raw_fd(), [1u8].as_ptr().cast(), 1) } != 1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads one status report of the child: its errno, 0 for success.
fn status(fd: &OwnedFd) -> std::io::Result<()> {
    let mut b = [0u8; 4];
    // SAFETY: read into a local buffer of the given size.
    let n = unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
    match (n, i32::from_ne_bytes(b)) {
        (4, 0) => Ok(()),
        (4, errno) => Err(std::io::Error::from_raw_os_error(errno)),
        (n, _) if n < 0 => Err(std::io::Error::last_os_error()),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the holder exited",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(mode: NamespaceMode, uids: Vec<IdMapping>, gids: Vec<IdMapping>) -> UserNamespace {
        UserNamespace {
            mode: mode as i32,
            uids,
            gids,
        }
    }

    fn m(container_id: u32, host_id: u32, length: u32) -> IdMapping {
        IdMapping {
            host_id,
            container_id,
            length,
        }
    }

    #[test]
    fn node_and_absent_mean_the_host() {
        assert_eq!(validate(None), Ok(None));
        assert_eq!(
            validate(Some(&opts(NamespaceMode::Node, vec![], vec![]))),
            Ok(None)
        );
    }

    #[test]
    fn kubelet_mapping_is_accepted() {
        let got = validate(Some(&opts(
            NamespaceMode::Pod,
            vec![m(0, 65536 * 3, 65536)],
            vec![m(0, 65536 * 4, 65536)],
        )))
        .unwrap()
        .unwrap();
        assert_eq!(got.uids.map_line(), "0 196608 65536\n");
        assert_eq!(got.gids.host_id, 262144);
        assert_eq!(got.uids.to_host(0), Some(196608));
        assert_eq!(got.uids.to_host(65535), Some(196608 + 65535));
        assert_eq!(got.uids.to_host(65536), None);
    }

    #[test]
    fn container_and_target_modes_are_refused() {
        for mode in [NamespaceMode::Container, NamespaceMode::Target] {
            let e = validate(Some(&opts(
                mode,
                vec![m(0, 65536, 65536)],
                vec![m(0, 65536, 65536)],
            )));
            assert!(matches!(e, Err(UsernsError::Mode(_))), "{mode:?}: {e:?}");
        }
    }

    #[test]
    fn bad_mappings_are_refused_with_the_reason() {
        let ok = || vec![m(0, 65536, 65536)];
        let cases: Vec<(Vec<IdMapping>, Vec<IdMapping>, &str)> = vec![
            (vec![], ok(), "exactly one range"),
            (ok(), vec![], "exactly one range"),
            (
                vec![m(0, 65536, 10), m(10, 131072, 10)],
                ok(),
                "exactly one range",
            ),
            (vec![m(1, 65536, 65536)], ok(), "container id 0"),
            (ok(), vec![m(0, 65536, 0)], "length is 0"),
            (vec![m(0, u32::MAX - 10, 65536)], ok(), "32 bits"),
            (vec![m(0, 4_294_901_760, 65536)], ok(), "32 bits"),
            (vec![m(0, 0, 65536)], ok(), "host's root"),
            (ok(), vec![m(0, 0, 1)], "host's root"),
        ];
        for (uids, gids, want) in cases {
            let e = validate(Some(&opts(NamespaceMode::Pod, uids.clone(), gids.clone())))
                .expect_err("must be refused");
            assert!(e.to_string().contains(want), "{uids:?} {gids:?}: {e}");
        }
    }

    #[test]
    fn holder_creates_a_mapped_user_namespace_owning_the_others() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root: creates user namespaces"
        );
        let maps = Mappings {
            uids: IdRange {
                container_id: 0,
                host_id: 65536 * 7,
                length: 65536,
            },
            gids: IdRange {
                container_id: 0,
                host_id: 65536 * 8,
                length: 65536,
            },
        };
        let h = Holder::spawn(&maps, CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS).unwrap();
        let pid = h.pid;
        let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
        assert_eq!(
            uid_map.split_whitespace().collect::<Vec<_>>(),
            ["0", "458752", "65536"]
        );
        let gid_map = std::fs::read_to_string(format!("/proc/{pid}/gid_map")).unwrap();
        assert_eq!(
            gid_map.split_whitespace().collect::<Vec<_>>(),
            ["0", "524288", "65536"]
        );
        let me = std::fs::read_link("/proc/self/ns/net").unwrap();
        assert_ne!(std::fs::read_link(h.ns_path("net")).unwrap(), me);
        assert_ne!(
            std::fs::read_link(h.ns_path("user")).unwrap(),
            std::fs::read_link("/proc/self/ns/user").unwrap()
        );
        drop(h);
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}
