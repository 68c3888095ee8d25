//! Scenario 11, churn: `pods` pods each created, started (one container), stopped and removed,
//! `in_flight` at a time, then the leak audit of `leaks.rs` before vs after.
//!
//! A warm-up round of `in_flight` pods runs first and is not audited, so allocations a daemon
//! makes once (thread pools, caches, the image's first use) do not count as growth; while those
//! pods run the audit takes a snapshot too, to show that it sees what live pods hold. After the
//! churn the audit waits up to `SETTLE` for the runtime to finish work it does after answering
//! (shims exiting, containerd's garbage collection of snapshots) before it names what is left,
//! and up to `IDLE_THREADS` for the daemon's thread count to come back down: tokio ends a
//! blocking-pool thread after 10 s idle, and until then its stack counts in the RSS growth.
//!
//! Invariant: every pod the scenario starts is removed before it returns, and the pod log dirs it
//! made (kubelet's to remove on a node) are deleted.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use futures_util::StreamExt;

use crate::leaks::{Leaks, Snapshot};
use crate::node_scale::{start_many, teardown_many, teardown_one};
use crate::runtimes::Runtime;
use crate::scenarios::{Clients, Fail};

/// Longest wait for the runtime's after-the-answer clean-up.
const SETTLE: Duration = Duration::from_secs(30);

/// Longest wait for the daemon's idle worker threads to end (tokio's keep-alive is 10 s; Go
/// keeps its threads, so containerd waits this long for nothing).
const IDLE_THREADS: Duration = Duration::from_secs(15);

/// Longest the warm-up pods may take to start.
const WARM_UP: Duration = Duration::from_secs(120);

/// Figures of scenario 11.
#[derive(Debug, Clone)]
pub struct Churn {
    /// What the audit saw with `live_pods` warm-up pods running, beyond the state after them.
    pub seen_live: Leaks,
    pub live_pods: usize,
    pub wall: Duration,
    pub leaks: Leaks,
    /// How long the audit waited for the runtime to settle.
    pub settled_after: Duration,
}

pub async fn churn(r: &mut Runtime, pods: usize, in_flight: usize, image: &str) -> Result<Churn, Fail> {
    let measured = measure(r, pods, in_flight, image).await;
    let cleanup = r.remove_all_pods().await;
    for name in crius_tests::util::dir_entries(&r.log_dir()) {
        if name.starts_with("churn-") || name.starts_with("warm-") {
            let _ = std::fs::remove_dir_all(r.log_dir().join(name));
        }
    }
    let figures = measured?;
    cleanup?;
    Ok(figures)
}

async fn measure(r: &mut Runtime, pods: usize, in_flight: usize, image: &str) -> Result<Churn, Fail> {
    // The warm-up pods are also the audit's own check: what it sees while they live must name
    // every kind a pod holds, or a clean audit afterwards would mean nothing.
    let clients = r.clone_clients();
    let (warm, shortfall, _) = start_many(&clients, "warm", image, in_flight, in_flight, WARM_UP).await;
    let live = Snapshot::take(r);
    let teardown = teardown_many(&clients, &warm, in_flight).await;
    if let Some(why) = shortfall {
        return Err(Fail::Other(anyhow!("warm-up pods: {why}")));
    }
    teardown?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = Snapshot::take(r);
    let seen_live = before.leaks(&live);
    let t = Instant::now();
    round(&r.clone_clients(), "churn", pods, in_flight, image).await?;
    let wall = t.elapsed();
    let settle = Instant::now();
    let mut leaks = before.leaks(&Snapshot::take(r));
    let unsettled = |l: &Leaks, waited: Duration| {
        (!l.clean() && waited < SETTLE) || (l.threads > 0 && waited < IDLE_THREADS)
    };
    while unsettled(&leaks, settle.elapsed()) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        leaks = before.leaks(&Snapshot::take(r));
    }
    Ok(Churn {
        seen_live,
        live_pods: warm.len(),
        wall,
        leaks,
        settled_after: settle.elapsed(),
    })
}

/// `n` pods through their whole life, `in_flight` at a time; the first failure, once all ended.
async fn round(base: &Clients, prefix: &str, n: usize, in_flight: usize, image: &str) -> Result<(), Fail> {
    let results: Vec<Result<(), Fail>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let mut c = base.clone();
            let name = format!("{prefix}-{i}");
            let image = image.to_string();
            async move {
                let (pod, ctr) = c.start(&name, &image).await?;
                teardown_one(&mut c, pod, ctr).await
            }
        })
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}
