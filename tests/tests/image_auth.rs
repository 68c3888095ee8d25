//! PullImage with CRI credentials against a real registry that requires HTTP basic auth
//! (Debian's docker-registry with an htpasswd file, serving the fixture registry's storage), from
//! the request or from the node credentials file.

use crius_tests::images::{self, ImageSpec};
use crius_tests::secure_registry::{Guard, SecureRegistry};
use crius_tests::{Daemon, DaemonOptions, Registry};
use k8s_cri::v1::*;

fn basic_auth(storage: &std::path::Path) -> SecureRegistry {
    let guard = Guard {
        basic_auth: true,
        ..Default::default()
    };
    SecureRegistry::start(storage, guard).unwrap()
}

fn request(image: &str, auth: Option<AuthConfig>) -> PullImageRequest {
    PullImageRequest {
        image: Some(k8s_cri::v1::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        auth,
        ..Default::default()
    }
}

#[tokio::test]
async fn basic_auth_credentials_from_the_cri_request() {
    let reg = Registry::start().unwrap();
    let p = images::push(&reg, "private/busybox", "1", &ImageSpec::busybox())
        .await
        .unwrap();
    let auth_reg = basic_auth(&reg.storage());
    let mut d = Daemon::start().await.unwrap();
    let name = format!("{}/private/busybox:1", auth_reg.addr);

    let err = d.images.pull_image(request(&name, None)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let wrong = AuthConfig {
        username: "crius".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let err = d
        .images
        .pull_image(request(&name, Some(wrong)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");

    let right = AuthConfig {
        username: "crius".into(),
        password: "crius-secret".into(),
        ..Default::default()
    };
    let id = d
        .images
        .pull_image(request(&name, Some(right)))
        .await
        .unwrap()
        .into_inner()
        .image_ref;
    assert_eq!(id, p.config_digest);

    d.images
        .remove_image(RemoveImageRequest {
            image: Some(k8s_cri::v1::ImageSpec {
                image: id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    // base64("crius:crius-secret") in the `auth` field.
    let encoded = AuthConfig {
        auth: "Y3JpdXM6Y3JpdXMtc2VjcmV0".into(),
        ..Default::default()
    };
    let id = d
        .images
        .pull_image(request(&name, Some(encoded)))
        .await
        .unwrap()
        .into_inner()
        .image_ref;
    assert_eq!(id, p.config_digest, "{}", auth_reg.log());
}

fn remove(id: &str) -> RemoveImageRequest {
    RemoveImageRequest {
        image: Some(k8s_cri::v1::ImageSpec {
            image: id.to_string(),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn node_credentials_file_serves_requests_without_credentials() {
    let reg = Registry::start().unwrap();
    let p = images::push(&reg, "node/busybox", "1", &ImageSpec::busybox())
        .await
        .unwrap();
    let auth_reg = basic_auth(&reg.storage());
    let creds = tempfile::tempdir().unwrap();
    let file = creds.path().join("config.json");
    let mut d = Daemon::start_with(DaemonOptions {
        top_config: format!("registry_auth_file = {file:?}\n"),
        ..Default::default()
    })
    .await
    .unwrap();
    let name = format!("{}/node/busybox:1", auth_reg.addr);

    // No file yet: an anonymous pull, refused by the registry.
    let err = d.images.pull_image(request(&name, None)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    // A broken file: the pull fails naming it, without quoting it.
    std::fs::write(&file, "{\"auths\": {\"x\": {\"auth\": \"Y3JpdXM6").unwrap();
    let err = d.images.pull_image(request(&name, None)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(&file.display().to_string()), "{err:?}");
    assert!(!err.message().contains("Y3JpdXM6"), "{err:?}");

    // What `docker login` writes (the host as https://HOST/v1/), rewritten while the daemon runs.
    std::fs::write(
        &file,
        format!(
            r#"{{"auths":{{"https://{}/v1/":{{"auth":"Y3JpdXM6Y3JpdXMtc2VjcmV0"}}}}}}"#,
            auth_reg.addr
        ),
    )
    .unwrap();
    let id = d
        .images
        .pull_image(request(&name, None))
        .await
        .unwrap()
        .into_inner()
        .image_ref;
    assert_eq!(id, p.config_digest, "{}", auth_reg.log());

    // The request's own credentials win over the file's.
    d.images.remove_image(remove(&id)).await.unwrap();
    let wrong = AuthConfig {
        username: "crius".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let err = d
        .images
        .pull_image(request(&name, Some(wrong)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let log = d.log();
    assert!(
        !log.contains("crius-secret") && !log.contains("Y3JpdXM6Y3JpdXMtc2VjcmV0"),
        "secrets in the daemon log"
    );
}
