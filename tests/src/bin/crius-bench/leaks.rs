//! The leak audit of scenario 11: what a runtime holds on the host, taken before and after a churn
//! of pods, and the difference named item by item.
//!
//! Each kind is a set of names, so a leak says what it is, not only that there is one:
//! - mounts: mount points (with their fs type) at or below the runtime's root and state dirs;
//! - nsfs mounts anywhere (pinned namespaces), and the entries of the netns dir (crius
//!   `<state>/ns`, containerd `/var/run/netns/cni-*`);
//! - veth interfaces on the host (`ip -o link show type veth`);
//! - cgroup directories in every hierarchy under /sys/fs/cgroup (the runtimes put pods without a
//!   cgroup parent in different places, so the whole tree is compared; the bench runs under the
//!   shared lock, so nothing else makes cgroups meanwhile), one item per path with its hierarchies;
//! - the runtime's shim and pod infra processes;
//! - files and directories below root and state, except the pod log dirs (kubelet's to remove) and
//!   the daemon's own log.
//!
//! Counters are compared as after - before: the daemon's open fds, threads, RSS, and (crius) the
//! size of its redb file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::runtimes::Runtime;
use crate::scenarios::proc_kb;

/// Most entries a directory walk of the audit visits (root holds unpacked images).
const WALK_CAP: usize = 500_000;

/// The kinds of named resources, in report order.
pub const KINDS: [&str; 7] = [
    "mounts under root/state",
    "nsfs mounts",
    "netns dir entries",
    "veths",
    "cgroups",
    "shim + infra processes",
    "files under root/state",
];

#[derive(Debug, Clone)]
pub struct Snapshot {
    /// One set per entry of `KINDS`.
    sets: Vec<BTreeSet<String>>,
    fds: i64,
    threads: i64,
    rss_kb: i64,
    redb_bytes: Option<i64>,
}

/// What changed between two snapshots.
#[derive(Debug, Clone)]
pub struct Leaks {
    /// Per entry of `KINDS`: the items present after and not before.
    pub new: Vec<Vec<String>>,
    pub fds: i64,
    pub threads: i64,
    pub rss_kb: i64,
    pub redb_bytes: Option<i64>,
}

impl Leaks {
    /// No named resource left behind (counters are judged by the reader).
    pub fn clean(&self) -> bool {
        self.new.iter().all(Vec::is_empty)
    }

    /// How many items of each kind, e.g. `veths 10, cgroups 20` (kinds with none left out).
    pub fn counts(&self) -> String {
        let parts: Vec<String> = KINDS
            .iter()
            .zip(&self.new)
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k} {}", v.len()))
            .collect();
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join(", ")
        }
    }

    /// One line per leaking kind, naming its items (at most `max` each).
    pub fn describe(&self, max: usize) -> String {
        let mut parts = Vec::new();
        for (kind, items) in KINDS.iter().zip(&self.new) {
            if items.is_empty() {
                continue;
            }
            let shown: Vec<&str> = items.iter().take(max).map(String::as_str).collect();
            let more = items.len().saturating_sub(max);
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            parts.push(format!("{} {kind}: {}{tail}", items.len(), shown.join(", ")));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join("; ")
        }
    }
}

impl Snapshot {
    pub fn take(r: &Runtime) -> Snapshot {
        let pid = r.daemon_pid().map_or(0, |p| p as i32);
        let dirs = [r.dir.as_path(), r.state.as_path()];
        let procs = r.pod_processes();
        let shims = procs
            .shims
            .iter()
            .chain(&procs.infra)
            .map(|p| format!("{p} {}", cmdline(*p)))
            .collect();
        let mut files = BTreeSet::new();
        let skip = [r.log_dir(), r.dir.join("daemon.log")];
        for (label, dir) in [("root", &r.dir), ("state", &r.state)] {
            walk(dir, &skip, &mut |p| {
                files.insert(format!("{label}:{}", p.strip_prefix(dir).unwrap_or(p).display()));
            });
        }
        let redb = r.dir.join("root").join("crius.redb");
        Snapshot {
            sets: vec![
                mounts(|point, _| dirs.iter().any(|d| Path::new(point).starts_with(d))),
                mounts(|_, fstype| fstype == "nsfs"),
                netns_entries(r),
                veths(),
                cgroups(),
                shims,
                files,
            ],
            fds: crius_tests::util::dir_entries(Path::new(&format!("/proc/{pid}/fd"))).len() as i64,
            threads: proc_kb(pid, "status", "Threads:") as i64,
            rss_kb: proc_kb(pid, "status", "VmRSS:") as i64,
            redb_bytes: (r.name == "crius").then(|| std::fs::metadata(&redb).map_or(0, |m| m.len() as i64)),
        }
    }

    /// What `after` holds that `self` did not, and the counters' growth.
    pub fn leaks(&self, after: &Snapshot) -> Leaks {
        Leaks {
            new: self
                .sets
                .iter()
                .zip(&after.sets)
                .map(|(b, a)| a.difference(b).cloned().collect())
                .collect(),
            fds: after.fds - self.fds,
            threads: after.threads - self.threads,
            rss_kb: after.rss_kb - self.rss_kb,
            redb_bytes: after.redb_bytes.zip(self.redb_bytes).map(|(a, b)| a - b),
        }
    }
}

fn cmdline(pid: i32) -> String {
    let c = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let s = String::from_utf8_lossy(&c).replace('\0', " ");
    s.trim().chars().take(120).collect()
}

/// Mount points (`point (fstype)`) of this mount namespace that `keep` selects.
fn mounts(keep: impl Fn(&str, &str) -> bool) -> BTreeSet<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = BTreeSet::new();
    for line in info.lines() {
        let point = line.split(' ').nth(4).unwrap_or_default();
        let fstype = line
            .split_once(" - ")
            .and_then(|(_, r)| r.split(' ').next())
            .unwrap_or_default();
        if keep(point, fstype) {
            // A point mounted twice is two items.
            let mut item = format!("{point} ({fstype})");
            while out.contains(&item) {
                item.push('+');
            }
            out.insert(item);
        }
    }
    out
}

fn netns_entries(r: &Runtime) -> BTreeSet<String> {
    if r.name == "crius" {
        let ns = r.state.join("ns");
        let mut out = BTreeSet::new();
        walk(&ns, &[], &mut |p| {
            out.insert(p.strip_prefix(&ns).unwrap_or(p).display().to_string());
        });
        out
    } else {
        crius_tests::util::dir_entries(Path::new("/var/run/netns"))
            .into_iter()
            .filter(|n| n.starts_with("cni-"))
            .collect()
    }
}

fn veths() -> BTreeSet<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show", "type", "veth"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    veth_names(&out)
}

/// Interface names from `ip -o link` lines (`7: veth1a2b@if2: <...> ...`).
fn veth_names(ip_o_link: &str) -> BTreeSet<String> {
    ip_o_link
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// Every cgroup directory as `path [hierarchies]`.
fn cgroups() -> BTreeSet<String> {
    let mut paths: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let base = h.path();
        let name = h.file_name().to_string_lossy().into_owned();
        let mut dirs = Vec::new();
        collect_dirs(&base, 0, &mut dirs);
        for d in dirs {
            let rel = format!("/{}", d.strip_prefix(&base).unwrap_or(&d).display());
            paths.entry(rel).or_default().push(name.clone());
        }
    }
    paths
        .into_iter()
        .map(|(p, hs)| format!("{p} [{}]", hs.join(",")))
        .collect()
}

fn collect_dirs(dir: &Path, depth: usize, out: &mut Vec<std::path::PathBuf>) {
    if depth > 8 || out.len() > WALK_CAP {
        return;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(e.path());
            collect_dirs(&e.path(), depth + 1, out);
        }
    }
}

/// Calls `f` for every entry below `dir` (not following symlinks, not descending into other
/// filesystems such as a container's rootfs), skipping `skip` and what is below it; visits at
/// most `WALK_CAP` entries.
fn walk(dir: &Path, skip: &[std::path::PathBuf], f: &mut impl FnMut(&Path)) {
    use std::os::unix::fs::MetadataExt;
    let Ok(dev) = std::fs::symlink_metadata(dir).map(|m| m.dev()) else {
        return;
    };
    let mut todo = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if skip.contains(&p) {
                continue;
            }
            seen += 1;
            if seen > WALK_CAP {
                return;
            }
            f(&p);
            let same_fs = std::fs::symlink_metadata(&p).is_ok_and(|m| m.dev() == dev);
            if same_fs && e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(sets: [&[&str]; 7], fds: i64, rss_kb: i64) -> Snapshot {
        Snapshot {
            sets: sets
                .iter()
                .map(|s| s.iter().map(|i| i.to_string()).collect())
                .collect(),
            fds,
            threads: 10,
            rss_kb,
            redb_bytes: Some(4096),
        }
    }

    #[test]
    fn leaks_name_what_is_new_and_only_that() {
        let before = snapshot(
            [&["/s/a (tmpfs)"], &[], &[], &["veth0"], &[], &[], &["root:x"]],
            20,
            1000,
        );
        let after = snapshot(
            [
                &["/s/a (tmpfs)", "/s/b (overlay)"],
                &[],
                &[],
                &[],
                &[],
                &["42 crius-shim"],
                &["root:x"],
            ],
            23,
            1500,
        );
        let l = before.leaks(&after);
        assert!(!l.clean());
        assert_eq!(l.new[0], vec!["/s/b (overlay)".to_string()]);
        assert!(l.new[3].is_empty(), "a veth gone since is no leak");
        assert_eq!((l.fds, l.threads, l.rss_kb, l.redb_bytes), (3, 0, 500, Some(0)));
        assert_eq!(
            l.describe(5),
            "1 mounts under root/state: /s/b (overlay); 1 shim + infra processes: 42 crius-shim"
        );
        assert_eq!(l.counts(), "mounts under root/state 1, shim + infra processes 1");
        let same = before.leaks(&before);
        assert!(same.clean());
        assert_eq!(
            (same.describe(5), same.counts()),
            ("none".into(), "nothing".into())
        );
    }

    #[test]
    fn describe_caps_items_per_kind() {
        let before = snapshot([&[]; 7], 0, 0);
        let after = snapshot([&[], &[], &[], &["v1", "v2", "v3"], &[], &[], &[]], 0, 0);
        assert_eq!(before.leaks(&after).describe(2), "3 veths: v1, v2 and 1 more");
    }

    #[test]
    fn veth_names_from_ip_o_link() {
        let out = "12: veth3f2a1b@if2: <BROADCAST,MULTICAST,UP> mtu 1500 master crius0\\    link/ether\n\
                   13: vethc0ffee@if2: <BROADCAST> mtu 1500\n";
        let names: Vec<String> = veth_names(out).into_iter().collect();
        assert_eq!(names, ["veth3f2a1b", "vethc0ffee"]);
    }
}
