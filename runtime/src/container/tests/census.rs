//! The numbers the metrics read: containers by recorded state, and exits counted once each by
//! the record update that made them (an OOM kill folded from the exit file, an end recorded
//! without the shim).

use super::*;
use crate::container::record::State;

#[tokio::test]
async fn states_are_counted_and_each_exit_once() {
    let f = Fixture::new();
    let created = f.c.create(&f.pod(), config("idle")).await.unwrap();
    let hog = f.c.create(&f.pod(), config("hog")).await.unwrap();
    f.c.start(&hog).await.unwrap();
    let census = f.c.census().unwrap();
    assert_eq!(
        (census.created, census.running, census.exited, census.unknown),
        (1, 1, 0, 0)
    );

    crius_shim_api::ExitStatus {
        exit_code: 137,
        finished_at: crate::container::now_ns(),
        oom_killed: true,
    }
    .write_atomic(&f.c.shim_dir(&hog).join(crius_shim_api::EXIT_FILE))
    .unwrap();
    for _ in 0..3 {
        let r = f.c.refreshed(&hog).unwrap();
        assert_eq!(
            (r.status.state, r.status.reason.as_str()),
            (State::Exited, "OOMKilled")
        );
    }
    // The exit watcher may be the one that folded it: its count follows its commit, so wait
    // (bounded) for that thread to get there before checking that the count is exactly one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while f.c.exit_counts().oom_kills() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        f.c.exit_counts().oom_kills(),
        1,
        "folded three times, counted once"
    );
    assert_eq!(f.c.exit_counts().shims_lost(), 0);

    // A created container has no shim to lose.
    f.c.stop(&created, 10).await.unwrap();
    assert_eq!(f.c.exit_counts().shims_lost(), 0);
    let lost = f.c.create(&f.pod(), config("lost")).await.unwrap();
    f.c.start(&lost).await.unwrap();
    f.shim.die(&f.c.shim_dir(&lost));
    f.c.stop(&lost, 10).await.unwrap();
    f.c.stop(&lost, 10).await.unwrap();
    assert_eq!(f.c.exit_counts().shims_lost(), 1, "stopped twice, lost once");
    assert_eq!(f.c.exit_counts().oom_kills(), 1);
    let census = f.c.census().unwrap();
    assert_eq!(
        (census.created, census.running, census.exited, census.unknown),
        (0, 0, 3, 0)
    );
}
