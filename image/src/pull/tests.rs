//! Pulls against a scripted loopback registry: recording, indexes, typed failures that leave
//! nothing behind, token auth, mirror order.

use std::collections::BTreeMap;

use super::*;
use crate::fake_registry::{FakeRegistry, Resp, TestImage};
use crate::reference::{Mirror, RegistryHosts};
use crate::store::StoreConfig;

pub(super) struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: Arc<ImageStore>,
}

pub(super) fn fixture(hosts: BTreeMap<String, Mirror>) -> Fixture {
    fixture_for(hosts, None)
}

/// [`fixture`] pulling for `platform` (None: the host's).
pub(super) fn fixture_for(hosts: BTreeMap<String, Mirror>, platform: Option<crate::Platform>) -> Fixture {
    fixture_with(hosts, platform, |_| None)
}

/// [`fixture_for`] with the node credentials file `auth_file(store dir)`.
pub(super) fn fixture_with(
    hosts: BTreeMap<String, Mirror>,
    platform: Option<crate::Platform>,
    auth_file: impl FnOnce(&std::path::Path) -> Option<std::path::PathBuf>,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(redb::Database::create(dir.path().join("t.redb")).unwrap());
    let store = ImageStore::open(
        db,
        StoreConfig {
            root: dir.path().to_path_buf(),
            registries: RegistryHosts::new(hosts),
            pinned: Vec::new(),
            platform,
            auth_file: auth_file(dir.path()),
        },
    )
    .unwrap();
    Fixture { dir, store }
}

impl Fixture {
    /// Blobs and layer dirs on disk, temp files included.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for d in ["content/blobs/sha256", "layers"] {
            for e in std::fs::read_dir(self.dir.path().join(d)).unwrap().flatten() {
                out.push(format!("{d}/{}", e.file_name().to_string_lossy()));
            }
        }
        out
    }
}

pub(super) fn not_found() -> Resp {
    Resp::new(
        404,
        r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#,
    )
}

pub(super) fn registry_error(e: &PullError) -> &RegistryError {
    match e {
        PullError::Registry { source, .. } => source,
        other => panic!("not a registry error: {other:?}"),
    }
}

#[tokio::test]
async fn pulls_records_and_a_second_pull_fetches_no_blob() {
    let img = Arc::new(TestImage::new("hello.txt", b"hi", "1002"));
    let served = img.clone();
    let reg = FakeRegistry::start(move |r| served.serve("app", "1", r).unwrap_or_else(not_found)).await;
    let f = fixture(BTreeMap::new());
    let id = f
        .store
        .pull(&format!("{}/app:1", reg.addr), &Credentials::default())
        .await
        .unwrap();
    assert_eq!(id, img.config_digest());
    let rec = f.store.get(&id).unwrap().unwrap();
    assert_eq!(rec.repo_tags, vec![format!("{}/app:1", reg.addr)]);
    assert_eq!(
        rec.repo_digests,
        vec![format!("{}/app@{}", reg.addr, img.manifest_digest())]
    );
    assert_eq!(rec.user, "1002");
    assert_eq!(
        rec.size,
        (img.manifest.len() + img.config.len() + img.layer.len()) as u64
    );
    let dirs = f.store.layer_dirs(&id).unwrap();
    assert_eq!(
        dirs,
        vec![f.store.layer_path(&img.diff_id).unwrap()],
        "one layer: chain ID = diff ID"
    );
    // The test tar leaves uid/gid/mtime empty, as some Go tools do: read as 0.
    assert_eq!(std::fs::read(dirs[0].join("hello.txt")).unwrap(), b"hi");
    let fetched = (img.config.len() + img.layer.len()) as u64;
    assert_eq!(f.store.fetched_bytes(), fetched, "config and layer downloaded");
    // The layer was unpacked while it downloaded; its blob was still committed to the store.
    for blob in &rec.blobs {
        assert!(f.store.content().contains(blob), "{blob} is in the content store");
    }

    let blob_gets = |reg: &FakeRegistry| reg.paths().iter().filter(|p| p.contains("/blobs/")).count();
    let before = blob_gets(&reg);
    f.store
        .pull(&format!("{}/app:1", reg.addr), &Credentials::default())
        .await
        .unwrap();
    assert_eq!(blob_gets(&reg), before, "everything was already local");
    assert_eq!(f.store.fetched_bytes(), fetched, "nothing downloaded again");
}

#[tokio::test]
async fn an_index_resolves_to_linux_amd64_and_records_the_index_digest() {
    let amd = Arc::new(TestImage::new("arch", b"amd64", ""));
    let arm = TestImage::new("arch", b"arm64", "");
    let entry = |m: &TestImage, arch: &str| {
        serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": m.manifest_digest(), "size": m.manifest.len(),
            "platform": {"os": "linux", "architecture": arch}})
    };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&arm, "arm64"), entry(&amd, "amd64")],
    }))
    .unwrap();
    let index_digest = crate::content::sha256_digest(&index);
    let served = amd.clone();
    let idx = index.clone();
    let reg = FakeRegistry::start(move |r| {
        if r.path == "/v2/multi/manifests/latest" {
            return Resp::new(200, idx.clone())
                .header("Content-Type", "application/vnd.oci.image.index.v1+json");
        }
        served.serve("multi", "unused", r).unwrap_or_else(not_found)
    })
    .await;
    // Explicit, so the expectation holds on any host.
    let f = fixture_for(BTreeMap::new(), Some("linux/amd64".parse().unwrap()));
    let id = f
        .store
        .pull(&format!("{}/multi", reg.addr), &Credentials::default())
        .await
        .unwrap();
    assert_eq!(id, amd.config_digest());
    let rec = f
        .store
        .get(&format!("{}/multi:latest", reg.addr))
        .unwrap()
        .unwrap();
    assert_eq!(
        rec.repo_digests,
        vec![format!("{}/multi@{index_digest}", reg.addr)]
    );
    assert!(f.store.content().contains(&index_digest));
    assert!(!reg.paths().iter().any(|p| p.ends_with(&arm.manifest_digest())));
}

#[tokio::test]
async fn registry_failures_are_typed_and_leave_nothing() {
    let huge = vec![b' '; MAX_MANIFEST_BYTES_FOR_TEST + 1];
    let reg = FakeRegistry::start(move |r| match r.path.as_str() {
        "/v2/" => Resp::new(200, "{}"),
        p if p.starts_with("/v2/five/") => Resp::new(503, "upstream is down"),
        p if p.starts_with("/v2/huge/") => Resp::new(200, huge.clone()),
        _ => not_found(),
    })
    .await;
    let f = fixture(BTreeMap::new());
    let creds = Credentials::default();
    let e = f
        .store
        .pull(&format!("{}/missing:1", reg.addr), &creds)
        .await
        .unwrap_err();
    assert!(
        matches!(registry_error(&e), RegistryError::NotFound(m) if m.contains("manifest unknown")),
        "{e}"
    );
    let e = f
        .store
        .pull(&format!("{}/five:1", reg.addr), &creds)
        .await
        .unwrap_err();
    assert!(
        matches!(registry_error(&e), RegistryError::Server { status: 503, message } if message.contains("upstream is down")),
        "{e}"
    );
    let e = f
        .store
        .pull(&format!("{}/huge:1", reg.addr), &creds)
        .await
        .unwrap_err();
    assert!(
        matches!(
            registry_error(&e),
            RegistryError::TooLarge { what: "manifest", .. }
        ),
        "{e}"
    );
    assert!(f.leftovers().is_empty(), "{:?}", f.leftovers());
}

const MAX_MANIFEST_BYTES_FOR_TEST: usize = crate::registry::MAX_MANIFEST_BYTES as usize;

#[tokio::test]
async fn lying_manifests_and_layers_are_rejected_without_a_trace() {
    let good = Arc::new(TestImage::new("f", b"x", ""));
    // A config whose diff ID does not match the layer.
    let bad_diff = Arc::new(TestImage::from_parts(
        good.layer.clone(),
        crate::content::sha256_digest(b"another tar"),
        "",
    ));
    let (g, b) = (good.clone(), bad_diff.clone());
    let reg = FakeRegistry::start(move |r| {
        if r.path.starts_with("/v2/lies/manifests/sha256:") {
            // Asked by digest, answers with other content.
            return Resp::new(200, g.manifest.clone())
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json");
        }
        b.serve("diff", "1", r).unwrap_or_else(not_found)
    })
    .await;
    let f = fixture(BTreeMap::new());
    let creds = Credentials::default();
    let wanted = crate::content::sha256_digest(b"something else");
    let e = f
        .store
        .pull(&format!("{}/lies@{wanted}", reg.addr), &creds)
        .await
        .unwrap_err();
    assert!(
        matches!(registry_error(&e), RegistryError::DigestMismatch { .. }),
        "{e}"
    );

    let e = f
        .store
        .pull(&format!("{}/diff:1", reg.addr), &creds)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            PullError::Layer {
                source: LayerError::Unpack(crate::unpack::UnpackError::DiffIdMismatch { .. }),
                ..
            }
        ),
        "{e}"
    );
    assert!(f.store.list().unwrap().is_empty());
    assert!(f.leftovers().is_empty(), "{:?}", f.leftovers());
}

#[tokio::test]
async fn bearer_token_flow_uses_the_cri_credentials() {
    let img = Arc::new(TestImage::new("secret", b"s", ""));
    let served = img.clone();
    let addr = Arc::new(std::sync::OnceLock::<String>::new());
    let a = addr.clone();
    let reg = FakeRegistry::start(move |r| {
        let challenge = format!(
            "Bearer realm=\"http://{}/token\",service=\"fake\"",
            a.get().map(String::as_str).unwrap_or_default()
        );
        let unauthorized = || {
            Resp::new(
                401,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            )
            .header("WWW-Authenticate", &challenge)
        };
        if r.path.starts_with("/token") {
            // base64("user:pass")
            return if r.headers.get("authorization").map(String::as_str) == Some("Basic dXNlcjpwYXNz") {
                Resp::new(200, r#"{"token":"good-token"}"#)
            } else {
                Resp::new(401, "bad credentials")
            };
        }
        if r.headers.get("authorization").map(String::as_str) != Some("Bearer good-token") {
            return unauthorized();
        }
        served.serve("private", "1", r).unwrap_or_else(not_found)
    })
    .await;
    addr.set(reg.addr.clone()).unwrap();
    let f = fixture(BTreeMap::new());
    let name = format!("{}/private:1", reg.addr);

    let e = f.store.pull(&name, &Credentials::default()).await.unwrap_err();
    assert!(
        matches!(registry_error(&e), RegistryError::Unauthorized(_)),
        "{e}"
    );
    let wrong = Credentials {
        username: "user".into(),
        password: "nope".into(),
        ..Default::default()
    };
    let e = f.store.pull(&name, &wrong).await.unwrap_err();
    assert!(
        matches!(registry_error(&e), RegistryError::Unauthorized(_)),
        "{e}"
    );

    let right = Credentials {
        auth: "dXNlcjpwYXNz".into(),
        ..Default::default()
    };
    assert_eq!(f.store.pull(&name, &right).await.unwrap(), img.config_digest());
    f.store.remove(&name).unwrap();
    let token = Credentials {
        registry_token: "good-token".into(),
        ..Default::default()
    };
    assert_eq!(f.store.pull(&name, &token).await.unwrap(), img.config_digest());
}

#[tokio::test]
async fn mirrors_are_tried_in_order_and_the_requested_name_is_recorded() {
    let img = Arc::new(TestImage::new("m", b"m", ""));
    let empty = FakeRegistry::start(|_| not_found()).await;
    let served = img.clone();
    let full = FakeRegistry::start(move |r| served.serve("team/app", "2", r).unwrap_or_else(not_found)).await;
    let host = "registry.example.invalid";
    let mut hosts = BTreeMap::new();
    hosts.insert(
        host.to_string(),
        Mirror {
            endpoints: vec![format!("http://{}", empty.addr), format!("http://{}", full.addr)],
            fallback: false,
            send_credentials_to_mirrors: false,
            tls: Default::default(),
        },
    );
    let f = fixture(hosts);
    let id = f
        .store
        .pull(&format!("{host}/team/app:2"), &Credentials::default())
        .await
        .unwrap();
    assert_eq!(id, img.config_digest());
    assert!(
        empty.paths().iter().any(|p| p == "/v2/team/app/manifests/2"),
        "first mirror asked first"
    );
    let rec = f.store.get(&id).unwrap().unwrap();
    assert_eq!(rec.repo_tags, vec![format!("{host}/team/app:2")]);
    let e = f
        .store
        .pull(&format!("{host}/team/app:3"), &Credentials::default())
        .await
        .unwrap_err();
    assert!(matches!(registry_error(&e), RegistryError::NotFound(_)), "{e}");
}

#[tokio::test]
async fn an_uncompressed_layer_whose_digest_is_its_chain_id_pulls() {
    // Regression: blob and layer locks once shared one key space, and this layer deadlocked.
    let img = Arc::new(TestImage::uncompressed("raw", b"r"));
    assert_eq!(crate::content::sha256_digest(&img.layer), img.diff_id);
    let served = img.clone();
    let reg = FakeRegistry::start(move |r| served.serve("raw", "1", r).unwrap_or_else(not_found)).await;
    let f = fixture(BTreeMap::new());
    let (name, creds) = (format!("{}/raw:1", reg.addr), Credentials::default());
    // A hang guard, not a speed check: a deadlock fails the test instead of stalling CI.
    let id = tokio::time::timeout(std::time::Duration::from_secs(120), f.store.pull(&name, &creds))
        .await
        .expect("pull deadlocked")
        .unwrap();
    assert_eq!(id, img.config_digest());
}
