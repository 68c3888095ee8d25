//! Seccomp: which filter a container runs under. `Unconfined` and an absent profile mean none;
//! `Localhost` loads an OCI `LinuxSeccomp` JSON file from the host; `RuntimeDefault` is the
//! built-in profile below; a privileged container ignores every profile.
//!
//! The built-in profile is kept as data: it allows by default and fails with EPERM the syscalls
//! Docker's and containerd's default profile leave out, each group re-allowed when the
//! container holds the capability that guards it (the same conditions those profiles use).
//! Issue "security context" may replace it with a literal port of the allow-list profile.

use std::path::Path;

use cri_api::v1::SecurityProfile;
use cri_api::v1::security_profile::ProfileType;
use oci_spec::runtime::{Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSyscall};

use super::SpecError;

/// (capability that re-allows the group, syscalls). `None`: never allowed.
const DENIED: &[(Option<&str>, &[&str])] = &[
    (
        None,
        &[
            "add_key",
            "keyctl",
            "request_key",
            "get_kernel_syms",
            "query_module",
            "create_module",
            "nfsservctl",
            "uselib",
            "ustat",
            "sysfs",
            "_sysctl",
            "userfaultfd",
            "kexec_file_load",
            "kexec_load",
            "vm86",
            "vm86old",
            "stime",
        ],
    ),
    (
        Some("SYS_ADMIN"),
        &[
            "mount",
            "umount",
            "umount2",
            "unshare",
            "setns",
            "pivot_root",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "quotactl",
            "quotactl_fd",
            "lookup_dcookie",
            "fanotify_init",
            "name_to_handle_at",
            "bpf",
        ],
    ),
    (
        Some("SYS_PTRACE"),
        &["ptrace", "process_vm_readv", "process_vm_writev", "kcmp"],
    ),
    (
        Some("SYS_MODULE"),
        &["init_module", "finit_module", "delete_module"],
    ),
    (Some("SYS_BOOT"), &["reboot"]),
    (
        Some("SYS_TIME"),
        &["settimeofday", "clock_settime", "clock_adjtime"],
    ),
    (Some("SYS_PACCT"), &["acct"]),
    (Some("SYS_RAWIO"), &["iopl", "ioperm"]),
    (
        Some("SYS_NICE"),
        &["get_mempolicy", "set_mempolicy", "mbind", "move_pages"],
    ),
    (Some("DAC_READ_SEARCH"), &["open_by_handle_at"]),
    (Some("SYSLOG"), &["syslog"]),
    (Some("PERFMON"), &["perf_event_open"]),
];

/// The built-in `RuntimeDefault` profile for a container holding `caps`.
pub fn runtime_default(caps: &[Capability]) -> LinuxSeccomp {
    let has = |name: &str| caps.iter().any(|c| c.to_string() == name);
    let names: Vec<String> = DENIED
        .iter()
        .filter(|(cap, _)| cap.is_none_or(|c| !has(c)))
        .flat_map(|(_, calls)| calls.iter().map(|s| s.to_string()))
        .collect();
    let mut rule = LinuxSyscall::default();
    rule.set_names(names)
        .set_action(LinuxSeccompAction::ScmpActErrno)
        .set_errno_ret(Some(libc::EPERM as u32));
    let mut s = LinuxSeccomp::default();
    s.set_default_action(LinuxSeccompAction::ScmpActAllow)
        .set_architectures(Some(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ]))
        .set_syscalls(Some(vec![rule]));
    s
}

/// The filter for a container, or `None` for unconfined.
pub fn select(
    profile: Option<&SecurityProfile>,
    privileged: bool,
    caps: &[Capability],
) -> Result<Option<LinuxSeccomp>, SpecError> {
    let Some(p) = profile.filter(|_| !privileged) else {
        return Ok(None);
    };
    match ProfileType::try_from(p.profile_type) {
        Ok(ProfileType::Unconfined) => Ok(None),
        Ok(ProfileType::RuntimeDefault) => Ok(Some(runtime_default(caps))),
        Ok(ProfileType::Localhost) => localhost(&p.localhost_ref).map(Some),
        Err(_) => Err(SpecError::Invalid(format!(
            "unknown seccomp profile type {}",
            p.profile_type
        ))),
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

    fn denied(s: &LinuxSeccomp) -> Vec<String> {
        s.syscalls().as_ref().unwrap()[0].names().clone()
    }

    #[test]
    fn capabilities_reallow_their_syscalls() {
        let plain = runtime_default(&[Capability::Chown]);
        assert!(denied(&plain).contains(&"mount".to_string()));
        assert!(denied(&plain).contains(&"ptrace".to_string()));
        let admin = runtime_default(&[Capability::SysAdmin]);
        assert!(!denied(&admin).contains(&"mount".to_string()));
        assert!(denied(&admin).contains(&"kexec_load".to_string()));
    }

    #[test]
    fn privileged_and_unconfined_have_no_filter() {
        let rd = SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        };
        assert!(select(Some(&rd), true, &[]).unwrap().is_none());
        assert!(select(Some(&rd), false, &[]).unwrap().is_some());
        assert!(select(None, false, &[]).unwrap().is_none());
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
        let s = select(Some(&p), false, &[]).unwrap().unwrap();
        assert_eq!(denied(&s), vec!["sethostname".to_string()]);
        let missing = SecurityProfile {
            localhost_ref: "/no/such/profile.json".into(),
            ..p
        };
        assert!(select(Some(&missing), false, &[]).is_err());
    }
}
