//! PullImage with CRI credentials against a real registry that requires HTTP basic auth
//! (Debian's docker-registry with an htpasswd file, serving the fixture registry's storage).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crius_tests::images::{self, ImageSpec};
use crius_tests::{Daemon, Registry};
use k8s_cri::v1::*;

/// bcrypt (cost 5) of "crius-secret" for user "crius"; fixed so the test needs no htpasswd tool.
const HTPASSWD: &str = "crius:$2b$05$4mRaPaBA4GLf3CSpq2a06Op9y4JdTs/1Ub2ZZ4T20IoHh5DzWjL/G\n";

/// A second registry process over the same storage, requiring basic auth. Killed on drop.
struct AuthRegistry {
    addr: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl AuthRegistry {
    fn start(storage: &std::path::Path) -> AuthRegistry {
        let dir = tempfile::Builder::new()
            .prefix("crius-authreg.")
            .tempdir_in("/tmp")
            .unwrap();
        let addr = format!("127.0.0.1:{}", crius_tests::util::free_port());
        std::fs::write(dir.path().join("htpasswd"), HTPASSWD).unwrap();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 auth:\n  htpasswd:\n    realm: crius-test\n    path: {}\nhttp:\n  addr: {addr}\n",
                storage.display(),
                dir.path().join("htpasswd").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let reg = AuthRegistry { addr, child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&reg.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "auth registry did not start: {}",
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let auth_reg = AuthRegistry::start(&reg.storage());
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
