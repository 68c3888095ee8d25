//! Pod-sandbox helpers: a per-test bridge network (own bridge name, own /24 inside 10.85.0.0/16,
//! own host-local data dir) that is deleted on drop, pod configs, and running code inside a
//! pod's pinned namespaces from a throw-away thread.
//!
//! Invariant: a network number `n` belongs to the one [`TestNet`] holding an exclusive `flock` on
//! `/run/crius-tests/net-<n>.lock`, across every test binary running on the host; the kernel drops
//! the lock when the TestNet drops or its process dies, so a crashed run frees its numbers.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_cri::v1::*;
use nix::fcntl::{Flock, FlockArg};
use nix::sched::CloneFlags;

/// Where the per-number lock files live (tmpfs: gone after a reboot, like the bridges).
const LOCK_DIR: &str = "/run/crius-tests";
/// Network numbers handed out: subnets 10.85.1.0/24 to 10.85.254.0/24.
const NUMBERS: std::ops::RangeInclusive<u8> = 1..=254;

/// A test's own CNI network: bridge `crius-t<n>`, subnet `10.85.<n>.0/24`, host-local state in a
/// temp dir, with `n` allocated (see the module invariant). Dropping it deletes the bridge, the
/// IPAM dir and the nat rules tagged with its name, then releases `n`.
pub struct TestNet {
    pub n: u8,
    pub bridge: String,
    pub name: String,
    pub ipam_dir: PathBuf,
    /// Held for the TestNet's lifetime; dropped after `Drop::drop` has cleaned up.
    _lock: Flock<File>,
}

impl TestNet {
    /// Allocates the lowest free network number. Panics when not root or when all are in use.
    // No `Default`: allocating a host-wide network number is not a default value.
    #[allow(clippy::new_without_default)]
    pub fn new() -> TestNet {
        crate::util::require_root();
        std::fs::create_dir_all(LOCK_DIR).unwrap_or_else(|e| panic!("create {LOCK_DIR}: {e}"));
        for n in NUMBERS {
            let path = TestNet::lock_path(n);
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
                continue;
            };
            let net = TestNet {
                n,
                bridge: format!("crius-t{n}"),
                name: format!("crius-test-{n}"),
                ipam_dir: std::env::temp_dir().join(format!("crius-test-ipam-{n}-{}", std::process::id())),
                _lock: lock,
            };
            // A holder that died without its Drop may have left the bridge and nat rules.
            net.remove_host_state();
            return net;
        }
        panic!("every test network number {NUMBERS:?} is locked under {LOCK_DIR}: too many tests at once");
    }

    /// The file whose `flock` owns network number `n`.
    pub fn lock_path(n: u8) -> PathBuf {
        Path::new(LOCK_DIR).join(format!("net-{n}.lock"))
    }

    /// `10.85.<n>.`: the prefix of every address host-local hands out on this network.
    pub fn ip_prefix(&self) -> String {
        format!("10.85.{}.", self.n)
    }

    fn remove_host_state(&self) {
        remove_iptables_rules_of(&self.name);
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
        let _ = std::fs::remove_dir_all(&self.ipam_dir);
    }

    /// bridge + host-local, portmap (portMappings capability), loopback; `extra` plugins are
    /// appended (JSON objects, comma-separated).
    pub fn conflist(&self, extra: &str) -> String {
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(",{extra}")
        };
        format!(
            r#"{{"cniVersion":"1.0.0","name":"{}","plugins":[
              {{"type":"bridge","bridge":"{}","isGateway":true,"ipMasq":true,"hairpinMode":true,
                "ipam":{{"type":"host-local","dataDir":"{}","ranges":[[{{"subnet":"10.85.{}.0/24"}}]],
                         "routes":[{{"dst":"10.85.{}.0/24"}}]}}}},
              {{"type":"portmap","capabilities":{{"portMappings":true}},"snat":true}},
              {{"type":"loopback"}}{extra}]}}"#,
            self.name,
            self.bridge,
            self.ipam_dir.display(),
            self.n,
            self.n
        )
    }

    /// A daemon of its own whose only CNI network is this one.
    pub async fn daemon(&self) -> anyhow::Result<crate::Daemon> {
        self.daemon_with("").await
    }

    /// Like [`TestNet::daemon`], with `extra_config` appended to the daemon's config file.
    pub async fn daemon_with(&self, extra_config: &str) -> anyhow::Result<crate::Daemon> {
        crate::Daemon::start_with(crate::DaemonOptions {
            cni_conflist: Some(self.conflist("")),
            extra_config: extra_config.to_string(),
            ..Default::default()
        })
        .await
    }

    /// Addresses host-local currently has allocated (one file per IP in its data dir).
    pub fn allocated_ips(&self) -> Vec<String> {
        let dir = self.ipam_dir.join(&self.name);
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }

    /// Host-side veth interfaces attached to this test's bridge.
    pub fn veths(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        out.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|s| s.split('@').next().unwrap_or(s).to_string())
            .collect()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        self.remove_host_state();
    }
}

/// Deletes the nat rules the bridge and portmap plugins tagged with network `name`, and the
/// per-pod chains they jump to. Only needed when a test failed before its pods were removed.
fn remove_iptables_rules_of(name: &str) {
    let Ok(out) = Command::new("iptables-save").args(["-t", "nat"]).output() else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let tag = format!("name: \\\"{name}\\\"");
    let mine: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("-A ") && l.contains(&tag))
        .collect();
    if mine.is_empty() {
        return;
    }
    let pod_chains: Vec<&str> = mine
        .iter()
        .filter_map(|l| l.split(" -j ").nth(1))
        .map(|t| t.split_whitespace().next().unwrap_or(""))
        .filter(|c| c.starts_with("CNI-") && !c.starts_with("CNI-HOSTPORT"))
        .collect();
    let mut script = String::from("*nat\n");
    for l in &mine {
        let chain = l.split_whitespace().nth(1).unwrap_or("");
        if !pod_chains.contains(&chain) {
            script.push_str(&format!("-D {}\n", &l[3..]));
        }
    }
    for c in &pod_chains {
        script.push_str(&format!("-F {c}\n-X {c}\n"));
    }
    script.push_str("COMMIT\n");
    let child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .spawn();
    if let Ok(mut child) = child {
        use std::io::Write;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(script.as_bytes());
        }
        let _ = child.wait();
    }
}

/// Removes every pod of a daemon when dropped (declare it after the [`crate::Daemon`], so it
/// runs first): a failed test then leaves no netns, veth, IP, iptables rule or cgroup behind.
pub struct PodCleanup {
    socket: PathBuf,
}

impl PodCleanup {
    pub fn new(d: &crate::Daemon) -> PodCleanup {
        PodCleanup {
            socket: d.socket.clone(),
        }
    }
}

impl Drop for PodCleanup {
    fn drop(&mut self) {
        let socket = self.socket.clone();
        // A fresh runtime on its own thread: Drop may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let ch = crate::daemon::connect(&socket).await.ok()?;
                let mut client = k8s_cri::v1::runtime_service_client::RuntimeServiceClient::new(ch);
                let pods = client
                    .list_pod_sandbox(ListPodSandboxRequest::default())
                    .await
                    .ok()?
                    .into_inner()
                    .items;
                for p in pods {
                    let req = RemovePodSandboxRequest { pod_sandbox_id: p.id };
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(30),
                        client.remove_pod_sandbox(req),
                    )
                    .await;
                }
                Some(())
            })
        })
        .join();
    }
}

/// iptables rules (nat and filter) whose text mentions `needle` (CNI tags rules with the id).
pub fn iptables_rules_mentioning(needle: &str) -> Vec<String> {
    let out = Command::new("iptables-save")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    out.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// A pod config with the given name and uid, namespace `crius-test`, attempt 0.
pub fn pod_config(name: &str, uid: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "crius-test".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: String::new(),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod-level security context of `cfg` (as [`pod_config`] builds it: present).
pub fn security_context(cfg: &mut PodSandboxConfig) -> &mut LinuxSandboxSecurityContext {
    cfg.linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .expect("the pod config has a linux security context")
}

/// The namespace modes of `cfg` (as [`pod_config`] builds it: present).
pub fn namespace_options(cfg: &mut PodSandboxConfig) -> &mut NamespaceOption {
    security_context(cfg)
        .namespace_options
        .as_mut()
        .expect("the pod config has namespace options")
}

/// The pinned namespace file of a pod: `<state>/ns/<id>/<kind>`.
pub fn ns_path(state: &Path, id: &str, kind: &str) -> PathBuf {
    state.join("ns").join(id).join(kind)
}

/// Runs `f` on a fresh thread that joined the namespace at `path` (`kind`: net, ipc or uts).
pub fn in_namespace<T: Send + 'static>(path: &Path, kind: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let flag = match kind {
        "net" => CloneFlags::CLONE_NEWNET,
        "ipc" => CloneFlags::CLONE_NEWIPC,
        "uts" => CloneFlags::CLONE_NEWUTS,
        other => panic!("unknown namespace kind {other}"),
    };
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    std::thread::spawn(move || {
        nix::sched::setns(&file, flag).expect("setns");
        f()
    })
    .join()
    .expect("namespace thread panicked")
}

/// Whether `path` is a mounted namespace file.
pub fn is_pinned(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// The cgroup directories of a pod crius named itself, in any mounted hierarchy: `/crius/<id>`
/// (cgroupfs driver, v1 controllers or v2) or the slice `crius-pod<id>.slice` (systemd driver).
pub fn pod_cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut out: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("crius").join(id))
        .collect();
    out.push(root.join("crius").join(id));
    out.push(root.join("crius.slice").join(format!("crius-pod{id}.slice")));
    out.retain(|p| p.exists());
    out
}

/// The container cgroup directories (64-hex children) of a pod's cgroups, in every hierarchy.
pub fn container_cgroup_dirs(pod: &str) -> Vec<PathBuf> {
    pod_cgroup_dirs(pod)
        .into_iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .filter(|e| e.path().is_dir() && e.file_name().len() == 64)
        .map(|e| e.path())
        .collect()
}
