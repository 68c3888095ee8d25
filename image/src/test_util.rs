//! For the unit tests of crates that use the store (the container verbs): an image put into a
//! store without any registry. Compiled only for this crate's tests and with the `test-util`
//! feature, which only dev-dependencies enable; the daemon never has it.

use crate::content::sha256_digest;
use crate::record::{ImageRecord, LayerRecord};
use crate::reference::ImageRef;
use crate::store::{ImageStore, StoreError};

impl ImageStore {
    /// Stores an image named `name` (a repo tag, e.g. `busybox:1`) with one empty layer
    /// directory per entry of `layers` (bottom first) and a config whose command is `cmd`, as a
    /// pull would have left it; returns its record. Panics on a name that does not parse.
    pub fn add_local_image(
        &self,
        name: &str,
        layers: &[&str],
        cmd: &[&str],
    ) -> Result<ImageRecord, StoreError> {
        let tag = ImageRef::parse(name)
            .unwrap_or_else(|e| panic!("test image name {name:?}: {e}"))
            .to_string();
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|l| sha256_digest(format!("{name} diff {l}").as_bytes()))
            .collect();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {"Cmd": cmd},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        })
        .to_string();
        let id = sha256_digest(config.as_bytes());
        self.content.put(&id, config.as_bytes())?;
        let mut recs = Vec::new();
        for ((l, diff), chain) in layers
            .iter()
            .zip(&diff_ids)
            .zip(crate::unpack::chain_ids(&diff_ids))
        {
            let blob = format!("{name} blob {l}");
            let digest = sha256_digest(blob.as_bytes());
            self.content.put(&digest, blob.as_bytes())?;
            let dir = self.layers.path(&chain)?;
            std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io { path: dir, source })?;
            recs.push(LayerRecord {
                digest,
                diff_id: diff.clone(),
                chain_id: chain,
                size: blob.len() as u64,
            });
        }
        let manifest = sha256_digest(format!("{name} manifest").as_bytes());
        let repo = tag.rsplit_once(':').map_or(tag.as_str(), |(r, _)| r);
        let record = ImageRecord {
            id,
            repo_digests: vec![format!("{repo}@{manifest}")],
            repo_tags: vec![tag],
            size: recs.iter().map(|l| l.size).sum(),
            manifest_digest: manifest,
            blobs: recs.iter().map(|l| l.digest.clone()).collect(),
            layers: recs,
            user: String::new(),
        };
        self.record(record.clone())?;
        Ok(record)
    }
}
