//! The systemd cgroup driver's calls from the shim binary: a transient scope for the calling
//! process (the pod infra launcher, so the infra process is born in its scope) and stopping a
//! pod slice. Both go over D-Bus through libcgroups' systemd manager, so the daemon itself never
//! talks to systemd.
//!
//! Invariant: `unit` is `<slice>:<prefix>:<name>` (an OCI systemd cgroupsPath); a scope is
//! `<prefix>-<name>.scope` in `<slice>`, a name ending in `.slice` is that slice itself.

use std::path::PathBuf;
use std::time::Duration;

use libcgroups::common::CgroupManager;
use libcgroups::systemd::manager::Manager;
use nix::unistd::Pid;

const ROOT: &str = "/sys/fs/cgroup";
/// How long systemd gets to show a moved process in the scope's cgroup.
const WAIT: Duration = Duration::from_secs(10);

fn manager(unit: &str) -> Result<Manager, String> {
    Manager::new(
        PathBuf::from(ROOT),
        PathBuf::from(unit),
        "crius".into(),
        true,
        WAIT,
    )
    .map_err(|e| format!("systemd unit {unit}: {}", crate::create::error_chain(&e)))
}

/// Puts the calling process into the transient scope `unit` (created with `Delegate=yes`).
pub fn join_scope(unit: &str) -> Result<(), String> {
    manager(unit)?
        .add_task(Pid::this())
        .map_err(|e| format!("cannot start scope {unit}: {}", crate::create::error_chain(&e)))
}

/// Moves the shim out of the daemon's cgroup, into `place`, before anything else exists.
pub fn leave_daemon_cgroup(place: &crius_shim_api::ShimCgroup) -> Result<(), String> {
    match place {
        crius_shim_api::ShimCgroup::Scope(unit) => join_scope(unit),
        crius_shim_api::ShimCgroup::Dirs(dirs) => {
            let me = std::process::id().to_string();
            for dir in dirs {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                let procs = dir.join("cgroup.procs");
                std::fs::write(&procs, &me).map_err(|e| format!("cannot join {}: {e}", procs.display()))?;
            }
            Ok(())
        }
    }
}

/// `crius-shim stop-slice NAME.slice`: stops the slice (systemd kills what is left in it).
/// Idempotent: a slice that is not loaded is not an error. Returns the exit code.
pub fn stop_slice_main(args: &[String]) -> i32 {
    let [slice] = args else {
        note!("usage: crius-shim stop-slice NAME.slice");
        return 2;
    };
    let parent = match parent_of(slice) {
        Some(p) => p,
        None => {
            note!("crius-shim stop-slice: {slice:?} is not a slice name");
            return 2;
        }
    };
    match manager(&format!("{parent}:crius:{slice}")).and_then(|m| {
        m.remove()
            .map_err(|e| format!("cannot stop {slice}: {}", crate::create::error_chain(&e)))
    }) {
        Ok(()) => 0,
        Err(e) => {
            note!("crius-shim stop-slice: {e}");
            1
        }
    }
}

/// `a-b.slice` → `a.slice`, `a.slice` → `-.slice`.
fn parent_of(slice: &str) -> Option<String> {
    let stem = slice
        .strip_suffix(".slice")
        .filter(|s| !s.is_empty() && !s.contains('/'))?;
    Some(match stem.rsplit_once('-') {
        Some((p, _)) if !p.is_empty() => format!("{p}.slice"),
        Some(_) => return None,
        None => "-.slice".to_string(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn slice_parents() {
        assert_eq!(
            super::parent_of("crius-podab.slice").as_deref(),
            Some("crius.slice")
        );
        assert_eq!(super::parent_of("crius.slice").as_deref(), Some("-.slice"));
        assert_eq!(super::parent_of("x.scope"), None);
        assert_eq!(super::parent_of("-x.slice"), None);
    }
}
