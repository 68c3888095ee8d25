//! PullImage from registries over HTTPS with a private CA (`ca_file`, `insecure_skip_verify`) and
//! client certificates (`cert_file`/`key_file`), against Debian's docker-registry with a PKI the
//! test makes with `openssl`; and a daemon that refuses TLS files it cannot use.

use std::process::Stdio;
use std::time::Duration;

use crius_tests::images::{self, ImageSpec};
use crius_tests::secure_registry::{Guard, PASSWORD, Pki, SecureRegistry, USER};
use crius_tests::{Daemon, DaemonOptions, Registry, util};
use k8s_cri::v1::*;

/// A certificate problem is found in the handshake: far sooner than this.
const NO_HANG: Duration = Duration::from_secs(60);

/// A daemon whose `[registry."<addr>"]` table holds `keys`.
async fn daemon(addr: &str, keys: &str) -> Daemon {
    Daemon::start_with(DaemonOptions {
        extra_config: format!("[registry.\"{addr}\"]\n{keys}"),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn pull(d: &mut Daemon, image: &str, auth: Option<AuthConfig>) -> Result<String, tonic::Status> {
    let req = PullImageRequest {
        image: Some(k8s_cri::v1::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        auth,
        ..Default::default()
    };
    let resp = tokio::time::timeout(NO_HANG, d.images.pull_image(req))
        .await
        .expect("the pull hung")?;
    Ok(resp.into_inner().image_ref)
}

fn login() -> Option<AuthConfig> {
    Some(AuthConfig {
        username: USER.into(),
        password: PASSWORD.into(),
        ..Default::default()
    })
}

#[tokio::test]
async fn https_registry_is_trusted_through_its_ca_file() {
    let plain = Registry::start().unwrap();
    let p = images::push(&plain, "tls/busybox", "1", &ImageSpec::busybox())
        .await
        .unwrap();
    let pki = Pki::new().unwrap();
    let guard = Guard {
        tls: Some(&pki),
        basic_auth: true,
        ..Default::default()
    };
    let reg = SecureRegistry::start(&plain.storage(), guard).unwrap();
    let name = format!("{}/tls/busybox:1", reg.addr);

    // Without the CA the handshake fails on the certificate, and the error says so.
    let mut d = daemon(
        &reg.addr,
        &format!("endpoints = [\"https://{}\"]\nfallback = false\n", reg.addr),
    )
    .await;
    let err = pull(&mut d, &name, login()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("UnknownIssuer") && err.message().contains("ca_file"),
        "{err:?}"
    );
    drop(d);

    // With it (the table alone makes this loopback host HTTPS): basic auth over TLS.
    let mut d = daemon(&reg.addr, &format!("ca_file = {:?}\n", pki.ca)).await;
    let err = pull(&mut d, &name, None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let id = pull(&mut d, &name, login()).await.unwrap();
    assert_eq!(id, p.config_digest, "{}", reg.log());
    drop(d);

    // Not verifying at all also gets through (the daemon warns about it at start).
    let mut d = daemon(&reg.addr, "insecure_skip_verify = true\n").await;
    let id = pull(&mut d, &name, login()).await.unwrap();
    assert_eq!(id, p.config_digest);
    assert!(d.log().contains("insecure_skip_verify"), "{}", d.log());
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let plain = Registry::start().unwrap();
    let p = images::push(&plain, "mtls/busybox", "1", &ImageSpec::busybox())
        .await
        .unwrap();
    let pki = Pki::new().unwrap();
    let guard = Guard {
        tls: Some(&pki),
        client_certs: true,
        ..Default::default()
    };
    let reg = SecureRegistry::start(&plain.storage(), guard).unwrap();
    let name = format!("{}/mtls/busybox:1", reg.addr);
    let ca = format!("ca_file = {:?}\n", pki.ca);

    let mut d = daemon(&reg.addr, &ca).await;
    let err = pull(&mut d, &name, None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().to_ascii_lowercase().contains("certificate"),
        "{err:?}"
    );
    drop(d);

    let keys = format!(
        "{ca}cert_file = {:?}\nkey_file = {:?}\n",
        pki.client_cert, pki.client_key
    );
    let mut d = daemon(&reg.addr, &keys).await;
    let id = pull(&mut d, &name, None).await.unwrap();
    assert_eq!(id, p.config_digest, "{}", reg.log());
}

/// Runs `crius` on a config of `table` for host `r`; its exit code and stderr.
fn run_with_table(table: &str) -> (i32, String) {
    let dir = tempfile::Builder::new()
        .prefix("crius-tlscfg.")
        .tempdir_in("/tmp")
        .unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, format!("[registry.\"r\"]\n{table}")).unwrap();
    let mut child = std::process::Command::new(util::bin("crius"))
        .arg("--config")
        .arg(&path)
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--listen")
        .arg(dir.path().join("state/crius.sock"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A daemon that accepted the config would serve forever: give it a bounded time.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("crius started with {table:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.code().unwrap_or(-1), err)
}

#[test]
fn unusable_tls_files_stop_the_daemon_naming_the_key() {
    util::require_root();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not PEM\n").unwrap();
    let missing = dir.path().join("missing.pem");
    for (table, named) in [
        (format!("ca_file = {missing:?}\n"), "`registry.\"r\".ca_file`"),
        (format!("ca_file = {junk:?}\n"), "`registry.\"r\".ca_file`"),
        (
            format!("key_file = {junk:?}\n"),
            "`registry.\"r\".key_file` needs `cert_file`",
        ),
        (
            format!("cert_file = {junk:?}\nkey_file = {junk:?}\n"),
            "`registry.\"r\".cert_file`",
        ),
    ] {
        let (code, err) = run_with_table(&table);
        assert_eq!(code, 2, "{table}: {err}");
        assert!(err.contains(named), "{table}: {err}");
    }
}
