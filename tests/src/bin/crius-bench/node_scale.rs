//! Scenario 9, a node full of pods: `pods` pods with one container each started `in_flight` at a
//! time (wall time until every StartContainer has returned), the memory they cost (daemon RSS, the
//! PSS of every shim and pod infra process), and the wall time of tearing all of them down again,
//! `in_flight` at a time. Between the two, scenario 10 (the kubelet-shaped poll loop of
//! `poll.rs`) runs against the same pods when asked for.
//!
//! The start has a deadline: on a small machine a runtime may not get `pods` pods running in
//! reasonable time. Past it no further pod is started, and the figures say how many were reached.
//!
//! Invariant: every pod the scenario starts is removed before it returns, whatever failed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use futures_util::StreamExt;
use k8s_cri::v1::*;

use crate::poll::{self, Steady};
use crate::runtimes::Runtime;
use crate::scenarios::{Clients, Fail, proc_kb};

/// How scenario 9 (and 10) run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub pods: usize,
    pub in_flight: usize,
    /// No pod is started after this much time from the first.
    pub start_deadline: Duration,
    /// Seconds of scenario 10's poll loop, when it runs.
    pub steady_secs: Option<u64>,
}

/// Figures of scenario 9 (and 10) for one runtime.
#[derive(Debug, Clone)]
pub struct NodeScale {
    /// Pods whose container was started (of `Plan::pods`).
    pub reached: usize,
    /// Why fewer than asked were reached (deadline or the first failure).
    pub shortfall: Option<String>,
    pub to_running: Duration,
    pub daemon_rss_kb: u64,
    /// Sum over the runtime's shims (crius: one per container; containerd: one per pod).
    pub shims_pss_kb: u64,
    /// Sum over the pod infra processes (crius `crius-shim pause`; containerd: its pause container,
    /// here a busybox `sh` stand-in and its `sleep`).
    pub infra_pss_kb: u64,
    pub teardown: Duration,
    pub steady: Option<Steady>,
}

impl NodeScale {
    /// Shim + infra PSS per pod, in kB.
    pub fn per_pod_kb(&self) -> f64 {
        (self.shims_pss_kb + self.infra_pss_kb) as f64 / self.reached.max(1) as f64
    }
}

pub async fn node_scale(r: &mut Runtime, plan: Plan, image: &str) -> Result<NodeScale, Fail> {
    let pid = r
        .daemon_pid()
        .ok_or_else(|| Fail::Other(anyhow!("daemon not running")))? as i32;
    let measured = measure(r, pid, plan, image).await;
    // Whatever happened above (a failed start, a poll error, a timed-out teardown), no pod stays.
    let cleanup = r.remove_all_pods().await;
    let figures = measured?;
    cleanup?;
    Ok(figures)
}

async fn measure(r: &mut Runtime, pid: i32, plan: Plan, image: &str) -> Result<NodeScale, Fail> {
    let (started, shortfall, to_running) = start_many(
        &r.clone_clients(),
        "node",
        image,
        plan.pods,
        plan.in_flight,
        plan.start_deadline,
    )
    .await;
    if started.is_empty() {
        return Err(Fail::Other(anyhow!(
            "no pod reached running: {}",
            shortfall.unwrap_or_default()
        )));
    }
    if let Some(why) = &shortfall {
        eprintln!(
            "{}: {} of {} pods reached running: {why}",
            r.name,
            started.len(),
            plan.pods
        );
    }
    // Let the last pods' start-up work settle; freshly written binaries count as private memory
    // until synced.
    tokio::time::sleep(Duration::from_secs(2)).await;
    nix::unistd::sync();
    let daemon_rss_kb = proc_kb(pid, "status", "VmRSS:");
    let (shims_pss_kb, infra_pss_kb) = pod_memory(r);
    let steady = match plan.steady_secs {
        Some(secs) => Some(poll::steady_state(r, secs).await?),
        None => None,
    };
    let teardown = teardown_many(&r.clone_clients(), &started, plan.in_flight).await?;
    Ok(NodeScale {
        reached: started.len(),
        shortfall,
        to_running,
        daemon_rss_kb,
        shims_pss_kb,
        infra_pss_kb,
        teardown,
        steady,
    })
}

/// Starts up to `n` pods running `image` in one container each, `in_flight` at a time, none after `deadline`
/// from now: the (pod, container) ids started, why some were not (the first failure, or the
/// deadline), and the wall time until the last start returned.
pub async fn start_many(
    base: &Clients,
    prefix: &str,
    image: &str,
    n: usize,
    in_flight: usize,
    deadline: Duration,
) -> (Vec<(String, String)>, Option<String>, Duration) {
    let t = Instant::now();
    let results: Vec<Option<Result<(String, String), Fail>>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let mut c = base.clone();
            let image = image.to_string();
            let name = format!("{prefix}-{i}");
            async move {
                if t.elapsed() > deadline {
                    return None;
                }
                Some(c.start(&name, &image).await)
            }
        })
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    let wall = t.elapsed();
    let mut started = Vec::new();
    let mut shortfall = None;
    let mut skipped = 0;
    for res in results {
        match res {
            Some(Ok(ids)) => started.push(ids),
            Some(Err(Fail::Other(e))) => {
                shortfall.get_or_insert(format!("{e:#}"));
            }
            Some(Err(Fail::Unsupported(m))) => {
                shortfall.get_or_insert(format!("unsupported: {m}"));
            }
            None => skipped += 1,
        }
    }
    if skipped > 0 && shortfall.is_none() {
        shortfall = Some(format!("{skipped} not started: {deadline:?} deadline"));
    }
    (started, shortfall, wall)
}

/// Tears down `pods` as kubelet does, `in_flight` at a time: StopContainer, RemoveContainer,
/// StopPodSandbox, RemovePodSandbox. The wall time of all of it; the first error.
pub async fn teardown_many(
    base: &Clients,
    pods: &[(String, String)],
    in_flight: usize,
) -> Result<Duration, Fail> {
    let t = Instant::now();
    let results: Vec<Result<(), Fail>> = futures_util::stream::iter(pods.iter().cloned())
        .map(|(pod, ctr)| {
            let mut c = base.clone();
            async move { teardown_one(&mut c, pod, ctr).await }
        })
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    let wall = t.elapsed();
    results.into_iter().collect::<Result<Vec<()>, Fail>>()?;
    Ok(wall)
}

pub async fn teardown_one(c: &mut Clients, pod: String, ctr: String) -> Result<(), Fail> {
    c.rt.stop_container(StopContainerRequest {
        container_id: ctr.clone(),
        timeout: 10,
    })
    .await?;
    c.rt.remove_container(RemoveContainerRequest { container_id: ctr })
        .await?;
    c.rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await?;
    c.rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod })
        .await?;
    Ok(())
}

/// (shims, pod infra) PSS sums in kB. containerd's pause is the child of its shim that runs the
/// pause image's command (the bench's stand-in names `trap 'exit 0' TERM INT`), with its children.
fn pod_memory(r: &Runtime) -> (u64, u64) {
    let pss = |p: &i32| proc_kb(*p, "smaps_rollup", "Pss:");
    let procs = r.pod_processes();
    let shims: u64 = procs.shims.iter().map(pss).sum();
    let mut infra: Vec<i32> = procs.infra.clone();
    if infra.is_empty() {
        let children = children_map();
        for shim in &procs.shims {
            for child in children.get(shim).into_iter().flatten() {
                if cmdline(*child).contains("TERM INT") {
                    infra.push(*child);
                    infra.extend(descendants(&children, *child));
                }
            }
        }
    }
    (shims, infra.iter().map(pss).sum())
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default()
}

/// Parent pid -> its children, for every process now.
pub fn children_map() -> BTreeMap<i32, Vec<i32>> {
    let mut map: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some(ppid) = crius_tests::util::parent_pid(pid) {
            map.entry(ppid).or_default().push(pid);
        }
    }
    map
}

fn descendants(children: &BTreeMap<i32, Vec<i32>>, pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in children.get(&p).into_iter().flatten() {
            out.push(*c);
            todo.push(*c);
        }
    }
    out
}
