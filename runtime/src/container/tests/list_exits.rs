//! ListContainers and the exit file: a watched RUNNING container's exit reaches the list
//! through the exit watcher (the list itself does not look for the file), and an unwatched
//! CREATED one's is folded by the list.

use super::*;
use crate::container::record::State;

fn write_exit(f: &Fixture, id: &str, code: i32) {
    crius_shim_api::ExitStatus {
        exit_code: code,
        finished_at: crate::container::now_ns(),
        oom_killed: false,
    }
    .write_atomic(&f.c.shim_dir(id).join(crius_shim_api::EXIT_FILE))
    .unwrap();
}

async fn listed_state(f: &Fixture, id: &str) -> i32 {
    let all = f.c.list(None).await.unwrap();
    all.iter().find(|c| c.id == id).expect("listed").state
}

#[tokio::test]
async fn exits_reach_the_list_through_the_watcher_or_the_list() {
    let f = Fixture::new();
    let running = f.c.create(&f.pod(), config("app")).await.unwrap();
    f.c.start(&running).await.unwrap();
    assert!(f.c.watcher.get().is_some_and(|w| w.watches(&running)));
    assert_eq!(listed_state(&f, &running).await, State::Running.to_cri() as i32);

    write_exit(&f, &running, 3);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut state = listed_state(&f, &running).await;
    while state != State::Exited.to_cri() as i32 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        state = listed_state(&f, &running).await;
    }
    assert_eq!(
        state,
        State::Exited.to_cri() as i32,
        "the watcher folded the exit"
    );
    assert_eq!(f.record(&running).unwrap().status.exit_code, 3);

    // A CREATED container is left to StartContainer by the watcher; the list folds it.
    let created = f.c.create(&f.pod(), config("idle")).await.unwrap();
    write_exit(&f, &created, 1);
    assert_eq!(listed_state(&f, &created).await, State::Exited.to_cri() as i32);
}
