//! Registries that guard their content: Debian's `docker-registry` serving another registry's
//! storage over HTTPS (with a throwaway PKI made by `openssl`), optionally requiring a client
//! certificate, and/or HTTP basic auth. Each lives in its own temp dir, removed on drop with the
//! process killed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

/// bcrypt (cost 5) of [`PASSWORD`] for [`USER`]; fixed so tests need no htpasswd tool.
pub const HTPASSWD: &str = "crius:$2b$05$4mRaPaBA4GLf3CSpq2a06Op9y4JdTs/1Ub2ZZ4T20IoHh5DzWjL/G\n";
pub const USER: &str = "crius";
pub const PASSWORD: &str = "crius-secret";

/// A CA, a server certificate for `127.0.0.1` and `localhost`, and a client certificate (EC P-256,
/// valid two days), as PEM files in a temp dir.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    _dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("running openssl")?;
    ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl Pki {
    pub fn new() -> Result<Pki> {
        let dir = tempfile::Builder::new().prefix("crius-pki.").tempdir_in("/tmp")?;
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=crius-test-ca"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        ca.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        ca.extend(["-addext", "keyUsage=critical,keyCertSign"]);
        openssl(d, &ca)?;
        for (name, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            let (key, csr, pem, extfile) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            std::fs::write(d.join(&extfile), format!("{ext}basicConstraints=CA:FALSE\n"))?;
            let subj = format!("/CN=crius-test-{name}");
            let mut req = vec!["req", "-new", "-subj", subj.as_str()];
            req.extend(ec);
            req.extend(["-keyout", key.as_str(), "-out", csr.as_str()]);
            openssl(d, &req)?;
            let serial = format!("0x{:016x}", rand_serial());
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    csr.as_str(),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-set_serial",
                    serial.as_str(),
                    "-days",
                    "2",
                    "-extfile",
                    extfile.as_str(),
                    "-out",
                    pem.as_str(),
                ],
            )?;
        }
        Ok(Pki {
            ca: d.join("ca.pem"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            client_cert: d.join("client.pem"),
            client_key: d.join("client.key"),
            _dir: dir,
        })
    }
}

fn rand_serial() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32
}

/// What a [`SecureRegistry`] demands.
#[derive(Default)]
pub struct Guard<'a> {
    /// Serve HTTPS with this PKI's server certificate.
    pub tls: Option<&'a Pki>,
    /// Refuse TLS clients without a certificate signed by the PKI's CA (needs `tls`).
    pub client_certs: bool,
    /// Require HTTP basic auth as [`USER`]/[`PASSWORD`].
    pub basic_auth: bool,
}

pub struct SecureRegistry {
    /// `127.0.0.1:<port>`, as written in image references.
    pub addr: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl SecureRegistry {
    /// Serves `storage` (another registry's, e.g. [`crate::Registry::storage`]) as `guard` says.
    pub fn start(storage: &Path, guard: Guard) -> Result<SecureRegistry> {
        let dir = tempfile::Builder::new()
            .prefix("crius-securereg.")
            .tempdir_in("/tmp")?;
        let addr = format!("127.0.0.1:{}", crate::util::free_port());
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
            storage.display()
        );
        if guard.basic_auth {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, HTPASSWD)?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: crius-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        config.push_str(&format!("http:\n  addr: {addr}\n"));
        if let Some(pki) = guard.tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                pki.server_cert.display(),
                pki.server_key.display()
            ));
            if guard.client_certs {
                config.push_str(&format!("    clientcas:\n      - {}\n", pki.ca.display()));
            }
        }
        let path = dir.path().join("config.yml");
        std::fs::write(&path, config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry (apt-get install docker-registry)")?;
        let reg = SecureRegistry { addr, child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&reg.addr).is_err() {
            if Instant::now() > deadline {
                bail!("registry did not start on {}: {}", reg.addr, reg.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(reg)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for SecureRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
