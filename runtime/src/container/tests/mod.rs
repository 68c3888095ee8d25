//! Unit tests of the container verbs through the real `Containers`, a tempdir redb and image
//! store, and the fakes of `fakes.rs` in place of the shim, the overlay mount and cgroupfs: the
//! failure orders (a shim that fails or dies or hangs, a mount or unmount that fails, a
//! teardown retried) that the integration suite cannot produce on cue. No root needed; nothing
//! on the host is mounted, signalled or written outside the tempdir.

mod census;
mod create;
mod fakes;
mod handlers;
mod lifecycle;
mod list_exits;
mod recover;
mod remove_queue;

use std::path::Path;
use std::sync::Arc;

use cri_api::v1::{ContainerConfig, ContainerMetadata, ImageSpec, PodSandboxConfig, PodSandboxMetadata};
use crius_sandbox::cgroup::Driver;

use super::record::Record;
use super::{Containers, PodInfo};
use crate::spec::{Namespace, PodNamespaces};
use fakes::{FakeCgroups, FakeMounter, FakeShim};

const IMAGE: &str = "busybox:1";
const POD: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

struct Fixture {
    dir: tempfile::TempDir,
    db: Arc<redb::Database>,
    images: Arc<crius_image::ImageStore>,
    shim: Arc<FakeShim>,
    mounter: Arc<FakeMounter>,
    cgroups: Arc<FakeCgroups>,
    c: Arc<Containers>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let db = crate::store::open(&root).unwrap();
        let images = crius_image::ImageStore::open(
            db.clone(),
            crius_image::StoreConfig {
                root: root.clone(),
                registries: Default::default(),
                pinned: Vec::new(),
                platform: None,
                auth_file: None,
            },
        )
        .unwrap();
        images
            .add_local_image(IMAGE, &["base", "top"], &["/bin/sh"])
            .unwrap();
        let (shim, mounter, cgroups): (Arc<FakeShim>, Arc<FakeMounter>, Arc<FakeCgroups>) =
            Default::default();
        let c = build(dir.path(), &db, &images, &shim, &mounter, &cgroups);
        Fixture {
            dir,
            db,
            images,
            shim,
            mounter,
            cgroups,
            c,
        }
    }

    /// Another `Containers` over this fixture's database, directories and fakes: a restarted
    /// daemon's.
    fn restarted(&self) -> Arc<Containers> {
        build(
            self.dir.path(),
            &self.db,
            &self.images,
            &self.shim,
            &self.mounter,
            &self.cgroups,
        )
    }

    fn pod(&self) -> PodInfo {
        PodInfo {
            id: POD.into(),
            config: PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: "web".into(),
                    uid: "uid-1".into(),
                    namespace: "default".into(),
                    attempt: 0,
                }),
                ..Default::default()
            },
            ready: true,
            namespaces: PodNamespaces {
                network: Namespace::New,
                ipc: Namespace::New,
                uts: Namespace::New,
                pid: Namespace::New,
                user: None,
            },
            files: Default::default(),
            cgroup_parent: format!("/crius/{POD}"),
            cgroup_driver: Driver::Cgroupfs,
            runtime_handler: String::new(),
        }
    }

    /// The record as the database holds it (a fresh reader: after `restarted`, the first
    /// `Containers`' row cache no longer follows the table).
    fn record(&self, id: &str) -> Option<Record> {
        super::record::Records::new(self.db.clone())
            .unwrap()
            .get(id)
            .unwrap()
    }

    fn leased(&self, id: &str) -> bool {
        self.images.leased_containers().unwrap().iter().any(|l| l == id)
    }

    /// Everything a container leaves behind is gone: record, mount, bundle (with its shim
    /// directory), writable layer, libcontainer state, image lease.
    fn assert_gone(&self, id: &str) {
        assert!(self.record(id).is_none(), "record of {id} is left");
        assert!(
            self.mounter.mounted().is_empty(),
            "still mounted: {:?}",
            self.mounter.mounted()
        );
        for d in [
            self.c.bundle_dir(id),
            self.c.layer_dir(id),
            self.c.youki_root().join(id),
        ] {
            assert!(!d.exists(), "{} is left", d.display());
        }
        assert!(!self.leased(id), "image lease of {id} is left");
    }

    fn cgroup(&self, id: &str) -> String {
        format!("/crius/{POD}/{id}")
    }
}

fn config(name: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn build(
    dir: &Path,
    db: &Arc<redb::Database>,
    images: &Arc<crius_image::ImageStore>,
    shim: &Arc<FakeShim>,
    mounter: &Arc<FakeMounter>,
    cgroups: &Arc<FakeCgroups>,
) -> Arc<Containers> {
    Arc::new(
        Containers::new(db.clone(), images.clone(), &dir.join("root"), &dir.join("state"))
            .unwrap()
            .with_seams(shim.clone(), mounter.clone(), cgroups.clone())
            // Inline teardowns (the queue's back-pressure path), so each test sees a remove's
            // whole effect when it answers; `remove_queue.rs` tests the background path.
            .with_teardown_capacity(0),
    )
}
