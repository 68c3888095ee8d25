//! Loading the network configuration from `cni.conf_dir`, the way libcni does it: files ending in
//! `.conflist`, `.conf` or `.json`, taken in lexical order; the first one that loads is the network.
//! A single-plugin `.conf` is lifted into a one-plugin list.
//!
//! Invariant: a [`NetworkConfig`] always has a name, a cniVersion and at least one plugin with a type.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// One plugin object of a conflist, kept as raw JSON so every plugin-specific key reaches the plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    pub plugin_type: String,
    pub raw: Map<String, Value>,
}

/// A loaded network configuration list.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<PluginConfig>,
    /// The file this came from.
    pub source: PathBuf,
    /// The network as a conflist document (a `.conf` is lifted into one): what the CNI result
    /// cache stores and what [`parse`] reads back to tear the network down later.
    pub bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read CNI config directory {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no CNI network config found in {dir} (looked for *.conflist, *.conf, *.json){rejected}")]
    NoConfig { dir: PathBuf, rejected: String },
    #[error("CNI config {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

const EXTENSIONS: [&str; 3] = ["conflist", "conf", "json"];

/// Finds and loads the first loadable network configuration in `dir`.
pub fn load_network(dir: &Path) -> Result<NetworkConfig, ConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ConfigError::ReadDir {
        dir: dir.into(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e))
        })
        .collect();
    files.sort();
    let mut rejected = Vec::new();
    for file in files {
        match load_file(&file) {
            Ok(net) => return Ok(net),
            Err(e) => {
                tracing::warn!(error = %e, "skipping CNI config");
                rejected.push(e.to_string());
            }
        }
    }
    let rejected = if rejected.is_empty() {
        String::new()
    } else {
        format!("; rejected: {}", rejected.join("; "))
    };
    Err(ConfigError::NoConfig {
        dir: dir.into(),
        rejected,
    })
}

/// Loads one file: a conflist (has `plugins`) or a single plugin config (has `type`).
pub fn load_file(path: &Path) -> Result<NetworkConfig, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        path: path.into(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| invalid(format!("cannot read: {e}")))?;
    parse(&bytes, path)
}

/// Parses a conflist or single-plugin config; `path` only labels errors and [`NetworkConfig::source`].
pub fn parse(bytes: &[u8], path: &Path) -> Result<NetworkConfig, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        path: path.into(),
        reason,
    };
    let value: Value = serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(invalid("top level is not a JSON object".into()));
    };
    let name = take_str(&obj, "name").ok_or_else(|| invalid("missing string `name`".into()))?;
    // The name becomes part of a cache file name.
    if name.is_empty() || name.contains(['/', '\0']) || name == "." || name == ".." {
        return Err(invalid(format!("network name {name:?} is not a plain name")));
    }
    let cni_version = take_str(&obj, "cniVersion").unwrap_or_else(|| "0.1.0".to_string());
    let (raw_plugins, list_bytes): (Vec<Value>, Vec<u8>) = match obj.remove("plugins") {
        Some(Value::Array(list)) => (list, bytes.to_vec()),
        Some(_) => return Err(invalid("`plugins` is not an array".into())),
        None if obj.contains_key("type") => {
            let list = serde_json::json!({
                "cniVersion": cni_version,
                "name": name,
                "plugins": [Value::Object(obj.clone())],
            });
            (vec![Value::Object(obj.clone())], list.to_string().into_bytes())
        }
        None => return Err(invalid("neither `plugins` nor `type` present".into())),
    };
    if raw_plugins.is_empty() {
        return Err(invalid("`plugins` is empty".into()));
    }
    let mut plugins = Vec::with_capacity(raw_plugins.len());
    for (i, p) in raw_plugins.into_iter().enumerate() {
        let Value::Object(raw) = p else {
            return Err(invalid(format!("plugin {i} is not an object")));
        };
        let plugin_type =
            take_str(&raw, "type").ok_or_else(|| invalid(format!("plugin {i} has no `type`")))?;
        if plugin_type.contains('/') || plugin_type.starts_with('.') {
            return Err(invalid(format!(
                "plugin {i} type {plugin_type:?} is not a plain file name"
            )));
        }
        plugins.push(PluginConfig { plugin_type, raw });
    }
    Ok(NetworkConfig {
        name,
        cni_version,
        plugins,
        source: path.into(),
        bytes: list_bytes,
    })
}

fn take_str(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_loadable_file_in_lexical_order_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("05-broken.conflist"), "{not json").unwrap();
        std::fs::write(dir.path().join("README.md"), "ignored").unwrap();
        std::fs::write(
            dir.path().join("20-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("10-a.conf"),
            r#"{"cniVersion":"0.4.0","name":"a","type":"bridge","bridge":"x"}"#,
        )
        .unwrap();
        let net = load_network(dir.path()).unwrap();
        assert_eq!(net.name, "a");
        assert_eq!(net.plugins.len(), 1);
        assert_eq!(net.plugins[0].plugin_type, "bridge");
        assert_eq!(net.plugins[0].raw["bridge"], "x");
        let lifted = parse(&net.bytes, Path::new("cache")).unwrap();
        assert_eq!(lifted.plugins, net.plugins);
        assert_eq!(lifted.cni_version, "0.4.0");
    }

    #[test]
    fn empty_dir_explains_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("1.conflist"), r#"{"name":"x","plugins":[]}"#).unwrap();
        let e = load_network(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no CNI network config"), "{e}");
        assert!(e.contains("`plugins` is empty"), "{e}");
    }

    #[test]
    fn shipped_bridge_network_loads() {
        let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/cni/10-crius-bridge.conflist");
        let net = load_file(&f).unwrap();
        let types: Vec<&str> = net.plugins.iter().map(|p| p.plugin_type.as_str()).collect();
        assert_eq!(types, ["bridge", "portmap", "loopback"]);
        assert_eq!(net.plugins[0].raw["bridge"], "crius0");
        assert_eq!(net.plugins[0].raw["ipam"]["type"], "host-local");
        assert_eq!(
            net.plugins[0].raw["ipam"]["ranges"][0][0]["subnet"],
            "10.85.0.0/16"
        );
        assert_eq!(net.plugins[1].raw["capabilities"]["portMappings"], true);
    }

    #[test]
    fn plugin_type_cannot_name_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("1.conflist");
        std::fs::write(&f, r#"{"name":"x","plugins":[{"type":"../../bin/sh"}]}"#).unwrap();
        assert!(load_file(&f).is_err());
    }
}
