//! PullImage of a multi-platform index: the daemon picks the entry for its platform (the
//! configured `image_platform`, else the host's), reports that entry's config digest as the image
//! id, and refuses an index without a usable entry with NotFound naming the wanted platform. The
//! foreign images are only pulled, never run.

use crius_tests::index::{self, Entry, PushedIndex};
use crius_tests::{Daemon, DaemonOptions, Registry, images};

/// windows first and arm before arm64: neither the order nor the foreign entries may matter.
fn multi_platform() -> Vec<Entry> {
    vec![
        Entry::marked("windows", "amd64", None),
        Entry::marked("linux", "arm", Some("v7")),
        Entry::marked("linux", "arm64", Some("v8")),
        Entry::marked("linux", "amd64", None),
    ]
}

async fn push(reg: &Registry, repo: &str, entries: &[Entry]) -> PushedIndex {
    index::push_index(reg, repo, "1", entries).await.unwrap()
}

fn ids(p: &PushedIndex) -> Vec<&str> {
    p.images.iter().map(|i| i.config_digest.as_str()).collect()
}

#[tokio::test]
async fn a_configured_arm64_platform_pulls_the_arm64_image() {
    let reg = Registry::start().unwrap();
    let multi = push(&reg, "platform/multi", &multi_platform()).await;
    let ids = ids(&multi);
    assert_eq!(
        ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
        4,
        "each platform's image has its own id"
    );
    let amd64_only = push(
        &reg,
        "platform/amd64-only",
        &[Entry::marked("linux", "amd64", None)],
    )
    .await;
    let mut d = Daemon::start_with(DaemonOptions {
        top_config: "image_platform = \"linux/arm64/v8\"\n".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    let got = images::pull(&mut d.images, &multi.reference).await.unwrap();
    assert_eq!(got, ids[2], "the linux/arm64/v8 entry");

    let e = images::pull(&mut d.images, &amd64_only.reference)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(
        e.message().contains("no image for linux/arm64/v8"),
        "{}",
        e.message()
    );
    assert!(e.message().contains(&amd64_only.index_digest), "{}", e.message());
}

#[tokio::test]
async fn the_host_platform_is_the_default() {
    let reg = Registry::start().unwrap();
    let multi = push(&reg, "platform/multi", &multi_platform()).await;
    let foreign = push(
        &reg,
        "platform/foreign",
        &[
            Entry::marked("linux", "arm64", Some("v8")),
            Entry::marked("windows", "amd64", None),
        ],
    )
    .await;
    let mut d = Daemon::start().await.unwrap();

    // The suite runs on x86-64: whatever its level, baseline amd64 is acceptable and the only
    // linux/amd64 entry here.
    assert_eq!(
        std::env::consts::ARCH,
        "x86_64",
        "these expectations are for an x86-64 host"
    );
    let got = images::pull(&mut d.images, &multi.reference).await.unwrap();
    assert_eq!(got, ids(&multi)[3], "the linux/amd64 entry");

    let e = images::pull(&mut d.images, &foreign.reference).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(
        e.message().contains("no image for linux/amd64"),
        "{}",
        e.message()
    );
    assert!(!e.message().contains("for linux/arm64"), "{}", e.message());
}
