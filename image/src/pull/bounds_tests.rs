//! Hostile registries: bodies over their caps are refused while they are read (from the announced
//! Content-Length, or by counting when none is announced), with the cap error, leaving nothing.

use std::collections::BTreeMap;

use super::tests::{fixture, not_found, registry_error};
use super::*;
use crate::fake_registry::{FakeRegistry, Resp, TestImage};
use crate::registry::{MAX_ERROR_BODY_BYTES, MAX_MANIFEST_BYTES, MAX_TOKEN_BYTES};

fn too_large(e: &PullError, what_is: &str) {
    assert!(
        matches!(registry_error(e), RegistryError::TooLarge { what, .. } if *what == what_is),
        "{e}"
    );
}

#[tokio::test]
async fn oversized_manifests_are_refused_before_or_while_reading() {
    let over = vec![b' '; MAX_MANIFEST_BYTES as usize + 1];
    let reg = FakeRegistry::start(move |r| match r.path.as_str() {
        // Announces 1 GiB and sends 10 bytes: only a Content-Length check gives the cap error
        // (a reader would see the stream end early).
        p if p.starts_with("/v2/claims/") => Resp::new(200, "{}        ").claim_length(Some(1 << 30)),
        // No Content-Length: the cap is found by counting.
        p if p.starts_with("/v2/unannounced/") => Resp::new(200, over.clone()).claim_length(None),
        _ => not_found(),
    })
    .await;
    let f = fixture(BTreeMap::new());
    let creds = Credentials::default();
    for repo in ["claims", "unannounced"] {
        let e = f
            .store
            .pull(&format!("{}/{repo}:1", reg.addr), &creds)
            .await
            .unwrap_err();
        too_large(&e, "manifest");
    }
    assert!(f.leftovers().is_empty(), "{:?}", f.leftovers());
}

#[tokio::test]
async fn oversized_token_and_error_bodies_are_cut_off() {
    let addr = Arc::new(std::sync::OnceLock::<String>::new());
    let a = addr.clone();
    let reg = FakeRegistry::start(move |r| {
        let host = a.get().cloned().unwrap_or_default();
        if r.path.starts_with("/token") {
            return Resp::new(200, vec![b'{'; MAX_TOKEN_BYTES as usize + 1]).claim_length(None);
        }
        if r.path.starts_with("/v2/private/") {
            return Resp::new(401, "").header(
                "WWW-Authenticate",
                &format!("Bearer realm=\"http://{host}/token\""),
            );
        }
        // A 500 whose body never ends as far as a whole-body reader is concerned.
        Resp::new(500, vec![b'e'; 4 << 20]).claim_length(None)
    })
    .await;
    addr.set(reg.addr.clone()).unwrap();
    let f = fixture(BTreeMap::new());
    let creds = Credentials::default();
    let e = f
        .store
        .pull(&format!("{}/private:1", reg.addr), &creds)
        .await
        .unwrap_err();
    too_large(&e, "token response");
    let e = f
        .store
        .pull(&format!("{}/broken:1", reg.addr), &creds)
        .await
        .unwrap_err();
    match registry_error(&e) {
        RegistryError::Server { status: 500, message } => {
            assert!(
                message.contains(&format!("over the {MAX_ERROR_BODY_BYTES}-byte limit")),
                "{message}"
            );
            assert!(message.len() < 1024, "no body text kept: {} bytes", message.len());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn blobs_larger_than_their_descriptor_are_refused() {
    // The config blob is served with 1 KiB more than the manifest announces, with an honest
    // Content-Length (refused before reading) and without one (refused while writing).
    let img = Arc::new(TestImage::new("f", b"x", ""));
    for announce in [true, false] {
        let served = img.clone();
        let reg = FakeRegistry::start(move |r| {
            if r.path.ends_with(&served.config_digest()) {
                let mut body = served.config.clone();
                body.extend_from_slice(&[b' '; 1024]);
                let len = announce.then_some(body.len() as u64);
                return Resp::new(200, body).claim_length(len);
            }
            served.serve("app", "1", r).unwrap_or_else(not_found)
        })
        .await;
        let f = fixture(BTreeMap::new());
        let e = f
            .store
            .pull(&format!("{}/app:1", reg.addr), &Credentials::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                registry_error(&e),
                RegistryError::Content(crate::content::ContentError::SizeMismatch { .. })
            ),
            "{e}"
        );
        assert!(f.leftovers().is_empty(), "{:?}", f.leftovers());
    }
}

#[tokio::test]
async fn a_layer_with_a_huge_long_name_fails_the_pull_with_the_cap_error() {
    // An uncompressed layer: one GNU long-name header announcing 1 GiB, then end of archive.
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(tar::EntryType::GNULongName);
    h.set_size(1 << 30);
    h.set_cksum();
    let mut layer = h.as_bytes().to_vec();
    layer.resize(layer.len() + 1024, 0);
    let diff_id = crate::content::sha256_digest(&layer);
    let img = Arc::new(TestImage::from_parts(layer, diff_id, ""));
    let served = img.clone();
    let reg = FakeRegistry::start(move |r| served.serve("evil", "1", r).unwrap_or_else(not_found)).await;
    let f = fixture(BTreeMap::new());
    let e = f
        .store
        .pull(&format!("{}/evil:1", reg.addr), &Credentials::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            PullError::Layer {
                source: LayerError::Unpack(crate::unpack::UnpackError::TooLarge { .. }),
                ..
            }
        ),
        "{e}"
    );
    assert!(f.store.list().unwrap().is_empty());
    assert!(f.leftovers().is_empty(), "{:?}", f.leftovers());
}
