//! What the metric RPCs read of each running container: its cgroup sample, its writable
//! layer's use and filesystem, and its processes' open files. The node turns readings into
//! CRI metrics (`node::pod_metrics`); this module only reads.
//!
//! Invariants: only running containers are read (an exited one has no cgroup left to read,
//! as CRI-O skips stopped ones); every read runs on the blocking pool; the per-process walk
//! is capped ([`PID_CAP`] processes, [`FD_CAP`] descriptors each).

use std::collections::HashSet;
use std::sync::Arc;

use super::cgroup_sample::Sample;
use super::record::State;
use super::{ContainerError, Containers, now_ns};

/// The most processes of one container whose descriptors are counted.
const PID_CAP: usize = 1024;
/// The most descriptors counted of one process.
const FD_CAP: usize = 65536;

/// Which optional (costly) parts to read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadingParts {
    /// The writable layer's use (a walk of its tree) and its filesystem (statvfs).
    pub disk: bool,
    /// Open descriptors and sockets of each process (a walk of `/proc/<pid>/fd`).
    pub files: bool,
}

/// The writable layer's filesystem.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FsReading {
    pub used_bytes: u64,
    pub limit_bytes: u64,
    pub inodes_total: u64,
    pub inodes_free: u64,
}

/// One running container, read at `timestamp` (unix ns).
#[derive(Debug, Clone)]
pub struct ContainerReading {
    pub id: String,
    pub sandbox_id: String,
    /// The CRI metadata name and attempt.
    pub name: String,
    pub attempt: u32,
    /// The image as the client named it.
    pub image: String,
    pub timestamp: i64,
    pub sample: Sample,
    pub fs: Option<FsReading>,
    /// `(open descriptors, of which sockets)` over the container's processes.
    pub files: Option<(u64, u64)>,
}

impl Containers {
    /// Readings of every running container of the pods in `pods`, from one scan of the
    /// records.
    pub async fn readings(
        self: &Arc<Self>,
        pods: HashSet<String>,
        parts: ReadingParts,
    ) -> Result<Vec<ContainerReading>, ContainerError> {
        self.blocking(move |c| {
            Ok(c.all()?
                .into_iter()
                .filter(|r| r.status.state == State::Running && pods.contains(&r.sandbox_id))
                .map(|r| {
                    let upper = c.layer_dir(&r.id).join("upper");
                    ContainerReading {
                        name: r.name().to_string(),
                        attempt: r.attempt(),
                        image: r.image_name.clone(),
                        timestamp: now_ns(),
                        sample: c.cgroups.sample(&r.cgroup_path),
                        fs: parts.disk.then(|| fs_reading(&upper)),
                        files: parts.files.then(|| open_files(&c.cgroups.pids(&r.cgroup_path))),
                        id: r.id,
                        sandbox_id: r.sandbox_id,
                    }
                })
                .collect())
        })
        .await
    }
}

fn fs_reading(upper: &std::path::Path) -> FsReading {
    let used = crius_image::usage::measure(upper);
    let mut fs = FsReading {
        used_bytes: used.bytes,
        ..FsReading::default()
    };
    if let Ok(st) = nix::sys::statvfs::statvfs(upper) {
        fs.limit_bytes = st.blocks() * st.fragment_size();
        fs.inodes_total = st.files();
        fs.inodes_free = st.files_free();
    }
    fs
}

/// Open descriptors and sockets of `pids` (processes gone meanwhile count nothing).
fn open_files(pids: &[i32]) -> (u64, u64) {
    let (mut fds, mut sockets) = (0u64, 0u64);
    for pid in pids.iter().take(PID_CAP) {
        let dir = format!("/proc/{pid}/fd");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten().take(FD_CAP) {
            fds += 1;
            if std::fs::read_link(e.path())
                .is_ok_and(|t| t.as_os_str().as_encoded_bytes().starts_with(b"socket:"))
            {
                sockets += 1;
            }
        }
    }
    (fds, sockets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_open_files_are_counted() {
        let _sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (fds, sockets) = open_files(&[std::process::id() as i32]);
        assert!(fds >= 4, "stdio plus a socket at least, got {fds}");
        assert!(sockets >= 1, "the bound socket, got {sockets}");
        assert_eq!(open_files(&[i32::MAX]), (0, 0));
    }

    #[test]
    fn fs_reading_sees_the_layer_and_its_filesystem() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), vec![0u8; 8192]).unwrap();
        let fs = fs_reading(d.path());
        assert!(fs.used_bytes >= 8192, "{fs:?}");
        assert!(fs.limit_bytes > fs.used_bytes && fs.inodes_total > 0, "{fs:?}");
    }
}
