//! CRI idempotence as critest checks it: Stop/Remove of pods and containers that do not exist
//! succeed whatever the id looks like (critest uses UUIDs); Status of them is NotFound.

use crius_tests::Daemon;
use k8s_cri::v1::*;

const IDS: [&str; 3] = [
    "f80828fa-d73c-4812-885e-399f5668e606",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "deadbeef",
];

#[tokio::test]
async fn stop_and_remove_of_unknown_objects_succeed() {
    let mut d = Daemon::start().await.unwrap();
    for id in IDS {
        let id = id.to_string();
        d.stop_pod(&id).await.unwrap();
        d.remove_pod(&id).await.unwrap();
        d.runtime
            .stop_container(StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            })
            .await
            .unwrap();
        d.runtime
            .remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn status_of_unknown_objects_is_not_found() {
    let mut d = Daemon::start().await.unwrap();
    for id in IDS {
        let e = d
            .runtime
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{id}: {e}");
        let e = d.pod_status(id).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{id}: {e}");
    }
}
