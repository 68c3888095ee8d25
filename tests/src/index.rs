//! Multi-platform test images: one image per platform, each told apart by a marker file and its
//! config, pushed together under one tag as an OCI image index.
//!
//! Invariant: every image of an index is also pushed under its own tag first, so the registry
//! holds each manifest the index names before the index itself arrives.

use anyhow::{Context, Result};
use oci_client::Reference;
use oci_client::manifest::{OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciImageIndex};
use oci_client::secrets::RegistryAuth;

use crate::images::{self, ImageSpec, Layer, Pushed};
use crate::registry::Registry;

/// Where each platform's image keeps the name of its platform.
pub const MARKER: &str = "etc/platform";

/// One entry of an index: its platform as written in the index, and its image.
#[derive(Debug, Clone)]
pub struct Entry {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub spec: ImageSpec,
}

impl Entry {
    /// busybox plus [`MARKER`] holding `os/arch[/variant]`; the marker makes each platform's
    /// layers, config and therefore image id differ.
    pub fn marked(os: &str, architecture: &str, variant: Option<&str>) -> Entry {
        let name = match variant {
            Some(v) => format!("{os}/{architecture}/{v}"),
            None => format!("{os}/{architecture}"),
        };
        let mut spec = ImageSpec::busybox();
        spec.layers.push(Layer::Files(vec![(
            MARKER.into(),
            format!("{name}\n").into_bytes(),
            0o644,
        )]));
        Entry {
            os: os.into(),
            architecture: architecture.into(),
            variant: variant.map(str::to_string),
            spec,
        }
    }
}

/// A pushed index and its images, in the order the index lists them.
#[derive(Debug, Clone)]
pub struct PushedIndex {
    /// `127.0.0.1:port/repo:tag`
    pub reference: String,
    pub index_digest: String,
    pub images: Vec<Pushed>,
}

/// Pushes each entry's image (as `<tag>-<n>`), then an index of them as `<registry>/<repo>:<tag>`.
pub async fn push_index(
    registry: &Registry,
    repo: &str,
    tag: &str,
    entries: &[Entry],
) -> Result<PushedIndex> {
    let client = images::client();
    let mut pushed = Vec::new();
    let mut descriptors = Vec::new();
    for (n, e) in entries.iter().enumerate() {
        let platform = (e.os.as_str(), e.architecture.as_str(), e.variant.as_deref());
        let p = images::push_for(registry, repo, &format!("{tag}-{n}"), &e.spec, platform).await?;
        let by_digest: Reference = format!("{}@{}", p.repository, p.manifest_digest).parse()?;
        let (body, _) = client
            .pull_manifest_raw(&by_digest, &RegistryAuth::Anonymous, &[OCI_IMAGE_MEDIA_TYPE])
            .await
            .with_context(|| format!("reading back {by_digest}"))?;
        let mut platform = serde_json::json!({"os": e.os, "architecture": e.architecture});
        if let Some(v) = &e.variant {
            platform["variant"] = serde_json::json!(v);
        }
        descriptors.push(serde_json::json!({
            "mediaType": OCI_IMAGE_MEDIA_TYPE,
            "digest": p.manifest_digest,
            "size": body.len(),
            "platform": platform,
        }));
        pushed.push(p);
    }
    let index: OciImageIndex = serde_json::from_value(serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_IMAGE_INDEX_MEDIA_TYPE,
        "manifests": descriptors,
    }))?;
    let reference = format!("{}/{repo}:{tag}", registry.addr);
    let r: Reference = reference.parse()?;
    client
        .push_manifest_list(&r, &RegistryAuth::Anonymous, index)
        .await
        .with_context(|| format!("pushing the index {reference}"))?;
    let (_, index_digest) = client
        .pull_manifest_raw(&r, &RegistryAuth::Anonymous, &[OCI_IMAGE_INDEX_MEDIA_TYPE])
        .await
        .with_context(|| format!("reading back {reference}"))?;
    Ok(PushedIndex {
        reference,
        index_digest,
        images: pushed,
    })
}
