//! Pulling an image: resolve the reference through its mirrors, fetch manifest, config and layers
//! (several layers at once, each streamed to the content store and unpacked while it downloads,
//! once per chain ID), then record the image under the name that was asked for.
//!
//! Invariants: a blob is fetched and a layer unpacked by one pull at a time (keyed locks), so two
//! concurrent pulls of one image download it once. Everything a pull uses is protected from GC
//! until it is recorded. A failed pull records nothing, leaves no temp file, and frees the content
//! it fetched that nothing else references; the next pull starts clean.
//! Callers that must survive their client going away run [`ImageStore::pull`] in a spawned task.

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use oci_client::manifest::OciDescriptor;

use crate::record::{ImageRecord, LayerRecord};
use crate::reference::{ImageRef, ReferenceError};
use crate::registry::auth_file::{self, AuthFileError};
use crate::registry::{Credentials, RegistryError, Remote, scope};
use crate::store::{ImageStore, StoreError};
use crate::unpack::{LayerError, chain_ids};
use oci_client::secrets::RegistryAuth;

/// How many layers of one image are fetched and unpacked at once.
pub const PARALLEL_LAYERS: usize = 3;
/// Chunks in flight between a layer's download and its unpacker: with chunks of at most
/// [`crate::registry::TEE_CHUNK_BYTES`] this holds at most 4 MiB per layer. With the 1 MiB blob
/// write buffer, the 8 MiB zstd window cap and the 1 MiB tar extension cap, a layer in flight
/// holds under 15 MiB, so [`PARALLEL_LAYERS`] of them stay under 64 MB with the manifest.
const PIPE_CHUNKS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("pulling {reference} from {endpoint}: {source}")]
    Registry {
        reference: String,
        endpoint: String,
        #[source]
        source: RegistryError,
    },
    #[error("image {reference}: invalid config {digest}: {why}")]
    InvalidConfig {
        reference: String,
        digest: String,
        why: String,
    },
    #[error("image {reference}: layer {digest}: {source}")]
    Layer {
        reference: String,
        digest: String,
        #[source]
        source: LayerError,
    },
    #[error("image {reference}: {source}")]
    Store {
        reference: String,
        #[source]
        source: StoreError,
    },
    #[error("image {reference}: no registry endpoint is configured")]
    NoEndpoint { reference: String },
    #[error(transparent)]
    AuthFile(#[from] AuthFileError),
    #[error("image {reference}: the pull task failed: {why}")]
    Task { reference: String, why: String },
}

/// The parts of an image config a pull needs; the full config stays in the content store.
#[derive(serde::Deserialize)]
struct ConfigView {
    #[serde(default)]
    config: Option<ConfigInner>,
    rootfs: RootFs,
}

#[derive(serde::Deserialize)]
struct ConfigInner {
    #[serde(rename = "User", default)]
    user: Option<String>,
}

#[derive(serde::Deserialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<String>,
}

impl ImageStore {
    /// CRI: `PullImage`. Returns the image id (config digest). Endpoints are tried in order
    /// (mirrors, then the registry unless `fallback = false`). `creds` belong to the host their
    /// `server_address` names (the image's registry when empty) and reach only the endpoints
    /// [`crate::registry::scope::may_send`] allows; the others are spoken to anonymously. Empty
    /// `creds`: those of the node credentials file for the image's registry, if configured.
    pub async fn pull(self: &Arc<Self>, reference: &str, creds: &Credentials) -> Result<String, PullError> {
        let r = ImageRef::parse(reference)?;
        let name = r.to_string();
        let reg = |endpoint: &str, source| PullError::Registry {
            reference: name.clone(),
            endpoint: endpoint.to_string(),
            source,
        };
        let creds = &self.node_credentials(&r, creds).await?;
        let auth = creds.to_auth().map_err(|e| reg(&r.registry, e))?;
        let endpoints = self.hosts.endpoints(&r.registry)?;
        let named = scope::named_host(&creds.server_address, &r.registry);
        let to_mirrors = self.hosts.credentials_to_mirrors(&r.registry);
        let mut first_definite: Option<PullError> = None;
        let mut last = None;
        for (i, ep) in endpoints.iter().enumerate() {
            let host = ep.host.clone();
            let ep_auth = if scope::may_send(&named, &r.registry, ep, to_mirrors) {
                auth.clone()
            } else {
                if auth != RegistryAuth::Anonymous {
                    tracing::debug!(image = %name, endpoint = %host, credentials_for = %named, "endpoint does not get the pull credentials");
                }
                RegistryAuth::Anonymous
            };
            let result = match self.clients.for_endpoint(ep) {
                Ok(http) => {
                    self.pull_from(&r, Remote::new(ep.clone(), http, ep_auth, named.clone()))
                        .await
                }
                Err(e) => Err(reg(&host, e)),
            };
            let e = match result {
                Ok(id) => return Ok(id),
                Err(PullError::Registry { source, .. }) if source.try_next_endpoint() => reg(&host, source),
                Err(e) => return Err(e),
            };
            tracing::warn!(image = %name, endpoint = %host, error = %e, more = i + 1 < endpoints.len(), "pull failed at endpoint");
            let network = matches!(
                &e,
                PullError::Registry {
                    source: RegistryError::Network(_) | RegistryError::Timeout(_),
                    ..
                }
            );
            if !network && first_definite.is_none() {
                first_definite = Some(e);
            } else {
                last = Some(e);
            }
        }
        // A registry's own answer ("manifest unknown") says more than a later unreachable host.
        Err(first_definite
            .or(last)
            .unwrap_or(PullError::NoEndpoint { reference: name }))
    }

    /// `creds` when the request carried any (they win), else the node credentials file's entry
    /// for `r`'s registry, read now: credential helpers rewrite the file at any time.
    async fn node_credentials(&self, r: &ImageRef, creds: &Credentials) -> Result<Credentials, PullError> {
        let Some(path) = self.auth_file.clone().filter(|_| creds.is_empty()) else {
            return Ok(creds.clone());
        };
        let registry = r.registry.clone();
        let found = tokio::task::spawn_blocking(move || match auth_file::read(&path)? {
            Some(file) => file.lookup(&registry).map_err(|why| AuthFileError { path, why }),
            None => Ok(None),
        })
        .await
        .map_err(|e| PullError::Task {
            reference: r.to_string(),
            why: e.to_string(),
        })??;
        if found.is_some() {
            tracing::debug!(image = %r, "using the node credentials file's entry");
        }
        Ok(found.unwrap_or_else(|| creds.clone()))
    }

    async fn pull_from(self: &Arc<Self>, r: &ImageRef, remote: Remote) -> Result<String, PullError> {
        let result = self.pull_inner(r, &remote).await;
        if result.is_err() {
            // Free what this attempt fetched that nothing references (its protection is gone).
            let me = self.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || me.gc()).await {
                tracing::warn!(error = %e, "cleanup after a failed pull");
            }
        }
        result
    }

    async fn pull_inner(self: &Arc<Self>, r: &ImageRef, remote: &Remote) -> Result<String, PullError> {
        let name = r.to_string();
        let oref = r.at_host(&remote.endpoint.host);
        let reg = |source| PullError::Registry {
            reference: name.clone(),
            endpoint: remote.endpoint.host.clone(),
            source,
        };
        let store_err = |source| PullError::Store {
            reference: name.clone(),
            source,
        };
        let resolved = remote.resolve(&oref, &self.platform).await.map_err(reg)?;
        let m = &resolved.manifest;
        let mut keys = vec![resolved.manifest_digest.clone(), m.config.digest.clone()];
        keys.extend(m.layers.iter().map(|l| l.digest.clone()));
        keys.extend(resolved.index.iter().map(|(d, _)| d.clone()));
        let _protect = self.protect(keys);

        let content = &self.content;
        let mut small = vec![(resolved.manifest_digest.clone(), resolved.manifest_bytes.clone())];
        small.extend(resolved.index.clone());
        let store = content.clone();
        // put() fsyncs: keep it off the async workers.
        tokio::task::spawn_blocking(move || small.iter().try_for_each(|(d, b)| store.put(d, b)))
            .await
            .map_err(|e| PullError::Task {
                reference: name.clone(),
                why: e.to_string(),
            })?
            .map_err(|e| store_err(e.into()))?;

        let config_id = m.config.digest.clone();
        self.fetch(remote, &oref, &m.config).await.map_err(reg)?;
        let config_raw = content.read(&config_id).map_err(|e| store_err(e.into()))?;
        let invalid = |why: String| PullError::InvalidConfig {
            reference: name.clone(),
            digest: config_id.clone(),
            why,
        };
        let config: ConfigView = serde_json::from_slice(&config_raw).map_err(|e| invalid(e.to_string()))?;
        // Up to 16 MiB: not held while the layers download.
        drop(config_raw);
        if config.rootfs.kind != "layers" {
            return Err(invalid(format!(
                "rootfs type {:?} is not \"layers\"",
                config.rootfs.kind
            )));
        }
        if config.rootfs.diff_ids.len() != m.layers.len() {
            return Err(invalid(format!(
                "{} diff IDs for {} layers",
                config.rootfs.diff_ids.len(),
                m.layers.len()
            )));
        }
        for d in &config.rootfs.diff_ids {
            crate::content::digest_hex(d).map_err(|e| invalid(e.to_string()))?;
        }
        let chains = chain_ids(&config.rootfs.diff_ids);
        let _protect_layers = self.protect(chains.clone());

        // Owned jobs: futures borrowing per-item references trip higher-ranked lifetime checks
        // once the pull is spawned.
        let jobs: Vec<(OciDescriptor, String, String)> = m
            .layers
            .iter()
            .cloned()
            .zip(config.rootfs.diff_ids.iter().cloned())
            .zip(chains.iter().cloned())
            .map(|((d, diff), chain)| (d, diff, chain))
            .collect();
        let layers: Vec<LayerRecord> = futures_util::stream::iter(jobs)
            .map(|(desc, diff_id, chain_id)| self.layer(remote, &oref, &name, desc, diff_id, chain_id))
            .buffered(PARALLEL_LAYERS)
            .try_collect()
            .await?;

        let mut blobs = vec![resolved.manifest_digest.clone(), config_id.clone()];
        blobs.extend(layers.iter().map(|l| l.digest.clone()));
        let resolved_digest = match &resolved.index {
            Some((d, _)) => {
                blobs.push(d.clone());
                d.clone()
            }
            None => resolved.manifest_digest.clone(),
        };
        // CRI: a pull by digest records exactly the digest asked for; otherwise the digest the
        // tag resolved to (the index for multi-platform images).
        let repo_digest = r.repo_digest(r.digest.as_deref().unwrap_or(&resolved_digest));
        let size = resolved.manifest_bytes.len() as u64
            + m.config.size.max(0) as u64
            + layers.iter().map(|l| l.size).sum::<u64>();
        let record = ImageRecord {
            id: config_id.clone(),
            repo_tags: r.repo_tag().into_iter().collect(),
            repo_digests: vec![repo_digest],
            size,
            manifest_digest: resolved.manifest_digest.clone(),
            layers,
            blobs,
            user: config.config.and_then(|c| c.user).unwrap_or_default(),
        };
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.record(record))
            .await
            .map_err(|e| PullError::Task {
                reference: name.clone(),
                why: e.to_string(),
            })?
            .map_err(store_err)?;
        tracing::info!(image = %name, id = %config_id, endpoint = %remote.endpoint.host, "pulled image");
        Ok(config_id)
    }

    /// Bytes of blobs downloaded from registries since the store was opened (the daemon's
    /// metrics read it).
    pub fn fetched_bytes(&self) -> u64 {
        self.fetched.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_fetched(&self, n: u64) {
        self.fetched.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Fetches one blob unless the content store has it; one fetch per digest at a time.
    async fn fetch(
        &self,
        remote: &Remote,
        oref: &oci_client::Reference,
        desc: &OciDescriptor,
    ) -> Result<(), RegistryError> {
        let _g = self.locks.lock(&format!("blob {}", desc.digest)).await;
        if !self.content.contains(&desc.digest) {
            tracing::debug!(digest = %desc.digest, size = desc.size, endpoint = %remote.endpoint.host, "fetching blob");
            let started = std::time::Instant::now();
            let n = remote.fetch_blob(oref, desc, &self.content, None).await?;
            self.count_fetched(n);
            tracing::debug!(digest = %desc.digest, elapsed = ?started.elapsed(), "fetched blob");
        }
        Ok(())
    }

    async fn layer(
        self: &Arc<Self>,
        remote: &Remote,
        oref: &oci_client::Reference,
        name: &str,
        desc: OciDescriptor,
        diff_id: String,
        chain_id: String,
    ) -> Result<LayerRecord, PullError> {
        let record = LayerRecord {
            digest: desc.digest.clone(),
            diff_id: diff_id.clone(),
            chain_id: chain_id.clone(),
            size: desc.size.max(0) as u64,
        };
        if self.layers.contains(&chain_id) {
            return Ok(record);
        }
        let registry_err = |source| PullError::Registry {
            reference: name.to_string(),
            endpoint: remote.endpoint.host.clone(),
            source,
        };
        let layer_err = |source| PullError::Layer {
            reference: name.to_string(),
            digest: desc.digest.clone(),
            source,
        };
        let task_err = |e: tokio::task::JoinError| PullError::Task {
            reference: name.to_string(),
            why: e.to_string(),
        };
        // Lock order, everywhere: blob digest, then chain ID. The keys are namespaced: an
        // uncompressed first layer's blob digest equals its chain ID.
        let _blob_lock = self.locks.lock(&format!("blob {}", desc.digest)).await;
        let _layer_lock = self.locks.lock(&format!("layer {chain_id}")).await;
        if self.layers.contains(&chain_id) {
            return Ok(record);
        }
        let layers = self.layers.clone();
        let started = std::time::Instant::now();
        if self.content.contains(&desc.digest) {
            let blob = self
                .content
                .path(&desc.digest)
                .map_err(|e| layer_err(LayerError::Id(e)))?;
            tokio::task::spawn_blocking(move || layers.unpack(&blob, &diff_id, &chain_id))
                .await
                .map_err(task_err)?
                .map_err(layer_err)?;
        } else {
            // Unpack while downloading: the blob goes to the content store and, chunk by chunk,
            // to the unpacker; the channel bounds what is held in memory.
            tracing::debug!(digest = %desc.digest, size = desc.size, endpoint = %remote.endpoint.host, "fetching blob");
            let (tx, rx) = tokio::sync::mpsc::channel(PIPE_CHUNKS);
            let unpack = tokio::task::spawn_blocking(move || {
                layers.unpack_from(crate::unpack::ChunkReader::new(rx), &diff_id, &chain_id)
            });
            let fetch = remote.fetch_blob(oref, &desc, &self.content, Some(tx));
            tokio::pin!(fetch);
            let mut unpack = unpack;
            // The unpacker reads to the end of the stream, which ends before the fetch has
            // committed the blob: an unpacker that finishes first either saw the whole stream
            // (the fetch is still syncing and renaming the blob, and must finish) or refused the
            // layer (an oversized tar header, say), which stops the download at once — dropping
            // the fetch removes its temp file.
            let (fetched, unpacked) = tokio::select! {
                biased;
                fetched = &mut fetch => (Some(fetched), unpack.await),
                unpacked = &mut unpack => match unpacked {
                    Ok(Ok(done)) => (Some(fetch.as_mut().await), Ok(Ok(done))),
                    failed => (None, failed),
                },
            };
            // A failed download explains a failed unpack: report it first.
            if let Some(fetched) = fetched {
                self.count_fetched(fetched.map_err(registry_err)?);
            }
            unpacked.map_err(task_err)?.map_err(layer_err)?;
            tracing::debug!(digest = %desc.digest, "fetched blob");
        }
        tracing::debug!(chain_id = %record.chain_id, elapsed = ?started.elapsed(), "unpacked layer");
        Ok(record)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod bounds_tests;

#[cfg(test)]
mod credential_tests;
