//! Talking to one registry endpoint: manifests (indexes resolved to the wanted [`Platform`]) and
//! blobs, over our own small HTTP client (oci-client's reads whole bodies; only its manifest
//! types are used).
//!
//! Invariants: every body is bounded while it is read ([`http`]): manifests and indexes by
//! [`MAX_MANIFEST_BYTES`], blobs by their descriptor's size (a config's by [`MAX_CONFIG_BYTES`]),
//! and they are digest-checked before use; blobs stream straight into the content store, which
//! verifies size and digest before publishing them, and never sit whole in memory. Credentials
//! reach this endpoint only if [`scope`] allowed it. Every failure is a [`RegistryError`] variant
//! that keeps the registry's words.

pub mod auth_file;
pub mod http;
pub mod scope;
pub mod tls;

use base64::Engine as _;
use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageIndex, OciImageManifest};
use oci_client::secrets::RegistryAuth;

use crate::content::{ContentError, ContentStore};
use crate::platform::Platform;
use crate::reference::Endpoint;

pub use http::{MAX_ERROR_BODY_BYTES, MAX_MANIFEST_BYTES, MAX_TOKEN_BYTES};

/// Image configs larger than this are refused; they are read into memory.
pub const MAX_CONFIG_BYTES: i64 = 16 << 20;
/// Blob chunks handed to an unpacker are at most this big (the pipe's memory is bounded by its
/// chunk count times this).
pub const TEE_CHUNK_BYTES: usize = 64 << 10;

const MANIFEST_TYPES: &[&str] = &[
    oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
    oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE,
    oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE,
    oci_client::manifest::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("authorization failed: {0}")]
    Unauthorized(String),
    #[error("registry error (HTTP {status}): {message}")]
    Server { status: u16, message: String },
    #[error("registry timed out: {0}")]
    Timeout(String),
    #[error("cannot reach registry: {0}")]
    Network(String),
    /// The TLS handshake failed over a certificate (the registry's, or ours it refused).
    #[error(
        "TLS certificate problem: {0} (the host's [registry.\"HOST\"] table can set ca_file, \
         cert_file/key_file or insecure_skip_verify)"
    )]
    Certificate(String),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("invalid manifest {digest}: {why}")]
    InvalidManifest { digest: String, why: String },
    #[error("the index {index} has no image for {wanted} (it offers: {offered})")]
    NoPlatform {
        index: String,
        /// The platform asked for, as configured or detected.
        wanted: String,
        offered: String,
    },
    #[error("invalid credentials in the pull request: {0}")]
    BadAuth(&'static str),
    /// A body over its cap, refused from its Content-Length or as soon as the bytes read passed it.
    #[error("{what} is over the {limit}-byte limit{}", size.map(|s| format!(" ({s} bytes announced)")).unwrap_or_default())]
    TooLarge {
        what: &'static str,
        limit: u64,
        size: Option<u64>,
    },
    #[error("cannot make an HTTPS client for {endpoint}: {why} (is the ca-certificates package installed?)")]
    Tls { endpoint: String, why: String },
    #[error(transparent)]
    Content(#[from] ContentError),
}

impl RegistryError {
    /// Worth trying the next endpoint: the content may be elsewhere, the host may be down.
    pub fn try_next_endpoint(&self) -> bool {
        !matches!(
            self,
            RegistryError::BadAuth(_) | RegistryError::Content(ContentError::Io { .. })
        )
    }
}

/// Credentials from the CRI `AuthConfig` or the node credentials file, as plain data. Its
/// `Debug` shows which fields are set, never their values.
#[derive(Clone, Default)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// base64 of `username:password`.
    pub auth: String,
    /// An OAuth2 refresh token for the registry's token service.
    pub identity_token: String,
    /// A bearer token sent to the registry as is.
    pub registry_token: String,
    /// The registry host these credentials are for (`https://host/...` or `host`); empty: the
    /// image's own registry.
    pub server_address: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |s: &String| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &set(&self.password))
            .field("auth", &set(&self.auth))
            .field("identity_token", &set(&self.identity_token))
            .field("registry_token", &set(&self.registry_token))
            .field("server_address", &self.server_address)
            .finish()
    }
}

impl Credentials {
    /// No secret and no user: the request carried no credentials (`server_address` alone says
    /// nothing).
    pub fn is_empty(&self) -> bool {
        [
            &self.username,
            &self.password,
            &self.auth,
            &self.identity_token,
            &self.registry_token,
        ]
        .iter()
        .all(|s| s.is_empty())
    }

    /// CRI: `registry_token` wins, then `identity_token`, `auth`, `username`/`password`.
    pub fn to_auth(&self) -> Result<RegistryAuth, RegistryError> {
        if !self.registry_token.is_empty() {
            return Ok(RegistryAuth::Bearer(self.registry_token.clone()));
        }
        if !self.identity_token.is_empty() {
            // Docker's convention: the refresh token is presented as the password of `<token>`.
            let user = if self.username.is_empty() {
                "<token>"
            } else {
                &self.username
            };
            return Ok(RegistryAuth::Basic(user.to_string(), self.identity_token.clone()));
        }
        if !self.auth.is_empty() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(self.auth.trim())
                .map_err(|_| RegistryError::BadAuth("`auth` is not base64"))?;
            let text = String::from_utf8(raw).map_err(|_| RegistryError::BadAuth("`auth` is not UTF-8"))?;
            let (u, p) = text
                .split_once(':')
                .ok_or(RegistryError::BadAuth("`auth` is not base64 of user:password"))?;
            return Ok(RegistryAuth::Basic(u.to_string(), p.to_string()));
        }
        if !self.username.is_empty() {
            return Ok(RegistryAuth::Basic(self.username.clone(), self.password.clone()));
        }
        Ok(RegistryAuth::Anonymous)
    }
}

/// One endpoint serving one repository. Cheap to share by reference across a pull's layers.
pub struct Remote {
    http: reqwest::Client,
    base: String,
    auth: RegistryAuth,
    /// The host the credentials are named for (see [`scope`]).
    named: String,
    /// The Authorization header earned by the last challenge, reused by later requests.
    token: tokio::sync::Mutex<Option<String>>,
    pub endpoint: Endpoint,
}

/// A resolved platform manifest, plus the index it was chosen from when there was one.
pub struct Resolved {
    pub manifest: OciImageManifest,
    pub manifest_digest: String,
    pub manifest_bytes: Vec<u8>,
    pub index: Option<(String, Vec<u8>)>,
}

impl Remote {
    /// `auth` must already be what [`scope::may_send`] allows for `endpoint` (else Anonymous);
    /// `named` is the host the credentials belong to; `http` is the endpoint's client
    /// ([`tls::Clients::for_endpoint`]).
    pub fn new(endpoint: Endpoint, http: reqwest::Client, auth: RegistryAuth, named: String) -> Remote {
        let scheme = if endpoint.plain_http { "http" } else { "https" };
        let token = match &auth {
            RegistryAuth::Bearer(t) => Some(format!("Bearer {t}")),
            _ => None,
        };
        Remote {
            http,
            base: format!("{scheme}://{}", endpoint.host),
            auth,
            named,
            token: tokio::sync::Mutex::new(token),
            endpoint,
        }
    }

    /// GETs `url`, answering one auth challenge if the registry asks. Non-success answers are
    /// turned into errors.
    async fn get(
        &self,
        url: &str,
        accept: &str,
        repository: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let send = |auth: Option<String>| {
            let mut req = self.http.get(url);
            if !accept.is_empty() {
                req = req.header(reqwest::header::ACCEPT, accept);
            }
            if let Some(a) = auth {
                req = req.header(reqwest::header::AUTHORIZATION, a);
            }
            req.send()
        };
        let current = self.token.lock().await.clone();
        let mut resp = send(current.clone()).await.map_err(|e| http::net(url, &e))?;
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            let challenge = resp
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|h| h.to_str().ok())
                .and_then(http::parse_challenge);
            if let Some(c) = challenge {
                let named = self.named.clone();
                let answer = http::answer(&self.http, &c, &self.auth, repository, |realm| {
                    scope::realm_may_get(&named, realm)
                })
                .await?;
                if let Some(a) = answer.filter(|a| Some(a) != current.as_ref()) {
                    *self.token.lock().await = Some(a.clone());
                    resp = send(Some(a)).await.map_err(|e| http::net(url, &e))?;
                }
            }
        }
        if !resp.status().is_success() {
            return Err(http::failure(resp, url).await);
        }
        Ok(resp)
    }

    async fn manifest_raw(&self, r: &oci_client::Reference) -> Result<(Vec<u8>, String), RegistryError> {
        let object = r.digest().or(r.tag()).unwrap_or("latest");
        let url = format!("{}/v2/{}/manifests/{object}", self.base, r.repository());
        let mut resp = self.get(&url, &MANIFEST_TYPES.join(", "), r.repository()).await?;
        let header_digest = resp
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        let body = http::read_capped(&mut resp, MAX_MANIFEST_BYTES, "manifest").await?;
        let actual = crate::content::sha256_digest(&body);
        // By digest: the content must be what was asked for. By tag: what the registry says it is.
        let expected = r
            .digest()
            .map(str::to_string)
            .or(header_digest.filter(|d| d.starts_with("sha256:")));
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(RegistryError::DigestMismatch { expected, actual });
        }
        Ok((body, actual))
    }

    /// Fetches the manifest `r` names; an index is resolved to its best manifest for `platform`.
    pub async fn resolve(
        &self,
        r: &oci_client::Reference,
        platform: &Platform,
    ) -> Result<Resolved, RegistryError> {
        let (bytes, digest) = self.manifest_raw(r).await?;
        let entry = match decode_manifest(&digest, &bytes, platform)? {
            Decoded::Manifest(manifest) => {
                return Ok(Resolved {
                    manifest,
                    manifest_digest: digest,
                    manifest_bytes: bytes,
                    index: None,
                });
            }
            Decoded::Index { platform_manifest } => platform_manifest,
        };
        let (mbytes, mdigest) = self.manifest_raw(&r.clone_with_digest(entry)).await?;
        let manifest = parse_manifest(&mdigest, &mbytes)?;
        Ok(Resolved {
            manifest,
            manifest_digest: mdigest,
            manifest_bytes: mbytes,
            index: Some((digest, bytes)),
        })
    }

    /// Streams the blob `desc` into the content store (verified there). Returns its size.
    /// `tee`, when given, receives every byte as well, in chunks of at most [`TEE_CHUNK_BYTES`]
    /// (a layer unpacking while it downloads); if its receiver goes away the download still
    /// completes into the store.
    pub async fn fetch_blob(
        &self,
        r: &oci_client::Reference,
        desc: &OciDescriptor,
        content: &ContentStore,
        mut tee: Option<tokio::sync::mpsc::Sender<bytes::Bytes>>,
    ) -> Result<u64, RegistryError> {
        let size = u64::try_from(desc.size).map_err(|_| RegistryError::InvalidManifest {
            digest: desc.digest.clone(),
            why: "negative blob size".into(),
        })?;
        crate::content::digest_hex(&desc.digest)?;
        let url = format!("{}/v2/{}/blobs/{}", self.base, r.repository(), desc.digest);
        let mut resp = self.get(&url, "", r.repository()).await?;
        if let Some(len) = resp.content_length()
            && len > size
        {
            return Err(ContentError::SizeMismatch {
                digest: desc.digest.clone(),
                expected: size,
                actual: len,
            }
            .into());
        }
        let mut writer = content.writer(&desc.digest, Some(size)).await?;
        while let Some(chunk) = resp.chunk().await.map_err(|e| http::net(&desc.digest, &e))? {
            writer.write(&chunk).await?;
            if let Some(tx) = &tee {
                for piece in chunk.chunks(TEE_CHUNK_BYTES) {
                    // A copy: a slice would pin the whole (up to 400 KiB) network buffer.
                    if tx.send(bytes::Bytes::copy_from_slice(piece)).await.is_err() {
                        tee = None;
                        break;
                    }
                }
            }
        }
        drop(tee);
        match writer.commit().await {
            Err(ContentError::DigestMismatch { expected, actual }) => {
                Err(RegistryError::DigestMismatch { expected, actual })
            }
            other => Ok(other?),
        }
    }
}

fn invalid(digest: &str, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::InvalidManifest {
        digest: digest.to_string(),
        why: e.to_string(),
    }
}

fn parse_manifest(digest: &str, bytes: &[u8]) -> Result<OciImageManifest, RegistryError> {
    let m: OciImageManifest = serde_json::from_slice(bytes).map_err(|e| invalid(digest, e))?;
    if m.schema_version != 2 {
        return Err(invalid(
            digest,
            format!("schemaVersion {} is not supported", m.schema_version),
        ));
    }
    if m.config.size < 0 || m.config.size > MAX_CONFIG_BYTES {
        return Err(invalid(
            digest,
            format!("config size {} is out of bounds", m.config.size),
        ));
    }
    for d in std::iter::once(&m.config).chain(&m.layers) {
        crate::content::digest_hex(&d.digest).map_err(|e| invalid(digest, e))?;
    }
    Ok(m)
}

/// What a manifest body fetched from a registry is.
#[derive(Debug)]
pub enum Decoded {
    Manifest(OciImageManifest),
    /// An index (or Docker manifest list); the digest of its best manifest for the platform.
    Index {
        platform_manifest: String,
    },
}

/// Decodes a manifest or index body (`digest` names it in errors) and checks what a pull relies
/// on: schema version, config size bound, well-formed digests, an entry for `platform` (or one it
/// runs) in an index.
pub fn decode_manifest(digest: &str, bytes: &[u8], platform: &Platform) -> Result<Decoded, RegistryError> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde::de::IgnoredAny>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| invalid(digest, e))?;
    let is_index = probe.manifests.is_some()
        || matches!(
            probe.media_type.as_deref(),
            Some(
                oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE
                    | oci_client::manifest::IMAGE_MANIFEST_LIST_MEDIA_TYPE
            )
        );
    if !is_index {
        return parse_manifest(digest, bytes).map(Decoded::Manifest);
    }
    let index: OciImageIndex = serde_json::from_slice(bytes).map_err(|e| invalid(digest, e))?;
    let entry = pick_platform(&index.manifests, platform).ok_or_else(|| RegistryError::NoPlatform {
        index: digest.to_string(),
        wanted: platform.to_string(),
        offered: offered(&index.manifests),
    })?;
    crate::content::digest_hex(&entry.digest).map_err(|e| invalid(digest, e))?;
    Ok(Decoded::Index {
        platform_manifest: entry.digest.clone(),
    })
}

/// The entry of an index that best runs on `platform`, by [`Platform::acceptable`]'s order; among
/// equally good entries the first in the index (containerd's choice too). Entries without a
/// platform are never chosen: nothing says they can run here.
pub fn pick_platform<'a>(entries: &'a [ImageIndexEntry], platform: &Platform) -> Option<&'a ImageIndexEntry> {
    let acceptable = platform.acceptable();
    let rank = |e: &ImageIndexEntry| {
        let p = e.platform.as_ref()?;
        Platform::rank_in(
            &acceptable,
            &p.os.to_string(),
            &p.architecture.to_string(),
            p.variant.as_deref(),
        )
    };
    entries
        .iter()
        .filter_map(|e| Some((rank(e)?, e)))
        .min_by_key(|(r, _)| *r)
        .map(|(_, e)| e)
}

/// The platforms an index lists, for an error message: at most 8 of at most 64 characters each
/// (the registry writes them), then how many more.
fn offered(entries: &[ImageIndexEntry]) -> String {
    const SHOWN: usize = 8;
    const LONGEST: usize = 64;
    let mut names: Vec<String> = entries
        .iter()
        .take(SHOWN)
        .map(|e| match &e.platform {
            Some(p) => Platform::new(
                &p.os.to_string(),
                &p.architecture.to_string(),
                p.variant.as_deref(),
            )
            .to_string()
            .chars()
            .take(LONGEST)
            .collect(),
            None => "no platform".to_string(),
        })
        .collect();
    if entries.len() > SHOWN {
        names.push(format!("{} more", entries.len() - SHOWN));
    }
    if names.is_empty() {
        return "nothing".to_string();
    }
    names.join(", ")
}

#[cfg(test)]
mod pick_tests;
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_map_to_registry_auth() {
        let c = |f: fn(&mut Credentials)| {
            let mut c = Credentials::default();
            f(&mut c);
            c.to_auth()
        };
        assert_eq!(c(|_| {}).unwrap(), RegistryAuth::Anonymous);
        assert_eq!(
            c(|c| {
                c.username = "u".into();
                c.password = "p".into()
            })
            .unwrap(),
            RegistryAuth::Basic("u".into(), "p".into())
        );
        assert_eq!(
            c(|c| c.auth = "dTpwOnc=".into()).unwrap(),
            RegistryAuth::Basic("u".into(), "p:w".into())
        );
        assert_eq!(
            c(|c| c.registry_token = "t".into()).unwrap(),
            RegistryAuth::Bearer("t".into())
        );
        assert_eq!(
            c(|c| c.identity_token = "r".into()).unwrap(),
            RegistryAuth::Basic("<token>".into(), "r".into())
        );
        assert!(matches!(
            c(|c| c.auth = "!!".into()),
            Err(RegistryError::BadAuth(_))
        ));
    }

    #[test]
    fn manifests_are_checked_before_use() {
        let d = format!("sha256:{}", "a".repeat(64));
        let ok = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
            "config": {"mediaType": "x", "digest": d, "size": 10},
            "layers": [{"mediaType": "x", "digest": d, "size": 10}]
        });
        assert!(parse_manifest("m", ok.to_string().as_bytes()).is_ok());
        let mut bad = ok.clone();
        bad["layers"][0]["digest"] = "sha256:../../x".into();
        assert!(parse_manifest("m", bad.to_string().as_bytes()).is_err());
        let mut huge = ok.clone();
        huge["config"]["size"] = (MAX_CONFIG_BYTES + 1).into();
        assert!(parse_manifest("m", huge.to_string().as_bytes()).is_err());
        assert!(parse_manifest("m", b"{not json").is_err());
    }
}
