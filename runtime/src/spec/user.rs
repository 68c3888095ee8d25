//! Resolving the container's user from the image: `/etc/passwd` and `/etc/group` of the image
//! rootfs, read by the daemon (the shim is static and has no NSS).
//!
//! Invariants: the files are resolved inside the rootfs — symlinks resolve against the rootfs,
//! never the host — as an `O_PATH` handle that is checked to be a regular file before it is
//! opened for reading (so a FIFO, socket or device node is never opened and cannot block or
//! act), opened `O_NONBLOCK`, and read up to [`MAX_DB`] bytes, the cap applied while reading.
//! A missing file is an empty database (scratch images have none); anything else at the path, or
//! a larger file, is [`SpecError::Invalid`]. Callers run this on a blocking thread.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use super::SpecError;

/// A passwd or group file larger than this is refused; real ones are a few KiB.
pub const MAX_DB: u64 = 1 << 20;

/// The two account files of an image, as text.
#[derive(Debug, Default, Clone)]
pub struct UserDb {
    pub passwd: String,
    pub group: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The home directory field; empty when the line has none.
    pub home: String,
}

impl UserDb {
    /// Reads `/etc/passwd` and `/etc/group` inside `rootfs` (blocking: call it off the async
    /// workers). A missing file reads as empty.
    pub fn load(rootfs: &Path) -> Result<UserDb, SpecError> {
        let root = pathrs::Root::open(rootfs).map_err(|e| SpecError::MountSource {
            path: rootfs.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        Ok(UserDb {
            passwd: read_in_root(&root, "etc/passwd", MAX_DB)?.unwrap_or_default(),
            group: read_in_root(&root, "etc/group", MAX_DB)?.unwrap_or_default(),
        })
    }

    fn passwd_entries(&self) -> impl Iterator<Item = PasswdEntry> + '_ {
        self.passwd.lines().filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f.get(5).map(|h| h.to_string()).unwrap_or_default(),
            })
        })
    }

    pub fn user_by_name(&self, name: &str) -> Option<PasswdEntry> {
        self.passwd_entries().find(|e| e.name == name)
    }

    pub fn user_by_uid(&self, uid: u32) -> Option<PasswdEntry> {
        self.passwd_entries().find(|e| e.uid == uid)
    }

    pub fn group_by_name(&self, name: &str) -> Option<u32> {
        self.group.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 3 && f[0] == name)
                .then(|| f[2].parse().ok())
                .flatten()
        })
    }

    /// The gids of every group listing `user` as a member.
    pub fn member_gids(&self, user: &str) -> Vec<u32> {
        self.group
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                if f.len() < 4 || !f[3].split(',').any(|m| m.trim() == user) {
                    return None;
                }
                f[2].parse().ok()
            })
            .collect()
    }
}

/// Reads the regular file `rel` resolved inside `root` (openat2 RESOLVE_IN_ROOT, symlinks
/// included), at most `cap` bytes; `None` when nothing is at the path.
pub fn read_in_root(root: &pathrs::Root, rel: &str, cap: u64) -> Result<Option<String>, SpecError> {
    let shown = format!("/{rel}");
    let invalid = |why: String| SpecError::Invalid(format!("the image's {shown} {why}"));
    let handle = match root.resolve(rel) {
        Ok(h) => h,
        Err(e)
            if matches!(
                e.kind(),
                pathrs::error::ErrorKind::OsError(Some(libc::ENOENT | libc::ENOTDIR))
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(invalid(format!("cannot be resolved inside the image: {e}"))),
    };
    // An O_PATH handle opens nothing: check the type before the open that could block
    // (a FIFO without writer) or act (a device node).
    let kind =
        file_kind(handle.as_fd().as_raw_fd()).map_err(|e| invalid(format!("cannot be inspected: {e}")))?;
    if kind != libc::S_IFREG {
        return Err(invalid(format!("is {}, not a regular file", kind_name(kind))));
    }
    let file = handle
        .reopen(pathrs::flags::OpenFlags::O_RDONLY | pathrs::flags::OpenFlags::O_NONBLOCK)
        .map_err(|e| invalid(format!("cannot be opened: {e}")))?;
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| invalid(format!("cannot be read: {e}")))?;
    if bytes.len() as u64 > cap {
        return Err(invalid(format!("is larger than {cap} bytes")));
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// The `S_IFMT` bits of what `fd` (an `O_PATH` fd is enough) refers to.
fn file_kind(fd: std::os::fd::RawFd) -> nix::Result<libc::mode_t> {
    Ok(nix::sys::stat::fstat(fd)?.st_mode & libc::S_IFMT)
}

fn kind_name(kind: libc::mode_t) -> &'static str {
    match kind {
        libc::S_IFDIR => "a directory",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFLNK => "a symlink",
        _ => "of an unknown file type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> UserDb {
        UserDb {
            passwd: "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/false\n\
                     broken\nalice:x:1000:1001::/home/alice:/bin/sh\n"
                .into(),
            group: "root:x:0:\nwww-data:x:33:\nalice:x:1001:\nvideo:x:44:alice,bob\naudio:x:29:bob\n".into(),
        }
    }

    #[test]
    fn users_and_groups_resolve() {
        let d = db();
        assert_eq!(d.user_by_name("alice").unwrap().uid, 1000);
        assert_eq!(d.user_by_uid(33).unwrap().name, "www-data");
        assert_eq!(d.user_by_name("nobody"), None);
        assert_eq!(d.group_by_name("video"), Some(44));
        assert_eq!(d.member_gids("alice"), vec![44]);
        assert_eq!(d.member_gids("bob"), vec![44, 29]);
    }

    #[test]
    fn symlinks_in_the_image_do_not_reach_the_host() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("etc/passwd")).unwrap();
        std::fs::write(dir.path().join("etc/group"), "g:x:5:\n").unwrap();
        let d = UserDb::load(dir.path()).unwrap();
        assert_eq!(
            d.passwd, "",
            "/etc/hostname resolved inside the rootfs, where it does not exist"
        );
        assert_eq!(d.group_by_name("g"), Some(5));
    }

    fn refused(dir: &Path, what: &str) -> String {
        match UserDb::load(dir) {
            Err(SpecError::Invalid(m)) => m,
            other => panic!("{what}: expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn special_files_are_refused_without_being_opened() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::fs::write(etc.join("group"), "g:x:5:\n").unwrap();
        // A FIFO without a writer: opening it for reading without O_NONBLOCK would hang here.
        nix::unistd::mkfifo(
            &etc.join("passwd"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let m = refused(dir.path(), "fifo");
        assert!(m.contains("/etc/passwd is a FIFO"), "{m}");

        std::fs::remove_file(etc.join("passwd")).unwrap();
        std::fs::create_dir(etc.join("passwd")).unwrap();
        let m = refused(dir.path(), "directory");
        assert!(m.contains("/etc/passwd is a directory"), "{m}");

        std::fs::remove_dir(etc.join("passwd")).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(etc.join("sock")).unwrap();
        std::os::unix::fs::symlink("/etc/sock", etc.join("passwd")).unwrap();
        let m = refused(dir.path(), "symlink to a socket");
        assert!(m.contains("/etc/passwd is a socket"), "{m}");
    }

    #[test]
    fn missing_is_empty_and_oversized_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = UserDb::load(dir.path()).unwrap();
        assert_eq!((d.passwd.as_str(), d.group.as_str()), ("", ""));
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/group"), vec![b'a'; MAX_DB as usize + 1]).unwrap();
        let m = refused(dir.path(), "oversized");
        assert!(m.contains("/etc/group is larger than"), "{m}");
        std::fs::write(dir.path().join("etc/group"), vec![b'a'; MAX_DB as usize]).unwrap();
        assert_eq!(UserDb::load(dir.path()).unwrap().group.len(), MAX_DB as usize);
    }
}
