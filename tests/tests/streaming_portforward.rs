//! PortForward through the streaming server with the suite's own SPDY client: busybox `httpd`
//! in a pod on the bridge network and in a host-network pod, several connections on one
//! session, a port nobody listens on, and the RPC's refusals.

use crius_tests::containers::World;
use crius_tests::pods::{self, PodCleanup};
use crius_tests::streaming::{SpdyClient, forward};
use crius_tests::util;
use k8s_cri::v1::*;
use tonic::Code;

const GET: &[u8] = b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n";

fn httpd(port: u16, body: &str) -> Vec<String> {
    let script = format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p {port} -h /www");
    vec!["sh".into(), "-c".into(), script]
}

async fn pf_url(w: &mut World, pod: &str) -> Result<String, tonic::Status> {
    let req = PortForwardRequest {
        pod_sandbox_id: pod.into(),
        port: vec![],
    };
    w.d.runtime.port_forward(req).await.map(|r| r.into_inner().url)
}

/// Forwards GETs until the server answers (it may still be starting), returns the answer.
async fn get_through(w: &mut World, pod: &str, port: u16) -> String {
    for attempt in 0..100u32 {
        let url = pf_url(w, pod).await.unwrap();
        let (mut c, proto) = SpdyClient::connect(&url, &["portforward.k8s.io"]).await.unwrap();
        assert_eq!(proto, "portforward.k8s.io");
        let (answer, err) = forward(&mut c, port, attempt, GET).await;
        if !answer.is_empty() {
            assert!(err.is_empty(), "error stream after a good forward: {err}");
            return String::from_utf8_lossy(&answer).into_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("nothing answered on port {port} in pod {pod}");
}

#[tokio::test]
async fn port_forward_bridge_and_host_network_pods() {
    let mut w = World::new().await.unwrap();
    let cleanup = PodCleanup::new(&w.d);

    // Bridge network: httpd on the pod's own port 80, reached through its loopback.
    let mut cfg = w.config("web", &[]);
    cfg.command = httpd(80, "hello-bridge");
    let web = w.create(cfg).await.unwrap();
    w.start(&web).await.unwrap();
    let pod = w.pod.clone();
    let page = get_through(&mut w, &pod, 80).await;
    assert!(
        page.starts_with("HTTP/1.") && page.contains("hello-bridge"),
        "{page}"
    );

    // Several connections on one session, then a port nobody listens on.
    let url = pf_url(&mut w, &pod).await.unwrap();
    let (mut c, _) = SpdyClient::connect(&url, &["portforward.k8s.io"]).await.unwrap();
    for rid in 10..13 {
        let (answer, err) = forward(&mut c, 80, rid, GET).await;
        assert!(
            String::from_utf8_lossy(&answer).contains("hello-bridge"),
            "request {rid}"
        );
        assert!(err.is_empty(), "{err}");
    }
    let (answer, err) = forward(&mut c, 81, 20, GET).await;
    assert!(answer.is_empty());
    assert!(err.contains("81"), "the error stream names the port: {err:?}");
    drop(c);

    // Host network: the port is dialled on the host's loopback.
    let port = util::free_port();
    let mut host_cfg = pods::pod_config("pf-host", "uid-pf-host-93");
    host_cfg.log_directory = w.log_dir.to_string_lossy().into_owned();
    let ns = host_cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
        .unwrap();
    ns.network = NamespaceMode::Node as i32;
    let host_pod = w.d.run_pod(host_cfg.clone()).await.unwrap();
    let mut cfg = w.config("host-web", &[]);
    cfg.command = httpd(port, "hello-host");
    let host_web =
        w.d.runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: host_pod.clone(),
                config: Some(cfg),
                sandbox_config: Some(host_cfg),
            })
            .await
            .unwrap()
            .into_inner()
            .container_id;
    w.start(&host_web).await.unwrap();
    let page = get_through(&mut w, &host_pod, port).await;
    assert!(page.contains("hello-host"), "{page}");

    // Refusals: unknown pod, stopped pod.
    let unknown = "0".repeat(64);
    assert_eq!(pf_url(&mut w, &unknown).await.unwrap_err().code(), Code::NotFound);
    w.d.stop_pod(&host_pod).await.unwrap();
    assert_eq!(
        pf_url(&mut w, &host_pod).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    w.d.remove_pod(&host_pod).await.unwrap();

    drop(cleanup);
    w.teardown().await.unwrap();
}
