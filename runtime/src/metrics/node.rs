//! The node's series, computed at scrape time from the records (never kept in sync by hand):
//! containers and pods by state, live shims, the OOM-kill, lost-shim and pulled-bytes counters
//! (incremented where those events happen, read here) and what start-up recovery did.
//!
//! Invariants: the collector only reads; a source that cannot be read leaves its series out of
//! that scrape (and logs why) instead of reporting zeros; every state of a closed set is
//! reported, zero included, so series do not come and go with the workload.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::container::{ContainerCensus, Containers};

/// The node's numbers at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Census {
    /// None when the container records could not be read.
    pub containers: Option<ContainerCensus>,
    /// READY and NOTREADY pods (sandboxes being created are not counted); None when the
    /// sandbox records could not be read.
    pub pods: Option<(u64, u64)>,
    /// Containers that ended killed by the memory cgroup, since the daemon started.
    pub oom_kills: u64,
    /// Containers whose end was recorded without their shim's exit file, since the daemon
    /// started.
    pub shims_lost: u64,
    /// Bytes of image blobs downloaded from registries, since the daemon started.
    pub pull_bytes: u64,
}

/// Where the collector reads the node (the daemon's managers; fakes in unit tests).
pub trait NodeSource: Send + Sync + 'static {
    /// Blocking: reads the store and `/proc`.
    fn census(&self) -> Census;
}

/// What start-up recovery did, reported once it has finished.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// From opening the sandbox manager (which reconciles pods) to the readiness gate opening.
    pub duration: Duration,
    pub pods: crius_sandbox::Recovered,
    pub containers: crate::container::Recovered,
}

/// The daemon's managers as a [`NodeSource`].
pub struct Managers {
    pub containers: Arc<Containers>,
    pub sandboxes: Arc<crius_sandbox::SandboxManager>,
    pub images: Arc<crius_image::ImageStore>,
}

impl NodeSource for Managers {
    fn census(&self) -> Census {
        let containers = self
            .containers
            .census()
            .map_err(|e| tracing::warn!(error = %e, "metrics: cannot read the container records"))
            .ok();
        let pods = self
            .sandboxes
            .count_by_state()
            .map_err(|e| tracing::warn!(error = %e, "metrics: cannot read the sandbox records"))
            .ok();
        let exits = self.containers.exit_counts();
        Census {
            containers,
            pods,
            oom_kills: exits.oom_kills(),
            shims_lost: exits.shims_lost(),
            pull_bytes: self.images.fetched_bytes(),
        }
    }
}

pub(super) struct NodeCollector {
    source: Arc<dyn NodeSource>,
    recovery: Arc<OnceLock<Recovery>>,
}

impl NodeCollector {
    pub(super) fn new(source: Arc<dyn NodeSource>, recovery: Arc<OnceLock<Recovery>>) -> NodeCollector {
        NodeCollector { source, recovery }
    }
}

impl fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCollector").finish_non_exhaustive()
    }
}

type Labels<const N: usize> = [(&'static str, &'static str); N];

/// Writes one family: its HELP and TYPE (from the first series) and every series.
pub(super) fn family<const N: usize, M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels<N>, M)],
) -> fmt::Result {
    let Some((_, first)) = series.first() else {
        return Ok(());
    };
    let mut m = enc.encode_descriptor(name, help, None, first.metric_type())?;
    for (labels, metric) in series {
        metric.encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(n: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
}

fn count(n: usize) -> ConstGauge<i64> {
    gauge(n as u64)
}

impl Collector for NodeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let c = self.source.census();
        if let Some(k) = &c.containers {
            family(
                &mut enc,
                "crius_containers",
                "Containers by state.",
                &[
                    ([("state", "created")], gauge(k.created)),
                    ([("state", "running")], gauge(k.running)),
                    ([("state", "exited")], gauge(k.exited)),
                    ([("state", "unknown")], gauge(k.unknown)),
                ],
            )?;
            family(
                &mut enc,
                "crius_shims_alive",
                "Container shim processes alive.",
                &[([], gauge(k.shims_alive))],
            )?;
        }
        if let Some((ready, not_ready)) = c.pods {
            family(
                &mut enc,
                "crius_pods",
                "Pod sandboxes by state.",
                &[
                    ([("state", "ready")], gauge(ready)),
                    ([("state", "notready")], gauge(not_ready)),
                ],
            )?;
        }
        let counters: [(&str, &str, u64); 3] = [
            (
                "crius_container_oom_kills",
                "Containers killed by the memory cgroup (reason OOMKilled), since the daemon started.",
                c.oom_kills,
            ),
            (
                "crius_container_shims_lost",
                "Containers whose end was recorded without their shim's exit file (the shim died, \
                 vanished across a restart or hung and was bypassed), since the daemon started.",
                c.shims_lost,
            ),
            (
                "crius_image_pull_bytes",
                "Bytes of image blobs downloaded from registries, since the daemon started.",
                c.pull_bytes,
            ),
        ];
        for (name, help, v) in counters {
            family(&mut enc, name, help, &[([], ConstCounter::new(v))])?;
        }
        if let Some(r) = self.recovery.get() {
            encode_recovery(&mut enc, r)?;
        }
        Ok(())
    }
}

fn encode_recovery(enc: &mut DescriptorEncoder, r: &Recovery) -> fmt::Result {
    family(
        enc,
        "crius_recovery_duration_seconds",
        "How long start-up recovery took, until the daemon served.",
        &[([], ConstGauge::new(r.duration.as_secs_f64()))],
    )?;
    let (p, k) = (&r.pods, &r.containers);
    family(
        enc,
        "crius_recovery_objects",
        "Objects start-up recovery found, by kind and what it did with them.",
        &[
            ([("kind", "pod"), ("result", "found")], count(p.sandboxes)),
            (
                [("kind", "pod"), ("result", "marked_not_ready")],
                count(p.marked_not_ready),
            ),
            (
                [("kind", "pod"), ("result", "half_created_removed")],
                count(p.half_created_removed),
            ),
            ([("kind", "pod"), ("result", "unreadable")], count(p.unreadable)),
            ([("kind", "container"), ("result", "found")], count(k.containers)),
            (
                [("kind", "container"), ("result", "reconnected")],
                count(k.reconnected),
            ),
            ([("kind", "container"), ("result", "exited")], count(k.exited)),
            ([("kind", "container"), ("result", "unknown")], count(k.unknown)),
            ([("kind", "container"), ("result", "failed")], count(k.failed)),
            (
                [("kind", "container"), ("result", "unreadable")],
                count(k.unreadable),
            ),
        ],
    )?;
    family(
        enc,
        "crius_recovery_orphans_removed",
        "State no record owned, removed by start-up recovery, by kind.",
        &[
            ([("kind", "pod")], count(p.orphans_removed)),
            ([("kind", "pod_network")], count(p.networks_deleted)),
            ([("kind", "container")], count(k.orphans_removed)),
        ],
    )
}
