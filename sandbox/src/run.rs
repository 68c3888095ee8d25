//! CRI RunPodSandbox: validate → reserve the name (with the record) → pin namespaces and apply
//! sysctls → pod files → (CNI ADD ∥ pod cgroup → infra process born in it, PID mode POD) → hosts
//! → READY.
//!
//! Invariants: validation has no side effects; after the record is inserted, any failure runs
//! the shared teardown (infra killed, CNI DEL, namespaces unpinned, files and cgroup removed,
//! record and name deleted) before the error is returned; the whole verb runs detached from the
//! RPC, so a client deadline cannot stop it half-way.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use cri_api::v1::{NamespaceMode, NamespaceOption, PodSandboxConfig, Protocol, RunPodSandboxRequest};
use cri_api::validate;
use rand::RngCore;
use serde_json::{Map, Value, json};

use crate::cgroup;
use crate::cni::{self, Attachment, NetworkConfig, POD_IFNAME};
use crate::error::{InvalidRequest, SandboxError};
use crate::manager::SandboxManager;
use crate::netns::{self, NsRequest, PinnedNamespaces};
use crate::pause::{self, PauseProcess};
use crate::podfiles::{self, PodFiles};
use crate::record::{NetworkPlan, SandboxMeta, SandboxState, SandboxStatus, name_key};
use crate::store::{self, Record};
use crate::sysctl::{self, OwnedNamespaces, Sysctl};
use crate::userns;

/// Everything decided before any side effect.
struct Plan {
    meta: SandboxMeta,
    sysctls: Vec<Sysctl>,
    network: Option<NetworkConfig>,
}

impl SandboxManager {
    /// CRI RunPodSandbox. Returns the new sandbox's id.
    pub async fn run(self: &Arc<Self>, req: RunPodSandboxRequest) -> Result<String, SandboxError> {
        self.detached(move |m| m.run_blocking(req)).await
    }

    fn run_blocking(&self, req: RunPodSandboxRequest) -> Result<String, SandboxError> {
        let plan = self.plan(req)?;
        let id = plan.meta.id.clone();
        let mut rec = Record {
            meta: plan.meta.clone(),
            status: SandboxStatus::creating(),
        };
        self.set_creating(&id, true);
        if let Err(e) = store::insert(&self.db, &rec.meta, &rec.status) {
            self.set_creating(&id, false);
            return Err(e.into());
        }
        let _guard = self.locks.blocking_lock(&id);
        crate::crash::point("run-pod-sandbox:after-record");
        // Until CNI ADD is attempted there is no network to tear down.
        rec.status.network_torn_down = true;
        let result = self.create(&plan, &mut rec);
        if let Err(e) = &result {
            tracing::warn!(sandbox = %id, error = %e, "RunPodSandbox failed; rolling back");
            if let Err(te) = self.teardown(&rec) {
                tracing::error!(sandbox = %id, error = %te, "rollback incomplete; the record stays for RemovePodSandbox");
            }
        }
        self.set_creating(&id, false);
        result.map(|()| id)
    }

    /// The side effects, in order. `rec.status` tracks progress for the rollback.
    fn create(&self, plan: &Plan, rec: &mut Record) -> Result<(), SandboxError> {
        let meta = &plan.meta;
        let start = Instant::now();
        let pinned = netns::pin(NsRequest {
            dir: meta.ns_dir.clone(),
            net: meta.namespaces.net.is_some(),
            ipc: meta.namespaces.ipc.is_some(),
            uts: meta.namespaces.uts.is_some(),
            hostname: Some(meta.hostname.clone()),
            sysctls: plan.sysctls.clone(),
            userns: meta.userns,
        })?;
        debug_assert_eq!(pinned, meta.namespaces);
        crate::crash::point("run-pod-sandbox:after-namespaces");
        let t_ns = start.elapsed();
        let dns = meta.config.dns_config.as_ref();
        podfiles::create(&meta.files, &meta.hostname, dns, &self.config.host_files)?;
        if let Some(maps) = &meta.userns {
            for dir in [&meta.ns_dir, &meta.files.dir] {
                userns::open_dir_to_group(dir, maps.gids.host_id).map_err(|source| {
                    podfiles::FilesError::Write {
                        path: dir.clone(),
                        source,
                    }
                })?;
            }
        }
        let t_files = start.elapsed();
        // CNI ADD runs beside the pod cgroup and infra process: the infra launcher's move into
        // the pod cgroup waits for an RCU grace period (cgroup v1), the plugins for themselves.
        if plan.network.is_some() && meta.network.is_some() {
            rec.status.network_torn_down = false;
        }
        let mut pause = None;
        let (network, infra) = std::thread::scope(|s| {
            let network = s.spawn(|| match (&plan.network, &meta.network) {
                (Some(net), Some(p)) => self.cni.add(net, &p.attachment).map(Some),
                _ => Ok(None),
            });
            let infra = self.infra(meta, &mut pause);
            (network.join(), infra)
        });
        // Recorded before any error returns, so the rollback stops what did start.
        rec.status.pause = pause;
        let network = network.map_err(|_| SandboxError::Task("the CNI ADD thread panicked".into()))?;
        if let Some(result) = network? {
            rec.status.ips = cni::pod_ips(&result, POD_IFNAME);
            rec.status.cni_result = Some(result);
        }
        infra?;
        // Crash points fire only once both branches are done: no plugin is still running.
        crate::crash::point("run-pod-sandbox:after-cni");
        let pod_ip = rec.status.ips.first().map(String::as_str);
        let host_network = meta.namespaces.net.is_none();
        podfiles::write_hosts(
            &meta.files,
            &meta.hostname,
            host_network,
            pod_ip,
            &self.config.host_files,
        )?;
        if let Some(maps) = &meta.userns {
            podfiles::chown_to(&meta.files, maps.uids.host_id, maps.gids.host_id)?;
        }
        let t_cni = start.elapsed();
        crate::crash::point("run-pod-sandbox:after-cgroup");
        rec.status.state = SandboxState::Ready;
        rec.status.creating = false;
        let status = rec.status.clone();
        store::update(&self.db, &meta.id, |s| *s = status)?;
        // Cumulative step times, for benchmark analysis.
        tracing::debug!(
            sandbox = %meta.id,
            namespaces = ?t_ns,
            files = ?t_files,
            network_and_infra = ?t_cni,
            ready = ?start.elapsed(),
            "pod sandbox created"
        );
        Ok(())
    }

    /// The pod cgroup, then (PID mode POD) the infra process born inside it. `pause` is set as
    /// soon as the process exists, whatever fails later.
    /// Under systemd the infra process asks for its own scope in the pod slice, which systemd
    /// creates with the slice; under cgroupfs it is born in the pod cgroup's infra leaf.
    fn infra(&self, meta: &SandboxMeta, pause: &mut Option<PauseProcess>) -> Result<(), SandboxError> {
        let place = match meta.cgroup_driver {
            cgroup::Driver::Cgroupfs => {
                cgroup::create(&self.cgroups, &meta.cgroup_parent)?;
                if !meta.pid_namespace {
                    return Ok(());
                }
                let leaf = meta.cgroup_parent.join(cgroup::INFRA_LEAF);
                cgroup::create(&self.cgroups, &leaf)?;
                pause::Placement::Dirs(cgroup::dirs(&self.cgroups, &leaf))
            }
            cgroup::Driver::Systemd => {
                if !meta.pid_namespace {
                    return Ok(());
                }
                let slice = crate::slice::name_of(&meta.cgroup_parent).ok_or_else(|| {
                    cgroup::CgroupError::BadPath {
                        path: meta.cgroup_parent.display().to_string(),
                    }
                })?;
                pause::Placement::Scope(crate::slice::cgroups_path(
                    slice,
                    crate::slice::INFRA_PREFIX,
                    &meta.id,
                ))
            }
        };
        *pause = Some(pause::spawn(&self.config.shim_path, &meta.namespaces, &place)?);
        Ok(())
    }

    fn plan(&self, req: RunPodSandboxRequest) -> Result<Plan, SandboxError> {
        let config = req.config.ok_or(InvalidRequest::Missing { what: "config" })?;
        let md = config.metadata.clone().ok_or(InvalidRequest::Missing {
            what: "config.metadata",
        })?;
        validate::metadata_name("metadata.name", &md.name).map_err(InvalidRequest::from)?;
        validate::metadata_name("metadata.namespace", &md.namespace).map_err(InvalidRequest::from)?;
        if !md.uid.is_empty() {
            validate::metadata_name("metadata.uid", &md.uid).map_err(InvalidRequest::from)?;
        }
        if let Some(d) = &config.dns_config {
            validate::dns_config(&d.servers, &d.searches, &d.options).map_err(InvalidRequest::from)?;
        }
        validate::labels("config.labels", &config.labels).map_err(InvalidRequest::from)?;
        validate::annotations("config.annotations", &config.annotations).map_err(InvalidRequest::from)?;
        if !req.runtime_handler.is_empty() && !self.config.runtime_handlers.contains(&req.runtime_handler) {
            return Err(SandboxError::UnknownHandler(req.runtime_handler));
        }
        let ns_opts = effective_namespaces(&config)?;
        let userns = userns::validate(ns_opts.userns_options.as_ref()).map_err(InvalidRequest::from)?;
        if userns.is_some()
            && let Err(reason) = self.user_namespaces()
        {
            return Err(SandboxError::HostUnsupported(format!(
                "user namespace mode POD is not available on this host: {reason}"
            )));
        }
        let host_net = ns_opts.network == NamespaceMode::Node as i32;
        let host_ipc = ns_opts.ipc == NamespaceMode::Node as i32;
        let hostname = pod_hostname(&config, host_net)?;
        let linux = config.linux.clone().unwrap_or_default();
        let owned = OwnedNamespaces {
            net: !host_net,
            ipc: !host_ipc,
            uts: !host_net,
        };
        let sysctls = sysctl::validate(&linux.sysctls, owned).map_err(InvalidRequest::from)?;
        validate_ports(&config)?;
        let network = if host_net {
            None
        } else {
            Some(cni::load_network(&self.config.cni_conf_dir).map_err(SandboxError::NetworkNotReady)?)
        };

        let id = new_id();
        let driver = self.config.cgroup_driver;
        let (cgroup_parent, cgroup_owned) = match (driver, linux.cgroup_parent.as_str()) {
            (cgroup::Driver::Cgroupfs, "") => (self.config.default_cgroup_parent.join(&id), true),
            (cgroup::Driver::Systemd, "") => (
                crate::slice::expand(&crate::slice::for_pod(&id)).map_err(InvalidRequest::CgroupParent)?,
                true,
            ),
            (cgroup::Driver::Cgroupfs, requested) => {
                let p = cgroup::validate(requested).map_err(InvalidRequest::CgroupParent)?;
                let owned = !cgroup::exists(&self.cgroups, &p);
                (p, owned)
            }
            (cgroup::Driver::Systemd, requested) => {
                let (_, p) = crate::slice::from_request(requested).map_err(InvalidRequest::CgroupParent)?;
                // A named slice is the caller's (kubelet's pod slice), and systemd may share it
                // between pods: crius stops only the per-pod slices it named itself.
                (p, false)
            }
        };
        let ns_dir = self.ns_dir(&id);
        let namespaces = PinnedNamespaces {
            net: owned.net.then(|| ns_dir.join("net")),
            ipc: owned.ipc.then(|| ns_dir.join("ipc")),
            uts: owned.uts.then(|| ns_dir.join("uts")),
            user: userns.map(|_| ns_dir.join("user")),
        };
        let net_plan = match (&network, &namespaces.net) {
            (Some(net), Some(netns)) => Some(NetworkPlan {
                name: net.name.clone(),
                conflist: String::from_utf8_lossy(&net.bytes).into_owned(),
                attachment: attachment(&id, netns.clone(), &config, &cgroup_parent),
            }),
            _ => None,
        };
        let meta = SandboxMeta {
            name_key: name_key(&md.name, &md.namespace, &md.uid, md.attempt),
            files: PodFiles::at(self.pod_dir(&id), owned.ipc),
            created_at: now_ns(),
            runtime_handler: req.runtime_handler,
            namespace_options: ns_opts.clone(),
            pid_namespace: ns_opts.pid == NamespaceMode::Pod as i32,
            ns_dir,
            namespaces,
            hostname,
            cgroup_parent,
            cgroup_owned,
            cgroup_driver: driver,
            userns,
            network: net_plan,
            config,
            id,
        };
        Ok(Plan {
            meta,
            sysctls,
            network,
        })
    }
}

/// CRI: NamespaceOption as the pod gets it. Network and IPC are POD or NODE (CONTAINER means POD
/// at pod level); PID is POD (infra process), CONTAINER or NODE. A pod user namespace (user
/// mode POD) owns all of them, so it needs every one to be the pod's.
fn effective_namespaces(config: &PodSandboxConfig) -> Result<NamespaceOption, InvalidRequest> {
    let opts = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let pod_or_node = |mode: i32| {
        if mode == NamespaceMode::Node as i32 {
            NamespaceMode::Node as i32
        } else {
            NamespaceMode::Pod as i32
        }
    };
    if opts.pid == NamespaceMode::Target as i32 {
        return Err(InvalidRequest::Unsupported(
            "PID namespace mode TARGET applies to containers, not to a pod sandbox".into(),
        ));
    }
    if userns::validate(opts.userns_options.as_ref())?.is_some() {
        for (mode, what) in [(opts.network, "network"), (opts.ipc, "IPC"), (opts.pid, "PID")] {
            if mode == NamespaceMode::Node as i32 {
                return Err(userns::UsernsError::HostNamespace(what).into());
            }
        }
    }
    Ok(NamespaceOption {
        network: pod_or_node(opts.network),
        ipc: pod_or_node(opts.ipc),
        pid: opts.pid,
        target_id: String::new(),
        userns_options: opts.userns_options,
    })
}

/// CRI PortMapping: ports in range, host IP an address when given.
fn validate_ports(config: &PodSandboxConfig) -> Result<(), InvalidRequest> {
    for p in &config.port_mappings {
        let bad = |reason| InvalidRequest::PortMapping {
            mapping: format!(
                "{}:{}/{} (host IP {:?})",
                p.host_port, p.container_port, p.protocol, p.host_ip
            ),
            reason,
        };
        if !(1..=65535).contains(&p.container_port) {
            return Err(bad("container_port must be 1..=65535"));
        }
        if !(0..=65535).contains(&p.host_port) {
            return Err(bad("host_port must be 0..=65535"));
        }
        if Protocol::try_from(p.protocol).is_err() {
            return Err(bad("unknown protocol"));
        }
        if !p.host_ip.is_empty() && p.host_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(bad("host_ip is not an IP address"));
        }
    }
    Ok(())
}

/// The pod's hostname: the requested one (an RFC 1123 name: it becomes a line of `hosts`), or
/// the host's for host-network pods and when empty.
fn pod_hostname(config: &PodSandboxConfig, host_net: bool) -> Result<String, InvalidRequest> {
    if host_net || config.hostname.is_empty() {
        return Ok(nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".into()));
    }
    validate::hostname("config.hostname", &config.hostname)?;
    Ok(config.hostname.clone())
}

/// The CNI attachment: CNI_ARGS with the Kubernetes keys and the capability arguments.
fn attachment(id: &str, netns: PathBuf, config: &PodSandboxConfig, cgroup: &std::path::Path) -> Attachment {
    let md = config.metadata.clone().unwrap_or_default();
    let args = vec![
        ("IgnoreUnknown".to_string(), "1".to_string()),
        ("K8S_POD_NAMESPACE".to_string(), md.namespace),
        ("K8S_POD_NAME".to_string(), md.name),
        ("K8S_POD_INFRA_CONTAINER_ID".to_string(), id.to_string()),
        ("K8S_POD_UID".to_string(), md.uid),
    ];
    let mut caps = Map::new();
    // CRI: only mappings with a host port are forwarded (portmap ignores the rest anyway).
    let ports: Vec<Value> = config
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| {
            let protocol = match Protocol::try_from(p.protocol).unwrap_or(Protocol::Tcp) {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
                Protocol::Sctp => "sctp",
            };
            json!({"hostPort": p.host_port, "containerPort": p.container_port, "protocol": protocol, "hostIP": p.host_ip})
        })
        .collect();
    if !ports.is_empty() {
        caps.insert("portMappings".into(), Value::Array(ports));
    }
    if let Some(d) = &config.dns_config {
        caps.insert(
            "dns".into(),
            json!({"servers": d.servers, "searches": d.searches, "options": d.options}),
        );
    }
    caps.insert(
        "cgroupPath".into(),
        Value::String(cgroup.to_string_lossy().into_owned()),
    );
    Attachment {
        container_id: id.to_string(),
        netns,
        ifname: POD_IFNAME.to_string(),
        args,
        capability_args: caps,
    }
}

/// A fresh 64-hex-character id.
fn new_id() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
