//! Disk usage of a directory tree (bytes actually allocated and inodes), for `ImageFsInfo` and
//! writable-layer stats. Symlinks are not followed; hard links to one inode are counted once;
//! the walk never crosses into another filesystem (a mounted rootfs under a container dir).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

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

/// [`measure`] of `dir`, and apart the usage of its entry `part` (included in the first).
/// One walk: a container's layer directory and its `upper`, for the stats RPCs. Hard links
/// between `part` and the rest are counted twice (an overlay's upper and work share none).
pub fn measure_with_part(dir: &Path, part: &str) -> (Usage, Usage) {
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return (Usage::default(), Usage::default());
    };
    let mut whole = Usage {
        bytes: top.blocks() * 512,
        inodes: 1,
    };
    let mut of_part = Usage::default();
    for (name, u) in entries(dir, top.dev()) {
        whole.bytes += u.bytes;
        whole.inodes += u.inodes;
        if name == part {
            of_part = u;
        }
    }
    (whole, of_part)
}

/// [`measure`] of `dir`, taking each entry's usage from `known` (by name) where it has it:
/// the containers' directory, whose entries the stats RPCs measured a moment ago. Hard links
/// between two entries count twice.
pub fn measure_reusing(dir: &Path, known: impl Fn(&std::ffi::OsStr) -> Option<Usage>) -> Usage {
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return Usage::default();
    };
    let mut usage = Usage {
        bytes: top.blocks() * 512,
        inodes: 1,
    };
    let Ok(list) = std::fs::read_dir(dir) else {
        return usage;
    };
    for entry in list.flatten() {
        let u = match known(&entry.file_name()) {
            Some(u) => u,
            None => match std::fs::symlink_metadata(entry.path()) {
                Ok(m) if m.dev() == top.dev() => measure(&entry.path()),
                _ => continue,
            },
        };
        usage.bytes += u.bytes;
        usage.inodes += u.inodes;
    }
    usage
}

/// Each entry of `dir` on device `dev` with its [`measure`].
fn entries(dir: &Path, dev: u64) -> Vec<(OsString, Usage)> {
    let Ok(list) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    list.flatten()
        .filter(|e| std::fs::symlink_metadata(e.path()).is_ok_and(|m| m.dev() == dev))
        .map(|e| (e.file_name(), measure(&e.path())))
        .collect()
}

/// The usage of a directory whose entries never change once they have their final name (the
/// unpacked layers: each is built in a `.`-named temp dir and renamed into place): every such
/// entry is walked once and remembered by name and inode, so kubelet's periodic ImageFsInfo
/// walks only what is new. Entries whose name starts with `.` are walked every time. Hard links
/// between two entries count twice (unpacked layers never share inodes).
#[derive(Default)]
pub struct ImmutableEntries {
    known: Mutex<HashMap<(OsString, u64), Usage>>,
}

impl ImmutableEntries {
    /// Measures `dir` as [`measure`] does, reusing the remembered entries; forgets the entries
    /// that are gone.
    pub fn measure(&self, dir: &Path) -> Usage {
        let Ok(top) = std::fs::symlink_metadata(dir) else {
            return Usage::default();
        };
        let mut usage = Usage {
            bytes: top.blocks() * 512,
            inodes: 1,
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return usage;
        };
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let mut seen = HashMap::new();
        for entry in entries.flatten() {
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if meta.dev() != top.dev() {
                continue;
            }
            let name = entry.file_name();
            let u = if name.as_encoded_bytes().starts_with(b".") {
                measure(&entry.path())
            } else {
                let key = (name, meta.ino());
                let u = known.get(&key).copied().unwrap_or_else(|| measure(&entry.path()));
                seen.insert(key, u);
                u
            };
            usage.bytes += u.bytes;
            usage.inodes += u.inodes;
        }
        *known = seen;
        usage
    }
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
    fn immutable_entries_are_walked_once_and_forgotten_when_gone() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", ".tmp-b"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("f"), vec![1u8; 8192]).unwrap();
        }
        let memo = ImmutableEntries::default();
        let first = memo.measure(dir.path());
        assert_eq!(first, measure(dir.path()));
        // A change inside a remembered entry is not seen (it never happens to a layer); one
        // inside a temp entry is.
        std::fs::write(dir.path().join("a/g"), b"x").unwrap();
        std::fs::write(dir.path().join(".tmp-b/g"), b"x").unwrap();
        assert_eq!(memo.measure(dir.path()).inodes, first.inodes + 1);
        std::fs::remove_dir_all(dir.path().join("a")).unwrap();
        assert_eq!(memo.measure(dir.path()), measure(dir.path()));
        assert_eq!(memo.known.lock().unwrap().len(), 0);
    }

    #[test]
    fn a_part_and_reused_entries_add_up_to_the_walk() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "b"] {
            std::fs::create_dir_all(dir.path().join(name).join("upper/d")).unwrap();
            std::fs::write(dir.path().join(name).join("upper/d/f"), vec![1u8; 8192]).unwrap();
            std::fs::create_dir_all(dir.path().join(name).join("work/work")).unwrap();
        }
        let a = dir.path().join("a");
        let (whole, upper) = measure_with_part(&a, "upper");
        assert_eq!(whole, measure(&a));
        assert_eq!(upper, measure(&a.join("upper")));
        assert_eq!(upper.inodes, 3);
        assert_eq!(measure_reusing(dir.path(), |_| None), measure(dir.path()));
        // A known entry is taken as given, not walked.
        let fake = Usage { bytes: 1, inodes: 1 };
        let reused = measure_reusing(dir.path(), |n| (n == "a").then_some(fake));
        let b = measure(&dir.path().join("b"));
        assert_eq!(reused.inodes, 1 + fake.inodes + b.inodes);
        assert_eq!(
            measure_with_part(Path::new("/nonexistent/crius"), "upper").0,
            Usage::default()
        );
    }

    #[test]
    fn missing_dir_is_zero() {
        assert_eq!(measure(Path::new("/nonexistent/crius")), Usage::default());
    }
}
