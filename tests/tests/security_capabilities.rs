//! Capabilities through the real daemon, read back from `/proc/self/status` of an exec'd
//! process: containerd's default set, add and drop (including `ALL`), and a refused add of a
//! capability the runtime itself does not hold.

use crius_tests::containers::World;
use crius_tests::pods::PodCleanup;
use crius_tests::security::*;
use k8s_cri::v1::*;

/// containerd's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
/// NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
const DEFAULT_MASK: u64 = 0x00000000a80425fb;
const CAP_CHOWN: u64 = 1 << 0;
const CAP_SYS_ADMIN: u64 = 1 << 21;

fn cap_context(add: &[&str], drop: &[&str]) -> LinuxContainerSecurityContext {
    LinuxContainerSecurityContext {
        capabilities: Some(Capability {
            add_capabilities: add.iter().map(|s| s.to_string()).collect(),
            drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
            add_ambient_capabilities: vec![],
        }),
        ..Default::default()
    }
}

async fn cap_eff(w: &mut World, name: &str, sc: LinuxContainerSecurityContext) -> (String, u64) {
    let id = w.create(sleeper(w, name, sc)).await.expect("create");
    w.start(&id).await.expect("start");
    let status = exec_ok(w, &id, &["cat", "/proc/self/status"]).await;
    (id, cap_mask(&status_field(&status, "CapEff")))
}

#[tokio::test]
async fn default_add_drop_and_all() {
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let host = own_bounding_set();

    let (_, eff) = cap_eff(&mut w, "default", LinuxContainerSecurityContext::default()).await;
    assert_eq!(eff, DEFAULT_MASK & host, "containerd's default set");

    let (_, eff) = cap_eff(&mut w, "add-admin", cap_context(&["CAP_SYS_ADMIN"], &["CHOWN"])).await;
    assert_eq!(eff, (DEFAULT_MASK | CAP_SYS_ADMIN) & !CAP_CHOWN & host);

    let (id, eff) = cap_eff(&mut w, "drop-chown", cap_context(&[], &["CHOWN"])).await;
    assert_eq!(eff & CAP_CHOWN, 0);
    let (code, _, err) = exec(&mut w, &id, &["chown", "1:1", "/tmp"]).await;
    assert_ne!(code, 0, "chown without CAP_CHOWN must fail");
    assert!(err.contains("Operation not permitted"), "{err}");

    let (_, eff) = cap_eff(&mut w, "drop-all", cap_context(&[], &["ALL"])).await;
    assert_eq!(eff, 0);

    let (_, eff) = cap_eff(&mut w, "add-all", cap_context(&["ALL"], &[])).await;
    assert_eq!(eff, host, "ALL is every capability the runtime holds");

    let (_, eff) = cap_eff(&mut w, "all-but-chown", cap_context(&["ALL"], &["CHOWN"])).await;
    assert_eq!(eff, host & !CAP_CHOWN);

    w.teardown().await.unwrap();
}

#[tokio::test]
async fn unknown_or_unavailable_capabilities_are_refused() {
    let mut w = World::new().await.unwrap();
    let _clean = PodCleanup::new(&w.d);
    let err = w
        .create(sleeper(&w, "bogus", cap_context(&["NOT_A_CAP"], &[])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("NOT_A_CAP"), "{}", err.message());

    // A capability outside the runtime's own bounding set (this kind of host lacks some).
    let mut known: Vec<caps::Capability> = caps::all().into_iter().collect();
    known.sort_by_key(|c| c.index());
    let missing = known
        .into_iter()
        .find(|c| own_bounding_set() & c.bitmask() == 0)
        .map(|c| c.to_string().trim_start_matches("CAP_").to_string());
    if let Some(name) = missing {
        let err = w
            .create(sleeper(&w, "unavailable", cap_context(&[name.as_str()], &[])))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    } else {
        eprintln!("the runtime holds every capability: nothing unavailable to ask for");
    }
    assert_no_containers_left(&mut w).await;
    w.teardown().await.unwrap();
}
