//! Streaming clients written for the suite: the HTTP upgrade by hand, a SPDY/3.1 client on the
//! daemon's own frame and header codec (`crius_streaming::spdy`), the Kubernetes
//! remote-command and port-forward protocols on top of it, and a WebSocket `v5.channel.k8s.io`
//! exec client. Streams are opened in the order client-go opens them.
//!
//! Invariant: every wait is bounded by [`WAIT`], so a hang fails the test instead of blocking it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crius_streaming::spdy::frame::{FLAG_FIN, Frame};
use crius_streaming::spdy::headers::{Decoder, Encoder, Headers};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

/// Longest any single step may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// Awaits `f`, panicking with `what` after [`WAIT`].
pub async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing happened within {WAIT:?}"))
}

/// A refused upgrade: the HTTP status and body the server answered.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

/// Sends the upgrade request for `url` and reads the response head. Ok: the 101's headers
/// (lowercase names) and the connection.
pub async fn upgrade(
    url: &str,
    method: &str,
    extra: &[(&str, &str)],
) -> Result<(HashMap<String, String>, TcpStream), Refused> {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_at(rest.find('/').expect("URL has a path"));
    let mut tcp = TcpStream::connect(host)
        .await
        .expect("connect to the streaming server");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = bounded("response head", tcp.read(&mut b)).await.unwrap();
        assert!(
            n > 0,
            "server closed before answering: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let text = String::from_utf8(head).unwrap();
    let mut lines = text.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if status == 101 {
        return Ok((headers, tcp));
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    bounded("response body", tcp.read_exact(&mut body)).await.unwrap();
    Err(Refused {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// What arrives on a client stream.
#[derive(Debug)]
enum Event {
    Data(Vec<u8>),
}

/// A stream the client opened; `rx` ends at the server's FIN or RST_STREAM.
pub struct ClientStream {
    pub id: u32,
    rx: mpsc::UnboundedReceiver<Event>,
}

impl ClientStream {
    /// The next chunk, or None at end of stream.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        bounded("stream data", self.rx.recv())
            .await
            .map(|Event::Data(d)| d)
    }

    pub async fn read_to_end(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(d) = self.next().await {
            out.extend_from_slice(&d);
        }
        out
    }
}

type Routes = Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<Event>>>>;

/// A SPDY/3.1 client session over an upgraded connection.
pub struct SpdyClient {
    out: Arc<tokio::sync::Mutex<(Encoder, OwnedWriteHalf)>>,
    routes: Routes,
    next_id: u32,
    reader: tokio::task::JoinHandle<()>,
}

impl SpdyClient {
    /// Upgrades to SPDY/3.1 offering `protocols`; returns the client and the chosen protocol.
    pub async fn connect(url: &str, protocols: &[&str]) -> Result<(SpdyClient, String), Refused> {
        let mut extra = vec![("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")];
        for p in protocols {
            extra.push(("X-Stream-Protocol-Version", p));
        }
        let (headers, tcp) = upgrade(url, "POST", &extra).await?;
        let chosen = headers
            .get("x-stream-protocol-version")
            .cloned()
            .unwrap_or_default();
        let (mut rd, wr) = tcp.into_split();
        let routes: Routes = Arc::default();
        let r = routes.clone();
        let reader = tokio::spawn(async move {
            let mut dec = Decoder::default();
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                while let Some((frame, used)) = Frame::parse(&buf).expect("server frames parse") {
                    buf.drain(..used);
                    let mut routes = r.lock().unwrap();
                    match frame {
                        Frame::SynReply { header_block, .. } | Frame::Headers { header_block, .. } => {
                            dec.decode(&header_block).expect("server header block inflates");
                        }
                        Frame::Data {
                            stream_id,
                            flags,
                            data,
                        } => {
                            if let Some(tx) = routes.get(&stream_id)
                                && !data.is_empty()
                            {
                                let _ = tx.send(Event::Data(data));
                            }
                            if flags & FLAG_FIN != 0 {
                                routes.remove(&stream_id);
                            }
                        }
                        Frame::RstStream { stream_id, .. } => {
                            routes.remove(&stream_id);
                        }
                        Frame::GoAway { .. } => routes.clear(),
                        _ => {}
                    }
                }
                match rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            r.lock().unwrap().clear();
        });
        let client = SpdyClient {
            out: Arc::new(tokio::sync::Mutex::new((Encoder::default(), wr))),
            routes,
            next_id: 1,
            reader,
        };
        Ok((client, chosen))
    }

    /// Opens a stream with `headers`; `fin`: half-close it at once.
    pub async fn open(&mut self, headers: &[(&str, &str)], fin: bool) -> ClientStream {
        let id = self.next_id;
        self.next_id += 2;
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes.lock().unwrap().insert(id, tx);
        let h = Headers(
            headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        );
        let mut out = self.out.lock().await;
        let block = out.0.encode(&h);
        let f = Frame::SynStream {
            stream_id: id,
            assoc_id: 0,
            priority: 0,
            flags: if fin { FLAG_FIN } else { 0 },
            header_block: block,
        };
        out.1.write_all(&f.encode()).await.expect("send SYN_STREAM");
        ClientStream { id, rx }
    }

    /// Sends DATA on stream `id` (FIN with `fin`). Err: the connection is gone.
    pub async fn send(&self, id: u32, data: &[u8], fin: bool) -> std::io::Result<()> {
        let f = Frame::Data {
            stream_id: id,
            flags: if fin { FLAG_FIN } else { 0 },
            data: data.to_vec(),
        };
        self.out.lock().await.1.write_all(&f.encode()).await
    }

    pub async fn reset(&self, id: u32) -> std::io::Result<()> {
        let f = Frame::RstStream {
            stream_id: id,
            status: 5,
        };
        self.out.lock().await.1.write_all(&f.encode()).await
    }
}

impl Drop for SpdyClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Which streams a remote command uses (as in the CRI request).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stdio {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// What a finished remote command left: its output and the `metav1.Status` on the error
/// stream (Null when the server wrote none).
#[derive(Debug)]
pub struct Finished {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: serde_json::Value,
}

impl Finished {
    /// The exit code the status reports (0 for Success).
    pub fn exit_code(&self) -> i32 {
        if self.status["status"] == "Success" {
            return 0;
        }
        assert_eq!(
            self.status["reason"], "NonZeroExitCode",
            "status: {}",
            self.status
        );
        self.status["details"]["causes"][0]["message"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// An exec or attach over SPDY (protocol v4, as kubelet and critest negotiate it).
pub struct RemoteCommand {
    pub client: SpdyClient,
    pub error: ClientStream,
    pub stdin: Option<u32>,
    pub stdout: Option<ClientStream>,
    pub stderr: Option<ClientStream>,
    pub resize: Option<u32>,
    /// stdout read so far by [`RemoteCommand::read_stdout_until`].
    pub seen: Vec<u8>,
}

impl RemoteCommand {
    pub async fn start(url: &str, io: Stdio) -> Result<RemoteCommand, Refused> {
        let protocols = [
            "v5.channel.k8s.io",
            "v4.channel.k8s.io",
            "v3.channel.k8s.io",
            "v2.channel.k8s.io",
        ];
        let (mut client, chosen) = SpdyClient::connect(url, &protocols).await?;
        assert_eq!(chosen, "v5.channel.k8s.io", "the newest protocol is chosen");
        let error = client.open(&[("streamtype", "error")], true).await;
        let stdin = match io.stdin {
            true => Some(client.open(&[("streamtype", "stdin")], false).await.id),
            false => None,
        };
        let stdout = match io.stdout {
            true => Some(client.open(&[("streamtype", "stdout")], true).await),
            false => None,
        };
        let stderr = match io.stderr && !io.tty {
            true => Some(client.open(&[("streamtype", "stderr")], true).await),
            false => None,
        };
        let resize = match io.tty {
            true => Some(client.open(&[("streamtype", "resize")], false).await.id),
            false => None,
        };
        Ok(RemoteCommand {
            client,
            error,
            stdin,
            stdout,
            stderr,
            resize,
            seen: Vec::new(),
        })
    }

    pub async fn write(&self, data: &[u8]) {
        self.client
            .send(self.stdin.expect("stdin stream"), data, false)
            .await
            .unwrap();
    }

    pub async fn close_stdin(&self) {
        self.client
            .send(self.stdin.expect("stdin stream"), &[], true)
            .await
            .unwrap();
    }

    pub async fn resize(&self, width: u16, height: u16) {
        let msg = format!("{{\"Width\":{width},\"Height\":{height}}}\n");
        self.client
            .send(self.resize.expect("resize stream"), msg.as_bytes(), false)
            .await
            .unwrap();
    }

    /// Reads stdout until `done(all stdout so far)`; panics at end of stream before that.
    pub async fn read_stdout_until(&mut self, done: impl Fn(&str) -> bool) -> String {
        let out = self.stdout.as_mut().expect("stdout stream");
        while !done(&String::from_utf8_lossy(&self.seen)) {
            match out.next().await {
                Some(d) => self.seen.extend_from_slice(&d),
                None => panic!(
                    "stdout ended before the expected output: {:?}",
                    String::from_utf8_lossy(&self.seen)
                ),
            }
        }
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// Reads stdout and stderr to their ends, then the status.
    pub async fn finish(mut self) -> Finished {
        let mut stdout = std::mem::take(&mut self.seen);
        if let Some(s) = self.stdout.as_mut() {
            stdout.extend(s.read_to_end().await);
        }
        let stderr = match self.stderr.as_mut() {
            Some(s) => s.read_to_end().await,
            None => Vec::new(),
        };
        let raw = self.error.read_to_end().await;
        let status = if raw.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("status {raw:?}: {e}"))
        };
        Finished {
            stdout,
            stderr,
            status,
        }
    }
}

/// One forwarded connection of a port-forward session: sends `request`, reads the answer until
/// the pod closes, half-closes, and returns (the answer, what the error stream said).
pub async fn forward(
    client: &mut SpdyClient,
    port: u16,
    request_id: u32,
    request: &[u8],
) -> (Vec<u8>, String) {
    let port = port.to_string();
    let rid = request_id.to_string();
    let mut error = client
        .open(
            &[("streamtype", "error"), ("port", &port), ("requestid", &rid)],
            true,
        )
        .await;
    let mut data = client
        .open(
            &[("streamtype", "data"), ("port", &port), ("requestid", &rid)],
            false,
        )
        .await;
    client.send(data.id, request, false).await.unwrap();
    let answer = data.read_to_end().await;
    // As client-go does when its local connection ends: half-close our side; the server then
    // closes the error stream (empty when all went well).
    let _ = client.send(data.id, &[], true).await;
    let err = error.read_to_end().await;
    (answer, String::from_utf8_lossy(&err).into_owned())
}

/// An exec over WebSocket (`v5.channel.k8s.io`, crictl's `--transport websocket`): sends
/// `stdin` (then closes it with `[255, 0]`), returns the output and the status.
pub async fn ws_exec(url: &str, stdin: Option<&[u8]>) -> Finished {
    use tokio_tungstenite::tungstenite::Message;
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url).unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse().unwrap());
    let host = url
        .strip_prefix("http://")
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let tcp = TcpStream::connect(host).await.unwrap();
    let (mut ws, resp) = bounded("websocket handshake", tokio_tungstenite::client_async(req, tcp))
        .await
        .unwrap();
    assert_eq!(resp.headers()["Sec-WebSocket-Protocol"], "v5.channel.k8s.io");
    if let Some(data) = stdin {
        let mut m = vec![0u8];
        m.extend_from_slice(data);
        ws.send(Message::binary(m)).await.unwrap();
        ws.send(Message::binary(vec![255, 0])).await.unwrap();
    }
    let (mut stdout, mut stderr, mut status) = (Vec::new(), Vec::new(), serde_json::Value::Null);
    while let Some(m) = bounded("websocket message", ws.next()).await {
        match m.unwrap() {
            Message::Binary(b) => match b[0] {
                1 => stdout.extend_from_slice(&b[1..]),
                2 => stderr.extend_from_slice(&b[1..]),
                3 => status = serde_json::from_slice(&b[1..]).unwrap(),
                c => panic!("unexpected channel {c} from the server"),
            },
            Message::Close(_) => break,
            _ => {}
        }
    }
    Finished {
        stdout,
        stderr,
        status,
    }
}
