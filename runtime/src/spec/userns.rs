//! The container's side of a pod user namespace: joining the pod's pinned user namespace and
//! stating its mappings in the spec.
//!
//! Invariants: a container of a pod with its own user namespace always joins it (first, so it
//! owns every namespace the container creates: mount, PID, cgroup); a container never gets a
//! user namespace of its own (CRI CONTAINER/TARGET modes are refused) and never runs in the
//! host's user namespace when its pod has one. The process's uid, gid and groups must be mapped.

use std::path::PathBuf;

use cri_api::v1::{LinuxContainerSecurityContext, NamespaceMode};
use crius_sandbox::userns::{IdRange, Mappings};
use oci_spec::runtime::{Linux, LinuxIdMappingBuilder, LinuxNamespace, LinuxNamespaceType, Process, User};

use super::SpecError;

/// The pod's user namespace, as the sandbox pinned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodUserns {
    /// The pinned nsfs file.
    pub path: PathBuf,
    pub maps: Mappings,
}

/// The user namespace entry of the container's spec: the pod's, or none (the host's).
pub(crate) fn namespace(
    pod: Option<&PodUserns>,
    sc: Option<&LinuxContainerSecurityContext>,
) -> Result<Option<LinuxNamespace>, SpecError> {
    let asked = sc
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|n| n.userns_options.as_ref());
    // CRI: the kubelet repeats the pod's user namespace options for each container.
    let mode = asked.map_or(NamespaceMode::Node as i32, |u| u.mode);
    match (NamespaceMode::try_from(mode), pod) {
        (Ok(NamespaceMode::Node), None) => Ok(None),
        (Ok(NamespaceMode::Node), Some(_)) => Err(SpecError::Invalid(
            "the pod has its own user namespace: its containers cannot use the host's".into(),
        )),
        (Ok(NamespaceMode::Pod), None) => Err(SpecError::Invalid(
            "user namespace mode POD, but the pod sandbox was created without a user namespace".into(),
        )),
        (Ok(NamespaceMode::Pod), Some(p)) => {
            if let Some(u) = asked {
                let same = |maps: &[cri_api::v1::IdMapping], r: &IdRange| {
                    maps.iter().all(|m| {
                        m.container_id == r.container_id && m.host_id == r.host_id && m.length == r.length
                    })
                };
                if !same(&u.uids, &p.maps.uids) || !same(&u.gids, &p.maps.gids) {
                    return Err(SpecError::Invalid(
                        "the container's user namespace mappings differ from its pod's".into(),
                    ));
                }
            }
            let mut n = LinuxNamespace::default();
            n.set_typ(LinuxNamespaceType::User).set_path(Some(p.path.clone()));
            Ok(Some(n))
        }
        (Ok(m), _) => Err(SpecError::Invalid(format!(
            "user namespace mode {} is not supported: a container uses its pod's (POD) or the host's (NODE)",
            m.as_str_name()
        ))),
        (Err(_), _) => Err(SpecError::Invalid(format!("unknown user namespace mode {mode}"))),
    }
}

/// OCI `linux.uidMappings`/`gidMappings`: the pod's, for the record (the runtime joins the
/// namespace by path and writes no map).
pub(crate) fn set_mappings(lx: &mut Linux, pod: &PodUserns) {
    let map = |r: &IdRange| {
        let m = LinuxIdMappingBuilder::default()
            .container_id(r.container_id)
            .host_id(r.host_id)
            .size(r.length)
            .build()
            .expect("every field of an id mapping is set");
        vec![m]
    };
    lx.set_uid_mappings(Some(map(&pod.maps.uids)))
        .set_gid_mappings(Some(map(&pod.maps.gids)));
}

/// A container of a pod with a user namespace: not privileged (a privileged container gets the
/// host's devices and sysfs, which a user namespace exists to keep away), and its process's
/// uid, gid and groups mapped.
pub(crate) fn check(proc: &Process, privileged: bool, pod: &PodUserns) -> Result<(), SpecError> {
    if privileged {
        return Err(SpecError::Invalid(
            "a privileged container cannot run in a pod with its own user namespace".into(),
        ));
    }
    check_user(proc.user(), pod)
}

/// The process's uid, gid and supplementary groups must exist in the pod's user namespace.
fn check_user(user: &User, pod: &PodUserns) -> Result<(), SpecError> {
    if pod.maps.uids.to_host(user.uid()).is_none() {
        return Err(SpecError::Invalid(format!(
            "uid {} is not mapped in the pod's user namespace (0..{})",
            user.uid(),
            pod.maps.uids.length
        )));
    }
    let groups = user.additional_gids().clone().unwrap_or_default();
    for gid in std::iter::once(user.gid()).chain(groups) {
        if pod.maps.gids.to_host(gid).is_none() {
            return Err(SpecError::Invalid(format!(
                "gid {gid} is not mapped in the pod's user namespace (0..{})",
                pod.maps.gids.length
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use cri_api::v1::{IdMapping, NamespaceOption, UserNamespace};

    use super::*;

    fn pod() -> PodUserns {
        let r = |h| IdRange {
            container_id: 0,
            host_id: h,
            length: 65536,
        };
        PodUserns {
            path: "/run/crius/ns/p/user".into(),
            maps: Mappings {
                uids: r(131072),
                gids: r(196608),
            },
        }
    }

    fn sc(mode: NamespaceMode, uid_host: u32) -> LinuxContainerSecurityContext {
        let m = |h| IdMapping {
            host_id: h,
            container_id: 0,
            length: 65536,
        };
        LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                userns_options: Some(UserNamespace {
                    mode: mode as i32,
                    uids: vec![m(uid_host)],
                    gids: vec![m(196608)],
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_mode_joins_the_pinned_namespace() {
        let p = pod();
        let n = namespace(Some(&p), Some(&sc(NamespaceMode::Pod, 131072)))
            .unwrap()
            .unwrap();
        assert_eq!(n.typ(), LinuxNamespaceType::User);
        assert_eq!(n.path().as_deref(), Some(p.path.as_path()));
        let mut lx = Linux::default();
        set_mappings(&mut lx, &p);
        assert_eq!(lx.uid_mappings().as_ref().unwrap()[0].host_id(), 131072);
        assert_eq!(lx.gid_mappings().as_ref().unwrap()[0].size(), 65536);
    }

    #[test]
    fn host_user_namespace_only_without_a_pod_one() {
        assert_eq!(namespace(None, None).unwrap(), None);
        assert_eq!(namespace(None, Some(&sc(NamespaceMode::Node, 0))).unwrap(), None);
        assert!(namespace(Some(&pod()), None).is_err());
        assert!(namespace(None, Some(&sc(NamespaceMode::Pod, 131072))).is_err());
    }

    #[test]
    fn other_modes_and_other_mappings_are_refused() {
        for mode in [NamespaceMode::Container, NamespaceMode::Target] {
            let e = namespace(Some(&pod()), Some(&sc(mode, 131072))).unwrap_err();
            assert!(matches!(e, SpecError::Invalid(_)), "{e}");
        }
        let e = namespace(Some(&pod()), Some(&sc(NamespaceMode::Pod, 65536))).unwrap_err();
        assert!(e.to_string().contains("differ"), "{e}");
    }

    #[test]
    fn unmapped_ids_are_refused() {
        let mut u = User::default();
        u.set_uid(1000)
            .set_gid(1000)
            .set_additional_gids(Some(vec![1000, 10]));
        check_user(&u, &pod()).unwrap();
        u.set_uid(70000);
        assert!(check_user(&u, &pod()).is_err());
        u.set_uid(0).set_additional_gids(Some(vec![65536]));
        assert!(check_user(&u, &pod()).is_err());
    }
}
