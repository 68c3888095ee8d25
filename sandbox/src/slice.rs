//! Names of the systemd cgroup driver: pod slices, the scopes of infra processes and containers,
//! and the cgroupfs paths systemd gives them.
//!
//! systemd spells a slice's place in the tree in its name: `kubepods-besteffort-pod1.slice` is
//! `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice`. A scope
//! `<prefix>-<name>.scope` lives directly in its slice's directory.
//!
//! Invariants: a slice name accepted here has only characters systemd allows in unit names, no
//! empty `-` part and no `/`; an absolute parent is accepted only when it is exactly the expansion
//! of its last component, so the path crius reads is the one systemd creates.

use std::path::{Path, PathBuf};

use crate::cgroup::CgroupError;

/// The slice crius puts pods in when the request names no parent.
pub const DEFAULT_PARENT: &str = "crius.slice";

/// Scope prefix of containers (`crius-<id>.scope`) and of infra processes.
pub const CONTAINER_PREFIX: &str = "crius";
pub const INFRA_PREFIX: &str = "crius-infra";

fn bad(s: &str) -> CgroupError {
    CgroupError::BadPath { path: s.to_string() }
}

/// `a-b.slice` → `/a.slice/a-b.slice`; `-.slice` → `/`.
pub fn expand(slice: &str) -> Result<PathBuf, CgroupError> {
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(bad(slice));
    };
    if stem.is_empty()
        || slice.len() > 255
        || !stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'\\' | b'@'))
    {
        return Err(bad(slice));
    }
    if stem == "-" {
        return Ok(PathBuf::from("/"));
    }
    let mut path = PathBuf::from("/");
    let mut prefix = String::new();
    for part in stem.split('-') {
        if part.is_empty() {
            return Err(bad(slice));
        }
        path.push(format!("{prefix}{part}.slice"));
        prefix = format!("{prefix}{part}-");
    }
    Ok(path)
}

/// A pod's slice as the request names it: a slice name (`kubepods-pod1.slice`, what containerd
/// accepts) or its expanded path (`/kubepods.slice/kubepods-pod1.slice`, what kubelet sends).
/// Returns the slice name and its cgroupfs path.
pub fn from_request(requested: &str) -> Result<(String, PathBuf), CgroupError> {
    if !requested.starts_with('/') {
        return Ok((requested.to_string(), expand(requested)?));
    }
    let path = crate::cgroup::validate(requested)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| bad(requested))?
        .to_string();
    if expand(&name)? != path {
        return Err(bad(requested));
    }
    Ok((name, path))
}

/// The slice crius creates for a pod whose request names no parent.
pub fn for_pod(id: &str) -> String {
    format!("crius-pod{id}.slice")
}

/// The slice name of a pod cgroup path crius recorded (its last component).
pub fn name_of(pod_cgroup: &Path) -> Option<&str> {
    pod_cgroup
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.ends_with(".slice"))
}

/// The cgroupfs path of the scope `<prefix>-<name>.scope` in the slice at `pod_cgroup`.
pub fn scope_path(pod_cgroup: &Path, prefix: &str, name: &str) -> PathBuf {
    pod_cgroup.join(format!("{prefix}-{name}.scope"))
}

/// OCI `linux.cgroupsPath` for the systemd driver: `<slice>:<prefix>:<name>`.
pub fn cgroups_path(slice: &str, prefix: &str, name: &str) -> String {
    format!("{slice}:{prefix}:{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_systemd() {
        assert_eq!(
            expand("kubepods-besteffort-pod1.slice").unwrap(),
            PathBuf::from("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice")
        );
        assert_eq!(expand("test.slice").unwrap(), PathBuf::from("/test.slice"));
        assert_eq!(expand("-.slice").unwrap(), PathBuf::from("/"));
        for bad in [
            "",
            ".slice",
            "a",
            "a.scope",
            "a--b.slice",
            "-a.slice",
            "a-.slice",
            "a/b.slice",
            "a b.slice",
        ] {
            assert!(expand(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn request_forms() {
        let kubelet = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podabc.slice";
        let (name, path) = from_request(kubelet).unwrap();
        assert_eq!(name, "kubepods-burstable-podabc.slice");
        assert_eq!(path, PathBuf::from(kubelet));
        assert_eq!(
            from_request("kubepods-burstable-podabc.slice").unwrap(),
            (name, path)
        );
        assert_eq!(
            from_request("/test.slice").unwrap(),
            ("test.slice".to_string(), PathBuf::from("/test.slice"))
        );
        // A path that is not the expansion of its last part would put the pod elsewhere.
        for bad in [
            "/kubepods/pod1",
            "/other.slice/kubepods-pod1.slice",
            "/a.slice/../b.slice",
            "rel/x.slice",
        ] {
            assert!(from_request(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scopes_and_oci_paths() {
        let pod = expand(&for_pod("ab12")).unwrap();
        assert_eq!(pod, PathBuf::from("/crius.slice/crius-podab12.slice"));
        assert_eq!(name_of(&pod), Some("crius-podab12.slice"));
        assert_eq!(
            scope_path(&pod, CONTAINER_PREFIX, "c1"),
            PathBuf::from("/crius.slice/crius-podab12.slice/crius-c1.scope")
        );
        assert_eq!(
            cgroups_path("crius-podab12.slice", "crius", "c1"),
            "crius-podab12.slice:crius:c1"
        );
    }
}
