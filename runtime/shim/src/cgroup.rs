//! Read-only looks at the container's cgroup from the shim: the OOM-kill counter and the
//! processes to signal for `kill --all`. Works on cgroup v1 (per-controller hierarchies under
//! `/sys/fs/cgroup/<controller>`) and v2 (unified at `/sys/fs/cgroup`).
//!
//! Invariant: the cgroup path is the container's absolute `linux.cgroupsPath`; it is only ever
//! joined under the fixed cgroupfs root after dropping its leading `/` and refusing `..`.

use std::fs;
use std::path::{Component, Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// `<root>/<sub>/<cgroup path>` when the path is a plain absolute path.
fn under(sub: &str, cgroup_path: &str) -> Option<PathBuf> {
    let rel = Path::new(cgroup_path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let base = Path::new(CGROUP_ROOT);
    Some(if sub.is_empty() {
        base.join(rel)
    } else {
        base.join(sub).join(rel)
    })
}

/// Parses `oom_kill <n>` from `memory.oom_control` (v1) or `memory.events` (v2).
pub fn parse_oom_kills(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix("oom_kill "))
        .filter_map(|v| v.trim().parse().ok())
        .next()
        .unwrap_or(0)
}

/// The file in the shim dir holding the pod cgroup's OOM-kill count from before the container
/// ran (systemd driver only, see [`oom_killed`]).
pub const OOM_BASELINE: &str = "oom-baseline";

/// The OOM-kill count of the cgroup containing the container's (v2 `memory.events` counts every
/// descendant's kills).
pub fn parent_oom_kills(cgroup_path: &str) -> Option<u64> {
    let parent = Path::new(cgroup_path).parent()?.to_str()?;
    let events = fs::read_to_string(under("", parent)?.join("memory.events")).ok()?;
    Some(parse_oom_kills(&events))
}

/// True when the kernel OOM-killed a process of the container's memory cgroup.
///
/// Under the systemd driver the container's scope is stopped, and its cgroup removed, as soon as
/// it is empty, which can be before the shim has reaped init. Then the pod cgroup's count says
/// it: a kill there since `baseline` (taken before the container ran) while init died of SIGKILL
/// is this container's OOM kill, unless another container of the pod was OOM-killed meanwhile.
pub fn oom_killed(cgroup_path: &str, sigkilled: bool, baseline: Option<u64>) -> bool {
    let candidates = [
        under("memory", cgroup_path).map(|p| p.join("memory.oom_control")),
        under("", cgroup_path).map(|p| p.join("memory.events")),
    ];
    match candidates
        .into_iter()
        .flatten()
        .find_map(|p| fs::read_to_string(p).ok())
    {
        Some(t) => parse_oom_kills(&t) > 0,
        None => {
            sigkilled
                && baseline
                    .zip(parent_oom_kills(cgroup_path))
                    .is_some_and(|(before, now)| now > before)
        }
    }
}

/// Every pid listed in the container's cgroup (v1 `pids`, `memory` or `freezer`, else v2).
pub fn pids(cgroup_path: &str) -> Vec<i32> {
    for sub in ["pids", "memory", "freezer", ""] {
        let Some(p) = under(sub, cgroup_path) else {
            return Vec::new();
        };
        if let Ok(text) = fs::read_to_string(p.join("cgroup.procs")) {
            return text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        }
    }
    Vec::new()
}

/// SIGKILLs every process left in the container's cgroup and waits up to `wait` for the cgroup
/// to empty (they are reaped by whoever is their parent: the PID namespace's init).
pub fn kill_remaining(cgroup_path: &str, wait: std::time::Duration) {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let left = pids(cgroup_path);
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return;
        }
        for pid in left {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_counter_from_v1_and_v2_files() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        let v2 = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_oom_kills(v1), 2);
        assert_eq!(parse_oom_kills(v2), 1);
        assert_eq!(parse_oom_kills("oom_kill_disable 0\nunder_oom 0\n"), 0);
    }

    #[test]
    fn paths_never_leave_the_cgroup_root() {
        assert_eq!(
            under("memory", "/crius/p/c"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/crius/p/c"))
        );
        assert_eq!(
            under("", "/crius/c"),
            Some(PathBuf::from("/sys/fs/cgroup/crius/c"))
        );
        assert_eq!(under("memory", "/crius/../../etc"), None);
    }
}
