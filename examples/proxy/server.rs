//! The reverse-proxy service: front end (hyper-util auto builder, h2c prior knowledge and
//! HTTP/1.1) to back end ([`H2Pool`], h2c), shared by the `proxy` and `demo` examples and by
//! `tests/proxy_curl.rs` (each includes this file with `#[path]`).
//!
//! One request goes like this:
//! 1. pick backends in round-robin order, backends that failed to connect recently last;
//! 2. strip hop-by-hop headers, turn `Host` into `:authority`, add `x-forwarded-for`;
//! 3. a body of known size up to [`REPLAY_LIMIT`] is read whole first (so the request can be
//!    sent again); a larger or unsized body will be streamed;
//! 4. open a stream with [`H2Pool::send_request`]; on a connect error, connect timeout,
//!    acquire timeout or a connection lost while opening the stream, try the next backend
//!    (nothing was sent, the body is untouched, so this is always safe);
//! 5. send the body: a small one at once, a streamed one (hyper frames → h2 `SendStream`,
//!    waiting for send capacity) in its own task while the response head is awaited;
//! 6. a request not streamed whose stream the backend refused (`REFUSED_STREAM`, or above the
//!    last stream id of its GOAWAY), or an idempotent one whose connection broke, is sent again
//!    to the next backend; a streamed body cannot be replayed, so such a request gets `502`;
//! 7. the response body streams back (h2 `RecvStream` → hyper frames), releasing h2
//!    flow-control capacity as hyper takes each chunk, so a slow client slows the backend
//!    rather than filling memory;
//! 8. if no backend could serve: `502 Bad Gateway` with a one-line plain-text reason.
#![allow(dead_code)] // each includer uses a different part of this module

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokenpool::h2::{H2Error, H2Pool, RecvStream};
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
    /// Response bodies that broke off mid-stream (backend connection lost after the head).
    pub broken_bodies: AtomicU64,
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
    /// See [`Counters::broken_bodies`].
    pub broken_bodies: u64,
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
            broken_bodies: c.broken_bodies.load(Ordering::Relaxed),
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
            "proxy: {} requests, {} retries on another backend, {} answered 502, {} response bodies broken off\n",
            c.requests, c.retries, c.bad_gateway, c.broken_bodies
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
        let (parts, body) = req.into_parts();
        if parts.method == Method::CONNECT {
            return plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "405 Method Not Allowed: this proxy does not tunnel (CONNECT)\n".to_string(),
            );
        }
        let head = match upstream_head(&parts, client) {
            Ok(h) => h,
            Err(reason) => return plain(StatusCode::BAD_REQUEST, reason),
        };
        let idempotent = matches!(
            parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        let mut body = match RequestBody::new(body).await {
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
        let attempts = candidates.len() + 1;
        let mut last_error = String::new();
        for attempt in 0..attempts {
            let backend = candidates[attempt % candidates.len()];
            if attempt > 0 {
                // Relaxed: statistics only.
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            let request = head.to_request();
            let end_of_stream = body.is_empty();
            let (response, mut send) = match self
                .pool
                .send_request(backend, request, end_of_stream)
                .await
            {
                Ok(pair) => pair,
                Err(e) => {
                    // Nothing of the request reached the backend when connecting failed,
                    // no connection had room in time, or the connection died as the
                    // stream was being opened: try the next backend. Not after a
                    // protocol error (h2 rejected the request itself, e.g. a malformed
                    // header).
                    let retry = match &e {
                        H2Error::Connect { .. }
                        | H2Error::ConnectTimeout { .. }
                        | H2Error::Handshake { .. } => {
                            self.mark_down(backend);
                            true
                        }
                        H2Error::ConnectionLost { .. } => true,
                        e => e.is_retryable(),
                    };
                    last_error = format!("backend {backend}: {e}");
                    if retry {
                        continue;
                    }
                    break;
                }
            };
            self.mark_up(backend);

            let pump = match &mut body {
                RequestBody::Empty => None,
                RequestBody::Buffered { data, trailers } => {
                    // Small enough for h2 to buffer at once; any failure shows up on the
                    // response future.
                    if send.send_data(data.clone(), trailers.is_none()).is_ok() {
                        if let Some(t) = trailers {
                            let _ = send.send_trailers(t.clone());
                        }
                    }
                    None
                }
                // Streamed in its own task so a backend can answer before the body ends
                // (and a large body cannot deadlock against a large response). From here
                // on the body is consumed: this request can no longer be retried.
                RequestBody::Streaming(b) => b.take().map(|b| tokio::spawn(pump_body(b, send))),
            };

            match response.await {
                Ok(resp) => {
                    // Relaxed: statistics only.
                    self.forwarded[backend].fetch_add(1, Ordering::Relaxed);
                    // The pump task, if any, finishes on its own: body end, client error or
                    // stream reset.
                    drop(pump);
                    return self.downstream_response(resp, head.method == Method::HEAD);
                }
                Err(e) => {
                    if let Some(p) = pump {
                        p.abort();
                    }
                    last_error = format!("backend {backend}: {e}");
                    if body.replayable()
                        && (not_processed(&e) || (idempotent && connection_broke(&e)))
                    {
                        continue;
                    }
                    break;
                }
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

    fn downstream_response(
        self: &Arc<Self>,
        resp: Response<RecvStream>,
        head_request: bool,
    ) -> Response<ProxyBody> {
        let (mut parts, recv) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let body = if head_request {
            // A response to HEAD has no body (its `content-length` describes the GET
            // response), whatever the backend sends: dropping `recv` cancels the stream.
            ProxyBody::Full(None)
        } else {
            ProxyBody::upstream(recv, Arc::clone(self))
        };
        Response::from_parts(parts, body)
    }
}

/// Request bodies up to this size (by `Content-Length`) are read whole before forwarding, so
/// that the request can be sent again if a backend refuses it; larger or unsized ones stream.
pub const REPLAY_LIMIT: u64 = 64 * 1024;

/// A client's request body, as the retry logic sees it.
enum RequestBody {
    /// No body: the request head carries END_STREAM.
    Empty,
    /// A small body read whole: can be sent again.
    Buffered {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// A large or unsized body, streamed; `None` once handed to a pump task.
    Streaming(Option<Incoming>),
}

impl RequestBody {
    async fn new(body: Incoming) -> Result<RequestBody, hyper::Error> {
        if body.is_end_stream() {
            return Ok(RequestBody::Empty);
        }
        match body.size_hint().upper() {
            Some(n) if n <= REPLAY_LIMIT => {
                let collected = http_body_util::BodyExt::collect(body).await?;
                let trailers = collected.trailers().cloned();
                let data = collected.to_bytes();
                if data.is_empty() && trailers.is_none() {
                    Ok(RequestBody::Empty)
                } else {
                    Ok(RequestBody::Buffered { data, trailers })
                }
            }
            _ => Ok(RequestBody::Streaming(Some(body))),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, RequestBody::Empty)
    }

    /// Can the request be sent again after a failed attempt?
    fn replayable(&self) -> bool {
        !matches!(self, RequestBody::Streaming(_))
    }
}

/// True when the backend certainly did not process the request: it refused the stream, or
/// the stream was above the last stream id of a GOAWAY it sent.
fn not_processed(e: &h2::Error) -> bool {
    e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote())
}

/// True when the connection broke under the stream (I/O error or a GOAWAY); the request may
/// or may not have been processed.
fn connection_broke(e: &h2::Error) -> bool {
    e.is_io() || e.is_go_away()
}

/// What of the client's request goes to every attempt.
struct UpstreamHead {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl UpstreamHead {
    fn to_request(&self) -> Request<()> {
        let mut req = Request::new(());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Builds the backend request head: absolute `http://authority/path` URI, hop-by-hop
/// headers removed, `x-forwarded-for` appended.
fn upstream_head(parts: &http::request::Parts, client: SocketAddr) -> Result<UpstreamHead, String> {
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    // hyper already answered any `Expect: 100-continue` when the body was first read.
    headers.remove(header::EXPECT);
    // HTTP/2 carries the host in `:authority`; an HTTP/1.1 request carries it in `Host`.
    let host = headers.remove(header::HOST);
    let authority = match (parts.uri.authority(), host) {
        (Some(a), _) => a.clone(),
        (None, Some(h)) => h
            .to_str()
            .ok()
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .ok_or_else(|| "400 Bad Request: invalid Host header\n".to_string())?,
        (None, None) => http::uri::Authority::from_static("localhost"),
    };
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|e| format!("400 Bad Request: {e}\n"))?;
    let xff = HeaderName::from_static("x-forwarded-for");
    let ip = client.ip().to_string();
    let value = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(xff, v);
    }
    Ok(UpstreamHead {
        method: parts.method.clone(),
        uri,
        headers,
    })
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including any named in `Connection`.
/// `TE: trailers` is kept: HTTP/2 allows exactly that value.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    let te_trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Copies a client request body into an h2 stream, waiting for send capacity (flow control)
/// before each chunk. Ends the stream with the body, or resets it if the client's body fails.
async fn pump_body(mut body: Incoming, mut send: h2::SendStream<Bytes>) {
    loop {
        let frame = match poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => {
                // Body done without trailers; may already have been ended below.
                let _ = send.send_data(Bytes::new(), true);
                return;
            }
            Some(Err(_)) => {
                send.send_reset(h2::Reason::CANCEL);
                return;
            }
            Some(Ok(frame)) => frame,
        };
        let frame = match frame.into_data() {
            Ok(mut data) => {
                let last = body.is_end_stream();
                if data.is_empty() {
                    if last {
                        let _ = send.send_data(Bytes::new(), true);
                        return;
                    }
                    continue;
                }
                while !data.is_empty() {
                    send.reserve_capacity(data.len());
                    let cap = match poll_fn(|cx| send.poll_capacity(cx)).await {
                        Some(Ok(cap)) => cap,
                        // Stream reset or connection gone: the response side reports it.
                        Some(Err(_)) | None => return,
                    };
                    if cap == 0 {
                        continue;
                    }
                    let chunk = data.split_to(cap.min(data.len()));
                    if send.send_data(chunk, last && data.is_empty()).is_err() {
                        return;
                    }
                }
                if last {
                    return;
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            let mut trailers = trailers;
            strip_hop_by_hop(&mut trailers);
            let _ = send.send_trailers(trailers);
            return;
        }
    }
}

/// Response body: either a short body made by the proxy, or a backend's h2 stream.
#[derive(Debug)]
pub enum ProxyBody {
    /// A complete body (502 text and such).
    Full(Option<Bytes>),
    /// A backend's response body, streamed.
    Upstream {
        /// The backend stream (the pool's wrapper: the stream counts against its connection's
        /// stream limit until this is dropped).
        recv: RecvStream,
        /// Data is done; trailers (if any) come next.
        data_done: bool,
        /// Everything delivered.
        done: bool,
        /// For the broken-body counter.
        proxy: Arc<Proxy>,
    },
}

impl ProxyBody {
    fn upstream(recv: RecvStream, proxy: Arc<Proxy>) -> Self {
        ProxyBody::Upstream {
            recv,
            data_done: false,
            done: false,
            proxy,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        match self.get_mut() {
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Upstream {
                recv,
                data_done,
                done,
                proxy,
            } => {
                if *done {
                    return Poll::Ready(None);
                }
                if !*data_done {
                    match recv.poll_data(cx) {
                        Poll::Ready(Some(Ok(data))) => {
                            // hyper takes the chunk only when it can send it on, so releasing
                            // the window here passes the client's pace back to the backend.
                            let _ = recv.flow_control().release_capacity(data.len());
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Poll::Ready(Some(Err(e))) => {
                            *done = true;
                            // Relaxed: statistics only.
                            proxy.counters.broken_bodies.fetch_add(1, Ordering::Relaxed);
                            return Poll::Ready(Some(Err(e)));
                        }
                        Poll::Ready(None) => *data_done = true,
                        Poll::Pending => return Poll::Pending,
                    }
                }
                match recv.poll_trailers(cx) {
                    Poll::Ready(Ok(trailers)) => {
                        *done = true;
                        Poll::Ready(trailers.map(|mut t| {
                            strip_hop_by_hop(&mut t);
                            Ok(Frame::trailers(t))
                        }))
                    }
                    Poll::Ready(Err(e)) => {
                        *done = true;
                        // Relaxed: statistics only.
                        proxy.counters.broken_bodies.fetch_add(1, Ordering::Relaxed);
                        Poll::Ready(Some(Err(e)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(data) => data.is_none(),
            // h2 says so only when END_STREAM arrived and nothing (data or trailers) is left to
            // read, which lets hyper end the response with its head.
            ProxyBody::Upstream { done, recv, .. } => *done || recv.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream { .. } => SizeHint::default(),
        }
    }
}

/// A short plain-text response.
fn plain(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::Full(Some(Bytes::from(text))));
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
