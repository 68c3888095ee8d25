//! The node credentials file: Docker's `config.json` format (what kubelet credential helpers and
//! `docker login` write), used for a pull whose CRI request carries no credentials.
//!
//! Invariants: the file is read with a cap ([`MAX_AUTH_FILE_BYTES`]) at each pull that needs it,
//! so a rewritten file takes effect at the next pull; a missing file means no credentials. The
//! credentials found are named for the image's own registry host, so they follow the same
//! confinement as request credentials ([`super::scope`]). Errors never quote the file's contents
//! (a parse error gives its position only): it holds secrets.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::Credentials;
use super::scope::named_host;

/// Credentials files larger than this are refused.
pub const MAX_AUTH_FILE_BYTES: u64 = 1 << 20;

/// Why the configured credentials file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("node credentials file {}: {why}", path.display())]
pub struct AuthFileError {
    pub path: PathBuf,
    pub why: String,
}

/// A parsed credentials file: `{"auths": {"HOST": {"auth": "base64(user:pass)"}}}`. Keys may be
/// written `HOST`, `HOST:PORT`, `https://HOST/v1/` or `HOST/path`; they are matched by host.
/// Other top-level keys (`credsStore`, `credHelpers`, `HttpHeaders`) are ignored.
pub struct AuthFile {
    auths: BTreeMap<String, Entry>,
}

#[derive(serde::Deserialize, Default)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

#[derive(serde::Deserialize)]
struct Document {
    #[serde(default)]
    auths: Option<BTreeMap<String, Entry>>,
}

/// Parses a credentials file's bytes. The error says where the file is wrong, not what it holds.
pub fn parse(bytes: &[u8]) -> Result<AuthFile, String> {
    let doc: Document = serde_json::from_slice(bytes).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not valid JSON",
            serde_json::error::Category::Data => "not a config.json (\"auths\" must map hosts to objects)",
            serde_json::error::Category::Eof => "truncated JSON",
        };
        format!("{what} at line {} column {}", e.line(), e.column())
    })?;
    Ok(AuthFile {
        auths: doc.auths.unwrap_or_default(),
    })
}

impl AuthFile {
    /// The credentials for images of `registry` (as written in image names): the entry whose key
    /// is exactly `registry`, else the first (in key order) whose key names the same host, as
    /// Docker matches `https://index.docker.io/v1/` to `docker.io`. `None`: no entry, or an empty
    /// one (Docker writes those when a credential store holds the secret).
    pub fn lookup(&self, registry: &str) -> Result<Option<Credentials>, String> {
        let wanted = named_host("", registry);
        let entry = self.auths.get(registry).or_else(|| {
            self.auths
                .iter()
                .find(|(k, _)| !k.trim().is_empty() && named_host(k, "") == wanted)
                .map(|(_, e)| e)
        });
        let Some(e) = entry else { return Ok(None) };
        let field = |f: &Option<String>| f.clone().unwrap_or_default();
        let creds = Credentials {
            username: field(&e.username),
            password: field(&e.password),
            auth: field(&e.auth),
            identity_token: field(&e.identitytoken),
            registry_token: field(&e.registrytoken),
            server_address: registry.to_string(),
        };
        if creds.is_empty() {
            return Ok(None);
        }
        if let Err(e) = creds.to_auth() {
            let why = match e {
                super::RegistryError::BadAuth(why) => why.to_string(),
                other => other.to_string(),
            };
            return Err(format!("the entry for {registry}: {why}"));
        }
        Ok(Some(creds))
    }
}

/// Reads and parses `path` (at most [`MAX_AUTH_FILE_BYTES`], counted while reading); `None` when
/// it does not exist. Blocking: call it off the async workers.
pub fn read(path: &Path) -> Result<Option<AuthFile>, AuthFileError> {
    let err = |why: String| AuthFileError {
        path: path.to_path_buf(),
        why,
    };
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(format!("cannot open: {e}"))),
    };
    let mut bytes = Vec::new();
    f.take(MAX_AUTH_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_AUTH_FILE_BYTES {
        return Err(err(format!("over the {MAX_AUTH_FILE_BYTES}-byte limit")));
    }
    parse(&bytes).map(Some).map_err(err)
}

#[cfg(test)]
mod tests {
    use oci_client::secrets::RegistryAuth;

    use super::*;

    fn auth_for(file: &str, registry: &str) -> Option<RegistryAuth> {
        let c = parse(file.as_bytes()).unwrap().lookup(registry).unwrap()?;
        assert_eq!(c.server_address, registry, "named for the image's registry");
        Some(c.to_auth().unwrap())
    }

    fn basic(u: &str, p: &str) -> Option<RegistryAuth> {
        Some(RegistryAuth::Basic(u.into(), p.into()))
    }

    #[test]
    fn entries_are_found_by_host_in_every_spelling() {
        // base64("u:p:w")
        let f = r#"{"auths":{
            "https://index.docker.io/v1/": {"auth": "dTpwOnc="},
            "quay.io": {"username": "q", "password": "s"},
            "http://127.0.0.1:5000": {"auth": "dTpwOnc="},
            "Reg.Example/team": {"identitytoken": "refresh"},
            "tok.example": {"registrytoken": "bearer"},
            "empty.example": {},
            "": {"auth": "dTpwOnc="}
        }, "credsStore": "desktop", "HttpHeaders": {"X": "y"}}"#;
        assert_eq!(auth_for(f, "docker.io"), basic("u", "p:w"));
        assert_eq!(auth_for(f, "quay.io"), basic("q", "s"));
        assert_eq!(auth_for(f, "127.0.0.1:5000"), basic("u", "p:w"));
        assert_eq!(auth_for(f, "reg.example"), basic("<token>", "refresh"));
        assert_eq!(
            auth_for(f, "tok.example"),
            Some(RegistryAuth::Bearer("bearer".into()))
        );
        assert_eq!(auth_for(f, "empty.example"), None);
        assert_eq!(
            auth_for(f, "127.0.0.1:5001"),
            None,
            "the port is part of the host"
        );
        assert_eq!(auth_for(f, "other.example"), None);
        assert_eq!(auth_for("{}", "quay.io"), None);
        assert_eq!(auth_for(r#"{"auths":null}"#, "quay.io"), None);
    }

    #[test]
    fn an_exact_key_wins_over_another_spelling() {
        let f = r#"{"auths":{"https://quay.io/v1/":{"username":"a","password":"1"},
                              "quay.io":{"username":"b","password":"2"}}}"#;
        assert_eq!(auth_for(f, "quay.io"), basic("b", "2"));
    }

    #[test]
    fn bad_files_are_refused_without_quoting_them() {
        for (text, why) in [
            ("{\"auths\": {\"q\": {\"auth\": \"sekrit\"", "truncated"),
            ("{\"auths\": \"sekrit\"}", "not a config.json"),
            ("{\"auths\": {\"q\": {\"password\": 7}}}", "not a config.json"),
            ("sekrit", "not valid JSON"),
        ] {
            let e = parse(text.as_bytes()).err().unwrap();
            assert!(e.contains(why) && e.contains("line 1"), "{text}: {e}");
            assert!(!e.contains("sekrit"), "{e}");
        }
        let f = parse(br#"{"auths":{"q.io":{"auth":"sekrit!"}}}"#).unwrap();
        let e = f.lookup("q.io").unwrap_err();
        assert!(
            e.contains("q.io") && e.contains("base64") && !e.contains("sekrit"),
            "{e}"
        );
    }

    #[test]
    fn reading_is_capped_and_a_missing_file_means_no_credentials() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&dir.path().join("absent.json")).unwrap().is_none());
        let big = dir.path().join("big.json");
        let mut text = String::from("{\"auths\":{},\"pad\":\"");
        text.push_str(&"x".repeat(MAX_AUTH_FILE_BYTES as usize));
        text.push_str("\"}");
        std::fs::write(&big, text).unwrap();
        let e = read(&big).err().unwrap().to_string();
        assert!(e.contains("big.json") && e.contains("limit"), "{e}");
        let e = read(dir.path()).err().unwrap().to_string();
        assert!(e.contains("cannot read"), "a directory: {e}");
        let ok = dir.path().join("config.json");
        std::fs::write(&ok, r#"{"auths":{"q.io":{"username":"u","password":"p"}}}"#).unwrap();
        assert!(read(&ok).unwrap().unwrap().lookup("q.io").unwrap().is_some());
    }
}
