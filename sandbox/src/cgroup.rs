//! The pod cgroup: one directory per mounted hierarchy (each cgroup v1 controller mount and,
//! when writable, the unified v2 hierarchy) at the pod's cgroup parent. Under the cgroupfs
//! driver crius makes these directories; under the systemd driver systemd does (see `slice`),
//! and crius only reads, kills and stops. Where the hierarchies are mounted, and which one
//! holds a controller, is [`Hierarchies`]' business, for the whole daemon.
//!
//! The infra process never sits in the pod cgroup itself but in its leaf [`INFRA_LEAF`] (or its
//! own scope under systemd): cgroup v2 forbids processes in a cgroup whose children have
//! controllers enabled, and container cgroups are the pod cgroup's children.
//!
//! Invariants: a cgroup path is absolute, has no `.`/`..`/empty components, and is joined below
//! each hierarchy's mount point only; in cpuset, new directories get their parent's cpus/mems so
//! processes can join; [`remove`] is idempotent and only removes the pod's own directory.

use std::path::{Component, Path, PathBuf};

mod hierarchy;
pub use hierarchy::{Hierarchies, ROOT, V1_CONTROLLERS, V1Mount, join, proc_in, unescape_mountinfo};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup parent {path:?} is not a clean absolute cgroup path")]
    BadPath { path: String },
    #[error("cannot read the cgroup mounts: {0}")]
    Mounts(#[source] std::io::Error),
    #[error("cannot create cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot move pid {pid} into cgroup {path}: {source}")]
    Join {
        pid: i32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove cgroup {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Who creates and names the cgroups of pods and containers (`cgroup_manager` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// crius writes cgroupfs directories itself (v1 and v2).
    #[default]
    Cgroupfs,
    /// Pods are slices, containers and infra processes transient scopes, made by systemd.
    Systemd,
}

impl Driver {
    /// systemd when it is PID 1 (its runtime directory exists), else cgroupfs: containerd's rule.
    pub fn detect() -> Driver {
        if Path::new("/run/systemd/system").is_dir() {
            Driver::Systemd
        } else {
            Driver::Cgroupfs
        }
    }
}

/// The pod cgroup's child that holds the infra process under the cgroupfs driver.
pub const INFRA_LEAF: &str = "crius-infra";

/// How deep [`kill_all`] and [`remove`] look below a pod cgroup (pod → container → sub-cgroups).
const MAX_DEPTH: usize = 4;

/// Checks a cgroup path from the wire (`/kubepods/burstable/pod123`).
pub fn validate(path: &str) -> Result<PathBuf, CgroupError> {
    let bad = || CgroupError::BadPath {
        path: path.to_string(),
    };
    let p = Path::new(path);
    if !p.is_absolute() || path.len() > 1024 || path.contains(['\0', '\n']) || path.ends_with('/') {
        return Err(bad());
    }
    if path
        .split('/')
        .skip(1)
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad());
    }
    if p.components().skip(1).any(|c| !matches!(c, Component::Normal(_))) || p.components().count() < 2 {
        return Err(bad());
    }
    Ok(p.to_path_buf())
}

fn below(mount: &Path, cgroup: &Path) -> PathBuf {
    mount.join(cgroup.strip_prefix("/").unwrap_or(cgroup))
}

/// Whether the cgroup already exists in the first hierarchy (so crius did not create it).
pub fn exists(h: &Hierarchies, cgroup: &Path) -> bool {
    h.mounts().next().is_some_and(|m| below(m, cgroup).is_dir())
}

/// Creates the cgroup in every hierarchy. The unified hierarchy is skipped when not writable.
pub fn create(h: &Hierarchies, cgroup: &Path) -> Result<(), CgroupError> {
    for v1 in &h.v1 {
        create_in(&v1.mount, cgroup)?;
    }
    if let Some(unified) = &h.unified
        && let Err(e) = create_in(unified, cgroup)
    {
        tracing::debug!(error = %e, "unified cgroup hierarchy not usable for the pod cgroup");
    }
    Ok(())
}

fn create_in(mount: &Path, cgroup: &Path) -> Result<(), CgroupError> {
    let mut dir = mount.to_path_buf();
    for part in cgroup.components().skip(1) {
        let parent = dir.clone();
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => inherit_cpuset(&parent, &dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(CgroupError::Create { path: dir, source }),
        }
    }
    Ok(())
}

/// cgroup v1 cpuset: a new directory starts with empty cpus/mems and refuses processes.
fn inherit_cpuset(parent: &Path, dir: &Path) {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = dir.join(file);
        if std::fs::read_to_string(&own).is_ok_and(|v| v.trim().is_empty())
            && let Ok(v) = std::fs::read_to_string(parent.join(file))
        {
            let _ = std::fs::write(&own, v.trim());
        }
    }
}

/// The cgroup's directory in every hierarchy where it exists (where a process joins it).
pub fn dirs(h: &Hierarchies, cgroup: &Path) -> Vec<PathBuf> {
    h.mounts()
        .map(|m| below(m, cgroup))
        .filter(|d| d.is_dir())
        .collect()
}

/// SIGKILLs every process left in the cgroup (any hierarchy) and waits up to `wait` for it to
/// empty. For a cgroup crius owns: whatever is still inside belongs to the pod (an infra process
/// a crash kept out of the record, say). Returns whether the cgroup is empty.
pub fn kill_all(h: &Hierarchies, cgroup: &Path, wait: std::time::Duration) -> bool {
    let procs = || -> Vec<i32> {
        let mut all = Vec::new();
        for d in dirs(h, cgroup) {
            tree(&d, MAX_DEPTH, &mut all);
        }
        let mut pids: Vec<i32> = all
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    };
    let deadline = std::time::Instant::now() + wait;
    loop {
        let pids = procs();
        if pids.is_empty() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            tracing::warn!(cgroup = %cgroup.display(), ?pids, "processes left in the pod cgroup");
            return false;
        }
        for pid in pids {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// `dir` and its sub-directories down to `depth` levels, parents before children.
fn tree(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            tree(&e.path(), depth - 1, out);
        }
    }
}

/// Removes the cgroup's directory, and the empty cgroups left below it, from every hierarchy.
/// Idempotent; a cgroup that still has processes fails with EBUSY.
pub fn remove(h: &Hierarchies, cgroup: &Path) -> Result<(), CgroupError> {
    for mount in h.mounts() {
        let mut all = Vec::new();
        tree(&below(mount, cgroup), MAX_DEPTH, &mut all);
        // Children first: a cgroup directory can only go once it has none.
        for dir in all.into_iter().rev() {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(CgroupError::Remove { path: dir, source }),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_paths() {
        assert!(validate("/kubepods/burstable/pod1").is_ok());
        for bad in ["", "/", "rel/x", "/a/../b", "/a//b", "/a/./b", "/a/"] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn creates_lists_kills_and_removes_in_fake_hierarchies() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("cpuset"), tmp.path().join("unified"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("cpuset.cpus"), "0-1\n").unwrap();
        let h = Hierarchies {
            v1: vec![V1Mount {
                mount: a.clone(),
                options: vec!["rw".into(), "cpuset".into()],
            }],
            unified: Some(b.clone()),
        };
        let cg = validate("/crius/abc").unwrap();
        assert!(!exists(&h, &cg));
        create(&h, &cg).unwrap();
        assert!(exists(&h, &cg));
        assert!(b.join("crius/abc").is_dir());
        assert_eq!(dirs(&h, &cg), [a.join("crius/abc"), b.join("crius/abc")]);
        // An empty cgroup: nothing to kill.
        std::fs::write(a.join("crius/abc/cgroup.procs"), "").unwrap();
        assert!(kill_all(&h, &cg, std::time::Duration::ZERO));
        // A process listed in it is SIGKILLed (a fake cgroup.procs never empties itself).
        let mut child = std::process::Command::new("sleep").arg("100").spawn().unwrap();
        std::fs::write(b.join("crius/abc/cgroup.procs"), format!("{}\n", child.id())).unwrap();
        assert!(!kill_all(&h, &cg, std::time::Duration::from_millis(30)));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(9));
        std::fs::remove_file(a.join("crius/abc/cgroup.procs")).unwrap();
        std::fs::remove_file(b.join("crius/abc/cgroup.procs")).unwrap();
        remove(&h, &cg).unwrap();
        assert!(!a.join("crius/abc").exists());
        assert!(a.join("crius").is_dir(), "the shared parent stays");
        remove(&h, &cg).unwrap();
    }
}
