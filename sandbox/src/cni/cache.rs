//! The libcni result cache: `<cache_dir>/results/<network>-<container>-<ifname>` in the
//! `cniCacheV1` layout, so other CNI tooling (and crius after a restart) can tear a pod down.
//!
//! Invariants: an entry is written after a successful ADD (temp file + rename, mode 0600) and
//! removed after a successful DEL; the file name is built only from validated ids and the network
//! name, which may not contain a path separator.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{Map, Value, json};

use super::{Attachment, CniError};

/// Path of the cache entry of one attachment.
pub fn entry_path(cache_dir: &Path, network: &str, att: &Attachment) -> PathBuf {
    cache_dir
        .join("results")
        .join(format!("{network}-{}-{}", att.container_id, att.ifname))
}

/// Writes the entry of a successful ADD.
pub fn write(
    cache_dir: &Path,
    network: &str,
    list_bytes: &[u8],
    att: &Attachment,
    result: &Value,
) -> Result<(), CniError> {
    let path = entry_path(cache_dir, network, att);
    let err = |source| CniError::Cache {
        path: path.clone(),
        source,
    };
    let dir = path.parent().expect("entry has a parent");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    let args: Vec<Value> = att.args.iter().map(|(k, v)| json!([k, v])).collect();
    let capability_args: Map<String, Value> = att.capability_args.clone();
    let doc = json!({
        "kind": "cniCacheV1",
        "containerId": att.container_id,
        "config": base64::engine::general_purpose::STANDARD.encode(list_bytes),
        "ifName": att.ifname,
        "networkName": network,
        "netns": att.netns.to_string_lossy(),
        "cniArgs": args,
        "capabilityArgs": capability_args,
        "result": result,
    });
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(doc.to_string().as_bytes()).map_err(err)?;
    f.sync_data().map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(err)
}

/// Reads the cached ADD result of an attachment, if an entry exists and parses.
pub fn read_result(cache_dir: &Path, network: &str, att: &Attachment) -> Option<Value> {
    let bytes = std::fs::read(entry_path(cache_dir, network, att)).ok()?;
    let mut doc: Value = serde_json::from_slice(&bytes).ok()?;
    match doc.get_mut("result").map(Value::take) {
        Some(Value::Null) | None => None,
        Some(r) => Some(r),
    }
}

/// A cache entry as DEL needs it: the network list it was added to, the attachment, the result.
#[derive(Debug, Clone)]
pub struct CachedAttachment {
    pub path: PathBuf,
    pub network: Vec<u8>,
    pub attachment: Attachment,
    pub result: Option<Value>,
}

/// Entries whose namespace path lies below `ns_root` — written by this crius, not by another
/// runtime sharing the cache dir. Unreadable entries are skipped.
pub fn entries_below(cache_dir: &Path, ns_root: &Path) -> Vec<CachedAttachment> {
    let Ok(dir) = std::fs::read_dir(cache_dir.join("results")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let path = e.path();
            let doc: Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
            let netns = PathBuf::from(doc.get("netns")?.as_str()?);
            if !netns.starts_with(ns_root) {
                return None;
            }
            let network = base64::engine::general_purpose::STANDARD
                .decode(doc.get("config")?.as_str()?)
                .ok()?;
            let args = doc
                .get("cniArgs")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|kv| {
                            Some((kv.get(0)?.as_str()?.to_string(), kv.get(1)?.as_str()?.to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let attachment = Attachment {
                container_id: doc.get("containerId")?.as_str()?.to_string(),
                netns,
                ifname: doc.get("ifName")?.as_str()?.to_string(),
                args,
                capability_args: doc
                    .get("capabilityArgs")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
            };
            let result = doc.get("result").filter(|r| !r.is_null()).cloned();
            Some(CachedAttachment {
                path,
                network,
                attachment,
                result,
            })
        })
        .collect()
}

/// Removes the entry; a missing entry is fine.
pub fn remove(cache_dir: &Path, network: &str, att: &Attachment) -> Result<(), CniError> {
    let path = entry_path(cache_dir, network, att);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CniError::Cache { path, source }),
    }
}
