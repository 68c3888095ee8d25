//! HTTP for the distribution API: bounded body reads, the auth challenge/token flow and the
//! classification of a registry's error answers.
//!
//! Invariants: no response body is read whole without a cap: the announced Content-Length is
//! checked before reading, then the bytes are counted as they arrive and reading stops as soon as
//! the cap is passed (nothing read is kept). Credentials are attached only as the caller's
//! [`super::scope`] decision allows; a token realm gets them only over HTTPS or when it is the host
//! the credentials name. Redirects that leave the host drop the Authorization header (reqwest).

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;

use super::RegistryError;

/// Manifests and indexes larger than this are refused (containerd uses the same bound).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Token service answers larger than this are refused.
pub const MAX_TOKEN_BYTES: u64 = 1 << 20;
/// Error bodies are read up to this size, for their message; the rest is never read.
pub const MAX_ERROR_BODY_BYTES: u64 = 64 << 10;

/// Reads `resp`'s body, refusing it as soon as it is known to exceed `limit` bytes: from its
/// Content-Length before reading, else once the bytes read pass the limit.
pub async fn read_capped(
    resp: &mut reqwest::Response,
    limit: u64,
    what: &'static str,
) -> Result<Vec<u8>, RegistryError> {
    if let Some(len) = resp.content_length()
        && len > limit
    {
        return Err(RegistryError::TooLarge {
            what,
            limit,
            size: Some(len),
        });
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| net(what, &e))? {
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(RegistryError::TooLarge {
                what,
                limit,
                size: None,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A transport error as a [`RegistryError`]: a timeout, a refused certificate (rustls says
/// "certificate" in every such error: `invalid peer certificate: UnknownIssuer`, `received fatal
/// alert: CertificateRequired`), else a network failure.
pub fn net(what: &str, e: &reqwest::Error) -> RegistryError {
    let chain = error_chain(e);
    if e.is_timeout() {
        RegistryError::Timeout(format!("{what}: {chain}"))
    } else if chain.to_ascii_lowercase().contains("certificate") {
        RegistryError::Certificate(format!("{what}: {chain}"))
    } else {
        RegistryError::Network(format!("{what}: {chain}"))
    }
}

pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Turns a non-success answer into the error it means, keeping the registry's words (read from
/// at most [`MAX_ERROR_BODY_BYTES`] of its body).
pub async fn failure(mut resp: reqwest::Response, what: &str) -> RegistryError {
    let status = resp.status().as_u16();
    let url = resp.url().to_string();
    let words = match read_capped(&mut resp, MAX_ERROR_BODY_BYTES, "error body").await {
        Ok(body) => registry_words(&body),
        Err(RegistryError::TooLarge { limit, .. }) => format!("(error body over the {limit}-byte limit)"),
        Err(e) => format!("(error body unreadable: {e})"),
    };
    let code = envelope_code(&words);
    let msg = format!("{what}: {words} ({url})");
    match (status, code.as_deref()) {
        (401 | 403, _) | (_, Some("UNAUTHORIZED" | "DENIED")) => RegistryError::Unauthorized(msg),
        (404, _) => RegistryError::NotFound(msg),
        _ => RegistryError::Server { status, message: msg },
    }
}

#[derive(serde::Deserialize)]
struct Envelope {
    errors: Vec<OciError>,
}

#[derive(serde::Deserialize)]
struct OciError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The messages of an OCI error envelope (`CODE: message; ...`), else the body as text.
fn registry_words(body: &[u8]) -> String {
    if let Ok(env) = serde_json::from_slice::<Envelope>(body)
        && !env.errors.is_empty()
    {
        return env
            .errors
            .iter()
            .map(|e| match e.message.as_str() {
                "" => e.code.clone(),
                m => format!("{}: {m}", e.code),
            })
            .collect::<Vec<_>>()
            .join("; ");
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    // One line in a log or a gRPC message: a registry's HTML error page is cut short.
    let mut cut: String = text.chars().take(512).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut.replace(['\n', '\r'], " ")
}

fn envelope_code(words: &str) -> Option<String> {
    words.split(':').next().map(str::to_string)
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Lower-case scheme: `bearer` or `basic`.
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `Scheme k="v", k2=v2` (RFC 7235 auth-params, quoted strings with `\` escapes).
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            return None;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
        }
        params.push((key.trim().to_string(), value.trim().to_string()));
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

/// What answering `challenge` takes: the Authorization header value to retry with, or `None`
/// when these credentials cannot answer it. `realm_may_get_creds` says whether the token realm
/// may receive the credentials (see the module invariants).
pub async fn answer(
    http: &reqwest::Client,
    challenge: &Challenge,
    auth: &RegistryAuth,
    repository: &str,
    realm_may_get_creds: impl Fn(&reqwest::Url) -> bool,
) -> Result<Option<String>, RegistryError> {
    match (challenge.scheme.as_str(), auth) {
        ("basic", RegistryAuth::Basic(u, p)) => Ok(Some(basic(u, p))),
        ("bearer", RegistryAuth::Bearer(t)) => Ok(Some(format!("Bearer {t}"))),
        ("bearer", _) => {
            let realm = challenge
                .param("realm")
                .ok_or_else(|| RegistryError::Unauthorized("bearer challenge without a realm".into()))?;
            let mut url = reqwest::Url::parse(realm)
                .map_err(|e| RegistryError::Unauthorized(format!("token realm {realm:?}: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(RegistryError::Unauthorized(format!(
                    "token realm {realm:?} is not HTTP(S)"
                )));
            }
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("scope", &format!("repository:{repository}:pull"));
                if let Some(s) = challenge.param("service") {
                    q.append_pair("service", s);
                }
            }
            let mut req = http.get(url.clone());
            if let RegistryAuth::Basic(u, p) = auth {
                if realm_may_get_creds(&url) {
                    req = req.header(reqwest::header::AUTHORIZATION, basic(u, p));
                } else {
                    tracing::warn!(realm = %url, "not sending credentials to a plain-HTTP token realm on another host");
                }
            }
            let mut resp = req.send().await.map_err(|e| net("token request", &e))?;
            if !resp.status().is_success() {
                return Err(match failure(resp, "token request").await {
                    RegistryError::NotFound(m) | RegistryError::Server { message: m, .. } => {
                        RegistryError::Unauthorized(m)
                    }
                    other => other,
                });
            }
            let body = read_capped(&mut resp, MAX_TOKEN_BYTES, "token response").await?;
            #[derive(serde::Deserialize)]
            struct Token {
                #[serde(default)]
                token: String,
                #[serde(default)]
                access_token: String,
            }
            let t: Token = serde_json::from_slice(&body)
                .map_err(|e| RegistryError::Unauthorized(format!("token response is not JSON: {e}")))?;
            let t = if t.token.is_empty() {
                t.access_token
            } else {
                t.token
            };
            if t.is_empty() {
                return Err(RegistryError::Unauthorized(
                    "token response without a token".into(),
                ));
            }
            Ok(Some(format!("Bearer {t}")))
        }
        _ => Ok(None),
    }
}

fn basic(u: &str, p: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let c = parse_challenge(
            r#"Bearer realm="https://a.b/token",service="reg, \"x\"",scope=repository:x:pull"#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://a.b/token"));
        assert_eq!(c.param("service"), Some(r#"reg, "x""#));
        assert_eq!(c.param("scope"), Some("repository:x:pull"));
        assert_eq!(parse_challenge(r#"Basic realm="r""#).unwrap().scheme, "basic");
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn error_words_come_from_the_envelope_or_the_text() {
        assert_eq!(
            registry_words(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#),
            "MANIFEST_UNKNOWN: manifest unknown"
        );
        assert_eq!(registry_words(b" upstream\nis down "), "upstream is down");
        assert_eq!(registry_words(&[b'x'; 2000]).chars().count(), 513);
    }
}
