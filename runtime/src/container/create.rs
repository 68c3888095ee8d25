//! CreateContainer: resolve the image → lease its layers → overlay rootfs → OCI spec and the
//! shim's configuration → record CREATED. No shim runs yet: as containerd defers `runc create`
//! to StartContainer, the shim is spawned and libcontainer builds the container in
//! StartContainer (`start.rs`), so a created container has no process, no cgroup and no
//! libcontainer state (its record's `pid` is 0 until then).
//!
//! An absolute path as image names a checkpoint archive to restore from (`restore.rs`).
//!
//! Invariants: the name `<pod>/<name>/<attempt>` is unique (AlreadyExists, checked up front and
//! again in the transaction that inserts the record); any failure undoes every earlier step
//! through the one container teardown (`teardown.rs`), whose steps all tolerate not having been
//! done; everything the request can be refused for (image, mounts, devices, CDI, handler, the
//! spec itself) is checked here, so bad input fails at create with nothing left. All of it runs
//! on the blocking pool (the image's account files are read there, never on an async worker).
//!
//! Durability: one fsync per create, the record's commit. The image lease is committed before
//! it without an fsync (`lease_unsynced`) and reaches the disk with the record; a crash in
//! between loses only the lease of a container that has no record, whose leftovers recovery
//! removes (and recovery leases again for any recorded container that lacks one).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use cri_api::v1::{ContainerConfig, PodSandboxConfig};

use super::record::{Record, RecordError, State, Status, name_key};
use super::{ContainerError, Containers, PodInfo, io_err, new_id, now_ns};
use crate::spec::{self, ImageProcess, SpecInput, UserDb};
use crius_sandbox::cgroup::Driver;
use crius_sandbox::slice;

impl Containers {
    /// CRI: CreateContainer. Returns the new container's id.
    pub async fn create(
        self: &Arc<Self>,
        pod: &PodInfo,
        config: ContainerConfig,
    ) -> Result<String, ContainerError> {
        let meta = config
            .metadata
            .as_ref()
            .ok_or_else(|| ContainerError::Invalid("container metadata is required".into()))?;
        cri_api::validate::metadata_name("container name", &meta.name)
            .and_then(|()| cri_api::validate::labels("config.labels", &config.labels))
            .and_then(|()| cri_api::validate::annotations("config.annotations", &config.annotations))
            .map_err(|e| ContainerError::Invalid(e.to_string()))?;
        if !pod.ready {
            return Err(ContainerError::PodNotReady(pod.id.clone()));
        }
        let key = name_key(&pod.id, &meta.name, meta.attempt);
        let owner_key = key.clone();
        let (owner, id) = self
            .blocking(move |c| Ok::<_, ContainerError>((c.records.name_owner(&owner_key)?, new_id()?)))
            .await?;
        if let Some(id) = owner {
            return Err(ContainerError::AlreadyExists { name: key, id });
        }
        {
            let mut creating = self.creating.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(other) = creating.get(&key) {
                return Err(ContainerError::AlreadyExists {
                    name: key,
                    id: other.clone(),
                });
            }
            creating.insert(key.clone(), id.clone());
        }
        let result = self.create_steps(&id, pod, config).await;
        match &result {
            Ok(()) => {
                self.events.send(&id, &pod.id, super::EventKind::Created);
                self.watch_exit(&id);
            }
            Err(e) => {
                tracing::debug!(id, error = %e, "CreateContainer failed; rolling back");
                if let Err(te) = self.teardown(&id, None).await {
                    tracing::error!(id, error = %te, "CreateContainer rollback incomplete; recovery removes the rest");
                }
            }
        }
        self.creating
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        result.map(|()| id)
    }

    async fn create_steps(
        self: &Arc<Self>,
        id: &str,
        pod: &PodInfo,
        config: ContainerConfig,
    ) -> Result<(), ContainerError> {
        let (key, pod_info) = (id.to_string(), pod.clone());
        self.blocking(move |c| {
            let record = c.prepare(&key, &pod_info, config)?;
            match c.records.insert(&record) {
                Ok(()) => Ok(()),
                Err(RecordError::NameTaken { name, id }) => Err(ContainerError::AlreadyExists { name, id }),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// The blocking part of a create before its record: image lookup and lease, directories,
    /// the rootfs mount, the image's account files, the OCI spec (`config.json`) and the shim's
    /// configuration (`shim.json`, read back by StartContainer). Returns the record to insert.
    fn prepare(
        &self,
        id: &str,
        pod: &PodInfo,
        mut config: ContainerConfig,
    ) -> Result<Record, ContainerError> {
        let id = id.to_string();
        let handler = self.handlers.get(&pod.runtime_handler)?.clone();
        // An archive as image: extracted first, so a bad archive fails before anything else.
        let restore = self.extract_checkpoint(&id, &mut config)?;
        let image_name = config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        if image_name.is_empty() {
            return Err(ContainerError::Invalid("container image is required".into()));
        }
        let image = self
            .images
            .get(&image_name)
            .map_err(ContainerError::Image)?
            .ok_or_else(|| ContainerError::ImageNotFound(image_name.clone()))?;
        let image_config = self.images.config(&image.id).map_err(ContainerError::Image)?;
        let process = ImageProcess::from_image_config(&image_config);
        let stop_signal = image_config
            .config()
            .as_ref()
            .and_then(|c| c.stop_signal().clone());

        let log_path = log_path(&pod.config, &config)?;
        let idmapped = super::mount_idmap::plan(&config, pod.namespaces.user.as_ref())?;
        // CDI devices are resolved (and their host nodes, mount sources and hooks checked)
        // before anything of the container exists; the spec files are re-read each time.
        let cdi = crate::cdi::Injection::resolve(&self.cdi_spec_dirs, &crate::cdi::requested(&config)?)?;

        let lowers = self
            .images
            .lease_unsynced(&image.id, &id)
            .map_err(ContainerError::Image)?;
        crius_sandbox::crash::point("create-container:after-lease");
        let bundle = self.bundle_dir(&id);
        let shim_dir = self.shim_dir(&id);
        crate::private::create_dir(&shim_dir).map_err(io_err("create", &shim_dir))?;
        crate::private::create_dir(&bundle).map_err(io_err("create", &bundle))?;
        crate::private::create_dir(&self.youki_root()).map_err(io_err("create", &self.youki_root()))?;
        let rootfs_dir = self.rootfs_dir(&id);
        let idmap = pod.namespaces.user.as_ref().map(super::rootfs_idmap::Idmap::of);
        if let Some(m) = &idmap {
            super::rootfs_idmap::open_bundle(&bundle, m)?;
        }
        self.mounter
            .mount(&lowers, &self.layer_dir(&id), &rootfs_dir, idmap.as_ref())?;
        crius_sandbox::crash::point("create-container:after-mount");
        if let Some(r) = &restore {
            self.apply_checkpoint_rootfs(r, &rootfs_dir)?;
        }
        // The spec is built from a copy whose idmapped mounts name their staging paths; the
        // record keeps the request's mounts.
        let staged = match &pod.namespaces.user {
            Some(u) if !idmapped.is_empty() => {
                Some(super::mount_idmap::stage(&config, &idmapped, u, &bundle)?)
            }
            _ => None,
        };

        let target_pid = self.target_pid_namespace(&config)?;
        let users = UserDb::load(&rootfs_dir)?;
        let (cgroup_path, spec_cgroups_path) = cgroup_paths(pod, &id)?;
        let mut oci = spec::build(&SpecInput {
            id: &id,
            sandbox_id: &pod.id,
            config: staged.as_ref().unwrap_or(&config),
            // The pod's recorded config, never a request's copy, decides what the pod allows
            // (a privileged container needs a pod that was created privileged).
            sandbox: &pod.config,
            image_name: &image_name,
            image: &process,
            rootfs: &rootfs_dir,
            users: &users,
            pod_files: &pod.files,
            namespaces: &pod.namespaces,
            target_pid: target_pid.as_deref(),
            cgroups_path: &spec_cgroups_path,
            cgroup_fs_path: &cgroup_path,
            host: &self.host,
            privileged_host_devices: !handler.privileged_without_host_devices,
        })?;
        cdi.apply(&mut oci);
        if !cdi.devices.is_empty() {
            tracing::debug!(id, devices = ?cdi.devices, "CDI devices injected");
        }
        let spec_path = bundle.join("config.json");
        let body = serde_json::to_vec_pretty(&oci).map_err(|e| ContainerError::Io {
            what: "encode",
            path: spec_path.clone(),
            source: std::io::Error::other(e),
        })?;
        // Root only: the spec holds the container's environment (secrets passed as env vars).
        crate::private::write_file(&spec_path, &body).map_err(io_err("write", &spec_path))?;
        crius_sandbox::crash::point("create-container:after-spec");
        if let Some(p) = log_path.as_ref().and_then(|p| p.parent()) {
            std::fs::create_dir_all(p).map_err(io_err("create log directory", p))?;
        }
        let user = oci
            .process()
            .as_ref()
            .map(|p| p.user().clone())
            .unwrap_or_default();
        let image_ref = image
            .repo_digests
            .first()
            .cloned()
            .unwrap_or_else(|| image.id.clone());
        let resources = config.linux.as_ref().and_then(|l| l.resources.clone());
        let record = Record {
            id: id.clone(),
            sandbox_id: pod.id.clone(),
            config,
            image_name,
            image_id: image.id.clone(),
            image_ref,
            log_path,
            systemd_cgroup: pod.cgroup_driver == Driver::Systemd,
            runtime: handler.runtime,
            cgroup_path,
            created_at: now_ns(),
            stop_signal,
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            restored_from: restore.map(|r| r.archive),
            status: Status::created(resources),
        };
        let shim_cfg = self.shim_config(&record, &oci);
        let cfg_path = shim_dir.join(crius_shim_api::CONFIG_FILE);
        let body = serde_json::to_vec(&shim_cfg).map_err(|e| ContainerError::Io {
            what: "encode",
            path: cfg_path.clone(),
            source: std::io::Error::other(e),
        })?;
        crate::private::write_file(&cfg_path, &body).map_err(io_err("write", &cfg_path))?;
        Ok(record)
    }

    /// CRI: PID namespace mode TARGET joins the PID namespace of `target_id`, which must be a
    /// running container (its init pid names the namespace).
    fn target_pid_namespace(&self, config: &ContainerConfig) -> Result<Option<PathBuf>, ContainerError> {
        let Some(ns) = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .filter(|n| n.pid == cri_api::v1::NamespaceMode::Target as i32)
        else {
            return Ok(None);
        };
        if ns.target_id.is_empty() {
            return Err(ContainerError::Invalid(
                "PID namespace mode TARGET needs a target_id".into(),
            ));
        }
        let target = self.refreshed(&ns.target_id).map_err(|e| match e {
            ContainerError::NotFound(id) => {
                ContainerError::Invalid(format!("PID namespace target container {id} does not exist"))
            }
            e => e,
        })?;
        if target.status.state != State::Running || target.status.pid <= 0 {
            return Err(ContainerError::WrongState {
                id: target.id,
                state: target.status.state,
                action: "sharing its PID namespace",
                wanted: "a running container",
            });
        }
        Ok(Some(PathBuf::from(format!("/proc/{}/ns/pid", target.status.pid))))
    }
}

/// CRI: the log file is `<pod log_directory>/<container log_path>`; no log when either is empty.
/// The container's cgroup: its cgroupfs path (recorded, read by stats and the shim) and the
/// OCI `linux.cgroupsPath` that names it to libcontainer. cgroupfs: `<pod cgroup>/<id>` both;
/// systemd: the scope `crius-<id>.scope` in the pod's slice, named `<slice>:crius:<id>`.
fn cgroup_paths(pod: &PodInfo, id: &str) -> Result<(String, String), ContainerError> {
    let parent = pod.cgroup_parent.trim_end_matches('/');
    match pod.cgroup_driver {
        Driver::Cgroupfs => {
            let p = format!("{parent}/{id}");
            Ok((p.clone(), p))
        }
        Driver::Systemd => {
            let pod_path = Path::new(parent);
            let name = slice::name_of(pod_path).ok_or_else(|| {
                ContainerError::Invalid(format!("pod cgroup {parent:?} is not a systemd slice"))
            })?;
            let fs = slice::scope_path(pod_path, slice::CONTAINER_PREFIX, id);
            Ok((
                fs.to_string_lossy().into_owned(),
                slice::cgroups_path(name, slice::CONTAINER_PREFIX, id),
            ))
        }
    }
}

fn log_path(pod: &PodSandboxConfig, c: &ContainerConfig) -> Result<Option<PathBuf>, ContainerError> {
    if pod.log_directory.is_empty() || c.log_path.is_empty() {
        return Ok(None);
    }
    let dir = Path::new(&pod.log_directory);
    let rel = Path::new(&c.log_path);
    if !dir.is_absolute() {
        return Err(ContainerError::Invalid(format!(
            "pod log directory {:?} is not absolute",
            pod.log_directory
        )));
    }
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(ContainerError::Invalid(format!(
            "container log path {:?} must be relative without `..`",
            c.log_path
        )));
    }
    Ok(Some(dir.join(rel)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_path_joins_and_refuses_escapes() {
        let pod = PodSandboxConfig {
            log_directory: "/var/log/pods/x".into(),
            ..Default::default()
        };
        let mut c = ContainerConfig {
            log_path: "app/0.log".into(),
            ..Default::default()
        };
        assert_eq!(
            log_path(&pod, &c).unwrap(),
            Some(PathBuf::from("/var/log/pods/x/app/0.log"))
        );
        c.log_path = "../../etc/passwd".into();
        assert!(log_path(&pod, &c).is_err());
        c.log_path = "/abs.log".into();
        assert!(log_path(&pod, &c).is_err());
        c.log_path = String::new();
        assert_eq!(log_path(&pod, &c).unwrap(), None);
    }
}
