//! Every RPC leaves exactly one line in the daemon's log when it ends, inside its span: the
//! method, the pod/container/image it is about (a create's new id included), the gRPC code and
//! the latency; success at debug, a client's error at info with the message.

use crius_tests::containers::World;
use k8s_cri::v1::*;

/// The log layer's lines (one per finished RPC) for `method`.
fn rpc_lines(log: &str, method: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("server::log_layer") && l.contains(&format!("/{method}")))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn each_rpc_is_logged_once_with_its_ids_and_code() {
    let mut w = World::new().await.unwrap();

    let id = w.run("logged", &["sleep", "3600"]).await;
    let all = rpc_lines(&w.d.log(), "CreateContainer");
    let creates: Vec<_> = all
        .iter()
        .filter(|l| l.contains(&format!("container={id}")))
        .collect();
    assert_eq!(creates.len(), 1, "one line for the create of {id}: {all:#?}");
    let line = &creates[0];
    assert!(line.contains(&format!("pod={}", w.pod)), "{line}");
    assert!(
        line.contains("DEBUG") && line.contains("rpc ok") && line.contains("elapsed="),
        "{line}"
    );
    let starts = rpc_lines(&w.d.log(), "StartContainer");
    assert_eq!(starts.len(), 1, "{starts:#?}");
    assert!(starts[0].contains(&format!("container={id}")), "{}", starts[0]);

    let missing = "127.0.0.1:1/not/pulled:1";
    let mut config = w.config("no-image", &["true"]);
    config.image = Some(ImageSpec {
        image: missing.into(),
        ..Default::default()
    });
    let e = w
        .create(config)
        .await
        .expect_err("an image that was never pulled");
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let refused: Vec<_> = rpc_lines(&w.d.log(), "CreateContainer")
        .into_iter()
        .filter(|l| l.contains("NotFound"))
        .collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    let line = &refused[0];
    assert!(line.contains(" INFO ") && line.contains("rpc refused"), "{line}");
    assert!(line.contains(&format!("pod={}", w.pod)), "{line}");
    assert!(line.contains(missing), "the message names the image: {line}");

    let e = w.stop("feedface", 0).await;
    assert!(e.is_ok(), "stop of an unknown container succeeds: {e:?}");
    let stops: Vec<_> = rpc_lines(&w.d.log(), "StopContainer")
        .into_iter()
        .filter(|l| l.contains("container=feedface"))
        .collect();
    assert_eq!(stops.len(), 1, "{stops:#?}");

    w.teardown().await.unwrap();
}
