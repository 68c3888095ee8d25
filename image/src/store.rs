//! The image store: image records and the name index in the daemon's redb database, blobs in the
//! content store, unpacked layers, container leases on layers, and garbage collection.
//!
//! Invariants:
//! - A record and the names pointing at it change in one redb transaction; a name points at one
//!   image. Removing an image by id removes it whole; removing it by a name removes that name, and
//!   the image goes when its last repo tag goes (docker's untag).
//! - A container lease (`image_leases`, keyed by container id) pins the layer directories it was
//!   given until it is released, even after the image itself is removed.
//! - Garbage collection deletes blobs and layer dirs that no record, lease or in-flight pull
//!   refers to. It holds `protect` while it decides, unlinks blobs and renames layer dirs away
//!   (deleting those trees comes after), and a pull registers what it is about to use in
//!   `protect` before it looks for existing content, so GC never deletes what a pull relies on.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::content::{ContentError, ContentStore};
use crate::platform::Platform;
use crate::record::ImageRecord;
use crate::reference::{ImageRef, RegistryHosts, is_hex64};
use crate::unpack::Layers;
use cri_api::keyed::KeyedLocks;

/// Image id (config digest) → JSON [`ImageRecord`].
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("image_records");
/// Repo tag or repo digest → image id.
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("image_names");
/// Container id → JSON [`Lease`].
const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("image_leases");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("image database: {op}: {source}")]
    Db {
        op: &'static str,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("image record {id} is unreadable: {source}")]
    Corrupt {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("image store I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A registry table's TLS settings are unusable (a configuration error).
    #[error(transparent)]
    RegistryTls(#[from] crate::registry::tls::TlsConfigError),
}

fn db<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Db {
        op,
        source: Box::new(e.into()),
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Lease {
    image_id: String,
    chain_ids: Vec<String>,
}

/// What the image store needs from the daemon.
pub struct StoreConfig {
    /// The daemon's `root`; blobs go to `root/content`, layers to `root/layers`.
    pub root: PathBuf,
    pub registries: RegistryHosts,
    /// Images reported as pinned (`Image.pinned`, which kubelet's image GC never removes), by any
    /// name ImageStatus accepts: a tag follows its re-pulls, a digest or id stays on one image.
    pub pinned: Vec<String>,
    /// The platform an image index is resolved to; None: the host's ([`Platform::host`]).
    pub platform: Option<Platform>,
    /// The node credentials file ([`crate::registry::auth_file`]), read by pulls whose request
    /// has no credentials.
    pub auth_file: Option<PathBuf>,
}

pub struct ImageStore {
    pub(crate) db: Arc<redb::Database>,
    pub(crate) content: ContentStore,
    pub(crate) layers: Layers,
    pub(crate) hosts: RegistryHosts,
    /// One HTTP client per registry host with TLS settings, one for the rest; built at open.
    pub(crate) clients: crate::registry::tls::Clients,
    pub(crate) auth_file: Option<PathBuf>,
    pinned: Vec<String>,
    /// What pulls resolve an index to; fixed for the store's life.
    pub(crate) platform: Platform,
    /// Serialises fetching one blob and unpacking one layer across concurrent pulls.
    pub(crate) locks: KeyedLocks,
    /// Digests and chain IDs in use by in-flight pulls → how many pulls use them.
    protect: Mutex<HashMap<String, usize>>,
    /// Bytes of blobs downloaded from registries into the content store since the store was
    /// opened (a blob already present is not downloaded, so not counted).
    pub(crate) fetched: std::sync::atomic::AtomicU64,
}

/// Keeps digests protected from GC while a pull uses them.
pub(crate) struct Protection<'a> {
    store: &'a ImageStore,
    keys: Vec<String>,
}

impl Drop for Protection<'_> {
    fn drop(&mut self) {
        let mut p = self.store.protect.lock().unwrap_or_else(|e| e.into_inner());
        for k in &self.keys {
            if let Some(n) = p.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    p.remove(k);
                }
            }
        }
    }
}

impl ImageStore {
    /// Opens the store, creates its tables, removes crash leftovers and unreferenced content.
    pub fn open(database: Arc<redb::Database>, config: StoreConfig) -> Result<Arc<ImageStore>, StoreError> {
        let clients = crate::registry::tls::Clients::build(&config.registries.hosts)?;
        let content = ContentStore::open(&config.root)?;
        let layers = Layers::open(&config.root).map_err(|source| StoreError::Io {
            path: config.root.join("layers"),
            source,
        })?;
        let txn = database.begin_write().map_err(db("begin"))?;
        txn.open_table(IMAGES).map_err(db("open images"))?;
        txn.open_table(NAMES).map_err(db("open names"))?;
        txn.open_table(LEASES).map_err(db("open leases"))?;
        txn.commit().map_err(db("commit"))?;
        let store = Arc::new(ImageStore {
            db: database,
            content,
            layers,
            hosts: config.registries,
            clients,
            auth_file: config.auth_file,
            pinned: config.pinned,
            platform: config.platform.unwrap_or_else(Platform::host),
            locks: KeyedLocks::default(),
            protect: Mutex::new(HashMap::new()),
            fetched: std::sync::atomic::AtomicU64::new(0),
        });
        store.gc()?;
        Ok(store)
    }

    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    pub(crate) fn protect(&self, keys: Vec<String>) -> Protection<'_> {
        let mut p = self.protect.lock().unwrap_or_else(|e| e.into_inner());
        for k in &keys {
            *p.entry(k.clone()).or_default() += 1;
        }
        Protection { store: self, keys }
    }

    fn load(
        table: &impl ReadableTable<&'static str, &'static [u8]>,
        id: &str,
    ) -> Result<Option<ImageRecord>, StoreError> {
        match table.get(id).map_err(db("get image"))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|source| StoreError::Corrupt {
                    id: id.into(),
                    source,
                }),
        }
    }

    /// Resolves `query` to an image id and whether it named the image by id (vs. by a name).
    /// Accepts: id, bare hex id, repo tag, repo digest, short names (`busybox`, `busybox:1`),
    /// and a unique id prefix.
    fn resolve(&self, query: &str) -> Result<Option<(String, Option<String>)>, StoreError> {
        let txn = self.db.begin_read().map_err(db("begin read"))?;
        let images = txn.open_table(IMAGES).map_err(db("open images"))?;
        let names = txn.open_table(NAMES).map_err(db("open names"))?;
        Self::resolve_in(&images, &names, query)
    }

    /// [`ImageStore::resolve`] inside a transaction the caller holds (read or write).
    fn resolve_in(
        images: &impl ReadableTable<&'static str, &'static [u8]>,
        names: &impl ReadableTable<&'static str, &'static str>,
        query: &str,
    ) -> Result<Option<(String, Option<String>)>, StoreError> {
        let query = query.trim();
        if query.is_empty() {
            return Ok(None);
        }
        let id = if is_hex64(query) {
            format!("sha256:{query}")
        } else {
            query.to_string()
        };
        if images.get(id.as_str()).map_err(db("get image"))?.is_some() {
            return Ok(Some((id, None)));
        }
        let mut candidates = vec![query.to_string()];
        if let Ok(r) = ImageRef::parse(query) {
            candidates.push(match &r.digest {
                Some(d) => r.repo_digest(d),
                None => r.to_string(),
            });
        }
        for name in candidates {
            if let Some(id) = names.get(name.as_str()).map_err(db("get name"))? {
                return Ok(Some((id.value().to_string(), Some(name))));
            }
        }
        let hex = query.strip_prefix("sha256:").unwrap_or(query);
        if !hex.is_empty() && hex.len() < 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let prefix = format!("sha256:{hex}");
            let mut found = None;
            for item in images.range(prefix.as_str()..).map_err(db("scan images"))? {
                let (k, _) = item.map_err(db("scan images"))?;
                if !k.value().starts_with(&prefix) {
                    break;
                }
                if found.is_some() {
                    return Ok(None); // ambiguous prefix
                }
                found = Some(k.value().to_string());
            }
            return Ok(found.map(|id| (id, None)));
        }
        Ok(None)
    }

    /// CRI: `ImageStatus` lookup. Unknown → `None`.
    /// The ids of the images the configuration pins, as their names resolve now.
    pub fn pinned_ids(&self) -> Result<HashSet<String>, StoreError> {
        let mut ids = HashSet::new();
        for name in &self.pinned {
            if let Some((id, _)) = self.resolve(name)? {
                ids.insert(id);
            }
        }
        Ok(ids)
    }

    pub fn get(&self, query: &str) -> Result<Option<ImageRecord>, StoreError> {
        let Some((id, _)) = self.resolve(query)? else {
            return Ok(None);
        };
        let txn = self.db.begin_read().map_err(db("begin read"))?;
        let images = txn.open_table(IMAGES).map_err(db("open images"))?;
        Self::load(&images, &id)
    }

    /// Every image, ordered by id.
    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(db("begin read"))?;
        let images = txn.open_table(IMAGES).map_err(db("open images"))?;
        let mut out = Vec::new();
        for item in images.iter().map_err(db("scan images"))? {
            let (k, v) = item.map_err(db("scan images"))?;
            let r = serde_json::from_slice(v.value()).map_err(|source| StoreError::Corrupt {
                id: k.value().to_string(),
                source,
            })?;
            out.push(r);
        }
        Ok(out)
    }

    /// The image config JSON (for the container spec and verbose status).
    pub fn config_json(&self, image_id: &str) -> Result<Vec<u8>, StoreError> {
        Ok(self.content.read(image_id)?)
    }

    /// The parsed image config.
    pub fn config(&self, image_id: &str) -> Result<oci_spec::image::ImageConfiguration, StoreError> {
        let raw = self.config_json(image_id)?;
        serde_json::from_slice(&raw).map_err(|source| StoreError::Corrupt {
            id: image_id.into(),
            source,
        })
    }

    /// Unpacked layer directories of an image, top layer first (overlay `lowerdir` order).
    pub fn layer_dirs(&self, image_id: &str) -> Result<Vec<PathBuf>, StoreError> {
        let r = self
            .get(image_id)?
            .ok_or_else(|| StoreError::NotFound(image_id.into()))?;
        self.dirs_of(&r.layers.iter().map(|l| l.chain_id.clone()).collect::<Vec<_>>())
    }

    fn dirs_of(&self, chain_ids: &[String]) -> Result<Vec<PathBuf>, StoreError> {
        chain_ids.iter().rev().map(|c| Ok(self.layers.path(c)?)).collect()
    }

    /// Adds `repo_tags`/`repo_digests` of `new` to the image `new.id` (creating it), moving names
    /// that pointed at other images. Images left without a name are removed (then GC runs).
    pub(crate) fn record(&self, new: ImageRecord) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db("begin"))?;
        let mut dropped = false;
        {
            let mut images = txn.open_table(IMAGES).map_err(db("open images"))?;
            let mut names = txn.open_table(NAMES).map_err(db("open names"))?;
            let mut rec = Self::load(&images, &new.id)?.unwrap_or_else(|| ImageRecord {
                repo_tags: Vec::new(),
                repo_digests: Vec::new(),
                ..new.clone()
            });
            for name in new.names() {
                let old = names
                    .insert(name.as_str(), new.id.as_str())
                    .map_err(db("insert name"))?;
                let old = old.map(|v| v.value().to_string());
                if let Some(old_id) = old.filter(|o| *o != new.id)
                    && let Some(mut o) = Self::load(&images, &old_id)?
                {
                    o.repo_tags.retain(|n| n != name);
                    o.repo_digests.retain(|n| n != name);
                    dropped |= Self::put_or_drop(&mut images, &mut names, o)?;
                }
            }
            for t in &new.repo_tags {
                if !rec.repo_tags.contains(t) {
                    rec.repo_tags.push(t.clone());
                }
            }
            for d in &new.repo_digests {
                if !rec.repo_digests.contains(d) {
                    rec.repo_digests.push(d.clone());
                }
            }
            for b in &new.blobs {
                if !rec.blobs.contains(b) {
                    rec.blobs.push(b.clone());
                }
            }
            let json = serde_json::to_vec(&rec).expect("image records serialize");
            images
                .insert(rec.id.as_str(), json.as_slice())
                .map_err(db("insert image"))?;
        }
        txn.commit().map_err(db("commit"))?;
        if dropped { self.gc() } else { Ok(()) }
    }

    /// Writes `r` back, or removes it with its names when it has no repo tag and no digest left.
    fn put_or_drop(
        images: &mut redb::Table<&'static str, &'static [u8]>,
        names: &mut redb::Table<&'static str, &'static str>,
        r: ImageRecord,
    ) -> Result<bool, StoreError> {
        if r.repo_tags.is_empty() && r.repo_digests.is_empty() {
            images.remove(r.id.as_str()).map_err(db("remove image"))?;
            return Ok(true);
        } else if r.repo_tags.is_empty() {
            // docker: the last tag going takes the image (and its digests) with it.
            for n in &r.repo_digests {
                names.remove(n.as_str()).map_err(db("remove name"))?;
            }
            images.remove(r.id.as_str()).map_err(db("remove image"))?;
            return Ok(true);
        }
        let json = serde_json::to_vec(&r).expect("image records serialize");
        images
            .insert(r.id.as_str(), json.as_slice())
            .map_err(db("insert image"))?;
        Ok(false)
    }

    /// CRI: `RemoveImage`. By id (or id prefix) the image goes whole; by a name that name goes,
    /// and the image with it when no repo tag is left. Unknown images succeed (idempotent).
    /// Unreferenced blobs and layers are freed; layers leased by containers stay.
    pub fn remove(&self, query: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db("begin"))?;
        {
            let mut images = txn.open_table(IMAGES).map_err(db("open images"))?;
            let mut names = txn.open_table(NAMES).map_err(db("open names"))?;
            let Some((id, by_name)) = Self::resolve_in(&images, &names, query)? else {
                return Ok(());
            };
            if let Some(mut r) = Self::load(&images, &id)? {
                match by_name {
                    Some(name) => {
                        names.remove(name.as_str()).map_err(db("remove name"))?;
                        r.repo_tags.retain(|n| *n != name);
                        r.repo_digests.retain(|n| *n != name);
                        Self::put_or_drop(&mut images, &mut names, r)?;
                    }
                    None => {
                        for n in r.names() {
                            names.remove(n.as_str()).map_err(db("remove name"))?;
                        }
                        images.remove(id.as_str()).map_err(db("remove image"))?;
                    }
                }
            }
        }
        txn.commit().map_err(db("commit"))?;
        self.gc()
    }

    /// Pins the layers of `image` (any form [`ImageStore::get`] accepts) for `container_id` and
    /// returns their directories, top first. Taking the same lease twice is harmless.
    pub fn lease(&self, image: &str, container_id: &str) -> Result<Vec<PathBuf>, StoreError> {
        self.lease_with(image, container_id, redb::Durability::Immediate)
    }

    /// [`ImageStore::lease`] committed without its own fsync: it is visible (to GC, to every
    /// reader) at once, and reaches the disk with the next durable commit to the database — the
    /// caller's, typically the record of the container it leases for. A crash before that loses
    /// only the lease; start-up recovery takes the lease again for every recorded container
    /// that has none, and nothing else depends on it.
    pub fn lease_unsynced(&self, image: &str, container_id: &str) -> Result<Vec<PathBuf>, StoreError> {
        self.lease_with(image, container_id, redb::Durability::None)
    }

    fn lease_with(
        &self,
        image: &str,
        container_id: &str,
        durability: redb::Durability,
    ) -> Result<Vec<PathBuf>, StoreError> {
        // Resolved and leased in one write transaction: a concurrent RemoveImage either commits
        // first (NotFound here) or sees the lease when its GC runs.
        let mut txn = self.db.begin_write().map_err(db("begin"))?;
        txn.set_durability(durability).map_err(db("set durability"))?;
        let chain_ids = {
            let images = txn.open_table(IMAGES).map_err(db("open images"))?;
            let names = txn.open_table(NAMES).map_err(db("open names"))?;
            let mut leases = txn.open_table(LEASES).map_err(db("open leases"))?;
            let record = match Self::resolve_in(&images, &names, image)? {
                Some((id, _)) => Self::load(&images, &id)?,
                None => None,
            };
            let r = record.ok_or_else(|| StoreError::NotFound(image.into()))?;
            let lease = Lease {
                image_id: r.id.clone(),
                chain_ids: r.layers.iter().map(|l| l.chain_id.clone()).collect(),
            };
            let json = serde_json::to_vec(&lease).expect("leases serialize");
            leases
                .insert(container_id, json.as_slice())
                .map_err(db("insert lease"))?;
            lease.chain_ids
        };
        txn.commit().map_err(db("commit"))?;
        self.dirs_of(&chain_ids)
    }

    /// Containers holding a lease, for start-up recovery to release those of containers that
    /// no longer exist.
    pub fn leased_containers(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read().map_err(db("begin read"))?;
        let leases = txn.open_table(LEASES).map_err(db("open leases"))?;
        let mut out = Vec::new();
        for item in leases.iter().map_err(db("scan leases"))? {
            out.push(item.map_err(db("scan leases"))?.0.value().to_string());
        }
        Ok(out)
    }

    /// Drops `container_id`'s lease (idempotent) and frees layers nothing else uses.
    ///
    /// Committed without its own fsync: the release reaches the disk with the next durable
    /// commit (a removed container's record, typically). A crash before that brings the lease
    /// back, and start-up recovery releases every lease whose container has no record.
    /// GC runs only when the lease outlived its image: while the image is recorded, its record
    /// pins every layer the lease pinned, so the release frees nothing.
    pub fn release(&self, container_id: &str) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(db("begin"))?;
        txn.set_durability(redb::Durability::None)
            .map_err(db("set durability"))?;
        let orphaned = {
            let mut leases = txn.open_table(LEASES).map_err(db("open leases"))?;
            let images = txn.open_table(IMAGES).map_err(db("open images"))?;
            let removed = leases.remove(container_id).map_err(db("remove lease"))?;
            match removed {
                None => false,
                Some(v) => match serde_json::from_slice::<Lease>(v.value()) {
                    Ok(l) => images
                        .get(l.image_id.as_str())
                        .map_err(db("get image"))?
                        .is_none(),
                    // Unreadable: let GC decide from what the records and leases say.
                    Err(_) => true,
                },
            }
        };
        txn.commit().map_err(db("commit"))?;
        if orphaned { self.gc() } else { Ok(()) }
    }

    /// Deletes blobs and layer dirs no record, lease or in-flight pull refers to. Blocking.
    pub fn gc(&self) -> Result<(), StoreError> {
        let protect = self.protect.lock().unwrap_or_else(|e| e.into_inner());
        let mut blobs = BTreeSet::new();
        let mut chains = BTreeSet::new();
        {
            // One snapshot for leases and records: a lease taken and an image removed between
            // two reads must not make its layers look unreferenced.
            let txn = self.db.begin_read().map_err(db("begin read"))?;
            let leases = txn.open_table(LEASES).map_err(db("open leases"))?;
            for item in leases.iter().map_err(db("scan leases"))? {
                let (_, v) = item.map_err(db("scan leases"))?;
                if let Ok(l) = serde_json::from_slice::<Lease>(v.value()) {
                    chains.extend(l.chain_ids);
                }
            }
            let images = txn.open_table(IMAGES).map_err(db("open images"))?;
            for item in images.iter().map_err(db("scan images"))? {
                let (k, v) = item.map_err(db("scan images"))?;
                let r: ImageRecord =
                    serde_json::from_slice(v.value()).map_err(|source| StoreError::Corrupt {
                        id: k.value().to_string(),
                        source,
                    })?;
                blobs.extend(r.blobs.iter().cloned());
                blobs.insert(r.id.clone());
                chains.extend(r.layers.iter().map(|l| l.chain_id.clone()));
            }
        }
        for d in self.content.list() {
            if !blobs.contains(&d) && !protect.contains_key(&d) {
                tracing::debug!(digest = %d, "freeing unreferenced blob");
                self.content.remove(&d)?;
            }
        }
        let mut trash = Vec::new();
        for c in self.layers.list() {
            if !chains.contains(&c) && !protect.contains_key(&c) {
                tracing::debug!(chain_id = %c, "freeing unreferenced layer");
                let detached = self.layers.detach(&c).map_err(|source| StoreError::Io {
                    path: self.layers.path(&c).unwrap_or_default(),
                    source,
                })?;
                trash.extend(detached);
            }
        }
        // Deleting trees is slow: do it after pulls may register protection again.
        drop(protect);
        for t in trash {
            std::fs::remove_dir_all(&t).map_err(|source| StoreError::Io { path: t, source })?;
        }
        Ok(())
    }

    /// Directory the layers live in (for tests and disk accounting).
    pub fn layer_path(&self, chain_id: &str) -> Result<PathBuf, StoreError> {
        Ok(self.layers.path(chain_id)?)
    }
}

#[cfg(test)]
mod tests;
