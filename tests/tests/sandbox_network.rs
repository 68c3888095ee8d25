//! Pod networking with the real Debian CNI plugins: the pod IP on the bridge answers from the
//! host, and a hostPort mapping is reachable through 127.0.0.1 (portmap).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use crius_tests::pods::{self, TestNet};
use crius_tests::{Daemon, util};
use k8s_cri::v1::*;

async fn run(d: &mut Daemon, config: PodSandboxConfig) -> (String, String) {
    let id = d.run_pod(config).await.unwrap();
    let st = d.pod_status(&id).await.unwrap().status.unwrap();
    (id, st.network.unwrap().ip)
}

/// Binds `0.0.0.0:port` inside the pod's netns; a thread answers one connection with `reply`.
fn serve_once_in_pod(netns: &Path, port: u16, reply: &'static [u8]) -> std::thread::JoinHandle<()> {
    let listener = pods::in_namespace(netns, "net", move || {
        TcpListener::bind(("0.0.0.0", port)).unwrap()
    });
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(reply).unwrap();
    })
}

fn fetch(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test]
async fn pod_ip_answers_from_the_host() {
    let net = TestNet::new();
    let mut d = net.daemon().await.unwrap();
    let _cleanup = pods::PodCleanup::new(&d);
    let (id, ip) = run(&mut d, pods::pod_config("web", "uid-web")).await;
    assert!(ip.starts_with(&net.ip_prefix()), "{ip}");
    let server = serve_once_in_pod(&pods::ns_path(&d.state, &id, "net"), 8080, b"hello from the pod");
    let got = tokio::task::spawn_blocking(move || fetch(&format!("{ip}:8080")))
        .await
        .unwrap();
    assert_eq!(got, "hello from the pod");
    server.join().unwrap();
    d.remove_pod(&id).await.unwrap();
    assert!(net.veths().is_empty());
}

#[tokio::test]
async fn host_port_is_reachable_through_loopback() {
    let net = TestNet::new();
    let mut d = net.daemon().await.unwrap();
    let _cleanup = pods::PodCleanup::new(&d);
    let host_port = util::free_port();
    let mut cfg = pods::pod_config("hostport", "uid-hp");
    cfg.port_mappings = vec![
        PortMapping {
            protocol: Protocol::Tcp as i32,
            container_port: 8080,
            host_port: host_port as i32,
            host_ip: String::new(),
        },
        // No host port: not forwarded.
        PortMapping {
            protocol: Protocol::Tcp as i32,
            container_port: 9090,
            host_port: 0,
            host_ip: String::new(),
        },
    ];
    let (id, _ip) = run(&mut d, cfg).await;
    let rules = pods::iptables_rules_mentioning(&id);
    assert!(
        rules.iter().any(|r| r.contains(&format!("dports {host_port}"))),
        "{rules:#?}"
    );
    assert!(!rules.iter().any(|r| r.contains("9090")), "{rules:#?}");
    let server = serve_once_in_pod(&pods::ns_path(&d.state, &id, "net"), 8080, b"via hostPort");
    let got = tokio::task::spawn_blocking(move || fetch(&format!("127.0.0.1:{host_port}")))
        .await
        .unwrap();
    assert_eq!(got, "via hostPort");
    server.join().unwrap();
    d.stop_pod(&id).await.unwrap();
    assert!(
        pods::iptables_rules_mentioning(&id).is_empty(),
        "stop removed the port mapping"
    );
    d.remove_pod(&id).await.unwrap();
}
