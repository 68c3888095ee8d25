//! Scenario 10, a node at rest polled as kubelet polls it: for `secs` seconds, with the pods of
//! scenario 9 running,
//! - every 1 s, PLEG's relist: ListPodSandbox and ListContainers, unfiltered;
//! - every 10 s, the stats kubelet's CRI stats provider and eviction manager read:
//!   ListContainerStats, ListPodSandboxStats, ImageFsInfo;
//! - every 10 s, a full status pass: for each pod what kubelet's `GetPodStatus` asks,
//!   PodSandboxStatus, ListContainers filtered to the pod, ContainerStatus of each container.
//!   PLEG only does this for pods with an event, so at rest this pass is heavier than kubelet,
//!   standing in for its periodic pod resyncs.
//!
//! Controls each second, for telling the runtime's slow answers from the machine's: how late
//! the bench's own timer woke it, a Version RPC right after the relist (answered in the gRPC
//! layer, with no store read and no thread hop in crius), and, over the relist itself, the
//! hypervisor's steal, the run-queue waits of the daemon's and the bench's threads and their
//! major page faults (`stalls`). A relist over [`SLOW`] is kept with them, so a report can say
//! whether the machine was slow at that moment too.
//!
//! The cost is the CPU (utime + stime from `/proc/<pid>/stat`) the runtime's processes spend over
//! the window: the daemon and every shim and pod infra process alive at its start (exited children
//! such as runc are not counted). Latencies are kept per RPC, per pod status, and per pass.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_cri::v1::*;

use crate::flood::cpu_seconds;
use crate::runtimes::Runtime;
use crate::scenarios::Fail;
use crate::stalls::Stalls;

/// Names of the latency series, as rows show them.
pub const RELIST: &str = "PLEG relist (ListPodSandbox + ListContainers)";
pub const POD_STATUS: &str =
    "per-pod status (PodSandboxStatus + ListContainers of the pod + ContainerStatus)";
pub const FULL_PASS: &str = "full status pass over all pods";
pub const CONTROL_RPC: &str = "Version right after the relist (control)";
pub const CONTROL_WAKE: &str = "bench timer's lateness at each tick (control)";

/// A relist slower than this is kept with its tick's controls (the goal is a p99 of 5 ms).
pub const SLOW: Duration = Duration::from_millis(5);

/// One relist over [`SLOW`], with what the controls measured at the same tick.
#[derive(Debug, Clone, Copy)]
pub struct SlowTick {
    pub relist: Duration,
    pub list_pods: Duration,
    pub list_containers: Duration,
    pub version: Duration,
    pub lateness: Duration,
    /// What stalled the daemon and the bench during the relist (not during Version).
    pub waits: Stalls,
}

/// Figures of scenario 10.
#[derive(Debug, Clone)]
pub struct Steady {
    /// CPU seconds of the daemon, and of its shims and infra processes, over the window.
    pub daemon_cpu_s: f64,
    pub shims_cpu_s: f64,
    /// Latency samples per RPC name and per series above.
    pub latencies: BTreeMap<&'static str, Vec<Duration>>,
    /// Polled stats RPCs the runtime answered UNIMPLEMENTED, and those it failed (first error).
    pub unsupported: BTreeSet<&'static str>,
    pub failed: BTreeMap<&'static str, String>,
    /// Every relist over [`SLOW`], in order.
    pub slow: Vec<SlowTick>,
}

pub async fn steady_state(r: &mut Runtime, secs: u64) -> Result<Steady, Fail> {
    let daemon = r.daemon_pid().map_or(0, |p| p as i32);
    let procs = r.pod_processes();
    let others: Vec<i32> = procs.shims.iter().chain(&procs.infra).copied().collect();
    let others_cpu = || others.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    let mut lat: BTreeMap<&'static str, Vec<Duration>> = BTreeMap::new();
    let mut unsupported = BTreeSet::new();
    let mut failed = BTreeMap::new();
    let mut slow = Vec::new();
    let (cpu_d0, cpu_s0) = (cpu_seconds(daemon), others_cpu());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0..secs {
        let due = tick.tick().await;
        let lateness = Instant::now().saturating_duration_since(due.into_std());
        lat.entry(CONTROL_WAKE).or_default().push(lateness);
        let before = Stalls::now(daemon);
        let t = Instant::now();
        let pods = timed(&mut lat, "ListPodSandbox", async {
            r.rt.list_pod_sandbox(ListPodSandboxRequest::default()).await
        })
        .await?
        .items;
        timed(&mut lat, "ListContainers", async {
            r.rt.list_containers(ListContainersRequest::default()).await
        })
        .await?;
        let relist = t.elapsed();
        let waits = Stalls::now(daemon).since(&before);
        let last = |k| lat[k].last().copied().unwrap_or_default();
        let (list_pods, list_containers) = (last("ListPodSandbox"), last("ListContainers"));
        lat.entry(RELIST).or_default().push(relist);
        let t = Instant::now();
        r.rt.version(VersionRequest::default()).await?;
        let version = t.elapsed();
        lat.entry(CONTROL_RPC).or_default().push(version);
        if relist > SLOW {
            slow.push(SlowTick {
                relist,
                list_pods,
                list_containers,
                version,
                lateness,
                waits,
            });
        }
        if n % 10 == 0 {
            stats_pass(r, &mut lat, &mut unsupported, &mut failed).await?;
            let t = Instant::now();
            for p in &pods {
                status_of_pod(r, &mut lat, &p.id).await?;
            }
            lat.entry(FULL_PASS).or_default().push(t.elapsed());
        }
    }
    Ok(Steady {
        daemon_cpu_s: cpu_seconds(daemon) - cpu_d0,
        shims_cpu_s: others_cpu() - cpu_s0,
        latencies: lat,
        unsupported,
        failed,
        slow,
    })
}

/// What the CRI stats provider and the eviction manager read every 10 s. An RPC the runtime does
/// not serve is noted in `unsupported` (kubelet falls back to cAdvisor then), one that fails in
/// `failed` with its first error; either way the loop goes on, as kubelet's does.
async fn stats_pass(
    r: &mut Runtime,
    lat: &mut BTreeMap<&'static str, Vec<Duration>>,
    unsupported: &mut BTreeSet<&'static str>,
    failed: &mut BTreeMap<&'static str, String>,
) -> Result<(), Fail> {
    let mut tolerate = |name: &'static str, res: Result<(), Fail>| {
        match res {
            Err(Fail::Unsupported(_)) => {
                unsupported.insert(name);
            }
            Err(Fail::Other(e)) => {
                failed.entry(name).or_insert_with(|| format!("{e:#}"));
            }
            Ok(()) => {}
        }
        Ok::<(), Fail>(())
    };
    let name = "ListContainerStats";
    let res = timed(lat, name, async {
        r.rt.list_container_stats(ListContainerStatsRequest::default())
            .await
    })
    .await;
    tolerate(name, res.map(drop))?;
    let name = "ListPodSandboxStats";
    let res = timed(lat, name, async {
        r.rt.list_pod_sandbox_stats(ListPodSandboxStatsRequest::default())
            .await
    })
    .await;
    tolerate(name, res.map(drop))?;
    let name = "ImageFsInfo";
    let res = timed(lat, name, async {
        r.img.image_fs_info(ImageFsInfoRequest::default()).await
    })
    .await;
    tolerate(name, res.map(drop))
}

/// kubelet's `GetPodStatus` of one pod, timed as a whole and per RPC.
async fn status_of_pod(
    r: &mut Runtime,
    lat: &mut BTreeMap<&'static str, Vec<Duration>>,
    pod: &str,
) -> Result<(), Fail> {
    let t = Instant::now();
    timed(lat, "PodSandboxStatus", async {
        r.rt.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.to_string(),
            verbose: false,
        })
        .await
    })
    .await?;
    let filter = ContainerFilter {
        pod_sandbox_id: pod.to_string(),
        ..Default::default()
    };
    let ctrs = timed(lat, "ListContainers (of a pod)", async {
        r.rt.list_containers(ListContainersRequest { filter: Some(filter) })
            .await
    })
    .await?
    .containers;
    for c in ctrs {
        timed(lat, "ContainerStatus", async {
            r.rt.container_status(ContainerStatusRequest {
                container_id: c.id,
                verbose: false,
            })
            .await
        })
        .await?;
    }
    lat.entry(POD_STATUS).or_default().push(t.elapsed());
    Ok(())
}

/// Runs one RPC, adds its latency to `name`'s samples, and returns its answer.
async fn timed<T>(
    lat: &mut BTreeMap<&'static str, Vec<Duration>>,
    name: &'static str,
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, Fail> {
    let t = Instant::now();
    let v = f.await?.into_inner();
    lat.entry(name).or_default().push(t.elapsed());
    Ok(v)
}
