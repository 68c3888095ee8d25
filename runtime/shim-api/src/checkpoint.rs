//! The checkpoint helper's request and report: `crius-shim checkpoint-helper --request <json>`
//! dumps one running container's processes with CRIU into an image directory and leaves them
//! running. The helper writes exactly one [`CheckpointReport`] frame on fd [`crate::REPORT_FD`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::OciRuntime;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRequest {
    pub version: u32,
    /// Container id (validated by the daemon).
    pub id: String,
    /// libcontainer's state root; the container's state lives in `<youki_root>/<id>/`.
    pub youki_root: PathBuf,
    /// An empty directory (mode 0700) that receives CRIU's images and its `dump.log`.
    pub image_dir: PathBuf,
    /// The container's external OCI runtime (`runtime checkpoint`); `None`: libcontainer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<OciRuntime>,
    /// The systemd cgroup driver is in force (the runtime gets `--systemd-cgroup`).
    #[serde(default)]
    pub systemd_cgroup: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum CheckpointReport {
    /// CRIU wrote its images; the container kept running.
    Done,
    /// Nothing usable was written; `message` carries CRIU's reason (the tail of its log).
    Failed { message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_wire_shape_is_stable() {
        assert_eq!(
            serde_json::to_string(&CheckpointReport::Failed { message: "x".into() }).unwrap(),
            r#"{"result":"failed","message":"x"}"#
        );
        assert_eq!(
            serde_json::to_string(&CheckpointReport::Done).unwrap(),
            r#"{"result":"done"}"#
        );
    }
}
