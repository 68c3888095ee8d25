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

#[tokio::test]
async fn lists_are_answered_from_memory_only_when_no_exit_file_could_change_them() {
    let f = Fixture::new();
    let a = f.c.create(&f.pod(), config("a")).await.unwrap();
    let b = f.c.create(&f.pod(), config("b")).await.unwrap();
    f.c.start(&a).await.unwrap();
    f.c.start(&b).await.unwrap();
    let ids = |v: &[std::sync::Arc<crate::container::record::Record>]| {
        let mut ids: Vec<String> = v.iter().map(|r| r.id.clone()).collect();
        ids.sort();
        ids
    };
    // Both RUNNING and watched: memory answers, the same as the pool's scan.
    f.c.list(None).await.unwrap();
    let memory = f.c.selected_in_memory(None).expect("answered from memory");
    let scanned = f.c.selected_shared(|_| true).unwrap();
    assert_eq!(ids(&memory), ids(&scanned));
    let only_a = cri_api::v1::ContainerFilter {
        id: a.clone(),
        ..Default::default()
    };
    assert_eq!(ids(&f.c.selected_in_memory(Some(&only_a)).unwrap()), [a.clone()]);

    // A CREATED container may have an exit file only the pool's scan reads.
    let idle = f.c.create(&f.pod(), config("idle")).await.unwrap();
    assert!(f.c.selected_in_memory(None).is_none());
    // ...unless the filter leaves it out.
    assert!(f.c.selected_in_memory(Some(&only_a)).is_some());
    write_exit(&f, &idle, 0);
    assert_eq!(listed_state(&f, &idle).await, State::Exited.to_cri() as i32);
    assert_eq!(ids(&f.c.selected_in_memory(None).unwrap()).len(), 3);
}
