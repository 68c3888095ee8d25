//! Seccomp: which filter a container runs under. `Unconfined`, an absent profile and the
//! deprecated empty `seccomp_profile_path` mean none; `Localhost` (or `localhost/<path>`) loads an
//! OCI `LinuxSeccomp` JSON file from the host; `RuntimeDefault` (or `runtime/default`,
//! `docker/default`) is the built-in profile; a privileged container ignores every profile.
//!
//! The built-in profile is data (`seccomp_default.json`, compiled in): an allow-list equivalent
//! to containerd's and Docker's default — everything not listed fails with EPERM, and groups
//! of syscalls are allowed only with (or only without) the capability that guards them, for the
//! container's final capability set.
//!
//! Invariants: the embedded profile parses (a unit test pins it); the filter is chosen from the
//! container's own capabilities, so exec'd processes (which get the same filter from the
//! container's spec) see exactly the init process's filter.

use std::path::Path;
use std::sync::OnceLock;

use cri_api::v1::SecurityProfile;
use cri_api::v1::security_profile::ProfileType;
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompOperator,
    LinuxSyscall,
};

use super::SpecError;

/// The data file's shape.
#[derive(serde::Deserialize)]
struct Profile {
    default_errno: u32,
    rules: Vec<Rule>,
}

#[derive(serde::Deserialize)]
struct Rule {
    names: Vec<String>,
    /// Only for a container holding this capability (name without `CAP_`).
    when_cap: Option<String>,
    /// Only for a container without this capability.
    unless_cap: Option<String>,
    /// Only on these host architectures (`std::env::consts::ARCH`).
    arch: Option<Vec<String>>,
    /// Fail with this errno instead of allowing.
    errno: Option<u32>,
    arg: Option<ArgRule>,
}

#[derive(serde::Deserialize)]
struct ArgRule {
    index: usize,
    op: String,
    value: u64,
    value_two: Option<u64>,
}

const PROFILE_JSON: &str = include_str!("seccomp_default.json");

fn profile() -> &'static Profile {
    static P: OnceLock<Profile> = OnceLock::new();
    // The file is part of the source tree; `embedded_profile_parses` keeps it valid.
    P.get_or_init(|| serde_json::from_str(PROFILE_JSON).expect("seccomp_default.json is valid"))
}

/// The seccomp architectures of this host: the native one plus the compat ones it can run.
fn architectures() -> Vec<Arch> {
    match std::env::consts::ARCH {
        "x86_64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "aarch64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        "s390x" => vec![Arch::ScmpArchS390x, Arch::ScmpArchS390],
        "riscv64" => vec![Arch::ScmpArchRiscv64],
        _ => vec![],
    }
}

fn operator(op: &str) -> Option<LinuxSeccompOperator> {
    Some(match op {
        "eq" => LinuxSeccompOperator::ScmpCmpEq,
        "ne" => LinuxSeccompOperator::ScmpCmpNe,
        "masked_eq" => LinuxSeccompOperator::ScmpCmpMaskedEq,
        "lt" => LinuxSeccompOperator::ScmpCmpLt,
        "le" => LinuxSeccompOperator::ScmpCmpLe,
        "gt" => LinuxSeccompOperator::ScmpCmpGt,
        "ge" => LinuxSeccompOperator::ScmpCmpGe,
        _ => return None,
    })
}

/// The built-in `RuntimeDefault` profile for a container holding `caps`.
pub fn runtime_default(caps: &[Capability]) -> LinuxSeccomp {
    let has = |name: &str| caps.iter().any(|c| c.to_string() == name);
    let p = profile();
    let mut syscalls = Vec::new();
    for r in &p.rules {
        if r.when_cap.as_deref().is_some_and(|c| !has(c))
            || r.unless_cap.as_deref().is_some_and(has)
            || r.arch
                .as_ref()
                .is_some_and(|a| !a.iter().any(|x| x == std::env::consts::ARCH))
        {
            continue;
        }
        let mut sc = LinuxSyscall::default();
        sc.set_names(r.names.clone());
        match r.errno {
            Some(e) => sc
                .set_action(LinuxSeccompAction::ScmpActErrno)
                .set_errno_ret(Some(e)),
            None => sc.set_action(LinuxSeccompAction::ScmpActAllow),
        };
        if let Some(a) = &r.arg {
            let mut arg = LinuxSeccompArgBuilder::default()
                .index(a.index)
                .value(a.value)
                .op(operator(&a.op).unwrap_or(LinuxSeccompOperator::ScmpCmpEq));
            if let Some(v2) = a.value_two {
                arg = arg.value_two(v2);
            }
            if let Ok(arg) = arg.build() {
                sc.set_args(Some(vec![arg]));
            }
        }
        syscalls.push(sc);
    }
    let mut s = LinuxSeccomp::default();
    s.set_default_action(LinuxSeccompAction::ScmpActErrno)
        .set_default_errno_ret(Some(p.default_errno))
        .set_architectures(Some(architectures()))
        .set_syscalls(Some(syscalls));
    s
}

/// The filter for a container, or `None` for unconfined. `profile` is the CRI `seccomp` field;
/// `legacy_path` the deprecated `seccomp_profile_path`, used only when `profile` is absent.
pub fn select(
    profile: Option<&SecurityProfile>,
    legacy_path: &str,
    privileged: bool,
    caps: &[Capability],
) -> Result<Option<LinuxSeccomp>, SpecError> {
    if privileged {
        return Ok(None);
    }
    let (kind, reference) = match profile {
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(t) => (t, p.localhost_ref.as_str()),
            Err(_) => {
                return Err(SpecError::Invalid(format!(
                    "unknown seccomp profile type {}",
                    p.profile_type
                )));
            }
        },
        None => match legacy_path {
            "" | "unconfined" => (ProfileType::Unconfined, ""),
            "runtime/default" | "docker/default" => (ProfileType::RuntimeDefault, ""),
            p if p.starts_with("localhost/") => (ProfileType::Localhost, p),
            p => {
                return Err(SpecError::Invalid(format!("unknown seccomp profile path {p:?}")));
            }
        },
    };
    match kind {
        ProfileType::Unconfined => Ok(None),
        ProfileType::RuntimeDefault => Ok(Some(runtime_default(caps))),
        ProfileType::Localhost => localhost(reference).map(Some),
    }
}

fn localhost(reference: &str) -> Result<LinuxSeccomp, SpecError> {
    let path = Path::new(reference.strip_prefix("localhost/").unwrap_or(reference));
    if !path.is_absolute() {
        return Err(SpecError::Invalid(format!(
            "seccomp localhost profile {reference:?} must be an absolute path"
        )));
    }
    let text = std::fs::read(path).map_err(|source| SpecError::MountSource {
        path: path.into(),
        source,
    })?;
    serde_json::from_slice(&text)
        .map_err(|e| SpecError::Invalid(format!("seccomp profile {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(s: &LinuxSeccomp, name: &str) -> bool {
        s.syscalls().as_ref().unwrap().iter().any(|r| {
            r.action() == LinuxSeccompAction::ScmpActAllow
                && r.args().is_none()
                && r.names().iter().any(|n| n == name)
        })
    }

    #[test]
    fn embedded_profile_parses_and_every_operator_is_known() {
        let p: Profile = serde_json::from_str(PROFILE_JSON).unwrap();
        assert_eq!(p.default_errno, libc::EPERM as u32);
        for r in &p.rules {
            assert!(!r.names.is_empty());
            if let Some(a) = &r.arg {
                assert!(operator(&a.op).is_some(), "{}", a.op);
            }
        }
    }

    #[test]
    fn allow_list_denies_by_default_and_capabilities_allow_their_syscalls() {
        let plain = runtime_default(&[Capability::Chown]);
        assert_eq!(plain.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(plain.default_errno_ret(), Some(1));
        assert!(allowed(&plain, "read") && allowed(&plain, "execve") && allowed(&plain, "chmod"));
        for denied in [
            "mount",
            "sethostname",
            "kexec_load",
            "reboot",
            "init_module",
            "bpf",
            "add_key",
        ] {
            assert!(!allowed(&plain, denied), "{denied}");
        }
        let clone3 = plain
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .find(|r| r.names().contains(&"clone3".to_string()))
            .unwrap();
        assert_eq!(clone3.errno_ret(), Some(libc::ENOSYS as u32));
        let admin = runtime_default(&[Capability::SysAdmin]);
        assert!(allowed(&admin, "mount") && allowed(&admin, "sethostname") && allowed(&admin, "clone"));
        assert!(!allowed(&admin, "kexec_load") && !allowed(&admin, "reboot"));
        assert!(allowed(&runtime_default(&[Capability::SysBoot]), "reboot"));
    }

    #[test]
    fn privileged_unconfined_and_legacy_paths() {
        let rd = SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        };
        assert!(select(Some(&rd), "", true, &[]).unwrap().is_none());
        assert!(select(Some(&rd), "", false, &[]).unwrap().is_some());
        assert!(select(None, "", false, &[]).unwrap().is_none());
        assert!(select(None, "unconfined", false, &[]).unwrap().is_none());
        assert!(select(None, "runtime/default", false, &[]).unwrap().is_some());
        assert!(select(None, "docker/default", false, &[]).unwrap().is_some());
        assert!(matches!(
            select(None, "bogus", false, &[]),
            Err(SpecError::Invalid(_))
        ));
    }

    #[test]
    fn localhost_profile_is_loaded_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.json");
        std::fs::write(
            &f,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["sethostname"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let p = SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: f.to_string_lossy().into(),
        };
        let s = select(Some(&p), "", false, &[]).unwrap().unwrap();
        assert_eq!(
            s.syscalls().as_ref().unwrap()[0].names(),
            &vec!["sethostname".to_string()]
        );
        let legacy = format!("localhost/{}", f.display());
        assert!(select(None, &legacy, false, &[]).unwrap().is_some());
        let missing = SecurityProfile {
            localhost_ref: "/no/such/profile.json".into(),
            ..p
        };
        assert!(select(Some(&missing), "", false, &[]).is_err());
    }
}
