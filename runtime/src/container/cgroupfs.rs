//! The daemon's direct reads and writes of a container's cgroup files: usage for the stats
//! RPCs, limits for UpdateContainerResources, signals to its processes when the shim does not
//! answer, and a fallback removal. cgroup v1 (one hierarchy per controller mount) and v2 (the
//! unified hierarchy), as the host's [`Hierarchies`] say where each is mounted.
//!
//! Invariants: the cgroup path is joined below a hierarchy only when it has no `..` (see
//! [`crius_sandbox::cgroup::join`]); a missing file is "no data", never an error (the container
//! may have exited); writes go only to files of the container's own cgroup.

use std::path::{Path, PathBuf};

use cri_api::v1::LinuxContainerResources;
use crius_sandbox::cgroup::Hierarchies;

use super::ContainerError;

fn v2() -> bool {
    Hierarchies::host().unified_only()
}

/// `cgroup`'s directory in the hierarchy of `controller` (empty: the unified hierarchy).
fn dir(controller: &str, cgroup: &str) -> Option<PathBuf> {
    Hierarchies::host().dir(controller, cgroup)
}

fn read(controller: &str, cgroup: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(dir(controller, cgroup)?.join(file)).ok()
}

fn write(controller: &str, cgroup: &str, file: &str, value: &str) -> Result<(), ContainerError> {
    let d =
        dir(controller, cgroup).ok_or_else(|| ContainerError::Invalid(format!("bad cgroup {cgroup:?}")))?;
    let path = d.join(file);
    std::fs::write(&path, value).map_err(|source| ContainerError::Io {
        what: "write",
        path,
        source,
    })
}

/// CRI cpu shares (2..262144) → cgroup v2 cpu.weight (1..10000), the same curve libcontainer
/// (and runc/crun) use at create, so an update writes what a create with these shares wrote:
/// 2 → 1, 1024 (the default) → 100, 262144 → 10000.
pub fn shares_to_weight(shares: u64) -> u64 {
    match shares {
        0 => 100,
        1..=2 => 1,
        262_144.. => 10_000,
        s => {
            let l = (s as f64).log2();
            let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
            (10f64.powf(exponent).ceil() as u64).clamp(1, 10_000)
        }
    }
}

/// CRI `memory_swap_limit_in_bytes` is memory plus swap (as OCI `swap` and cgroup v1's
/// memsw); cgroup v2's `memory.swap.max` is swap alone. Needs a memory limit to subtract.
fn v2_swap_max(r: &LinuxContainerResources) -> Result<Option<i64>, ContainerError> {
    let (swap, limit) = (r.memory_swap_limit_in_bytes, r.memory_limit_in_bytes);
    if swap <= 0 {
        return Ok(None);
    }
    if limit <= 0 || swap < limit {
        return Err(ContainerError::Invalid(format!(
            "memory_swap_limit_in_bytes {swap} needs a memory limit no larger than it (memory_limit_in_bytes {limit})"
        )));
    }
    Ok(Some(swap - limit))
}

/// A cgroup file name from the request (`unified` keys, hugepage sizes): one path component
/// that names an interface file, never a way out of the container's cgroup directory.
fn plain_name(name: &str) -> Result<&str, ContainerError> {
    crate::spec::linux::cgroup_file_name(name)
        .ok_or_else(|| ContainerError::Invalid(format!("{name:?} is not a settable cgroup file")))
}

/// What makes `r` a bad request whatever the cgroup: `unified` keys and hugepage sizes that
/// are no plain file name, a v2 swap total below the memory limit. `unified` applies on v2
/// only (as at create), but a bad key is a bad request everywhere.
pub fn check(r: &LinuxContainerResources) -> Result<(), ContainerError> {
    for key in r.unified.keys() {
        plain_name(key)?;
    }
    for h in &r.hugepage_limits {
        plain_name(&h.page_size)?;
    }
    if v2() {
        v2_swap_max(r)?;
    }
    Ok(())
}

/// Applies new limits to the container's cgroup. Fields left at 0/empty are not changed.
pub fn apply(cgroup: &str, r: &LinuxContainerResources) -> Result<(), ContainerError> {
    // Checked before anything is written.
    check(r)?;
    if v2() {
        if r.cpu_shares > 0 {
            write(
                "",
                cgroup,
                "cpu.weight",
                &shares_to_weight(r.cpu_shares as u64).to_string(),
            )?;
        }
        if r.cpu_quota != 0 || r.cpu_period > 0 {
            let quota = if r.cpu_quota > 0 {
                r.cpu_quota.to_string()
            } else {
                "max".into()
            };
            let period = if r.cpu_period > 0 { r.cpu_period } else { 100_000 };
            write("", cgroup, "cpu.max", &format!("{quota} {period}"))?;
        }
        if !r.cpuset_cpus.is_empty() {
            write("", cgroup, "cpuset.cpus", &r.cpuset_cpus)?;
        }
        if !r.cpuset_mems.is_empty() {
            write("", cgroup, "cpuset.mems", &r.cpuset_mems)?;
        }
        if r.memory_limit_in_bytes > 0 {
            write("", cgroup, "memory.max", &r.memory_limit_in_bytes.to_string())?;
        }
        if let Some(swap) = v2_swap_max(r)? {
            write("", cgroup, "memory.swap.max", &swap.to_string())?;
        }
        for h in &r.hugepage_limits {
            let file = format!("hugetlb.{}.max", plain_name(&h.page_size)?);
            write("", cgroup, &file, &h.limit.to_string())?;
        }
        for (key, value) in &r.unified {
            write("", cgroup, plain_name(key)?, value)?;
        }
        return Ok(());
    }
    if r.cpu_shares > 0 {
        write("cpu", cgroup, "cpu.shares", &r.cpu_shares.to_string())?;
    }
    if r.cpu_period > 0 {
        write("cpu", cgroup, "cpu.cfs_period_us", &r.cpu_period.to_string())?;
    }
    if r.cpu_quota != 0 {
        write(
            "cpu",
            cgroup,
            "cpu.cfs_quota_us",
            &r.cpu_quota.max(-1).to_string(),
        )?;
    }
    if !r.cpuset_cpus.is_empty() {
        write("cpuset", cgroup, "cpuset.cpus", &r.cpuset_cpus)?;
    }
    if !r.cpuset_mems.is_empty() {
        write("cpuset", cgroup, "cpuset.mems", &r.cpuset_mems)?;
    }
    if r.memory_limit_in_bytes > 0 {
        write(
            "memory",
            cgroup,
            "memory.limit_in_bytes",
            &r.memory_limit_in_bytes.to_string(),
        )?;
    }
    Ok(())
}

/// The cgroup shims leave the daemon's for, when the daemon runs in a systemd service
/// (`/proc/self/cgroup` names a `.service`): `crius-shims` at the root of each hierarchy systemd
/// tracks processes in (the unified one; on a v1 host also `name=systemd`). Without systemd, or
/// outside a service, none: the shims stay where they are started, at no cost.
pub fn shim_dirs(proc_cgroup: &str, systemd_booted: bool) -> Vec<PathBuf> {
    shim_dirs_in(Hierarchies::host(), proc_cgroup, systemd_booted)
}

fn shim_dirs_in(h: &Hierarchies, proc_cgroup: &str, systemd_booted: bool) -> Vec<PathBuf> {
    let in_service = proc_cgroup.lines().any(|l| {
        (l.starts_with("0::") || l.contains(":name=systemd:")) && l.trim_end().ends_with(".service")
    });
    if !systemd_booted || !in_service {
        return Vec::new();
    }
    h.systemd_tracked()
        .into_iter()
        .filter(|m| m.is_dir())
        .map(|m| m.join("crius-shims"))
        .collect()
}

/// Every pid in the container's cgroup (v1 `pids`, `memory` or `freezer`, else v2).
pub fn pids(cgroup: &str) -> Vec<i32> {
    for controller in ["pids", "memory", "freezer", ""] {
        if let Some(text) = read(controller, cgroup, "cgroup.procs") {
            return text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        }
    }
    Vec::new()
}

/// Sends `signal` to the container without its shim: with `all` to every process in its cgroup,
/// else to `init` only while `init` is still in the cgroup (so a reused pid is never hit).
pub fn signal(cgroup: &str, init: i32, signal: i32, all: bool) {
    let Ok(sig) = nix::sys::signal::Signal::try_from(signal) else {
        return;
    };
    for pid in pids(cgroup) {
        if all || pid == init {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    }
}

/// The container cgroup's directories that exist, across all hierarchies.
fn dirs(cgroup: &str) -> Vec<PathBuf> {
    let h = Hierarchies::host();
    h.mounts()
        .filter_map(|m| crius_sandbox::cgroup::join(m, cgroup))
        .filter(|d| d.is_dir())
        .collect()
}

/// Removes the container's (empty) cgroup in every hierarchy, sub-cgroups first (the root of
/// a container whose cgroup v2 is delegated to it may have made some); missing or busy ones are
/// left.
pub fn remove(cgroup: &str) {
    for d in dirs(cgroup) {
        remove_tree(&d, 0);
    }
}

/// rmdir of `d` after its sub-dirs, deepest first; depth-bounded.
fn remove_tree(d: &Path, depth: usize) {
    if depth < 32 {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path(), depth + 1);
            }
        }
    }
    let _ = std::fs::remove_dir(d);
}

/// Kills every process in the container's cgroup and removes it, waiting up to `wait` for the
/// killed processes to leave it. False when some directory is still there.
pub fn kill_and_remove(cgroup: &str, wait: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + wait;
    loop {
        signal(cgroup, 0, libc::SIGKILL, true);
        // cgroup v2 (5.14+): the whole subtree, processes in sub-cgroups included.
        for d in dirs(cgroup) {
            let kill = d.join("cgroup.kill");
            if kill.exists() {
                let _ = std::fs::write(kill, "1");
            }
        }
        remove(cgroup);
        if dirs(cgroup).is_empty() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_mapping_matches_libcontainer() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(512), 59);
        assert_eq!(shares_to_weight(1024), 100);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn v2_swap_is_swap_alone_and_needs_a_limit() {
        let r = |limit, swap| LinuxContainerResources {
            memory_limit_in_bytes: limit,
            memory_swap_limit_in_bytes: swap,
            ..Default::default()
        };
        assert_eq!(v2_swap_max(&r(100, 300)).unwrap(), Some(200));
        assert_eq!(v2_swap_max(&r(100, 0)).unwrap(), None);
        assert!(v2_swap_max(&r(0, 300)).is_err());
        assert!(v2_swap_max(&r(300, 100)).is_err());
    }

    #[test]
    fn request_file_names_stay_in_the_cgroup() {
        assert_eq!(plain_name("memory.high").unwrap(), "memory.high");
        assert_eq!(plain_name("2MB").unwrap(), "2MB");
        for bad in [
            "",
            "../x",
            "a/b",
            ".",
            "..",
            "cgroup.procs",
            "cgroup.subtree_control",
            "x\n",
        ] {
            assert!(plain_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shims_leave_only_a_systemd_service() {
        let hybrid = Hierarchies::parse(
            "30 25 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n\
             31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
             32 30 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
             33 30 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
        );
        let v2 = Hierarchies::parse("25 22 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n");
        let service = "0::/system.slice/crius.service\n";
        for h in [&hybrid, &v2] {
            assert!(shim_dirs_in(h, service, false).is_empty(), "no systemd");
            assert!(
                shim_dirs_in(h, "0::/user.slice/session-1.scope\n", true).is_empty(),
                "not a service"
            );
            assert!(shim_dirs_in(h, "12:memory:/\n1:name=systemd:/\n0::/\n", true).is_empty());
        }
        // Where it applies, every hierarchy systemd tracks that exists here; fake mount points
        // under a temporary directory stand in for the host's.
        let tmp = tempfile::tempdir().unwrap();
        let fake = |h: &Hierarchies| Hierarchies {
            v1: h
                .v1
                .iter()
                .map(|m| crius_sandbox::cgroup::V1Mount {
                    mount: crius_sandbox::cgroup::join(tmp.path(), &m.mount.to_string_lossy()).unwrap(),
                    options: m.options.clone(),
                })
                .collect(),
            unified: h
                .unified
                .as_ref()
                .map(|u| tmp.path().join(u.strip_prefix("/").unwrap())),
        };
        let (hybrid, v2) = (fake(&hybrid), fake(&v2));
        for m in hybrid.mounts() {
            std::fs::create_dir_all(m).unwrap();
        }
        let root = tmp.path().join("sys/fs/cgroup");
        assert_eq!(
            shim_dirs_in(&hybrid, service, true),
            [root.join("systemd/crius-shims"), root.join("unified/crius-shims")]
        );
        // The fake v2 root is not at the real ROOT, so it counts as a hybrid host's unified one.
        assert_eq!(shim_dirs_in(&v2, service, true), [root.join("crius-shims")]);
    }
}
