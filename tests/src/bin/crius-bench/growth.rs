//! Scenario 12: does CreateContainer (and StartContainer) slow down as a pod fills up?
//!
//! Each round runs one pod and creates and starts `per_pod` containers in it, one after the other,
//! timing every call by the container's position in the pod. The report compares the first
//! position with the last: a runtime whose create scans the pod's containers shows the growth.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_cri::v1::*;

use crate::runtimes::Runtime;
use crate::scenarios::{Fail, container_config, pod_config};

/// Create and start times by position in the pod (0 = the pod's first container).
#[derive(Default)]
pub struct Growth {
    pub create: BTreeMap<usize, Vec<Duration>>,
    pub start: BTreeMap<usize, Vec<Duration>>,
}

impl Growth {
    /// The times of `verb` ("CreateContainer" or "StartContainer") by position.
    pub fn of(&self, verb: &str) -> &BTreeMap<usize, Vec<Duration>> {
        if verb == "StartContainer" {
            &self.start
        } else {
            &self.create
        }
    }
}

/// One round: a pod with `per_pod` containers created and started in turn, then removed.
pub async fn fill_one_pod(
    r: &mut Runtime,
    round: usize,
    per_pod: usize,
    image: &str,
    out: &mut Growth,
) -> std::result::Result<(), Fail> {
    let name = format!("growth-{round}");
    let cfg = pod_config(&r.log_dir(), &name);
    let pod_id = r.run_pod(&cfg).await?;
    let result = async {
        for pos in 0..per_pod {
            let mut config = container_config(image);
            if let Some(m) = config.metadata.as_mut() {
                m.name = format!("c{pos}");
            }
            config.log_path = format!("c{pos}.log");
            let t = Instant::now();
            let id =
                r.rt.create_container(CreateContainerRequest {
                    pod_sandbox_id: pod_id.clone(),
                    config: Some(config),
                    sandbox_config: Some(cfg.clone()),
                })
                .await?
                .into_inner()
                .container_id;
            out.create.entry(pos).or_default().push(t.elapsed());
            let t = Instant::now();
            r.rt.start_container(StartContainerRequest { container_id: id })
                .await?;
            out.start.entry(pos).or_default().push(t.elapsed());
        }
        Ok::<_, Fail>(())
    }
    .await;
    // The pod goes whether or not every create succeeded; its containers go with it.
    r.remove_all_pods().await?;
    result
}
