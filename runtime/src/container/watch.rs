//! The exit watcher: notices a container's exit without any client asking. One inotify
//! instance watches the shim directory of every CREATED/RUNNING container; when the shim renames
//! its exit file into place, a dedicated thread folds the exit into the record (which publishes
//! CONTAINER_STOPPED_EVENT).
//!
//! Invariants: a container is watched from create (or recovery) until its exit is folded or its
//! directory is removed; an exit file that appeared before the watch was added is folded right
//! when the watch is added, so no exit is missed; the thread never takes a container lock and
//! never blocks a tokio worker. Without inotify the exit is still folded lazily on every read.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::events::Events;
use super::record::Records;

const MASK: u32 = libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE | libc::IN_CREATE;

pub(crate) struct ExitWatcher {
    inner: Option<Arc<Inner>>,
    records: Records,
    events: Events,
    containers_dir: PathBuf,
}

struct Inner {
    fd: OwnedFd,
    /// Watch descriptor → container id.
    watches: Mutex<HashMap<i32, String>>,
}

impl ExitWatcher {
    /// Starts the watcher thread over `<state>/containers`.
    pub(crate) fn start(records: Records, events: Events, containers_dir: PathBuf) -> ExitWatcher {
        // SAFETY: plain syscall; the returned fd is owned below.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        let inner = if fd < 0 {
            tracing::error!(
                error = %std::io::Error::last_os_error(),
                "inotify unavailable: container exits are noticed only when a client asks"
            );
            None
        } else {
            // SAFETY: fd is a fresh descriptor nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let inner = Arc::new(Inner {
                fd,
                watches: Mutex::new(HashMap::new()),
            });
            let (t_inner, t_records, t_events, t_dir) = (
                inner.clone(),
                records.clone(),
                events.clone(),
                containers_dir.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name("crius-exit-watch".into())
                .spawn(move || run(&t_inner, &t_records, &t_events, &t_dir));
            match spawned {
                Ok(_) => Some(inner),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the exit watcher thread");
                    None
                }
            }
        };
        ExitWatcher {
            inner,
            records,
            events,
            containers_dir,
        }
    }

    /// Watches container `id`'s shim directory; folds an exit that is already there.
    pub(crate) fn watch(&self, id: &str) {
        let shim_dir = shim_dir(&self.containers_dir, id);
        if let Some(inner) = &self.inner {
            match CString::new(shim_dir.as_os_str().as_bytes()) {
                Ok(path) => {
                    // SAFETY: valid fd and NUL-terminated path.
                    let wd = unsafe { libc::inotify_add_watch(inner.fd.as_raw_fd(), path.as_ptr(), MASK) };
                    if wd < 0 {
                        tracing::warn!(id, error = %std::io::Error::last_os_error(), "cannot watch the shim directory");
                    } else {
                        lock(&inner.watches).insert(wd, id.to_string());
                    }
                }
                Err(_) => tracing::warn!(id, "shim directory path contains NUL"),
            }
        }
        fold(&self.records, &self.events, &self.containers_dir, id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn shim_dir(containers_dir: &Path, id: &str) -> PathBuf {
    containers_dir.join(id).join("shim")
}

/// Folds the exit file of `id` into its record, if there is one. Returns whether it did.
fn fold(records: &Records, events: &Events, containers_dir: &Path, id: &str) -> bool {
    match records.get(id) {
        Ok(Some(r)) => {
            match super::fold_exit_file(records, events, &shim_dir(containers_dir, id), r, false) {
                // A CREATED container's exit is folded by StartContainer; keep watching until then.
                Ok(r) => !matches!(r.status.state, super::State::Running | super::State::Created),
                Err(e) => {
                    tracing::warn!(id, error = %e, "cannot record the container's exit");
                    false
                }
            }
        }
        Ok(None) => true,
        Err(e) => {
            tracing::warn!(id, error = %e, "cannot read the container record");
            false
        }
    }
}

fn run(inner: &Inner, records: &Records, events: &Events, containers_dir: &Path) {
    let mut buf = vec![0u8; 64 * 1024];
    let header = std::mem::size_of::<libc::inotify_event>();
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::read(inner.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %e, "exit watcher stopped; exits are noticed lazily from now on");
            return;
        }
        let n = n as usize;
        let mut off = 0;
        while off + header <= n {
            // SAFETY: the kernel wrote a whole inotify_event header at `off`; read unaligned.
            let ev: libc::inotify_event = unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
            let name_end = (off + header + ev.len as usize).min(n);
            let name = &buf[off + header..name_end];
            let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
            off = name_end;
            if ev.mask & libc::IN_IGNORED != 0 {
                lock(&inner.watches).remove(&ev.wd);
                continue;
            }
            if name != crius_shim_api::EXIT_FILE.as_bytes() {
                continue;
            }
            let Some(id) = lock(&inner.watches).get(&ev.wd).cloned() else {
                continue;
            };
            if fold(records, events, containers_dir, &id) {
                // SAFETY: valid fd; a stale wd only yields EINVAL.
                unsafe { libc::inotify_rm_watch(inner.fd.as_raw_fd(), ev.wd) };
            }
        }
    }
}
