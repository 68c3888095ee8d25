//! The HTTP side: accept connections, redeem the token in the URL, negotiate the transport
//! (SPDY/3.1 upgrade with `X-Stream-Protocol-Version`, or WebSocket with a subprotocol) and hand
//! the upgraded connection to the protocol. Failures before the upgrade are plain HTTP errors
//! whose body says why (clients show it).
//!
//! Limits: at most [`MAX_CONNECTIONS`] connections at once, counting an upgraded session until it
//! ends (further clients wait in the listen backlog); a request head must arrive within
//! [`HEADER_READ_TIMEOUT`]; a failing `accept` (EMFILE, ENFILE, ENOBUFS) backs off up to a
//! second instead of spinning.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::remotecommand::{self, Wanted};
use super::spdy::Session;
use super::status::Outcome;
use super::{Pending, StreamingServer, portforward, websocket};

const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";
const ACCEPTED_HEADER: &str = "X-Accepted-Stream-Protocol-Versions";

/// Connections (and the sessions they upgrade to) served at once.
pub const MAX_CONNECTIONS: usize = 128;
/// How long a client may take to send a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection's slot; the upgrade handler takes it into the session it starts.
type Slot = Arc<Mutex<Option<OwnedSemaphorePermit>>>;

pub async fn accept_loop(listener: tokio::net::TcpListener, server: Arc<StreamingServer>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    while let Some((tcp, permit)) = super::accept::next_in_slot(&listener, &slots, "streaming").await {
        let server = server.clone();
        let slot: Slot = Arc::new(Mutex::new(Some(permit)));
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(server.clone(), slot.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), svc);
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "streaming connection ended with an error");
            }
        });
    }
}

fn take_slot(slot: &Slot) -> Option<OwnedSemaphorePermit> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).take()
}

fn reply(code: StatusCode, msg: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(msg.into())));
    *r.status_mut() = code;
    r
}

fn header_list(req: &Request<Incoming>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

async fn handle(
    server: Arc<StreamingServer>,
    slot: Slot,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let parts: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
    let [kind, token] = parts[..] else {
        return Ok(reply(StatusCode::NOT_FOUND, "unknown streaming path"));
    };
    let kind = kind.to_string();
    let Some(pending) = server.cache.take(token) else {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            "streaming token not found, already used or expired",
        ));
    };
    if pending.path() != kind {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            "streaming token does not belong to this endpoint",
        ));
    }
    let upgrade = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    Ok(match upgrade.as_str() {
        "spdy/3.1" => upgrade_spdy(server, &slot, &mut req, pending),
        "websocket" => upgrade_websocket(server, &slot, &mut req, pending),
        _ => reply(
            StatusCode::BAD_REQUEST,
            "streaming needs an Upgrade to SPDY/3.1 or websocket",
        ),
    })
}

fn upgrade_spdy(
    server: Arc<StreamingServer>,
    slot: &Slot,
    req: &mut Request<Incoming>,
    pending: Pending,
) -> Response<Full<Bytes>> {
    let offered = header_list(req, PROTOCOL_HEADER);
    let supported: &[&str] = match pending {
        Pending::PortForward(_) => &[portforward::PROTOCOL],
        _ => &remotecommand::SUPPORTED,
    };
    // The first protocol the client lists that the server speaks; none offered means legacy v1.
    let chosen = if offered.is_empty() {
        supported[supported.len() - 1].to_string()
    } else {
        match offered.iter().find(|p| supported.contains(&p.as_str())) {
            Some(p) => p.clone(),
            None => {
                let mut r = reply(
                    StatusCode::FORBIDDEN,
                    format!("no supported stream protocol among {offered:?}; supported: {supported:?}"),
                );
                if let Ok(v) = HeaderValue::from_str(&supported.join(", ")) {
                    r.headers_mut().insert(ACCEPTED_HEADER, v);
                }
                return r;
            }
        }
    };
    let on_upgrade = hyper::upgrade::on(req);
    let proto = chosen.clone();
    let held = take_slot(slot);
    tokio::spawn(async move {
        let _held = held;
        match on_upgrade.await {
            Ok(upgraded) => serve_spdy(server, Session::serve(TokioIo::new(upgraded)), &proto, pending).await,
            Err(e) => tracing::debug!(error = %e, "SPDY upgrade failed"),
        }
    });
    let mut r = reply(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = r.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    if let Ok(v) = HeaderValue::from_str(&chosen) {
        h.insert(PROTOCOL_HEADER, v);
    }
    r
}

fn wanted(p: &Pending) -> Wanted {
    match p {
        Pending::Exec(r) => Wanted {
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            tty: r.tty,
        },
        Pending::Attach(r) => Wanted {
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            tty: r.tty,
        },
        Pending::PortForward(_) => Wanted {
            stdin: false,
            stdout: false,
            stderr: false,
            tty: false,
        },
    }
}

async fn serve_spdy(server: Arc<StreamingServer>, mut session: Session, protocol: &str, pending: Pending) {
    let backend = server.backend.clone();
    if let Pending::PortForward(r) = pending {
        portforward::serve(session, r.pod_sandbox_id, backend).await;
        return;
    }
    let version = remotecommand::version_of(protocol);
    let want = wanted(&pending);
    let mut streams = match remotecommand::collect(&mut session, want, version).await {
        Ok(s) => s,
        Err(msg) => {
            tracing::warn!(%msg, "streaming request abandoned");
            session.close().await;
            return;
        }
    };
    // Streams opened after the expected ones are refused as they come: unread, they would fill
    // the session's queue and stop its reader, which then could not see the client leave.
    let extra = remotecommand::refuse_further(&mut session);
    let wiring = remotecommand::wire(&mut streams, want.tty, session.gone.clone());
    let (io, drain) = wiring.split();
    let outcome = run(&*backend, &pending, io).await;
    drain.drain().await;
    remotecommand::finish(&streams.error, version, &outcome).await;
    extra.abort();
    session.close().await;
}

/// Runs the exec or attach against the backend and turns the result into an outcome.
async fn run(backend: &dyn super::StreamBackend, pending: &Pending, io: super::ProcessIo) -> Outcome {
    match pending {
        Pending::Exec(r) => match backend.exec(r, io).await {
            Ok(code) => Outcome::Exited(code),
            Err(e) => Outcome::Failed(e.to_string()),
        },
        Pending::Attach(r) => match backend.attach(r, io).await {
            Ok(()) => Outcome::Exited(0),
            Err(e) => Outcome::Failed(e.to_string()),
        },
        Pending::PortForward(_) => Outcome::Failed("port-forward is not a remote command".into()),
    }
}

fn upgrade_websocket(
    server: Arc<StreamingServer>,
    slot: &Slot,
    req: &mut Request<Incoming>,
    pending: Pending,
) -> Response<Full<Bytes>> {
    let Some(key) = req
        .headers()
        .get("Sec-WebSocket-Key")
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        return reply(
            StatusCode::BAD_REQUEST,
            "websocket upgrade without Sec-WebSocket-Key",
        );
    };
    let offered = header_list(req, "Sec-WebSocket-Protocol");
    let supported: &[&str] = match pending {
        Pending::PortForward(_) => &[websocket::PORTFORWARD_TUNNEL],
        _ => &[websocket::CHANNEL_V5, websocket::CHANNEL_V4],
    };
    let Some(chosen) = offered.iter().find(|p| supported.contains(&p.as_str())).cloned() else {
        return reply(
            StatusCode::FORBIDDEN,
            format!("no supported websocket subprotocol among {offered:?}; supported: {supported:?}"),
        );
    };
    let on_upgrade = hyper::upgrade::on(req);
    let proto = chosen.clone();
    let held = take_slot(slot);
    tokio::spawn(async move {
        let _held = held;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => return tracing::debug!(error = %e, "websocket upgrade failed"),
        };
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(websocket::config()))
                .await;
        let backend = server.backend.clone();
        if let Pending::PortForward(r) = pending {
            let session = Session::serve(websocket::tunnel(ws));
            portforward::serve(session, r.pod_sandbox_id, backend).await;
            return;
        }
        let chan = websocket::channel_session(ws, wanted(&pending), proto == websocket::CHANNEL_V5);
        let (io, finisher) = chan.split();
        let outcome = run(&*backend, &pending, io).await;
        finisher.finish(&outcome).await;
    });
    let mut r = reply(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = r.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&key) {
        h.insert("Sec-WebSocket-Accept", v);
    }
    if let Ok(v) = HeaderValue::from_str(&chosen) {
        h.insert("Sec-WebSocket-Protocol", v);
    }
    r
}
