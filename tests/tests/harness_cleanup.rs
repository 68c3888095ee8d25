//! The harness's own promise: dropping a daemon fixture without removing its pods still kills the
//! containers (they outlive their shims) and removes their cgroups, so a failing test leaks nothing.

use std::time::{Duration, Instant};

use crius_tests::containers::World;
use crius_tests::util;

/// A killed process may linger as a zombie until its new parent reaps it: that counts as gone.
fn gone(pid: i32) -> bool {
    !util::alive(pid)
}

#[tokio::test]
async fn dropping_a_daemon_kills_its_containers_and_removes_their_cgroups() {
    let mut w = World::new().await.unwrap();
    let id = w.run("sleeper", &["sleep", "3600"]).await;
    let pid = w.pid(&id).await;
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let memory = cgroup.lines().find_map(|l| {
        l.strip_prefix("4:memory:")
            .or_else(|| l.split_once(":memory:").map(|(_, p)| p))
    });
    assert!(!gone(pid));
    drop(w);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gone(pid), "container process {pid} survived the fixture");
    if let Some(path) = memory {
        let dir = format!("/sys/fs/cgroup/memory{path}");
        assert!(!std::path::Path::new(&dir).exists(), "{dir} left behind");
    }
}
