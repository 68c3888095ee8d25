//! AppArmor: the profile a container's process runs under (`process.apparmorProfile`).
//!
//! crius ships and loads no AppArmor profile of its own. So `RuntimeDefault` and `Unconfined`
//! (and the deprecated `runtime/default`, `unconfined`, empty) mean "no profile set by crius";
//! a `Localhost` profile is applied by name when the kernel has AppArmor, and refused with
//! [`SpecError::Unsupported`] when it has not — a profile that cannot be enforced is never
//! silently dropped. A privileged container runs unconfined.

use cri_api::v1::SecurityProfile;
use cri_api::v1::security_profile::ProfileType;

use super::SpecError;

/// The profile name for `process.apparmorProfile`, or `None`. `legacy` is the deprecated
/// `apparmor_profile` string, used only when `profile` is absent.
pub fn select(
    profile: Option<&SecurityProfile>,
    legacy: &str,
    privileged: bool,
    host_has_apparmor: bool,
) -> Result<Option<String>, SpecError> {
    if privileged {
        return Ok(None);
    }
    let name = match profile {
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault | ProfileType::Unconfined) => return Ok(None),
            Ok(ProfileType::Localhost) => p
                .localhost_ref
                .strip_prefix("localhost/")
                .unwrap_or(&p.localhost_ref)
                .to_string(),
            Err(_) => {
                return Err(SpecError::Invalid(format!(
                    "unknown AppArmor profile type {}",
                    p.profile_type
                )));
            }
        },
        None => match legacy {
            "" | "runtime/default" | "unconfined" => return Ok(None),
            l => match l.strip_prefix("localhost/") {
                Some(n) => n.to_string(),
                None => return Err(SpecError::Invalid(format!("unknown AppArmor profile {l:?}"))),
            },
        },
    };
    if name.is_empty() {
        return Err(SpecError::Invalid(
            "AppArmor localhost profile without a name".into(),
        ));
    }
    if !host_has_apparmor {
        return Err(SpecError::Unsupported(format!(
            "AppArmor profile {name:?} requested, but AppArmor is not enabled on this host"
        )));
    }
    Ok(Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: ProfileType, r: &str) -> SecurityProfile {
        SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        }
    }

    #[test]
    fn default_and_unconfined_need_nothing_localhost_needs_apparmor() {
        assert_eq!(
            select(Some(&p(ProfileType::RuntimeDefault, "")), "", false, false).unwrap(),
            None
        );
        assert_eq!(
            select(Some(&p(ProfileType::Unconfined, "")), "", false, false).unwrap(),
            None
        );
        assert_eq!(select(None, "runtime/default", false, false).unwrap(), None);
        let local = p(ProfileType::Localhost, "localhost/my-profile");
        assert!(matches!(
            select(Some(&local), "", false, false),
            Err(SpecError::Unsupported(m)) if m.contains("my-profile")
        ));
        assert!(matches!(
            select(None, "localhost/x", false, false),
            Err(SpecError::Unsupported(_))
        ));
        assert_eq!(
            select(Some(&local), "", false, true).unwrap().as_deref(),
            Some("my-profile")
        );
        assert_eq!(select(Some(&local), "", true, false).unwrap(), None, "privileged");
        assert!(matches!(
            select(None, "bogus", false, true),
            Err(SpecError::Invalid(_))
        ));
    }
}
