//! The reverse-proxy service: front end (hyper-util auto builder, h2c prior knowledge and
//! HTTP/1.1) to back end ([`H2Pool`], h2c), shared by the `proxy` and `demo` examples and by
//! `tests/proxy_curl.rs` (each includes this file with `#[path]`).
//!
//! One request goes like this:
//! 1. pick backends in round-robin order, backends that failed to connect recently last;
//! 2. add `x-forwarded-for`; [`H2Pool::send`] does the rest of making the HTTP/1.1 or h2c
//!    request valid for the h2c backend (hop-by-hop headers, `Host` → `:authority`);
//! 3. a body of known size up to [`REPLAY_LIMIT`] is read whole first (so the request can be
//!    sent again); a larger or unsized body is streamed through by the pool;
//! 4. send it with [`H2Pool::send`]. If that fails, try the next backend when the backend
//!    certainly did not process the request ([`H2Error::is_retryable`]: connect failures,
//!    no connection with room in time, refused stream), or when the request is idempotent
//!    and its connection broke; and only while the body can be sent again (small, or a
//!    streamed one that no attempt has begun to send);
//! 5. the response, its body a [`tokenpool::h2::Body`], goes back to hyper as it is (it
//!    gives flow-control capacity back as hyper takes each chunk, so a slow client slows the
//!    backend rather than filling memory);
//! 6. if no backend could serve: `502 Bad Gateway` with a one-line plain-text reason.
#![allow(dead_code)] // each includer uses a different part of this module

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokenpool::h2::{H2Error, H2Pool};
use tokio::net::TcpListener;

/// How long a backend whose connect failed goes to the back of the line.
const DOWN_FOR: Duration = Duration::from_millis(500);

/// How long [`serve`] waits for open client connections to finish after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Per-stream limit the front end advertises to h2c clients.
const FRONT_MAX_STREAMS: u32 = 1024;

/// The proxy: a pool of backend connections plus counters. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Proxy {
    pool: H2Pool,
    /// Round-robin cursor.
    next: AtomicUsize,
    /// Per backend: until when (ms since `epoch`) it is tried last, after a failed connect.
    down_until_ms: Vec<AtomicU64>,
    /// Per backend: requests that got a response head from it.
    forwarded: Vec<AtomicU64>,
    epoch: Instant,
    counters: Counters,
}

/// Proxy-wide counters (all monotonic).
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests received from clients.
    pub requests: AtomicU64,
    /// Extra attempts on another backend after a failure that left the request intact.
    pub retries: AtomicU64,
    /// Requests answered `502 Bad Gateway` by the proxy itself.
    pub bad_gateway: AtomicU64,
}

/// A snapshot of [`Counters`] plus the per-backend forward counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// See [`Counters::requests`].
    pub requests: u64,
    /// See [`Counters::retries`].
    pub retries: u64,
    /// See [`Counters::bad_gateway`].
    pub bad_gateway: u64,
    /// Per backend: responses forwarded from it.
    pub forwarded: Vec<u64>,
}

impl Proxy {
    /// A proxy over `pool`'s backends.
    pub fn new(pool: H2Pool) -> Arc<Self> {
        let n = pool.backends();
        Arc::new(Proxy {
            pool,
            next: AtomicUsize::new(0),
            down_until_ms: (0..n).map(|_| AtomicU64::new(0)).collect(),
            forwarded: (0..n).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            counters: Counters::default(),
        })
    }

    /// The backend pool.
    pub fn pool(&self) -> &H2Pool {
        &self.pool
    }

    /// The counters so far.
    pub fn counters(&self) -> CountersSnapshot {
        // Relaxed: statistics only; no other memory is published through these counters.
        let c = &self.counters;
        CountersSnapshot {
            requests: c.requests.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            bad_gateway: c.bad_gateway.load(Ordering::Relaxed),
            forwarded: self
                .forwarded
                .iter()
                .map(|f| f.load(Ordering::Relaxed))
                .collect(),
        }
    }

    /// A multi-line report: proxy counters and, per backend, forwards and pool slot counts.
    pub fn report(&self) -> String {
        use std::fmt::Write as _;
        let c = self.counters();
        let mut out = format!(
            "proxy: {} requests, {} retries on another backend, {} answered 502\n",
            c.requests, c.retries, c.bad_gateway
        );
        for b in 0..self.pool.backends() {
            let addr = self
                .pool
                .backend_addr(b)
                .map_or_else(|| "?".to_string(), |a| a.to_string());
            let _ = match self.pool.stats(b) {
                Ok(s) => writeln!(
                    out,
                    "  backend {b} {addr}: {} forwarded; pool slots: empty {} available {} in_use {} draining {}",
                    c.forwarded[b], s.empty, s.available, s.in_use, s.draining
                ),
                Err(e) => writeln!(out, "  backend {b} {addr}: {} forwarded; stats: {e}", c.forwarded[b]),
            };
        }
        out
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn mark_down(&self, backend: usize) {
        let until = self.now_ms().saturating_add(DOWN_FOR.as_millis() as u64);
        // Relaxed: a scheduling hint; a stale read only changes the order backends are tried in.
        self.down_until_ms[backend].store(until, Ordering::Relaxed);
    }

    fn mark_up(&self, backend: usize) {
        // Relaxed: as in `mark_down`. Load first so the hot path does not write a shared line.
        if self.down_until_ms[backend].load(Ordering::Relaxed) != 0 {
            self.down_until_ms[backend].store(0, Ordering::Relaxed);
        }
    }

    /// Backends to try, in order: round robin from the cursor, recently failed ones last.
    fn candidates(&self) -> Vec<usize> {
        let n = self.pool.backends();
        // Relaxed: the cursor only spreads load; any interleaving of increments is fine.
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let (mut up, mut down): (Vec<usize>, Vec<usize>) = (0..n)
            .map(|i| (start.wrapping_add(i)) % n)
            // Relaxed: see `mark_down`.
            .partition(|&b| self.down_until_ms[b].load(Ordering::Relaxed) <= now);
        up.append(&mut down);
        up
    }

    /// Serves one client request. Never fails: errors become `502` responses.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        client: SocketAddr,
    ) -> Response<ProxyBody> {
        // Relaxed: statistics only.
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let (mut parts, body) = req.into_parts();
        if parts.method == Method::CONNECT {
            return plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "405 Method Not Allowed: this proxy does not tunnel (CONNECT)\n".to_string(),
            );
        }
        // `H2Pool::send` removes the connection-specific headers and turns `Host` into
        // `:authority`. hyper has already answered any `Expect: 100-continue` (when the body
        // is first read), and credentials meant for this proxy go no further.
        parts.headers.remove(header::EXPECT);
        parts.headers.remove(header::PROXY_AUTHORIZATION);
        append_forwarded_for(&mut parts.headers, client);
        let head = parts.method == Method::HEAD;
        let idempotent = matches!(
            parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        let mut body = match Outgoing::new(body).await {
            Ok(b) => b,
            Err(e) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    format!("400 Bad Request: reading the request body failed: {e}\n"),
                )
            }
        };

        let candidates = self.candidates();
        if candidates.is_empty() {
            return self.bad_gateway("no backends configured".to_string());
        }
        // One more attempt than backends: a refused stream may be retried on the same
        // backend over a fresh connection.
        let mut last_error = String::new();
        for attempt in 0..candidates.len() + 1 {
            let backend = candidates[attempt % candidates.len()];
            // `None`: a failed attempt had started sending a streamed body.
            let Some(attempt_body) = body.attempt() else {
                break;
            };
            if attempt > 0 {
                // Relaxed: statistics only.
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            let request = Request::from_parts(parts.clone(), attempt_body);
            let e = match self.pool.send(backend, request).await {
                Ok(response) => {
                    self.mark_up(backend);
                    // Relaxed: statistics only.
                    self.forwarded[backend].fetch_add(1, Ordering::Relaxed);
                    // A response to HEAD has no body (its `content-length` describes the GET
                    // response), whatever the backend sends: dropping it resets the stream.
                    return response.map(|b| {
                        if head {
                            Either::Left(Full::default())
                        } else {
                            Either::Right(b)
                        }
                    });
                }
                Err(e) => e,
            };
            last_error = format!("backend {backend}: {e}");
            match &e {
                H2Error::InvalidRequest(_) => {
                    return plain(StatusCode::BAD_REQUEST, format!("400 Bad Request: {e}\n"))
                }
                H2Error::Connect { .. }
                | H2Error::JoinedConnectFailed { .. }
                | H2Error::ConnectTimeout { .. }
                | H2Error::Handshake { .. } => self.mark_down(backend),
                _ => {}
            }
            // Again only if the backend certainly did not process the request (never sent,
            // or refused), or if it is idempotent and its connection broke under it.
            let broke = matches!(e, H2Error::ConnectionLost { .. });
            if !(e.is_retryable() || (idempotent && broke)) {
                break;
            }
        }
        self.bad_gateway(last_error)
    }

    fn bad_gateway(&self, reason: String) -> Response<ProxyBody> {
        // Relaxed: statistics only.
        self.counters.bad_gateway.fetch_add(1, Ordering::Relaxed);
        plain(
            StatusCode::BAD_GATEWAY,
            format!("502 Bad Gateway: no backend could serve the request ({reason})\n"),
        )
    }
}

/// The response body: a short one made by the proxy (502 text and such), or the backend's,
/// streamed as it is read (flow control passes the client's pace back to the backend).
pub type ProxyBody = Either<Full<Bytes>, tokenpool::h2::Body>;

/// Appends the client's address to `x-forwarded-for`.
fn append_forwarded_for(headers: &mut HeaderMap, client: SocketAddr) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let ip = client.ip().to_string();
    let value = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(xff, v);
    }
}

/// Request bodies up to this size (by `Content-Length`) are read whole before forwarding, so
/// that the request can be sent again if a backend refuses it; larger or unsized ones stream.
pub const REPLAY_LIMIT: u64 = 64 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client's request body, as the attempts see it.
enum Outgoing {
    /// Empty, or small and read whole: every attempt sends it again.
    Whole {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    /// Large or unsized: lent to the latest attempt, which takes it when it first reads it.
    /// An attempt that failed before that (nothing of the body was sent) leaves it to the
    /// next one.
    Streamed(Arc<Mutex<Option<Incoming>>>),
}

impl Outgoing {
    async fn new(body: Incoming) -> Result<Outgoing, hyper::Error> {
        if body.is_end_stream() {
            return Ok(Outgoing::Whole {
                data: None,
                trailers: None,
            });
        }
        match body.size_hint().upper() {
            Some(n) if n <= REPLAY_LIMIT => {
                let collected = body.collect().await?;
                let trailers = collected.trailers().cloned();
                let data = Some(collected.to_bytes()).filter(|d| !d.is_empty());
                Ok(Outgoing::Whole { data, trailers })
            }
            _ => Ok(Outgoing::Streamed(Arc::new(Mutex::new(Some(body))))),
        }
    }

    /// The body for the next attempt; `None` once an attempt has taken a streamed body.
    fn attempt(&mut self) -> Option<AttemptBody> {
        match self {
            Outgoing::Whole { data, trailers } => Some(AttemptBody::Whole {
                data: data.clone(),
                trailers: trailers.clone(),
            }),
            Outgoing::Streamed(lent) => {
                // Taken back from the previous attempt (whose upload, if it ever reads, gets
                // an error), so that only the latest attempt can take it.
                let body = lock(lent).take()?;
                *lent = Arc::new(Mutex::new(Some(body)));
                Some(AttemptBody::Lent(Arc::clone(lent)))
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One attempt's request body.
enum AttemptBody {
    Whole {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    Lent(Arc<Mutex<Option<Incoming>>>),
    Taken(Incoming),
}

impl Body for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match this {
                AttemptBody::Whole { data, trailers } => {
                    let frame = data.take().map(Frame::data);
                    return Poll::Ready(
                        frame
                            .or_else(|| trailers.take().map(Frame::trailers))
                            .map(Ok),
                    );
                }
                AttemptBody::Taken(body) => {
                    return Pin::new(body).poll_frame(cx).map_err(Into::into)
                }
                AttemptBody::Lent(lent) => {
                    let Some(body) = lock(lent).take() else {
                        return Poll::Ready(Some(Err("the body went to another attempt".into())));
                    };
                    *this = AttemptBody::Taken(body);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            AttemptBody::Whole { data, trailers } => data.is_none() && trailers.is_none(),
            AttemptBody::Lent(_) => false,
            AttemptBody::Taken(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            AttemptBody::Whole { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            AttemptBody::Lent(lent) => lock(lent).as_ref().map(Body::size_hint).unwrap_or_default(),
            AttemptBody::Taken(body) => body.size_hint(),
        }
    }
}

/// A short plain-text response.
fn plain(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(text))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Accepts clients on `listener` (h2c prior knowledge or HTTP/1.1) and proxies their requests
/// until `shutdown` completes; then stops accepting, asks open connections to finish
/// (GOAWAY / `Connection: close`) and waits up to [`SHUTDOWN_GRACE`] for them.
///
/// Returns `false` if some client connections were still open when the grace period ran out
/// (they are then left to end with the runtime).
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
) -> bool {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(FRONT_MAX_STREAMS);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Typically EMFILE: back off a little instead of spinning.
                    eprintln!("proxy: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let proxy = Arc::clone(&proxy);
        let service = hyper::service::service_fn(move |req| {
            let proxy = Arc::clone(&proxy);
            async move { Ok::<_, Infallible>(proxy.handle(req, client).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // Client connection errors (reset, bad preface, garbage) end only that connection.
            let _ = conn.await;
        });
    }
    drop(listener);
    tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_ok()
}
