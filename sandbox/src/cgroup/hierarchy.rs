//! Where this host's cgroups live: every mounted cgroup v1 hierarchy (its mount point and the
//! controllers it carries) and the unified v2 hierarchy, read from `/proc/self/mountinfo`. The
//! one place the daemon decides cgroup v1 against v2, finds a controller's hierarchy, joins a
//! cgroup path below a mount point and reads which cgroup a process is in.
//!
//! Invariants: a cgroup path is joined below a mount point only when every component is a plain
//! name (never `..`, never a second root), so a joined path stays inside its hierarchy; the host's
//! hierarchies are read once per process ([`Hierarchies::host`]): cgroup filesystems are mounted
//! at boot and do not move under a running daemon.

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use super::CgroupError;

/// Where cgroup filesystems are mounted: the unified hierarchy itself on a pure v2 host, a tmpfs
/// holding one mount per v1 hierarchy (and `unified` on a hybrid host) otherwise.
pub const ROOT: &str = "/sys/fs/cgroup";

/// Controllers libcontainer's v1 manager creates a container cgroup in.
pub const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "memory",
    "pids",
    "blkio",
    "freezer",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
];

/// One mounted cgroup v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mount {
    pub mount: PathBuf,
    /// The filesystem's options: its controllers (`cpu`, `cpuacct`), `name=<name>` for a named
    /// hierarchy, and flags such as `rw` or `xattr` (which never collide with a controller name).
    pub options: Vec<String>,
}

impl V1Mount {
    /// Whether this hierarchy carries `controller` (or, as `name=systemd`, is that named one).
    pub fn has(&self, controller: &str) -> bool {
        self.options.iter().any(|o| o == controller)
    }

    /// Whether libcontainer manages this hierarchy: it carries controllers, all of them ones
    /// libcontainer creates a container cgroup in (a named hierarchy such as `name=systemd` is not).
    fn managed(&self) -> bool {
        let mut controllers = self
            .options
            .iter()
            .filter(|o| V1_CONTROLLERS.contains(&o.as_str()) || o.starts_with("name="))
            .peekable();
        controllers.peek().is_some() && controllers.all(|c| V1_CONTROLLERS.contains(&c.as_str()))
    }
}

/// The mounted cgroup hierarchies of this host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hierarchies {
    /// Every mounted cgroup v1 hierarchy, in mountinfo order, one entry per mount point.
    pub v1: Vec<V1Mount>,
    /// Mount point of the cgroup v2 hierarchy, if any ([`ROOT`] when mounted there).
    pub unified: Option<PathBuf>,
}

impl Hierarchies {
    /// Reads `/proc/self/mountinfo`.
    pub fn detect() -> Result<Hierarchies, CgroupError> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::Mounts)?;
        Ok(Self::parse(&info))
    }

    /// This process's hierarchies, detected on first use. Unreadable mounts are logged and
    /// leave no hierarchy (every cgroup file then reads as missing).
    pub fn host() -> &'static Hierarchies {
        static HOST: OnceLock<Hierarchies> = OnceLock::new();
        HOST.get_or_init(|| {
            Self::detect().unwrap_or_else(|e| {
                tracing::error!(error = %e, "no cgroup hierarchy found");
                Hierarchies::default()
            })
        })
    }

    /// The cgroup mounts listed in mountinfo text.
    pub fn parse(mountinfo: &str) -> Hierarchies {
        let mut h = Hierarchies::default();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mut right = right.split(' ');
            let (Some(fstype), _source, options) = (right.next(), right.next(), right.next()) else {
                continue;
            };
            let Some(mount) = left.split(' ').nth(4).map(unescape_mountinfo) else {
                continue;
            };
            match fstype {
                "cgroup" if !h.v1.iter().any(|m| m.mount == mount) => h.v1.push(V1Mount {
                    mount,
                    options: options.unwrap_or("").split(',').map(str::to_string).collect(),
                }),
                // The one at ROOT wins: that is where every tool looks for it.
                "cgroup2" if h.unified.is_none() || mount == Path::new(ROOT) => h.unified = Some(mount),
                _ => {}
            }
        }
        h
    }

    /// Pure cgroup v2: the unified hierarchy is mounted at [`ROOT`] (a hybrid host mounts it
    /// below, at `ROOT/unified`, next to its v1 hierarchies).
    pub fn unified_only(&self) -> bool {
        self.unified.as_deref() == Some(Path::new(ROOT))
    }

    /// Every hierarchy's mount point: the v1 ones, then the unified one.
    pub fn mounts(&self) -> impl Iterator<Item = &Path> {
        self.v1
            .iter()
            .map(|m| m.mount.as_path())
            .chain(self.unified.as_deref())
    }

    /// The mount point of the v1 hierarchy carrying `controller`, one below [`ROOT`] first.
    pub fn controller(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .filter(|m| m.has(controller))
            .min_by_key(|m| !m.mount.starts_with(ROOT))
            .map(|m| m.mount.as_path())
    }

    /// `cgroup`'s directory in the v1 hierarchy carrying `controller`, or with `controller`
    /// empty in the unified hierarchy. `None` when there is no such hierarchy or the path is
    /// not a plain cgroup path. The directory may not exist.
    pub fn dir(&self, controller: &str, cgroup: &str) -> Option<PathBuf> {
        let mount = if controller.is_empty() {
            self.unified.as_deref()?
        } else {
            self.controller(controller)?
        };
        join(mount, cgroup)
    }

    /// The v1 hierarchies below [`ROOT`] that libcontainer manages, sorted (empty on a pure v2
    /// host). A container's cgroup exists in each of them once it is created.
    pub fn managed_v1(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self
            .v1
            .iter()
            .filter(|m| m.mount.starts_with(ROOT) && m.mount != Path::new(ROOT) && m.managed())
            .map(|m| m.mount.clone())
            .collect();
        out.sort();
        out
    }

    /// The hierarchies systemd tracks processes in: the unified one and, on a v1 host, the
    /// `name=systemd` one.
    pub fn systemd_tracked(&self) -> Vec<&Path> {
        self.v1
            .iter()
            .filter(|m| !self.unified_only() && m.has("name=systemd"))
            .map(|m| m.mount.as_path())
            .chain(self.unified.as_deref())
            .collect()
    }
}

/// `cgroup` (absolute or not) below `mount`; `None` unless every component is a plain name.
/// `/` is the hierarchy's root.
pub fn join(mount: &Path, cgroup: &str) -> Option<PathBuf> {
    let rel = Path::new(cgroup.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(mount.join(rel))
}

/// Whether `/proc/<pid>/cgroup` text puts the process in the absolute `cgroup` or below it, in
/// any hierarchy. The path may also sit below a prefix: where a hierarchy is mounted from a
/// non-root cgroup (a bind of the daemon's own cgroup, say), `/proc` shows the full path while
/// crius names the cgroup relative to the mount. The match is on whole path components.
pub fn proc_in(proc_cgroup: &str, cgroup: &str) -> bool {
    let cgroup = cgroup.trim_end_matches('/');
    if !cgroup.starts_with('/') {
        return false;
    }
    proc_cgroup.lines().any(|l| {
        // `hierarchy-id:controllers:path`; the path may itself contain ':'.
        l.splitn(3, ':').nth(2).is_some_and(|p| {
            p.match_indices(cgroup)
                .any(|(at, _)| p[at + cgroup.len()..].is_empty() || p[at + cgroup.len()..].starts_with('/'))
        })
    })
}

/// A path field of `/proc/*/mountinfo`, which escapes space, tab, newline and backslash as `\ooo`.
pub fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(
        out,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
        31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
        32 30 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
        33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw shared:5 - cgroup cgroup rw,cpu,cpuacct\n\
        34 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
        35 25 0:30 / /mnt/elsewhere rw - cgroup cgroup rw,memory\n\
        36 30 0:31 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";

    const V2: &str = "22 20 0:20 / /sys rw - sysfs sysfs rw\n\
        25 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate\n\
        40 20 0:40 / /var/lib/x\\040y rw - ext4 /dev/vda rw\n";

    #[test]
    fn hybrid_host_is_v1_with_controllers_found_by_option() {
        let h = Hierarchies::parse(HYBRID);
        assert!(!h.unified_only());
        assert_eq!(h.unified.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(h.v1.len(), 5);
        assert_eq!(
            h.controller("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        // The same memory hierarchy also mounted elsewhere: the one below ROOT is used.
        assert_eq!(h.controller("memory"), Some(Path::new("/sys/fs/cgroup/memory")));
        assert_eq!(h.controller("hugetlb"), None);
        assert_eq!(
            h.dir("memory", "/crius/p/c"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/crius/p/c"))
        );
        assert_eq!(
            h.dir("", "/crius/p/c"),
            Some(PathBuf::from("/sys/fs/cgroup/unified/crius/p/c"))
        );
        assert_eq!(h.dir("memory", "/"), Some(PathBuf::from("/sys/fs/cgroup/memory")));
        assert_eq!(
            h.managed_v1(),
            [
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup/pids"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(
            h.systemd_tracked(),
            [
                Path::new("/sys/fs/cgroup/systemd"),
                Path::new("/sys/fs/cgroup/unified")
            ]
        );
        assert_eq!(h.mounts().count(), 6);
    }

    #[test]
    fn pure_v2_host_has_only_the_unified_hierarchy() {
        let h = Hierarchies::parse(V2);
        assert!(h.unified_only());
        assert!(h.v1.is_empty() && h.managed_v1().is_empty());
        assert_eq!(h.controller("memory"), None);
        assert_eq!(h.dir("memory", "/a"), None);
        assert_eq!(
            h.dir("", "/kubepods/p1/c1"),
            Some(PathBuf::from("/sys/fs/cgroup/kubepods/p1/c1"))
        );
        assert_eq!(h.systemd_tracked(), [Path::new(ROOT)]);
        assert_eq!(h.mounts().collect::<Vec<_>>(), [Path::new(ROOT)]);
    }

    #[test]
    fn unified_at_root_wins_over_an_earlier_one() {
        let info = "20 1 0:20 / /mnt/cg2 rw - cgroup2 cgroup2 rw\n\
            25 22 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert!(Hierarchies::parse(info).unified_only());
        assert!(Hierarchies::parse("").mounts().next().is_none());
    }

    #[test]
    fn escaping_cgroup_paths_are_refused() {
        let h = Hierarchies::parse(HYBRID);
        for bad in ["/a/../../x", "/..", "../x"] {
            assert_eq!(h.dir("memory", bad), None, "{bad:?}");
        }
        assert_eq!(join(Path::new("/m"), "a//b"), Some(PathBuf::from("/m/a/b")));
    }

    #[test]
    fn proc_cgroup_membership_is_by_whole_components() {
        let v1 = "4:memory:/crius/p/c\n1:name=systemd:/user.slice\n0::/\n";
        assert!(proc_in(v1, "/crius/p/c"));
        assert!(proc_in(v1, "/crius/p"), "below the pod cgroup");
        assert!(proc_in(v1, "/p/c"), "a hierarchy mounted from /crius");
        assert!(!proc_in(v1, "/rius/p/c"), "not a whole component");
        assert!(!proc_in(v1, "/crius/p/c2"));
        assert!(!proc_in(v1, "/"));
        assert!(!proc_in(v1, ""));
        assert!(!proc_in(v1, "crius/p/c"), "relative");
        let v2 = "0::/kubepods.slice/crius-abc.scope/sub\n";
        assert!(proc_in(v2, "/kubepods.slice/crius-abc.scope"));
        assert!(!proc_in("", "/x"));
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/a\040b/c"), Path::new("/a b/c"));
        assert_eq!(unescape_mountinfo("/plain"), Path::new("/plain"));
        assert_eq!(unescape_mountinfo(r"/end\04"), Path::new(r"/end\04"));
    }
}
