//! CRI `ContainerConfig` + `PodSandboxConfig` + the image config → an OCI runtime spec.
//!
//! Pure apart from reading what the request names on the host (mount sources, device nodes, a
//! localhost seccomp profile): every input is plain data, so it is unit-tested on its own.
//! Invariants: the result always has an absolute `linux.cgroupsPath`, an absolute `root.path`,
//! a non-empty `process.args` and a `PATH` in `process.env`; `noNewPrivileges` is absent unless
//! true; a refused request is a [`SpecError`], never a partial spec.

mod apparmor;
mod devices;
pub(crate) mod linux;
mod mounts;
mod process;
mod seccomp;
pub mod user;
pub mod userns;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cri_api::v1::{ContainerConfig, PodSandboxConfig};
use oci_spec::runtime::{Linux, Root, Spec};

pub use linux::{HostFacts, Namespace, PodNamespaces};
pub(crate) use mounts::host_source;
pub use mounts::unescape_mountinfo;
pub use process::{ALL_CAPS, DEFAULT_PATH};
pub use user::UserDb;
pub use userns::PodUserns;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The request asks for something invalid or contradictory (InvalidArgument).
    #[error("{0}")]
    Invalid(String),
    /// The request is valid but this host cannot do it: AppArmor profile without AppArmor, a
    /// capability the runtime does not hold, propagation from a source that is not shared
    /// (FailedPrecondition).
    #[error("{0}")]
    Unsupported(String),
    /// A host path the request names does not exist or cannot be read (InvalidArgument).
    #[error("host path {path}: {source}")]
    MountSource {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The parts of an image's config that shape the process (OCI image spec `config`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageProcess {
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
}

impl ImageProcess {
    pub fn from_image_config(cfg: &oci_spec::image::ImageConfiguration) -> ImageProcess {
        let Some(c) = cfg.config() else {
            return ImageProcess::default();
        };
        ImageProcess {
            user: c.user().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().unwrap_or_default(),
        }
    }
}

/// The pod's files on the host, bind-mounted into each container when present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFiles {
    pub hostname: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    pub shm: Option<PathBuf>,
}

/// Everything the spec is made from.
pub struct SpecInput<'a> {
    pub id: &'a str,
    pub sandbox_id: &'a str,
    pub config: &'a ContainerConfig,
    pub sandbox: &'a PodSandboxConfig,
    pub image_name: &'a str,
    pub image: &'a ImageProcess,
    /// The mounted rootfs (absolute).
    pub rootfs: &'a Path,
    pub users: &'a UserDb,
    pub pod_files: &'a PodFiles,
    pub namespaces: &'a PodNamespaces,
    /// The PID namespace of the target container for PID mode TARGET.
    pub target_pid: Option<&'a Path>,
    /// OCI `linux.cgroupsPath`: an absolute path (cgroupfs driver) or `<slice>:crius:<id>`
    /// (systemd driver).
    pub cgroups_path: &'a str,
    /// Absolute cgroupfs path of this container's cgroup (under the pod's cgroup).
    pub cgroup_fs_path: &'a str,
    pub host: &'a HostFacts,
    /// A privileged container gets the host's devices and an allow-all device cgroup; false
    /// under a handler with `privileged_without_host_devices`.
    pub privileged_host_devices: bool,
}

// CRI: the deprecated `apparmor_profile`/`seccomp_profile_path` strings are still honoured when
// the typed profiles are absent (older kubelets send only them).
#[allow(deprecated)]
pub fn build(input: &SpecInput<'_>) -> Result<Spec, SpecError> {
    let cfg = input.config;
    let sc = cfg.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let privileged = sc.is_some_and(|s| s.privileged);
    if privileged
        && !input
            .sandbox
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .is_some_and(|s| s.privileged)
    {
        // CRI: a privileged container needs a privileged sandbox.
        return Err(SpecError::Invalid(
            "privileged container in a non-privileged pod".into(),
        ));
    }
    if !input.rootfs.is_absolute() || !input.cgroup_fs_path.starts_with('/') {
        return Err(SpecError::Invalid(
            "rootfs and cgroups path must be absolute".into(),
        ));
    }
    let host_network = input.namespaces.network == Namespace::Host;
    let hostname =
        (!host_network && !input.sandbox.hostname.is_empty()).then_some(input.sandbox.hostname.as_str());

    let mut proc = process::process(cfg, input.image, input.users, hostname, input.host.capabilities)?;
    if let Some(adj) = proc.oom_score_adj() {
        proc.set_oom_score_adj(Some(adj.max(input.host.oom_score_adj_floor)));
    }
    if input.host.cgroup_v2 && !privileged {
        process::drop_default_mknod(&mut proc, sc);
    }
    proc.set_apparmor_profile(apparmor::select(
        sc.and_then(|s| s.apparmor.as_ref()),
        sc.map(|s| s.apparmor_profile.as_str()).unwrap_or_default(),
        privileged,
        input.host.apparmor,
    )?);
    let caps: Vec<_> = proc
        .capabilities()
        .as_ref()
        .and_then(|c| c.bounding().clone())
        .map(|s| s.into_iter().collect())
        .unwrap_or_default();

    let readonly_rootfs = sc.is_some_and(|s| s.readonly_rootfs);
    let mut root = Root::default();
    root.set_path(input.rootfs.to_path_buf())
        .set_readonly(Some(readonly_rootfs));

    let base = mounts::merge(
        mounts::defaults(
            privileged,
            &input.host.cgroup_v1_hierarchies,
            input.cgroup_fs_path,
        ),
        mounts::pod_files(input.pod_files, readonly_rootfs),
    );
    let mut mountinfo = || std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let all_mounts = mounts::merge(base, mounts::cri_mounts(&cfg.mounts, &mut mountinfo)?);
    let (mut devices, device_rules) = devices::devices(&cfg.devices)?;
    let host_devices = privileged && input.privileged_host_devices;
    if host_devices {
        // A privileged container sees the host's devices; a CRI device at the same path wins.
        let mut host = devices::host_devices(Path::new("/dev"));
        host.retain(|h| !devices.iter().any(|d| d.path() == h.path()));
        devices.extend(host);
    }

    let resources = cfg.linux.as_ref().and_then(|l| l.resources.as_ref());
    let (masked, readonly) = linux::masked_and_readonly(sc);
    let mut lx = Linux::default();
    let mut namespaces = linux::namespaces(input.namespaces, sc, input.target_pid)?;
    if input.host.cgroup_v2 {
        // As containerd on cgroup v2: a private cgroup namespace, so the container's
        // /sys/fs/cgroup is its own cgroup (memory.max and all) and the host's tree stays hidden.
        let mut ns = oci_spec::runtime::LinuxNamespace::default();
        ns.set_typ(oci_spec::runtime::LinuxNamespaceType::Cgroup);
        namespaces.push(ns);
    }
    lx.set_namespaces(Some(namespaces))
        .set_cgroups_path(Some(input.cgroups_path.into()))
        .set_resources(Some(linux::resources(
            resources,
            input.host,
            host_devices,
            device_rules,
        )?))
        .set_devices((!devices.is_empty()).then_some(devices))
        .set_masked_paths(Some(masked))
        .set_readonly_paths(Some(readonly))
        .set_seccomp(seccomp::select(
            sc.and_then(|s| s.seccomp.as_ref()),
            sc.map(|s| s.seccomp_profile_path.as_str()).unwrap_or_default(),
            privileged,
            &caps,
        )?)
        .set_rootfs_propagation(Some(mounts::rootfs_propagation(&cfg.mounts).to_string()))
        .set_uid_mappings(None)
        .set_gid_mappings(None)
        .set_sysctl(None)
        .set_intel_rdt(None);
    if let Some(u) = &input.namespaces.user {
        userns::check(&proc, privileged, u)?;
        userns::set_mappings(&mut lx, u);
    }

    let mut annotations: HashMap<String, String> = cfg.annotations.clone().into_iter().collect();
    let name = cfg.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
    for (k, v) in [
        ("io.kubernetes.cri.container-type", "container"),
        ("io.kubernetes.cri.sandbox-id", input.sandbox_id),
        ("io.kubernetes.cri.container-name", name.as_str()),
        ("io.kubernetes.cri.image-name", input.image_name),
    ] {
        annotations.insert(k.into(), v.into());
    }

    let mut spec = Spec::default();
    spec.set_process(Some(proc))
        .set_root(Some(root))
        .set_hostname(hostname.map(str::to_string))
        .set_mounts(Some(all_mounts))
        .set_annotations(Some(annotations))
        .set_linux(Some(lx))
        .set_hooks(None);
    Ok(spec)
}

/// Whether the container joins a PID namespace (pod, target or host) instead of having its own:
/// then its processes outlive its init unless someone kills them.
pub fn shares_pid_namespace(spec: &Spec) -> bool {
    let own = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|ns| {
            ns.iter()
                .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid)
        })
        .is_some_and(|n| n.path().is_none());
    !own
}

#[cfg(test)]
mod tests;
