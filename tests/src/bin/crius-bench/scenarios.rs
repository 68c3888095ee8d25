//! The benchmark scenarios. Each one talks CRI only, so crius and containerd are measured through
//! the same client. An RPC that a runtime answers UNIMPLEMENTED makes the scenario "not supported"
//! for that runtime; any other error aborts the benchmark.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use futures_util::StreamExt;
use k8s_cri::v1::*;

use crate::runtimes::Runtime;

/// A scenario's outcome for one runtime.
#[derive(Debug)]
pub enum Outcome<T> {
    Done(T),
    Unsupported(String),
}

/// Error type that separates "this runtime does not serve that RPC" from real failures.
pub enum Fail {
    Unsupported(String),
    Other(anyhow::Error),
}

impl From<tonic::Status> for Fail {
    fn from(s: tonic::Status) -> Fail {
        if s.code() == tonic::Code::Unimplemented {
            Fail::Unsupported(s.message().to_string())
        } else {
            Fail::Other(anyhow!("{}: {}", s.code(), s.message()))
        }
    }
}

impl From<anyhow::Error> for Fail {
    fn from(e: anyhow::Error) -> Fail {
        Fail::Other(e)
    }
}

pub fn outcome<T>(r: std::result::Result<T, Fail>) -> Result<Outcome<T>> {
    match r {
        Ok(v) => Ok(Outcome::Done(v)),
        Err(Fail::Unsupported(m)) => Ok(Outcome::Unsupported(m)),
        Err(Fail::Other(e)) => Err(e),
    }
}

async fn timed<T, F: std::future::Future<Output = std::result::Result<T, Fail>>>(
    f: F,
) -> std::result::Result<(T, Duration), Fail> {
    let t = Instant::now();
    let v = f.await?;
    Ok((v, t.elapsed()))
}

/// Scenario 1: remove the image if present, then time one PullImage.
pub async fn pull_once(r: &mut Runtime, image: &str) -> std::result::Result<Duration, Fail> {
    let spec = ImageSpec {
        image: image.to_string(),
        ..Default::default()
    };
    let _ = r
        .img
        .remove_image(RemoveImageRequest {
            image: Some(spec.clone()),
        })
        .await;
    let (_, d) = timed(async {
        Ok::<_, Fail>(
            r.img
                .pull_image(PullImageRequest {
                    image: Some(spec),
                    ..Default::default()
                })
                .await?,
        )
    })
    .await?;
    Ok(d)
}

/// Makes sure `image` is present (untimed).
pub async fn ensure_image(r: &mut Runtime, image: &str) -> std::result::Result<(), Fail> {
    let spec = ImageSpec {
        image: image.to_string(),
        ..Default::default()
    };
    r.img
        .pull_image(PullImageRequest {
            image: Some(spec),
            ..Default::default()
        })
        .await?;
    Ok(())
}

pub fn pod_config(log_dir: &std::path::Path, name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: format!("uid-{name}"),
            namespace: "bench".to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: log_dir.join(name).display().to_string(),
        linux: Some(LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

/// A container that exits promptly on SIGTERM, so StopContainer measures a graceful stop.
pub fn container_config(image: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "sleeper".to_string(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        command: vec![
            "sh".into(),
            "-c".into(),
            "trap 'exit 0' TERM; sleep 3600 & wait".into(),
        ],
        log_path: "sleeper.log".to_string(),
        linux: Some(LinuxContainerConfig::default()),
        ..Default::default()
    }
}

pub const STEPS: [&str; 9] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
    TO_RUNNING,
    TEARDOWN,
];
/// Per run: RunPodSandbox + CreateContainer + StartContainer.
pub const TO_RUNNING: &str = "pod + container to running (Run + Create + Start)";
/// Per run: StopContainer + RemoveContainer + StopPodSandbox + RemovePodSandbox.
pub const TEARDOWN: &str = "full teardown (Stop + Remove container, Stop + Remove pod)";

/// The per-run sums of `parts`, when the run timed every one of them.
fn total(steps: &[(&'static str, Duration)], parts: &[&str]) -> Option<Duration> {
    parts
        .iter()
        .map(|p| steps.iter().find(|(s, _)| s == p).map(|(_, d)| *d))
        .sum()
}

/// Scenario 2: one pod with one container through its whole life, each RPC timed.
pub async fn lifecycle_once(
    r: &mut Runtime,
    name: &str,
    image: &str,
    out: &mut BTreeMap<&'static str, Vec<Duration>>,
) -> std::result::Result<(), Fail> {
    let cfg = pod_config(&r.log_dir(), name);
    let (pod, d) = timed(async {
        Ok::<_, Fail>(
            r.rt.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(cfg.clone()),
                ..Default::default()
            })
            .await?,
        )
    })
    .await?;
    let pod_id = pod.into_inner().pod_sandbox_id;
    let mut steps = vec![("RunPodSandbox", d)];
    let result = async {
        let req = CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(container_config(image)),
            sandbox_config: Some(cfg.clone()),
        };
        let (c, d) = timed(async { Ok::<_, Fail>(r.rt.create_container(req).await?) }).await?;
        steps.push(("CreateContainer", d));
        let id = c.into_inner().container_id;
        let (_, d) = timed(async {
            Ok::<_, Fail>(
                r.rt.start_container(StartContainerRequest {
                    container_id: id.clone(),
                })
                .await?,
            )
        })
        .await?;
        steps.push(("StartContainer", d));
        let (_, d) = timed(async {
            Ok::<_, Fail>(
                r.rt.stop_container(StopContainerRequest {
                    container_id: id.clone(),
                    timeout: 10,
                })
                .await?,
            )
        })
        .await?;
        steps.push(("StopContainer", d));
        let (_, d) = timed(async {
            Ok::<_, Fail>(
                r.rt.remove_container(RemoveContainerRequest {
                    container_id: id.clone(),
                })
                .await?,
            )
        })
        .await?;
        steps.push(("RemoveContainer", d));
        Ok::<_, Fail>(())
    }
    .await;
    // The pod is torn down (and timed) whether or not the container steps were supported.
    let (_, d) = timed(async {
        Ok::<_, Fail>(
            r.rt.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod_id.clone(),
            })
            .await?,
        )
    })
    .await?;
    steps.push(("StopPodSandbox", d));
    let (_, d) = timed(async {
        Ok::<_, Fail>(
            r.rt.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod_id.clone(),
            })
            .await?,
        )
    })
    .await?;
    steps.push(("RemovePodSandbox", d));
    let composites = [(TO_RUNNING, &STEPS[..3]), (TEARDOWN, &STEPS[3..7])];
    for (name, parts) in composites {
        if let Some(d) = total(&steps, parts) {
            steps.push((name, d));
        }
    }
    for (step, d) in steps {
        out.entry(step).or_default().push(d);
    }
    result
}

/// Runs a pod with one running container; returns (pod id, container id).
pub async fn start_pod_with_container(
    r: &mut Runtime,
    name: &str,
    image: &str,
) -> std::result::Result<(String, String), Fail> {
    r.clone_clients().start(name, image).await
}

/// Scenario 3: `pods` pods with one container each, `in_flight` at a time; wall time.
pub async fn concurrent_start(
    r: &mut Runtime,
    round: usize,
    pods: usize,
    in_flight: usize,
    image: &str,
) -> std::result::Result<Duration, Fail> {
    let t = Instant::now();
    let base = r.clone_clients();
    let results: Vec<std::result::Result<(String, String), Fail>> = futures_util::stream::iter(0..pods)
        .map(|i| {
            let mut handle = base.clone();
            let image = image.to_string();
            async move { handle.start(&format!("conc-{round}-{i}"), &image).await }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let wall = t.elapsed();
    // A failed start is reported before the teardown, whose own errors would hide its cause.
    let failed = results.into_iter().find_map(|res| res.err());
    r.remove_all_pods().await?;
    match failed {
        Some(e) => Err(e),
        None => Ok(wall),
    }
}

/// Scenario 5: ExecSync `true` round trips in one running container.
pub async fn exec_sync(r: &mut Runtime, n: usize, image: &str) -> std::result::Result<Vec<Duration>, Fail> {
    let (pod, ctr) = start_pod_with_container(r, "exec-bench", image).await?;
    let mut samples = Vec::with_capacity(n);
    let mut result = Ok(());
    for _ in 0..n {
        let t = Instant::now();
        match r
            .rt
            .exec_sync(ExecSyncRequest {
                container_id: ctr.clone(),
                cmd: vec!["true".into()],
                timeout: 10,
            })
            .await
        {
            Ok(resp) if resp.get_ref().exit_code == 0 => samples.push(t.elapsed()),
            Ok(resp) => {
                result = Err(Fail::Other(anyhow!(
                    "exec `true` exited {}",
                    resp.get_ref().exit_code
                )));
                break;
            }
            Err(e) => {
                result = Err(e.into());
                break;
            }
        }
    }
    let _ =
        r.rt.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await;
    r.rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod })
        .await?;
    result.map(|_| samples)
}

/// Memory figures of scenario 4 for one runtime.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub daemon_idle_kb: u64,
    pub daemon_loaded_kb: u64,
    /// Per running container (one per pod here): the shims' PSS and RSS over the containers.
    pub shim_pss_kb: f64,
    pub shim_rss_kb: f64,
    /// Per pod: the pod infra process (crius's pause), PSS; `None` when the runtime has none of
    /// its own.
    pub infra_pss_kb: Option<f64>,
}

/// Scenario 4: daemon RSS idle and with `pods` running pods (one container each); shim PSS and
/// RSS per container; pod infra PSS per pod.
pub async fn memory(r: &mut Runtime, pods: usize, image: &str) -> std::result::Result<Memory, Fail> {
    let pid = r
        .daemon_pid()
        .ok_or_else(|| Fail::Other(anyhow!("daemon not running")))?;
    let daemon_idle_kb = proc_kb(pid as i32, "status", "VmRSS:");
    let mut started = Vec::new();
    let mut failure = None;
    for i in 0..pods {
        match start_pod_with_container(r, &format!("mem-{i}"), image).await {
            Ok(ids) => started.push(ids),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let figures = if failure.is_none() {
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Freshly written binaries show page-cache pages as private memory until synced.
        nix::unistd::sync();
        let daemon_loaded_kb = proc_kb(pid as i32, "status", "VmRSS:");
        let procs = r.pod_processes();
        let sum = |pids: &[i32], file, key| -> f64 {
            pids.iter().map(|p| proc_kb(*p, file, key)).sum::<u64>() as f64 / pods as f64
        };
        Some(Memory {
            daemon_idle_kb,
            daemon_loaded_kb,
            shim_pss_kb: sum(&procs.shims, "smaps_rollup", "Pss:"),
            shim_rss_kb: sum(&procs.shims, "status", "VmRSS:"),
            infra_pss_kb: (!procs.infra.is_empty()).then(|| sum(&procs.infra, "smaps_rollup", "Pss:")),
        })
    } else {
        None
    };
    let teardown = r.remove_all_pods().await;
    match (figures, failure) {
        (_, Some(e)) => Err(e),
        (Some(m), None) => teardown.map(|_| m).map_err(Fail::from),
        (None, None) => Err(Fail::Other(anyhow!("no memory figures"))),
    }
}

/// A `Key:   1234 kB` value from a /proc file, in kB (0 when unreadable).
pub fn proc_kb(pid: i32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Cloneable CRI clients of one runtime, for concurrent work.
#[derive(Clone)]
pub struct Clients {
    pub rt: k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    log_dir: std::path::PathBuf,
}

impl Runtime {
    pub fn clone_clients(&self) -> Clients {
        Clients {
            rt: self.rt.clone(),
            log_dir: self.log_dir(),
        }
    }
}

impl Clients {
    /// Runs a pod with one running container; a pod whose container fails is removed again.
    pub async fn start(&mut self, name: &str, image: &str) -> std::result::Result<(String, String), Fail> {
        let cfg = pod_config(&self.log_dir, name);
        let pod = self
            .rt
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(cfg.clone()),
                ..Default::default()
            })
            .await?;
        let pod_id = pod.into_inner().pod_sandbox_id;
        let req = CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(container_config(image)),
            sandbox_config: Some(cfg),
        };
        let started = async {
            let id = self.rt.create_container(req).await?.into_inner().container_id;
            self.rt
                .start_container(StartContainerRequest {
                    container_id: id.clone(),
                })
                .await?;
            Ok::<_, Fail>(id)
        }
        .await;
        match started {
            Ok(id) => Ok((pod_id, id)),
            Err(e) => {
                let _ = self
                    .rt
                    .stop_pod_sandbox(StopPodSandboxRequest {
                        pod_sandbox_id: pod_id.clone(),
                    })
                    .await;
                let _ = self
                    .rt
                    .remove_pod_sandbox(RemovePodSandboxRequest {
                        pod_sandbox_id: pod_id,
                    })
                    .await;
                Err(e)
            }
        }
    }
}
