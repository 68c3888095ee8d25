//! Applies the entries of one (decompressed) layer tar to a directory, as an overlay lower layer.
//!
//! Invariants: tar is only a parser. Each entry name is cleaned as if rooted (`..` cannot climb
//! above the layer root, leading `/` is dropped); its parent is resolved by `pathrs` inside the root
//! (openat2 RESOLVE_IN_ROOT), so symlinks planted by earlier entries, absolute or relative, resolve
//! inside the layer; the final component is created with `*at` calls that never follow it.
//! Hardlink targets are resolved inside the root too. Ownership is set before the mode (so setuid
//! bits survive), then xattrs, then times; directory times are set last. Whiteouts become overlay
//! whiteouts: `.wh.X` → char device 0:0 named X, `.wh..wh..opq` → `trusted.overlay.opaque=y`.

use std::ffi::{CString, OsStr};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use pathrs::flags::OpenFlags;
use pathrs::{InodeType, Root};
use tar::EntryType;

use super::UnpackError;
use super::sys;
use super::tarstream::{Entry, TarStream};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Cleans a tar name as if it were rooted: `/a/../../b/./c` → `b/c`. Empty means the root.
pub fn clean(name: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Metadata of one entry, with PAX overrides applied.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(CString, Vec<u8>)>,
}

fn meta<R: Read>(entry: &Entry<'_, R>) -> Meta {
    let xattrs = entry
        .pax
        .iter()
        .filter_map(|(k, v)| Some((CString::new(k.strip_prefix("SCHILY.xattr.")?).ok()?, v.clone())))
        .collect();
    Meta {
        mode: entry.mode,
        uid: entry.uid as u32,
        gid: entry.gid as u32,
        mtime: entry.mtime,
        xattrs,
    }
}

/// Writes one layer into `root`. Not reentrant: one applier per (private, fresh) directory.
pub struct Applier {
    root: Root,
    /// Directories whose times are set once every entry is written (entries inside change them).
    dir_times: Vec<(PathBuf, i64)>,
}

impl Applier {
    pub fn new(dir: &Path) -> Result<Applier, UnpackError> {
        let root = Root::open(dir).map_err(|e| UnpackError::path(dir, "open layer root", e))?;
        Ok(Applier {
            root,
            dir_times: Vec::new(),
        })
    }

    /// Applies every entry of `archive`.
    pub fn apply<R: Read>(&mut self, archive: &mut TarStream<R>) -> Result<(), UnpackError> {
        while let Some(mut entry) = archive.next_entry()? {
            self.entry(&mut entry)?;
        }
        self.finish()
    }

    fn parent_fd(&self, parent: &Path) -> Result<OwnedFd, UnpackError> {
        let fd = if parent.as_os_str().is_empty() {
            OwnedFd::from(
                self.root
                    .try_clone()
                    .map_err(|e| UnpackError::path(parent, "clone root", e))?,
            )
        } else {
            let perm = std::fs::Permissions::from_mode(0o755);
            let handle = match self.root.mkdir_all(parent, &perm) {
                Ok(h) => h,
                // A symlink on the way whose target does not exist yet: follow it lexically inside
                // the root and create the target's directories there (pathrs still checks them).
                Err(_) => {
                    let followed = self.follow_in_root(parent)?;
                    self.root
                        .mkdir_all(&followed, &perm)
                        .map_err(|e| UnpackError::path(parent, "resolve parent in root", e))?
                }
            };
            OwnedFd::from(handle)
        };
        Ok(fd)
    }

    /// Resolves every symlink along `path` as if the layer root were `/`, without touching
    /// anything outside it; at most 40 links are followed, like the kernel.
    fn follow_in_root(&self, path: &Path) -> Result<PathBuf, UnpackError> {
        let mut pending: std::collections::VecDeque<std::ffi::OsString> =
            path.components().map(|c| c.as_os_str().to_os_string()).collect();
        let mut out = PathBuf::new();
        let mut hops = 0;
        while let Some(c) = pending.pop_front() {
            let candidate = out.join(&c);
            let Ok(target) = self.root.readlink(&candidate) else {
                out = candidate;
                continue;
            };
            hops += 1;
            if hops > 40 {
                return Err(UnpackError::Invalid {
                    path: path.to_path_buf(),
                    why: "too many levels of symbolic links",
                });
            }
            let base = if target.is_absolute() {
                PathBuf::new()
            } else {
                out.clone()
            };
            let resolved = clean(&base.join(target));
            for part in resolved.components().rev() {
                pending.push_front(part.as_os_str().to_os_string());
            }
            out = PathBuf::new();
        }
        Ok(out)
    }

    fn entry<R: Read>(&mut self, entry: &mut Entry<'_, R>) -> Result<(), UnpackError> {
        let kind = entry.kind;
        let path = clean(Path::new(OsStr::from_bytes(&entry.path)));
        let m = meta(entry);
        let io = |op: &'static str| {
            let path = path.clone();
            move |source: io::Error| UnpackError::Io { path, op, source }
        };

        let Some(name) = path.file_name().map(OsStr::to_os_string) else {
            // The layer root itself (`./`): only a directory may describe it.
            if kind == EntryType::Directory {
                let f = std::fs::File::open(format!("/proc/self/fd/{}", self.root.as_fd().as_fd_raw()))
                    .map_err(io("open layer root"))?;
                set_file_meta(&f, &m).map_err(io("set root metadata"))?;
                self.dir_times.push((PathBuf::new(), m.mtime));
            }
            return Ok(());
        };
        let parent_path = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let parent = self.parent_fd(&parent_path)?;
        let dir = parent.as_fd();

        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE_MARKER.as_bytes() {
            let f =
                std::fs::File::open(format!("/proc/self/fd/{}", dir.as_fd_raw())).map_err(io("open dir"))?;
            return sys::fsetxattr(&f, c"trusted.overlay.opaque", b"y").map_err(io("mark opaque"));
        }
        if let Some(target) = name_bytes.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if target.starts_with(WHITEOUT_PREFIX.as_bytes()) || target.is_empty() {
                return Ok(()); // other `.wh..wh.*` markers are meta-data of the tar format.
            }
            if target == b"." || target == b".." {
                return Err(UnpackError::Invalid {
                    path,
                    why: "whiteout of `.` or `..`",
                });
            }
            let target = OsStr::from_bytes(target);
            self.remove_existing(dir, &parent_path.join(target), target, false)?;
            sys::mknod_at(dir, target, libc::S_IFCHR, 0).map_err(io("create whiteout"))?;
            return sys::lchown_at(dir, target, m.uid, m.gid).map_err(io("chown whiteout"));
        }

        let is_dir = kind == EntryType::Directory;
        self.remove_existing(dir, &path, &name, is_dir)?;
        match kind {
            EntryType::Directory => {
                if sys::lstat_at(dir, &name).map_err(io("stat"))?.is_none() {
                    sys::mkdir_at(dir, &name, 0o700).map_err(io("mkdir"))?;
                }
                let f = sys::open_dir_at(dir, &name).map_err(io("open dir"))?;
                set_file_meta(&f, &m).map_err(io("set dir metadata"))?;
                self.dir_times.push((path.clone(), m.mtime));
            }
            EntryType::Regular | EntryType::Continuous => {
                let mut f = sys::create_file_at(dir, &name).map_err(io("create file"))?;
                io::copy(entry, &mut f).map_err(io("write file"))?;
                set_file_meta(&f, &m).map_err(io("set file metadata"))?;
                sys::futimes(&f, m.mtime).map_err(io("set file times"))?;
            }
            EntryType::Symlink => {
                if entry.link.is_empty() {
                    return Err(UnpackError::Invalid {
                        path,
                        why: "symlink without target",
                    });
                }
                // The target is stored verbatim: it is only ever resolved inside a container's root
                // (or inside this root by pathrs), never against the host.
                sys::symlink_at(OsStr::from_bytes(&entry.link), dir, &name).map_err(io("symlink"))?;
                sys::lchown_at(dir, &name, m.uid, m.gid).map_err(io("chown symlink"))?;
                set_xattrs_at(dir, &name, &m).map_err(io("set symlink xattrs"))?;
                sys::lutimes_at(dir, &name, m.mtime).map_err(io("set symlink times"))?;
            }
            EntryType::Link => {
                let target = clean(Path::new(OsStr::from_bytes(&entry.link)));
                if target.as_os_str().is_empty() {
                    return Err(UnpackError::Invalid {
                        path,
                        why: "hardlink to the layer root",
                    });
                }
                self.root
                    .create(&path, &InodeType::Hardlink(target))
                    .map_err(|e| UnpackError::path(&path, "hardlink inside root", e))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (major, minor) = (entry.dev_major, entry.dev_minor);
                let fmt = match kind {
                    EntryType::Char => libc::S_IFCHR,
                    EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                sys::mknod_at(dir, &name, fmt | 0o600, libc::makedev(major, minor)).map_err(io("mknod"))?;
                sys::lchown_at(dir, &name, m.uid, m.gid).map_err(io("chown node"))?;
                sys::chmod_at(dir, &name, m.mode).map_err(io("chmod node"))?;
                set_xattrs_at(dir, &name, &m).map_err(io("set node xattrs"))?;
                sys::lutimes_at(dir, &name, m.mtime).map_err(io("set node times"))?;
            }
            other => {
                return Err(UnpackError::Unsupported {
                    path,
                    kind: format!("{other:?}"),
                });
            }
        }
        Ok(())
    }

    /// Makes room for a new entry: an existing inode is removed unless both are directories.
    fn remove_existing(
        &self,
        dir: std::os::fd::BorrowedFd<'_>,
        path: &Path,
        name: &OsStr,
        new_is_dir: bool,
    ) -> Result<(), UnpackError> {
        let io = |op| {
            let path = path.to_path_buf();
            move |source| UnpackError::Io { path, op, source }
        };
        let Some(st) = sys::lstat_at(dir, name).map_err(io("stat"))? else {
            return Ok(());
        };
        if sys::is_dir(&st) {
            if !new_is_dir {
                self.root
                    .remove_all(path)
                    .map_err(|e| UnpackError::path(path, "remove directory in root", e))?;
            }
            Ok(())
        } else {
            sys::unlink_at(dir, name).map_err(io("unlink"))
        }
    }

    /// Sets directory times, deepest first, once nothing more is written inside them.
    fn finish(&mut self) -> Result<(), UnpackError> {
        for (path, mtime) in self.dir_times.drain(..).rev() {
            let handle = if path.as_os_str().is_empty() {
                self.root.resolve(".")
            } else {
                self.root.resolve_nofollow(&path)
            };
            // A later entry may have replaced the directory; that entry set its own times.
            let Ok(handle) = handle else { continue };
            let Ok(f) = handle.reopen(OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY) else {
                continue;
            };
            sys::futimes(&f, mtime).map_err(|source| UnpackError::Io {
                path,
                op: "set dir times",
                source,
            })?;
        }
        Ok(())
    }
}

trait RawFdNum {
    fn as_fd_raw(&self) -> i32;
}

impl RawFdNum for std::os::fd::BorrowedFd<'_> {
    fn as_fd_raw(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.as_raw_fd()
    }
}

/// chown, then chmod (chown clears setuid/setgid), then xattrs, on an open file or directory.
fn set_file_meta(f: &std::fs::File, m: &Meta) -> io::Result<()> {
    sys::fchown(f, m.uid, m.gid)?;
    sys::fchmod(f, m.mode)?;
    for (k, v) in &m.xattrs {
        sys::fsetxattr(f, k, v)?;
    }
    Ok(())
}

fn set_xattrs_at(dir: std::os::fd::BorrowedFd<'_>, name: &OsStr, m: &Meta) -> io::Result<()> {
    for (k, v) in &m.xattrs {
        sys::lsetxattr_at(dir, name, k, v)?;
    }
    Ok(())
}
