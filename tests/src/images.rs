//! Test images built by the suite itself from Debian's `busybox-static` (`/bin/busybox` plus the
//! applet links a shell needs), pushed to a [`Registry`] with oci-client, and pulled back through
//! a daemon's CRI ImageService.
//!
//! Tars are deterministic (fixed mtimes, owners), so the same spec always has the same digests.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

use crate::registry::Registry;

/// Where Debian's busybox-static installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";
const MTIME: u64 = 1_700_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// What goes into one layer.
#[derive(Debug, Clone)]
pub enum Layer {
    /// `/bin/busybox`, a link per applet in `/bin`, `/etc/passwd`, `/etc/group`, `/tmp`, `/root`.
    Busybox,
    /// One file of pseudo-random bytes (incompressible), e.g. to make a ~20 MB image.
    Random { path: String, bytes: usize, seed: u64 },
    /// Regular files: (path, contents, mode).
    Files(Vec<(String, Vec<u8>, u32)>),
    /// A tar built by the test itself (crafted entries).
    RawTar(Vec<u8>),
}

/// An image to build: layers bottom-first and the config fields tests care about.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub layers: Vec<Layer>,
    pub compression: Compression,
    pub cmd: Vec<String>,
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub stop_signal: Option<String>,
}

impl ImageSpec {
    /// busybox with a default `CMD ["sh"]`.
    pub fn busybox() -> ImageSpec {
        ImageSpec {
            layers: vec![Layer::Busybox],
            compression: Compression::Gzip,
            cmd: vec!["sh".into()],
            entrypoint: vec![],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            user: None,
            working_dir: None,
            stop_signal: None,
        }
    }

    /// busybox running as `user` (e.g. `1002`, `www-data`, `1003:1003`).
    pub fn busybox_user(user: &str) -> ImageSpec {
        ImageSpec {
            user: Some(user.into()),
            ..ImageSpec::busybox()
        }
    }

    /// busybox plus one layer of `mb` MiB of random data.
    pub fn busybox_with_random_mb(mb: usize) -> ImageSpec {
        let mut s = ImageSpec::busybox();
        s.layers.push(Layer::Random {
            path: "data/random.bin".into(),
            bytes: mb << 20,
            seed: mb as u64,
        });
        s
    }
}

/// The digests of a pushed image.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// `127.0.0.1:port/repo:tag`
    pub reference: String,
    /// `127.0.0.1:port/repo`
    pub repository: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub diff_ids: Vec<String>,
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// An oci-client speaking plain HTTP (the registry is on loopback).
pub fn client() -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    })
}

/// PullImage of `image` without credentials through `c`; the image reference the daemon answers.
pub async fn pull(
    c: &mut k8s_cri::v1::image_service_client::ImageServiceClient<tonic::transport::Channel>,
    image: &str,
) -> Result<String, tonic::Status> {
    let req = k8s_cri::v1::PullImageRequest {
        image: Some(k8s_cri::v1::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    };
    c.pull_image(req).await.map(|r| r.into_inner().image_ref)
}

/// Builds `spec` and pushes it as `<registry>/<repo>:<tag>`, a linux/amd64 image.
pub async fn push(registry: &Registry, repo: &str, tag: &str, spec: &ImageSpec) -> Result<Pushed> {
    push_for(registry, repo, tag, spec, ("linux", "amd64", None)).await
}

/// [`push`] with the image config naming `platform` (os, architecture, variant) instead.
pub async fn push_for(
    registry: &Registry,
    repo: &str,
    tag: &str,
    spec: &ImageSpec,
    platform: (&str, &str, Option<&str>),
) -> Result<Pushed> {
    let repository = format!("{}/{repo}", registry.addr);
    let reference: Reference = format!("{repository}:{tag}").parse()?;
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in &spec.layers {
        let tar = layer_tar(layer)?;
        diff_ids.push(sha256_digest(&tar));
        let (data, media_type) = compress(&tar, spec.compression)?;
        layers.push(ImageLayer::new(data, media_type.to_string(), None));
    }
    let config_json = config_json(spec, &diff_ids, platform);
    let config_digest = sha256_digest(&config_json);
    let config = Config::new(
        config_json,
        oci_client::manifest::IMAGE_CONFIG_MEDIA_TYPE.to_string(),
        None,
    );
    let resp = client()
        .push(&reference, &layers, config, &RegistryAuth::Anonymous, None)
        .await
        .with_context(|| format!("pushing {reference}"))?;
    let manifest_digest = resp
        .manifest_url
        .rsplit('/')
        .next()
        .filter(|d| d.starts_with("sha256:"))
        .map(str::to_string)
        .context("push response has no manifest digest")?;
    Ok(Pushed {
        reference: format!("{repository}:{tag}"),
        repository,
        manifest_digest,
        config_digest,
        diff_ids,
    })
}

fn config_json(spec: &ImageSpec, diff_ids: &[String], platform: (&str, &str, Option<&str>)) -> Vec<u8> {
    let (os, architecture, variant) = platform;
    let mut cfg = serde_json::json!({
        "Env": spec.env,
        "Cmd": spec.cmd,
    });
    if !spec.entrypoint.is_empty() {
        cfg["Entrypoint"] = serde_json::json!(spec.entrypoint);
    }
    if let Some(u) = &spec.user {
        cfg["User"] = serde_json::json!(u);
    }
    if let Some(w) = &spec.working_dir {
        cfg["WorkingDir"] = serde_json::json!(w);
    }
    if let Some(s) = &spec.stop_signal {
        cfg["StopSignal"] = serde_json::json!(s);
    }
    let mut image = serde_json::json!({
        "architecture": architecture,
        "os": os,
        "created": "2023-11-14T22:13:20Z",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    if let Some(v) = variant {
        image["variant"] = serde_json::json!(v);
    }
    serde_json::to_vec(&image).expect("config serializes")
}

/// Compresses a layer tar; returns the blob and its media type.
pub fn compress(tar: &[u8], c: Compression) -> Result<(Vec<u8>, &'static str)> {
    Ok(match c {
        Compression::None => (tar.to_vec(), "application/vnd.oci.image.layer.v1.tar"),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(tar)?;
            (enc.finish()?, "application/vnd.oci.image.layer.v1.tar+gzip")
        }
        Compression::Zstd => (
            zstd::encode_all(tar, 3)?,
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    })
}

/// The uncompressed tar of one layer.
pub fn layer_tar(layer: &Layer) -> Result<Vec<u8>> {
    match layer {
        Layer::Busybox => busybox_tar().map(<[u8]>::to_vec),
        Layer::Random { path, bytes, seed } => {
            let mut b = builder();
            let mut data = vec![0u8; *bytes];
            let mut x = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407)
                | 1;
            for chunk in data.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
            }
            add_parent_dirs(&mut b, path)?;
            add_file(&mut b, path, &data, 0o644)?;
            Ok(b.into_inner()?)
        }
        Layer::Files(files) => {
            let mut b = builder();
            for (path, contents, mode) in files {
                add_parent_dirs(&mut b, path)?;
                add_file(&mut b, path, contents, *mode)?;
            }
            Ok(b.into_inner()?)
        }
        Layer::RawTar(t) => Ok(t.clone()),
    }
}

fn busybox_tar() -> Result<&'static [u8]> {
    static TAR: OnceLock<Vec<u8>> = OnceLock::new();
    if let Some(t) = TAR.get() {
        return Ok(t);
    }
    let built = build_busybox_tar()?;
    Ok(TAR.get_or_init(|| built))
}

fn build_busybox_tar() -> Result<Vec<u8>> {
    let busybox = std::fs::read(BUSYBOX).context("reading /bin/busybox (apt-get install busybox-static)")?;
    let list = std::process::Command::new(BUSYBOX).arg("--list").output()?;
    let applets = String::from_utf8(list.stdout)?;
    let mut b = builder();
    for d in ["bin", "etc", "tmp", "root", "home", "var", "dev", "proc", "sys"] {
        add_dir(&mut b, d, if d == "tmp" { 0o1777 } else { 0o755 })?;
    }
    add_file(&mut b, "bin/busybox", &busybox, 0o755)?;
    for applet in applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        let mut h = header(tar::EntryType::Symlink, 0o777);
        h.set_size(0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    let passwd = "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/sh\n\
                  nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    let group = "root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n";
    add_file(&mut b, "etc/passwd", passwd.as_bytes(), 0o644)?;
    add_file(&mut b, "etc/group", group.as_bytes(), 0o644)?;
    Ok(b.into_inner()?)
}

fn builder() -> tar::Builder<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    b
}

fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h
}

fn add_dir(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) -> Result<()> {
    let mut h = header(tar::EntryType::Directory, mode);
    h.set_size(0);
    b.append_data(
        &mut h,
        format!("{}/", path.trim_end_matches('/')),
        std::io::empty(),
    )?;
    Ok(())
}

fn add_parent_dirs(b: &mut tar::Builder<Vec<u8>>, path: &str) -> Result<()> {
    let mut acc = String::new();
    if let Some(parent) = Path::new(path).parent() {
        for c in parent.components() {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(&c.as_os_str().to_string_lossy());
            add_dir(b, &acc, 0o755)?;
        }
    }
    Ok(())
}

fn add_file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, mode);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, path, data)?;
    Ok(())
}

/// Annotations-free helper for tests that want the applet list the busybox layer links.
pub fn busybox_applets() -> Result<BTreeMap<String, ()>> {
    let list = std::process::Command::new(BUSYBOX).arg("--list").output()?;
    Ok(String::from_utf8(list.stdout)?
        .lines()
        .map(|l| (l.to_string(), ()))
        .collect())
}
