//! Hostile layers from a real registry: a GNU long-name entry announcing 1 GiB is refused at once
//! with INVALID_ARGUMENT, costs the daemon far less than 64 MB of peak RSS and leaves nothing; a
//! layer written by Python's tarfile (a FIFO with empty device-number fields) pulls; a normal image
//! of 300 MiB of incompressible layers adds at most 64 MiB to the daemon's peak RSS.

use std::os::unix::fs::FileTypeExt;
use std::time::{Duration, Instant};

use crius_tests::images::{self, Compression, ImageSpec, Layer, pull};
use crius_tests::{Daemon, Registry};

/// Python 3.11's tarfile output: `run/`, the FIFO `run/fifo` (uid 7, gid 8) and `run/readme`.
const PYTHON_FIFO_TAR: &[u8] = include_bytes!("../../image/src/unpack/testdata/python-fifo.tar");

/// A /proc/<pid>/status field in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap()
}

fn spec(tar: Vec<u8>) -> ImageSpec {
    ImageSpec {
        layers: vec![Layer::RawTar(tar)],
        compression: Compression::Gzip,
        ..ImageSpec::busybox()
    }
}

#[tokio::test]
async fn a_one_gib_long_name_is_refused_at_once_and_a_python_fifo_layer_pulls() {
    let reg = Registry::start().unwrap();
    // One GNU long-name header announcing 1 GiB, 64 KiB of its "body", then the end of archive.
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_entry_type(tar::EntryType::GNULongName);
    h.set_size(1 << 30);
    h.set_cksum();
    let mut evil = h.as_bytes().to_vec();
    evil.resize(evil.len() + (64 << 10), b'a');
    evil.resize(evil.len() + 1024, 0);
    let evil = images::push(&reg, "evil", "1", &spec(evil)).await.unwrap();
    let fifo = images::push(&reg, "pyfifo", "1", &spec(PYTHON_FIFO_TAR.to_vec()))
        .await
        .unwrap();

    let mut d = Daemon::start().await.unwrap();
    let pid = d.pid().unwrap();
    let before = status_kb(pid, "VmRSS:");
    let started = Instant::now();
    let err = pull(&mut d.images, &evil.reference).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("GNU long-name entry") && err.message().contains("1048576-byte limit"),
        "{}",
        err.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let peak = status_kb(pid, "VmHWM:");
    assert!(
        peak.saturating_sub(before) < 64 << 10,
        "peak RSS grew by {} kB",
        peak.saturating_sub(before)
    );
    let layers: Vec<_> = std::fs::read_dir(d.root.join("layers"))
        .unwrap()
        .flatten()
        .collect();
    assert!(layers.is_empty(), "no layer or temp dir left: {layers:?}");

    let id = pull(&mut d.images, &fifo.reference).await.unwrap();
    assert_eq!(id, fifo.config_digest);
    let layer = d
        .root
        .join("layers")
        .join(fifo.diff_ids[0].trim_start_matches("sha256:"));
    let m = std::fs::symlink_metadata(layer.join("run/fifo")).unwrap();
    assert!(m.file_type().is_fifo());
    assert_eq!(
        std::fs::read(layer.join("run/readme")).unwrap(),
        b"made by python\n"
    );
}

/// The memory bound holds for content far larger than it: three 100 MiB gzip layers of
/// incompressible bytes (downloaded, stored and unpacked in parallel) grow the daemon's VmHWM by
/// at most 64 MiB.
#[tokio::test]
async fn a_300_mib_image_adds_at_most_64_mib_to_the_peak_rss() {
    const LAYER: usize = 100 << 20;
    let reg = Registry::start().unwrap();
    let spec = ImageSpec {
        layers: (0..3u64)
            .map(|i| Layer::Random {
                path: format!("data/{i}.bin"),
                bytes: LAYER,
                seed: i + 1,
            })
            .collect(),
        compression: Compression::Gzip,
        ..ImageSpec::busybox()
    };
    let big = images::push(&reg, "big", "1", &spec).await.unwrap();

    let mut d = Daemon::start().await.unwrap();
    let pid = d.pid().unwrap();
    let before = status_kb(pid, "VmHWM:");
    let started = Instant::now();
    let id = pull(&mut d.images, &big.reference).await.unwrap();
    let grew = status_kb(pid, "VmHWM:").saturating_sub(before);
    eprintln!(
        "pulled 3 x {} MiB in {:?}: VmHWM {before} kB -> +{grew} kB",
        LAYER >> 20,
        started.elapsed()
    );
    assert_eq!(id, big.config_digest);
    // Layer directories are named by chain ID: c1 = d1, cn = sha256(c(n-1) + " " + dn).
    let mut chain = String::new();
    for (i, diff_id) in big.diff_ids.iter().enumerate() {
        chain = match i {
            0 => diff_id.clone(),
            _ => images::sha256_digest(format!("{chain} {diff_id}").as_bytes()),
        };
        let file = d
            .root
            .join("layers")
            .join(chain.trim_start_matches("sha256:"))
            .join(format!("data/{i}.bin"));
        assert_eq!(std::fs::metadata(&file).unwrap().len(), LAYER as u64, "{file:?}");
    }
    assert!(grew <= 64 << 10, "peak RSS grew by {grew} kB");
}
