//! Resolving the container's user from the image: `/etc/passwd` and `/etc/group` of the image
//! rootfs, read by the daemon (the shim is static and has no NSS).
//!
//! Invariants: the files are opened inside the rootfs — symlinks resolve against the rootfs,
//! never the host — and are read up to [`MAX_DB`] bytes; a missing or unreadable file is an
//! empty database, not an error (scratch images have none).

use std::io::Read;
use std::path::Path;

/// Larger passwd/group files are cut here; real ones are a few KiB.
pub const MAX_DB: u64 = 4 << 20;

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
    /// Reads `/etc/passwd` and `/etc/group` inside `rootfs`.
    pub fn load(rootfs: &Path) -> UserDb {
        UserDb {
            passwd: read_in_root(rootfs, "etc/passwd").unwrap_or_default(),
            group: read_in_root(rootfs, "etc/group").unwrap_or_default(),
        }
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

/// Opens `rel` with every component resolved inside `root` (openat2 RESOLVE_IN_ROOT).
fn read_in_root(root: &Path, rel: &str) -> Option<String> {
    let root = pathrs::Root::open(root).ok()?;
    let file = root.open_subpath(rel, pathrs::flags::OpenFlags::O_RDONLY).ok()?;
    let mut text = String::new();
    file.take(MAX_DB).read_to_string(&mut text).ok()?;
    Some(text)
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
        let d = UserDb::load(dir.path());
        assert_eq!(
            d.passwd, "",
            "/etc/hostname resolved inside the rootfs, where it does not exist"
        );
        assert_eq!(d.group_by_name("g"), Some(5));
    }
}
