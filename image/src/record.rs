//! Image records as stored in redb, and their CRI view.
//!
//! Invariants: `id` is the config digest; `repo_tags` and `repo_digests` hold only normalised names
//! and no name is on two records (the name index enforces it); `layers` are bottom-first and each
//! carries the chain ID of its unpacked directory; `blobs` lists every content-store blob the image
//! needs (index, manifest, config, layers), which is what garbage collection keeps.

use std::collections::HashMap;

use cri_api::v1;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the (compressed) blob.
    pub digest: String,
    /// Digest of the decompressed tar.
    pub diff_id: String,
    pub chain_id: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Manifest + config + compressed layers, as containerd reports it.
    pub size: u64,
    pub manifest_digest: String,
    pub layers: Vec<LayerRecord>,
    pub blobs: Vec<String>,
    /// The config's `User`, verbatim.
    pub user: String,
}

impl ImageRecord {
    /// Every name the record is known by.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.repo_tags.iter().chain(&self.repo_digests)
    }

    /// Chain ID of the top layer (containerd's `chainID` in verbose status).
    pub fn top_chain_id(&self) -> Option<&str> {
        self.layers.last().map(|l| l.chain_id.as_str())
    }

    /// The CRI `Image` message.
    /// The CRI image; `pinned` when the configuration pins it ([`crate::ImageStore::pinned_ids`]).
    pub fn to_cri(&self, pinned: bool) -> v1::Image {
        let (uid, username) = user_of(&self.user);
        v1::Image {
            id: self.id.clone(),
            repo_tags: self.repo_tags.clone(),
            repo_digests: self.repo_digests.clone(),
            size: self.size,
            uid: uid.map(|value| v1::Int64Value { value }),
            username,
            spec: Some(v1::ImageSpec {
                image: self.id.clone(),
                ..Default::default()
            }),
            pinned,
        }
    }

    /// CRI: `ImageStatus` verbose info, shaped like containerd's (`info` → JSON with `chainID`
    /// and `imageSpec`).
    pub fn verbose_info(&self, config_json: &[u8]) -> HashMap<String, String> {
        let spec: serde_json::Value = serde_json::from_slice(config_json).unwrap_or(serde_json::Value::Null);
        let info = serde_json::json!({
            "imageSpec": spec,
            "chainID": self.top_chain_id().unwrap_or_default(),
            "manifestDigest": self.manifest_digest,
            "layers": self.layers,
        });
        HashMap::from([("info".to_string(), info.to_string())])
    }
}

/// CRI: `uid` when the user part of `User` is numeric (`1002`, `1003:1003`), else `username`
/// (`www-data`, `www-data:www-data`); neither for an empty `User`.
pub fn user_of(user: &str) -> (Option<i64>, String) {
    let name = user.split(':').next().unwrap_or_default();
    if name.is_empty() {
        return (None, String::new());
    }
    match name.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_map_like_containerd() {
        assert_eq!(user_of("1002"), (Some(1002), String::new()));
        assert_eq!(user_of("1003:1003"), (Some(1003), String::new()));
        assert_eq!(user_of("www-data"), (None, "www-data".into()));
        assert_eq!(user_of("www-data:www-data"), (None, "www-data".into()));
        assert_eq!(user_of(""), (None, String::new()));
    }

    #[test]
    fn cri_view_and_verbose_info() {
        let r = ImageRecord {
            id: "sha256:c".into(),
            repo_tags: vec!["docker.io/library/a:1".into()],
            repo_digests: vec!["docker.io/library/a@sha256:m".into()],
            size: 42,
            manifest_digest: "sha256:m".into(),
            layers: vec![LayerRecord {
                digest: "sha256:l".into(),
                diff_id: "sha256:d".into(),
                chain_id: "sha256:d".into(),
                size: 30,
            }],
            blobs: vec![],
            user: "1002".into(),
        };
        let img = r.to_cri(false);
        assert_eq!(img.uid.unwrap().value, 1002);
        assert_eq!(img.spec.unwrap().image, "sha256:c");
        let info = r.verbose_info(br#"{"config":{"User":"1002"}}"#);
        let v: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
        assert_eq!(v["chainID"], "sha256:d");
        assert_eq!(v["imageSpec"]["config"]["User"], "1002");
    }
}
