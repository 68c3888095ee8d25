//! Scenarios 6 and 7, a container printing without end: how fast `yes` gets into its CRI log and
//! what the runtime's shim spends in CPU per GB logged (6), and the daemon's RSS while an exec
//! client that reads nothing is connected to `yes` (7).
//!
//! Invariant: every pod a scenario starts is removed before it returns, and the flood's log file
//! is deleted (it grows by hundreds of MB per second).

use std::time::{Duration, Instant};

use anyhow::anyhow;
use k8s_cri::v1::*;

use crate::runtimes::Runtime;
use crate::scenarios::{Fail, container_config, pod_config, proc_kb, start_pod_with_container};

/// Figures of scenario 6.
#[derive(Debug, Clone, Copy)]
pub struct LogThroughput {
    /// Growth of the CRI log file (records with their timestamp and stream prefix), MB/s.
    pub mb_per_s: f64,
    /// User + system CPU of the runtime's shims per GB of log file, in seconds.
    pub shim_cpu_s_per_gb: f64,
    /// The same for the daemon (containerd's CRI plugin writes the log itself, not its shim).
    pub daemon_cpu_s_per_gb: f64,
}

/// Figures of scenario 7, daemon VmRSS in kB.
#[derive(Debug, Clone, Copy)]
pub struct StalledExec {
    pub before_kb: u64,
    pub max_kb: u64,
    pub end_kb: u64,
}

/// utime + stime of `pid` in seconds (0 when it is gone).
pub fn cpu_seconds(pid: i32) -> f64 {
    let ticks = crius_tests::util::cpu_ticks(pid).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

fn shims_cpu(r: &Runtime) -> f64 {
    r.pod_processes().shims.iter().map(|p| cpu_seconds(*p)).sum()
}

/// Scenario 6: a pod whose container runs `yes` for `secs` seconds.
pub async fn log_throughput(r: &mut Runtime, secs: u64, image: &str) -> Result<LogThroughput, Fail> {
    let name = "flood";
    let cfg = pod_config(&r.log_dir(), name);
    let pod = r.run_pod(&cfg).await?;
    let log = r.log_dir().join(name).join("yes.log");
    let measured = async {
        let mut c = container_config(image);
        c.command = vec!["yes".into()];
        c.log_path = "yes.log".into();
        let req = CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(c),
            sandbox_config: Some(cfg),
        };
        let id = r.rt.create_container(req).await?.into_inner().container_id;
        r.rt.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await?;
        // Let it reach its pace, then measure a window.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let size = || std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let daemon = || r.daemon_pid().map_or(0.0, |p| cpu_seconds(p as i32));
        let (t0, bytes0, cpu0, dcpu0) = (Instant::now(), size(), shims_cpu(r), daemon());
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let (bytes1, cpu1, dcpu1) = (size(), shims_cpu(r), daemon());
        let elapsed = t0.elapsed().as_secs_f64();
        // The figures are taken; a failing stop (containerd's shim may drop its ttrpc connection
        // under the flood) is reported, and the pod removal below ends the container anyway.
        let stop = StopContainerRequest {
            container_id: id,
            timeout: 2,
        };
        if let Err(e) = r.rt.stop_container(stop).await {
            eprintln!("{}: StopContainer of the `yes` container failed: {e}", r.name);
        }
        let bytes = bytes1.saturating_sub(bytes0) as f64;
        if bytes == 0.0 {
            return Err(Fail::Other(anyhow!("nothing reached {}", log.display())));
        }
        Ok(LogThroughput {
            mb_per_s: bytes / elapsed / 1e6,
            shim_cpu_s_per_gb: (cpu1 - cpu0) / (bytes / 1e9),
            daemon_cpu_s_per_gb: (dcpu1 - dcpu0) / (bytes / 1e9),
        })
    }
    .await;
    let _ = std::fs::remove_file(&log);
    r.remove_all_pods().await?;
    measured
}

/// Scenario 7: an exec of `yes` whose SPDY client reads nothing for `secs` seconds.
pub async fn stalled_exec(r: &mut Runtime, secs: u64, image: &str) -> Result<StalledExec, Fail> {
    let pid = r
        .daemon_pid()
        .ok_or_else(|| Fail::Other(anyhow!("daemon not running")))? as i32;
    let (_, ctr) = start_pod_with_container(r, "stall", image).await?;
    let measured = async {
        let url =
            r.rt.exec(ExecRequest {
                container_id: ctr,
                cmd: vec!["yes".into()],
                tty: false,
                stdin: false,
                stdout: true,
                stderr: true,
            })
            .await?
            .into_inner()
            .url;
        let before_kb = proc_kb(pid, "status", "VmRSS:");
        let streams: [crius_tests::stall::StreamHeaders<'_>; 3] = [
            &[("streamtype", "error")],
            &[("streamtype", "stdout")],
            &[("streamtype", "stderr")],
        ];
        let client = crius_tests::stall::stalled_spdy(&url, "v4.channel.k8s.io", &streams).await;
        let max_kb =
            crius_tests::stall::peak_rss_during(pid as u32, Duration::from_secs(secs), before_kb).await;
        let end_kb = proc_kb(pid, "status", "VmRSS:");
        drop(client);
        Ok(StalledExec {
            before_kb,
            max_kb,
            end_kb,
        })
    }
    .await;
    r.remove_all_pods().await?;
    measured
}
