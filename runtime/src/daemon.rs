//! The daemon's process lifecycle: directories, database, socket, serving, recovery, shutdown.
//!
//! Invariants: the socket is created only when no live daemon answers on it; the readiness gate
//! opens only after recovery; a shutdown stops accepting, gives in-flight RPCs a bounded time,
//! removes the socket and never touches running containers.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::server::{self, Crius};
use crate::store;

/// How long in-flight RPCs may run after SIGTERM/SIGINT before the daemon exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long, after the RPCs, background container teardowns may take at shutdown.
const TEARDOWN_DRAIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot open the image store: {0}")]
    Images(#[from] crius_image::StoreError),
    #[error("cannot start the pod sandbox manager: {0}")]
    Sandboxes(#[from] crius_sandbox::SandboxError),
    #[error("cannot start the container manager: {0}")]
    Containers(#[from] crate::container::ContainerError),
    #[error("another crius daemon is already serving on {0}; refusing to start")]
    AlreadyServing(PathBuf),
    #[error("cannot use socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Streaming(#[from] crius_streaming::StreamingError),
    #[error("cannot install signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("cgroup_manager = \"systemd\" needs {0}")]
    SystemdDriver(&'static str),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    // Before the socket exists: a SIGTERM sent once it appears must reach our handler, not
    // the default action.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(DaemonError::Signal)?;
    check_cgroup_driver(&config)?;
    // Whatever umask crius was started with, nothing it creates is group- or world-writable.
    let umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    nix::sys::stat::umask(umask | nix::sys::stat::Mode::from_bits_truncate(0o022));
    let searchable_dirs = ["containers", "pods", "ns"].map(|d| config.state.join(d));
    for (dir, searchable) in [(&config.root, false), (&config.state, true)]
        .into_iter()
        .chain(searchable_dirs.iter().map(|d| (d, true)))
    {
        let made = if searchable {
            crate::private::create_searchable_dir(dir)
        } else {
            crate::private::create_dir(dir)
        };
        made.map_err(|source| DaemonError::Dir {
            path: dir.clone(),
            source,
        })?;
    }
    crate::private::tighten(&config.root, &config.state);
    let listener = bind_socket(&config.listen)?;
    let db = match store::open(&config.root) {
        Ok(db) => db,
        Err(e) => {
            let _ = std::fs::remove_file(&config.listen);
            return Err(e.into());
        }
    };
    let images = match open_images(&config, &config.root, db.clone()) {
        Ok(images) => images,
        Err(e) => {
            let _ = std::fs::remove_file(&config.listen);
            return Err(e.into());
        }
    };
    // Recovery starts here: opening the sandbox manager reconciles the pods.
    let recovery_started = std::time::Instant::now();
    let sandboxes = match open_sandboxes(&config, db.clone()) {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&config.listen);
            return Err(e.into());
        }
    };
    let containers =
        match crate::container::Containers::new(db.clone(), images.clone(), &config.root, &config.state) {
            Ok(c) => Arc::new(
                c.with_cdi_spec_dirs(config.cdi.spec_dirs.clone())
                    .with_handlers(crate::handlers::Handlers::new(&config.runtimes, &config.state)),
            ),
            Err(e) => {
                let _ = std::fs::remove_file(&config.listen);
                return Err(e.into());
            }
        };
    sandboxes.set_container_hook(Arc::new(crate::container::PodHook::new(containers.clone())));
    // Pod user namespaces are advertised only if this host can idmap the layer store.
    let probe_dir = config.root.clone();
    let idmap = tokio::task::spawn_blocking(move || crate::container::rootfs_idmap::probe(&probe_dir))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    if let Err(e) = &idmap {
        tracing::info!(error = %e, "user namespaces are not available: no idmapped overlay root filesystem");
    }
    crate::info::set_user_namespaces(idmap.is_ok());
    sandboxes.set_user_namespaces(idmap.map_err(|e| {
        format!(
            "the start-up probe found no idmapped overlay root filesystem under {}: {e}",
            config.root.display()
        )
    }));
    let socket = config.listen.clone();
    if let Some(step) = crius_sandbox::crash::init() {
        tracing::warn!(
            step,
            "TEST-ONLY crash hook armed: the daemon aborts when a create reaches this step"
        );
    }
    let crius = Crius::new(config, db, images, sandboxes, containers);
    let events = crius
        .events
        .start(crius.containers.clone(), crius.sandboxes.clone());
    let backend = Arc::new(crate::node::streams::RuntimeStreams {
        sandboxes: crius.sandboxes.clone(),
        containers: crius.containers.clone(),
    });
    let streaming = match crius_streaming::StreamingServer::start(
        &crius.config.streaming.address,
        crius.config.streaming.port,
        backend,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&socket);
            return Err(e.into());
        }
    };
    let _ = crius.streaming.set(streaming);
    let metrics_server = match start_metrics(&crius).await {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&socket);
            return Err(e);
        }
    };
    let (runtime, images) = server::services(crius.clone());

    let recovery = tokio::spawn(recover(crius.clone(), recovery_started));

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serve = tonic::transport::Server::builder()
        .trace_fn(server::rpc_span)
        .layer(server::RpcLog {
            metrics: crius.metrics.clone(),
        })
        // Inside RpcLog, so a passed deadline is logged and counted with its code.
        .layer(server::ClientDeadline)
        .add_service(runtime)
        .add_service(images)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
            let _ = stop_rx.await;
        });
    tokio::pin!(serve);
    tracing::info!(socket = %socket.display(), version = env!("CARGO_PKG_VERSION"), "crius serving CRI");

    let result = tokio::select! {
        r = &mut serve => r.map_err(DaemonError::from),
        _ = sigterm.recv() => {
            crate::notify::stopping();
            // Event streams never end on their own; end them so in-flight RPCs can finish.
            crius.events.close();
            shutdown(serve, stop_tx, "SIGTERM").await
        }
        _ = tokio::signal::ctrl_c() => {
            crate::notify::stopping();
            crius.events.close();
            shutdown(serve, stop_tx, "SIGINT").await
        }
    };
    let cut_short = crius.containers.drain_teardowns(TEARDOWN_DRAIN).await;
    if cut_short > 0 {
        tracing::warn!(
            cut_short,
            "background container teardowns cut short; the next start's recovery finishes them"
        );
    }
    recovery.abort();
    events.abort();
    drop(metrics_server);
    let _ = std::fs::remove_file(&socket);
    tracing::info!("crius stopped; containers keep running");
    result
}

async fn shutdown<F>(
    serve: Pin<&mut F>,
    stop: tokio::sync::oneshot::Sender<()>,
    why: &str,
) -> Result<(), DaemonError>
where
    F: std::future::Future<Output = Result<(), tonic::transport::Error>>,
{
    tracing::info!(
        signal = why,
        "shutting down: no new connections, finishing in-flight RPCs"
    );
    let _ = stop.send(());
    match tokio::time::timeout(SHUTDOWN_GRACE, serve).await {
        Ok(r) => r.map_err(DaemonError::from),
        Err(_) => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "in-flight RPCs did not finish in time; exiting anyway");
            Ok(())
        }
    }
}

/// The systemd driver asks systemd for scopes over D-Bus and names them in the unified hierarchy:
/// refuse it at start-up, not at the first pod, where either is missing.
fn check_cgroup_driver(config: &Config) -> Result<(), DaemonError> {
    if config.cgroup_driver() != crius_sandbox::cgroup::Driver::Systemd {
        return Ok(());
    }
    if !Path::new("/run/systemd/system").is_dir() {
        return Err(DaemonError::SystemdDriver("systemd running as PID 1"));
    }
    if !crius_sandbox::cgroup::Hierarchies::host().unified_only() {
        return Err(DaemonError::SystemdDriver(
            "the unified cgroup v2 hierarchy at /sys/fs/cgroup",
        ));
    }
    tracing::info!("cgroup driver: systemd");
    Ok(())
}

/// The Prometheus endpoint on `metrics.address`, when it is set. A failure to bind is a
/// start-up error naming the address.
async fn start_metrics(crius: &Arc<Crius>) -> Result<Option<crate::metrics::MetricsServer>, DaemonError> {
    let address = &crius.config.metrics.address;
    if address.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        crate::metrics::MetricsServer::start(address, crius.metrics.clone()).await?,
    ))
}

/// Start-up recovery: reconciles every stored object with the kernel, then opens the gate.
/// Sandboxes were reconciled when their manager opened (at `started`); containers are
/// reconciled here, each bounded in time on its own (see `container::recover`).
async fn recover(crius: Arc<Crius>, started: std::time::Instant) {
    let containers = crius.containers.recover().await;
    let duration = started.elapsed();
    tracing::info!(elapsed = ?duration, "recovery finished; serving");
    crius.metrics.set_recovery(crate::metrics::Recovery {
        duration,
        pods: crius.sandboxes.recovered(),
        containers,
    });
    crius.mark_ready();
    crate::notify::ready();
}

/// Opens the image store under `root` with the configured registry mirrors.
pub fn open_images(
    config: &Config,
    root: &Path,
    db: Arc<redb::Database>,
) -> Result<Arc<crius_image::ImageStore>, crius_image::StoreError> {
    let hosts = config
        .registry
        .iter()
        .map(|(host, r)| {
            let mirror = crius_image::Mirror {
                endpoints: r.endpoints.clone(),
                fallback: r.fallback,
                send_credentials_to_mirrors: r.send_credentials_to_mirrors,
                tls: crius_image::registry::tls::HostTls {
                    ca_file: r.ca_file.clone(),
                    cert_file: r.cert_file.clone(),
                    key_file: r.key_file.clone(),
                    insecure_skip_verify: r.insecure_skip_verify,
                },
            };
            (host.clone(), mirror)
        })
        .collect();
    crius_image::ImageStore::open(
        db,
        crius_image::StoreConfig {
            root: root.to_path_buf(),
            registries: crius_image::RegistryHosts::new(hosts),
            pinned: config.pinned_images.clone(),
            platform: config.image_platform.clone(),
            auth_file: config.registry_auth_file.clone(),
        },
    )
}

/// The pod sandbox manager over the shared database. The infra process binary (`crius-shim`) is
/// looked up next to this executable.
pub fn open_sandboxes(
    config: &Config,
    db: Arc<redb::Database>,
) -> Result<Arc<crius_sandbox::SandboxManager>, crius_sandbox::SandboxError> {
    let shim_path = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("crius-shim")))
        .unwrap_or_else(|| PathBuf::from("crius-shim"));
    crius_sandbox::SandboxManager::new(
        crius_sandbox::ManagerConfig {
            state_dir: config.state.clone(),
            cni_conf_dir: config.cni.conf_dir.clone(),
            cni_bin_dirs: config.cni.bin_dirs.clone(),
            cni_cache_dir: config.cni.cache_dir.clone(),
            shim_path,
            default_cgroup_parent: PathBuf::from("/crius"),
            cgroup_driver: config.cgroup_driver(),
            host_files: Default::default(),
            runtime_handlers: config.runtimes.keys().cloned().collect(),
        },
        db,
    )
}

/// Binds the CRI socket (mode 0600: root only, like every socket crius makes; a missing parent
/// directory is created 0700). A socket on which a daemon answers is left alone and refused; a
/// stale socket file (nobody listening) is replaced.
fn bind_socket(path: &Path) -> Result<UnixListener, DaemonError> {
    let sock_err = |source| DaemonError::Socket {
        path: path.into(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(sock_err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(DaemonError::AlreadyServing(path.into())),
            Err(_) => {
                tracing::info!(socket = %path.display(), "removing stale socket");
                std::fs::remove_file(path).map_err(sock_err)?;
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(sock_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(sock_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(sock_err)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_socket_is_replaced_and_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let live = bind_socket(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(bind_socket(&path), Err(DaemonError::AlreadyServing(_))));
        drop(live);
    }
}
