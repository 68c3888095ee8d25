//! Containers: the CRI container verbs (one file each), their records, the overlay rootfs and
//! the cgroup reads and writes, on top of `crius-shim` (through `shim_client`).
//!
//! Layout: `<root>/containers/<id>/{upper,work}` (writable layer, survives reboot);
//! `<state>/containers/<id>/` = the OCI bundle (`config.json`, `rootfs/` mount point) and
//! `shim/` (shim config, control socket, exit file); `<state>/youki/` is libcontainer's root.
//!
//! Invariants: every verb resolves the client's id once ([`Containers::resolve`]); verbs that
//! change one container are serialised by its lock (`locks`, keyed by the full id);
//! a record exists only for a container whose create fully succeeded (its shim is spawned by
//! StartContainer, so a CREATED record may have none: `pid` 0); every create failure undoes
//! what it did; stop and remove of an unknown container succeed. The async verbs never
//! touch the disk, a mount, a cgroup or redb on an async worker: that work runs through
//! [`Containers::blocking`], so a slow or hostile filesystem cannot stall the daemon's RPCs.
//!
//! Host access goes through the three seams of `seams.rs` (the shim's lifecycle, the rootfs
//! mount, the cgroup), held as trait objects: the daemon gets the real ones, the unit tests in
//! `tests/` drive the verbs with recording fakes.

mod attach;
mod census;
mod cgroup_sample;
mod cgroup_usage;
mod cgroupfs;
mod checkpoint;
mod checkpoint_archive;
mod create;
mod criu;
mod events;
mod exec_stream;
mod exec_sync;
mod layer_spares;
mod list;
mod mount_idmap;
mod pod;
mod readings;
mod record;
mod recover;
mod remove;
mod reopen_log;
mod restore;
mod restore_archive;
mod rootfs;
pub(crate) mod rootfs_idmap;
mod seams;
mod start;
mod stats;
mod stats_cache;
mod status;
pub(crate) mod stdio;
mod stop;
mod teardown;
mod teardown_queue;
mod update;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crius_shim_api::{ExitStatus, ShimConfig};

use crate::shim_client::{ShimClient, ShimError};
use crate::spec::{HostFacts, PodFiles, PodNamespaces, SpecError};

pub use census::{ContainerCensus, ExitCounts};
pub use cgroup_sample::Sample;
pub(crate) use cgroup_sample::read_capped;
pub use checkpoint::CheckpointError;
pub use events::{Event, EventKind, Events};
pub use pod::{PodHook, pod_info};
pub use readings::{ContainerReading, FsReading, ReadingParts};
pub use record::{Record, RecordError, State, Status};
pub use recover::Recovered;
pub use stats::PodStatsInput;

/// What a container needs from its pod, provided by the sandbox manager.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub id: String,
    pub config: cri_api::v1::PodSandboxConfig,
    pub ready: bool,
    pub namespaces: PodNamespaces,
    pub files: PodFiles,
    /// Absolute cgroupfs path of the pod cgroup; containers live in `<cgroup_parent>/<id>`
    /// (cgroupfs) or in the scope `<cgroup_parent>/crius-<id>.scope` (systemd).
    pub cgroup_parent: String,
    pub cgroup_driver: crius_sandbox::cgroup::Driver,
    /// The pod's runtime handler (`""`: the default); every container of the pod uses it.
    pub runtime_handler: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("container {0} not found")]
    NotFound(String),
    #[error("pod sandbox {0} not found")]
    PodNotFound(String),
    #[error("pod sandbox {0} is not ready")]
    PodNotReady(String),
    #[error("image {0:?} not found")]
    ImageNotFound(String),
    #[error("container name {name:?} is already used by container {id}")]
    AlreadyExists { name: String, id: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Cdi(#[from] crate::cdi::CdiError),
    #[error("container {id} is {state:?}: {action} needs {wanted}")]
    WrongState {
        id: String,
        state: State,
        action: &'static str,
        wanted: &'static str,
    },
    #[error("exec in container {id} did not finish within {seconds}s; it was killed")]
    ExecTimeout { id: String, seconds: i64 },
    #[error("container {id}: shim: {source}")]
    Shim {
        id: String,
        #[source]
        source: ShimError,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("image store: {0}")]
    Image(#[source] crius_image::StoreError),
    /// The pod's handler is no longer configured (the daemon restarted with another config).
    #[error("pod's {0}")]
    Handler(#[from] crate::handlers::UnknownHandler),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

impl ContainerError {
    fn shim(id: &str) -> impl FnOnce(ShimError) -> ContainerError + '_ {
        move |source| ContainerError::Shim {
            id: id.into(),
            source,
        }
    }
}

pub(crate) fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError {
    let path = path.to_path_buf();
    move |source| ContainerError::Io { what, path, source }
}

/// The container manager shared by the RPC handlers.
/// Shim scopes under systemd: `crius-shim-<id>.scope` in the pod slice.
const SHIM_SCOPE_PREFIX: &str = "crius-shim";

pub struct Containers {
    records: record::Records,
    images: Arc<crius_image::ImageStore>,
    /// The shim's lifecycle and control requests (every verb but the exec paths).
    shim: Arc<dyn seams::ShimLifecycle>,
    /// The exec helper (ExecSync and the streaming exec, see `seams.rs` for why not a seam).
    exec: ShimClient,
    mounter: Arc<dyn seams::RootfsMounter>,
    cgroups: Arc<dyn seams::CgroupAccess>,
    host: HostFacts,
    root: PathBuf,
    state: PathBuf,
    /// Per-container locks, keyed by full id: verbs that change a container hold its lock for
    /// their whole run.
    locks: cri_api::keyed::KeyedLocks,
    /// Names being created right now (`<pod>/<name>/<attempt>`), so concurrent creates of one
    /// name fail fast instead of both doing the work.
    creating: Mutex<HashMap<String, String>>,
    /// The stats RPCs' latest reading per container and pod (`stats_cache.rs`).
    stats_cache: stats_cache::StatsCache,
    /// Lifecycle events (see `events.rs`), sent after the record change committed.
    events: Events,
    /// Started on first use (it needs the state dir to exist); see `watch.rs`.
    watcher: OnceLock<watch::ExitWatcher>,
    /// Where cgroupfs-driver shims go when the daemon runs as a systemd service (empty: stay).
    shim_dirs: Vec<PathBuf>,
    /// CDI spec directories, lowest priority first (`[cdi] spec_dirs`).
    cdi_spec_dirs: Vec<PathBuf>,
    /// The runtime handlers in force (a pod's handler picks its containers' runtime).
    handlers: crate::handlers::Handlers,
    /// Teardowns RemoveContainer handed off after the record's removal (`teardown_queue.rs`).
    teardowns: teardown_queue::TeardownQueue,
}

impl Containers {
    pub fn new(
        db: Arc<redb::Database>,
        images: Arc<crius_image::ImageStore>,
        root: &Path,
        state: &Path,
    ) -> Result<Containers, ContainerError> {
        let shim = ShimClient::locate();
        Ok(Containers {
            records: record::Records::new(db)?,
            images,
            shim: Arc::new(shim.clone()),
            exec: shim,
            mounter: Arc::new(seams::Overlay {
                spares: Arc::new(layer_spares::LayerSpares::new(root)),
            }),
            cgroups: Arc::new(seams::Cgroupfs),
            host: HostFacts::detect(),
            root: root.to_path_buf(),
            state: state.to_path_buf(),
            locks: Default::default(),
            creating: Mutex::new(HashMap::new()),
            stats_cache: Default::default(),
            events: Events::default(),
            watcher: OnceLock::new(),
            shim_dirs: cgroupfs::shim_dirs(
                &std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
                Path::new("/run/systemd/system").is_dir(),
            ),
            cdi_spec_dirs: crate::cdi::CdiConfig::default().spec_dirs,
            handlers: Default::default(),
            teardowns: teardown_queue::TeardownQueue::new(teardown_queue::CAPACITY),
        })
    }

    /// Holds at most `capacity` background teardowns (0: RemoveContainer always tears down
    /// inline, before the record goes).
    #[cfg(test)]
    pub(crate) fn with_teardown_capacity(mut self, capacity: usize) -> Self {
        self.teardowns = teardown_queue::TeardownQueue::new(capacity);
        self
    }

    /// Daemon shutdown: later removes tear down inline; the background teardowns get `grace` to
    /// finish. Returns how many were cut short (start-up recovery's orphan sweep finishes them).
    pub async fn drain_teardowns(&self, grace: std::time::Duration) -> usize {
        self.teardowns.close_and_drain(grace).await
    }

    /// Reads CDI device specs from `dirs` (lowest priority first) instead of the defaults.
    pub fn with_cdi_spec_dirs(mut self, dirs: Vec<PathBuf>) -> Self {
        self.cdi_spec_dirs = dirs;
        self
    }

    /// Serves the runtime handlers of `handlers` (the default `""` only, unless called).
    pub fn with_handlers(mut self, handlers: crate::handlers::Handlers) -> Self {
        self.handlers = handlers;
        self
    }

    /// Uses `shim` instead of the one next to the daemon binary (tests).
    pub fn with_shim(mut self, shim: ShimClient) -> Self {
        self.shim = Arc::new(shim.clone());
        self.exec = shim;
        self
    }

    /// Replaces the host seams (unit tests: fakes that record calls and fail on cue).
    #[cfg(test)]
    pub(crate) fn with_seams(
        mut self,
        shim: Arc<dyn seams::ShimLifecycle>,
        mounter: Arc<dyn seams::RootfsMounter>,
        cgroups: Arc<dyn seams::CgroupAccess>,
    ) -> Self {
        self.shim = shim;
        self.mounter = mounter;
        self.cgroups = cgroups;
        self
    }

    /// Runs `f` on tokio's blocking pool and waits for it; the task runs to its end even if the
    /// caller is dropped. A panic in `f` is resumed in the caller.
    pub(crate) async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Containers) -> T + Send + 'static,
    ) -> T {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || f(&this)).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// [`Containers::refreshed`] on the blocking pool.
    pub(crate) async fn refreshed_off(self: &Arc<Self>, id: &str) -> Result<Record, ContainerError> {
        let id = id.to_string();
        self.blocking(move |c| c.refreshed(&id)).await
    }

    /// The container a client's `query` names: its full id or a unique prefix of one (the rule
    /// of [`cri_api::validate::resolve_id`], shared with the pod verbs). `None`: no container
    /// has it; an ambiguous prefix is InvalidArgument naming the candidates.
    pub(crate) fn resolve(&self, query: &str) -> Result<Option<String>, ContainerError> {
        let matches = if cri_api::validate::plausible_id(query) {
            self.records
                .ids_with_prefix(query, cri_api::validate::PREFIX_CANDIDATES)?
        } else {
            Vec::new()
        };
        cri_api::validate::resolve_id("container id", query, &matches)
            .map_err(|e| ContainerError::Invalid(e.to_string()))
    }

    /// [`Containers::resolve`] on the blocking pool: what every verb does first.
    pub(crate) async fn resolve_off(self: &Arc<Self>, query: &str) -> Result<Option<String>, ContainerError> {
        let query = query.to_string();
        self.blocking(move |c| c.resolve(&query)).await
    }

    /// [`Containers::resolve_off`] for the verbs that need the container: NotFound otherwise.
    pub(crate) async fn find(self: &Arc<Self>, query: &str) -> Result<String, ContainerError> {
        self.resolve_off(query)
            .await?
            .ok_or_else(|| ContainerError::NotFound(query.into()))
    }

    pub(crate) fn bundle_dir(&self, id: &str) -> PathBuf {
        self.state.join("containers").join(id)
    }
    pub(crate) fn rootfs_dir(&self, id: &str) -> PathBuf {
        self.bundle_dir(id).join("rootfs")
    }
    pub(crate) fn shim_dir(&self, id: &str) -> PathBuf {
        self.bundle_dir(id).join("shim")
    }
    pub(crate) fn layer_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }
    pub(crate) fn youki_root(&self) -> PathBuf {
        self.state.join("youki")
    }

    /// Under systemd a container's shim gets its own scope in the pod slice (its memory counts
    /// to the pod, as CRI-O's conmon); under cgroupfs, a cgroup beside the daemon's unit.
    fn shim_cgroup(&self, r: &Record) -> Option<crius_shim_api::ShimCgroup> {
        if r.systemd_cgroup {
            let slice = Path::new(&r.cgroup_path).parent()?.file_name()?.to_str()?;
            return Some(crius_shim_api::ShimCgroup::Scope(
                crius_sandbox::slice::cgroups_path(slice, SHIM_SCOPE_PREFIX, &r.id),
            ));
        }
        (!self.shim_dirs.is_empty()).then(|| crius_shim_api::ShimCgroup::Dirs(self.shim_dirs.clone()))
    }

    /// The shim's configuration for `r`, whose spec is `oci`.
    pub(crate) fn shim_config(&self, r: &Record, oci: &oci_spec::runtime::Spec) -> ShimConfig {
        let poststop_hooks = oci
            .hooks()
            .as_ref()
            .and_then(|h| h.poststop().as_ref())
            .is_some_and(|p| !p.is_empty());
        ShimConfig {
            version: crius_shim_api::PROTOCOL_VERSION,
            id: r.id.clone(),
            bundle: self.bundle_dir(&r.id),
            youki_root: self.youki_root(),
            shim_dir: self.shim_dir(&r.id),
            log_path: r.log_path.clone(),
            terminal: r.config.tty,
            stdin: r.config.stdin,
            stdin_once: r.config.stdin_once,
            cgroup_path: r.cgroup_path.clone(),
            systemd_cgroup: r.systemd_cgroup,
            shim_cgroup: self.shim_cgroup(r),
            kill_all_on_exit: crate::spec::shares_pid_namespace(oci),
            poststop_hooks,
            runtime: r.runtime.clone(),
            cgroup_v1_mounts: cgroup_v1_mounts(),
            restore_images: r.restored_from.as_ref().map(|_| {
                self.layer_dir(&r.id)
                    .join(restore::RESTORE_DIR)
                    .join(checkpoint_archive::CHECKPOINT_DIR)
            }),
        }
    }

    /// The exec helper's request to run `args` in container `r` (no terminal yet).
    pub(crate) fn exec_request_for(&self, r: &Record, args: Vec<String>) -> crius_shim_api::ExecRequest {
        crius_shim_api::ExecRequest {
            version: crius_shim_api::PROTOCOL_VERSION,
            id: r.id.clone(),
            youki_root: self.youki_root(),
            bundle: self.bundle_dir(&r.id),
            scratch_dir: self.shim_dir(&r.id),
            args,
            console_socket: None,
            runtime: r.runtime.clone(),
            systemd_cgroup: r.systemd_cgroup,
        }
    }

    /// The record, with an exit the shim recorded folded in (the shim writes the exit file;
    /// the daemon learns of it here).
    pub(crate) fn refreshed(&self, id: &str) -> Result<Record, ContainerError> {
        let r = self
            .records
            .get(id)?
            .ok_or_else(|| ContainerError::NotFound(id.into()))?;
        self.fold_exit(r)
    }

    pub(crate) fn fold_exit(&self, r: Record) -> Result<Record, ContainerError> {
        fold_exit_file(&self.records, &self.events, &self.shim_dir(&r.id), r, true)
    }

    /// The container lifecycle events (the daemon's event bus subscribes here).
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Starts watching a CREATED/RUNNING container for its exit (see `watch.rs`).
    pub(crate) fn watch_exit(&self, id: &str) {
        self.watcher
            .get_or_init(|| {
                watch::ExitWatcher::start(
                    self.records.clone(),
                    self.events.clone(),
                    self.state.join("containers"),
                )
            })
            .watch(id);
    }

    /// Records an exit that did not come from the shim's exit file (the shim is gone), unless an
    /// exit is already recorded; publishes STOPPED and counts a lost shim when it changed the
    /// record.
    pub(crate) fn record_lost_exit(
        &self,
        id: &str,
        exit: &ExitStatus,
        message: &str,
    ) -> Result<Record, ContainerError> {
        let mut changed = false;
        let _order = self.events.order();
        let r = self.records.update::<ContainerError>(id, |s| {
            if matches!(s.state, State::Running | State::Created | State::Unknown) {
                mark_exited(s, exit);
                s.message = message.into();
                changed = true;
            }
            Ok(())
        })?;
        if changed {
            self.events.exit_counts().shim_lost();
            self.events.send(&r.id, &r.sandbox_id, EventKind::Stopped);
        }
        Ok(r)
    }

    /// Every record (exits folded in).
    /// Every container, those with an unreadable record included as far as they can be read
    /// (state UNKNOWN, see `record::Unreadable`).
    pub(crate) fn all(&self) -> Result<Vec<Record>, ContainerError> {
        self.selected(|_| true)
    }

    /// The containers `keep` selects, as [`Containers::all`] gives them; `keep` sees the record
    /// before its exit is folded in, so it must not select by state.
    pub(crate) fn selected(&self, keep: impl Fn(&Record) -> bool) -> Result<Vec<Record>, ContainerError> {
        let unreadable = self.records.unreadable()?;
        let mut all = self
            .records
            .select(&keep)?
            .into_iter()
            .map(|r| self.fold_exit(r))
            .collect::<Result<Vec<_>, _>>()?;
        all.extend(
            unreadable
                .into_iter()
                .filter_map(|u| u.salvaged)
                .filter(|r| keep(r)),
        );
        Ok(all)
    }

    /// Ids of the containers of one pod (for StopPodSandbox/RemovePodSandbox).
    pub fn ids_in_pod(&self, sandbox_id: &str) -> Result<Vec<String>, ContainerError> {
        Ok(self
            .records
            .select(|r| r.sandbox_id == sandbox_id)?
            .into_iter()
            .map(|r| r.id)
            .collect())
    }
}

/// Folds the shim's exit file (in `shim_dir`) into a RUNNING/UNKNOWN (and, with `from_created`,
/// CREATED) record; publishes STOPPED exactly once, from the update that made the change. The
/// exit watcher leaves CREATED records to StartContainer, which folds right after recording
/// RUNNING, so STARTED is always published before STOPPED.
pub(crate) fn fold_exit_file(
    records: &record::Records,
    events: &Events,
    shim_dir: &Path,
    r: Record,
    from_created: bool,
) -> Result<Record, ContainerError> {
    let foldable = |s: State| match s {
        State::Running | State::Unknown => true,
        State::Created => from_created,
        State::Exited => false,
    };
    if !foldable(r.status.state) {
        return Ok(r);
    }
    let path = shim_dir.join(crius_shim_api::EXIT_FILE);
    let exit = match ExitStatus::read(&path) {
        Ok(Some(e)) => e,
        Ok(None) => return Ok(r),
        Err(e) => {
            tracing::warn!(id = %r.id, "{e}");
            return Ok(r);
        }
    };
    let mut changed = false;
    let _order = events.order();
    let r = records.update::<ContainerError>(&r.id, |s| {
        if foldable(s.state) {
            mark_exited(s, &exit);
            changed = true;
        }
        Ok(())
    })?;
    if changed {
        if exit.oom_killed {
            events.exit_counts().oom_killed();
        }
        events.send(&r.id, &r.sandbox_id, EventKind::Stopped);
    }
    Ok(r)
}

/// FailedPrecondition naming `action` unless `r` is in one of the `allowed` states.
pub(crate) fn require_state(
    r: &Record,
    allowed: &[State],
    action: &'static str,
) -> Result<(), ContainerError> {
    if allowed.contains(&r.status.state) {
        return Ok(());
    }
    let wanted = match allowed {
        [State::Created] => "a created container",
        [State::Running] => "a running container",
        _ => "a created or running container",
    };
    Err(ContainerError::WrongState {
        id: r.id.clone(),
        state: r.status.state,
        action,
        wanted,
    })
}

/// CRI reasons: `OOMKilled` when the memory cgroup killed, `Completed` on 0, else `Error`.
pub(crate) fn mark_exited(s: &mut Status, exit: &ExitStatus) {
    s.state = State::Exited;
    s.exit_code = exit.exit_code;
    s.finished_at = exit.finished_at;
    s.reason = if exit.oom_killed {
        "OOMKilled"
    } else if exit.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
    .into();
}

/// Nanoseconds since the epoch.
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// CRI ids: 64 lowercase hex characters from the kernel's random source.
pub(crate) fn new_id() -> Result<String, ContainerError> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(io_err("read", Path::new("/dev/urandom")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The host's cgroup v1 mount points for the shim's libcgroups (see
/// [`ShimConfig::cgroup_v1_mounts`]): those the daemon, too, takes as fixed for its lifetime.
fn cgroup_v1_mounts() -> Option<Vec<PathBuf>> {
    let h = crius_sandbox::cgroup::Hierarchies::host();
    (!h.v1.is_empty() && !h.unified_only()).then(|| h.v1.iter().map(|m| m.mount.clone()).collect())
}
