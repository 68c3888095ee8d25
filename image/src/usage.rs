//! Disk usage of a directory tree (bytes actually allocated and inodes), for `ImageFsInfo` and
//! writable-layer stats. Symlinks are not followed; hard links to one inode are counted once;
//! the walk never crosses into another filesystem (a mounted rootfs under a container dir).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Allocated bytes and inode count under a directory.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

/// Measures `dir` (the directory itself included). A missing directory is zero usage; entries that
/// vanish or cannot be read during the walk are skipped, so this never fails.
pub fn measure(dir: &Path) -> Usage {
    let mut usage = Usage::default();
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return usage;
    };
    let dev = top.dev();
    let mut seen = HashSet::new();
    let mut stack = vec![(dir.to_path_buf(), top)];
    while let Some((path, meta)) = stack.pop() {
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        usage.inodes += 1;
        usage.bytes += meta.blocks() * 512;
        if !meta.is_dir() {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let child = entry.path();
            if let Ok(m) = std::fs::symlink_metadata(&child)
                && m.dev() == dev
            {
                stack.push((child, m));
            }
        }
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_files_dirs_and_hardlinks_once() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("f"), vec![7u8; 100_000]).unwrap();
        std::fs::hard_link(sub.join("f"), sub.join("g")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", sub.join("l")).unwrap();
        let u = measure(dir.path());
        assert_eq!(u.inodes, 4, "top, sub, f (once), l");
        assert!(u.bytes >= 100_000, "{u:?}");
    }

    #[test]
    fn missing_dir_is_zero() {
        assert_eq!(measure(Path::new("/nonexistent/crius")), Usage::default());
    }
}
