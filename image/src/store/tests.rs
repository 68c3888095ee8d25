//! Image records, lookups, untagging, leases and garbage collection, without a registry.

use super::*;
use crate::content::sha256_digest;
use crate::record::LayerRecord;

struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<ImageStore>,
}

fn fixture() -> Fixture {
    pinned_fixture(&[])
}

fn pinned_fixture(pinned: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(redb::Database::create(dir.path().join("t.redb")).unwrap());
    let store = ImageStore::open(
        db,
        StoreConfig {
            root: dir.path().to_path_buf(),
            registries: RegistryHosts::default(),
            pinned: pinned.iter().map(|p| p.to_string()).collect(),
            platform: None,
            auth_file: None,
        },
    )
    .unwrap();
    Fixture { dir, store }
}

/// Stores a config blob, a layer blob and a layer dir per layer, and returns the record to add.
fn image(f: &Fixture, seed: &str, layers: &[&str], tags: &[&str]) -> ImageRecord {
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| sha256_digest(format!("diff {l}").as_bytes()))
        .collect();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {"User": "www-data"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}, "comment": seed,
    })
    .to_string();
    let id = sha256_digest(config.as_bytes());
    f.store.content.put(&id, config.as_bytes()).unwrap();
    let chains = crate::unpack::chain_ids(&diff_ids);
    let mut recs = Vec::new();
    for ((l, diff), chain) in layers.iter().zip(&diff_ids).zip(&chains) {
        let blob = format!("blob {l}");
        let digest = sha256_digest(blob.as_bytes());
        f.store.content.put(&digest, blob.as_bytes()).unwrap();
        std::fs::create_dir_all(f.store.layers.path(chain).unwrap()).unwrap();
        recs.push(LayerRecord {
            digest,
            diff_id: diff.clone(),
            chain_id: chain.clone(),
            size: blob.len() as u64,
        });
    }
    ImageRecord {
        id: id.clone(),
        repo_tags: tags
            .iter()
            .map(|t| ImageRef::parse(t).unwrap().to_string())
            .collect(),
        repo_digests: vec![format!(
            "docker.io/library/{seed}@{}",
            sha256_digest(seed.as_bytes())
        )],
        size: 1,
        manifest_digest: sha256_digest(seed.as_bytes()),
        blobs: recs.iter().map(|l| l.digest.clone()).collect(),
        layers: recs,
        user: "www-data".into(),
    }
}

#[test]
fn three_tags_are_one_image_found_every_way() {
    let f = fixture();
    let rec = image(&f, "busybox", &["a", "b"], &["busybox:1"]);
    for tag in ["busybox:1", "busybox:2", "busybox"] {
        let mut r = rec.clone();
        r.repo_tags = vec![ImageRef::parse(tag).unwrap().to_string()];
        f.store.record(r).unwrap();
    }
    let all = f.store.list().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0].repo_tags,
        vec![
            "docker.io/library/busybox:1",
            "docker.io/library/busybox:2",
            "docker.io/library/busybox:latest"
        ]
    );
    let id = rec.id.clone();
    let hex = id.trim_start_matches("sha256:");
    for q in [
        id.as_str(),
        hex,
        &hex[..12],
        &format!("sha256:{}", &hex[..8]),
        "docker.io/library/busybox:2",
        "busybox:2",
        "busybox",
        "library/busybox:latest",
        &rec.repo_digests[0],
    ] {
        assert_eq!(f.store.get(q).unwrap().map(|r| r.id), Some(id.clone()), "{q}");
    }
    for q in ["busybox:3", "nginx", "", "sha256:ffff", "zzzz"] {
        assert!(f.store.get(q).unwrap().is_none(), "{q}");
    }
    assert_eq!(
        f.store
            .config(&id)
            .unwrap()
            .config()
            .as_ref()
            .unwrap()
            .user()
            .as_deref(),
        Some("www-data")
    );
    let dirs = f.store.layer_dirs(&id).unwrap();
    assert_eq!(
        dirs[0],
        f.store.layer_path(&rec.layers[1].chain_id).unwrap(),
        "top layer first"
    );
}

#[test]
fn untag_then_last_tag_removes_and_frees() {
    let f = fixture();
    let mut rec = image(&f, "busybox", &["a"], &["busybox:1", "busybox:2"]);
    let other = image(&f, "other", &["a", "z"], &["other"]);
    f.store.record(rec.clone()).unwrap();
    f.store.record(other.clone()).unwrap();
    f.store.remove("busybox:1").unwrap();
    rec = f.store.get(&rec.id).unwrap().unwrap();
    assert_eq!(rec.repo_tags, vec!["docker.io/library/busybox:2"]);
    f.store.remove("busybox:1").unwrap(); // idempotent
    f.store.remove("docker.io/library/busybox:2").unwrap();
    assert!(f.store.get(&rec.id).unwrap().is_none());
    assert!(
        f.store.get(&rec.repo_digests[0]).unwrap().is_none(),
        "digests go with the last tag"
    );
    assert!(!f.store.content.contains(&rec.id), "config freed");
    // Layer `a` is shared with `other` and stays.
    assert!(f.store.layers.contains(&rec.layers[0].chain_id));
    f.store.remove(&other.repo_digests[0]).unwrap();
    assert!(f.store.get("other").unwrap().is_some(), "a tag keeps the image");
    f.store.remove(&other.id[7..19]).unwrap();
    assert!(f.store.list().unwrap().is_empty());
    assert!(f.store.layers.list().is_empty());
    assert!(f.store.content.list().is_empty());
    f.store.remove(&other.id).unwrap();
}

#[test]
fn moving_a_tag_drops_an_image_left_without_tags() {
    let f = fixture();
    let old = image(&f, "v1", &["a"], &["app"]);
    f.store.record(old.clone()).unwrap();
    let new = image(&f, "v2", &["b"], &["app"]);
    f.store.record(new.clone()).unwrap();
    assert_eq!(f.store.get("app").unwrap().unwrap().id, new.id);
    assert!(f.store.get(&old.id).unwrap().is_none());
    assert!(
        !f.store.layers.contains(&old.layers[0].chain_id),
        "its layers are freed"
    );
    assert!(f.store.layers.contains(&new.layers[0].chain_id));
}

#[test]
fn leases_keep_layers_until_released() {
    let f = fixture();
    let rec = image(&f, "busybox", &["a", "b"], &["busybox"]);
    f.store.record(rec.clone()).unwrap();
    let dirs = f.store.lease("busybox", "ctr1").unwrap();
    assert_eq!(dirs, f.store.layer_dirs(&rec.id).unwrap());
    f.store.lease(&rec.id, "ctr1").unwrap();
    assert_eq!(f.store.leased_containers().unwrap(), vec!["ctr1"]);
    f.store.remove(&rec.id).unwrap();
    assert!(f.store.get("busybox").unwrap().is_none());
    assert!(dirs.iter().all(|d| d.is_dir()), "leased layers stay");
    f.store.release("ctr1").unwrap();
    assert!(dirs.iter().all(|d| !d.exists()), "released layers go");
    f.store.release("ctr1").unwrap();
    assert!(f.store.leased_containers().unwrap().is_empty());
    assert!(matches!(
        f.store.lease("busybox", "c2"),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn gc_spares_in_flight_pulls_and_reopen_cleans_orphans() {
    let f = fixture();
    let blob = b"in flight";
    let d = sha256_digest(blob);
    f.store.content.put(&d, blob).unwrap();
    let guard = f.store.protect(vec![d.clone()]);
    f.store.gc().unwrap();
    assert!(f.store.content.contains(&d));
    drop(guard);
    f.store.gc().unwrap();
    assert!(!f.store.content.contains(&d));

    f.store.content.put(&d, blob).unwrap();
    let root = f.dir.path().to_path_buf();
    let db = f.store.db.clone();
    drop(f.store);
    let store = ImageStore::open(
        db,
        StoreConfig {
            root,
            registries: RegistryHosts::default(),
            pinned: Vec::new(),
            platform: None,
            auth_file: None,
        },
    )
    .unwrap();
    assert!(
        store.content.list().is_empty(),
        "orphans from a crash are freed at open"
    );
}

#[test]
fn docker_schema2_configs_parse_for_the_container_spec() {
    let f = fixture();
    // Shape of a Docker Hub config: extra keys, nulls, docker-only fields.
    let config = br#"{"architecture":"amd64","config":{"Hostname":"","Domainname":"","User":"",
        "AttachStdin":false,"Tty":false,"Env":["PATH=/usr/bin"],"Cmd":["sh"],"Image":"sha256:x",
        "Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null,
        "ArgsEscaped":true},"container":"abc","container_config":{"Cmd":["/bin/sh"]},
        "created":"2023-05-19T20:19:23.980742512Z","docker_version":"20.10.23",
        "history":[{"created":"2023-05-19T20:19:23Z","created_by":"ADD file:x in / "}],
        "os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]}}"#;
    let id = sha256_digest(config);
    f.store.content.put(&id, config).unwrap();
    let c = f.store.config(&id).unwrap();
    let cfg = c.config().as_ref().unwrap();
    assert_eq!(cfg.cmd().as_deref(), Some(&["sh".to_string()][..]));
    assert!(cfg.entrypoint().is_none());
}

#[test]
fn pins_resolve_to_the_images_their_names_name_now() {
    let digest_ref = format!("docker.io/library/nginx@{}", sha256_digest(b"nginx"));
    let f = pinned_fixture(&["busybox:1", &digest_ref, "absent:1"]);
    let busybox = image(&f, "busybox", &["a"], &["busybox:1"]);
    let nginx = image(&f, "nginx", &["b"], &["nginx:1"]);
    let alpine = image(&f, "alpine", &["c"], &["alpine:1"]);
    for r in [&busybox, &nginx, &alpine] {
        f.store.record(r.clone()).unwrap();
    }
    let want: HashSet<String> = [busybox.id.clone(), nginx.id.clone()].into();
    assert_eq!(f.store.pinned_ids().unwrap(), want);
    assert!(busybox.to_cri(true).pinned && !alpine.to_cri(false).pinned);

    // A pinned tag follows the image it is moved to.
    let mut moved = alpine.clone();
    moved.repo_tags = vec![ImageRef::parse("busybox:1").unwrap().to_string()];
    f.store.record(moved).unwrap();
    let want: HashSet<String> = [alpine.id.clone(), nginx.id.clone()].into();
    assert_eq!(f.store.pinned_ids().unwrap(), want);
}
