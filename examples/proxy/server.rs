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
//! 6. if no backend could serve: `502 Bad Gateway` with a one-line plain-text reason
//!    (`504 Gateway Timeout` when the backends did not answer in time).
//!
//! **Limits.** One client, or one backend, must not be able to stop the proxy from serving
//! everyone else. [`Limits`] holds every limit with its default and the reason for it:
//! client connections (a cap, back-off on accept errors), how long a client may take to
//! send its first request, its headers and its body, idle connections, streams per client
//! connection and each connection's share of the backends' streams, and stream resets.
//! Requests that break RFC 9112/9113 rules the backends should not have to judge (no or two
//! `Host`, userinfo in the authority, a malformed body) get `400` here. The backend side's
//! limits (`response_header_timeout`, `request_timeout`) are the pool's.
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
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokenpool::h2::{H2Error, H2Pool};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

#[path = "conn_task.rs"]
mod conn_task;
use conn_task::{Gated, Inline, Serve};

/// How long a backend whose connect failed goes to the back of the line.
const DOWN_FOR: Duration = Duration::from_millis(500);

/// How long [`serve`] waits for open client connections to finish after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long a connection the proxy asked to close (idle, or over a limit) may take to finish
/// what it has in flight before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How long an h2 client has to answer the proxy's keep-alive PING.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The limits that keep one client or one backend from taking the proxy down; each is a
/// command-line flag of the `proxy` example. The defaults are for a proxy in front of
/// ordinary web traffic; see each field for why.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Client connections open at once. At the cap the proxy stops accepting (new clients
    /// wait in the kernel's backlog) instead of running out of file descriptors. Default
    /// 1000: keep it below the process's descriptor limit minus the backend connections.
    pub max_client_connections: usize,
    /// How long an HTTP/1.1 client may take to send a request's headers (hyper's
    /// `header_read_timeout`). Default 10 s: a real client sends its headers in one round
    /// trip; slowloris trickles them.
    pub header_read_timeout: Duration,
    /// How long a new connection may take to deliver its first complete request head (for
    /// h2: preface, SETTINGS and HEADERS). Default 10 s, as `header_read_timeout`.
    pub handshake_timeout: Duration,
    /// A client connection with no request in flight for this long is closed (GOAWAY for
    /// h2, a close for HTTP/1.1 keep-alive). Default 60 s: long enough for a browser's next
    /// click, short enough that idle sockets cannot pile up.
    pub idle_timeout: Duration,
    /// The proxy PINGs h2 clients this often and drops a connection whose PING goes
    /// unanswered for 10 s. Default 30 s.
    pub keep_alive_interval: Duration,
    /// A request body that delivers nothing for this long fails (`408`) and releases the
    /// backend stream it holds: a minimum rate of one frame per interval. Default 10 s.
    pub body_stall_timeout: Duration,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` advertised to h2 clients. Default 100 (RFC 9113's
    /// recommended minimum), well below the pool's total of backend streams.
    pub max_streams_per_connection: u32,
    /// Requests of one client connection that may be at the backends at once (holding a
    /// backend stream); the others wait up to `share_wait` for their turn, then get `503`.
    /// Default 32: with the default pool (backends × 4 connections × 100 streams) no single
    /// connection can take more than a small part of the backend streams.
    pub backend_share_per_connection: usize,
    /// How long a request waits for its connection's share. Default 2 s (the proxy's default
    /// acquire timeout).
    pub share_wait: Duration,
    /// Requests a client connection may cancel (RST_STREAM before the response head) within
    /// `reset_window`; one more closes the connection. This stops rapid reset, batched or
    /// not: every cancelled request counts, however the resets are spaced. Default 200.
    pub max_resets_per_window: u32,
    /// See `max_resets_per_window`. Default 10 s.
    pub reset_window: Duration,
    /// hyper's `max_pending_accept_reset_streams`: streams reset by the client before the
    /// proxy even accepted them. Default 20 (hyper's).
    pub max_pending_accept_reset_streams: usize,
    /// hyper's `max_local_error_reset_streams`: streams the proxy had to reset because the
    /// client broke the protocol. Default 50 (hyper's 1024 is for a server, not a front
    /// line).
    pub max_local_error_reset_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_client_connections: 1000,
            header_read_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            keep_alive_interval: Duration::from_secs(30),
            body_stall_timeout: Duration::from_secs(10),
            max_streams_per_connection: 100,
            backend_share_per_connection: 32,
            share_wait: Duration::from_secs(2),
            max_resets_per_window: 200,
            reset_window: Duration::from_secs(10),
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 50,
        }
    }
}

impl Limits {
    /// How often a connection's watchdog looks at it: a quarter of the shortest timeout,
    /// between 5 ms and 1 s.
    fn watchdog_tick(&self) -> Duration {
        (self.handshake_timeout.min(self.idle_timeout) / 4)
            .clamp(Duration::from_millis(5), Duration::from_secs(1))
    }

    /// One line per limit, for the start-up banner.
    pub fn describe(&self) -> String {
        format!(
            "  client connections: at most {}\n\
             \x20 header read timeout (HTTP/1.1): {:?}\n\
             \x20 first request within: {:?} of accept (h2 preface, SETTINGS, HEADERS)\n\
             \x20 idle connections closed after: {:?}; h2 PING every {:?}\n\
             \x20 request body stall timeout: {:?}\n\
             \x20 streams per h2 client connection: {}; at the backends per client connection: {} (wait up to {:?})\n\
             \x20 client stream resets: at most {} per {:?}; pending-accept resets {}; local-error resets {}\n",
            self.max_client_connections,
            self.header_read_timeout,
            self.handshake_timeout,
            self.idle_timeout,
            self.keep_alive_interval,
            self.body_stall_timeout,
            self.max_streams_per_connection,
            self.backend_share_per_connection,
            self.share_wait,
            self.max_resets_per_window,
            self.reset_window,
            self.max_pending_accept_reset_streams,
            self.max_local_error_reset_streams,
        )
    }
}

/// The proxy: a pool of backend connections plus counters. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Proxy {
    pool: H2Pool,
    /// Per backend: until when (ms since `epoch`) it is tried last, after a failed connect.
    down_until_ms: Vec<AtomicU64>,
    /// Per backend: requests that got a response head from it.
    forwarded: Vec<AtomicU64>,
    epoch: Instant,
    counters: Counters,
    limits: Limits,
}

/// Proxy-wide counters (all monotonic).
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests received from clients.
    pub requests: AtomicU64,
    /// Extra attempts on another backend after a failure that left the request intact.
    pub retries: AtomicU64,
    /// Requests answered `502 Bad Gateway` or `504 Gateway Timeout` by the proxy itself.
    pub bad_gateway: AtomicU64,
    /// Requests answered `400`, `408` or `503` by the proxy for breaking a rule or a limit.
    pub rejected: AtomicU64,
    /// Client connections accepted.
    pub connections_accepted: AtomicU64,
    /// Client connections ended (for any reason).
    pub connections_closed: AtomicU64,
    /// Client connections the proxy closed for a limit (handshake, idle, resets).
    pub connections_limited: AtomicU64,
    /// Requests the client reset (or went away from) before the whole response was
    /// delivered.
    pub client_resets: AtomicU64,
    /// `accept` calls that failed for want of descriptors (or another listener error).
    pub accept_failures: AtomicU64,
    /// Lines logged about them (at most one per 5 s).
    pub accept_failure_logs: AtomicU64,
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
    /// See [`Counters::rejected`].
    pub rejected: u64,
    /// See [`Counters::connections_accepted`].
    pub connections_accepted: u64,
    /// See [`Counters::connections_closed`].
    pub connections_closed: u64,
    /// See [`Counters::connections_limited`].
    pub connections_limited: u64,
    /// See [`Counters::client_resets`].
    pub client_resets: u64,
    /// See [`Counters::accept_failures`].
    pub accept_failures: u64,
    /// See [`Counters::accept_failure_logs`].
    pub accept_failure_logs: u64,
    /// Per backend: responses forwarded from it.
    pub forwarded: Vec<u64>,
}

impl Proxy {
    /// A proxy over `pool`'s backends, with the default [`Limits`].
    pub fn new(pool: H2Pool) -> Arc<Self> {
        Self::with_limits(pool, Limits::default())
    }

    /// A proxy over `pool`'s backends with `limits`.
    pub fn with_limits(pool: H2Pool, limits: Limits) -> Arc<Self> {
        let n = pool.backends();
        Arc::new(Proxy {
            pool,
            down_until_ms: (0..n).map(|_| AtomicU64::new(0)).collect(),
            forwarded: (0..n).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            counters: Counters::default(),
            limits,
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
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
            rejected: c.rejected.load(Ordering::Relaxed),
            connections_accepted: c.connections_accepted.load(Ordering::Relaxed),
            connections_closed: c.connections_closed.load(Ordering::Relaxed),
            connections_limited: c.connections_limited.load(Ordering::Relaxed),
            client_resets: c.client_resets.load(Ordering::Relaxed),
            accept_failures: c.accept_failures.load(Ordering::Relaxed),
            accept_failure_logs: c.accept_failure_logs.load(Ordering::Relaxed),
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
            "proxy: {} requests, {} retries on another backend, {} answered 502/504, {} rejected \
             (400/408/503); {} client connections, {} closed for a limit\n",
            c.requests,
            c.retries,
            c.bad_gateway,
            c.rejected,
            c.connections_accepted,
            c.connections_limited
        );
        for b in 0..self.pool.backends() {
            let addr = self
                .pool
                .backend_addr(b)
                .map_or_else(|| "?".to_string(), |a| a.to_string());
            let _ = match self.pool.stats(b) {
                Ok(s) => writeln!(
                    out,
                    "  backend {b} {addr}: {} forwarded; pool slots: empty {} available {} in_use {} draining {}, {} waiting; {} streams in flight",
                    c.forwarded[b], s.empty, s.available, s.in_use, s.draining, s.waiters,
                    self.pool.streams_in_flight(b).unwrap_or(0)
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

    /// Backends to try, in order: the pool picker's choice first (it skips ejected
    /// backends), then the others in index order, recently failed ones last. Allocates
    /// nothing: see [`Candidates`].
    fn candidates(&self) -> Candidates {
        let n = self.pool.backends();
        // The pool's picker (`--balance`) chooses the first; the others follow in order.
        let start = self.pool.pick().unwrap_or(0);
        let now = self.now_ms();
        let mut down = 0u64;
        // Relaxed: see `mark_down`. Backends past the 64th are never put last.
        for (b, until) in self.down_until_ms.iter().enumerate().take(64) {
            if until.load(Ordering::Relaxed) > now {
                down |= 1 << b;
            }
        }
        Candidates { start, n, down }
    }

    /// Serves one client request. Never fails: errors become `4xx`/`5xx` responses.
    /// `share`: the client connection's share of backend streams (see
    /// [`Limits::backend_share_per_connection`]); `None`: no share limit.
    /// `client_ip`: the client's address as an `x-forwarded-for` entry ([`client_ip`]),
    /// made once per connection.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        client_ip: &HeaderValue,
        share: Option<Arc<Semaphore>>,
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
        let seen = match check_headers(&parts) {
            Ok(seen) => seen,
            Err(why) => return self.reject(StatusCode::BAD_REQUEST, why),
        };
        // `H2Pool::send` removes the connection-specific headers and turns `Host` into
        // `:authority`. hyper has already answered any `Expect: 100-continue` (when the body
        // is first read), and credentials meant for this proxy go no further.
        if seen.strip {
            parts.headers.remove(header::EXPECT);
            parts.headers.remove(header::PROXY_AUTHORIZATION);
        }
        append_forwarded_for(&mut parts.headers, client_ip, seen.forwarded_for);
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
        // A malformed body (bad chunked framing) or a stalled one fails here, before any
        // backend sees the request.
        // A request without a body (most) skips the read; one with a body reads it in a
        // boxed future, so that the rare path does not make every request's future larger.
        let mut body = if body.is_end_stream() {
            Outgoing::Whole {
                data: None,
                trailers: None,
            }
        } else {
            match Box::pin(Outgoing::new(body, self.limits.body_stall_timeout)).await {
                Ok(b) => b,
                Err(e) => return self.body_failed(&*e),
            }
        };
        // This connection's turn at the backends: at most `backend_share_per_connection`
        // of its requests hold backend streams at once.
        let permit = match share {
            Some(share) => match Arc::clone(&share).try_acquire_owned() {
                // The usual case, a permit free: no timer to arm.
                Ok(permit) => Some(permit),
                // None free: wait for one (boxed, as a rare path).
                Err(_) => {
                    let wait = tokio::time::timeout(self.limits.share_wait, share.acquire_owned());
                    match Box::pin(wait).await {
                        Ok(Ok(permit)) => Some(permit),
                        _ => {
                            return self.reject(
                                StatusCode::SERVICE_UNAVAILABLE,
                                format!(
                                    "503 Service Unavailable: this connection already has {} \
                                     requests at the backends\n",
                                    self.limits.backend_share_per_connection
                                ),
                            )
                        }
                    }
                }
            },
            None => None,
        };

        let candidates = self.candidates();
        if candidates.len() == 0 {
            return self.bad_gateway("no backends configured".to_string(), false);
        }
        // One more attempt than backends: a refused stream may be retried on the same
        // backend over a fresh connection.
        let mut last_error = String::new();
        let mut timed_out = false;
        for attempt in 0..candidates.len() + 1 {
            let backend = candidates.get(attempt % candidates.len());
            // `None`: a failed attempt had started sending a streamed body.
            let Some(attempt_body) = body.attempt() else {
                break;
            };
            if attempt > 0 {
                // Relaxed: statistics only.
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            let request = Request::from_parts(parts.clone(), attempt_body);
            // Inline, not boxed: `H2Pool::send` boxes its own rare paths (connect, wait for
            // room), and the request's future is moved to the heap once, by
            // `conn_task::Inline`. Boxing it here cost one allocation more per request
            // (+460 instructions, docs/throughput.md).
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
                            Either::Right(Forwarded {
                                body: b,
                                _permit: permit,
                            })
                        }
                    });
                }
                Err(e) => e,
            };
            last_error = format!("backend {backend}: {e}");
            match &e {
                H2Error::InvalidRequest(_) => {
                    return self.reject(StatusCode::BAD_REQUEST, format!("400 Bad Request: {e}\n"))
                }
                H2Error::RequestBody(source) => return self.body_failed(&**source),
                H2Error::Connect { .. }
                | H2Error::JoinedConnectFailed { .. }
                | H2Error::ConnectTimeout { .. }
                | H2Error::Handshake { .. } => self.mark_down(backend),
                // A backend that does not answer in time goes to the back of the line too.
                H2Error::ResponseHeaderTimeout { .. } | H2Error::RequestTimeout { .. } => {
                    timed_out = true;
                    self.mark_down(backend);
                }
                _ => {}
            }
            // Again only if the backend certainly did not process the request (never sent,
            // or refused), or if it is idempotent (RFC 9110 §9.2.2) and its connection broke
            // under it or the backend did not answer in time.
            let broke = matches!(
                e,
                H2Error::ConnectionLost { .. }
                    | H2Error::ResponseHeaderTimeout { .. }
                    | H2Error::RequestTimeout { .. }
            );
            if !(e.is_retryable() || (idempotent && broke)) {
                break;
            }
        }
        self.bad_gateway(last_error, timed_out)
    }

    /// `502 Bad Gateway`, or `504 Gateway Timeout` when the last backend did not answer in
    /// time.
    fn bad_gateway(&self, reason: String, timed_out: bool) -> Response<ProxyBody> {
        // Relaxed: statistics only.
        self.counters.bad_gateway.fetch_add(1, Ordering::Relaxed);
        if timed_out {
            return plain(
                StatusCode::GATEWAY_TIMEOUT,
                format!("504 Gateway Timeout: no backend answered in time ({reason})\n"),
            );
        }
        plain(
            StatusCode::BAD_GATEWAY,
            format!("502 Bad Gateway: no backend could serve the request ({reason})\n"),
        )
    }

    /// A request the proxy refuses itself (`400`, `408`, `503`).
    fn reject(&self, status: StatusCode, text: String) -> Response<ProxyBody> {
        // Relaxed: statistics only.
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        plain(status, text)
    }

    /// The client's request body failed: `408` if it stalled, else `400` (malformed).
    fn body_failed(&self, e: &(dyn std::error::Error + 'static)) -> Response<ProxyBody> {
        if e.downcast_ref::<BodyStalled>().is_some() {
            return self.reject(
                StatusCode::REQUEST_TIMEOUT,
                format!("408 Request Timeout: {e}\n"),
            );
        }
        self.reject(
            StatusCode::BAD_REQUEST,
            format!("400 Bad Request: reading the request body failed: {e}\n"),
        )
    }
}

/// What one pass over the request headers found (see [`check_headers`]).
struct Seen {
    /// `Expect` or `Proxy-Authorization` is there (to be removed).
    strip: bool,
    /// `x-forwarded-for` is there (to be appended to).
    forwarded_for: bool,
}

/// RFC 9112 §3.2: an HTTP/1.1 request has exactly one `Host` (HTTP/1.0 at most one); RFC
/// 9110 §4.2.4 / RFC 9113 §8.3.1: no userinfo (`user:pw@`) in `Host` or `:authority`. One
/// pass over the headers, which also notes the headers the proxy changes, so that a request
/// without them costs no lookups.
fn check_headers(parts: &http::request::Parts) -> Result<Seen, String> {
    let mut seen = Seen {
        strip: false,
        forwarded_for: false,
    };
    let (mut hosts, mut host_userinfo) = (0usize, false);
    for (name, value) in &parts.headers {
        if name == header::HOST {
            hosts += 1;
            host_userinfo |= value.as_bytes().contains(&b'@');
        } else if name == header::EXPECT || name == header::PROXY_AUTHORIZATION {
            seen.strip = true;
        } else if name == X_FORWARDED_FOR {
            seen.forwarded_for = true;
        }
    }
    if hosts > 1 {
        return Err("400 Bad Request: more than one Host header\n".to_string());
    }
    if hosts == 0 && parts.version == http::Version::HTTP_11 {
        return Err("400 Bad Request: an HTTP/1.1 request needs a Host header\n".to_string());
    }
    let uri_userinfo = parts
        .uri
        .authority()
        .is_some_and(|a| a.as_str().contains('@'));
    if host_userinfo || uri_userinfo {
        return Err(
            "400 Bad Request: userinfo (user@) is not allowed in the authority\n".to_string(),
        );
    }
    Ok(seen)
}

/// The order in which one request tries the backends: round robin from `start`, those in
/// `down` (a bit per backend, the first 64) after the others. Computed per attempt, so that
/// choosing a backend allocates nothing; only a retry walks the list.
#[derive(Debug, Clone, Copy)]
struct Candidates {
    start: usize,
    n: usize,
    down: u64,
}

impl Candidates {
    fn len(&self) -> usize {
        self.n
    }

    fn is_down(&self, b: usize) -> bool {
        b < 64 && self.down & (1 << b) != 0
    }

    /// The `k`-th backend to try (`k < len()`).
    fn get(&self, k: usize) -> usize {
        if self.down == 0 {
            return self.start.wrapping_add(k) % self.n;
        }
        let order = (0..self.n).map(|i| self.start.wrapping_add(i) % self.n);
        order
            .clone()
            .filter(|&b| !self.is_down(b))
            .chain(order.filter(|&b| self.is_down(b)))
            .nth(k)
            .unwrap_or(0)
    }
}

/// The response body: a short one made by the proxy (502 text and such), or the backend's,
/// streamed as it is read (flow control passes the client's pace back to the backend).
pub type ProxyBody = Either<Full<Bytes>, Forwarded>;

/// A backend's response body on its way to the client, holding the client connection's
/// share of backend streams until it ends or is dropped.
#[derive(Debug)]
pub struct Forwarded {
    body: tokenpool::h2::Body,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Body for Forwarded {
    type Data = Bytes;
    type Error = H2Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H2Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client's address as an `x-forwarded-for` entry: made once per connection, and
/// cloned (a reference count) into each request.
pub fn client_ip(client: SocketAddr) -> HeaderValue {
    HeaderValue::from_maybe_shared(Bytes::from(client.ip().to_string()))
        .expect("an IP address is a valid header value")
}

/// Adds the client's address to `x-forwarded-for`; `present`: the request has one already
/// (then the address is appended to its value).
fn append_forwarded_for(headers: &mut HeaderMap, ip: &HeaderValue, present: bool) {
    if !present {
        headers.insert(X_FORWARDED_FOR, ip.clone());
        return;
    }
    let ip = ip.to_str().unwrap_or_default();
    let value = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

/// Request bodies up to this size (by `Content-Length`) are read whole before forwarding, so
/// that the request can be sent again if a backend refuses it; larger or unsized ones stream.
pub const REPLAY_LIMIT: u64 = 64 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client's request body that delivered nothing for [`Limits::body_stall_timeout`].
#[derive(Debug)]
pub struct BodyStalled(Duration);

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body sent nothing for {:?}", self.0)
    }
}

impl std::error::Error for BodyStalled {}

/// The client's request body, failing with [`BodyStalled`] when no frame comes for `stall`
/// (a minimum rate of one frame per `stall`).
struct Watched {
    body: Incoming,
    stall: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Watched {
    fn new(body: Incoming, stall: Duration) -> Watched {
        Watched {
            body,
            stall,
            timer: Box::pin(tokio::time::sleep(stall)),
        }
    }
}

impl Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.stall;
                this.timer.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled(this.stall))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A streamed body whose first frame was read before any backend was chosen (so that a
/// malformed or empty-and-stalled body never reaches a backend).
struct Prefetched {
    first: Option<Frame<Bytes>>,
    rest: Watched,
}

impl Body for Prefetched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let first = self
            .first
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |d| d.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(first));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(first));
        }
        hint
    }
}

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
    Streamed(Arc<Mutex<Option<Prefetched>>>),
}

impl Outgoing {
    /// Reads a small body whole, or a large one's first frame; either fails if the body is
    /// malformed or stalls for `stall`.
    async fn new(body: Incoming, stall: Duration) -> Result<Outgoing, BoxError> {
        if body.is_end_stream() {
            return Ok(Outgoing::Whole {
                data: None,
                trailers: None,
            });
        }
        let mut body = Watched::new(body, stall);
        match body.size_hint().upper() {
            Some(n) if n <= REPLAY_LIMIT => {
                let collected = body.collect().await?;
                let trailers = collected.trailers().cloned();
                let data = Some(collected.to_bytes()).filter(|d| !d.is_empty());
                Ok(Outgoing::Whole { data, trailers })
            }
            _ => {
                let first = body.frame().await.transpose()?;
                Ok(Outgoing::Streamed(Arc::new(Mutex::new(Some(Prefetched {
                    first,
                    rest: body,
                })))))
            }
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
    Lent(Arc<Mutex<Option<Prefetched>>>),
    Taken(Prefetched),
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
                AttemptBody::Taken(body) => return Pin::new(body).poll_frame(cx),
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

/// One client connection's state, shared by its requests and its watchdog.
struct ClientConn {
    /// The connection's share of backend streams.
    share: Arc<Semaphore>,
    /// Requests begun (service calls).
    started: AtomicU64,
    /// Requests in flight: from the service call until the response body ends.
    active: AtomicUsize,
    /// When `active` last dropped to zero, in ms since `accepted`.
    idle_since_ms: AtomicU64,
    accepted: Instant,
    /// Cancelled requests in the current reset window: (window start, count).
    resets: Mutex<(Instant, u32)>,
    /// Notified when the connection must be dropped at once (too many resets).
    kill: Notify,
    /// Set with `kill`, and looked at on every watchdog tick too.
    killed: std::sync::atomic::AtomicBool,
}

impl ClientConn {
    fn new(limits: &Limits) -> ClientConn {
        let now = Instant::now();
        ClientConn {
            share: Arc::new(Semaphore::new(limits.backend_share_per_connection)),
            started: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            accepted: now,
            resets: Mutex::new((now, 0)),
            kill: Notify::new(),
            killed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A request the client cancelled before its whole response was delivered: counts
    /// against the reset budget, and past it asks the watchdog to drop the connection.
    fn count_reset(&self, limits: &Limits) {
        let mut r = lock(&self.resets);
        if r.0.elapsed() >= limits.reset_window {
            *r = (Instant::now(), 0);
        }
        r.1 += 1;
        if r.1 > limits.max_resets_per_window {
            // Relaxed: a flag only; the watchdog acts on it alone.
            self.killed.store(true, Ordering::Relaxed);
            self.kill.notify_one();
        }
    }
}

/// Counts one request as in flight until dropped. Dropped unfinished (the client reset the
/// stream or went away before the whole response was delivered: the service future was
/// cancelled, or the response dropped before its end), it counts against the connection's
/// reset budget.
struct Active {
    conn: Arc<ClientConn>,
    proxy: Arc<Proxy>,
    finished: bool,
}

impl Active {
    fn new(conn: &Arc<ClientConn>, proxy: &Arc<Proxy>) -> Active {
        // Relaxed: the watchdog reads these as hints (a request that starts just as the
        // connection is found idle gets the GOAWAY's grace to finish).
        conn.started.fetch_add(1, Ordering::Relaxed);
        conn.active.fetch_add(1, Ordering::Relaxed);
        Active {
            conn: Arc::clone(conn),
            proxy: Arc::clone(proxy),
            finished: false,
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if !self.finished {
            // Relaxed: statistics only.
            let counters = &self.proxy.counters;
            counters.client_resets.fetch_add(1, Ordering::Relaxed);
            self.conn.count_reset(&self.proxy.limits);
        }
        // Relaxed: see `new`.
        self.conn
            .idle_since_ms
            .store(self.conn.elapsed_ms(), Ordering::Relaxed);
        self.conn.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Rate-limited logging and growing back-off for failed `accept` calls (`EMFILE`, `ENFILE`:
/// out of descriptors), so that a full descriptor table neither spins nor floods the log.
struct AcceptBackoff {
    delay: Duration,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl AcceptBackoff {
    const MIN: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);
    const LOG_EVERY: Duration = Duration::from_secs(5);

    fn new() -> Self {
        AcceptBackoff {
            delay: Duration::ZERO,
            last_log: None,
            suppressed: 0,
        }
    }

    async fn failed(&mut self, e: &std::io::Error, counters: &Counters) {
        use std::io::ErrorKind;
        // A connection that died in the backlog is not the listener's problem.
        if matches!(
            e.kind(),
            ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
        ) {
            return;
        }
        // Relaxed: statistics only.
        counters.accept_failures.fetch_add(1, Ordering::Relaxed);
        if self.last_log.is_none_or(|t| t.elapsed() >= Self::LOG_EVERY) {
            counters.accept_failure_logs.fetch_add(1, Ordering::Relaxed);
            if self.suppressed > 0 {
                eprintln!(
                    "proxy: accept failed: {e} (and {} more times since the last report)",
                    self.suppressed
                );
            } else {
                eprintln!("proxy: accept failed: {e} (backing off)");
            }
            self.last_log = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        self.delay = (self.delay * 2).clamp(Self::MIN, Self::MAX);
        tokio::time::sleep(self.delay).await;
    }

    fn succeeded(&mut self) {
        self.delay = Duration::ZERO;
    }
}

/// Accepts clients on `listener` (h2c prior knowledge or HTTP/1.1) and proxies their requests
/// under the proxy's [`Limits`] until `shutdown` completes; then stops accepting, asks open
/// connections to finish (GOAWAY / `Connection: close`) and waits up to [`SHUTDOWN_GRACE`]
/// for them.
///
/// Returns `false` if some client connections were still open when the grace period ran out
/// (they are then left to end with the runtime).
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
) -> bool {
    let limits = proxy.limits.clone();
    let capacity = limits.max_client_connections.min(Semaphore::MAX_PERMITS);
    let connections = Arc::new(Semaphore::new(capacity));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut backoff = AcceptBackoff::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // At the cap, stop accepting until a connection ends.
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            p = Arc::clone(&connections).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, client) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    backoff.failed(&e, &proxy.counters).await;
                    continue;
                }
            },
        };
        backoff.succeeded();
        // Relaxed: statistics only.
        proxy
            .counters
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let state = Arc::new(ClientConn::new(&limits));
        // Made once per connection, not per request.
        let client_ip = client_ip(client);
        let service = {
            let proxy = Arc::clone(&proxy);
            let state = Arc::clone(&state);
            hyper::service::service_fn(move |req| {
                let proxy = Arc::clone(&proxy);
                let state = Arc::clone(&state);
                let active = Active::new(&state, &proxy);
                serve_request(proxy, state, client_ip.clone(), active, req)
            })
        };
        // The connection's requests run in its own task (see `conn_task`).
        let exec = Inline::new();
        let conn = client_builder(&limits, exec.clone())
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let proxy = Arc::clone(&proxy);
        let mut stop = stop_rx.clone();
        // Yields before each poll, so that the responses of every request that is ready go
        // out in one write (see `YieldFirst`).
        tokio::spawn(YieldFirst::new(async move {
            let _permit = permit;
            let limits = &proxy.limits;
            let mut serve = Serve::new(conn, &exec);
            // When the connection, asked to close, is dropped if it has not finished.
            let mut closing: Option<Instant> = None;
            let tick = limits.watchdog_tick();
            let mut limited = false;
            loop {
                // The watchdog: polled only when one of its three wakes it, not at every
                // frame of the connection.
                let watchdog = Gated::new(async {
                    tokio::select! {
                        biased;
                        () = state.kill.notified() => Watch::Killed,
                        _ = stop.changed(), if closing.is_none() => Watch::Stop,
                        () = tokio::time::sleep(tick) => Watch::Tick,
                    }
                });
                let event = tokio::select! {
                    biased;
                    // Client connection errors (reset, bad preface, garbage) end only that
                    // connection.
                    _ = &mut serve => break,
                    event = watchdog => event,
                };
                match event {
                    Watch::Killed => {
                        limited = true;
                        break;
                    }
                    Watch::Stop => {
                        serve.conn().graceful_shutdown();
                        closing = Some(Instant::now() + SHUTDOWN_GRACE);
                    }
                    Watch::Tick => {
                        // Relaxed: see `count_reset`.
                        if state.killed.load(Ordering::Relaxed) {
                            limited = true;
                            break;
                        }
                        if let Some(deadline) = closing {
                            if Instant::now() >= deadline {
                                break;
                            }
                            continue;
                        }
                        let now_ms = state.elapsed_ms();
                        // Relaxed: hints; see `Active::new`.
                        if state.started.load(Ordering::Relaxed) == 0 {
                            if now_ms >= millis(limits.handshake_timeout) {
                                // No complete request head yet: a trickled preface or
                                // headers. Nothing is in flight, so it is dropped at once.
                                limited = true;
                                break;
                            }
                        } else if state.active.load(Ordering::Relaxed) == 0
                            && now_ms.saturating_sub(state.idle_since_ms.load(Ordering::Relaxed))
                                >= millis(limits.idle_timeout)
                        {
                            limited = true;
                            serve.conn().graceful_shutdown();
                            closing = Some(Instant::now() + CLOSE_GRACE);
                        }
                    }
                }
            }
            // Relaxed: statistics only.
            let c = &proxy.counters;
            if limited {
                c.connections_limited.fetch_add(1, Ordering::Relaxed);
            }
            c.connections_closed.fetch_add(1, Ordering::Relaxed);
        }));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it ends.
    let all = u32::try_from(capacity).unwrap_or(u32::MAX);
    let clean = tokio::time::timeout(SHUTDOWN_GRACE, connections.acquire_many(all))
        .await
        .is_ok();
    clean
}

/// What woke a client connection's watchdog.
enum Watch {
    /// The connection broke a limit (`ClientConn::kill`).
    Killed,
    /// The proxy is shutting down.
    Stop,
    /// Time to check the connection's deadlines.
    Tick,
}

/// hyper's server for one client connection, under `limits`, its requests run by `exec`.
fn client_builder(limits: &Limits, exec: Inline) -> auto::Builder<Inline> {
    let mut builder = auto::Builder::new(exec);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection)
        .keep_alive_interval(limits.keep_alive_interval)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .max_pending_accept_reset_streams(limits.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(limits.max_local_error_reset_streams);
    builder
}

/// A client connection's task, run after the tasks that woke it: the same design as the
/// backend side's (`tokenpool`'s `src/h2/batch.rs`, docs/write-batching.md). The backend
/// connections' drivers wake it as each response arrives; on tokio's multi-thread runtime
/// it would run *next* (the worker's LIFO slot) and forward that one response alone. Woken,
/// it first wakes itself and returns `Pending` once, which re-queues it behind every task
/// already runnable, so one poll forwards every response that arrived meanwhile and one
/// flush carries them all. Nothing waits for company: with nothing else queued the real
/// poll follows at once.
struct YieldFirst<F> {
    inner: Pin<Box<F>>,
    /// Yielded since the last wake-up: the next poll polls `inner`.
    yielded: bool,
}

impl<F: Future> YieldFirst<F> {
    fn new(inner: F) -> Self {
        YieldFirst {
            inner: Box::pin(inner),
            yielded: false,
        }
    }
}

impl<F: Future> Future for YieldFirst<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.yielded = false;
        self.inner.as_mut().poll(cx)
    }
}

/// One request of a client connection: the service's future, which hyper wraps and hands to
/// the connection's executor (`conn_task::Inline`).
async fn serve_request(
    proxy: Arc<Proxy>,
    state: Arc<ClientConn>,
    client_ip: HeaderValue,
    active: Active,
    req: Request<Incoming>,
) -> Result<Response<Tracked>, Infallible> {
    let share = Some(Arc::clone(&state.share));
    let response = proxy.handle(req, &client_ip, share).await;
    // In flight until the response body is done; see `Tracked`.
    Ok(response.map(|body| Tracked { body, active }))
}

/// The size of the future `f` returns, without calling it.
fn future_size<A, F: Future>(_: impl FnOnce(A) -> F) -> usize {
    std::mem::size_of::<F>()
}

/// Sizes in bytes of the futures on the request path, as compiled: the one hyper makes per
/// request ([`serve_request`]), [`Proxy::handle`], and [`H2Pool::send`] with the proxy's
/// request body. Each is moved at least once on its way to being polled (boxed), so its size
/// is work per request.
pub fn request_future_sizes(proxy: &Arc<Proxy>) -> [(&'static str, usize); 3] {
    let ip = HeaderValue::from_static("127.0.0.1");
    [
        (
            "per-request future",
            future_size(
                |(req, state, active): (Request<Incoming>, Arc<ClientConn>, Active)| {
                    serve_request(Arc::clone(proxy), state, ip.clone(), active, req)
                },
            ),
        ),
        (
            "Proxy::handle",
            future_size(|req: Request<Incoming>| Arc::clone(proxy).handle(req, &ip, None)),
        ),
        (
            "H2Pool::send",
            future_size(|req: Request<AttemptBody>| proxy.pool.send(0, req)),
        ),
    ]
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A response body, counting its request as in flight (for the idle timeout) until it is
/// done or dropped; dropped before its end, the request counts as reset by the client. (A
/// handler that finished only because the client's reset broke its request body still
/// counts: hyper drops its response undelivered.)
pub struct Tracked {
    body: ProxyBody,
    active: Active,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.active.finished = self.body.is_end_stream();
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod candidate_tests {
    use super::Candidates;

    fn order(c: Candidates) -> Vec<usize> {
        (0..c.len()).map(|k| c.get(k)).collect()
    }

    #[test]
    fn round_robin_from_the_cursor_with_failed_backends_last() {
        let all_up = Candidates {
            start: 5,
            n: 4,
            down: 0,
        };
        assert_eq!(order(all_up), [1, 2, 3, 0]);
        let two_down = Candidates {
            start: 5,
            n: 4,
            down: 0b0110,
        };
        assert_eq!(order(two_down), [3, 0, 1, 2]);
        let all_down = Candidates {
            start: 2,
            n: 3,
            down: 0b111,
        };
        assert_eq!(order(all_down), [2, 0, 1]);
    }
}
