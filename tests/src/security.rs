//! Security-context helpers: extra pods with their own security context inside a [`World`],
//! containers created in them, and reading what the kernel says about a process from inside
//! the container through ExecSync.
//!
//! Invariant: extra pods live in the World's daemon, so [`crate::pods::PodCleanup`] (or the
//! daemon's teardown) removes them with everything else.

use k8s_cri::v1::*;

use crate::containers::World;

/// Runs a second pod in `w`'s daemon whose security context `tweak` shapes. Returns its id and
/// the config it was created with.
pub async fn run_pod(
    w: &mut World,
    name: &str,
    tweak: impl FnOnce(&mut LinuxSandboxSecurityContext),
) -> Result<(String, PodSandboxConfig), tonic::Status> {
    let mut cfg = crate::pods::pod_config(name, &format!("uid-{name}-{}", w.net.n));
    cfg.log_directory = w.log_dir.to_string_lossy().into_owned();
    let sc = cfg
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default);
    tweak(sc);
    let id = w.d.run_pod(cfg.clone()).await?;
    Ok((id, cfg))
}

/// Creates `config` in the pod `pod` (created with `pod_config`).
pub async fn create_in(
    w: &mut World,
    pod: &str,
    pod_config: &PodSandboxConfig,
    config: ContainerConfig,
) -> Result<String, tonic::Status> {
    w.d.runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .map(|r| r.into_inner().container_id)
}

/// A busybox container config that sleeps, with `sc` as its security context.
pub fn sleeper(w: &World, name: &str, sc: LinuxContainerSecurityContext) -> ContainerConfig {
    let mut c = w.config(name, &["sleep", "1000"]);
    c.linux = Some(LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    });
    c
}

/// Runs `cmd` in `id` and returns (exit code, stdout, stderr).
pub async fn exec(w: &mut World, id: &str, cmd: &[&str]) -> (i32, String, String) {
    let r = w.exec(id, cmd, 30).await.expect("ExecSync");
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

/// Runs `cmd` in `id`, asserts it succeeded and returns its stdout.
pub async fn exec_ok(w: &mut World, id: &str, cmd: &[&str]) -> String {
    let (code, out, err) = exec(w, id, cmd).await;
    assert_eq!(code, 0, "{cmd:?} failed: {out}{err}");
    out
}

/// One field of `/proc/self/status` text (`CapEff`, `Seccomp`, `NoNewPrivs`, ...), trimmed.
pub fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

/// A hex capability mask from `/proc/<pid>/status` as a number.
pub fn cap_mask(hex: &str) -> u64 {
    u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("not a capability mask: {hex}"))
}

/// The capability bounding set of this test process (the daemon runs with the same one).
pub fn own_bounding_set() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    cap_mask(&status_field(&s, "CapBnd"))
}

/// No container state of a refused create is left: no records, no bundle or layer dirs. The
/// dirs of containers removed just before are given the 5 s that `World::wait_torn_down` gives
/// RemoveContainer's background teardown.
pub async fn assert_no_containers_left(w: &mut World) {
    let listed = w.d.containers().await;
    assert!(listed.is_empty(), "records left: {listed:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    for p in [w.d.state.join("containers"), w.d.root.join("containers")] {
        let mut left = crate::util::dir_entries(&p);
        while !left.is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            left = crate::util::dir_entries(&p);
        }
        assert!(left.is_empty(), "{} not empty: {left:?}", p.display());
    }
}
