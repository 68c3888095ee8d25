//! Reading a checkpoint archive (`checkpoint_archive.rs` has the layout) for a restore: the
//! archive is extracted into a private directory, its dumps are decoded, and its writable-layer
//! changes are applied to a new container's rootfs.
//!
//! Invariants: the archive is untrusted input. Only regular files and directories are extracted
//! (anything else is refused), every name is relative with only normal components (no `..`, no
//! absolute name), files are created with `O_CREAT|O_EXCL|O_NOFOLLOW` in directories this code
//! created, so nothing is ever written through a symlink. The entry count, each file's size and
//! the total size are capped while reading (a header announcing too much is refused before its
//! data is read; the data itself is read through a bound). Top-level names outside the layout
//! are skipped, never written. A failed extraction removes the whole directory.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use crius_image::unpack::TarStream;
use tar::EntryType;

use super::checkpoint_archive::{CHECKPOINT_DIR, CONFIG_DUMP, DELETED_FILES, ROOTFS_DIFF, SPEC_DUMP};

/// What an archive may hold. The defaults bound a restore of a container of a few GiB memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sum of all extracted files' sizes.
    pub total: u64,
    /// One file (a CRIU pages image is as large as the memory it dumped).
    pub file: u64,
    /// Entries in the archive, and again in `rootfs-diff.tar`.
    pub entries: u64,
    /// `config.dump`, `spec.dump` and `deleted.files`: small JSON documents.
    pub dump: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            total: 16 << 30,
            file: 8 << 30,
            entries: 100_000,
            dump: 4 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The archive itself is unacceptable (InvalidArgument).
    #[error("checkpoint archive {archive}: {reason}")]
    Invalid { archive: PathBuf, reason: String },
    /// A local failure while extracting or applying (Internal).
    #[error("restore from {archive}: {what} {path}: {source}")]
    Io {
        archive: PathBuf,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// `config.dump` as read back: the fields a restore needs (CRI-O's and containerd's carry more).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConfigDumpIn {
    pub id: String,
    pub name: String,
    pub rootfs_image: String,
    pub rootfs_image_ref: String,
    pub rootfs_image_name: String,
}

impl ConfigDumpIn {
    /// The checkpointed container's image, best name first (CRI-O prefers the name it was
    /// created with, then the resolved reference).
    pub fn image_candidates(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        for s in [
            &self.rootfs_image_name,
            &self.rootfs_image_ref,
            &self.rootfs_image,
        ] {
            if !s.is_empty() && !v.contains(&s.as_str()) {
                v.push(s);
            }
        }
        v
    }
}

/// An extracted archive.
#[derive(Debug)]
pub struct Extracted {
    pub dir: PathBuf,
    pub config: ConfigDumpIn,
    pub spec: oci_spec::runtime::Spec,
    /// Absolute paths the container had deleted from its image.
    pub deleted: Vec<String>,
}

impl Extracted {
    pub fn rootfs_diff(&self) -> Option<PathBuf> {
        let p = self.dir.join(ROOTFS_DIFF);
        p.is_file().then_some(p)
    }
}

/// An image reference that names a checkpoint archive: CRI-O's convention, an absolute path
/// (an image reference never starts with `/`).
pub fn is_archive_ref(image: &str) -> bool {
    image.starts_with('/')
}

/// Extracts `archive` into `dest` (created here, 0700; it must not exist) and decodes its dumps.
/// On any error `dest` is removed.
pub fn extract(archive: &Path, dest: &Path, limits: &Limits) -> Result<Extracted, RestoreError> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dest)
        .map_err(|source| RestoreError::Io {
            archive: archive.into(),
            what: "create",
            path: dest.into(),
            source,
        })?;
    let result = extract_into(archive, dest, limits).and_then(|()| decode(archive, dest, limits));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(dest);
    }
    result
}

fn invalid(archive: &Path, reason: impl Into<String>) -> RestoreError {
    RestoreError::Invalid {
        archive: archive.into(),
        reason: reason.into(),
    }
}

fn io_at(archive: &Path, what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RestoreError {
    let (archive, path) = (archive.to_path_buf(), path.to_path_buf());
    move |source| RestoreError::Io {
        archive,
        what,
        path,
        source,
    }
}

/// Opens the archive: it must be a regular file (a symlink to one is followed, as the client
/// named it; a fifo or device is refused before it is read).
fn open_archive(archive: &Path) -> Result<File, RestoreError> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(archive)
        .map_err(|e| invalid(archive, format!("cannot open: {e}")))?;
    let m = f
        .metadata()
        .map_err(|e| invalid(archive, format!("cannot stat: {e}")))?;
    if !m.is_file() {
        return Err(invalid(archive, "is not a regular file"));
    }
    Ok(f)
}

/// The cap for one top-level file of the layout; `None`: not part of the layout (skipped).
fn cap_of(rel: &Path, limits: &Limits) -> Option<u64> {
    let mut parts = rel.components();
    let first = parts.next()?.as_os_str();
    if first == OsStr::new(CHECKPOINT_DIR) {
        return Some(limits.file);
    }
    if parts.next().is_some() {
        return None;
    }
    match first.to_str()? {
        CONFIG_DUMP | SPEC_DUMP | DELETED_FILES => Some(limits.dump),
        ROOTFS_DIFF => Some(limits.file),
        _ => None,
    }
}

fn extract_into(archive: &Path, dest: &Path, limits: &Limits) -> Result<(), RestoreError> {
    let file = open_archive(archive)?;
    let malformed = |e: crius_image::unpack::UnpackError| invalid(archive, format!("not a valid tar: {e}"));
    let mut stream = TarStream::new(io::BufReader::new(file));
    let (mut entries, mut total) = (0u64, 0u64);
    while let Some(mut entry) = stream.next_entry().map_err(malformed)? {
        entries += 1;
        if entries > limits.entries {
            return Err(invalid(archive, format!("more than {} entries", limits.entries)));
        }
        let name = PathBuf::from(OsStr::from_bytes(&entry.path));
        let rel = checked_name(&name).ok_or_else(|| {
            invalid(
                archive,
                format!("entry {name:?} is not a relative path of plain components"),
            )
        })?;
        let Some(cap) = cap_of(&rel, limits) else {
            continue;
        };
        // CRIU's image dir is flat; one level of subdirectories is tolerated, no deeper.
        if rel.components().count() > 3 {
            return Err(invalid(archive, format!("entry {name:?} is nested too deep")));
        }
        match entry.kind {
            // Directories only inside CRIU's image dir: a layout file is never a directory.
            EntryType::Directory if rel.starts_with(CHECKPOINT_DIR) => {
                make_dirs(dest, &rel).map_err(conflict(archive, &name, dest, &rel))?;
            }
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.remaining();
                if size > cap {
                    return Err(invalid(
                        archive,
                        format!("entry {name:?} of {size} bytes is over its {cap}-byte limit"),
                    ));
                }
                total = total.saturating_add(size);
                if total > limits.total {
                    return Err(invalid(
                        archive,
                        format!("its files exceed the {}-byte limit", limits.total),
                    ));
                }
                if let Some(parent) = rel.parent() {
                    make_dirs(dest, parent).map_err(conflict(archive, &name, dest, parent))?;
                }
                write_file(archive, dest, &rel, &mut entry, size)?;
            }
            other => {
                return Err(invalid(
                    archive,
                    format!(
                        "entry {name:?} is a {other:?}; only regular files, and directories in \
                         {CHECKPOINT_DIR}/, are accepted"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A `make_dirs` failure: an earlier entry's file where this entry needs a directory is the
/// archive's fault (Invalid), anything else a local one.
fn conflict<'a>(
    archive: &'a Path,
    name: &'a Path,
    dest: &'a Path,
    rel: &'a Path,
) -> impl FnOnce(io::Error) -> RestoreError + 'a {
    move |e| match e.kind() {
        io::ErrorKind::AlreadyExists => invalid(
            archive,
            format!("entry {name:?} needs a directory where an earlier entry is a file"),
        ),
        _ => io_at(archive, "create", &dest.join(rel))(e),
    }
}

/// A tar name as a relative path of normal components (a leading `./` is dropped); `None`
/// for `..`, an absolute name or an empty one.
fn checked_name(name: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Creates `rel`'s directories under `dest` (0700), refusing any existing non-directory
/// (`symlink_metadata`: a symlink is never followed; only this code creates entries here).
fn make_dirs(dest: &Path, rel: &Path) -> io::Result<()> {
    let mut p = dest.to_path_buf();
    for c in rel.components() {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(io::ErrorKind::AlreadyExists.into()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new().mode(0o700).create(&p)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_file(
    archive: &Path,
    dest: &Path,
    rel: &Path,
    data: &mut impl Read,
    size: u64,
) -> Result<(), RestoreError> {
    let path = dest.join(rel);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => invalid(archive, format!("entry {rel:?} appears twice")),
            _ => io_at(archive, "create", &path)(e),
        })?;
    let copied = io::copy(&mut data.take(size), &mut f).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => {
            invalid(archive, format!("entry {rel:?}: {e}"))
        }
        _ => io_at(archive, "write", &path)(e),
    })?;
    if copied != size {
        return Err(invalid(archive, format!("entry {rel:?} is truncated")));
    }
    Ok(())
}

/// Reads a dump file with its cap (the extraction capped it already; this bounds the read too).
fn read_dump(archive: &Path, dest: &Path, name: &str, cap: u64) -> Result<Option<Vec<u8>>, RestoreError> {
    let path = dest.join(name);
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at(archive, "open", &path)(e)),
    };
    let mut body = Vec::new();
    f.take(cap + 1)
        .read_to_end(&mut body)
        .map_err(io_at(archive, "read", &path))?;
    if body.len() as u64 > cap {
        return Err(invalid(archive, format!("{name} is over its {cap}-byte limit")));
    }
    Ok(Some(body))
}

fn decode(archive: &Path, dest: &Path, limits: &Limits) -> Result<Extracted, RestoreError> {
    let need = |name: &str| -> Result<Vec<u8>, RestoreError> {
        read_dump(archive, dest, name, limits.dump)?
            .ok_or_else(|| invalid(archive, format!("{name} is missing: not a checkpoint archive")))
    };
    let config: ConfigDumpIn = serde_json::from_slice(&need(CONFIG_DUMP)?)
        .map_err(|e| invalid(archive, format!("{CONFIG_DUMP}: {e}")))?;
    if config.image_candidates().is_empty() {
        return Err(invalid(archive, format!("{CONFIG_DUMP} names no image")));
    }
    let spec: oci_spec::runtime::Spec = serde_json::from_slice(&need(SPEC_DUMP)?)
        .map_err(|e| invalid(archive, format!("{SPEC_DUMP}: {e}")))?;
    let deleted: Vec<String> = match read_dump(archive, dest, DELETED_FILES, limits.dump)? {
        Some(body) => {
            serde_json::from_slice(&body).map_err(|e| invalid(archive, format!("{DELETED_FILES}: {e}")))?
        }
        None => Vec::new(),
    };
    for d in &deleted {
        if !d.starts_with('/') || checked_name(Path::new(d.trim_start_matches('/'))).is_none() {
            return Err(invalid(
                archive,
                format!("{DELETED_FILES} lists {d:?}, not an absolute path without `..`"),
            ));
        }
    }
    let images = dest.join(CHECKPOINT_DIR);
    if !std::fs::symlink_metadata(&images).is_ok_and(|m| m.is_dir()) {
        return Err(invalid(
            archive,
            format!("{CHECKPOINT_DIR}/ (CRIU's images) is missing"),
        ));
    }
    Ok(Extracted {
        dir: dest.to_path_buf(),
        config,
        spec,
        deleted,
    })
}

/// Applies the writable-layer changes of `x` to the mounted `rootfs`: `rootfs-diff.tar` (a
/// plain tar, entries capped like the archive's, applied by the image crate's layer applier,
/// which resolves every name inside the root), then removes each path of `deleted.files`
/// (resolved inside the root, the last component not followed).
pub fn apply_rootfs_changes(
    archive: &Path,
    x: &Extracted,
    rootfs: &Path,
    limits: &Limits,
) -> Result<(), RestoreError> {
    if let Some(diff) = x.rootfs_diff() {
        check_plain_tar(archive, &diff, limits)?;
        let f = File::open(&diff).map_err(io_at(archive, "open", &diff))?;
        crius_image::unpack::apply_to_dir(f, rootfs)
            .map_err(|e| invalid(archive, format!("{ROOTFS_DIFF}: {e}")))?;
    }
    if x.deleted.is_empty() {
        return Ok(());
    }
    let root = pathrs::Root::open(rootfs).map_err(|e| RestoreError::Io {
        archive: archive.into(),
        what: "open",
        path: rootfs.into(),
        source: io::Error::other(e),
    })?;
    let mut done = BTreeSet::new();
    for d in &x.deleted {
        let rel = d.trim_start_matches('/');
        if !done.insert(rel) {
            continue;
        }
        match root.remove_all(rel) {
            Ok(()) => {}
            Err(e) if e.kind() == pathrs::error::ErrorKind::OsError(Some(libc::ENOENT)) => {}
            Err(e) => {
                return Err(RestoreError::Io {
                    archive: archive.into(),
                    what: "remove",
                    path: rootfs.join(rel),
                    source: io::Error::other(e),
                });
            }
        }
    }
    Ok(())
}

/// `rootfs-diff.tar` must be a plain tar (no compression, whose output would not be bounded by
/// the file's size) of at most `limits.entries` entries.
fn check_plain_tar(archive: &Path, diff: &Path, limits: &Limits) -> Result<(), RestoreError> {
    let f = File::open(diff).map_err(io_at(archive, "open", diff))?;
    if f.metadata().map(|m| m.size()).unwrap_or(0) == 0 {
        return Err(invalid(archive, format!("{ROOTFS_DIFF} is empty")));
    }
    let mut r = io::BufReader::new(f);
    let mut head = [0u8; 4];
    let n = r.read(&mut head).map_err(io_at(archive, "read", diff))?;
    if head[..n].starts_with(&[0x1f, 0x8b]) || head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(invalid(archive, format!("{ROOTFS_DIFF} is compressed")));
    }
    let f = File::open(diff).map_err(io_at(archive, "open", diff))?;
    let mut stream = TarStream::new(io::BufReader::new(f));
    let mut n = 0u64;
    while stream
        .next_entry()
        .map_err(|e| invalid(archive, format!("{ROOTFS_DIFF}: {e}")))?
        .is_some()
    {
        n += 1;
        if n > limits.entries {
            return Err(invalid(
                archive,
                format!("{ROOTFS_DIFF} has more than {} entries", limits.entries),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "tests/restore_archive.rs"]
mod tests;
