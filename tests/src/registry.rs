//! A real local registry: Debian's `docker-registry` serving plain HTTP on 127.0.0.1 on a free
//! port, with its own storage directory. Dropping it stops the process and removes the storage.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub struct Registry {
    /// `127.0.0.1:<port>`, as written in image references.
    pub addr: String,
    dir: PathBuf,
    child: Child,
}

impl Registry {
    pub fn start() -> Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("crius-registry.")
            .tempdir_in("/tmp")?
            .keep();
        let port = crate::util::free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  \
                 filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.join("data").display()
            ),
        )?;
        let log = std::fs::File::create(dir.join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry (apt-get install docker-registry)")?;
        let reg = Registry { addr, dir, child };
        reg.wait_ready()?;
        Ok(reg)
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(status) = self.get_status("/v2/")
                && status == 200
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "docker-registry did not answer on {}; log:\n{}",
            self.addr,
            self.log()
        )
    }

    /// HTTP status of a GET on the registry (a tiny client: no dependency, loopback only).
    pub fn get_status(&self, path: &str) -> Result<u16> {
        let mut s = std::net::TcpStream::connect(&self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr)?;
        let mut buf = [0u8; 32];
        let n = s.read(&mut buf)?;
        let line = String::from_utf8_lossy(&buf[..n]);
        let code = line.split(' ').nth(1).context("no status line")?.parse()?;
        Ok(code)
    }

    /// Where the registry keeps its data (tests corrupt blobs here).
    pub fn storage(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
