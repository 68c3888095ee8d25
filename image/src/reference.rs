//! Image references and registry mirror resolution.
//!
//! Invariants: every [`ImageRef`] is normalised the way containerd and kubelet spell names
//! (`busybox` → `docker.io/library/busybox:latest`); a reference without tag or digest gets `latest`;
//! a reference with a digest is a pull by digest (its tag, if any, is ignored for lookups).
//! [`RegistryHosts::endpoints`] never lists the named host itself when its table says
//! `fallback = false`, so no DNS lookup or connection to that host can happen.

use std::collections::BTreeMap;
use std::fmt;

/// Why a reference or an endpoint could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid image reference {reference:?}: {why}")]
    Invalid { reference: String, why: &'static str },
    #[error("registry endpoint {endpoint:?} of {host:?}: {why}")]
    Endpoint {
        host: String,
        endpoint: String,
        why: &'static str,
    },
}

/// A normalised image reference: `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    /// `None` only when `digest` is set.
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalises `s`. Bare ids (`sha256:<hex>`, 64 hex) are not references.
    pub fn parse(s: &str) -> Result<ImageRef, ReferenceError> {
        let s = s.trim();
        if s.starts_with("sha256:") || is_hex64(s) {
            return Err(ReferenceError::Invalid {
                reference: s.to_string(),
                why: "an image id is not a pullable reference",
            });
        }
        let p = crate::refgrammar::split(s).map_err(|why| ReferenceError::Invalid {
            reference: s.to_string(),
            why,
        })?;
        // Docker Hub's spellings: no domain or index.docker.io is docker.io, and its one-component
        // names live under library/.
        let registry = match p.domain {
            None | Some("index.docker.io") => "docker.io",
            Some(d) => d,
        };
        let repository = if registry == "docker.io" && !p.path.contains('/') {
            format!("library/{}", p.path)
        } else {
            p.path.to_string()
        };
        // Docker checks the 255-byte bound on the normalised name (`docker.io/library/` added).
        if registry.len() + 1 + repository.len() > 255 {
            return Err(ReferenceError::Invalid {
                reference: s.to_string(),
                why: "the normalised name is longer than 255 bytes",
            });
        }
        let digest = p.digest.map(str::to_string);
        let tag = match digest {
            Some(_) => None,
            None => Some(p.tag.unwrap_or("latest").to_string()),
        };
        Ok(ImageRef {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, the name repo tags and repo digests are built on.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// CRI: the repo tag this reference records (`None` for a pull by digest).
    pub fn repo_tag(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// `registry/repository@digest` for any digest of this repository.
    pub fn repo_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }

    /// The tag or digest a registry is asked for.
    pub fn object(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// The reference oci-client uses to talk to `host` (a mirror or the registry itself).
    pub fn at_host(&self, host: &str) -> oci_client::Reference {
        match &self.digest {
            Some(d) => oci_client::Reference::with_digest(host.into(), self.repository.clone(), d.clone()),
            None => oci_client::Reference::with_tag(
                host.into(),
                self.repository.clone(),
                self.object().to_string(),
            ),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.tag, &self.digest) {
            (_, Some(d)) => write!(f, "{}@{d}", self.name()),
            (Some(t), None) => write!(f, "{}:{t}", self.name()),
            (None, None) => write!(f, "{}", self.name()),
        }
    }
}

pub(crate) fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// One registry table of the daemon config (`[registry."HOST"]`), as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// `http://host[:port]` or `https://host[:port]`, tried in order.
    pub endpoints: Vec<String>,
    /// When false the host named in the image reference is never contacted.
    pub fallback: bool,
    /// When true, PullImage credentials for this registry are also sent to its `https://`
    /// endpoints (never to `http://` ones); when false only the registry itself receives them.
    pub send_credentials_to_mirrors: bool,
    /// TLS settings for connections to this host ([`crate::registry::tls`]).
    pub tls: crate::registry::tls::HostTls,
}

/// A place to fetch an image from: `host[:port]` and whether to speak plain HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub plain_http: bool,
}

/// The registry tables of the daemon config, keyed by the host as written in image names.
#[derive(Debug, Clone, Default)]
pub struct RegistryHosts {
    pub hosts: BTreeMap<String, Mirror>,
}

impl RegistryHosts {
    pub fn new(hosts: BTreeMap<String, Mirror>) -> RegistryHosts {
        RegistryHosts { hosts }
    }

    /// Whether `registry`'s table lets its HTTPS mirrors receive its PullImage credentials.
    pub fn credentials_to_mirrors(&self, registry: &str) -> bool {
        self.hosts
            .get(registry)
            .is_some_and(|m| m.send_credentials_to_mirrors)
    }

    /// The endpoints to try, in order, for an image of `registry`: the configured mirrors, then the
    /// registry itself unless its table says `fallback = false`. Loopback registries are spoken to
    /// in plain HTTP, as containerd does, unless their table has TLS settings.
    pub fn endpoints(&self, registry: &str) -> Result<Vec<Endpoint>, ReferenceError> {
        let mut out = Vec::new();
        let mut fallback = true;
        let mut tls = false;
        if let Some(m) = self.hosts.get(registry) {
            tls = m.tls.is_set();
            for ep in &m.endpoints {
                out.push(parse_endpoint(registry, ep)?);
            }
            fallback = m.fallback;
        }
        if fallback {
            let host = if registry == "docker.io" {
                "index.docker.io"
            } else {
                registry
            };
            out.push(Endpoint {
                host: host.to_string(),
                plain_http: is_loopback(host) && !tls,
            });
        }
        Ok(out)
    }
}

fn parse_endpoint(registry: &str, ep: &str) -> Result<Endpoint, ReferenceError> {
    let err = |why| ReferenceError::Endpoint {
        host: registry.to_string(),
        endpoint: ep.to_string(),
        why,
    };
    let (plain_http, rest) = if let Some(r) = ep.strip_prefix("http://") {
        (true, r)
    } else if let Some(r) = ep.strip_prefix("https://") {
        (false, r)
    } else {
        return Err(err("must start with http:// or https://"));
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        return Err(err("has no host"));
    }
    if !(path.is_empty() || path == "v2" || path == "v2/") {
        return Err(err("paths other than /v2 are not supported"));
    }
    Ok(Endpoint {
        host: host.to_string(),
        plain_http,
    })
}

fn is_loopback(host: &str) -> bool {
    let h = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_short_names_tags_and_digests() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.repo_tag().unwrap(), "docker.io/library/busybox:latest");
        let r = ImageRef::parse("foo/bar:1.2").unwrap();
        assert_eq!(r.to_string(), "docker.io/foo/bar:1.2");
        let r = ImageRef::parse("index.docker.io/busybox:1").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:1");
        let r = ImageRef::parse("localhost/busybox").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("localhost", "busybox")
        );
        let r = ImageRef::parse("127.0.0.1:5000/t/busybox").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "t/busybox");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("registry.k8s.io/pause@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.repo_tag(), None);
        assert_eq!(r.object(), d);
        assert_eq!(r.repo_digest(&d), format!("registry.k8s.io/pause@{d}"));
    }

    #[test]
    fn rejects_ids_and_garbage() {
        assert!(ImageRef::parse(&format!("sha256:{}", "a".repeat(64))).is_err());
        assert!(ImageRef::parse(&"b".repeat(64)).is_err());
        assert!(ImageRef::parse("bad name!").is_err());
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("a@sha256:short").is_err());
    }

    #[test]
    fn a_name_too_long_once_normalised_is_refused() {
        // Found by the image_reference fuzz target: 250 bytes pass the grammar's 255-byte bound,
        // `docker.io/library/` made it 268 and the printed reference no longer parsed.
        assert!(ImageRef::parse(&"a".repeat(250)).is_err());
        let fits = "a".repeat(255 - "docker.io/library/".len());
        let r = ImageRef::parse(&fits).unwrap();
        assert_eq!(ImageRef::parse(&r.to_string()).unwrap(), r);
        assert!(ImageRef::parse(&format!("{fits}a")).is_err());
    }

    #[test]
    fn mirrors_come_first_and_fallback_false_drops_the_host() {
        let mut hosts = BTreeMap::new();
        hosts.insert(
            "registry.k8s.io".to_string(),
            Mirror {
                endpoints: vec!["http://127.0.0.1:5000".into(), "https://m.example:8443/v2".into()],
                fallback: false,
                send_credentials_to_mirrors: false,
                tls: Default::default(),
            },
        );
        hosts.insert(
            "docker.io".to_string(),
            Mirror {
                endpoints: vec!["https://mirror.local".into()],
                fallback: true,
                send_credentials_to_mirrors: false,
                tls: Default::default(),
            },
        );
        let h = RegistryHosts::new(hosts);
        let eps = h.endpoints("registry.k8s.io").unwrap();
        assert_eq!(
            eps,
            vec![
                Endpoint {
                    host: "127.0.0.1:5000".into(),
                    plain_http: true
                },
                Endpoint {
                    host: "m.example:8443".into(),
                    plain_http: false
                }
            ]
        );
        let eps = h.endpoints("docker.io").unwrap();
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[1].host, "index.docker.io");
        assert!(!eps[1].plain_http);
        let eps = h.endpoints("localhost:5000").unwrap();
        assert_eq!(
            eps,
            vec![Endpoint {
                host: "localhost:5000".into(),
                plain_http: true
            }]
        );
        assert!(h.endpoints("quay.io").unwrap().iter().all(|e| !e.plain_http));
        // A loopback registry whose table configures TLS is spoken to over HTTPS.
        let mut hosts = BTreeMap::new();
        hosts.insert(
            "127.0.0.1:5443".to_string(),
            Mirror {
                endpoints: Vec::new(),
                fallback: true,
                send_credentials_to_mirrors: false,
                tls: crate::registry::tls::HostTls {
                    insecure_skip_verify: true,
                    ..Default::default()
                },
            },
        );
        let eps = RegistryHosts::new(hosts).endpoints("127.0.0.1:5443").unwrap();
        assert!(!eps[0].plain_http, "{eps:?}");
    }

    #[test]
    fn bad_endpoints_are_errors() {
        for ep in ["127.0.0.1:5000", "http://", "http://h/prefix"] {
            let mut hosts = BTreeMap::new();
            hosts.insert(
                "r".to_string(),
                Mirror {
                    endpoints: vec![ep.into()],
                    fallback: true,
                    send_credentials_to_mirrors: false,
                    tls: Default::default(),
                },
            );
            assert!(RegistryHosts::new(hosts).endpoints("r").is_err(), "{ep}");
        }
    }
}
