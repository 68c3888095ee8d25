//! Deleting libcontainer's state for a container: its state dir under the youki root and its
//! leaf cgroup (or the external runtime's `delete`). Runs when the daemon removes the container, or when a create fails.
//!
//! Invariant: idempotent — a container libcontainer no longer knows is already deleted.

use crius_shim_api::ShimConfig;
use libcontainer::container::Container;

use crate::create::error_chain;

pub fn delete_container(cfg: &ShimConfig) -> Result<(), String> {
    // Sub-cgroups a delegated container's root made would keep its cgroup from being removed.
    if let Err(e) = crate::cgroup_delegate::remove_children(&cfg.shim_dir) {
        note!("crius-shim {}: {e}", cfg.id);
    }
    if let Some(rt) = &cfg.runtime {
        return crate::external::delete(cfg, rt);
    }
    let dir = cfg.youki_root.join(&cfg.id);
    if !dir.join("state.json").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }
    let mut container = Container::load(dir.clone())
        .map_err(|e| format!("load container state {}: {}", dir.display(), error_chain(&e)))?;
    container
        .delete(true)
        .map_err(|e| format!("delete container {}: {}", cfg.id, error_chain(&e)))
}
