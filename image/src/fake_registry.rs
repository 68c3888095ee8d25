//! Test only: a tiny HTTP/1.1 registry on 127.0.0.1 whose answers each test scripts, for the
//! cases a real registry will not produce (5xx, huge or lying manifests and bodies, token auth);
//! every request is recorded with its headers, so tests can see where credentials went.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One parsed request.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
}

/// One scripted answer.
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The Content-Length sent: `Some(n)` (default: the body's length) or none at all (the body
    /// then ends when the connection closes).
    pub length: Option<u64>,
}

impl Resp {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Resp {
        let body = body.into();
        Resp {
            status,
            headers: Vec::new(),
            length: Some(body.len() as u64),
            body,
        }
    }

    /// Announces `length` whatever the body is (a lie, or a stream cut short).
    pub fn claim_length(mut self, length: Option<u64>) -> Resp {
        self.length = length;
        self
    }

    pub fn header(mut self, k: &str, v: &str) -> Resp {
        self.headers.push((k.into(), v.into()));
        self
    }
}

type Handler = dyn Fn(&Req) -> Resp + Send + Sync;

pub struct FakeRegistry {
    pub addr: String,
    pub requests: Arc<Mutex<Vec<Req>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeRegistry {
    pub async fn start(handler: impl Fn(&Req) -> Resp + Send + Sync + 'static) -> FakeRegistry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handler: Arc<Handler> = Arc::new(handler);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (handler, log) = (handler.clone(), log.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let mut lines = head.split("\r\n");
                    let mut first = lines.next().unwrap_or_default().split(' ');
                    let req = Req {
                        method: first.next().unwrap_or_default().to_string(),
                        path: first.next().unwrap_or_default().to_string(),
                        headers: lines
                            .filter_map(|l| l.split_once(':'))
                            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                            .collect(),
                    };
                    log.lock().unwrap().push(req.clone());
                    let resp = handler(&req);
                    let mut out = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", resp.status);
                    if let Some(n) = resp.length {
                        out.push_str(&format!("Content-Length: {n}\r\n"));
                    }
                    for (k, v) in &resp.headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    let _ = sock.write_all(out.as_bytes()).await;
                    if req.method != "HEAD" {
                        let _ = sock.write_all(&resp.body).await;
                    }
                    let _ = sock.shutdown().await;
                });
            }
        });
        FakeRegistry { addr, requests, task }
    }

    /// Paths requested so far.
    pub fn paths(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.path.clone())
            .collect()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A one-layer test image: (gzipped layer, diff ID, config JSON, manifest JSON).
pub struct TestImage {
    pub layer: Vec<u8>,
    pub diff_id: String,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

impl TestImage {
    pub fn new(file: &str, contents: &[u8], user: &str) -> TestImage {
        use std::io::Write;
        let (tar, diff_id) = Self::tar(file, contents);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let layer = gz.finish().unwrap();
        TestImage::from_parts(layer, diff_id, user)
    }

    /// An uncompressed layer: its blob digest is its diff ID and its chain ID.
    pub fn uncompressed(file: &str, contents: &[u8]) -> TestImage {
        let (tar, diff_id) = Self::tar(file, contents);
        TestImage::from_parts(tar, diff_id, "")
    }

    fn tar(file: &str, contents: &[u8]) -> (Vec<u8>, String) {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(contents.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, file, contents).unwrap();
        let tar = b.into_inner().unwrap();
        let diff_id = crate::content::sha256_digest(&tar);
        (tar, diff_id)
    }

    pub fn from_parts(layer: Vec<u8>, diff_id: String, user: &str) -> TestImage {
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {"User": user},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": crate::content::sha256_digest(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": crate::content::sha256_digest(&layer), "size": layer.len()}],
        }))
        .unwrap();
        TestImage {
            layer,
            diff_id,
            config,
            manifest,
        }
    }

    pub fn manifest_digest(&self) -> String {
        crate::content::sha256_digest(&self.manifest)
    }

    pub fn config_digest(&self) -> String {
        crate::content::sha256_digest(&self.config)
    }

    /// Serves this image as `repo:tag` (manifest by tag and digest, config and layer blobs).
    pub fn serve(&self, repo: &str, tag: &str, req: &Req) -> Option<Resp> {
        let md = self.manifest_digest();
        let manifest_paths = [
            format!("/v2/{repo}/manifests/{tag}"),
            format!("/v2/{repo}/manifests/{md}"),
        ];
        if manifest_paths.contains(&req.path) {
            return Some(
                Resp::new(200, self.manifest.clone())
                    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                    .header("Docker-Content-Digest", &md),
            );
        }
        for blob in [&self.config, &self.layer] {
            if req.path == format!("/v2/{repo}/blobs/{}", crate::content::sha256_digest(blob)) {
                return Some(Resp::new(200, blob.clone()));
            }
        }
        None
    }
}
