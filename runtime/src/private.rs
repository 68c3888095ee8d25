//! File modes of the daemon's own state, as containerd and CRI-O set them after CVE-2021-41103:
//! nothing under `root` or `state` is readable, listable or executable by anyone but root.
//!
//! - `root`: 0700, and so is every directory crius makes directly below `root` and `state`
//!   (`content`, `layers`, `containers`; `youki`), each container's bundle, shim
//!   and writable-layer directory, and the work dir of its overlay.
//! - `state`, `state/containers`, `state/pods` and `state/ns`: 0711, searchable but not
//!   listable (as containerd's state dirs): a container in a pod user namespace is set up by
//!   its root, an unprivileged id on the host, which must reach its rootfs, pod files and
//!   pinned namespaces by path. Its bundle and its pod's dirs are 0710, group the mapped root
//!   gid; every other one stays 0700.
//! - The database (0600, `store`), every `config.json` and `shim.json` (0600: they hold the
//!   container's environment), every socket (0600, the CRI socket included).
//!
//! Left as they are, on purpose: unpacked layer directories and a container's `upper` dir (they
//! are the root directories of the container's filesystem: their modes are the image's and the
//! container's own, and a non-root container user needs `/` searchable) and the pod files that
//! containers bind-mount (`hosts`, `resolv.conf`, `hostname`: 0644; `shm`: a 1777 tmpfs).
//!
//! Invariant: [`tighten`] runs at start-up before anything is served, touches only the entries
//! named above (never a symlink, never a layer or `upper` dir, never a mount point), and only
//! ever removes permission bits.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::dir_names::id_names;

/// Directories crius creates directly below `root`.
const ROOT_DIRS: [&str; 4] = ["content", "content/blobs", "layers", "containers"];
/// Directories crius creates directly below `state`.
const STATE_DIRS: [&str; 4] = ["containers", "youki", "ns", "pods"];

/// Creates `dir` (and missing parents) with mode 0711, and sets 0711 on `dir` if it existed:
/// `state` and `state/containers` (see the module docs).
pub fn create_searchable_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o711).create(dir)?;
    std::fs::set_permissions(dir, Permissions::from_mode(0o711))
}

/// Creates `dir` (and missing parents) with mode 0700, and sets 0700 on `dir` if it existed.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, Permissions::from_mode(0o700))
}

/// Writes `body` to `path` (created or truncated), readable and writable by root only, also
/// when the file existed with another mode.
pub fn write_file(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(Permissions::from_mode(0o600))?;
    f.write_all(body)
}

/// Takes group and other permissions away from what an older crius (or an admin) left open:
/// see the module docs for which entries. Returns how many modes it changed; failures are
/// logged, never fatal (a missing entry is simply not there yet).
pub fn tighten(root: &Path, state: &Path) -> usize {
    let mut changed = 0;
    let mut set = |path: &Path, mode: u32| changed += usize::from(restrict(path, mode));
    set(root, 0o700);
    set(state, 0o711);
    for d in ROOT_DIRS {
        set(&root.join(d), 0o700);
    }
    set(&root.join("content/blobs/sha256"), 0o700);
    for d in STATE_DIRS {
        let searchable = matches!(d, "containers" | "pods" | "ns");
        set(&state.join(d), if searchable { 0o711 } else { 0o700 });
    }
    for id in id_names(&state.join("containers")) {
        let bundle = state.join("containers").join(&id);
        let shim = bundle.join("shim");
        // A user namespace container's bundle: searchable by its mapped root's group only.
        let userns = std::fs::metadata(&bundle).is_ok_and(|m| std::os::unix::fs::MetadataExt::gid(&m) != 0);
        set(&bundle, if userns { 0o710 } else { 0o700 });
        set(&bundle.join("config.json"), 0o600);
        set(&shim, 0o700);
        for f in [
            crius_shim_api::CONFIG_FILE,
            crius_shim_api::CONTROL_SOCKET,
            crius_shim_api::ATTACH_SOCKET,
            crius_shim_api::SHIM_LOG,
        ] {
            set(&shim.join(f), 0o600);
        }
    }
    for id in id_names(&root.join("containers")) {
        let layer = root.join("containers").join(&id);
        set(&layer, 0o700);
        set(&layer.join("work"), 0o700);
    }
    for id in id_names(&state.join("pods"))
        .into_iter()
        .chain(id_names(&state.join("ns")))
    {
        for d in [state.join("pods").join(&id), state.join("ns").join(&id)] {
            // A pod user namespace's dirs: searchable by its mapped root's group only.
            let userns = std::fs::metadata(&d).is_ok_and(|m| std::os::unix::fs::MetadataExt::gid(&m) != 0);
            set(&d, if userns { 0o710 } else { 0o700 });
        }
    }
    if changed > 0 {
        tracing::info!(changed, "tightened file modes left open under root and state");
    }
    changed
}

/// Sets `path`'s permission bits to `mode` if it is a file, directory or socket (not a symlink)
/// whose bits allow more. Returns whether it changed anything.
fn restrict(path: &Path, mode: u32) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let current = meta.permissions().mode() & 0o7777;
    if meta.file_type().is_symlink() || current & !mode == 0 {
        return false;
    }
    match std::fs::set_permissions(path, Permissions::from_mode(current & mode)) {
        Ok(()) => {
            tracing::debug!(path = %path.display(), from = format!("{current:o}"), to = format!("{:o}", current & mode), "tightened");
            true
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot tighten the mode");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn open_state_is_tightened_and_layer_roots_are_not() {
        let t = tempfile::tempdir().unwrap();
        let (root, state) = (t.path().join("root"), t.path().join("state"));
        let id = "ab".repeat(32);
        let bundle = state.join("containers").join(&id);
        for d in [
            root.join("content/blobs/sha256"),
            root.join("layers/sha256-x"),
            root.join("containers").join(&id).join("upper"),
            root.join("containers").join(&id).join("work"),
            bundle.join("shim"),
            bundle.join("rootfs"),
            state.join("youki"),
            state.join("pods").join(&id),
            state.join("ns").join(&id),
            state.join("ns").join("cd".repeat(32)),
        ] {
            std::fs::create_dir_all(&d).unwrap();
        }
        // A pod with its own user namespace: its dir's group is the mapped root gid.
        let userns_pod = state.join("ns").join("cd".repeat(32));
        std::os::unix::fs::lchown(&userns_pod, None, Some(65536)).unwrap();
        std::fs::write(bundle.join("config.json"), "{}").unwrap();
        std::fs::write(bundle.join("shim/shim.json"), "{}").unwrap();
        std::fs::write(state.join("pods").join(&id).join("resolv.conf"), "").unwrap();
        std::os::unix::fs::symlink("/etc", state.join("containers/link")).unwrap();
        let all = walk(t.path());
        for p in &all {
            let m = if p.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(p, Permissions::from_mode(m)).unwrap();
        }
        std::fs::set_permissions(root.join("layers/sha256-x"), Permissions::from_mode(0o4755)).unwrap();

        assert!(tighten(&root, &state) > 0);
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&state), 0o711);
        for d in [
            "content",
            "content/blobs",
            "content/blobs/sha256",
            "layers",
            "containers",
        ] {
            assert_eq!(mode(&root.join(d)), 0o700, "{d}");
        }
        assert_eq!(mode(&state.join("youki")), 0o700);
        for d in ["containers", "pods", "ns"] {
            assert_eq!(mode(&state.join(d)), 0o711, "{d}");
        }
        assert_eq!(mode(&state.join("ns").join(&id)), 0o700);
        assert_eq!(mode(&userns_pod), 0o710);
        assert_eq!(mode(&bundle), 0o700);
        assert_eq!(mode(&bundle.join("shim")), 0o700);
        assert_eq!(mode(&bundle.join("config.json")), 0o600);
        assert_eq!(mode(&bundle.join("shim/shim.json")), 0o600);
        assert_eq!(mode(&root.join("containers").join(&id)), 0o700);
        assert_eq!(mode(&root.join("containers").join(&id).join("work")), 0o700);
        // The container's and the image's own root directories keep their modes.
        assert_eq!(mode(&root.join("containers").join(&id).join("upper")), 0o755);
        assert_eq!(mode(&root.join("layers/sha256-x")), 0o4755);
        assert_eq!(mode(&bundle.join("rootfs")), 0o755);
        assert_eq!(mode(&state.join("pods").join(&id).join("resolv.conf")), 0o644);
        assert_eq!(mode(Path::new("/etc")), 0o755, "symlinks are not followed");
        assert_eq!(tighten(&root, &state), 0, "a second run changes nothing");
    }

    #[test]
    fn private_files_and_dirs_are_created_and_reset_to_owner_only() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        create_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&t.path().join("a")), 0o700);
        std::fs::set_permissions(&d, Permissions::from_mode(0o755)).unwrap();
        create_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        let f = d.join("config.json");
        std::fs::write(&f, "old").unwrap();
        std::fs::set_permissions(&f, Permissions::from_mode(0o644)).unwrap();
        write_file(&f, b"new").unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read(&f).unwrap(), b"new");
    }

    fn walk(p: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(p).unwrap().flatten() {
            let path = e.path();
            if e.file_type().unwrap().is_symlink() {
                continue;
            }
            if path.is_dir() {
                out.extend(walk(&path));
            }
            out.push(path);
        }
        out
    }
}
