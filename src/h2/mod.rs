//! The HTTP/2 layer: [`H2Pool`], a pool of real h2c connections to a list of backends.
//!
//! ```
//! use bytes::Bytes;
//! use tokenpool::h2::H2Pool;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A tiny h2c backend on a free loopback port that answers "hello" to everything.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! tokio::spawn(async move {
//!     while let Ok((tcp, _)) = listener.accept().await {
//!         tokio::spawn(async move {
//!             let mut conn = h2::server::handshake(tcp).await?;
//!             while let Some((_request, mut respond)) = conn.accept().await.transpose()? {
//!                 let mut body = respond.send_response(http::Response::new(()), false)?;
//!                 body.send_data(Bytes::from_static(b"hello"), true)?;
//!             }
//!             Ok::<_, h2::Error>(())
//!         });
//!     }
//! });
//!
//! // One backend, at most two connections to it.
//! let pool = H2Pool::builder([addr]).max_connections_per_backend(2).build()?;
//!
//! // Whole body in, whole body out:
//! let request = http::Request::get("http://backend/hello").body(Bytes::new())?;
//! let response = pool.request(0, request).await?;
//! assert_eq!(response.body(), "hello");
//!
//! // Or streaming: the response future and the request body stream.
//! let (response, _request_body) =
//!     pool.send_request(0, http::Request::get("http://backend/").body(())?, true).await?;
//! let mut body = response.await?.into_body();
//! let chunk = body.data().await.expect("one chunk")?;
//! assert_eq!(chunk, "hello");
//! drop(body); // the stream no longer counts against its connection
//!
//! let stats = pool.stats(0)?;
//! assert_eq!((stats.available, stats.in_use), (1, 0)); // one connection served both
//! # Ok(()) }
//! ```
//!
//! # How a request finds a connection
//! Each backend has one [`Pool`] of connection slots ([`ConnectionPool`] holds them all), one
//! slot per allowed connection. [`H2Pool::send_request`]:
//! 1. takes an available connection (`acquire`). If it is dead, past its lifetime, or has
//!    received GOAWAY, it is closed and the next one taken; if it is full, it is parked (see
//!    below) and the next one taken. Otherwise
//! 2. reserves an empty slot (`reserve`) and connects: TCP with `TCP_NODELAY`, the h2
//!    handshake, the connection's driver task, and one PING round trip so that the backend's
//!    SETTINGS (its stream limit) are known before the first stream; all bounded by the
//!    connect timeout. Reserving first means two requests never both open a connection for
//!    the last free slot: the second finds no empty slot and waits. A cancelled or failed
//!    connect drops its reservation, which empties the slot again and wakes a waiter.
//!    Otherwise
//! 3. waits ([`Pool::acquire_wait`], bounded by the acquire timeout) until a slot is
//!    released: a connection regains room for a stream, or a slot empties.
//!
//! # Multiplexing: what the token stands for
//! A slot's token is exclusive, but an HTTP/2 connection carries many streams at once. Here
//! the token stands for *the right to open a stream on the connection*, and the slot's state
//! says whether the connection has room for one:
//!
//! - **available**: the connection carries fewer streams than its limit,
//!   `min(backend's SETTINGS_MAX_CONCURRENT_STREAMS, max_streams_per_connection)`;
//! - **in_use**: a request is opening a stream on it right now (for about a microsecond),
//!   it is being connected, or it is **full**.
//!
//! A request holds the token only while it opens its stream: it counts the stream in the
//! connection's `in_flight` counter, sends the request head on a clone of the connection's
//! `SendRequest`, and releases the token with `keep = true` at once, unless that stream made
//! the connection full. Then the token is *parked* in the connection, and the slot stays
//! `in_use`: `acquire` skips the connection without looking at it, and a request that finds
//! every slot taken waits in the pool's own wait queue. When one of the connection's streams
//! ends (its [`ResponseFuture`] or [`RecvStream`] is dropped), the count drops and the parked
//! token is released, which wakes one waiter; that waiter's own release wakes the next, for
//! as long as the connection has room. The count and the parked token sit under one small
//! per-connection mutex (h2 takes a connection-wide mutex for every stream operation anyway,
//! so this adds no new point of contention), which makes "count the end of a stream" and
//! "park because full" atomic with respect to each other: a token is never parked on a
//! connection with room, and never released twice.
//!
//! So a connection never carries more streams than the backend allows (h2 would otherwise
//! queue the excess inside the connection, behind streams that may be slow, while other
//! connections sit idle), and requests spread to new connections only when the existing ones
//! are full.
//!
//! **Spreading the load over open connections.** `acquire` starts at the slot the thread
//! took last, so on its own it puts nearly all of a thread's streams on one connection until
//! that one is full, even when others are open (a burst of first requests opens several).
//! Each HTTP/2 connection is driven by one task that encodes, writes and reads all its frames
//! in turn, so piling the streams onto one connection serialises work that several could
//! share: with 128 requests in flight on 4 open connections (limit 100 streams each) the
//! streams sat at about 90/40/0/0 and the end-to-end bench ran at 0.8× raw h2 with 32 per
//! connection. So a request that claims a stream on a connection already carrying 16 streams
//! or more also takes the next *available* connection, if there is one, and keeps whichever
//! of the two carries fewer streams, handing the other back at once (the same 128 then sit at
//! about 32 each). This never opens a connection and never waits; below 16 streams on the
//! first connection it looks at it costs nothing, so light loads stay on one connection and
//! surplus connections still reach the idle timeout.
//!
//! A stream counts from the moment it is opened until its [`ResponseFuture`] (or, once the
//! response head has arrived, its [`RecvStream`]) is dropped. The request body's
//! `h2::SendStream` does not count: a stream whose response was dropped while its request
//! body is still being sent no longer counts.
//!
//! **Measured effect.** `max_streams_per_connection(1)` turns the same code into "the token
//! is held for the whole request" (one stream per connection, the slot parked until the
//! response has been read). `tests/h2_multiplexing.rs` keeps 64 requests in flight against a
//! loopback h2c backend in the same process (`cargo test --release --test h2_multiplexing --
//! --ignored --nocapture`; 2 cores shared with other builds, so figures vary by ±30 % between
//! rounds; ranges over 9 rounds):
//!
//! | backend | 4 connections, ≤ 100 streams each | 4 connections, 1 stream each | 64 connections, 1 stream each |
//! |---|---|---|---|
//! | answers at once | 26 000–50 000 req/s | 24 000–39 000 req/s | 20 000–26 000 req/s |
//! | answers after 1 ms | 8 300–21 000 req/s | 1 500–1 800 req/s | 15 000–18 000 req/s |
//!
//! With a backend that takes any time at all, holding the token for the request caps the
//! requests in flight at the number of connections (×5.5–12 fewer requests/s here), and it
//! takes 16 times the connections to catch up; with an instant backend both are bound by the
//! CPU that client and backend share. The pool layer itself (finding a connection, counting
//! the stream, the wrapped response) measured at 0.79–1.07× the requests/s of raw h2 on one
//! connection with 64 in flight (`pool_layer_overhead_against_raw_h2` in the same file; five
//! rounds, same noise).
//!
//! # Health
//! Each connection has a driver task that runs the h2 connection. When it ends (GOAWAY with
//! its last stream done, an I/O error, EOF), the task marks the connection dead and drains
//! *that* connection by its [`ConnId`](crate::ConnId): closed now if idle or full, or when
//! the request holding it releases it. Before that, a GOAWAY is already seen by the next
//! request that takes the connection (h2 refuses new streams on it), which closes it and goes
//! to another connection; streams already running on it finish. A failed connection affects
//! only the requests on it.
//!
//! A sweeper task closes connections that are idle (no stream for the idle timeout) or older
//! than the maximum lifetime (an over-age connection's running streams finish first); it
//! stops when the last clone of the [`H2Pool`] is dropped. It uses
//! [`Pool::evict_idle`], which holds each available connection for the moment it takes to
//! look at it; a request arriving in that moment may open a new connection instead. The
//! sweeper runs every quarter of the shorter of the two timeouts (10 ms to 5 s).
//!
//! # Errors and cancellation
//! Every failure is an [`H2Error`]; nothing panics on network conditions.
//! [`H2Error::is_retryable`] says when a failed request was certainly not processed by the
//! backend. Every path, including dropping a `send_request` future at any await point, leaves
//! no slot `in_use`: reservations free their slot on drop, acquire futures pass their wake-up
//! on, and `send_request` holds a token across no await point (a parked token belongs to its
//! connection, and the end of a stream releases it).
//!
//! # Lower-level control
//! [`H2Pool::lease`] hands out one connection for exclusive use ([`H2Lease`]): open several
//! streams on it, take it out of service with [`H2Lease::drain`], or read its
//! [`ConnId`](crate::ConnId). For full control, build on [`ConnectionPool`] directly.
//!
//! # TLS
//! Connections are h2c with prior knowledge (cleartext HTTP/2), as between a proxy and its
//! backends on a private network. TLS would slot in at the connect step.

mod builder;
mod conn;
mod driver;
mod error;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

pub use builder::{
    H2PoolBuilder, DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_CONNECTION_WINDOW, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS_PER_BACKEND, DEFAULT_MAX_LIFETIME,
    DEFAULT_MAX_STREAMS_PER_CONNECTION, DEFAULT_STREAM_WINDOW,
};
pub use conn::{RecvStream, ResponseFuture};
pub use error::H2Error;

use crate::{Checkout, ConnectionPool, Pool, Stats, Token};

use conn::{accepts_streams, Conn, Shared, StreamTicket};

/// A pool of HTTP/2 (h2c) connections to a fixed list of backends, addressed by index.
///
/// Cheap to clone (an `Arc` inside); `Send + Sync + 'static`. See the [module docs](self)
/// for how requests share connections.
#[derive(Clone)]
pub struct H2Pool {
    inner: Arc<Inner>,
}

/// The pool proper; the sweeper holds a `Weak` to it.
struct Inner {
    pools: ConnectionPool<Conn>,
    addrs: Box<[SocketAddr]>,
    max_streams: usize,
    connect_timeout: Duration,
    acquire_timeout: Duration,
    idle_timeout: Duration,
    max_lifetime: Duration,
    h2_builder: ::h2::client::Builder,
    runtime: tokio::runtime::Handle,
    /// Dropped with the pool, which stops the sweeper at once.
    _stop_sweeper: oneshot::Sender<()>,
}

impl H2Pool {
    /// Starts configuring a pool for `backends` (backend `i` is the `i`-th address).
    pub fn builder(backends: impl IntoIterator<Item = SocketAddr>) -> H2PoolBuilder {
        H2PoolBuilder::new(backends)
    }

    fn from_builder(b: H2PoolBuilder, runtime: tokio::runtime::Handle) -> Result<H2Pool, H2Error> {
        let pools = ConnectionPool::new(b.backends.len(), b.max_connections)?;
        let mut h2_builder = ::h2::client::Builder::new();
        h2_builder
            .initial_window_size(b.stream_window)
            .initial_connection_window_size(b.connection_window)
            // Until the backend's SETTINGS arrive, h2 would allow unlimited streams.
            .initial_max_send_streams(b.max_streams);
        let (stop_tx, stop_rx) = oneshot::channel();
        let inner = Arc::new(Inner {
            pools,
            addrs: b.backends.into_boxed_slice(),
            max_streams: b.max_streams,
            connect_timeout: b.connect_timeout,
            acquire_timeout: b.acquire_timeout,
            idle_timeout: b.idle_timeout,
            max_lifetime: b.max_lifetime,
            h2_builder,
            runtime: runtime.clone(),
            _stop_sweeper: stop_tx,
        });
        let every = driver::sweep_interval(b.idle_timeout, b.max_lifetime);
        runtime.spawn(driver::sweep(Arc::downgrade(&inner), stop_rx, every));
        Ok(H2Pool { inner })
    }

    /// Opens a stream to `backend` on a pooled connection and sends the request head.
    ///
    /// Reuses a connection with room for another stream; else reserves an empty slot and
    /// connects; else waits up to the acquire timeout for room. Returns the response future
    /// and the request body stream: with `end_of_stream = true` the request has no body (drop
    /// the `SendStream`); otherwise send the body and trailers on it (h2 buffers data sent
    /// beyond the flow-control window; use `reserve_capacity`/`poll_capacity` to stream large
    /// bodies without buffering them).
    ///
    /// The stream counts against its connection until the [`ResponseFuture`], or the
    /// [`RecvStream`] it resolves to, is dropped. Set the request's URI to an absolute one
    /// (`http://host/path`): h2 sends its scheme and authority as pseudo-headers.
    ///
    /// Must be polled within the tokio runtime the pool was built in. Dropping the future at
    /// any point leaves no slot in use.
    ///
    /// # Errors
    /// [`H2Error::UnknownBackend`]; [`H2Error::Connect`], [`H2Error::ConnectTimeout`],
    /// [`H2Error::Handshake`] when a new connection was needed and could not be opened;
    /// [`H2Error::AcquireTimeout`]; [`H2Error::ConnectionLost`] if the connection failed as
    /// the stream was being opened (the request was not sent); [`H2Error::Protocol`] if h2
    /// rejected the request (for example a connection-specific header).
    pub async fn send_request(
        &self,
        backend: usize,
        request: http::Request<()>,
        end_of_stream: bool,
    ) -> Result<(ResponseFuture, ::h2::SendStream<Bytes>), H2Error> {
        let inner = &*self.inner;
        let pool = inner.pools.backend(backend)?;
        let (token, shared) = inner.checkout(backend, pool).await?;
        inner.open(pool, token, shared, request, end_of_stream)
    }

    /// Sends a whole request and collects the whole response body.
    ///
    /// An empty body sends the request head with END_STREAM. Trailers of the response are
    /// ignored. For large bodies, prefer [`send_request`](H2Pool::send_request) and stream.
    ///
    /// # Errors
    /// As [`send_request`](H2Pool::send_request), plus [`H2Error::ConnectionLost`] if the
    /// connection died before the response was complete and [`H2Error::Protocol`] if the
    /// backend reset the stream.
    pub async fn request(
        &self,
        backend: usize,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, H2Error> {
        let (head, body) = request.into_parts();
        let end_of_stream = body.is_empty();
        let (response, mut send) = self
            .send_request(backend, http::Request::from_parts(head, ()), end_of_stream)
            .await?;
        let addr = response.backend_addr();
        let lost = |e| H2Error::from_h2(addr, e);
        if !end_of_stream {
            send.send_data(body, true).map_err(lost)?;
        }
        let (head, mut body) = response.await.map_err(lost)?.into_parts();
        let mut first: Option<Bytes> = None;
        let mut rest = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(lost)?;
            // Let the backend send more; an error here means the stream is gone, which the
            // next `data()` reports.
            let _ = body.flow_control().release_capacity(chunk.len());
            match &first {
                None => first = Some(chunk),
                Some(f) => {
                    if rest.is_empty() {
                        rest.extend_from_slice(f);
                    }
                    rest.extend_from_slice(&chunk);
                }
            }
        }
        let body = if rest.is_empty() {
            first.unwrap_or_default()
        } else {
            rest.freeze()
        };
        Ok(http::Response::from_parts(head, body))
    }

    /// Number of backends.
    pub fn backends(&self) -> usize {
        self.inner.addrs.len()
    }

    /// The address of `backend`, or `None` for an unknown index.
    pub fn backend_addr(&self, backend: usize) -> Option<SocketAddr> {
        self.inner.addrs.get(backend).copied()
    }

    /// Slot counts of `backend`: `available` connections have room for a stream, `in_use`
    /// ones are full or being opened or connected, `draining` ones close when released.
    ///
    /// # Errors
    /// [`H2Error::UnknownBackend`].
    pub fn stats(&self, backend: usize) -> Result<Stats, H2Error> {
        Ok(self.inner.pools.backend(backend)?.stats())
    }

    /// Slot counts summed over all backends.
    pub fn total_stats(&self) -> Stats {
        self.inner.pools.total_stats()
    }

    /// Drains every connection of `backend` (for example when it is taken out of service):
    /// idle ones close now, full or busy ones when released; their running streams finish.
    /// New requests open new connections. Returns how many connections it closed or marked.
    ///
    /// # Errors
    /// [`H2Error::UnknownBackend`].
    pub fn drain_backend(&self, backend: usize) -> Result<usize, H2Error> {
        Ok(self.inner.pools.backend(backend)?.drain_all())
    }

    /// Closes idle and over-age connections now, as the sweeper does periodically. Returns
    /// how many it closed.
    pub fn evict_idle(&self) -> usize {
        self.inner.evict(Instant::now())
    }
}

impl fmt::Debug for H2Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for (b, addr) in self.inner.addrs.iter().enumerate() {
            list.entry(&(addr, self.inner.pools.backend(b).ok().map(|p| p.stats())));
        }
        list.finish()
    }
}

impl Inner {
    /// A connection of `backend` with room for one more stream, counted in its `in_flight`;
    /// the token is held (not parked) and must be released by the caller without an await
    /// point in between.
    async fn checkout(
        &self,
        backend: usize,
        pool: &Arc<Pool<Conn>>,
    ) -> Result<(Token, Arc<Shared>), H2Error> {
        // Fast path, no timer. Each failed `claim` parks or closes the connection it looked
        // at, so the loop soon runs out of available connections (it goes on only while
        // streams ending elsewhere keep handing connections back, and then `claim` succeeds).
        while let Some(checkout) = pool.try_checkout() {
            match checkout {
                // No await point until the token is released or parked.
                Checkout::Acquired(lease) => {
                    if let Some((token, shared, before)) = self.claim(pool, lease.into_token()) {
                        return Ok(self.balance(pool, token, shared, before));
                    }
                }
                Checkout::Vacant(reservation) => {
                    return self.connect_and_claim(backend, pool, reservation).await;
                }
            }
        }
        // Every slot is in use (full connections, or ones being opened): wait for one.
        let timeout = self.acquire_timeout;
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        loop {
            let wait = pool.acquire_wait();
            let checkout = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, wait)
                    .await
                    .map_err(|_| H2Error::AcquireTimeout { backend, timeout })?,
                None => wait.await,
            };
            match checkout {
                Checkout::Acquired(lease) => {
                    if let Some((token, shared, _)) = self.claim(pool, lease.into_token()) {
                        return Ok((token, shared));
                    }
                }
                Checkout::Vacant(reservation) => {
                    return self.connect_and_claim(backend, pool, reservation).await;
                }
            }
        }
    }

    async fn connect_and_claim(
        &self,
        backend: usize,
        pool: &Arc<Pool<Conn>>,
        reservation: crate::Reservation<'_, Conn>,
    ) -> Result<(Token, Arc<Shared>), H2Error> {
        let addr = self.addrs[backend];
        let token = driver::connect(self, pool, addr, reservation).await?;
        // A new connection has room (its limit is at least 1). Were it already dead, sending
        // on it reports the real error.
        let Some(conn) = pool.get(&token) else {
            unreachable!("a token from `fill` is live until released")
        };
        let shared = Arc::clone(&conn.shared);
        {
            let mut s = shared.streams();
            s.limit = self.stream_limit(&conn.send);
            s.in_flight += 1;
            s.last_used = Instant::now();
        }
        Ok((token, shared))
    }

    /// Checks an acquired connection and claims a stream on it. On `None` the token was
    /// dealt with: closed (dead, over age, GOAWAY received) or parked (full).
    fn claim(&self, pool: &Pool<Conn>, mut token: Token) -> Option<(Token, Arc<Shared>, usize)> {
        let now = Instant::now();
        let Some(conn) = pool.get_mut(&mut token) else {
            unreachable!("a token from `acquire` is live until released")
        };
        let healthy = conn.shared.is_alive()
            && now.saturating_duration_since(conn.shared.created) < self.max_lifetime
            && accepts_streams(&mut conn.send);
        if !healthy {
            let _ = pool.release(token, false);
            return None;
        }
        let limit = self.stream_limit(&conn.send);
        let shared = Arc::clone(&conn.shared);
        let mut s = shared.streams();
        s.limit = limit;
        if s.in_flight >= limit {
            // Full (the backend lowered its limit, or a stream ended and then the limit
            // shrank): park until a stream ends. `in_flight >= 1`, so one will.
            if shared.is_alive() {
                s.parked = Some(token);
            } else {
                drop(s);
                let _ = pool.release(token, false);
            }
            return None;
        }
        let before = s.in_flight;
        s.in_flight += 1;
        s.last_used = now;
        drop(s);
        Some((token, shared, before))
    }

    /// Spreading the load: `token`'s connection carried `before` streams when this request
    /// claimed one on it. If that is [`BALANCE_FROM`] or more, takes one more *available*
    /// connection (never opens one, never waits) and keeps whichever of the two carried
    /// fewer streams, giving the other back with its claim undone. No await point.
    fn balance(
        &self,
        pool: &Pool<Conn>,
        token: Token,
        shared: Arc<Shared>,
        before: usize,
    ) -> (Token, Arc<Shared>) {
        if before < BALANCE_FROM {
            return (token, shared);
        }
        let Some(other) = pool.acquire() else {
            return (token, shared);
        };
        // A first look at the count alone: if the other connection is no less loaded, it goes
        // back untouched (unexamined: the next request to take it checks its health).
        let Some(other_conn) = pool.get(&other) else {
            unreachable!("a token from `acquire` is live until released")
        };
        if other_conn.shared.streams().in_flight >= before {
            let _ = pool.release(other, true);
            return (token, shared);
        }
        match self.claim(pool, other) {
            Some((other, other_shared, other_before)) if other_before < before => {
                unclaim(pool, token, &shared);
                (other, other_shared)
            }
            Some((other, other_shared, _)) => {
                unclaim(pool, other, &other_shared);
                (token, shared)
            }
            None => (token, shared),
        }
    }

    /// How many streams the pool opens on a connection at once: the backend's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` (known since the PING in `connect`), capped by
    /// `max_streams_per_connection`, and at least 1 (a backend that allows 0 streams would
    /// otherwise park its slot for good; h2 queues the stream instead).
    fn stream_limit(&self, send: &::h2::client::SendRequest<Bytes>) -> usize {
        send.current_max_send_streams().min(self.max_streams).max(1)
    }

    /// Opens the claimed stream and gives the token back: released with `keep`, or parked
    /// if this stream filled the connection. No await point.
    fn open(
        &self,
        pool: &Pool<Conn>,
        mut token: Token,
        shared: Arc<Shared>,
        request: http::Request<()>,
        end_of_stream: bool,
    ) -> Result<(ResponseFuture, ::h2::SendStream<Bytes>), H2Error> {
        let Some(conn) = pool.get_mut(&mut token) else {
            unreachable!("a claimed token is live until released")
        };
        let sent = send_on(conn, &shared, request, end_of_stream);
        give_back(pool, token, &shared, sent.is_ok() || conn_ok(&sent));
        sent.map_err(|(e, _)| e)
    }
}

/// A request that finds its connection already carrying this many streams (or more) looks at
/// one more available connection and opens its stream on whichever of the two carries fewer;
/// see "Spreading the load" in the module docs.
const BALANCE_FROM: usize = 16;

/// Undoes `claim` on a connection the request does not use after all: uncounts the stream
/// and gives the slot back (released; it had room before the claim, so it is not full).
fn unclaim(pool: &Pool<Conn>, token: Token, shared: &Shared) {
    shared.streams().in_flight -= 1;
    give_back(pool, token, shared, true);
}

/// Whether a failed send left the connection usable.
fn conn_ok<T>(sent: &Result<T, (H2Error, bool)>) -> bool {
    matches!(sent, Err((_, true)))
}

/// Sends the request head on a stream already counted in `in_flight`; on failure undoes the
/// count and says whether the connection is still usable. The caller holds the slot.
fn send_on(
    conn: &mut Conn,
    shared: &Arc<Shared>,
    request: http::Request<()>,
    end_of_stream: bool,
) -> Result<(ResponseFuture, ::h2::SendStream<Bytes>), (H2Error, bool)> {
    // A clone, so that h2 never records a pending-open stream on the pooled handle.
    let sent = conn.send.clone().send_request(request, end_of_stream);
    let addr = shared.addr;
    match sent {
        Ok((response, body)) => {
            let ticket = StreamTicket::new(Arc::clone(shared));
            Ok((ResponseFuture::new(response, ticket, addr), body))
        }
        Err(e) => {
            shared.streams().in_flight -= 1;
            if accepts_streams(&mut conn.send) {
                Err((H2Error::Protocol(e), true))
            } else {
                Err((H2Error::ConnectionLost { addr, source: e }, false))
            }
        }
    }
}

/// Gives a held slot back: parked if its connection is full (a stream's end releases it),
/// otherwise released, with `keep` unless the connection is dead or broken.
fn give_back(pool: &Pool<Conn>, token: Token, shared: &Shared, usable: bool) {
    let mut s = shared.streams();
    if usable && s.in_flight >= s.limit && shared.is_alive() {
        s.parked = Some(token);
    } else {
        drop(s);
        let _ = pool.release(token, usable && shared.is_alive());
    }
}

/// Exclusive use of one pooled connection, for callers that want to choose which streams
/// share it (for example to keep a client's requests on one backend connection, or to take
/// a misbehaving connection out of service). Made by [`H2Pool::lease`].
///
/// While leased, no other request opens a stream on the connection. Dropping the lease gives
/// the connection back (kept if it still works, closed otherwise); streams opened through it
/// run on independently.
///
/// ```
/// # use bytes::Bytes;
/// # use tokenpool::h2::H2Pool;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let addr = listener.local_addr()?;
/// # tokio::spawn(async move {
/// #     while let Ok((tcp, _)) = listener.accept().await {
/// #         tokio::spawn(async move {
/// #             let mut conn = h2::server::handshake(tcp).await?;
/// #             while let Some((_req, mut respond)) = conn.accept().await.transpose()? {
/// #                 respond.send_response(http::Response::new(()), true)?;
/// #             }
/// #             Ok::<_, h2::Error>(())
/// #         });
/// #     }
/// # });
/// let pool = H2Pool::builder([addr]).build()?;
/// let mut lease = pool.lease(0).await?;
/// let id = lease.conn_id();
/// // Two streams on the same connection.
/// let (a, _) = lease.send_request(http::Request::get("http://b/a").body(())?, true)?;
/// let (b, _) = lease.send_request(http::Request::get("http://b/b").body(())?, true)?;
/// drop(lease); // back to the pool
/// assert_eq!(a.await?.status(), 200);
/// assert_eq!(b.await?.status(), 200);
/// assert_eq!(pool.lease(0).await?.conn_id(), id, "the same connection again");
/// # Ok(()) }
/// ```
#[must_use = "a lease holds its connection until dropped"]
pub struct H2Lease {
    pool: H2Pool,
    backend: usize,
    /// Always `Some` until drop.
    token: Option<Token>,
    shared: Arc<Shared>,
    /// False once the connection failed under us: closed at drop.
    usable: bool,
}

impl H2Pool {
    /// Leases a connection of `backend` with room for at least one more stream, found as
    /// [`send_request`](H2Pool::send_request) finds one (reuse, else connect, else wait).
    ///
    /// # Errors
    /// As [`send_request`](H2Pool::send_request) before a stream is opened:
    /// [`H2Error::UnknownBackend`], [`H2Error::Connect`], [`H2Error::ConnectTimeout`],
    /// [`H2Error::Handshake`], [`H2Error::AcquireTimeout`].
    pub async fn lease(&self, backend: usize) -> Result<H2Lease, H2Error> {
        let inner = &*self.inner;
        let pool = inner.pools.backend(backend)?;
        let (token, shared) = inner.checkout(backend, pool).await?;
        // `checkout` counted a stream for us; the lease opens its streams itself.
        shared.streams().in_flight -= 1;
        Ok(H2Lease {
            pool: self.clone(),
            backend,
            token: Some(token),
            shared,
            usable: true,
        })
    }
}

impl H2Lease {
    /// Opens a stream on the leased connection; see [`H2Pool::send_request`].
    ///
    /// # Errors
    /// [`H2Error::ConnectionFull`] when the connection already carries as many streams as it
    /// may (wait for one to end, or drop the lease and use another connection);
    /// [`H2Error::ConnectionLost`] if the connection has failed or received GOAWAY (the
    /// request was not sent; the connection is closed when the lease is dropped);
    /// [`H2Error::Protocol`] if h2 rejected the request.
    pub fn send_request(
        &mut self,
        request: http::Request<()>,
        end_of_stream: bool,
    ) -> Result<(ResponseFuture, ::h2::SendStream<Bytes>), H2Error> {
        let pool = self.pool.inner.pools.backend(self.backend)?;
        let token = self.token.as_mut().expect(LEASED);
        let Some(conn) = pool.get_mut(token) else {
            unreachable!("a leased token is live until the lease is dropped")
        };
        {
            let mut s = self.shared.streams();
            if s.in_flight >= s.limit {
                return Err(H2Error::ConnectionFull {
                    addr: self.shared.addr,
                    limit: s.limit,
                });
            }
            s.in_flight += 1;
            s.last_used = Instant::now();
        }
        let sent = send_on(conn, &self.shared, request, end_of_stream);
        if let Err((_, false)) = &sent {
            self.usable = false;
        }
        sent.map_err(|(e, _)| e)
    }

    /// How many more streams the connection may carry now.
    pub fn streams_available(&self) -> usize {
        let s = self.shared.streams();
        s.limit.saturating_sub(s.in_flight)
    }

    /// The leased connection's id (stable for its whole life; see [`ConnId`](crate::ConnId)).
    pub fn conn_id(&self) -> crate::ConnId {
        self.token.as_ref().expect(LEASED).conn_id()
    }

    /// The backend index.
    pub fn backend(&self) -> usize {
        self.backend
    }

    /// The backend's address.
    pub fn backend_addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Takes the connection out of the pool: no new stream goes to it; its running streams
    /// finish, then it closes.
    pub fn drain(mut self) {
        self.usable = false;
    }
}

/// The token is taken only in `drop`.
const LEASED: &str = "a lease holds its token until dropped";

impl Drop for H2Lease {
    fn drop(&mut self) {
        if let (Some(token), Ok(pool)) = (
            self.token.take(),
            self.pool.inner.pools.backend(self.backend),
        ) {
            give_back(pool, token, &self.shared, self.usable);
        }
    }
}

impl fmt::Debug for H2Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2Lease")
            .field("backend", &self.backend)
            .field("addr", &self.shared.addr)
            .field("token", &self.token)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_and_its_futures_can_move_between_tasks() {
        fn send_sync_static<T: Send + Sync + 'static>() {}
        fn send<T: Send>(_: &T) {}
        send_sync_static::<H2Pool>();
        send_sync_static::<H2Error>();
        send_sync_static::<ResponseFuture>();
        send_sync_static::<RecvStream>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let pool = rt.block_on(async {
            H2Pool::builder(["127.0.0.1:1".parse().unwrap()])
                .build()
                .unwrap()
        });
        send(&pool.send_request(0, http::Request::new(()), true));
        send(&pool.request(0, http::Request::new(Bytes::new())));
    }

    #[test]
    fn sweep_interval_is_a_quarter_of_the_shorter_timeout_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(driver::sweep_interval(s(8), s(60)), s(2));
        assert_eq!(driver::sweep_interval(s(90), s(1800)), s(5));
        assert_eq!(
            driver::sweep_interval(Duration::from_millis(1), s(1)),
            Duration::from_millis(10)
        );
    }
}
