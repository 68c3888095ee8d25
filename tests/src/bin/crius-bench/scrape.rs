//! Scenario 8: what one Prometheus scrape of the daemon costs with many pods running — the
//! daemon's CPU (utime + stime from `/proc/<pid>/stat` across all scrapes, divided by their
//! number, so the 10 ms tick is spread over the run), each scrape's wall time, and the size of
//! the answer. Both runtimes serve metrics on a loopback port of their own (crius `/metrics`,
//! containerd `/v1/metrics`); scrapes are sequential, as one Prometheus server scrapes one
//! target.
//!
//! Invariant: every pod the scenario starts is removed before it returns.

use std::time::{Duration, Instant};

use anyhow::anyhow;

use crate::flood::cpu_seconds;
use crate::runtimes::Runtime;
use crate::scenarios::{Fail, start_pod_with_container};

/// Figures of scenario 8.
#[derive(Debug, Clone)]
pub struct ScrapeCost {
    pub cpu_ms_per_scrape: f64,
    pub times: Vec<Duration>,
    /// Size of the last answer's body.
    pub bytes: usize,
}

pub async fn scrape_cost(
    r: &mut Runtime,
    pods: usize,
    scrapes: usize,
    image: &str,
) -> Result<ScrapeCost, Fail> {
    let addr = (r.metrics, r.metrics_path);
    let pid = r
        .daemon_pid()
        .ok_or_else(|| Fail::Other(anyhow!("daemon not running")))? as i32;
    let mut failure = None;
    for i in 0..pods {
        if let Err(e) = start_pod_with_container(r, &format!("scrape-{i}"), image).await {
            failure = Some(e);
            break;
        }
    }
    let figures = match failure {
        Some(e) => Err(e),
        None => measure(addr, pid, scrapes).await,
    };
    r.remove_all_pods().await?;
    figures
}

async fn measure(addr: Endpoint, pid: i32, scrapes: usize) -> Result<ScrapeCost, Fail> {
    // Let start-up work of the last pods settle, and warm the endpoint once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    scrape(addr).await?;
    let cpu_before = cpu_seconds(pid);
    let mut times = Vec::with_capacity(scrapes);
    let mut bytes = 0;
    for _ in 0..scrapes {
        let t = Instant::now();
        bytes = scrape(addr).await?;
        times.push(t.elapsed());
    }
    let cpu = cpu_seconds(pid) - cpu_before;
    Ok(ScrapeCost {
        cpu_ms_per_scrape: cpu * 1000.0 / scrapes.max(1) as f64,
        times,
        bytes,
    })
}

/// A runtime's metrics address and path.
type Endpoint = (std::net::SocketAddr, &'static str);

/// One `GET` of the metrics (off the async workers); the body's size.
async fn scrape((addr, path): Endpoint) -> Result<usize, Fail> {
    let (status, body) = tokio::task::spawn_blocking(move || crius_tests::metrics::get(addr, path))
        .await
        .map_err(|e| Fail::Other(e.into()))??;
    if status != 200 {
        return Err(Fail::Other(anyhow!("GET http://{addr}{path}: {status}: {body}")));
    }
    Ok(body.len())
}
