//! Container Device Interface (CDI): the devices a container asks for by fully-qualified name
//! (`vendor.com/class=name`, in `ContainerConfig.cdi_devices` or in `cdi.k8s.io/*` annotations),
//! resolved against the spec files in the configured directories and applied to its OCI spec.
//!
//! Layout: `schema` (the file format and its validation), `registry` (the spec directories),
//! `inject` (the edits, checked against the host, then applied).
//!
//! Invariants: the directories are re-read on every CreateContainer that requests a device, so
//! a device plugin's newly written spec is seen without a restart; a container that requests no
//! device causes no disk access; every failure happens before anything of the container exists
//! and names the device.

mod inject;
mod registry;
mod schema;

use std::collections::HashSet;
use std::path::PathBuf;

use cri_api::v1::ContainerConfig;
use serde::{Deserialize, Serialize};

pub use inject::Injection;
pub use registry::{MAX_SPEC_BYTES, MAX_SPECS_PER_DIR};

/// The annotation key prefix that requests devices (value: a comma-separated list of names).
pub const ANNOTATION_PREFIX: &str = "cdi.k8s.io/";

/// The `[cdi]` table of the daemon configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdiConfig {
    /// Spec directories, lowest priority first (a later directory's device wins).
    pub spec_dirs: Vec<PathBuf>,
}

impl Default for CdiConfig {
    fn default() -> Self {
        CdiConfig {
            spec_dirs: vec![PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CdiError {
    /// Not a fully-qualified device name (InvalidArgument).
    #[error("{0}")]
    InvalidName(String),
    /// No spec defines it (InvalidArgument).
    #[error("unknown CDI device {0:?}: no spec in the CDI spec directories defines it")]
    UnknownDevice(String),
    /// Two specs of the same priority define it (InvalidArgument).
    #[error("CDI device {name:?} is defined by both {} and {}", a.display(), b.display())]
    Conflict { name: String, a: PathBuf, b: PathBuf },
    /// Its edits do not fit the host: a missing host device, mount source or hook
    /// (InvalidArgument).
    #[error("CDI device {device:?}: {message}")]
    Invalid { device: String, message: String },
    /// Its edits ask for something crius does not do (FailedPrecondition).
    #[error("CDI device {device:?}: {what} is not supported")]
    Unsupported { device: String, what: &'static str },
    /// A spec directory exists but cannot be listed (Internal).
    #[error("reading the CDI spec directories {dirs:?}: {source}")]
    Dir {
        dirs: Vec<PathBuf>,
        #[source]
        source: std::io::Error,
    },
}

/// The devices `config` requests: `cdi_devices` first, then the `cdi.k8s.io/*` annotations in key
/// order, each name once (kubelet may send a device both ways).
pub fn requested(config: &ContainerConfig) -> Result<Vec<String>, CdiError> {
    let mut names: Vec<String> = config.cdi_devices.iter().map(|d| d.name.clone()).collect();
    let mut keys: Vec<&String> = config
        .annotations
        .keys()
        .filter(|k| k.starts_with(ANNOTATION_PREFIX))
        .collect();
    keys.sort();
    for k in keys {
        if k.len() == ANNOTATION_PREFIX.len() {
            return Err(CdiError::InvalidName(format!(
                "annotation {k:?} has no name after the prefix"
            )));
        }
        for n in config.annotations[k]
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            schema::qualified(n).map_err(|e| CdiError::InvalidName(format!("annotation {k:?}: {e}")))?;
            names.push(n.to_string());
        }
    }
    let mut seen = HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_merges_field_and_annotations_once_each() {
        let mut c = ContainerConfig {
            cdi_devices: vec![
                cri_api::v1::CdiDevice {
                    name: "vendor.com/gpu=0".into(),
                },
                cri_api::v1::CdiDevice {
                    name: "vendor.com/gpu=1".into(),
                },
            ],
            ..Default::default()
        };
        c.annotations
            .insert("cdi.k8s.io/b".into(), "vendor.com/net=a, vendor.com/gpu=0".into());
        c.annotations
            .insert("cdi.k8s.io/a".into(), "vendor.com/gpu=1".into());
        c.annotations.insert("other/x".into(), "not-a-device".into());
        assert_eq!(
            requested(&c).unwrap(),
            ["vendor.com/gpu=0", "vendor.com/gpu=1", "vendor.com/net=a"]
        );
        c.annotations.insert("cdi.k8s.io/c".into(), "gpu0".into());
        let e = requested(&c).unwrap_err().to_string();
        assert!(e.contains("cdi.k8s.io/c") && e.contains("gpu0"), "{e}");
    }
}
