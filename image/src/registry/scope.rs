//! Which endpoints may receive the credentials of a PullImage request.
//!
//! Invariants: CRI `AuthConfig` credentials belong to one registry host, the one its
//! `server_address` names (the image's own registry when empty). They are sent to an endpoint only
//! when that endpoint is the named host, or when it is an HTTPS mirror of the image's registry and
//! that registry's table says `send_credentials_to_mirrors = true` (and the credentials are the
//! registry's own). Plain HTTP carries them only to the named host itself.

use crate::reference::Endpoint;

/// The host `server_address` names, as image references spell it: scheme, path and a trailing
/// `/` dropped, lower-cased; Docker Hub's aliases (`index.docker.io`, `registry-1.docker.io`,
/// `https://index.docker.io/v1/`) are `docker.io`. Empty means "the image's registry".
pub fn named_host(server_address: &str, image_registry: &str) -> String {
    let s = server_address.trim();
    if s.is_empty() {
        return canonical(image_registry);
    }
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or_default();
    canonical(host)
}

/// `host` as credentials and TLS settings are keyed: lower-cased, Docker Hub's aliases `docker.io`.
pub(crate) fn canonical(host: &str) -> String {
    let h = host.to_ascii_lowercase();
    match h.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => h,
    }
}

/// Whether credentials named for `named` may be sent to `ep` while pulling an image of
/// `image_registry`, whose table allows HTTPS mirrors to receive them when `to_mirrors` is set.
pub fn may_send(named: &str, image_registry: &str, ep: &Endpoint, to_mirrors: bool) -> bool {
    if canonical(&ep.host) == named {
        return true;
    }
    to_mirrors && !ep.plain_http && named == canonical(image_registry)
}

/// Whether a token realm at `realm` may receive credentials named for `named`: over HTTPS, or
/// over plain HTTP only when the realm is the named host itself.
pub fn realm_may_get(named: &str, realm: &reqwest::Url) -> bool {
    if realm.scheme() == "https" {
        return true;
    }
    let authority = match (realm.host_str(), realm.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => return false,
    };
    canonical(&authority) == named
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str, plain_http: bool) -> Endpoint {
        Endpoint {
            host: host.into(),
            plain_http,
        }
    }

    #[test]
    fn server_address_names_one_host() {
        assert_eq!(named_host("", "quay.io"), "quay.io");
        assert_eq!(named_host("https://index.docker.io/v1/", "quay.io"), "docker.io");
        assert_eq!(named_host("http://127.0.0.1:5000/", "x"), "127.0.0.1:5000");
        assert_eq!(named_host("Mirror.Local:443", "x"), "mirror.local:443");
    }

    #[test]
    fn credentials_reach_the_named_host_and_opted_in_https_mirrors_only() {
        let reg = "registry.example";
        // The registry itself (the fallback endpoint), HTTPS or a loopback HTTP one.
        assert!(may_send(reg, reg, &ep(reg, false), false));
        assert!(may_send(
            "docker.io",
            "docker.io",
            &ep("index.docker.io", false),
            false
        ));
        // Mirrors: only with the registry's opt-in, only over HTTPS.
        assert!(!may_send(reg, reg, &ep("mirror.example", false), false));
        assert!(may_send(reg, reg, &ep("mirror.example", false), true));
        assert!(!may_send(reg, reg, &ep("mirror.example", true), true));
        // Credentials named for another host reach neither the registry nor its mirrors ...
        assert!(!may_send("other.example", reg, &ep(reg, false), true));
        assert!(!may_send(
            "other.example",
            reg,
            &ep("mirror.example", false),
            true
        ));
        // ... except that host itself, even in plain HTTP: it was named.
        assert!(may_send(
            "127.0.0.1:5000",
            reg,
            &ep("127.0.0.1:5000", true),
            false
        ));
    }

    #[test]
    fn token_realms_over_plain_http_must_be_the_named_host() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(realm_may_get("reg.example", &url("https://auth.example/token")));
        assert!(realm_may_get(
            "127.0.0.1:5000",
            &url("http://127.0.0.1:5000/token")
        ));
        assert!(!realm_may_get(
            "127.0.0.1:5000",
            &url("http://127.0.0.1:6000/token")
        ));
        assert!(!realm_may_get("reg.example", &url("http://auth.example/token")));
    }
}
