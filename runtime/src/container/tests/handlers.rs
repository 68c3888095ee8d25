//! Runtime handlers in CreateContainer: the pod's handler picks the external runtime that the
//! shim's config and the record carry (so a restarted daemon and shim use the same one); a pod
//! whose handler is no longer configured gets FailedPrecondition with nothing left behind.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::*;
use crate::container::ContainerError;
use crate::handlers::{HandlerConfig, Handlers};

fn with_runc(f: &mut Fixture) {
    let runtimes = BTreeMap::from([(
        "runc".to_string(),
        HandlerConfig {
            runtime_path: Some("/usr/sbin/runc".into()),
            runtime_root: None,
            privileged_without_host_devices: false,
        },
    )]);
    let state = f.dir.path().join("state");
    f.c = Arc::new(
        Containers::new(f.db.clone(), f.images.clone(), &f.dir.path().join("root"), &state)
            .unwrap()
            .with_seams(f.shim.clone(), f.mounter.clone(), f.cgroups.clone())
            .with_handlers(Handlers::new(&runtimes, &state)),
    );
}

#[tokio::test]
async fn the_pods_handler_reaches_the_shim_and_the_record() {
    let mut f = Fixture::new();
    with_runc(&mut f);
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    f.shim
        .after_next_create(move |cfg| *s.lock().unwrap() = Some(cfg.runtime.clone()));
    let mut pod = f.pod();
    pod.runtime_handler = "runc".into();
    let id = f.c.create(&pod, config("app")).await.unwrap();
    f.c.start(&id).await.unwrap();
    let rt = seen
        .lock()
        .unwrap()
        .clone()
        .expect("shim created")
        .expect("an external runtime");
    assert_eq!(rt.handler, "runc");
    assert_eq!(rt.path, Path::new("/usr/sbin/runc"));
    assert_eq!(rt.root, f.dir.path().join("state/runtimes/runc"));
    assert_eq!(f.record(&id).unwrap().runtime, Some(rt.clone()));
    let exec = f.c.exec_request_for(&f.record(&id).unwrap(), vec!["true".into()]);
    assert_eq!(exec.runtime, Some(rt));

    // The default handler stays on the embedded runtime.
    let other = f.c.create(&f.pod(), config("plain")).await.unwrap();
    assert_eq!(f.record(&other).unwrap().runtime, None);
}

#[tokio::test]
async fn a_pod_whose_handler_is_gone_cannot_create_and_leaves_nothing() {
    let f = Fixture::new();
    let mut pod = f.pod();
    pod.runtime_handler = "runc".into();
    let e = f.c.create(&pod, config("app")).await.unwrap_err();
    assert!(matches!(&e, ContainerError::Handler(h) if h.0 == "runc"), "{e:?}");
    assert!(
        f.shim
            .calls()
            .iter()
            .all(|c| !matches!(c, fakes::ShimCall::Create(_)))
    );
    assert!(f.mounter.mounted().is_empty());
    assert!(f.c.records.scan().unwrap().0.is_empty());
}
