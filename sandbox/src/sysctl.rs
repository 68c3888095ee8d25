//! Validation of the pod's sysctls (`LinuxPodSandboxConfig.sysctls`) before anything is created.
//!
//! Invariants: a sysctl that passes [`validate`] names a file strictly below `/proc/sys` (no `..`,
//! no empty component) and belongs to a namespace the pod owns: `net.*` needs a pod network
//! namespace, the IPC sysctls (`kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`) need a pod
//! IPC namespace, `kernel.hostname`/`kernel.domainname` need a pod UTS namespace. Anything else
//! would change the host and is refused.

use std::collections::HashMap;
use std::path::PathBuf;

/// Which of the pod's namespaces a sysctl lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysctlNamespace {
    Net,
    Ipc,
    Uts,
}

/// One validated sysctl: where it is written and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    pub name: String,
    /// Path relative to `/proc/sys`.
    pub rel_path: PathBuf,
    pub value: String,
    pub namespace: SysctlNamespace,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SysctlError {
    #[error("sysctl {name:?} is not a valid sysctl name")]
    BadName { name: String },
    #[error("sysctl {name:?} has an invalid value {value:?}")]
    BadValue { name: String, value: String },
    #[error("sysctl {name:?} is not namespaced: setting it would change the host")]
    NotNamespaced { name: String },
    #[error("sysctl {name:?} needs a pod {ns} namespace, but the pod uses the host's")]
    HostNamespace { name: String, ns: &'static str },
}

/// Which namespaces the pod owns (false = shares the host's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnedNamespaces {
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
}

/// Validates every sysctl of the request, sorted by name so the order of application is stable.
pub fn validate(
    sysctls: &HashMap<String, String>,
    owned: OwnedNamespaces,
) -> Result<Vec<Sysctl>, SysctlError> {
    let mut out = Vec::with_capacity(sysctls.len());
    for (name, value) in sysctls {
        out.push(validate_one(name, value, owned)?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn validate_one(name: &str, value: &str, owned: OwnedNamespaces) -> Result<Sysctl, SysctlError> {
    let bad_name = || SysctlError::BadName {
        name: name.to_string(),
    };
    if name.is_empty()
        || name.len() > 256
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'/' | b'_' | b'-' | b'+' | b':'))
    {
        return Err(bad_name());
    }
    // sysctl(8) accepts both `net.ipv4.ip_forward` and `net/ipv4/ip_forward`; with `/` as the
    // separator, dots are part of a component (interface names such as `eth0.100`).
    let components: Vec<&str> = if name.contains('/') {
        name.split('/').collect()
    } else {
        name.split('.').collect()
    };
    if components.iter().any(|c| c.is_empty() || *c == "." || *c == "..") {
        return Err(bad_name());
    }
    if value.contains(['\n', '\0']) || value.len() > 4096 {
        return Err(SysctlError::BadValue {
            name: name.to_string(),
            value: value.to_string(),
        });
    }
    let dotted = components.join(".");
    let namespace = classify(&dotted).ok_or_else(|| SysctlError::NotNamespaced {
        name: name.to_string(),
    })?;
    let (has, ns) = match namespace {
        SysctlNamespace::Net => (owned.net, "network"),
        SysctlNamespace::Ipc => (owned.ipc, "IPC"),
        SysctlNamespace::Uts => (owned.uts, "UTS"),
    };
    if !has {
        return Err(SysctlError::HostNamespace {
            name: name.to_string(),
            ns,
        });
    }
    Ok(Sysctl {
        name: name.to_string(),
        rel_path: components.iter().collect(),
        value: value.to_string(),
        namespace,
    })
}

/// The namespace a dotted sysctl name belongs to, or None when it is global to the host.
fn classify(dotted: &str) -> Option<SysctlNamespace> {
    if dotted.starts_with("net.") {
        return Some(SysctlNamespace::Net);
    }
    if dotted.starts_with("fs.mqueue.")
        || dotted == "kernel.sem"
        || dotted.starts_with("kernel.shm")
        || dotted.starts_with("kernel.msg")
    {
        return Some(SysctlNamespace::Ipc);
    }
    if dotted == "kernel.hostname" || dotted == "kernel.domainname" {
        return Some(SysctlNamespace::Uts);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: OwnedNamespaces = OwnedNamespaces {
        net: true,
        ipc: true,
        uts: true,
    };

    fn one(name: &str, owned: OwnedNamespaces) -> Result<Sysctl, SysctlError> {
        validate(&HashMap::from([(name.to_string(), "1".to_string())]), owned).map(|mut v| v.remove(0))
    }

    #[test]
    fn classifies_namespaced_sysctls() {
        assert_eq!(
            one("net.ipv4.ip_forward", ALL).unwrap().namespace,
            SysctlNamespace::Net
        );
        assert_eq!(
            one("kernel.shm_rmid_forced", ALL).unwrap().namespace,
            SysctlNamespace::Ipc
        );
        assert_eq!(
            one("fs.mqueue.msg_max", ALL).unwrap().namespace,
            SysctlNamespace::Ipc
        );
        assert_eq!(one("kernel.sem", ALL).unwrap().namespace, SysctlNamespace::Ipc);
        let s = one("net/ipv4/conf/eth0.100/forwarding", ALL).unwrap();
        assert_eq!(s.rel_path, PathBuf::from("net/ipv4/conf/eth0.100/forwarding"));
        assert_eq!(
            one("net.core.somaxconn", ALL).unwrap().rel_path,
            PathBuf::from("net/core/somaxconn")
        );
    }

    #[test]
    fn host_wide_and_malformed_sysctls_are_refused() {
        assert!(matches!(
            one("kernel.panic", ALL),
            Err(SysctlError::NotNamespaced { .. })
        ));
        assert!(matches!(
            one("vm.swappiness", ALL),
            Err(SysctlError::NotNamespaced { .. })
        ));
        for bad in ["", "net..x", "net/../../etc", "net.ipv4 x", "net/ipv4/", "../net"] {
            assert!(
                matches!(one(bad, ALL), Err(SysctlError::BadName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sysctls_of_host_namespaces_are_refused() {
        let host_net = OwnedNamespaces { net: false, ..ALL };
        assert!(matches!(
            one("net.ipv4.ip_forward", host_net),
            Err(SysctlError::HostNamespace { ns: "network", .. })
        ));
        let host_ipc = OwnedNamespaces { ipc: false, ..ALL };
        assert!(matches!(
            one("kernel.shmmax", host_ipc),
            Err(SysctlError::HostNamespace { ns: "IPC", .. })
        ));
        assert!(one("net.ipv4.ip_forward", host_ipc).is_ok());
    }

    #[test]
    fn values_cannot_smuggle_newlines() {
        let m = HashMap::from([("net.core.somaxconn".to_string(), "1\n2".to_string())]);
        assert!(matches!(validate(&m, ALL), Err(SysctlError::BadValue { .. })));
    }
}
