//! Requested CDI devices → checked edits → the OCI spec: what the container gets from the
//! `containerEdits` of the devices and of their specs (env, device nodes with device-cgroup
//! rules, mounts, hooks, additional gids).
//!
//! Invariants: everything that reads the host (device node numbers, mount sources, hook
//! binaries) happens in [`Injection::resolve`], before the container exists; [`Injection::apply`]
//! is pure and cannot fail. Edits apply in the reference's order: for each requested device, its
//! spec's edits (once per spec) and then its own; a later env var, device or mount at the same
//! name or path replaces an earlier one.

use std::collections::HashSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Hook, Hooks, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, LinuxResources, Mount, Spec,
};

use super::CdiError;
use super::registry::{Entry, scan};
use super::schema::{self, DeviceNode, Edits};

/// The checked edits of the requested devices, ready to apply.
#[derive(Debug, Default, Clone)]
pub struct Injection {
    /// The fully-qualified names, in request order.
    pub devices: Vec<String>,
    env: Vec<String>,
    /// Nodes whose owner is unset take the process's uid/gid at apply time (when not root).
    nodes: Vec<(LinuxDevice, Option<LinuxDeviceCgroup>)>,
    mounts: Vec<Mount>,
    hooks: Vec<(String, Hook)>,
    gids: Vec<u32>,
}

impl Injection {
    /// Resolves `names` (fully-qualified, deduplicated) against the specs in `dirs`. No names: no
    /// disk access at all.
    pub fn resolve(dirs: &[PathBuf], names: &[String]) -> Result<Injection, CdiError> {
        let mut inj = Injection::default();
        if names.is_empty() {
            return Ok(inj);
        }
        for n in names {
            schema::qualified(n).map_err(CdiError::InvalidName)?;
        }
        let table = scan(dirs).map_err(|source| CdiError::Dir {
            dirs: dirs.to_vec(),
            source,
        })?;
        let mut specs_done = HashSet::new();
        for name in names {
            let found = match table.get(name) {
                None => return Err(CdiError::UnknownDevice(name.clone())),
                Some((_, Entry::Conflict(a, b))) => {
                    return Err(CdiError::Conflict {
                        name: name.clone(),
                        a: a.clone(),
                        b: b.clone(),
                    });
                }
                Some((_, Entry::Device(f))) => f,
            };
            if specs_done.insert(found.path.clone()) {
                inj.add(name, &found.spec.edits)?;
            }
            inj.add(name, &found.spec.devices[found.index].edits)?;
            inj.devices.push(name.clone());
        }
        Ok(inj)
    }

    /// Checks `e` against the host and records it for `device`.
    fn add(&mut self, device: &str, e: &Edits) -> Result<(), CdiError> {
        let unsupported = |what| CdiError::Unsupported {
            device: device.into(),
            what,
        };
        if e.intel_rdt.is_some() {
            return Err(unsupported("intelRdt (resctrl classes)"));
        }
        if !e.net_devices.is_empty() {
            return Err(unsupported("netDevices (moving host interfaces into the pod)"));
        }
        let invalid = |message: String| CdiError::Invalid {
            device: device.into(),
            message,
        };
        self.env.extend(e.env.iter().cloned());
        for n in &e.device_nodes {
            self.nodes.push(node(n).map_err(invalid)?);
        }
        for m in &e.mounts {
            std::fs::metadata(&m.host_path)
                .map_err(|err| invalid(format!("mount source {}: {err}", m.host_path)))?;
            self.mounts.push(mount(m));
        }
        for h in &e.hooks {
            // OCI: a startContainer hook's path resolves in the container, every other on the host.
            if h.hook_name != "startContainer" {
                std::fs::metadata(&h.path).map_err(|err| invalid(format!("hook {}: {err}", h.path)))?;
            }
            let mut hook = Hook::default();
            hook.set_path(PathBuf::from(&h.path))
                .set_args((!h.args.is_empty()).then(|| h.args.clone()))
                .set_env((!h.env.is_empty()).then(|| h.env.clone()))
                .set_timeout(h.timeout);
            self.hooks.push((h.hook_name.clone(), hook));
        }
        self.gids.extend(e.additional_gids.iter().filter(|g| **g != 0));
        Ok(())
    }

    /// Applies the edits to `spec` (built by `spec::build`, so it has a process and linux).
    pub fn apply(&self, spec: &mut Spec) {
        if self.devices.is_empty() {
            return;
        }
        let (uid, gid) = spec
            .process()
            .as_ref()
            .map(|p| (p.user().uid(), p.user().gid()))
            .unwrap_or_default();
        if let Some(p) = spec.process_mut() {
            let env = p.env_mut().get_or_insert_with(Vec::new);
            for var in &self.env {
                let key = var.split_once('=').map(|(k, _)| k).unwrap_or(var);
                env.retain(|v| v.split_once('=').map(|(k, _)| k).unwrap_or(v) != key);
                env.push(var.clone());
            }
            let groups = p.user_mut().additional_gids_mut().get_or_insert_with(Vec::new);
            for g in &self.gids {
                if !groups.contains(g) {
                    groups.push(*g);
                }
            }
        }
        let lx = spec.linux_mut().get_or_insert_with(Default::default);
        for (dev, rule) in &self.nodes {
            let mut dev = dev.clone();
            if dev.uid().is_none() && uid > 0 {
                dev.set_uid(Some(uid));
            }
            if dev.gid().is_none() && gid > 0 {
                dev.set_gid(Some(gid));
            }
            let devices = lx.devices_mut().get_or_insert_with(Vec::new);
            devices.retain(|d| d.path() != dev.path());
            devices.push(dev);
            if let Some(rule) = rule {
                let res = lx.resources_mut().get_or_insert_with(LinuxResources::default);
                res.devices_mut().get_or_insert_with(Vec::new).push(rule.clone());
            }
        }
        if !self.mounts.is_empty() {
            let mounts = spec.mounts_mut().get_or_insert_with(Vec::new);
            for m in &self.mounts {
                mounts.retain(|o| o.destination() != m.destination());
                mounts.push(m.clone());
            }
            // As the reference: parents before children, otherwise in the order given.
            mounts.sort_by_key(|m| m.destination().components().count());
        }
        if !self.hooks.is_empty() {
            let hooks = spec.hooks_mut().get_or_insert_with(Hooks::default);
            for (name, h) in &self.hooks {
                let list = match name.as_str() {
                    "prestart" => hooks.prestart_mut(),
                    "createRuntime" => hooks.create_runtime_mut(),
                    "createContainer" => hooks.create_container_mut(),
                    "startContainer" => hooks.start_container_mut(),
                    "poststart" => hooks.poststart_mut(),
                    // The schema admits only the six OCI hook kinds.
                    _ => hooks.poststop_mut(),
                };
                list.get_or_insert_with(Vec::new).push(h.clone());
            }
        }
    }
}

/// A device node with what the spec leaves out taken from the host node (the reference's
/// rule: type, numbers and mode from `lstat` of the host path unless type and major are given).
fn node(n: &DeviceNode) -> Result<(LinuxDevice, Option<LinuxDeviceCgroup>), String> {
    let host = if n.host_path.is_empty() {
        &n.path
    } else {
        &n.host_path
    };
    let minimal = !n.typ.is_empty() && (n.major != 0 || n.typ == "p");
    let (mut typ, mut major, mut minor, mut mode) = (n.typ.clone(), n.major, n.minor, n.file_mode);
    match std::fs::symlink_metadata(host) {
        Err(e) if !minimal => return Err(format!("host device {host}: {e}")),
        Err(_) => {}
        Ok(meta) => {
            mode = mode.or(Some(meta.mode() & 0o7777));
            if !minimal {
                let ft = meta.file_type();
                let host_typ = if ft.is_block_device() {
                    "b"
                } else if ft.is_char_device() {
                    "c"
                } else if ft.is_fifo() {
                    "p"
                } else {
                    return Err(format!("host path {host} is not a device node"));
                };
                if typ.is_empty() {
                    typ = host_typ.into();
                } else if typ != host_typ {
                    return Err(format!("{host} is of type {host_typ}, the spec says {typ}"));
                }
                if typ != "p" && major == 0 {
                    major = libc::major(meta.rdev()) as i64;
                    minor = libc::minor(meta.rdev()) as i64;
                }
            }
        }
    }
    let kind = match typ.as_str() {
        "b" => LinuxDeviceType::B,
        "c" => LinuxDeviceType::C,
        "u" => LinuxDeviceType::U,
        _ => LinuxDeviceType::P,
    };
    let mut dev = LinuxDevice::default();
    dev.set_path(PathBuf::from(&n.path))
        .set_typ(kind)
        .set_major(major)
        .set_minor(minor)
        .set_file_mode(mode)
        .set_uid(n.uid)
        .set_gid(n.gid);
    let access = match n.permissions.as_str() {
        "" => Some("rwm"),
        "none" => None,
        p => Some(p),
    };
    let rule = access
        .filter(|_| matches!(kind, LinuxDeviceType::B | LinuxDeviceType::C))
        .map(|a| {
            let mut r = LinuxDeviceCgroup::default();
            r.set_allow(true)
                .set_typ(Some(kind))
                .set_major(Some(major))
                .set_minor(Some(minor))
                .set_access(Some(a.into()));
            r
        });
    Ok((dev, rule))
}

/// A CDI mount as an OCI mount. A mount with no type (or type `bind`) and no `bind`/`rbind`
/// option is a bind mount: CDI sources are host paths, and a typeless mount of a path is
/// otherwise refused by the kernel at create.
fn mount(m: &schema::Mount) -> Mount {
    let mut options = m.options.clone();
    let is_bind = options.iter().any(|o| o == "bind" || o == "rbind");
    let typ = if m.typ.is_empty() { "bind" } else { m.typ.as_str() };
    if typ == "bind" && !is_bind {
        options.push("bind".into());
    }
    let mut o = Mount::default();
    o.set_source(Some(PathBuf::from(&m.host_path)))
        .set_destination(Path::new(&m.container_path).to_path_buf())
        .set_typ(Some(typ.into()))
        .set_options(Some(options));
    o
}

#[cfg(test)]
mod tests;
