//! The demo's load generator: an h2c client with a few connections and many concurrent
//! streams on each, sending GETs (and every Nth request a POST to `/echo` whose echoed body
//! is checked) until told to stop.
//!
//! Every request that starts is counted in `started` before its first frame goes out, and
//! in exactly one outcome (`ok` or one error category) when it ends, so
//! `started - finished` is the number of requests that neither got a response nor a counted
//! error: the demo's `lost`.
#![allow(dead_code)] // also included by tests/proxy_curl.rs, which uses less of it

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use http::{Method, Request, StatusCode};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::backend::send_all;

/// What the load generator does.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The proxy.
    pub target: SocketAddr,
    /// Client connections to the proxy.
    pub connections: usize,
    /// Concurrent streams (one worker each) per connection.
    pub streams: usize,
    /// Every Nth request of a worker is a POST to `/echo` (0: never).
    pub post_every: u64,
}

/// How a request ended (index into [`Counters::outcomes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `200` with the expected body.
    Ok = 0,
    /// The proxy answered `502 Bad Gateway`.
    BadGateway,
    /// Another non-2xx status.
    OtherStatus,
    /// `200` but the body was not what the backend sends (echo mismatch, empty body).
    WrongBody,
    /// The stream was reset (before or after the response head).
    StreamReset,
    /// The client connection to the proxy got a GOAWAY.
    GoAway,
    /// The client connection to the proxy failed (I/O error).
    ConnectionError,
    /// Any other h2 error.
    OtherError,
}

impl Outcome {
    /// Number of outcomes.
    pub const COUNT: usize = 8;

    /// All outcomes, in index order.
    pub const ALL: [Outcome; Outcome::COUNT] = [
        Outcome::Ok,
        Outcome::BadGateway,
        Outcome::OtherStatus,
        Outcome::WrongBody,
        Outcome::StreamReset,
        Outcome::GoAway,
        Outcome::ConnectionError,
        Outcome::OtherError,
    ];

    /// A short label for reports.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::BadGateway => "502 bad gateway",
            Outcome::OtherStatus => "other status",
            Outcome::WrongBody => "wrong body",
            Outcome::StreamReset => "stream reset",
            Outcome::GoAway => "goaway",
            Outcome::ConnectionError => "connection error",
            Outcome::OtherError => "other error",
        }
    }

    fn of_error(e: &h2::Error) -> Outcome {
        if e.is_reset() {
            Outcome::StreamReset
        } else if e.is_go_away() {
            Outcome::GoAway
        } else if e.is_io() {
            Outcome::ConnectionError
        } else {
            Outcome::OtherError
        }
    }
}

/// Shared counters. All counters are statistics read by the progress line and the final
/// report; nothing else is published through them, hence the Relaxed orderings below.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests started.
    pub started: AtomicU64,
    /// Requests ended, per [`Outcome`].
    pub outcomes: [AtomicU64; Outcome::COUNT],
    /// Client connections (re)opened to the proxy.
    pub connects: AtomicU64,
    /// The first few distinct 502 texts the proxy sent (its reasons).
    pub bad_gateway_samples: std::sync::Mutex<Vec<String>>,
}

/// How many distinct 502 reasons [`Counters::bad_gateway_samples`] keeps.
const SAMPLES: usize = 4;

impl Counters {
    fn sample_502(&self, body: &[u8]) {
        let text = String::from_utf8_lossy(body).trim().to_string();
        if let Ok(mut s) = self.bad_gateway_samples.lock() {
            if s.len() < SAMPLES && !s.contains(&text) {
                s.push(text);
            }
        }
    }

    /// The 502 reasons sampled so far.
    pub fn bad_gateway_samples(&self) -> Vec<String> {
        self.bad_gateway_samples
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Requests started.
    pub started: u64,
    /// Requests ended, per [`Outcome`].
    pub outcomes: [u64; Outcome::COUNT],
    /// Client connections opened.
    pub connects: u64,
}

impl Snapshot {
    /// Requests answered `200` with the right body.
    pub fn ok(&self) -> u64 {
        self.outcomes[Outcome::Ok as usize]
    }

    /// Requests ended with a counted error.
    pub fn errors(&self) -> u64 {
        self.outcomes[1..].iter().sum()
    }

    /// Requests ended one way or another.
    pub fn finished(&self) -> u64 {
        self.outcomes.iter().sum()
    }

    /// Requests that started and have not ended (in flight, or lost once all workers ended).
    pub fn unfinished(&self) -> u64 {
        self.started.saturating_sub(self.finished())
    }
}

impl Counters {
    /// The counts now.
    pub fn snapshot(&self) -> Snapshot {
        let mut outcomes = [0; Outcome::COUNT];
        for (o, c) in outcomes.iter_mut().zip(&self.outcomes) {
            // Relaxed: statistics only (see the type's docs).
            *o = c.load(Ordering::Relaxed);
        }
        // Relaxed: statistics only. `outcomes` is read before `started`, so a snapshot never
        // shows more finished than started requests.
        let started = self.started.load(Ordering::Relaxed);
        Snapshot {
            started,
            outcomes,
            // Relaxed: statistics only.
            connects: self.connects.load(Ordering::Relaxed),
        }
    }
}

/// One client connection to the proxy, reopened by the first worker that finds it broken.
struct ClientConn {
    target: SocketAddr,
    counters: Arc<Counters>,
    /// (generation, handle): the generation tells a worker whether someone already reconnected.
    state: tokio::sync::Mutex<(u64, SendRequest<Bytes>)>,
}

impl ClientConn {
    async fn open(target: SocketAddr, counters: Arc<Counters>) -> Result<ClientConn, String> {
        let send = connect(target, &counters).await?;
        Ok(ClientConn {
            target,
            counters,
            state: tokio::sync::Mutex::new((0, send)),
        })
    }

    async fn current(&self) -> (u64, SendRequest<Bytes>) {
        let s = self.state.lock().await;
        (s.0, s.1.clone())
    }

    /// Reopens the connection unless another worker already did since generation `seen`.
    async fn reconnect(&self, seen: u64) -> Result<(u64, SendRequest<Bytes>), String> {
        let mut s = self.state.lock().await;
        if s.0 == seen {
            s.1 = connect(self.target, &self.counters).await?;
            s.0 += 1;
        }
        Ok((s.0, s.1.clone()))
    }
}

async fn connect(target: SocketAddr, counters: &Counters) -> Result<SendRequest<Bytes>, String> {
    let sock = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect to {target}: {e}"))?;
    let _ = sock.set_nodelay(true);
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(8 << 20)
        .handshake::<_, Bytes>(sock)
        .await
        .map_err(|e| format!("h2 handshake with {target}: {e}"))?;
    // The driver ends when every handle is dropped (or the connection fails).
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // Relaxed: statistics only.
    counters.connects.fetch_add(1, Ordering::Relaxed);
    Ok(send)
}

/// A running load generator.
#[derive(Debug)]
pub struct LoadGen {
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    workers: JoinSet<Vec<u32>>,
}

/// What [`LoadGen::finish`] returns.
#[derive(Debug)]
pub struct LoadResult {
    /// Final counts.
    pub counts: Snapshot,
    /// Latencies of the `ok` requests, in microseconds, sorted.
    pub latencies_us: Vec<u32>,
    /// Workers that did not end within the deadline (their request in flight is lost).
    pub stuck_workers: usize,
}

impl LoadGen {
    /// Opens the connections and starts `connections * streams` workers.
    pub async fn start(cfg: LoadConfig) -> Result<LoadGen, String> {
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = JoinSet::new();
        for c in 0..cfg.connections {
            let conn = Arc::new(ClientConn::open(cfg.target, Arc::clone(&counters)).await?);
            for s in 0..cfg.streams {
                workers.spawn(worker(
                    c * cfg.streams + s,
                    Arc::clone(&conn),
                    cfg.clone(),
                    Arc::clone(&counters),
                    Arc::clone(&stop),
                ));
            }
        }
        Ok(LoadGen {
            counters,
            stop,
            workers,
        })
    }

    /// The live counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Tells workers to start no new requests, waits up to `deadline` for them to finish the
    /// ones in flight, and aborts any that are still stuck then.
    pub async fn finish(mut self, deadline: Duration) -> LoadResult {
        // Relaxed: a plain flag; workers only need to see it eventually, and nothing else is
        // published through it (results come back through the join handles).
        self.stop.store(true, Ordering::Relaxed);
        let mut latencies = Vec::new();
        let until = tokio::time::Instant::now() + deadline;
        loop {
            match tokio::time::timeout_at(until, self.workers.join_next()).await {
                Ok(Some(Ok(lat))) => latencies.extend(lat),
                Ok(Some(Err(_))) => {} // a worker panicked: its request shows up as lost
                Ok(None) => break,
                Err(_) => break,
            }
        }
        let stuck_workers = self.workers.len();
        self.workers.shutdown().await;
        latencies.sort_unstable();
        LoadResult {
            counts: self.counters.snapshot(),
            latencies_us: latencies,
            stuck_workers,
        }
    }
}

async fn worker(
    id: usize,
    conn: Arc<ClientConn>,
    cfg: LoadConfig,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> Vec<u32> {
    let mut latencies = Vec::with_capacity(4096);
    let (mut generation, mut send) = conn.current().await;
    let mut n: u64 = 0;
    // Relaxed: see `LoadGen::finish`.
    while !stop.load(Ordering::Relaxed) {
        let ready = match send.clone().ready().await {
            Ok(ready) => ready,
            Err(_) => {
                // The connection is gone before this request started: reopen it.
                match conn.reconnect(generation).await {
                    Ok((g, s)) => (generation, send) = (g, s),
                    Err(e) => {
                        eprintln!("loadgen: worker {id}: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                continue;
            }
        };
        n += 1;
        let post = cfg.post_every > 0 && n % cfg.post_every == 0;
        // Relaxed: statistics only.
        counters.started.fetch_add(1, Ordering::Relaxed);
        let t0 = Instant::now();
        let outcome = one_request(ready, cfg.target, id, n, post, &counters).await;
        if outcome == Outcome::Ok {
            latencies.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
        }
        // Relaxed: statistics only.
        counters.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
        if matches!(outcome, Outcome::GoAway | Outcome::ConnectionError) {
            if let Ok((g, s)) = conn.reconnect(generation).await {
                (generation, send) = (g, s);
            }
        }
    }
    latencies
}

async fn one_request(
    mut send: SendRequest<Bytes>,
    target: SocketAddr,
    id: usize,
    n: u64,
    post: bool,
    counters: &Counters,
) -> Outcome {
    let (method, path, payload) = if post {
        let text = format!("worker {id} request {n};");
        (
            Method::POST,
            "/echo".to_string(),
            Bytes::from(text.repeat(32)),
        )
    } else {
        (Method::GET, format!("/item/{id}/{n}"), Bytes::new())
    };
    let req = match Request::builder()
        .method(method)
        .header(http::header::CONTENT_LENGTH, payload.len())
        .uri(format!("http://{target}{path}"))
        .body(())
    {
        Ok(req) => req,
        Err(_) => return Outcome::OtherError,
    };
    let (response, mut body_out) = match send.send_request(req, payload.is_empty()) {
        Ok(pair) => pair,
        Err(e) => return Outcome::of_error(&e),
    };
    if !payload.is_empty() {
        if let Err(e) = send_all(&mut body_out, payload.clone()).await {
            return Outcome::of_error(&e);
        }
    }
    let resp = match response.await {
        Ok(resp) => resp,
        Err(e) => return Outcome::of_error(&e),
    };
    let status = resp.status();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(chunk) => {
                let _ = body.flow_control().release_capacity(chunk.len());
                got.extend_from_slice(&chunk);
            }
            Err(e) => return Outcome::of_error(&e),
        }
    }
    match status {
        StatusCode::OK if post && got == payload[..] => Outcome::Ok,
        StatusCode::OK if !post && got.starts_with(b"backend-") => Outcome::Ok,
        StatusCode::OK => Outcome::WrongBody,
        StatusCode::BAD_GATEWAY => {
            counters.sample_502(&got);
            Outcome::BadGateway
        }
        _ => Outcome::OtherStatus,
    }
}
