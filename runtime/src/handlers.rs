//! Runtime handlers (Kubernetes RuntimeClass): the `[runtimes.NAME]` tables of the
//! configuration, which runtime each name selects, and how `Status` lists them.
//!
//! The default handler `""` is the embedded libcontainer. A handler with a `runtime_path` runs
//! that OCI runtime binary (runc, crun, ...) through its command line, still under
//! `crius-shim`, which keeps the container's stdio, log and exit status for every handler.
//!
//! Invariants: a handler name is a DNS label (RuntimeClass's rule), so it is safe as a path
//! component; every configured handler's runtime state lives in its own directory
//! (`runtime_root`, default `<state>/runtimes/<name>`), never shared with another runtime.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cri_api::v1;
use crius_shim_api::OciRuntime;
use serde::{Deserialize, Serialize};

/// One `[runtimes.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    /// The OCI runtime binary (`/usr/sbin/runc`); absent: the embedded libcontainer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_path: Option<PathBuf>,
    /// The runtime's state directory (`--root`); absent: `<state>/runtimes/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_root: Option<PathBuf>,
    /// Privileged containers of this handler do not get the host's devices nor an allow-all
    /// device cgroup (a VM-based runtime would hand the host's devices to its guest).
    #[serde(default)]
    pub privileged_without_host_devices: bool,
}

/// Checks the `[runtimes]` tables; the message names the key.
pub fn validate(runtimes: &BTreeMap<String, HandlerConfig>) -> Result<(), String> {
    for (name, h) in runtimes {
        if !is_dns_label(name) {
            return Err(format!(
                "`runtimes.{name:?}`: a handler name must be a DNS label (lower-case letters, digits \
                 and '-', at most 63, starting and ending with a letter or digit)"
            ));
        }
        for (key, p) in [
            ("runtime_path", &h.runtime_path),
            ("runtime_root", &h.runtime_root),
        ] {
            if let Some(p) = p
                && !p.is_absolute()
            {
                return Err(format!(
                    "`runtimes.{name}.{key}` must be an absolute path, got {p:?}"
                ));
            }
        }
    }
    Ok(())
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Where handler `name` keeps its runtime's state when the config names no `runtime_root`.
pub fn default_root(state: &Path, name: &str) -> PathBuf {
    state.join("runtimes").join(name)
}

/// What one handler selects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handler {
    /// The external runtime (`None`: the embedded libcontainer).
    pub runtime: Option<OciRuntime>,
    pub privileged_without_host_devices: bool,
}

/// The handlers in force by name. The default handler `""` is always there.
#[derive(Debug, Clone)]
pub struct Handlers {
    by_name: BTreeMap<String, Handler>,
}

impl Default for Handlers {
    /// The default handler `""` alone.
    fn default() -> Self {
        Handlers {
            by_name: BTreeMap::from([(String::new(), Handler::default())]),
        }
    }
}

impl Handlers {
    pub fn new(runtimes: &BTreeMap<String, HandlerConfig>, state: &Path) -> Handlers {
        let mut by_name = Handlers::default().by_name;
        for (name, h) in runtimes {
            let rt = h.runtime_path.as_ref().map(|path| OciRuntime {
                handler: name.clone(),
                path: path.clone(),
                root: h
                    .runtime_root
                    .clone()
                    .unwrap_or_else(|| default_root(state, name)),
            });
            let handler = Handler {
                runtime: rt,
                privileged_without_host_devices: h.privileged_without_host_devices,
            };
            by_name.insert(name.clone(), handler);
        }
        Handlers { by_name }
    }

    /// Handler `name`; `Err` when no such handler is configured.
    pub fn get(&self, name: &str) -> Result<&Handler, UnknownHandler> {
        self.by_name
            .get(name)
            .ok_or_else(|| UnknownHandler(name.to_string()))
    }

    /// The external runtime of handler `name` (`None`: the embedded one).
    pub fn runtime(&self, name: &str) -> Result<Option<&OciRuntime>, UnknownHandler> {
        self.get(name).map(|h| h.runtime.as_ref())
    }

    /// The state directories of the external runtimes.
    pub fn roots(&self) -> impl Iterator<Item = &Path> {
        self.by_name
            .values()
            .filter_map(|h| h.runtime.as_ref())
            .map(|rt| rt.root.as_path())
    }

    /// Every handler name, the default `""` first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// CRI: `StatusResponse.runtime_handlers`, one per handler with what it supports.
    pub fn to_cri(&self) -> Vec<v1::RuntimeHandler> {
        self.by_name
            .iter()
            .map(|(name, h)| v1::RuntimeHandler {
                name: name.clone(),
                features: Some(features(h.runtime.as_ref())),
            })
            .collect()
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("runtime handler {0:?} is not configured")]
pub struct UnknownHandler(pub String);

/// What a handler supports. libcontainer: see [`crate::info::handler_features`]. An external
/// runtime is not probed, so nothing beyond the baseline is advertised for it (runc before 1.2
/// has no `rro` mount option).
fn features(rt: Option<&OciRuntime>) -> v1::RuntimeHandlerFeatures {
    match rt {
        None => crate::info::handler_features(),
        Some(_) => v1::RuntimeHandlerFeatures {
            recursive_read_only_mounts: false,
            user_namespaces: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(s: &str) -> Result<Config, crate::config::ConfigError> {
        Config::from_toml(s, Path::new("t.toml"))
    }

    #[test]
    fn handler_tables_load_and_resolve() {
        let c = parse(
            r#"
            state = "/run/x"
            [runtimes.runc]
            runtime_path = "/usr/sbin/runc"
            [runtimes.crun]
            runtime_path = "/usr/bin/crun"
            runtime_root = "/run/crun-crius"
            [runtimes.plain]
            privileged_without_host_devices = true
            "#,
        )
        .unwrap();
        let h = Handlers::new(&c.runtimes, &c.state);
        assert_eq!(h.names().collect::<Vec<_>>(), ["", "crun", "plain", "runc"]);
        assert_eq!(h.runtime("").unwrap(), None);
        assert_eq!(h.runtime("plain").unwrap(), None, "no runtime_path: libcontainer");
        assert!(h.get("plain").unwrap().privileged_without_host_devices);
        assert!(
            !h.get("runc").unwrap().privileged_without_host_devices,
            "off unless set"
        );
        let runc = h.runtime("runc").unwrap().unwrap();
        assert_eq!(runc.path, Path::new("/usr/sbin/runc"));
        assert_eq!(runc.root, Path::new("/run/x/runtimes/runc"));
        assert_eq!(
            h.runtime("crun").unwrap().unwrap().root,
            Path::new("/run/crun-crius")
        );
        assert_eq!(
            h.runtime("kata").unwrap_err().to_string(),
            "runtime handler \"kata\" is not configured"
        );
        let cri = h.to_cri();
        assert_eq!(cri.len(), 4);
        assert!(cri[0].name.is_empty() && cri[0].features.unwrap().recursive_read_only_mounts);
        assert!(!cri[3].features.unwrap().recursive_read_only_mounts);
        assert_eq!(parse(&Config::default_toml()).unwrap().runtimes.len(), 0);
        assert_eq!(
            Handlers::default().names().collect::<Vec<_>>(),
            [""],
            "the default is always there"
        );
    }

    #[test]
    fn bad_handler_tables_are_refused_naming_the_key() {
        for (text, needle) in [
            ("[runtimes.Runc]\n", "DNS label"),
            ("[runtimes.\"a/b\"]\n", "DNS label"),
            ("[runtimes.\"-a\"]\n", "DNS label"),
            (
                "[runtimes.runc]\nruntime_path = \"runc\"\n",
                "runtimes.runc.runtime_path",
            ),
            (
                "[runtimes.runc]\nruntime_root = \"r\"\n",
                "runtimes.runc.runtime_root",
            ),
            ("[runtimes.runc]\nruntime_type = \"x\"\n", "runtime_type"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
