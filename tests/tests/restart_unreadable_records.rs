//! Recovery destroys nothing it cannot read: a container whose record no longer decodes keeps
//! running through a restart (shim, init, rootfs mount and writable layer untouched) and, when
//! its pod and name can still be read, is listed UNKNOWN; a database written by a newer crius
//! (a higher schema version) makes the daemon refuse to start, saying why.

use std::path::Path;
use std::time::{Duration, Instant};

use crius_tests::containers::World;
use crius_tests::{Daemon, util};
use k8s_cri::v1::*;
use redb::{ReadableDatabase, TableDefinition};

const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");
/// The database's on-disk contract, as the daemon's store module defines it: the file below
/// `root`, and the table and key holding the schema version this build writes.
const DB_FILE: &str = "crius.redb";
const SCHEMA_KEY: &str = "schema_version";
const SCHEMA_VERSION: u64 = 1;
const META: TableDefinition<&str, u64> = TableDefinition::new("crius_meta");

fn read_record(db: &Path, id: &str) -> Vec<u8> {
    let db = redb::Database::open(db).unwrap();
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(CONTAINERS).unwrap();
    t.get(id)
        .unwrap()
        .expect("the container's record")
        .value()
        .to_vec()
}

fn write_record(db: &Path, id: &str, bytes: &[u8]) {
    let db = redb::Database::open(db).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(CONTAINERS).unwrap().insert(id, bytes).unwrap();
    txn.commit().unwrap();
}

/// Everything that must survive a restart untouched, checked after each one.
fn assert_untouched(w: &World, id: &str, init: i32, shims: &[i32]) {
    assert!(util::alive(init), "the container's init {init} was killed");
    for pid in shims {
        assert!(util::alive(*pid), "the container's shim {pid} was killed");
    }
    let upper = w.d.root.join("containers").join(id).join("upper");
    assert_eq!(
        std::fs::read_to_string(upper.join("marker")).unwrap(),
        "kept\n",
        "the writable layer was removed"
    );
    let rootfs = w.d.state.join("containers").join(id).join("rootfs");
    assert!(
        util::mounts_under(&w.d.state).contains(&rootfs),
        "the rootfs was unmounted"
    );
    assert!(w.d.state.join("containers").join(id).join("config.json").exists());
}

async fn listed_state(w: &mut World, id: &str) -> Option<i32> {
    let items = w.d.containers().await;
    items.into_iter().find(|c| c.id == id).map(|c| c.state)
}

#[tokio::test]
async fn a_container_with_an_unreadable_record_keeps_running_through_restarts() {
    let mut w = World::new().await.unwrap();
    let id = w
        .run("keeper", &["sh", "-c", "echo kept > /marker; exec sleep 3600"])
        .await;
    let marker = w.d.root.join("containers").join(&id).join("upper/marker");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the container never wrote its marker");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let init = w.pid(&id).await;
    let bundle = w.d.state.join("containers").join(&id);
    let shims = util::pids_mentioning(&bundle.to_string_lossy());
    assert!(!shims.is_empty(), "no shim process found");
    let db = w.d.root.join(DB_FILE);
    w.d.stop().await.unwrap();
    let original = read_record(&db, &id);

    // A newer format: the pod and the name still read, the status does not.
    let mut newer: serde_json::Value = serde_json::from_slice(&original).unwrap();
    newer["status"]["state"] = serde_json::json!({"running": {"since": 1}});
    write_record(&db, &id, &serde_json::to_vec(&newer).unwrap());
    w.d.restart().await.unwrap();
    assert_untouched(&w, &id, init, &shims);
    assert_eq!(
        listed_state(&mut w, &id).await,
        Some(ContainerState::ContainerUnknown as i32)
    );
    let st = w.state(&id).await;
    assert_eq!(st.state, ContainerState::ContainerUnknown as i32);
    assert!(st.message.contains("cannot read"), "{}", st.message);
    assert!(
        w.stop(&id, 0).await.is_err(),
        "stop acted on an unreadable record"
    );
    assert_untouched(&w, &id, init, &shims);

    // Garbage: nothing reads, so nothing can be listed, and still nothing is destroyed.
    w.d.stop().await.unwrap();
    write_record(&db, &id, b"\x00\xffnot a record");
    w.d.restart().await.unwrap();
    assert_untouched(&w, &id, init, &shims);
    assert_eq!(listed_state(&mut w, &id).await, None);
    let log = w.d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("container record cannot be read") && l.contains(&id)),
        "the key of the unreadable record is not logged"
    );

    // With its record back, the container is an ordinary one again and is cleaned up.
    w.d.stop().await.unwrap();
    write_record(&db, &id, &original);
    w.d.restart().await.unwrap();
    assert_eq!(w.state(&id).await.state, ContainerState::ContainerRunning as i32);
    w.teardown().await.unwrap();
}

#[tokio::test]
async fn a_database_from_a_newer_crius_is_refused_at_start() {
    let mut d = Daemon::start().await.unwrap();
    d.stop().await.unwrap();
    let db_path = d.root.join(DB_FILE);
    {
        let db = redb::Database::open(&db_path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_KEY, SCHEMA_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
    }
    let mut cmd = d.command();
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "crius started on a newer schema: {stderr}");
    assert!(
        stderr.contains(&format!("has schema version {}", SCHEMA_VERSION + 1))
            && stderr.contains("refusing to start"),
        "{stderr}"
    );
    assert!(!d.socket.exists(), "the socket was left behind");
    let db = redb::Database::open(&db_path).unwrap();
    let txn = db.begin_read().unwrap();
    let version = txn
        .open_table(META)
        .unwrap()
        .get(SCHEMA_KEY)
        .unwrap()
        .unwrap()
        .value();
    assert_eq!(version, SCHEMA_VERSION + 1, "the newer database was changed");
}
