//! cgroup v2 delegation to a container's root in a user namespace: the container's cgroup dir
//! and its `cgroup.procs`, `cgroup.threads` and `cgroup.subtree_control` are chowned to the host
//! ids the container's root is mapped to (the kernel's cgroup-v2 "Delegation" rules, as crun
//! does), so root in the container can create and manage sub-cgroups of its own cgroup.
//!
//! Invariants:
//! - Only a container with its own user namespace and its own cgroup namespace on a pure
//!   cgroup v2 host is delegated; the cgroup's interface files that set its own limits
//!   (`memory.max`, ...) stay the host root's, so delegation never lifts a limit.
//! - The cgroup is the one the container's init is in, read from `/proc/<pid>/cgroup` in the
//!   shim's (the host's) cgroup namespace, whichever driver (cgroupfs, systemd) placed it.
//! - Runs after the runtime created the container and before its process is started.
//! - A delegated cgroup is recorded in the shim dir ([`RECORD`]); the container's teardown
//!   removes the sub-cgroups its root made ([`remove_children`]) before the runtime removes
//!   the cgroup itself (libcontainer's and runc's removal is a single rmdir).

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use nix::unistd::{Gid, Pid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The files a delegatee must own besides the dir (cgroup-v2.rst, "Model of Delegation").
const DELEGATED_FILES: [&str; 3] = ["cgroup.procs", "cgroup.threads", "cgroup.subtree_control"];
/// `/proc/<pid>/cgroup` on a pure v2 host is one short line; v1 hosts list a dozen.
const MAX_PROC_CGROUP: u64 = 64 * 1024;

/// The host uid and gid of the container's root when `spec` asks for delegation: its own user
/// namespace (with root mapped) and its own cgroup namespace.
pub fn owner(spec: &Spec) -> Option<(u32, u32)> {
    let linux = spec.linux().as_ref()?;
    let ns = linux.namespaces().as_ref()?;
    let has = |t: LinuxNamespaceType| ns.iter().any(|n| n.typ() == t);
    if !has(LinuxNamespaceType::User) || !has(LinuxNamespaceType::Cgroup) {
        return None;
    }
    let root = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.as_ref()?
            .iter()
            .find(|m| m.container_id() == 0 && m.size() > 0)
            .map(|m| m.host_id())
    };
    Some((root(linux.uid_mappings())?, root(linux.gid_mappings())?))
}

/// The unified cgroup dir named by `/proc/<pid>/cgroup` text: the `0::` line, joined under
/// `/sys/fs/cgroup` (None for the root cgroup or a path that is not plain).
pub fn cgroup_dir(proc_cgroup: &str) -> Option<PathBuf> {
    let rel = proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let rel = Path::new(rel.trim().trim_start_matches('/'));
    if rel.as_os_str().is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(Path::new(CGROUP_ROOT).join(rel))
}

/// The file in the shim dir naming the delegated cgroup dir.
pub const RECORD: &str = "cgroup-delegated";

/// Delegates the cgroup of `pid` (the container's init, created from the bundle's `config.json`)
/// to the container's root when the spec asks for it (see [`owner`]) and records it in
/// `shim_dir`. Ok(false): nothing to do.
pub fn delegate(bundle: &Path, shim_dir: &Path, pid: Pid) -> Result<bool, String> {
    if !Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
        return Ok(false);
    }
    let config = bundle.join("config.json");
    let spec = Spec::load(&config).map_err(|e| format!("read {}: {e}", config.display()))?;
    let Some((uid, gid)) = owner(&spec) else {
        return Ok(false);
    };
    let proc_path = format!("/proc/{pid}/cgroup");
    let mut text = String::new();
    std::fs::File::open(&proc_path)
        .and_then(|f| f.take(MAX_PROC_CGROUP).read_to_string(&mut text))
        .map_err(|e| format!("read {proc_path}: {e}"))?;
    let dir = cgroup_dir(&text).ok_or_else(|| format!("no cgroup v2 path of its own in {proc_path}"))?;
    let own = |p: &Path| {
        nix::unistd::chown(p, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(|e| format!("chown {} to {uid}:{gid}: {e}", p.display()))
    };
    let record = shim_dir.join(RECORD);
    std::fs::write(&record, dir.as_os_str().as_encoded_bytes())
        .map_err(|e| format!("write {}: {e}", record.display()))?;
    own(&dir)?;
    for f in DELEGATED_FILES {
        let p = dir.join(f);
        // cgroup.threads is absent on kernels before 4.14's threaded mode.
        if p.exists() {
            own(&p)?;
        }
    }
    Ok(true)
}

/// Removes the sub-cgroups under the delegated cgroup recorded in `shim_dir`, deepest first,
/// after killing what runs in the whole subtree (`cgroup.kill`). Idempotent; without a record
/// there is nothing to do. Errors are reported, not fatal: the runtime's removal follows.
pub fn remove_children(shim_dir: &Path) -> Result<(), String> {
    let record = shim_dir.join(RECORD);
    let mut text = String::new();
    match std::fs::File::open(&record) {
        Ok(f) => f
            .take(4096)
            .read_to_string(&mut text)
            .map_err(|e| format!("read {}: {e}", record.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("open {}: {e}", record.display())),
    };
    let dir = PathBuf::from(text.trim());
    if !dir.starts_with(CGROUP_ROOT) || dir.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "{}: not a cgroup dir: {}",
            record.display(),
            dir.display()
        ));
    }
    if !dir.exists() {
        return Ok(());
    }
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    let mut children = Vec::new();
    collect_dirs(&dir, &mut children, 0);
    // Deepest first: a cgroup can go only once it has no children and no processes.
    for child in children.iter().rev() {
        let mut tries = 0;
        while let Err(e) = std::fs::remove_dir(child) {
            if e.kind() == std::io::ErrorKind::NotFound {
                break;
            }
            tries += 1;
            if tries > 50 {
                return Err(format!("remove {}: {e}", child.display()));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    Ok(())
}

/// The sub-dirs of `dir`, parents before children (bounded depth: the kernel's default
/// `cgroup.max.depth` is unlimited, a container's nesting is not expected to be deep).
fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 32 {
        return;
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let p = entry.path();
            out.push(p.clone());
            collect_dirs(&p, out, depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unified_line_names_the_cgroup_dir() {
        assert_eq!(
            cgroup_dir("0::/kubepods.slice/crius-abc.scope\n"),
            Some(PathBuf::from("/sys/fs/cgroup/kubepods.slice/crius-abc.scope"))
        );
        // Hybrid v1 text: the unified line is found among the controllers'.
        assert_eq!(
            cgroup_dir("12:memory:/x\n0::/x/y\n1:name=systemd:/x"),
            Some(PathBuf::from("/sys/fs/cgroup/x/y"))
        );
        assert_eq!(cgroup_dir("0::/\n"), None, "never the root cgroup");
        assert_eq!(cgroup_dir("0::/a/../b\n"), None);
        assert_eq!(cgroup_dir("3:cpu:/x\n"), None);
    }

    fn spec(namespaces: &str, maps: &str) -> Spec {
        let json = format!(r#"{{"ociVersion":"1.0.2","linux":{{"namespaces":[{namespaces}]{maps}}}}}"#);
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn only_a_container_with_its_own_user_and_cgroup_namespaces_is_delegated() {
        let maps = r#","uidMappings":[{"containerID":0,"hostID":196608,"size":65536}],
            "gidMappings":[{"containerID":0,"hostID":262144,"size":65536}]"#;
        let user_cgroup = r#"{"type":"user","path":"/run/x/user"},{"type":"cgroup"}"#;
        assert_eq!(owner(&spec(user_cgroup, maps)), Some((196608, 262144)));
        assert_eq!(
            owner(&spec(r#"{"type":"cgroup"}"#, "")),
            None,
            "host user namespace"
        );
        assert_eq!(
            owner(&spec(r#"{"type":"user","path":"/u"}"#, maps)),
            None,
            "host cgroupns"
        );
        assert_eq!(owner(&spec(user_cgroup, "")), None, "no mapping of root");
    }
}
