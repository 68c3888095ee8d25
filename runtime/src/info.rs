//! Runtime-wide queries that belong to no single object: `Version`, `Status`, `RuntimeConfig`
//! and `ImageFsInfo`. Plain data in, CRI messages out; no tonic here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use cri_api::v1;

use crate::config::Config;

/// CRI: the kubelet API version this runtime speaks in `VersionResponse.version`.
pub const KUBELET_API_VERSION: &str = "0.1.0";
pub const RUNTIME_NAME: &str = "crius";
pub const RUNTIME_API_VERSION: &str = "v1";

pub fn version() -> v1::VersionResponse {
    v1::VersionResponse {
        version: KUBELET_API_VERSION.to_string(),
        runtime_name: RUNTIME_NAME.to_string(),
        runtime_version: env!("CARGO_PKG_VERSION").to_string(),
        runtime_api_version: RUNTIME_API_VERSION.to_string(),
    }
}

/// Whether the configured network can be used: a loadable config whose every plugin binary exists.
/// `Err` carries the operator-facing message for the NetworkReady condition.
pub fn network_ready(config: &Config) -> Result<(), String> {
    let net = crius_sandbox::cni::load_network(&config.cni.conf_dir).map_err(|e| e.to_string())?;
    for plugin in &net.plugins {
        if find_plugin(&config.cni.bin_dirs, &plugin.plugin_type).is_none() {
            return Err(format!(
                "CNI network {:?} ({}) needs plugin {:?}, not found in {:?}",
                net.name,
                net.source.display(),
                plugin.plugin_type,
                config.cni.bin_dirs
            ));
        }
    }
    Ok(())
}

fn find_plugin(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// CRI: `Status` with the RuntimeReady and NetworkReady conditions; `verbose` adds the
/// effective configuration as JSON under `info["config"]`.
pub fn status(config: &Config, runtime_ready: bool, verbose: bool) -> v1::StatusResponse {
    let runtime = v1::RuntimeCondition {
        r#type: "RuntimeReady".to_string(),
        status: runtime_ready,
        reason: if runtime_ready {
            String::new()
        } else {
            "RuntimeNotReady".to_string()
        },
        message: if runtime_ready {
            String::new()
        } else {
            "crius is still recovering its state".to_string()
        },
    };
    let network = match network_ready(config) {
        Ok(()) => v1::RuntimeCondition {
            r#type: "NetworkReady".to_string(),
            status: true,
            ..Default::default()
        },
        Err(message) => v1::RuntimeCondition {
            r#type: "NetworkReady".to_string(),
            status: false,
            reason: "NetworkPluginNotReady".to_string(),
            message: format!("Network plugin returns error: {message}"),
        },
    };
    let mut info = HashMap::new();
    if verbose {
        let json =
            serde_json::to_string(config).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()));
        info.insert("config".to_string(), json);
    }
    v1::StatusResponse {
        status: Some(v1::RuntimeStatus {
            conditions: vec![runtime, network],
        }),
        info,
        // CRI: critest's default runtime handler is "", so the default handler is listed by that
        // name, followed by the configured ones.
        runtime_handlers: crate::handlers::Handlers::new(&config.runtimes, &config.state).to_cri(),
        features: Some(v1::RuntimeFeatures {
            // Merge and Strict are computed from the image's /etc/group (spec::process::user) and
            // ContainerStatus reports the effective ids.
            supplemental_groups_policy: true,
        }),
    }
}

/// What the default handler (and any handler without a `runtime_path`) can do. Only what works is advertised:
/// - recursive read-only mounts: libcontainer applies the `rro` option with
///   `mount_setattr(AT_RECURSIVE)`, and the spec builder refuses RRO unless read-only + private.
/// - user namespaces: only when the start-up probe could create a user namespace and mount an
///   overlay over an idmapped directory of the layer store ([`set_user_namespaces`]); a pod's
///   namespaces are then created inside its user namespace and its containers' layers idmapped.
pub fn handler_features() -> v1::RuntimeHandlerFeatures {
    v1::RuntimeHandlerFeatures {
        recursive_read_only_mounts: true,
        user_namespaces: USER_NAMESPACES.get().copied().unwrap_or(false),
    }
}

/// Set once, by the daemon's start-up probe.
static USER_NAMESPACES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Records the start-up probe's answer; later calls are ignored.
pub fn set_user_namespaces(supported: bool) {
    let _ = USER_NAMESPACES.set(supported);
}

/// CRI: the cgroup driver in force, which kubelet (KubeletCgroupDriverFromCRI) and critest
/// follow when they name pod cgroups.
pub fn runtime_config(driver: crius_sandbox::cgroup::Driver) -> v1::RuntimeConfigResponse {
    let cgroup_driver = match driver {
        crius_sandbox::cgroup::Driver::Cgroupfs => v1::CgroupDriver::Cgroupfs,
        crius_sandbox::cgroup::Driver::Systemd => v1::CgroupDriver::Systemd,
    };
    v1::RuntimeConfigResponse {
        linux: Some(v1::LinuxRuntimeConfiguration {
            cgroup_driver: cgroup_driver as i32,
        }),
    }
}

/// Directories under `root` holding image data (blobs and unpacked layers).
pub fn image_dirs(root: &Path) -> [PathBuf; 2] {
    [root.join("content"), root.join("layers")]
}

/// Directory under `root` holding the containers' writable layers.
pub fn container_dir(root: &Path) -> PathBuf {
    root.join("containers")
}

/// CRI: `ImageFsInfo`. Measures the disk; never fails (crictl calls it on every connect).
/// `layers` remembers the unpacked layers' usage between calls (they never change);
/// `known_container` gives a container directory's usage (by name) where it was just measured.
pub fn image_fs_info(
    root: &Path,
    layers: &crius_image::usage::ImmutableEntries,
    known_container: impl Fn(&std::ffi::OsStr) -> Option<crius_image::usage::Usage>,
) -> v1::ImageFsInfoResponse {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let [content, layers_dir] = image_dirs(root);
    let (c, l) = (crius_image::usage::measure(&content), layers.measure(&layers_dir));
    let images = crius_image::usage::Usage {
        bytes: c.bytes + l.bytes,
        inodes: c.inodes + l.inodes,
    };
    let containers = crius_image::usage::measure_reusing(&container_dir(root), known_container);
    let fs = |mountpoint: &Path, u: crius_image::usage::Usage| v1::FilesystemUsage {
        timestamp,
        fs_id: Some(v1::FilesystemIdentifier {
            mountpoint: mountpoint.display().to_string(),
        }),
        used_bytes: Some(v1::UInt64Value { value: u.bytes }),
        inodes_used: Some(v1::UInt64Value { value: u.inodes }),
    };
    v1::ImageFsInfoResponse {
        image_filesystems: vec![fs(root, images)],
        container_filesystems: vec![fs(&container_dir(root), containers)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_cni(dir: &Path, bin: &Path) -> Config {
        let mut c = Config::default();
        c.cni.conf_dir = dir.to_path_buf();
        c.cni.bin_dirs = vec![bin.to_path_buf()];
        c
    }

    #[test]
    fn network_not_ready_names_what_is_missing() {
        let conf = tempfile::tempdir().unwrap();
        let bin = tempfile::tempdir().unwrap();
        let c = config_with_cni(conf.path(), bin.path());
        let s = status(&c, true, false);
        let net = &s.status.unwrap().conditions[1];
        assert!(!net.status);
        assert_eq!(net.reason, "NetworkPluginNotReady");
        assert!(net.message.contains("no CNI network config"), "{}", net.message);

        std::fs::write(
            conf.path().join("10.conflist"),
            r#"{"name":"n","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        let err = network_ready(&c).unwrap_err();
        assert!(err.contains("\"bridge\""), "{err}");

        std::fs::write(bin.path().join("bridge"), "").unwrap();
        assert!(network_ready(&c).is_ok());
    }

    #[test]
    fn default_handler_advertises_rro_and_groups_policy_only() {
        let s = status(&Config::default(), true, false);
        assert_eq!(s.runtime_handlers.len(), 1);
        assert_eq!(s.runtime_handlers[0].name, "");
        let f = s.runtime_handlers[0].features.unwrap();
        assert!(f.recursive_read_only_mounts && !f.user_namespaces);
        assert!(s.features.unwrap().supplemental_groups_policy);
    }

    #[test]
    fn verbose_status_carries_config_json() {
        let s = status(&Config::default(), true, true);
        let v: serde_json::Value = serde_json::from_str(&s.info["config"]).unwrap();
        assert_eq!(v["root"], "/var/lib/crius");
        assert!(status(&Config::default(), true, false).info.is_empty());
    }

    #[test]
    fn fs_info_measures_image_and_container_dirs() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("content/blobs")).unwrap();
        std::fs::write(root.path().join("content/blobs/x"), vec![1u8; 8192]).unwrap();
        let r = image_fs_info(root.path(), &Default::default(), |_| None);
        let img = &r.image_filesystems[0];
        assert!(img.used_bytes.unwrap().value >= 8192);
        assert_eq!(img.inodes_used.unwrap().value, 3);
        assert!(img.timestamp > 0);
        assert_eq!(r.container_filesystems[0].inodes_used.unwrap().value, 0);
    }
}
