//! A small h2c test backend on 127.0.0.1, with knobs for the pool's failure tests.
//!
//! Each request is answered `200` with the request body, or the request path when the body is
//! empty, so a test can check that every response belongs to its request. Knobs: response
//! delay, `max_concurrent_streams`, GOAWAY after N requests per connection, a gate that holds
//! responses (before or after the head) until opened, kill and restart on the same port.
//! Every wait is event-driven (counters with a `Notify`), so tests never sleep to let
//! something happen.
#![allow(dead_code)] // each test file uses a different subset

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

/// Where the gate holds a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Answer at once.
    No,
    /// Hold the whole response until the gate opens.
    BeforeHead,
    /// Send the response head, hold the body until the gate opens.
    AfterHead,
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` (none: unlimited).
    pub max_concurrent_streams: Option<u32>,
    /// Wait this long before answering (simulated backend latency).
    pub delay: Duration,
    /// Start a graceful shutdown (GOAWAY) of a connection once it has accepted this many
    /// requests.
    pub goaway_after: Option<usize>,
    /// Which requests the gate holds: those whose path starts with this prefix.
    pub hold_prefix: &'static str,
    /// Where held requests wait.
    pub hold: Hold,
    /// Open the gate by itself once this many requests are active at the same time.
    pub open_gate_at: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_concurrent_streams: None,
            delay: Duration::ZERO,
            goaway_after: None,
            hold_prefix: "/hold",
            hold: Hold::No,
            open_gate_at: None,
        }
    }
}

/// Counters the tests read; each change also notifies `changed`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted (completed the h2 handshake).
    pub connections: AtomicUsize,
    /// Connections that have ended.
    pub closed: AtomicUsize,
    /// Requests accepted.
    pub requests: AtomicUsize,
    /// Requests being handled now (all connections).
    pub active: AtomicUsize,
    /// Most requests ever active at once on a single connection.
    pub max_active_per_conn: AtomicUsize,
    /// Most requests ever active at once in total.
    pub max_active: AtomicUsize,
    /// GOAWAYs started.
    pub goaways: AtomicUsize,
    /// `/stall` requests that the client reset.
    pub resets_seen: AtomicUsize,
    changed: Notify,
}

impl Counters {
    fn bump(&self, c: &AtomicUsize) -> usize {
        let n = c.fetch_add(1, SeqCst) + 1;
        self.changed.notify_waiters();
        n
    }

    /// Waits until `pred` holds (re-checked on every counter change).
    pub async fn wait_until(&self, mut pred: impl FnMut(&Counters) -> bool) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if pred(self) {
                return;
            }
            changed.await;
        }
    }

    pub fn get(c: &AtomicUsize) -> usize {
        c.load(SeqCst)
    }
}

struct Running {
    /// The accept loop and the connection tasks: aborting them drops every socket.
    conns: JoinSet<()>,
    /// Request handlers.
    handlers: JoinSet<()>,
}

/// A running (or killed) test backend.
pub struct TestServer {
    addr: SocketAddr,
    config: Arc<Config>,
    pub counters: Arc<Counters>,
    gate: watch::Sender<bool>,
    running: Option<Arc<Mutex<Running>>>,
}

impl TestServer {
    /// Starts a backend on a free loopback port.
    pub async fn start(config: Config) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve(listener, config)
    }

    /// A loopback address with nothing listening on it (for "backend down" tests).
    pub fn unused_addr() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().unwrap()
    }

    /// Starts a backend on `addr` (for example one from [`unused_addr`](Self::unused_addr)).
    pub async fn start_at(addr: SocketAddr, config: Config) -> TestServer {
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind the given address");
        Self::serve(listener, config)
    }

    fn serve(listener: TcpListener, config: Config) -> TestServer {
        let addr = listener.local_addr().unwrap();
        let mut server = TestServer {
            addr,
            config: Arc::new(config),
            counters: Arc::default(),
            gate: watch::channel(false).0,
            running: None,
        };
        server.run(listener);
        server
    }

    fn run(&mut self, listener: TcpListener) {
        let running = Arc::new(Mutex::new(Running {
            conns: JoinSet::new(),
            handlers: JoinSet::new(),
        }));
        let (config, counters, gate) = (
            self.config.clone(),
            self.counters.clone(),
            self.gate.clone(),
        );
        let tasks = running.clone();
        running.lock().unwrap().conns.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let conn = serve_conn(
                    tcp,
                    config.clone(),
                    counters.clone(),
                    gate.clone(),
                    tasks.clone(),
                );
                tasks.lock().unwrap().conns.spawn(conn);
            }
        });
        self.running = Some(running);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Lets every held response go (and every later one).
    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    /// Kills the backend: closes the listener and every connection abruptly (no GOAWAY), then
    /// stops the handlers. Returns once all of it has stopped.
    pub async fn kill(&mut self) {
        if let Some(running) = self.running.take() {
            let (mut conns, mut handlers) = {
                let mut r = running.lock().unwrap();
                (
                    std::mem::take(&mut r.conns),
                    std::mem::take(&mut r.handlers),
                )
            };
            conns.shutdown().await;
            handlers.shutdown().await;
            // Tasks spawned while we were shutting down (none once the accept loop is gone).
            let mut r = running.lock().unwrap();
            r.conns.abort_all();
            r.handlers.abort_all();
        }
    }

    /// Starts again on the same address, with the same settings and counters.
    pub async fn restart(&mut self) {
        assert!(self.running.is_none(), "restart after kill");
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebind the same port");
        self.run(listener);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let mut r = running.lock().unwrap();
            r.conns.abort_all();
            r.handlers.abort_all();
        }
    }
}

/// Decrements a connection's and the server's active counts when a handler ends.
struct Active {
    here: Arc<AtomicUsize>,
    counters: Arc<Counters>,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.here.fetch_sub(1, SeqCst);
        self.counters.active.fetch_sub(1, SeqCst);
        self.counters.changed.notify_waiters();
    }
}

async fn serve_conn(
    tcp: TcpStream,
    config: Arc<Config>,
    counters: Arc<Counters>,
    gate: watch::Sender<bool>,
    tasks: Arc<Mutex<Running>>,
) {
    let mut builder = h2::server::Builder::new();
    if let Some(n) = config.max_concurrent_streams {
        builder.max_concurrent_streams(n);
    }
    let Ok(mut conn) = builder.handshake::<_, Bytes>(tcp).await else {
        return;
    };
    counters.bump(&counters.connections);
    let here = Arc::new(AtomicUsize::new(0));
    let mut accepted = 0;
    while let Some(Ok((request, respond))) = conn.accept().await {
        accepted += 1;
        if config.goaway_after == Some(accepted) {
            conn.graceful_shutdown();
            counters.bump(&counters.goaways);
        }
        let now_here = here.fetch_add(1, SeqCst) + 1;
        counters.max_active_per_conn.fetch_max(now_here, SeqCst);
        let now_total = counters.active.fetch_add(1, SeqCst) + 1;
        counters.max_active.fetch_max(now_total, SeqCst);
        if config.open_gate_at.is_some_and(|n| now_total >= n) {
            gate.send_replace(true);
        }
        let active = Active {
            here: here.clone(),
            counters: counters.clone(),
        };
        counters.bump(&counters.requests);
        let handler = handle(request, respond, config.clone(), gate.subscribe(), active);
        tasks.lock().unwrap().handlers.spawn(handler);
    }
    counters.bump(&counters.closed);
}

async fn handle(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    config: Arc<Config>,
    mut gate: watch::Receiver<bool>,
    active: Active,
) {
    let (head, mut body) = request.into_parts();
    let path = head.uri.path();
    // END_STREAM came with the request headers.
    let end_with_headers = body.is_end_stream();
    if let Some(n) = path.strip_prefix("/big/") {
        let n: usize = n.parse().expect("/big/{bytes}");
        return send_big(respond, n);
    }
    if path.starts_with("/stall") {
        // Reads nothing and answers nothing: waits until the client resets the stream.
        let _ = std::future::poll_fn(|cx| respond.poll_reset(cx)).await;
        drop(body);
        active.counters.bump(&active.counters.resets_seen);
        return;
    }
    if path.starts_with("/reset-mid") {
        // The head and one frame, then (once the gate opens) RST_STREAM(INTERNAL_ERROR).
        if let Ok(mut send) = respond.send_response(http::Response::new(()), false) {
            let _ = send.send_data(Bytes::from_static(b"partial"), false);
            if gate.wait_for(|open| *open).await.is_ok() {
                send.send_reset(h2::Reason::INTERNAL_ERROR);
            }
        }
        return;
    }
    if path.starts_with("/early") {
        // Answers without reading the request body (dropped unread).
        drop(body);
        if let Ok(mut send) = respond.send_response(http::Response::new(()), false) {
            let _ = send.send_data(Bytes::from_static(b"early"), true);
        }
        return;
    }
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let Ok(trailers) = body.trailers().await else {
        return;
    };
    if !config.delay.is_zero() {
        tokio::time::sleep(config.delay).await;
    }
    let held = config.hold != Hold::No && head.uri.path().starts_with(config.hold_prefix);
    if held && config.hold == Hold::BeforeHead && gate.wait_for(|open| *open).await.is_err() {
        return;
    }
    let Ok(mut send) = respond.send_response(http::Response::new(()), false) else {
        return;
    };
    if held && config.hold == Hold::AfterHead && gate.wait_for(|open| *open).await.is_err() {
        return;
    }
    let payload = if head.uri.path().starts_with("/headers") {
        describe(&head, end_with_headers)
    } else if data.is_empty() {
        Bytes::copy_from_slice(head.uri.path().as_bytes())
    } else {
        data.freeze()
    };
    // Request trailers come back as response trailers.
    match trailers {
        Some(trailers) => {
            let _ = send.send_data(payload, false);
            let _ = send.send_trailers(trailers);
        }
        None => {
            let _ = send.send_data(payload, true);
        }
    }
}

/// `/headers`: the request as the backend saw it, one line each: `uri {uri}`,
/// `end-stream-with-headers {bool}`, then `{name}: {value}` per header.
fn describe(head: &http::request::Parts, end_with_headers: bool) -> Bytes {
    let mut out = format!(
        "uri {}\nend-stream-with-headers {end_with_headers}\n",
        head.uri
    );
    for (name, value) in &head.headers {
        out.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
    }
    Bytes::from(out)
}

/// The byte at offset `i` of a `/big/{n}` response.
pub fn big_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// `/big/{n}`: `n` bytes of [`big_byte`], with `Content-Length`, in 1 MiB frames (h2 sends
/// them as the client's flow-control window allows).
fn send_big(mut respond: h2::server::SendResponse<Bytes>, n: usize) {
    let response = http::Response::builder()
        .header(http::header::CONTENT_LENGTH, n)
        .body(())
        .unwrap();
    let Ok(mut send) = respond.send_response(response, n == 0) else {
        return;
    };
    let all: Vec<u8> = (0..n).map(big_byte).collect();
    let mut all = Bytes::from(all);
    while !all.is_empty() {
        let chunk = all.split_to(all.len().min(1 << 20));
        if send.send_data(chunk, all.is_empty()).is_err() {
            return;
        }
    }
}

/// `GET http://test/{path}` with an empty body.
pub fn get(path: &str) -> http::Request<Bytes> {
    http::Request::get(format!("http://test{path}"))
        .body(Bytes::new())
        .unwrap()
}

/// `GET http://test/{path}` for `send_request`.
pub fn head_only(path: &str) -> http::Request<()> {
    http::Request::get(format!("http://test{path}"))
        .body(())
        .unwrap()
}

/// Fails the test if `fut` takes longer than `secs` seconds: nothing may hang.
pub async fn within<F: std::future::Future>(secs: u64, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: still running after {secs} s"),
    }
}

/// A listener that accepts TCP connections, counts them and closes each at once (the
/// backend's process is up, its HTTP/2 is not): every connect to it fails fast, and the
/// count says how many were tried.
pub async fn closing_listener() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, SeqCst);
            drop(tcp);
        }
    });
    (addr, accepted)
}
