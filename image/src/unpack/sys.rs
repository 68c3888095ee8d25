//! Thin wrappers over the `*at` syscalls the layer applier uses. Every call names a single final
//! component relative to a directory fd that was resolved inside the layer root, and none of them
//! follows that final component (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`, `lsetxattr`).
//!
//! The calls go through nix's safe wrappers, which pass these flags, modes and ids to the kernel
//! unchanged; only the xattr calls (nix has none) and taking ownership of an opened fd are raw.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The permission and setuid/setgid/sticky bits of `mode`, exactly as given.
fn perm(mode: u32) -> Mode {
    Mode::from_bits_retain(mode & !libc::S_IFMT)
}

/// `lstat` of `dir/name`; `None` when it does not exist.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<libc::stat>> {
    match nix::sys::stat::fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    Ok(nix::unistd::unlinkat(
        Some(dir.as_raw_fd()),
        name,
        UnlinkatFlags::NoRemoveDir,
    )?)
}

pub fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    Ok(nix::sys::stat::mkdirat(Some(dir.as_raw_fd()), name, perm(mode))?)
}

fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlag, mode: u32) -> io::Result<File> {
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        name,
        flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        perm(mode),
    )?;
    // SAFETY: `fd` is the fresh descriptor openat just returned, owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Creates a new regular file (never an existing one, never through a symlink), mode 0600.
pub fn create_file_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    open_at(dir, name, OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY, 0o600)
}

/// Opens an existing directory without following a symlink in its place.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    open_at(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)
}

pub fn symlink_at(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    Ok(nix::unistd::symlinkat(target, Some(dir.as_raw_fd()), name)?)
}

/// `mode` carries the file type (`S_IFCHR`, `S_IFBLK`, `S_IFIFO`) and the permission bits.
pub fn mknod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32, dev: libc::dev_t) -> io::Result<()> {
    let kind = SFlag::from_bits_retain(mode & libc::S_IFMT);
    Ok(nix::sys::stat::mknodat(
        Some(dir.as_raw_fd()),
        name,
        kind,
        perm(mode),
        dev,
    )?)
}

pub fn lchown_at(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    Ok(nix::unistd::fchownat(
        Some(dir.as_raw_fd()),
        name,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?)
}

/// chmod of a name known not to be a symlink (Linux cannot chmod a symlink itself).
pub fn chmod_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    Ok(nix::sys::stat::fchmodat(
        Some(dir.as_raw_fd()),
        name,
        perm(mode),
        FchmodatFlags::FollowSymlink,
    )?)
}

pub fn fchown(f: &File, uid: u32, gid: u32) -> io::Result<()> {
    Ok(nix::unistd::fchown(
        f.as_raw_fd(),
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
    )?)
}

pub fn fchmod(f: &File, mode: u32) -> io::Result<()> {
    Ok(nix::sys::stat::fchmod(f.as_raw_fd(), perm(mode))?)
}

pub fn futimes(f: &File, mtime: i64) -> io::Result<()> {
    let t = TimeSpec::new(mtime as libc::time_t, 0);
    Ok(nix::sys::stat::futimens(f.as_raw_fd(), &t, &t)?)
}

pub fn lutimes_at(dir: BorrowedFd<'_>, name: &OsStr, mtime: i64) -> io::Result<()> {
    let t = TimeSpec::new(mtime as libc::time_t, 0);
    Ok(nix::sys::stat::utimensat(
        Some(dir.as_raw_fd()),
        name,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )?)
}

pub fn fsetxattr(f: &File, key: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: valid fd, NUL-terminated key, pointer/length of `value`.
    check(unsafe { libc::fsetxattr(f.as_raw_fd(), key.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
}

/// Sets an xattr on `dir/name` itself (a symlink or device node is not followed). There is no
/// `setxattrat` before Linux 6.13, so the parent is named through its `/proc/self/fd` magic link.
pub fn lsetxattr_at(dir: BorrowedFd<'_>, name: &OsStr, key: &CStr, value: &[u8]) -> io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name.as_bytes());
    let path = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: NUL-terminated path and key, pointer/length of `value`.
    check(unsafe { libc::lsetxattr(path.as_ptr(), key.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
}

pub fn syncfs(f: &File) -> io::Result<()> {
    Ok(nix::unistd::syncfs(f.as_raw_fd())?)
}
