//! StopContainer around a shim that does not answer: the container's shim is stopped with
//! SIGSTOP, so every control request to it times out. Stop must still end the container, by
//! signalling its cgroup itself, within the grace period + 2 s; the container's init must be
//! dead afterwards and its status EXITED with a message saying why.

use std::time::{Duration, Instant};

use crius_tests::containers::World;
use crius_tests::util;
use k8s_cri::v1::ContainerState;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// StopContainer's grace period in this test.
const GRACE: u64 = 10;

/// Sends SIGCONT to the shim when dropped, so a failing test leaves no stopped process behind.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
    }
}

#[tokio::test]
async fn stop_kills_through_the_cgroup_when_the_shim_does_not_answer() {
    let mut w = World::new().await.unwrap();
    let id = w.run("sleeper", &["sleep", "3600"]).await;
    let init = w.pid(&id).await;
    let shim = util::shim_of(&id);
    let resume = Resume(shim);
    kill(Pid::from_raw(shim), Signal::SIGSTOP).unwrap();

    let started = Instant::now();
    let stopped = w.stop(&id, GRACE as i64).await;
    let took = started.elapsed();
    eprintln!("StopContainer with a stopped shim returned after {took:?}: {stopped:?}");
    stopped.expect("StopContainer succeeds without its shim");
    assert!(
        took <= Duration::from_secs(GRACE + 2),
        "StopContainer took {took:?} (grace period {GRACE} s + 2 s)"
    );
    let state = util::proc_state(init);
    assert!(
        matches!(state, None | Some('Z')),
        "the container's init {init} is still alive (state {state:?})"
    );
    let st = w.state(&id).await;
    assert_eq!(st.state, ContainerState::ContainerExited as i32, "{st:?}");
    assert_eq!(st.exit_code, 137, "killed with SIGKILL: {st:?}");
    assert!(st.message.contains("shim"), "the status says why: {st:?}");

    // Once the shim runs again it reaps init; the recorded exit stands and removal works.
    drop(resume);
    w.teardown().await.unwrap();
}
