//! The checkpoint archive: one uncompressed tar in the layout CRI-O and containerd write, so that
//! `checkpointctl` and other runtimes read it:
//!
//! ```text
//! checkpoint/        CRIU's images and dump.log
//! config.dump        JSON: id, name, image, runtime, created and checkpointed times
//! spec.dump          the container's OCI config.json
//! rootfs-diff.tar    the writable layer's files (overlay whiteouts left out)
//! deleted.files      JSON list of absolute paths the container deleted from its image
//!                    (only when there are any)
//! ```
//!
//! Invariants: the archive appears at its location only when complete (written beside it under
//! a temporary name, fsynced, renamed), mode 0600 since `spec.dump` holds the container's
//! environment; symlinks are stored as links, never followed; a deadline stops the work between
//! entries.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Entry names inside the archive (the names CRI-O, containerd and checkpointctl use).
pub const CHECKPOINT_DIR: &str = "checkpoint";
pub const CONFIG_DUMP: &str = "config.dump";
pub const SPEC_DUMP: &str = "spec.dump";
pub const ROOTFS_DIFF: &str = "rootfs-diff.tar";
pub const DELETED_FILES: &str = "deleted.files";

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the checkpoint archive passed its deadline")]
    Deadline,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError {
    let path = path.to_path_buf();
    move |source| ArchiveError::Io { what, path, source }
}

/// What `config.dump` records of the container (checkpointctl shows these).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigDump {
    pub id: String,
    pub name: String,
    pub rootfs_image: String,
    pub rootfs_image_ref: String,
    pub rootfs_image_name: String,
    pub runtime: String,
    pub created_time: String,
    pub checkpointed_time: String,
}

/// The parts the archive is built from; `work` already holds `checkpoint/` (CRIU's images).
pub struct Parts<'a> {
    pub work: &'a Path,
    pub config: &'a ConfigDump,
    /// The container's `config.json`.
    pub spec: &'a Path,
    /// The writable layer's `upper` dir.
    pub upper: &'a Path,
    /// The image's layer dirs, top first: what an opaque dir of `upper` hides.
    pub lowers: &'a [PathBuf],
}

/// Writes the archive at `location` from `parts` before `deadline`.
pub fn write(parts: &Parts, location: &Path, deadline: Instant) -> Result<(), ArchiveError> {
    let work = parts.work;
    let config = serde_json::to_vec_pretty(parts.config).map_err(|e| ArchiveError::Io {
        what: "encode",
        path: work.join(CONFIG_DUMP),
        source: e.into(),
    })?;
    crate::private::write_file(&work.join(CONFIG_DUMP), &config)
        .map_err(io("write", &work.join(CONFIG_DUMP)))?;
    std::fs::copy(parts.spec, work.join(SPEC_DUMP)).map_err(io("copy", parts.spec))?;
    let deleted = rootfs_diff(parts.upper, parts.lowers, &work.join(ROOTFS_DIFF), deadline)?;
    if !deleted.is_empty() {
        let body = serde_json::to_vec(&deleted).map_err(|e| ArchiveError::Io {
            what: "encode",
            path: work.join(DELETED_FILES),
            source: e.into(),
        })?;
        crate::private::write_file(&work.join(DELETED_FILES), &body)
            .map_err(io("write", &work.join(DELETED_FILES)))?;
    }

    let tmp = temp_name(location);
    // A leftover of a crashed call with this pid; create_new below then refuses anything else.
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let file = create_private(&tmp)?;
        let mut b = tar::Builder::new(file);
        b.follow_symlinks(false);
        let images = work.join(CHECKPOINT_DIR);
        b.append_dir_all(CHECKPOINT_DIR, &images)
            .map_err(io("archive", &images))?;
        check(deadline)?;
        for name in [CONFIG_DUMP, SPEC_DUMP, ROOTFS_DIFF, DELETED_FILES] {
            let p = work.join(name);
            if p.exists() {
                b.append_path_with_name(&p, name).map_err(io("archive", &p))?;
            }
        }
        let file = b.into_inner().map_err(io("finish", &tmp))?;
        file.sync_all().map_err(io("fsync", &tmp))?;
        check(deadline)?;
        std::fs::rename(&tmp, location).map_err(io("rename to", location))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `<location>.<pid>.tmp`, in the same directory so the rename is atomic.
fn temp_name(location: &Path) -> PathBuf {
    let mut name = location.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    location.with_file_name(name)
}

fn create_private(path: &Path) -> Result<File, ArchiveError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("create", path))
}

fn check(deadline: Instant) -> Result<(), ArchiveError> {
    if Instant::now() > deadline {
        return Err(ArchiveError::Deadline);
    }
    Ok(())
}

/// Tars `upper` into `out` (names relative, no leading `/`) and returns the paths the container
/// deleted: overlay whiteouts (char device 0:0), and what an opaque dir hides in `lowers`.
///
/// The container runs on while this reads its writable layer, so every entry is reached from its
/// parent's fd with `O_NOFOLLOW` (a dir swapped for a symlink cannot lead out of `upper`), a
/// file's entry holds exactly the size its header states (a file that grows is cut, one that
/// shrinks is padded), sockets are left out (tar cannot hold them), and the tree's depth is
/// capped at [`MAX_DEPTH`] (one open fd per level).
pub fn rootfs_diff(
    upper: &Path,
    lowers: &[PathBuf],
    out: &Path,
    deadline: Instant,
) -> Result<BTreeSet<String>, ArchiveError> {
    let _ = std::fs::remove_file(out);
    let root = File::open(upper).map_err(io("open", upper))?;
    let mut w = DiffWalk {
        b: tar::Builder::new(create_private(out)?),
        upper,
        lowers,
        deleted: BTreeSet::new(),
        deadline,
    };
    w.dir(&root, Path::new(""), 0)?;
    let f = w.b.into_inner().map_err(io("finish", out))?;
    f.sync_all().map_err(io("fsync", out))?;
    Ok(w.deleted)
}

/// The deepest directory nesting of a writable layer that is archived.
pub const MAX_DEPTH: usize = 128;

struct DiffWalk<'a> {
    b: tar::Builder<File>,
    upper: &'a Path,
    lowers: &'a [PathBuf],
    deleted: BTreeSet<String>,
    deadline: Instant,
}

impl DiffWalk<'_> {
    fn err(&self, what: &'static str, rel: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + use<> {
        let path = self.upper.join(rel);
        move |source| ArchiveError::Io { what, path, source }
    }

    fn nix_err(&self, what: &'static str, rel: &Path) -> impl FnOnce(nix::Error) -> ArchiveError + use<> {
        let f = self.err(what, rel);
        move |e| f(e.into())
    }

    /// Archives the entries of the open directory `dir` (at `rel` in the layer).
    fn dir(&mut self, dir: &File, rel: &Path, depth: usize) -> Result<(), ArchiveError> {
        use std::os::fd::AsRawFd;
        if depth > MAX_DEPTH {
            return Err(ArchiveError::Io {
                what: "archive",
                path: self.upper.join(rel),
                source: std::io::Error::other(format!("nested deeper than {MAX_DEPTH} directories")),
            });
        }
        let listing = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        let mut names = Vec::new();
        for e in std::fs::read_dir(&listing).map_err(self.err("read dir", rel))? {
            names.push(e.map_err(self.err("read dir", rel))?.file_name());
        }
        names.sort();
        for name in names {
            check(self.deadline)?;
            let rel_path = rel.join(&name);
            self.entry(dir, &name, &rel_path, depth)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        dir: &File,
        name: &std::ffi::OsStr,
        rel: &Path,
        depth: usize,
    ) -> Result<(), ArchiveError> {
        use nix::sys::stat::{SFlag, fstatat};
        use std::os::fd::AsRawFd;
        let st = match fstatat(
            Some(dir.as_raw_fd()),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => st,
            // Removed by the running container since the listing.
            Err(nix::Error::ENOENT) => return Ok(()),
            Err(e) => return Err(self.nix_err("stat", rel)(e)),
        };
        let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        match kind {
            SFlag::S_IFCHR if st.st_rdev == 0 => {
                self.deleted.insert(absolute(rel));
            }
            SFlag::S_IFSOCK => {}
            SFlag::S_IFREG => {
                let Some(file) =
                    open_at(dir, name, nix::fcntl::OFlag::empty()).map_err(self.err("open", rel))?
                else {
                    return Ok(());
                };
                let st = nix::sys::stat::fstat(file.as_raw_fd()).map_err(self.nix_err("stat", rel))?;
                let size = st.st_size.max(0) as u64;
                let mut h = header(&st, tar::EntryType::Regular);
                h.set_size(size);
                let data = (&file).take(size).chain(std::io::repeat(0)).take(size);
                self.b
                    .append_data(&mut h, rel, data)
                    .map_err(self.err("archive", rel))?;
            }
            SFlag::S_IFDIR => {
                let Some(sub) =
                    open_at(dir, name, nix::fcntl::OFlag::O_DIRECTORY).map_err(self.err("open", rel))?
                else {
                    return Ok(());
                };
                let mut h = header(&st, tar::EntryType::Directory);
                self.b
                    .append_data(&mut h, rel, std::io::empty())
                    .map_err(self.err("archive", rel))?;
                if is_opaque(&sub) {
                    let kept: BTreeSet<_> = std::fs::read_dir(format!("/proc/self/fd/{}", sub.as_raw_fd()))
                        .map_err(self.err("read dir", rel))?
                        .filter_map(|e| e.ok().map(|e| e.file_name()))
                        .collect();
                    for hidden in lower_entries(self.lowers, rel) {
                        if !kept.contains(&hidden) {
                            self.deleted.insert(absolute(&rel.join(hidden)));
                        }
                    }
                }
                self.dir(&sub, rel, depth + 1)?;
            }
            SFlag::S_IFLNK => {
                let target = match nix::fcntl::readlinkat(Some(dir.as_raw_fd()), name) {
                    Ok(t) => t,
                    Err(nix::Error::ENOENT | nix::Error::EINVAL) => return Ok(()),
                    Err(e) => return Err(self.nix_err("read link", rel)(e)),
                };
                let mut h = header(&st, tar::EntryType::Symlink);
                self.b
                    .append_link(&mut h, rel, Path::new(&target))
                    .map_err(self.err("archive", rel))?;
            }
            SFlag::S_IFIFO | SFlag::S_IFCHR | SFlag::S_IFBLK => {
                let kind = match kind {
                    SFlag::S_IFIFO => tar::EntryType::Fifo,
                    SFlag::S_IFCHR => tar::EntryType::Char,
                    _ => tar::EntryType::Block,
                };
                let mut h = header(&st, kind);
                let dev = st.st_rdev;
                h.set_device_major(libc::major(dev))
                    .map_err(self.err("archive", rel))?;
                h.set_device_minor(libc::minor(dev))
                    .map_err(self.err("archive", rel))?;
                self.b
                    .append_data(&mut h, rel, std::io::empty())
                    .map_err(self.err("archive", rel))?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// `name` in `dir`, opened read-only without following a symlink; `None` when the running
/// container removed or replaced it since it was listed.
fn open_at(dir: &File, name: &std::ffi::OsStr, extra: nix::fcntl::OFlag) -> std::io::Result<Option<File>> {
    use nix::fcntl::OFlag;
    use std::os::fd::{AsRawFd, FromRawFd};
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | extra;
    match nix::fcntl::openat(Some(dir.as_raw_fd()), name, flags, nix::sys::stat::Mode::empty()) {
        // SAFETY: openat just returned this fd; nothing else owns it.
        Ok(fd) => Ok(Some(unsafe { File::from_raw_fd(fd) })),
        Err(nix::Error::ENOENT | nix::Error::ELOOP | nix::Error::ENOTDIR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A tar header with the entry's mode, owner and mtime (what restoring it needs).
fn header(st: &nix::sys::stat::FileStat, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    h
}

fn absolute(rel: &Path) -> String {
    format!("/{}", rel.display())
}

/// An overlay opaque dir: `trusted.overlay.opaque` (or the `user.` namespace of an overlay
/// mounted with `userxattr`) is `y`.
fn is_opaque(dir: &File) -> bool {
    use std::os::fd::AsRawFd;
    [c"trusted.overlay.opaque", c"user.overlay.opaque"]
        .iter()
        .any(|attr| {
            let mut v = [0u8; 2];
            // SAFETY: `attr` is NUL-terminated and `v` is writable for its length.
            let n =
                unsafe { libc::fgetxattr(dir.as_raw_fd(), attr.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
            n == 1 && v[0] == b'y'
        })
}

/// Names in `rel` of any lower layer, whiteouts left out (what the image has there).
fn lower_entries(lowers: &[PathBuf], rel: &Path) -> BTreeSet<std::ffi::OsString> {
    let mut names = BTreeSet::new();
    for lower in lowers {
        let Ok(entries) = std::fs::read_dir(lower.join(rel)) else {
            continue;
        };
        for e in entries.flatten() {
            let whiteout = e
                .metadata()
                .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0);
            if !whiteout {
                names.insert(e.file_name());
            }
        }
    }
    names
}

/// The archive's times (RFC 3339 to the second, UTC).
pub use crius_shim_api::utc::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    fn put(path: &Path, body: &[u8]) {
        File::create(path).unwrap().write_all(body).unwrap();
    }

    fn names(tar_path: &Path) -> Vec<String> {
        let mut a = tar::Archive::new(File::open(tar_path).unwrap());
        let mut v: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        v.sort();
        v
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_043_600_123_456_789), "2026-11-30T13:00:00Z");
    }

    #[test]
    fn diff_keeps_files_and_links_and_lists_whiteouts() {
        let t = tempfile::tempdir().unwrap();
        let upper = t.path().join("upper");
        std::fs::create_dir_all(upper.join("etc/sub")).unwrap();
        put(&upper.join("data.txt"), b"42");
        put(&upper.join("etc/sub/f"), b"x");
        std::os::unix::fs::symlink("/outside/target", upper.join("link")).unwrap();
        // A whiteout needs mknod (root); without it the test still checks the rest.
        let whiteout = nix::sys::stat::mknod(
            &upper.join("etc/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        )
        .is_ok();
        // A socket cannot be archived and is left out; a fifo is kept, under its own name.
        let _sock = std::os::unix::net::UnixListener::bind(upper.join("app.sock")).unwrap();
        nix::unistd::mkfifo(
            &upper.join("etc/pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let out = t.path().join("diff.tar");
        let deleted = rootfs_diff(&upper, &[], &out, later()).unwrap();
        let got = names(&out);
        assert!(!got.iter().any(|n| n.contains("app.sock")), "{got:?}");
        assert!(got.contains(&"etc/pipe".to_string()), "{got:?}");
        assert!(got.contains(&"data.txt".to_string()), "{got:?}");
        assert!(got.contains(&"etc/sub/f".to_string()), "{got:?}");
        assert!(got.contains(&"link".to_string()), "{got:?}");
        assert!(!got.iter().any(|n| n.contains("gone")), "{got:?}");
        if whiteout {
            assert_eq!(
                deleted.into_iter().collect::<Vec<_>>(),
                vec!["/etc/gone".to_string()]
            );
        }
        let mut a = tar::Archive::new(File::open(&out).unwrap());
        let link = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().as_ref() == Path::new("link"))
            .unwrap();
        assert_eq!(link.header().entry_type(), tar::EntryType::Symlink);
        assert_eq!(
            link.link_name().unwrap().unwrap().as_ref(),
            Path::new("/outside/target")
        );
    }

    #[test]
    fn a_tree_deeper_than_the_cap_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let upper = t.path().join("upper");
        let mut deep = upper.clone();
        for _ in 0..=MAX_DEPTH + 1 {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        let err = rootfs_diff(&upper, &[], &t.path().join("diff.tar"), later()).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
    }

    #[test]
    fn archive_has_the_layout_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let work = t.path().join("work");
        std::fs::create_dir_all(work.join(CHECKPOINT_DIR)).unwrap();
        put(&work.join(CHECKPOINT_DIR).join("inventory.img"), b"img");
        let upper = t.path().join("upper");
        std::fs::create_dir(&upper).unwrap();
        put(&upper.join("a"), b"a");
        let spec = t.path().join("config.json");
        put(&spec, b"{}");
        let config = ConfigDump {
            id: "c1".into(),
            name: "counter".into(),
            rootfs_image: "img".into(),
            rootfs_image_ref: "sha256:00".into(),
            rootfs_image_name: "img".into(),
            runtime: "crius".into(),
            created_time: rfc3339(0),
            checkpointed_time: rfc3339(0),
        };
        let location = t.path().join("out.tar");
        let parts = Parts {
            work: &work,
            config: &config,
            spec: &spec,
            upper: &upper,
            lowers: &[],
        };
        write(&parts, &location, later()).unwrap();
        let got = names(&location);
        for want in ["checkpoint/inventory.img", CONFIG_DUMP, SPEC_DUMP, ROOTFS_DIFF] {
            assert!(got.contains(&want.to_string()), "{want} in {got:?}");
        }
        assert!(
            !got.contains(&DELETED_FILES.to_string()),
            "nothing deleted: {got:?}"
        );
        let mode = std::fs::metadata(&location).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_dir(t.path()).unwrap().count(),
            4,
            "no temp file left"
        );

        // Past its deadline nothing appears at the location.
        let late = t.path().join("late.tar");
        let err = write(&parts, &late, Instant::now() - Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, ArchiveError::Deadline), "{err}");
        assert!(!late.exists());
    }
}
