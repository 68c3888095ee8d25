//! Small helpers shared by fixtures: locating built binaries, free ports, the root check, mounts.

use std::path::{Path, PathBuf};

/// Directory holding the workspace's built binaries (`crius`, `crius-shim`): `$CRIUS_BIN_DIR`, or
/// the profile directory this test binary was built into (`target/<profile>/deps/..`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CRIUS_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("binary has a parent dir");
    // Test binaries live in `target/<profile>/deps`, binaries like crius-bench in `target/<profile>`.
    match dir.file_name() {
        Some(n) if n == "deps" => dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.to_path_buf()),
        _ => dir.to_path_buf(),
    }
}

/// Path of a workspace binary; panics with the build command when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} not found: build it first with `cargo build --workspace --bins`",
        p.display()
    );
    p
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Panics unless the test runs as root. The integration suite starts real daemons, which make
/// namespaces, mounts, cgroups and bridges: without root every test would fail later and less
/// clearly, so the harness fails first, naming the reason.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the crius integration tests need root (they run a real daemon that creates namespaces, \
         mounts, cgroups and bridges): run them as root, e.g. `sudo -E make test`"
    );
}

/// The entry names of `dir`; none when it cannot be read (e.g. it does not exist).
pub fn dir_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Mount points at or below `dir`, deepest first (so they can be unmounted in order).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

fn unescape_mount_path(s: &str) -> PathBuf {
    PathBuf::from(
        s.replace("\\040", " ")
            .replace("\\011", "\t")
            .replace("\\012", "\n")
            .replace("\\134", "\\"),
    )
}

/// Detaches every mount at or below `dir`; returns how many there were.
pub fn unmount_all_under(dir: &Path) -> usize {
    let mounts = mounts_under(dir);
    for m in &mounts {
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
    mounts.len()
}

/// The crius-shim process whose command line names container `id` (exactly one).
pub fn shim_of(id: &str) -> i32 {
    let shims: Vec<i32> = pids_mentioning(id)
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "crius-shim")
        })
        .collect();
    assert_eq!(shims.len(), 1, "one shim names container {id}: {shims:?}");
    shims[0]
}

/// Pids of processes whose command line mentions `needle` (used to find shims a test started).
pub fn pids_mentioning(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).contains(needle)
        {
            pids.push(pid);
        }
    }
    pids
}

/// Field `field` (1-based, as proc(5) numbers them; 3 or later) of a `/proc/<pid>/stat` line.
/// Fields are counted after the parenthesised name, which may itself hold spaces and parentheses.
pub fn stat_field(stat: &str, field: usize) -> Option<&str> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state).
    rest.split_whitespace().nth(field.checked_sub(3)?)
}

/// The `/proc/<pid>/stat` line of `pid`, None once the process is gone (reaped).
pub fn proc_stat(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()
}

/// The parent of `pid`, from `/proc/<pid>/stat` (field 4).
pub fn parent_pid(pid: i32) -> Option<i32> {
    stat_field(&proc_stat(pid)?, 4)?.parse().ok()
}

/// The state letter of `pid` (field 3: `Z` for a zombie), None once it is gone.
pub fn proc_state(pid: i32) -> Option<char> {
    stat_field(&proc_stat(pid)?, 3)?.chars().next()
}

/// Whether `pid` still runs: it exists and is not a zombie waiting to be reaped.
pub fn alive(pid: i32) -> bool {
    proc_state(pid).is_some_and(|s| s != 'Z')
}

/// The CPU time `pid` has used so far, utime + stime (fields 14 and 15), in clock ticks.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = proc_stat(pid)?;
    let ticks = |field| stat_field(&stat, field)?.parse::<u64>().ok();
    Some(ticks(14)? + ticks(15)?)
}

/// The last `n` lines of `text`, for a failure message.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The cgroup v2 directory of `pid`: its `0::` line joined to /sys/fs/cgroup, so only meaningful
/// where /sys/fs/cgroup is the unified mount. None on a v1-only host or once the process is gone.
pub fn cgroup_v2_dir(pid: i32) -> Option<PathBuf> {
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/')))
}

/// Ids of the pods and containers a daemon made: the entry names of `<state>/{pods,ns,containers}`.
pub fn object_ids_under(state: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    for sub in ["pods", "ns", "containers"] {
        let Ok(dir) = std::fs::read_dir(state.join(sub)) else {
            continue;
        };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Only full crius ids: a short name could match unrelated cgroups.
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) && !ids.contains(&name) {
                ids.push(name);
            }
        }
    }
    ids
}

/// Pids whose cgroup path has a component equal to one of `ids`.
pub fn pids_in_cgroups_named(ids: &[String]) -> Vec<i32> {
    if ids.is_empty() {
        return Vec::new();
    }
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cg) = std::fs::read_to_string(e.path().join("cgroup")) else {
            continue;
        };
        let hit = cg
            .lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .any(|path| path.split('/').any(|c| ids.iter().any(|id| id == c)));
        if hit && pid as u32 != std::process::id() {
            pids.push(pid);
        }
    }
    pids
}

/// Removes (deepest first) every cgroup directory named after one of `ids`, in every hierarchy
/// under /sys/fs/cgroup, down to a few levels. Busy or absent cgroups are left alone.
pub fn remove_cgroups_named(ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut found = Vec::new();
    for h in hierarchies.flatten() {
        collect_named(&h.path(), ids, 0, &mut found);
    }
    for dir in found {
        remove_cgroup_tree(&dir);
    }
}

fn collect_named(dir: &Path, ids: &[String], depth: usize, out: &mut Vec<PathBuf>) {
    if depth > 4 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if ids.contains(&name) {
            out.push(e.path());
        } else {
            collect_named(&e.path(), ids, depth + 1, out);
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    // Processes just killed may take a moment to leave the cgroup.
    for _ in 0..50 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::stat_field;

    #[test]
    fn stat_fields_are_counted_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1500 0 37 0 12 5";
        assert_eq!(stat_field(stat, 3), Some("S"));
        assert_eq!(stat_field(stat, 4), Some("1"));
        assert_eq!(stat_field(stat, 12), Some("37"));
        assert_eq!(stat_field(stat, 14), Some("12"));
        assert_eq!(stat_field(stat, 15), Some("5"));
        assert_eq!(stat_field(stat, 16), None);
        assert_eq!(stat_field(stat, 2), None);
        assert_eq!(stat_field("no name here", 3), None);
        assert_eq!(stat_field("no name here", 12), None);
    }

    #[test]
    fn last_lines_keeps_the_end() {
        assert_eq!(super::last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(super::last_lines("a\nb", 5), "a\nb");
        assert_eq!(super::last_lines("", 3), "");
    }

    #[test]
    fn this_process_is_alive_and_has_used_cpu_ticks() {
        let me = std::process::id() as i32;
        assert!(super::alive(me));
        assert!(super::cpu_ticks(me).is_some());
        assert!(!super::alive(i32::MAX));
        assert_eq!(super::proc_state(i32::MAX), None);
        assert_eq!(super::cpu_ticks(i32::MAX), None);
    }
}
