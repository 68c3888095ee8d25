//! UpdateContainerResources: writes new limits into the container's cgroup and records them, so
//! ContainerStatus reports what is in force.
//!
//! Invariant: the record changes only after the cgroup accepted every value. A CREATED container
//! that was never started has no cgroup yet: its resources are only recorded, and
//! StartContainer writes them into the cgroup the shim made before the container runs.

use cri_api::v1::LinuxContainerResources;

use super::record::State;
use super::{ContainerError, Containers};

impl Containers {
    /// CRI: UpdateContainerResources (Linux part).
    pub async fn update_resources(
        self: &std::sync::Arc<Self>,
        query: &str,
        resources: Option<LinuxContainerResources>,
    ) -> Result<(), ContainerError> {
        let id = self.find(query).await?;
        let _guard = self.locks.lock(&id).await;
        self.blocking(move |c| c.update_locked(&id, resources)).await
    }

    /// UpdateContainerResources with the container's lock held: cgroup files, then the record.
    fn update_locked(
        &self,
        id: &str,
        resources: Option<LinuxContainerResources>,
    ) -> Result<(), ContainerError> {
        let r = self.refreshed(id)?;
        super::require_state(&r, &[State::Created, State::Running], "update resources")?;
        let Some(new) = resources else { return Ok(()) };
        if new.memory_limit_in_bytes < 0 || new.cpu_shares < 0 || new.cpu_period < 0 {
            return Err(ContainerError::Invalid("negative resource value".into()));
        }
        super::cgroupfs::check(&new)?;
        if !super::stop::never_started(&r) {
            self.cgroups.apply(&r.cgroup_path, &new)?;
        }
        self.records.update::<ContainerError>(id, |s| {
            let mut merged = s.resources.clone().unwrap_or_default();
            merge(&mut merged, &new);
            s.resources = Some(merged);
            Ok(())
        })?;
        Ok(())
    }
}

/// Fields set in `new` (non-zero, non-empty) replace those in `cur`.
fn merge(cur: &mut LinuxContainerResources, new: &LinuxContainerResources) {
    if new.cpu_period != 0 {
        cur.cpu_period = new.cpu_period;
    }
    if new.cpu_quota != 0 {
        cur.cpu_quota = new.cpu_quota;
    }
    if new.cpu_shares != 0 {
        cur.cpu_shares = new.cpu_shares;
    }
    if new.memory_limit_in_bytes != 0 {
        cur.memory_limit_in_bytes = new.memory_limit_in_bytes;
    }
    if new.oom_score_adj != 0 {
        cur.oom_score_adj = new.oom_score_adj;
    }
    if !new.cpuset_cpus.is_empty() {
        cur.cpuset_cpus = new.cpuset_cpus.clone();
    }
    if !new.cpuset_mems.is_empty() {
        cur.cpuset_mems = new.cpuset_mems.clone();
    }
    if !new.unified.is_empty() {
        cur.unified = new.unified.clone();
    }
    if new.memory_swap_limit_in_bytes != 0 {
        cur.memory_swap_limit_in_bytes = new.memory_swap_limit_in_bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_unset_fields() {
        let mut cur = LinuxContainerResources {
            cpu_shares: 512,
            memory_limit_in_bytes: 100,
            ..Default::default()
        };
        merge(
            &mut cur,
            &LinuxContainerResources {
                memory_limit_in_bytes: 200,
                ..Default::default()
            },
        );
        assert_eq!((cur.cpu_shares, cur.memory_limit_in_bytes), (512, 200));
    }
}
