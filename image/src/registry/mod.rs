//! Talking to one registry endpoint with oci-client's manifest and blob calls (never its
//! whole-image `pull`, which buffers layers in memory).
//!
//! Invariants: manifests are size-limited and digest-checked before they are parsed; blobs stream
//! straight into the content store, which verifies size and digest before publishing them; every
//! registry failure is classified into a [`RegistryError`] variant that keeps the registry's words.

use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::{ImageIndexEntry, OciDescriptor, OciImageIndex, OciImageManifest};
use oci_client::secrets::RegistryAuth;

use crate::content::{ContentError, ContentStore};
use crate::reference::Endpoint;

/// Manifests larger than this are refused (containerd uses the same bound).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Image configs larger than this are refused; they are read into memory.
pub const MAX_CONFIG_BYTES: i64 = 16 << 20;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

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
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("invalid manifest {digest}: {why}")]
    InvalidManifest { digest: String, why: String },
    #[error("no linux/amd64 image in the index {0}")]
    NoPlatform(String),
    #[error("invalid credentials in the pull request: {0}")]
    BadAuth(&'static str),
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

/// Credentials from the CRI `AuthConfig`, as plain data.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// base64 of `username:password`.
    pub auth: String,
    /// An OAuth2 refresh token for the registry's token service.
    pub identity_token: String,
    /// A bearer token sent to the registry as is.
    pub registry_token: String,
}

impl Credentials {
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

/// One endpoint serving one repository.
pub struct Remote {
    client: oci_client::Client,
    auth: RegistryAuth,
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
    pub fn new(endpoint: Endpoint, auth: RegistryAuth) -> Remote {
        let client = oci_client::Client::new(ClientConfig {
            protocol: if endpoint.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            platform_resolver: None,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            ..Default::default()
        });
        Remote {
            client,
            auth,
            endpoint,
        }
    }

    async fn manifest_raw(&self, r: &oci_client::Reference) -> Result<(Vec<u8>, String), RegistryError> {
        let (body, digest) = self
            .client
            .pull_manifest_raw(r, &self.auth, MANIFEST_TYPES)
            .await
            .map_err(|e| classify(e, r))?;
        if body.len() > MAX_MANIFEST_BYTES {
            return Err(RegistryError::InvalidManifest {
                digest,
                why: format!("{} bytes is over the {MAX_MANIFEST_BYTES}-byte limit", body.len()),
            });
        }
        let actual = crate::content::sha256_digest(&body);
        let expected = r.digest().unwrap_or(&digest);
        if actual != expected {
            return Err(RegistryError::DigestMismatch {
                expected: expected.to_string(),
                actual,
            });
        }
        Ok((body.to_vec(), actual))
    }

    /// Fetches the manifest `r` names; an index is resolved to its linux/amd64 manifest.
    pub async fn resolve(&self, r: &oci_client::Reference) -> Result<Resolved, RegistryError> {
        let (bytes, digest) = self.manifest_raw(r).await?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| invalid(&digest, e))?;
        let is_index = v.get("manifests").is_some()
            || matches!(
                v.get("mediaType").and_then(|m| m.as_str()),
                Some(oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE)
                    | Some(oci_client::manifest::IMAGE_MANIFEST_LIST_MEDIA_TYPE)
            );
        if !is_index {
            let manifest = parse_manifest(&digest, &bytes)?;
            return Ok(Resolved {
                manifest,
                manifest_digest: digest,
                manifest_bytes: bytes,
                index: None,
            });
        }
        let index: OciImageIndex = serde_json::from_slice(&bytes).map_err(|e| invalid(&digest, e))?;
        let entry =
            pick_platform(&index.manifests).ok_or_else(|| RegistryError::NoPlatform(digest.clone()))?;
        let (mbytes, mdigest) = self
            .manifest_raw(&r.clone_with_digest(entry.digest.clone()))
            .await?;
        let manifest = parse_manifest(&mdigest, &mbytes)?;
        Ok(Resolved {
            manifest,
            manifest_digest: mdigest,
            manifest_bytes: mbytes,
            index: Some((digest, bytes)),
        })
    }

    /// Streams the blob `desc` into the content store (verified there). Returns its size.
    /// `tee`, when given, receives every chunk as well (a layer unpacking while it downloads);
    /// if its receiver goes away the download still completes into the store.
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
        let mut writer = content.writer(&desc.digest, Some(size)).await?;
        let mut stream = self
            .client
            .pull_blob_stream(r, desc)
            .await
            .map_err(|e| classify(e, r))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| classify_io(e, &desc.digest))?;
            writer.write(&chunk).await?;
            if let Some(tx) = &tee
                && tx.send(chunk).await.is_err()
            {
                tee = None;
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

/// CRI: the host platform is linux/amd64; among amd64 entries prefer no variant, then v2, v1.
pub fn pick_platform(entries: &[ImageIndexEntry]) -> Option<&ImageIndexEntry> {
    use oci_spec::image::{Arch, Os};
    let rank = |e: &ImageIndexEntry| {
        let p = e.platform.as_ref()?;
        if p.os != Os::Linux || p.architecture != Arch::Amd64 {
            return None;
        }
        match p.variant.as_deref() {
            None | Some("") => Some(0),
            Some("v2") => Some(1),
            Some("v1") => Some(2),
            Some(_) => None,
        }
    };
    entries
        .iter()
        .filter_map(|e| Some((rank(e)?, e)))
        .min_by_key(|(r, _)| *r)
        .map(|(_, e)| e)
}

fn classify(e: OciDistributionError, r: &oci_client::Reference) -> RegistryError {
    use OciDistributionError as E;
    match e {
        E::RegistryError { envelope, url } => {
            let words = envelope
                .errors
                .iter()
                .map(|e| {
                    if e.message.is_empty() {
                        format!("{:?}", e.code)
                    } else {
                        e.message.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join("; ");
            let msg = format!("{r}: {words} ({url})");
            let code = envelope.errors.first().map(|e| &e.code);
            match code {
                Some(OciErrorCode::Unauthorized | OciErrorCode::Denied) => RegistryError::Unauthorized(msg),
                Some(OciErrorCode::Toomanyrequests) => RegistryError::Server {
                    status: 429,
                    message: msg,
                },
                _ => RegistryError::NotFound(msg),
            }
        }
        E::ServerError { code, url, message } => {
            let msg = format!("{r}: {} ({url})", message.trim());
            match code {
                404 => RegistryError::NotFound(msg),
                401 | 403 => RegistryError::Unauthorized(msg),
                _ => RegistryError::Server {
                    status: code,
                    message: msg,
                },
            }
        }
        E::UnauthorizedError { url } => RegistryError::Unauthorized(format!("{r}: {url}")),
        E::AuthenticationFailure(m) => RegistryError::Unauthorized(format!("{r}: {m}")),
        E::ImageManifestNotFoundError(m) => RegistryError::NotFound(format!("{r}: {m}")),
        E::DigestError(DigestError::VerificationError { expected, actual }) => {
            RegistryError::DigestMismatch { expected, actual }
        }
        E::RequestError(e) if e.is_timeout() => RegistryError::Timeout(format!("{r}: {e}")),
        E::RequestError(e) => RegistryError::Network(format!("{r}: {}", error_chain(&e))),
        E::IoError(e) => classify_io(e, &r.to_string()),
        E::ManifestParsingError(m) | E::VersionedParsingError(m) => RegistryError::InvalidManifest {
            digest: r.to_string(),
            why: m,
        },
        E::UnsupportedMediaTypeError(m) => RegistryError::InvalidManifest {
            digest: r.to_string(),
            why: format!("unsupported media type {m}"),
        },
        other => RegistryError::Network(format!("{r}: {other}")),
    }
}

fn classify_io(e: std::io::Error, what: &str) -> RegistryError {
    if let Some(inner) = e.get_ref() {
        if let Some(DigestError::VerificationError { expected, actual }) = inner.downcast_ref::<DigestError>()
        {
            return RegistryError::DigestMismatch {
                expected: expected.clone(),
                actual: actual.clone(),
            };
        }
        if let Some(re) = inner.downcast_ref::<reqwest::Error>()
            && re.is_timeout()
        {
            return RegistryError::Timeout(format!("{what}: {re}"));
        }
    }
    if e.kind() == std::io::ErrorKind::TimedOut {
        return RegistryError::Timeout(format!("{what}: {e}"));
    }
    RegistryError::Network(format!("{what}: {}", error_chain(&e)))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

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
    fn platform_choice_is_linux_amd64_variant_aware() {
        let entry = |d: &str, arch: &str, variant: Option<&str>| -> ImageIndexEntry {
            serde_json::from_value(serde_json::json!({
                "mediaType": oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
                "digest": d, "size": 1,
                "platform": {"os": "linux", "architecture": arch, "variant": variant}
            }))
            .unwrap()
        };
        let list = vec![
            entry("arm", "arm64", Some("v8")),
            entry("v3", "amd64", Some("v3")),
            entry("v2", "amd64", Some("v2")),
            entry("plain", "amd64", None),
        ];
        assert_eq!(pick_platform(&list).unwrap().digest, "plain");
        assert_eq!(pick_platform(&list[..3]).unwrap().digest, "v2");
        assert!(pick_platform(&list[..1]).is_none());
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
