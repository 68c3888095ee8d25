//! The HTTP clients registries are spoken to with: one per registry host that has TLS settings
//! (`ca_file`, `cert_file`/`key_file`, `insecure_skip_verify` in its `[registry."HOST"]` table),
//! one default for every other host. All are built once, when the store opens, so a bad file
//! stops the daemon at start-up instead of failing pulls later; pulls share their connection pools.
//!
//! Invariants: a host's settings apply to connections to that host (as written in an endpoint,
//! `host[:port]`), whichever image is being pulled through it, like Docker's
//! `certs.d/HOST/`. A `ca_file` adds to the system's roots. Files are read with a cap. Key material
//! is never logged; errors name the table key and the path, never file contents.

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{RegistryError, http};
use crate::reference::{Endpoint, Mirror};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// PEM files (a CA bundle, a certificate chain, a key) larger than this are refused.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// The TLS settings of one registry host's table, as plain data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostTls {
    /// PEM certificates trusted, besides the system's roots, for this host's certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) presented to this host; needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Accept any certificate from this host (testing only: anyone on the path can impersonate it).
    pub insecure_skip_verify: bool,
}

impl HostTls {
    /// Whether anything is set: such a host gets its own client, and HTTPS even on loopback.
    pub fn is_set(&self) -> bool {
        *self != HostTls::default()
    }
}

/// A registry table's TLS settings that cannot be used; the daemon refuses to start.
#[derive(Debug, thiserror::Error)]
#[error("`registry.\"{host}\".{key}`{}: {why}", path.as_ref().map(|p| format!(" ({})", p.display())).unwrap_or_default())]
pub struct TlsConfigError {
    pub host: String,
    pub key: &'static str,
    pub path: Option<PathBuf>,
    pub why: String,
}

/// The clients of all registry hosts, built once.
#[derive(Debug)]
pub struct Clients {
    /// Verifies against the system's roots; an error when the host has none (no CA bundle).
    default: Result<reqwest::Client, String>,
    /// Trusts no certificate: plain-HTTP endpoints still work on a host without a CA bundle.
    plain: reqwest::Client,
    /// By [`super::scope::canonical`] host.
    hosts: HashMap<String, reqwest::Client>,
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
}

impl Clients {
    /// Builds the default client and one per table with TLS settings.
    pub fn build(tables: &BTreeMap<String, Mirror>) -> Result<Clients, TlsConfigError> {
        let plain = builder()
            .tls_certs_only(std::iter::empty())
            .build()
            .map_err(|e| TlsConfigError {
                host: "*".into(),
                key: "(default client)",
                path: None,
                why: http::error_chain(&e),
            })?;
        let mut hosts = HashMap::new();
        for (host, table) in tables.iter().filter(|(_, t)| t.tls.is_set()) {
            if table.tls.insecure_skip_verify {
                tracing::warn!(host = %host, "insecure_skip_verify: this registry's certificate is not checked");
            }
            hosts.insert(super::scope::canonical(host), host_client(host, &table.tls)?);
        }
        Ok(Clients {
            default: builder().build().map_err(|e| http::error_chain(&e)),
            plain,
            hosts,
        })
    }

    /// The client for `ep`: its host's own, else the default (the no-roots one for plain HTTP
    /// when the system has no CA bundle).
    pub fn for_endpoint(&self, ep: &Endpoint) -> Result<reqwest::Client, RegistryError> {
        if let Some(c) = self.hosts.get(&super::scope::canonical(&ep.host)) {
            return Ok(c.clone());
        }
        match &self.default {
            Ok(c) => Ok(c.clone()),
            Err(_) if ep.plain_http => Ok(self.plain.clone()),
            Err(why) => Err(RegistryError::Tls {
                endpoint: ep.host.clone(),
                why: why.clone(),
            }),
        }
    }
}

fn host_client(host: &str, tls: &HostTls) -> Result<reqwest::Client, TlsConfigError> {
    let err = |key: &'static str, path: Option<&Path>, why: String| TlsConfigError {
        host: host.to_string(),
        key,
        path: path.map(Path::to_path_buf),
        why,
    };
    let cas = match &tls.ca_file {
        Some(p) => {
            let pem = read_pem(p).map_err(|why| err("ca_file", Some(p), why))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| err("ca_file", Some(p), http::error_chain(&e)))?;
            if certs.is_empty() {
                return Err(err("ca_file", Some(p), "no PEM certificate in it".into()));
            }
            certs
        }
        None => Vec::new(),
    };
    let identity = match (&tls.cert_file, &tls.key_file) {
        (Some(c), Some(k)) => {
            let mut pem = read_pem(c).map_err(|why| err("cert_file", Some(c), why))?;
            pem.push(b'\n');
            pem.extend(read_pem(k).map_err(|why| err("key_file", Some(k), why))?);
            Some(reqwest::Identity::from_pem(&pem).map_err(|e| {
                err(
                    "cert_file",
                    Some(c),
                    format!("with key_file: {}", http::error_chain(&e)),
                )
            })?)
        }
        (None, None) => None,
        (Some(_), None) => return Err(err("cert_file", None, "needs key_file".into())),
        (None, Some(_)) => return Err(err("key_file", None, "needs cert_file".into())),
    };
    let make = |only_these_roots: bool| {
        let mut b = builder();
        b = if only_these_roots {
            b.tls_certs_only(cas.clone())
        } else {
            b.tls_certs_merge(cas.clone())
        };
        if let Some(id) = &identity {
            b = b.identity(id.clone());
        }
        b.tls_danger_accept_invalid_certs(tls.insecure_skip_verify)
            .build()
    };
    // A host without a CA bundle cannot build the system verifier; the configured CA alone
    // still works there.
    make(false)
        .or_else(|e| if cas.is_empty() { Err(e) } else { make(true) })
        .map_err(|e| {
            let key = if tls.ca_file.is_some() {
                "ca_file"
            } else {
                "cert_file"
            };
            err(key, tls.ca_file.as_deref(), http::error_chain(&e))
        })
}

/// Reads a PEM file of at most [`MAX_PEM_BYTES`], counting while reading.
fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut out = Vec::new();
    f.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot read: {e}"))?;
    if out.len() as u64 > MAX_PEM_BYTES {
        return Err(format!("over the {MAX_PEM_BYTES}-byte limit"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(host: &str, tls: HostTls) -> BTreeMap<String, Mirror> {
        let mut t = BTreeMap::new();
        t.insert(
            host.to_string(),
            Mirror {
                endpoints: Vec::new(),
                fallback: true,
                send_credentials_to_mirrors: false,
                tls,
            },
        );
        t
    }

    #[test]
    fn unusable_files_are_refused_naming_the_key_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let huge = dir.path().join("huge.pem");
        std::fs::write(&huge, vec![b'A'; MAX_PEM_BYTES as usize + 1]).unwrap();
        let cases = [
            (
                HostTls {
                    ca_file: Some(missing.clone()),
                    ..Default::default()
                },
                "ca_file",
                "cannot open",
            ),
            (
                HostTls {
                    ca_file: Some(junk.clone()),
                    ..Default::default()
                },
                "ca_file",
                "no PEM certificate",
            ),
            (
                HostTls {
                    ca_file: Some(huge.clone()),
                    ..Default::default()
                },
                "ca_file",
                "limit",
            ),
            (
                HostTls {
                    key_file: Some(junk.clone()),
                    ..Default::default()
                },
                "key_file",
                "needs cert_file",
            ),
            (
                HostTls {
                    cert_file: Some(junk.clone()),
                    key_file: Some(missing),
                    ..Default::default()
                },
                "key_file",
                "cannot open",
            ),
            (
                HostTls {
                    cert_file: Some(junk.clone()),
                    key_file: Some(junk.clone()),
                    ..Default::default()
                },
                "cert_file",
                "with key_file",
            ),
        ];
        for (tls, key, why) in cases {
            let e = Clients::build(&tables("reg.example:5000", tls)).unwrap_err();
            let msg = e.to_string();
            assert_eq!(e.key, key, "{msg}");
            assert!(
                msg.starts_with(&format!("`registry.\"reg.example:5000\".{key}`")),
                "{msg}"
            );
            assert!(msg.contains(why), "{msg}");
        }
    }

    #[test]
    fn hosts_with_settings_get_their_own_client() {
        let c = Clients::build(&tables(
            "Reg.Example:5000",
            HostTls {
                insecure_skip_verify: true,
                ..Default::default()
            },
        ))
        .unwrap();
        assert!(c.hosts.contains_key("reg.example:5000"));
        let ep = |host: &str, plain_http| Endpoint {
            host: host.into(),
            plain_http,
        };
        assert!(c.for_endpoint(&ep("reg.example:5000", false)).is_ok());
        assert!(c.for_endpoint(&ep("127.0.0.1:5000", true)).is_ok());
        assert!(
            Clients::build(&tables("plain", HostTls::default()))
                .unwrap()
                .hosts
                .is_empty()
        );
    }
}
