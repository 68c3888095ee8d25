//! The daemon configuration: the TOML file (`/etc/crius/config.toml`; its keys are a contract for
//! the docs and tests), flag overrides, defaults.
//!
//! Invariants: unknown keys and wrong types are errors that name the key path (`streaming.port`);
//! [`Config::default_toml`] prints a file that [`Config::from_toml`] loads back to the same value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default location of the configuration file; a missing default file means built-in defaults.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/crius/config.toml";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Persistent data: the redb database, blobs, layers, container writable layers.
    pub root: PathBuf,
    /// Volatile data (tmpfs-like): sockets, pinned namespaces, shim dirs, pod files, mounts.
    pub state: PathBuf,
    /// Path of the CRI unix socket.
    pub listen: PathBuf,
    /// A tracing filter (`info`, `crius=debug,tonic=info`).
    pub log_level: String,
    pub log_format: LogFormat,
    /// `"systemd"` or `"cgroupfs"`; absent: systemd when it is PID 1, else cgroupfs. Kubelet
    /// follows what RuntimeConfig reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_manager: Option<crius_sandbox::cgroup::Driver>,
    /// Images ListImages and ImageStatus report as pinned (kubelet's image GC keeps them), by
    /// reference, digest or id.
    pub pinned_images: Vec<String>,
    /// The platform (`os/arch[/variant]`, e.g. `linux/arm64/v8`) a multi-platform image is pulled
    /// for; absent: the host's, detected. Checked when the file is read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_platform: Option<crius_image::Platform>,
    pub cni: CniConfig,
    pub streaming: StreamingConfig,
    pub metrics: MetricsConfig,
    /// `[cdi] spec_dirs`: where CDI device specs are read from.
    pub cdi: crate::cdi::CdiConfig,
    /// One table per registry host as written in image names (`registry."registry.k8s.io"`).
    pub registry: BTreeMap<String, RegistryConfig>,
    /// The node credentials file, Docker's `config.json` format (`{"auths": {"HOST": {"auth":
    /// "base64(user:pass)"}}}`), read at each pull whose request has no credentials. Not inside
    /// `[registry]`: that table's keys are hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_auth_file: Option<PathBuf>,
    /// Runtime handlers (RuntimeClass), one table per handler name (`runtimes.runc`).
    pub runtimes: BTreeMap<String, crate::handlers::HandlerConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CniConfig {
    /// Directory searched for the network configuration (first file in lexical order).
    pub conf_dir: PathBuf,
    /// Directories searched, in order, for plugin binaries.
    pub bin_dirs: Vec<PathBuf>,
    /// Holds the CNI result cache `results/<network>-<sandbox>-eth0` (libcni's layout).
    pub cache_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    /// Address the exec/attach/port-forward server binds; kubelet proxies, so loopback is safe.
    pub address: String,
    /// 0 picks a free port.
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` of the Prometheus endpoint (`/metrics`); empty: no endpoint.
    pub address: String,
    /// Which metric groups `ListPodSandboxMetrics` reports (CRI-O's `included_pod_metrics`):
    /// any of cpu, disk, hugetlb, memory, network, oom, process, spec, or `["all"]` alone;
    /// empty: none.
    pub included_pod_metrics: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Mirror endpoints tried in order; `http://` means plain HTTP is allowed for that endpoint.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// When false, the registry host itself is never contacted.
    #[serde(default = "default_true")]
    pub fallback: bool,
    /// PullImage credentials for this host go to the host itself only; when true they also go to
    /// its `https://` endpoints. `http://` endpoints other than the host never receive them.
    #[serde(default)]
    pub send_credentials_to_mirrors: bool,
    /// TLS for connections to this host (whether it is the image's registry or another's
    /// mirror): extra trusted CAs, a client certificate, or no verification at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

fn default_true() -> bool {
    true
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("/var/lib/crius"),
            state: PathBuf::from("/run/crius"),
            listen: PathBuf::from("/run/crius/crius.sock"),
            log_level: "info".to_string(),
            log_format: LogFormat::Text,
            cgroup_manager: None,
            cni: CniConfig::default(),
            streaming: StreamingConfig::default(),
            metrics: MetricsConfig::default(),
            cdi: Default::default(),
            pinned_images: Vec::new(),
            image_platform: None,
            registry: BTreeMap::new(),
            registry_auth_file: None,
            runtimes: BTreeMap::new(),
        }
    }
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            cache_dir: PathBuf::from("/var/lib/cni"),
        }
    }
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            address: "127.0.0.1".to_string(),
            port: 0,
        }
    }
}

/// Why a configuration could not be loaded. The daemon exits with code 2 on any of these.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: key `{key}`: {message}")]
    Key {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Values given on the command line; each one that is set wins over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub root: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub listen: Option<PathBuf>,
    pub log_level: Option<String>,
}

impl Config {
    /// The cgroup driver in force: the configured one, else systemd when systemd is PID 1.
    pub fn cgroup_driver(&self) -> crius_sandbox::cgroup::Driver {
        self.cgroup_manager
            .unwrap_or_else(crius_sandbox::cgroup::Driver::detect)
    }

    /// Parses a TOML document. `origin` only labels error messages.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: one_line(&e.to_string()),
        })?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let message = one_line(&e.inner().to_string());
            if key.is_empty() || key == "." {
                ConfigError::Parse {
                    path: origin.to_path_buf(),
                    message,
                }
            } else {
                ConfigError::Key {
                    path: origin.to_path_buf(),
                    key,
                    message,
                }
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Loads `path`; when `path` is None the default path is used and may be absent.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let (file, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let mut config = match std::fs::read_to_string(&file) {
            Ok(text) => Config::from_toml(&text, &file)?,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(source) => return Err(ConfigError::Read { path: file, source }),
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    fn apply(&mut self, o: &Overrides) {
        if let Some(v) = &o.root {
            self.root = v.clone();
        }
        if let Some(v) = &o.state {
            self.state = v.clone();
        }
        if let Some(v) = &o.listen {
            self.listen = v.clone();
        }
        if let Some(v) = &o.log_level {
            self.log_level = v.clone();
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (name, p) in [
            ("root", &self.root),
            ("state", &self.state),
            ("listen", &self.listen),
        ]
        .into_iter()
        .chain(self.cdi.spec_dirs.iter().map(|d| ("cdi.spec_dirs", d)))
        {
            if !p.is_absolute() {
                return Err(ConfigError::Invalid(format!(
                    "`{name}` must be an absolute path, got {p:?}"
                )));
            }
        }
        if self.streaming.address.parse::<std::net::IpAddr>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "`streaming.address` must be an IP address, got {:?}",
                self.streaming.address
            )));
        }
        if !self.metrics.address.is_empty() && self.metrics.address.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "`metrics.address` must be an IP address and port (\"127.0.0.1:9090\") or empty, got {:?}",
                self.metrics.address
            )));
        }
        crate::node::metric_descriptors::parse_groups(&self.metrics.included_pod_metrics)
            .map_err(|e| ConfigError::Invalid(format!("`metrics.included_pod_metrics`: {e}")))?;
        for (host, reg) in &self.registry {
            for ep in &reg.endpoints {
                if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                    return Err(ConfigError::Invalid(format!(
                        "`registry.\"{host}\".endpoints`: {ep:?} must start with http:// or https://"
                    )));
                }
            }
            if !reg.fallback && reg.endpoints.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "`registry.\"{host}\"`: fallback = false needs at least one endpoint"
                )));
            }
            let tls = [
                ("ca_file", &reg.ca_file),
                ("cert_file", &reg.cert_file),
                ("key_file", &reg.key_file),
            ];
            for (key, path) in tls {
                if let Some(p) = path.as_ref().filter(|p| !p.is_absolute()) {
                    return Err(ConfigError::Invalid(format!(
                        "`registry.\"{host}\".{key}` must be an absolute path, got {p:?}"
                    )));
                }
            }
            if reg.cert_file.is_some() != reg.key_file.is_some() {
                let (set, missing) = match reg.cert_file {
                    Some(_) => ("cert_file", "key_file"),
                    None => ("key_file", "cert_file"),
                };
                return Err(ConfigError::Invalid(format!(
                    "`registry.\"{host}\".{set}` needs `{missing}` in the same table"
                )));
            }
        }
        if let Some(p) = self.registry_auth_file.as_ref().filter(|p| !p.is_absolute()) {
            return Err(ConfigError::Invalid(format!(
                "`registry_auth_file` must be an absolute path, got {p:?}"
            )));
        }
        crate::handlers::validate(&self.runtimes).map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// The full default configuration as TOML, with the example mirror table commented out.
    pub fn default_toml() -> String {
        let body = toml::to_string_pretty(&Config::default()).expect("the default config serializes");
        format!(
            "# crius configuration ({DEFAULT_CONFIG_PATH}); every key is shown with its default.\n\
             # log_format is \"text\" or \"json\"; streaming.port = 0 picks a free port.\n\
             # cgroup_manager = \"systemd\" | \"cgroupfs\" (default: systemd when it is PID 1).\n\
             # image_platform = \"linux/arm64/v8\"  # what images are pulled for (default: this host's)\n\
             # registry_auth_file = \"/var/lib/kubelet/config.json\"  # docker config.json, for pulls\n\
             #                      # whose request has no credentials\n\
             {body}\n\
             # Registry mirrors, one table per registry host as written in image names:\n\
             # [registry.\"registry.k8s.io\"]\n\
             # endpoints = [\"http://127.0.0.1:5000\"]  # tried in order; http:// allows plain HTTP\n\
             # fallback = false                         # never contact registry.k8s.io itself\n\
             # send_credentials_to_mirrors = false      # true: PullImage credentials for registry.k8s.io\n\
             #                                          # also go to its https:// endpoints (never http://)\n\
             # TLS for connections to a host (its own table, also when it is another's mirror):\n\
             # ca_file = \"/etc/crius/certs/ca.pem\"     # trusted besides the system's roots\n\
             # cert_file = \"/etc/crius/certs/node.pem\" # client certificate (with key_file)\n\
             # key_file = \"/etc/crius/certs/node-key.pem\"\n\
             # insecure_skip_verify = false            # true: accept any certificate (testing only)\n\
             # Runtime handlers (RuntimeClass), one table per handler name; \"\" is the embedded runtime:\n\
             # [runtimes.runc]\n\
             # runtime_path = \"/usr/sbin/runc\"         # an OCI runtime binary; absent: the embedded one\n\
             # runtime_root = \"/run/crius/runtimes/runc\"  # its --root (default: <state>/runtimes/<name>)\n\
             # privileged_without_host_devices = false  # true: privileged containers get no host devices\n"
        )
    }
}

fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::from_toml(s, Path::new("test.toml"))
    }

    #[test]
    fn default_toml_round_trips() {
        assert_eq!(parse(&Config::default_toml()).unwrap(), Config::default());
    }

    #[test]
    fn full_example_loads() {
        let c = parse(
            r#"
            root = "/var/lib/x"
            log_format = "json"
            [cni]
            conf_dir = "/etc/x"
            [streaming]
            port = 10010
            [registry."registry.k8s.io"]
            endpoints = ["http://127.0.0.1:5000"]
            fallback = false
            send_credentials_to_mirrors = true
            [registry."quay.io"]
            endpoints = ["https://m.example"]
            "#,
        )
        .unwrap();
        assert!(c.registry["registry.k8s.io"].send_credentials_to_mirrors);
        assert!(
            !c.registry["quay.io"].send_credentials_to_mirrors,
            "off unless asked for"
        );
        assert_eq!(c.root, PathBuf::from("/var/lib/x"));
        assert_eq!(c.state, PathBuf::from("/run/crius"));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.streaming.port, 10010);
        assert!(!c.registry["registry.k8s.io"].fallback);
        assert_eq!(c.cni.bin_dirs, CniConfig::default().bin_dirs);
        assert_eq!(c.cgroup_manager, None);
        let s = parse("cgroup_manager = \"systemd\"\n").unwrap();
        assert_eq!(s.cgroup_manager, Some(crius_sandbox::cgroup::Driver::Systemd));
        assert_eq!(s.cgroup_driver(), crius_sandbox::cgroup::Driver::Systemd);
        let e = parse("cgroup_manager = \"upstart\"\n").unwrap_err().to_string();
        assert!(e.contains("cgroup_manager"), "{e}");
    }

    #[test]
    fn image_platform_is_checked_and_normalized() {
        assert_eq!(
            parse("").unwrap().image_platform,
            None,
            "the host's unless configured"
        );
        let c = parse("image_platform = \"linux/aarch64\"\n").unwrap();
        assert_eq!(c.image_platform, Some("linux/arm64/v8".parse().unwrap()));
        let c = parse("image_platform = \"linux/arm/v6\"\n").unwrap();
        assert_eq!(c.image_platform.unwrap().to_string(), "linux/arm/v6");
        for bad in ["\"arm64\"", "\"linux/\"", "\"linux/arm64/v8/x\"", "\"\"", "7"] {
            let e = parse(&format!("image_platform = {bad}\n")).unwrap_err();
            assert!(
                matches!(&e, ConfigError::Key { key, .. } if key == "image_platform"),
                "{bad}: {e}"
            );
        }
        let e = parse("image_platform = \"amd64\"\n").unwrap_err().to_string();
        assert!(e.contains("os/architecture"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("[cni]\nconfdir = \"/x\"\n").unwrap_err().to_string();
        assert!(e.contains("confdir"), "{e}");
        assert!(e.contains("cni"), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = parse("[streaming]\nport = \"ten\"\n").unwrap_err().to_string();
        assert!(e.contains("streaming.port"), "{e}");
    }

    #[test]
    fn relative_paths_and_bad_endpoints_are_rejected() {
        assert!(parse("root = \"rel\"\n").is_err());
        assert!(parse("[cdi]\nspec_dirs = [\"/etc/cdi\", \"cdi\"]\n").is_err());
        assert_eq!(
            parse("[cdi]\nspec_dirs = [\"/x\"]\n").unwrap().cdi.spec_dirs,
            [Path::new("/x")]
        );
        assert!(parse("[registry.\"a\"]\nendpoints = [\"127.0.0.1:5000\"]\n").is_err());
        assert!(parse("[registry.\"a\"]\nfallback = false\n").is_err());
    }

    #[test]
    fn registry_tls_keys_load_and_are_checked() {
        let c = parse(
            "registry_auth_file = \"/var/lib/kubelet/config.json\"\n\
             [registry.\"reg.example:5443\"]\nca_file = \"/c/ca.pem\"\ncert_file = \"/c/n.pem\"\n\
             key_file = \"/c/n-key.pem\"\ninsecure_skip_verify = true\n",
        )
        .unwrap();
        let r = &c.registry["reg.example:5443"];
        assert_eq!(r.ca_file, Some(PathBuf::from("/c/ca.pem")));
        assert_eq!(r.key_file, Some(PathBuf::from("/c/n-key.pem")));
        assert!(r.insecure_skip_verify && r.fallback);
        assert_eq!(
            c.registry_auth_file,
            Some(PathBuf::from("/var/lib/kubelet/config.json"))
        );
        assert_eq!(parse(&toml::to_string(&c).unwrap()).unwrap(), c, "round trip");
        for (bad, named) in [
            (
                "[registry.\"r\"]\nkey_file = \"/k\"\n",
                "`registry.\"r\".key_file` needs `cert_file`",
            ),
            (
                "[registry.\"r\"]\ncert_file = \"/c\"\n",
                "`registry.\"r\".cert_file` needs `key_file`",
            ),
            (
                "[registry.\"r\"]\nca_file = \"ca.pem\"\n",
                "`registry.\"r\".ca_file` must be an absolute",
            ),
            (
                "registry_auth_file = \"config.json\"\n",
                "`registry_auth_file` must be an absolute",
            ),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(named), "{bad}: {e}");
        }
        let e = parse("[registry.\"r\"]\nca_file = 1\n").unwrap_err().to_string();
        assert!(e.contains("ca_file"), "{e}");
    }

    #[test]
    fn metric_groups_are_checked() {
        let ok = parse("[metrics]\nincluded_pod_metrics = [\"cpu\", \"network\"]\n").unwrap();
        assert_eq!(ok.metrics.included_pod_metrics, vec!["cpu", "network"]);
        assert!(parse("[metrics]\nincluded_pod_metrics = [\"all\"]\n").is_ok());
        let e = parse("[metrics]\nincluded_pod_metrics = [\"gpu\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("included_pod_metrics") && e.contains("\"gpu\""), "{e}");
        assert!(parse("[metrics]\nincluded_pod_metrics = [\"all\", \"cpu\"]\n").is_err());
    }

    #[test]
    fn overrides_win() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "root = \"/a\"\n").unwrap();
        let o = Overrides {
            root: Some("/b".into()),
            ..Default::default()
        };
        assert_eq!(Config::load(Some(&f), &o).unwrap().root, PathBuf::from("/b"));
    }
}
