//! Where PullImage credentials go: a registry that records every Authorization header it gets.

use std::collections::BTreeMap;

use super::tests::{fixture, not_found, registry_error};
use super::*;
use crate::fake_registry::{FakeRegistry, Req, Resp, TestImage};
use crate::reference::Mirror;

const BASIC_USER_PASS: &str = "Basic dXNlcjpwYXNz";

fn creds(server_address: &str) -> Credentials {
    Credentials {
        username: "user".into(),
        password: "pass".into(),
        server_address: server_address.into(),
        ..Default::default()
    }
}

fn authorizations(reg: &FakeRegistry) -> Vec<String> {
    reg.requests
        .lock()
        .unwrap()
        .iter()
        .filter_map(|r| r.headers.get("authorization").cloned())
        .collect()
}

/// Serves `img` as `app:1` only to requests carrying user:pass (HTTP basic auth).
fn basic_protected(img: Arc<TestImage>) -> impl Fn(&Req) -> Resp + Send + Sync + 'static {
    move |r| {
        if r.headers.get("authorization").map(String::as_str) != Some(BASIC_USER_PASS) {
            return Resp::new(401, "").header("WWW-Authenticate", "Basic realm=\"fake\"");
        }
        img.serve("app", "1", r).unwrap_or_else(not_found)
    }
}

#[tokio::test]
async fn credentials_go_to_the_host_they_name_and_nowhere_else() {
    let img = Arc::new(TestImage::new("f", b"x", ""));
    let reg = FakeRegistry::start(basic_protected(img.clone())).await;
    let name = format!("{}/app:1", reg.addr);

    // Named for another registry: never sent here, so the pull is refused.
    let f = fixture(BTreeMap::new());
    let e = f.store.pull(&name, &creds("other.example")).await.unwrap_err();
    assert!(
        matches!(registry_error(&e), RegistryError::Unauthorized(_)),
        "{e}"
    );
    assert!(authorizations(&reg).is_empty(), "{:?}", authorizations(&reg));

    // Named for this host (any spelling of it), or unnamed (the image's own registry): sent.
    for server in [String::new(), format!("http://{}/", reg.addr)] {
        let f = fixture(BTreeMap::new());
        assert_eq!(
            f.store.pull(&name, &creds(&server)).await.unwrap(),
            img.config_digest()
        );
    }
    assert!(authorizations(&reg).iter().all(|a| a == BASIC_USER_PASS));
}

#[tokio::test]
async fn plain_http_mirrors_never_get_the_registrys_credentials() {
    let img = Arc::new(TestImage::new("m", b"m", ""));
    let served = img.clone();
    let mirror = FakeRegistry::start(move |r| served.serve("app", "1", r).unwrap_or_else(not_found)).await;
    let host = "registry.example.invalid";
    let hosts = |to_mirrors| {
        let mut h = BTreeMap::new();
        h.insert(
            host.to_string(),
            Mirror {
                endpoints: vec![format!("http://{}", mirror.addr)],
                fallback: false,
                send_credentials_to_mirrors: to_mirrors,
                tls: Default::default(),
            },
        );
        h
    };
    // Even with the opt-in: the mirror speaks plain HTTP and is not the host the credentials name.
    for (to_mirrors, server) in [(false, ""), (true, ""), (true, host)] {
        let f = fixture(hosts(to_mirrors));
        let id = f
            .store
            .pull(&format!("{host}/app:1"), &creds(server))
            .await
            .unwrap();
        assert_eq!(id, img.config_digest());
    }
    assert!(
        authorizations(&mirror).is_empty(),
        "{:?}",
        authorizations(&mirror)
    );
}

#[tokio::test]
async fn a_mirror_named_by_server_address_gets_the_credentials() {
    let img = Arc::new(TestImage::new("f", b"x", ""));
    let mirror = FakeRegistry::start(basic_protected(img.clone())).await;
    let host = "registry.example.invalid";
    let mut hosts = BTreeMap::new();
    hosts.insert(
        host.to_string(),
        Mirror {
            endpoints: vec![format!("http://{}", mirror.addr)],
            fallback: false,
            send_credentials_to_mirrors: false,
            tls: Default::default(),
        },
    );
    let f = fixture(hosts);
    let id = f
        .store
        .pull(&format!("{host}/app:1"), &creds(&mirror.addr))
        .await
        .unwrap();
    assert_eq!(id, img.config_digest());
    assert!(authorizations(&mirror).iter().any(|a| a == BASIC_USER_PASS));
}

#[tokio::test]
async fn a_plain_http_token_realm_on_another_host_gets_no_credentials() {
    let img = Arc::new(TestImage::new("t", b"t", ""));
    let realm = FakeRegistry::start(|r| {
        if r.headers.contains_key("authorization") {
            Resp::new(200, r#"{"token":"with-creds"}"#)
        } else {
            Resp::new(200, r#"{"token":"anonymous"}"#)
        }
    })
    .await;
    let realm_url = format!("http://{}/token", realm.addr);
    let served = img.clone();
    let reg = FakeRegistry::start(move |r| {
        if r.headers.get("authorization").map(String::as_str) != Some("Bearer anonymous") {
            return Resp::new(401, "").header("WWW-Authenticate", &format!("Bearer realm=\"{realm_url}\""));
        }
        served.serve("app", "1", r).unwrap_or_else(not_found)
    })
    .await;
    let f = fixture(BTreeMap::new());
    let id = f
        .store
        .pull(&format!("{}/app:1", reg.addr), &creds(""))
        .await
        .unwrap();
    assert_eq!(id, img.config_digest());
    assert!(!realm.paths().is_empty(), "the realm was asked for a token");
    assert!(authorizations(&realm).is_empty(), "{:?}", authorizations(&realm));
}

/// A store whose node credentials file is `<store dir>/config.json`.
fn with_auth_file(hosts: BTreeMap<String, Mirror>) -> (super::tests::Fixture, std::path::PathBuf) {
    let f = super::tests::fixture_with(hosts, None, |d| Some(d.join("config.json")));
    let path = f.dir.path().join("config.json");
    (f, path)
}

#[tokio::test]
async fn the_node_credentials_file_serves_requests_without_credentials() {
    let img = Arc::new(TestImage::new("n", b"n", ""));
    let reg = FakeRegistry::start(basic_protected(img.clone())).await;
    let name = format!("{}/app:1", reg.addr);
    let (f, path) = with_auth_file(BTreeMap::new());
    let file = |user_pass: &str| {
        let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, user_pass);
        std::fs::write(
            &path,
            format!(r#"{{"auths":{{"http://{}/v1/":{{"auth":"{auth}"}}}}}}"#, reg.addr),
        )
        .unwrap();
    };
    let unauthorized = |e: PullError| matches!(registry_error(&e), RegistryError::Unauthorized(_));

    // No file yet: anonymous.
    assert!(unauthorized(
        f.store.pull(&name, &Credentials::default()).await.unwrap_err()
    ));
    // Wrong in the file; the request's own credentials win over it.
    file("user:wrong");
    assert!(unauthorized(
        f.store.pull(&name, &Credentials::default()).await.unwrap_err()
    ));
    assert_eq!(
        f.store.pull(&name, &creds("")).await.unwrap(),
        img.config_digest()
    );
    // Rewritten: the next pull reads it again.
    f.store.remove(&img.config_digest()).unwrap();
    file("user:pass");
    assert_eq!(
        f.store.pull(&name, &Credentials::default()).await.unwrap(),
        img.config_digest()
    );
    let wrong = Credentials {
        password: "wrong".into(),
        ..creds("")
    };
    f.store.remove(&img.config_digest()).unwrap();
    assert!(unauthorized(f.store.pull(&name, &wrong).await.unwrap_err()));
    assert!(authorizations(&reg).contains(&BASIC_USER_PASS.to_string()));

    // Unusable: the pull fails naming the file, and nothing was asked of the registry.
    let asked = reg.requests.lock().unwrap().len();
    for bad in ["{\"auths\":", "{\"auths\":{\"x\":{\"auth\":\"%%\"}}}"] {
        std::fs::write(&path, bad.replace('x', &reg.addr)).unwrap();
        let e = f.store.pull(&name, &Credentials::default()).await.unwrap_err();
        assert!(matches!(e, PullError::AuthFile(_)), "{e:?}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }
    assert_eq!(reg.requests.lock().unwrap().len(), asked);
}

#[tokio::test]
async fn the_node_credentials_file_follows_the_same_confinement() {
    let img = Arc::new(TestImage::new("c", b"c", ""));
    let served = img.clone();
    let mirror = FakeRegistry::start(move |r| served.serve("app", "1", r).unwrap_or_else(not_found)).await;
    let host = "registry.example.invalid";
    let mut hosts = BTreeMap::new();
    hosts.insert(
        host.to_string(),
        Mirror {
            endpoints: vec![format!("http://{}", mirror.addr)],
            fallback: false,
            send_credentials_to_mirrors: true,
            tls: Default::default(),
        },
    );
    let (f, path) = with_auth_file(hosts);
    // The registry's entry: its plain-HTTP mirror never gets it, even with the opt-in.
    std::fs::write(
        &path,
        format!(r#"{{"auths":{{"{host}":{{"username":"user","password":"pass"}}}}}}"#),
    )
    .unwrap();
    let id = f
        .store
        .pull(&format!("{host}/app:1"), &Credentials::default())
        .await
        .unwrap();
    assert_eq!(id, img.config_digest());
    assert!(
        authorizations(&mirror).is_empty(),
        "{:?}",
        authorizations(&mirror)
    );
}
