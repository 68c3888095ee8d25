//! A client for the CNI exec interface (no maintained Rust client exists): configuration loading,
//! plugin invocation with `prevResult` chaining and capability `runtimeConfig`, result caching.
//!
//! Invariants: ADD runs the plugins in list order and stops at the first failure (the caller then
//! runs DEL, which undoes partial work); DEL runs them in reverse order with the cached ADD result
//! as `prevResult` (spec ≥ 0.4.0), passes no namespace path once the namespace is gone, tries every
//! plugin even after one fails, and removes the cache entry only when all of them succeeded.
//! The one plugin not executed is `portmap` when its config carries no port mapping: the
//! reference plugin then passes `prevResult` through on ADD and does nothing on DEL (see
//! [`passes_through`]), and each exec of it costs a Go runtime's start-up.

pub mod cache;
mod config;
mod exec;
mod result;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

pub use config::{ConfigError, NetworkConfig, PluginConfig, load_file, load_network, parse};
pub use exec::find_plugin;
pub use result::pod_ips;

/// The interface name of the pod's network attachment.
pub const POD_IFNAME: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("CNI plugin {plugin:?} not found in {dirs:?}")]
    PluginNotFound { plugin: String, dirs: Vec<PathBuf> },
    #[error("cannot run CNI plugin {plugin:?} ({path}): {source}")]
    Spawn {
        plugin: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin:?} {command} failed: {message}")]
    PluginFailed {
        plugin: String,
        command: String,
        message: String,
    },
    #[error("CNI plugin {plugin:?} {command} did not finish within {after:?}")]
    Timeout {
        plugin: String,
        command: String,
        after: Duration,
    },
    #[error("CNI plugin {plugin:?} {command} printed an unreadable result: {reason}")]
    BadOutput {
        plugin: String,
        command: String,
        reason: String,
    },
    #[error("CNI result cache {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("network {network:?} teardown failed: {errors}")]
    Teardown { network: String, errors: String },
}

/// One pod's attachment to the network: everything the plugins are called with besides the
/// config. Kept in the sandbox record so DEL gets the same arguments as ADD.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Attachment {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// CNI_ARGS pairs, in order.
    pub args: Vec<(String, String)>,
    /// Capability arguments offered to plugins (`portMappings`, `dns`, `cgroupPath`); each plugin
    /// gets in `runtimeConfig` only those it declares in `capabilities`.
    pub capability_args: Map<String, Value>,
}

impl Attachment {
    /// CNI_ARGS: `K=V;K=V`.
    pub fn cni_args(&self) -> String {
        self.args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// The plugin runner: where plugins and the result cache live.
#[derive(Debug, Clone)]
pub struct Cni {
    pub bin_dirs: Vec<PathBuf>,
    /// Holds `results/` (libcni's default is `/var/lib/cni`).
    pub cache_dir: PathBuf,
}

impl Cni {
    /// ADD through the whole list; writes the cache entry and returns the final result.
    pub fn add(&self, net: &NetworkConfig, att: &Attachment) -> Result<Value, CniError> {
        let netns = att.netns.to_string_lossy();
        let args = att.cni_args();
        let inv = exec::Invocation {
            command: "ADD",
            container_id: &att.container_id,
            netns: &netns,
            ifname: &att.ifname,
            args: &args,
            bin_dirs: &self.bin_dirs,
        };
        let mut prev: Option<Value> = None;
        for plugin in &net.plugins {
            let conf = plugin_config(net, plugin, prev.as_ref(), &att.capability_args);
            if prev.is_some() && passes_through(plugin, &conf) {
                continue;
            }
            let out = exec::run_plugin(&plugin.plugin_type, &inv, &conf)?;
            if out.is_null() {
                return Err(CniError::BadOutput {
                    plugin: plugin.plugin_type.clone(),
                    command: "ADD".into(),
                    reason: "empty result".into(),
                });
            }
            prev = Some(out);
        }
        let result = prev.unwrap_or(Value::Null);
        cache::write(&self.cache_dir, &net.name, &net.bytes, att, &result)?;
        Ok(result)
    }

    /// DEL through the list in reverse. `cached` is the ADD result (None: read the cache entry,
    /// or run without `prevResult` after a failed ADD). Idempotent.
    pub fn del(&self, net: &NetworkConfig, att: &Attachment, cached: Option<&Value>) -> Result<(), CniError> {
        // CNI: DEL must succeed when the namespace is already gone; say so by passing none.
        let netns = if crate::netns::is_pinned(&att.netns) {
            att.netns.to_string_lossy().to_string()
        } else {
            String::new()
        };
        let args = att.cni_args();
        let inv = exec::Invocation {
            command: "DEL",
            container_id: &att.container_id,
            netns: &netns,
            ifname: &att.ifname,
            args: &args,
            bin_dirs: &self.bin_dirs,
        };
        let from_cache;
        let cached = match cached {
            Some(c) => Some(c),
            None => {
                from_cache = cache::read_result(&self.cache_dir, &net.name, att);
                from_cache.as_ref()
            }
        };
        let prev = cached.filter(|_| exec::version_at_least(&net.cni_version, 0, 4));
        let mut errors = Vec::new();
        for plugin in net.plugins.iter().rev() {
            let conf = plugin_config(net, plugin, prev, &att.capability_args);
            if passes_through(plugin, &conf) {
                continue;
            }
            if let Err(e) = exec::run_plugin(&plugin.plugin_type, &inv, &conf) {
                errors.push(e.to_string());
            }
        }
        if !errors.is_empty() {
            return Err(CniError::Teardown {
                network: net.name.clone(),
                errors: errors.join("; "),
            });
        }
        cache::remove(&self.cache_dir, &net.name, att)
    }
}

/// Whether running `plugin` with `conf` would change nothing: the reference `portmap` plugin
/// with no `runtimeConfig.portMappings` (none offered, none in the list) prints its
/// `prevResult` unchanged on ADD and returns at once on DEL. Run without a `prevResult` on ADD,
/// it fails ("must be called as chained plugin"), so callers skip it only when there is one.
/// A `runtimeConfig` or `portMappings` of another JSON type is the plugin's to reject.
fn passes_through(plugin: &PluginConfig, conf: &Value) -> bool {
    if plugin.plugin_type != "portmap" {
        return false;
    }
    match conf.get("runtimeConfig") {
        None => true,
        Some(Value::Object(rc)) => match rc.get("portMappings") {
            None => true,
            Some(Value::Array(maps)) => maps.is_empty(),
            Some(_) => false,
        },
        Some(_) => false,
    }
}

/// The stdin config of one plugin: its own object plus the list's name and version, the previous
/// result and the capability arguments it declared.
fn plugin_config(
    net: &NetworkConfig,
    plugin: &PluginConfig,
    prev: Option<&Value>,
    capability_args: &Map<String, Value>,
) -> Value {
    let mut conf = plugin.raw.clone();
    conf.insert("name".into(), Value::String(net.name.clone()));
    conf.insert("cniVersion".into(), Value::String(net.cni_version.clone()));
    if let Some(p) = prev {
        conf.insert("prevResult".into(), p.clone());
    }
    let mut runtime = Map::new();
    if let Some(Value::Object(caps)) = plugin.raw.get("capabilities") {
        for (cap, enabled) in caps {
            if enabled.as_bool() == Some(true)
                && let Some(v) = capability_args.get(cap)
            {
                runtime.insert(cap.clone(), v.clone());
            }
        }
    }
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    Value::Object(conf)
}

#[cfg(test)]
mod tests;
