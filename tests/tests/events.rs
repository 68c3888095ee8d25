//! GetContainerEvents: two subscribers see every transition of a pod's containers, in order,
//! with the pod's status and its containers' statuses; an exit is published without any client
//! asking for the container's status.

use std::time::Duration;

use crius_tests::containers::World;
use futures_util::StreamExt;
use k8s_cri::v1::*;

type Events = tonic::Streaming<ContainerEventResponse>;

async fn subscribe(w: &World) -> Events {
    let mut client = w.d.runtime.clone();
    client
        .get_container_events(GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner()
}

/// Reads events until `n` concern `id`; a hang fails after 60 s.
async fn events_for(s: &mut Events, id: &str, n: usize) -> Vec<ContainerEventResponse> {
    let mut out = Vec::new();
    while out.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(60), s.next())
            .await
            .unwrap_or_else(|_| panic!("no event for {id} after {out:?}"))
            .expect("stream ended")
            .expect("stream error");
        if ev.container_id == id {
            out.push(ev);
        }
    }
    out
}

fn kinds(evs: &[ContainerEventResponse]) -> Vec<ContainerEventType> {
    evs.iter()
        .map(|e| ContainerEventType::try_from(e.container_event_type).unwrap())
        .collect()
}

fn own_status(ev: &ContainerEventResponse) -> Option<&ContainerStatus> {
    ev.containers_statuses.iter().find(|c| c.id == ev.container_id)
}

#[tokio::test]
async fn every_transition_of_a_pod_lifecycle_is_published_in_order() {
    let mut w = World::new().await.unwrap();
    let mut a = subscribe(&w).await;
    let mut b = subscribe(&w).await;

    let stopped = w.run("stopped", &["sh", "-c", "sleep 1000"]).await;
    w.stop(&stopped, 0).await.unwrap();
    w.remove(&stopped).await.unwrap();
    let quits = w.run("quits", &["sh", "-c", "sleep 0.2; exit 3"]).await;

    use ContainerEventType::*;
    for s in [&mut a, &mut b] {
        let evs = events_for(s, &stopped, 4).await;
        assert_eq!(
            kinds(&evs),
            vec![
                ContainerCreatedEvent,
                ContainerStartedEvent,
                ContainerStoppedEvent,
                ContainerDeletedEvent
            ]
        );
        for ev in &evs {
            let pod = ev.pod_sandbox_status.as_ref().expect("pod status");
            assert_eq!(pod.id, w.pod);
            assert_eq!(pod.state, PodSandboxState::SandboxReady as i32);
            assert!(ev.created_at > 0);
        }
        let states: Vec<i32> = evs[..3]
            .iter()
            .map(|e| own_status(e).expect("own status").state)
            .collect();
        assert_eq!(
            states,
            vec![
                ContainerState::ContainerCreated as i32,
                ContainerState::ContainerRunning as i32,
                ContainerState::ContainerExited as i32
            ]
        );
        assert!(
            own_status(&evs[3]).is_none(),
            "a deleted container is not in the pod any more"
        );
        assert!(evs.windows(2).all(|p| p[0].created_at <= p[1].created_at));

        // Nobody asked for its status: the exit watcher published the exit.
        let evs = events_for(s, &quits, 3).await;
        assert_eq!(
            kinds(&evs),
            vec![
                ContainerCreatedEvent,
                ContainerStartedEvent,
                ContainerStoppedEvent
            ]
        );
        let st = own_status(&evs[2]).expect("own status");
        assert_eq!(st.state, ContainerState::ContainerExited as i32);
        assert_eq!(st.exit_code, 3);
        assert_eq!(st.reason, "Error");
    }

    // Pod teardown removes the exited container: DELETED, with the pod now NOTREADY.
    let pod = w.pod.clone();
    w.d.stop_pod(&pod).await.unwrap();
    w.d.remove_pod(&pod).await.unwrap();
    for s in [&mut a, &mut b] {
        let evs = events_for(s, &quits, 1).await;
        assert_eq!(kinds(&evs), vec![ContainerDeletedEvent]);
    }

    // A graceful stop ends the streams cleanly instead of waiting for its grace period.
    let status = w.d.stop().await.unwrap();
    assert!(status.success(), "{status}");
    for s in [&mut a, &mut b] {
        assert!(s.next().await.is_none(), "the stream ended with OK");
    }
}
