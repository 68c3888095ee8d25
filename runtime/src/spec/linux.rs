//! The OCI `linux` section: namespaces (joining the pod's pinned ones), the absolute
//! cgroupsPath, resources, devices, masked and read-only paths, seccomp, rootfs propagation —
//! and the host facts that decide which resources this host can enforce.
//!
//! Invariants: hugepage limits are dropped when the host has no hugetlb controller (libcgroups
//! refuses a spec that needs a missing controller); `unified` is only passed on a pure cgroup v2
//! host; the device cgroup denies everything not listed unless privileged.

use std::path::{Path, PathBuf};

use cri_api::v1::{LinuxContainerResources, LinuxContainerSecurityContext, NamespaceMode};
use oci_spec::runtime::{
    LinuxCpu, LinuxDeviceCgroup, LinuxHugepageLimit, LinuxMemory, LinuxNamespace, LinuxNamespaceType,
    LinuxResources,
};

use crius_sandbox::cgroup::Hierarchies;

use super::SpecError;

/// What the host's cgroups can do, probed once by the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    pub hugetlb: bool,
    pub swap_accounting: bool,
    /// Pure cgroup v2 (unified at /sys/fs/cgroup).
    pub cgroup_v2: bool,
    /// The lowest oom_score_adj the shim may set: without CAP_SYS_RESOURCE the kernel refuses
    /// values below the daemon's own.
    pub oom_score_adj_floor: i32,
    /// The daemon's capability bounding set (bit n = capability n). A container can hold no
    /// capability outside it: privileged and `ALL` mean exactly this set (as containerd does).
    pub capabilities: u64,
    /// AppArmor is enabled in the kernel (`/sys/module/apparmor/parameters/enabled` is `Y`).
    pub apparmor: bool,
    /// Mount points of the cgroup v1 controller hierarchies under `/sys/fs/cgroup` (empty on a
    /// pure v2 host). A container's cgroup exists in each of them once it is created.
    pub cgroup_v1_hierarchies: Vec<PathBuf>,
}

impl HostFacts {
    pub fn detect() -> HostFacts {
        Self::detect_in(Hierarchies::host())
    }

    fn detect_in(h: &Hierarchies) -> HostFacts {
        let cgroup_v2 = h.unified_only();
        let (hugetlb, swap_accounting) = match h.unified.as_deref().filter(|_| cgroup_v2) {
            Some(root) => (
                std::fs::read_to_string(root.join("cgroup.controllers")).is_ok_and(|c| c.contains("hugetlb")),
                v2_swap(root),
            ),
            None => (
                h.controller("hugetlb").is_some(),
                h.dir("memory", "/")
                    .is_some_and(|m| m.join("memory.memsw.limit_in_bytes").exists()),
            ),
        };
        HostFacts {
            hugetlb,
            swap_accounting,
            cgroup_v2,
            oom_score_adj_floor: oom_floor(),
            capabilities: own_caps("CapBnd:"),
            apparmor: std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
                .is_ok_and(|v| v.trim() == "Y"),
            cgroup_v1_hierarchies: if cgroup_v2 { Vec::new() } else { h.managed_v1() },
        }
    }
}

/// cgroup v2 has `memory.swap.max` in every non-root cgroup when the kernel accounts swap: look
/// in the daemon's own cgroup, else in the first child of the root that has memory files.
fn v2_swap(root: &Path) -> bool {
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("0::").map(str::to_string)));
    if let Some(own) = own
        .filter(|p| p != "/")
        .and_then(|p| crius_sandbox::cgroup::join(root, &p))
        && own.join("memory.max").exists()
    {
        return own.join("memory.swap.max").exists();
    }
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|d| d.join("memory.max").exists())
        .is_some_and(|d| d.join("memory.swap.max").exists())
}

/// One capability set of the daemon from `/proc/self/status` (`CapBnd:`, `CapEff:`, ...).
fn own_caps(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

fn oom_floor() -> i32 {
    const CAP_SYS_RESOURCE: u32 = 24;
    if own_caps("CapEff:") & (1 << CAP_SYS_RESOURCE) != 0 {
        return -1000;
    }
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// How the container gets one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespace {
    /// A fresh one for this container.
    New,
    /// The host's (no entry in the spec).
    Host,
    /// Join the namespace pinned at this path.
    Join(PathBuf),
}

/// The pod's namespaces, as the sandbox created them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNamespaces {
    pub network: Namespace,
    pub ipc: Namespace,
    pub uts: Namespace,
    /// The pod-shared PID namespace (the infra process's), when the pod shares one.
    pub pid: Namespace,
    /// The pod's own user namespace; None = the host's.
    pub user: Option<super::userns::PodUserns>,
}

pub fn namespaces(
    pod: &PodNamespaces,
    sc: Option<&LinuxContainerSecurityContext>,
    target_pid: Option<&Path>,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    // The user namespace first: it owns the namespaces the container creates.
    let user = super::userns::namespace(pod.user.as_ref(), sc)?;
    // Absent options mean the proto defaults (POD), as in containerd: the container joins the
    // pod's PID namespace when the pod has one of its own.
    let pid_mode = sc
        .and_then(|s| s.namespace_options.as_ref())
        .map(|n| n.pid)
        .unwrap_or(NamespaceMode::Pod as i32);
    let pid = match NamespaceMode::try_from(pid_mode) {
        Ok(NamespaceMode::Container) => Namespace::New,
        Ok(NamespaceMode::Node) => Namespace::Host,
        Ok(NamespaceMode::Pod) => match &pod.pid {
            Namespace::Join(p) => Namespace::Join(p.clone()),
            _ => Namespace::New,
        },
        Ok(NamespaceMode::Target) => match target_pid {
            Some(p) => Namespace::Join(p.to_path_buf()),
            None => return Err(SpecError::Invalid("PID namespace TARGET without a target".into())),
        },
        Err(_) => {
            return Err(SpecError::Invalid(format!(
                "unknown PID namespace mode {pid_mode}"
            )));
        }
    };
    let mut out: Vec<LinuxNamespace> = user.into_iter().collect();
    for (typ, ns) in [
        (LinuxNamespaceType::Mount, &Namespace::New),
        (LinuxNamespaceType::Pid, &pid),
        (LinuxNamespaceType::Network, &pod.network),
        (LinuxNamespaceType::Ipc, &pod.ipc),
        (LinuxNamespaceType::Uts, &pod.uts),
    ] {
        let mut n = LinuxNamespace::default();
        n.set_typ(typ);
        match ns {
            Namespace::Host => continue,
            Namespace::New => {}
            Namespace::Join(p) => {
                n.set_path(Some(p.clone()));
            }
        }
        out.push(n);
    }
    Ok(out)
}

/// containerd's defaults for `linux.maskedPaths`.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// containerd's defaults for `linux.readonlyPaths`.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Masked and read-only paths: none when privileged, the request's when it sends any, else ours.
pub fn masked_and_readonly(sc: Option<&LinuxContainerSecurityContext>) -> (Vec<String>, Vec<String>) {
    if sc.is_some_and(|s| s.privileged) {
        return (Vec::new(), Vec::new());
    }
    let pick = |req: Option<&Vec<String>>, def: &[&str]| match req {
        Some(v) if !v.is_empty() => v.clone(),
        _ => def.iter().map(|s| s.to_string()).collect(),
    };
    (
        pick(sc.map(|s| &s.masked_paths), MASKED_PATHS),
        pick(sc.map(|s| &s.readonly_paths), READONLY_PATHS),
    )
}

/// A cgroup interface file named by a request (`unified` keys, hugepage sizes): one plain path
/// component, never `cgroup.*` (membership and delegation files stay crius's).
pub fn cgroup_file_name(name: &str) -> Option<&str> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && !name.starts_with("cgroup.")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then_some(name)
}

/// CRI resources as OCI resources, filtered by what the host can enforce.
pub fn resources(
    r: Option<&LinuxContainerResources>,
    host: &HostFacts,
    privileged: bool,
    device_rules: Vec<LinuxDeviceCgroup>,
) -> Result<LinuxResources, SpecError> {
    let mut res = LinuxResources::default();
    let mut all = LinuxDeviceCgroup::default();
    all.set_allow(privileged).set_access(Some("rwm".into()));
    let mut devices = vec![all];
    devices.extend(device_rules);
    res.set_devices(Some(devices));
    let Some(r) = r else { return Ok(res) };

    let mut cpu = LinuxCpu::default();
    let mut any_cpu = false;
    if r.cpu_shares > 0 {
        cpu.set_shares(Some(r.cpu_shares as u64));
        any_cpu = true;
    }
    if r.cpu_quota > 0 {
        cpu.set_quota(Some(r.cpu_quota));
        any_cpu = true;
    }
    if r.cpu_period > 0 {
        cpu.set_period(Some(r.cpu_period as u64));
        any_cpu = true;
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.set_cpus(Some(r.cpuset_cpus.clone()));
        any_cpu = true;
    }
    if !r.cpuset_mems.is_empty() {
        cpu.set_mems(Some(r.cpuset_mems.clone()));
        any_cpu = true;
    }
    if any_cpu {
        res.set_cpu(Some(cpu));
    }
    if r.memory_limit_in_bytes < 0 || r.cpu_quota < -1 {
        return Err(SpecError::Invalid("negative memory limit or cpu quota".into()));
    }
    if r.memory_limit_in_bytes > 0 {
        let mut mem = LinuxMemory::default();
        mem.set_limit(Some(r.memory_limit_in_bytes));
        if r.memory_swap_limit_in_bytes > 0 && host.swap_accounting {
            // CRI and OCI both mean memory plus swap here; libcgroups turns it into v2's
            // memory.swap.max (swap alone) and refuses a total below the memory limit.
            if r.memory_swap_limit_in_bytes < r.memory_limit_in_bytes {
                return Err(SpecError::Invalid(format!(
                    "memory_swap_limit_in_bytes {} is below memory_limit_in_bytes {}",
                    r.memory_swap_limit_in_bytes, r.memory_limit_in_bytes
                )));
            }
            mem.set_swap(Some(r.memory_swap_limit_in_bytes));
        }
        res.set_memory(Some(mem));
    }
    if host.hugetlb && !r.hugepage_limits.is_empty() {
        let limits = r
            .hugepage_limits
            .iter()
            .map(|h| {
                let mut l = LinuxHugepageLimit::default();
                l.set_page_size(h.page_size.clone())
                    .set_limit(h.limit.min(i64::MAX as u64) as i64);
                l
            })
            .collect();
        res.set_hugepage_limits(Some(limits));
    }
    if let Some(bad) = r.unified.keys().find(|k| cgroup_file_name(k).is_none()) {
        return Err(SpecError::Invalid(format!(
            "unified: {bad:?} is not a settable cgroup file"
        )));
    }
    if host.cgroup_v2 && !r.unified.is_empty() {
        res.set_unified(Some(r.unified.clone().into_iter().collect()));
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cri_api::v1::{HugepageLimit, NamespaceOption};

    fn host(hugetlb: bool) -> HostFacts {
        HostFacts {
            hugetlb,
            swap_accounting: false,
            cgroup_v2: false,
            oom_score_adj_floor: 0,
            capabilities: u64::MAX,
            apparmor: false,
            cgroup_v1_hierarchies: vec![],
        }
    }

    #[test]
    fn host_facts_follow_the_hierarchies() {
        let tmp = tempfile::tempdir().unwrap();
        let (cpu, mem) = (tmp.path().join("cpu,cpuacct"), tmp.path().join("memory"));
        std::fs::create_dir(&cpu).unwrap();
        std::fs::create_dir(&mem).unwrap();
        std::fs::write(mem.join("memory.memsw.limit_in_bytes"), "").unwrap();
        let v1 = |mount: &Path, opts: &[&str]| crius_sandbox::cgroup::V1Mount {
            mount: mount.to_path_buf(),
            options: opts.iter().map(|o| o.to_string()).collect(),
        };
        let h = Hierarchies {
            v1: vec![v1(&cpu, &["rw", "cpu", "cpuacct"]), v1(&mem, &["rw", "memory"])],
            unified: None,
        };
        let f = HostFacts::detect_in(&h);
        assert!(!f.cgroup_v2 && !f.hugetlb && f.swap_accounting);
        // Only hierarchies below the real cgroup root are bound into containers.
        assert!(f.cgroup_v1_hierarchies.is_empty());
        let f = HostFacts::detect_in(&Hierarchies::default());
        assert!(!f.cgroup_v2 && !f.hugetlb && !f.swap_accounting);
        let v2 = Hierarchies::parse("25 22 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let f = HostFacts::detect_in(&v2);
        assert!(f.cgroup_v2 && f.cgroup_v1_hierarchies.is_empty());
    }

    #[test]
    fn hugepages_dropped_without_hugetlb() {
        let r = LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 128 << 20,
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 0,
            }],
            ..Default::default()
        };
        let without = resources(Some(&r), &host(false), false, vec![]).unwrap();
        assert!(without.hugepage_limits().is_none());
        assert_eq!(without.cpu().as_ref().unwrap().shares(), Some(512));
        assert_eq!(without.cpu().as_ref().unwrap().quota(), Some(50_000));
        assert_eq!(without.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(
            without.memory().as_ref().unwrap().swap(),
            None,
            "no swap accounting"
        );
        let with = resources(Some(&r), &host(true), false, vec![]).unwrap();
        assert_eq!(with.hugepage_limits().as_ref().unwrap().len(), 1);
        let devs = with.devices().as_ref().unwrap();
        assert!(!devs[0].allow(), "deny all devices first");
    }

    #[test]
    fn namespaces_join_pod_paths_and_skip_host_ones() {
        let pod = PodNamespaces {
            network: Namespace::Join("/run/crius/ns/p/net".into()),
            ipc: Namespace::Host,
            uts: Namespace::Join("/run/crius/ns/p/uts".into()),
            pid: Namespace::Join("/proc/42/ns/pid".into()),
            user: None,
        };
        let sc = LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let ns = namespaces(&pod, Some(&sc), None).unwrap();
        let find = |t| ns.iter().find(|n| n.typ() == t).map(|n| n.path().clone());
        assert_eq!(
            find(LinuxNamespaceType::Network),
            Some(Some("/run/crius/ns/p/net".into()))
        );
        assert_eq!(
            find(LinuxNamespaceType::Pid),
            Some(Some("/proc/42/ns/pid".into()))
        );
        assert_eq!(find(LinuxNamespaceType::Mount), Some(None));
        assert_eq!(find(LinuxNamespaceType::Ipc), None);
        let ns = namespaces(&pod, None, None).unwrap();
        assert_eq!(
            ns.iter()
                .find(|n| n.typ() == LinuxNamespaceType::Pid)
                .unwrap()
                .path(),
            &Some("/proc/42/ns/pid".into()),
            "without options the PID mode is the proto default, POD"
        );
        let sc = LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: NamespaceMode::Container as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let ns = namespaces(&pod, Some(&sc), None).unwrap();
        let pid = ns.iter().find(|n| n.typ() == LinuxNamespaceType::Pid).unwrap();
        assert_eq!(pid.path(), &None, "CONTAINER: a new PID namespace");
    }

    #[test]
    fn a_pod_without_a_user_namespace_accepts_only_the_host_one() {
        let pod = PodNamespaces {
            network: Namespace::Host,
            ipc: Namespace::Host,
            uts: Namespace::Host,
            pid: Namespace::New,
            user: None,
        };
        let with = |mode: NamespaceMode| LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                userns_options: Some(cri_api::v1::UserNamespace {
                    mode: mode as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(namespaces(&pod, Some(&with(NamespaceMode::Node)), None).is_ok());
        for m in [
            NamespaceMode::Pod,
            NamespaceMode::Container,
            NamespaceMode::Target,
        ] {
            assert!(matches!(
                namespaces(&pod, Some(&with(m)), None),
                Err(SpecError::Invalid(_))
            ));
        }
    }

    #[test]
    fn privileged_has_no_masked_paths() {
        let sc = LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        };
        assert_eq!(masked_and_readonly(Some(&sc)), (vec![], vec![]));
        let (m, r) = masked_and_readonly(None);
        assert!(m.contains(&"/proc/kcore".to_string()) && r.contains(&"/proc/sys".to_string()));
    }
}
