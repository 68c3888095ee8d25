//! A private libcontainer root for an exec into a systemd-driven container of a pod with its
//! own user namespace.
//!
//! libcontainer 0.7 drives a container's cgroup through systemd whenever the spec has a user
//! namespace, and picks systemd's *system* bus only when `/proc/self/uid_map` is the initial
//! one. The exec helper joins the container's user namespace before the tenant is built (the
//! tenant would otherwise run as the host's root), so the tenant's cgroup step asks for a
//! session bus and fails. For such an exec the helper hands libcontainer a scratch copy of the
//! container's state whose bundle's `linux.cgroupsPath` is the container's cgroup as an
//! absolute path (the systemd scope the init process is in), which libcontainer joins through
//! cgroupfs; the scope stays systemd's, the tenant only adds its process to it.
//!
//! Invariants: the copy lives under the request's scratch dir and is removed when the
//! [`TenantRoot`] is dropped; the container's own state and bundle are only read.

use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// libcontainer's state.json and a spec are a few kB; far below this.
const MAX_JSON: u64 = 4 << 20;

/// A scratch libcontainer root, removed on drop.
pub struct TenantRoot {
    pub root: PathBuf,
}

impl Drop for TenantRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_JSON).read_to_end(&mut buf))
        .map_err(|e| format!("read {}: {e}", path.display()))?;
    Ok(buf)
}

/// The scratch root an exec into container `id` (state under `youki_root`, spec `spec`) needs,
/// or None when libcontainer's own state works: no user namespace, or an absolute
/// `cgroupsPath` (the cgroupfs driver).
pub fn prepare(
    youki_root: &Path,
    id: &str,
    spec: &Spec,
    scratch_dir: &Path,
) -> Result<Option<TenantRoot>, String> {
    let Some(linux) = spec.linux() else {
        return Ok(None);
    };
    let userns = linux
        .namespaces()
        .as_ref()
        .is_some_and(|n| n.iter().any(|n| n.typ() == LinuxNamespaceType::User));
    let cgroups_path = linux.cgroups_path().clone().unwrap_or_default();
    if !userns || cgroups_path.is_absolute() {
        return Ok(None);
    }
    let state_path = youki_root.join(id).join("state.json");
    let mut state: serde_json::Value = serde_json::from_slice(&read_capped(&state_path)?)
        .map_err(|e| format!("parse {}: {e}", state_path.display()))?;
    let pid = state
        .get("pid")
        .and_then(|p| p.as_i64())
        .ok_or_else(|| format!("{} has no pid", state_path.display()))?;
    let proc_cgroup =
        String::from_utf8_lossy(&read_capped(Path::new(&format!("/proc/{pid}/cgroup")))?).into_owned();
    let dir = crate::cgroup_delegate::cgroup_dir(&proc_cgroup)
        .ok_or_else(|| format!("container init {pid} has no cgroup v2 path of its own"))?;
    let absolute = Path::new("/").join(dir.strip_prefix("/sys/fs/cgroup").map_err(|e| e.to_string())?);

    let tenant = TenantRoot {
        root: scratch_dir.join(format!("exec-root-{}", std::process::id())),
    };
    let (state_dir, bundle) = (tenant.root.join(id), tenant.root.join("bundle"));
    for d in [&state_dir, &bundle] {
        std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
    }
    let mut spec = spec.clone();
    let mut lx = linux.clone();
    lx.set_cgroups_path(Some(absolute));
    spec.set_linux(Some(lx));
    let config = bundle.join("config.json");
    spec.save(&config)
        .map_err(|e| format!("write {}: {e}", config.display()))?;
    state["bundle"] = serde_json::Value::String(bundle.to_string_lossy().into_owned());
    state["use_systemd"] = serde_json::Value::Bool(false);
    let new_state = state_dir.join("state.json");
    std::fs::write(&new_state, serde_json::to_vec(&state).map_err(|e| e.to_string())?)
        .map_err(|e| format!("write {}: {e}", new_state.display()))?;
    Ok(Some(tenant))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn only_a_systemd_path_with_a_user_namespace_needs_a_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let none = |s: &Spec| prepare(tmp.path(), "c", s, tmp.path()).unwrap().is_none();
        assert!(none(&spec(
            r#"{"ociVersion":"1.0.2","linux":{"cgroupsPath":"a.slice:crius:c"}}"#
        )));
        assert!(none(&spec(
            r#"{"ociVersion":"1.0.2","linux":{"cgroupsPath":"/crius/p/c","namespaces":[{"type":"user","path":"/u"}]}}"#
        )));
        // A systemd path in a user namespace reads the container's state: none here.
        let e = prepare(
            tmp.path(),
            "c",
            &spec(
                r#"{"ociVersion":"1.0.2","linux":{"cgroupsPath":"a.slice:crius:c","namespaces":[{"type":"user","path":"/u"}]}}"#,
            ),
            tmp.path(),
        )
        .err()
        .unwrap();
        assert!(e.contains("state.json"), "{e}");
    }
}
