//! The exit watcher: notices a container's exit without any client asking. One inotify
//! instance watches the shim directory of every CREATED/RUNNING container; when the shim renames
//! its exit file into place, a dedicated thread folds the exit into the record (which publishes
//! CONTAINER_STOPPED_EVENT).
//!
//! Invariants: a container is watched from create (or recovery) until its exit is folded or its
//! directory is removed; an exit file that appeared before the watch was added is folded right
//! when the watch is added, so no exit is missed; the thread never takes a container lock and
//! never blocks a tokio worker. Without inotify the exit is still folded lazily on every read.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use super::events::Events;
use super::record::Records;

const MASK: AddWatchFlags = AddWatchFlags::IN_MOVED_TO
    .union(AddWatchFlags::IN_CLOSE_WRITE)
    .union(AddWatchFlags::IN_CREATE);

pub(crate) struct ExitWatcher {
    inner: Option<Arc<Inner>>,
    records: Records,
    events: Events,
    containers_dir: PathBuf,
}

struct Inner {
    inotify: Inotify,
    watches: Mutex<Watches>,
    /// False once the thread stopped: exits are then only folded lazily, by the readers.
    alive: AtomicBool,
}

impl ExitWatcher {
    /// Starts the watcher thread over `<state>/containers`.
    pub(crate) fn start(records: Records, events: Events, containers_dir: PathBuf) -> ExitWatcher {
        let inner = match Inotify::init(InitFlags::IN_CLOEXEC) {
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "inotify unavailable: container exits are noticed only when a client asks"
                );
                None
            }
            Ok(inotify) => {
                let inner = Arc::new(Inner {
                    inotify,
                    watches: Mutex::default(),
                    alive: AtomicBool::new(true),
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
            match inner.inotify.add_watch(&shim_dir, MASK) {
                Ok(wd) => {
                    let mut w = lock(&inner.watches);
                    w.by_wd.insert(wd, id.to_string());
                    w.ids.insert(id.to_string());
                }
                Err(e) => tracing::warn!(id, error = %e, "cannot watch the shim directory"),
            }
        }
        fold(&self.records, &self.events, &self.containers_dir, id);
    }
}

/// The watched shim directories, by descriptor and by container id. Its lock is never held
/// across a system call, so [`ExitWatcher::watches`] may be asked on an async worker.
#[derive(Default)]
struct Watches {
    by_wd: HashMap<WatchDescriptor, String>,
    ids: HashSet<String>,
}

impl ExitWatcher {
    /// Whether the thread is running and watches `id`'s shim directory, so it folds the exit
    /// the moment the shim writes it: a reader may then leave the exit file alone.
    pub(crate) fn watches(&self, id: &str) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|i| i.alive.load(Ordering::Acquire) && lock(&i.watches).ids.contains(id))
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

/// Reads events until inotify fails. Each read returns at most one 4 KiB buffer of events (nix
/// reads into a fixed buffer that holds at least one event with the longest name).
fn run(inner: &Inner, records: &Records, events: &Events, containers_dir: &Path) {
    loop {
        let evs = match inner.inotify.read_events() {
            Ok(evs) => evs,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                inner.alive.store(false, Ordering::Release);
                tracing::error!(error = %e, "exit watcher stopped; exits are noticed lazily from now on");
                return;
            }
        };
        for ev in evs {
            if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                // Events were lost: look at every watched container.
                let ids: Vec<String> = lock(&inner.watches).ids.iter().cloned().collect();
                for id in ids {
                    fold(records, events, containers_dir, &id);
                }
                continue;
            }
            if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                let mut w = lock(&inner.watches);
                if let Some(id) = w.by_wd.remove(&ev.wd) {
                    w.ids.remove(&id);
                }
                continue;
            }
            if ev.name.as_deref() != Some(std::ffi::OsStr::new(crius_shim_api::EXIT_FILE)) {
                continue;
            }
            let Some(id) = lock(&inner.watches).by_wd.get(&ev.wd).cloned() else {
                continue;
            };
            if fold(records, events, containers_dir, &id) {
                // A stale descriptor only fails with EINVAL; IN_IGNORED then drops the entry.
                let _ = inner.inotify.rm_watch(ev.wd);
            }
        }
    }
}
