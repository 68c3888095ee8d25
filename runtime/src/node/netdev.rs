//! Per-interface network counters of pods' network namespaces, for PodSandboxStats and the
//! `network` metric group: the kernel's `/proc/<task>/net/dev` table, read from inside each
//! pinned namespace.
//!
//! Invariants: `setns` happens only on a short-lived OS thread made for one batch of reads,
//! never on a tokio worker, and that thread exits when the batch is done (its namespace dies
//! with it). After `setns` the thread reads `/proc/thread-self/net/dev`: `/proc/self/net` and
//! sysfs would show the namespace of the process's main thread or of the sysfs mount instead.
//! Every read is capped at `FILE_CAP`; `lo` is left out (as cAdvisor does).

use std::path::PathBuf;

use crate::container::read_capped;

/// One interface's counters since it was created.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// Parses the `/proc/net/dev` table: two header lines, then `name: 8 receive and 8 transmit
/// counters`. Lines that do not have all 16 counters are skipped; so is `lo`.
pub fn parse(text: &str) -> Vec<Iface> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let name = name.trim();
            let v: Vec<u64> = rest
                .split_whitespace()
                .map(|f| f.parse().ok())
                .collect::<Option<_>>()?;
            if v.len() < 16 || name.is_empty() || name == "lo" {
                return None;
            }
            Some(Iface {
                name: name.to_string(),
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_dropped: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
            })
        })
        .collect()
}

/// The interfaces of each namespace in `netns` (pinned namespace files), in order; an entry
/// is `None` when its namespace cannot be entered or read (the pod went away meanwhile).
/// Runs the whole batch on one dedicated thread.
pub async fn read_namespaces(netns: Vec<PathBuf>) -> Result<Vec<Option<Vec<Iface>>>, String> {
    if netns.is_empty() {
        return Ok(Vec::new());
    }
    super::on_own_thread("crius-netstat", move || {
        netns.iter().map(|p| read_in(p)).collect()
    })
    .await
}

/// Runs on the batch thread: enters `path` and reads this thread's view of `net/dev`.
fn read_in(path: &std::path::Path) -> Option<Vec<Iface>> {
    let f = std::fs::File::open(path).ok()?;
    // setns either switches the thread or leaves it where it was; on failure nothing is read,
    // so a previous pod's counters are never reported as this one's.
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
    Some(parse(&read_capped(std::path::Path::new(
        "/proc/thread-self/net/dev",
    ))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     120       2    0    0    0     0          0         0      120       2    0    0    0     0       0          0
  eth0:    9746      81    1    2    0     0          0         0     3124      32    3    4    0     0       0          0
eth0.100:1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0
  bad: 1 2 3
";

    #[test]
    fn proc_net_dev_parses_per_interface() {
        let got = parse(NET_DEV);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got[0],
            Iface {
                name: "eth0".into(),
                rx_bytes: 9746,
                rx_packets: 81,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 3124,
                tx_packets: 32,
                tx_errors: 3,
                tx_dropped: 4,
            }
        );
        // No space after the colon once the counter is wide: still one interface.
        assert_eq!(
            (got[1].name.as_str(), got[1].rx_bytes, got[1].tx_bytes),
            ("eth0.100", 1000, 2000)
        );
    }

    #[test]
    fn headers_and_garbage_give_nothing() {
        assert!(parse("Inter-|\n face |bytes\n").is_empty());
        assert!(parse("").is_empty());
        assert!(parse("x: a b c d e f g h i j k l m n o p\n").is_empty());
    }

    #[tokio::test]
    async fn a_missing_namespace_is_none() {
        let got = read_namespaces(vec![PathBuf::from("/nonexistent/netns")])
            .await
            .unwrap();
        assert_eq!(got, vec![None]);
    }
}
