//! The HTTP/2 layer: [`H2Pool`], a pool of real h2c connections to a list of backends.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Empty};
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
//! // Any `http_body::Body` in (streamed, with flow control), a streaming `Body` out.
//! let request = http::Request::get("/hello").body(Empty::<Bytes>::new())?;
//! let response = pool.send(0, request).await?;
//! assert_eq!(response.into_body().collect().await?.to_bytes(), "hello");
//!
//! // Whole body in, whole body out:
//! let request = http::Request::get("http://backend/hello").body(Bytes::new())?;
//! let response = pool.request(0, request).await?;
//! assert_eq!(response.body(), "hello");
//!
//! // The low-level path: h2's own streams, flow control left to the caller.
//! let (response, _request_body) =
//!     pool.send_request(0, http::Request::get("http://backend/").body(())?, true).await?;
//! let mut body = response.await?.into_body();
//! let chunk = body.data().await.expect("one chunk")?;
//! // Without this, a body larger than the stream window stalls.
//! let _ = body.flow_control().release_capacity(chunk.len());
//! assert_eq!(chunk, "hello");
//! drop(body); // the stream no longer counts against its connection
//!
//! let stats = pool.stats(0)?;
//! assert_eq!((stats.available, stats.in_use), (1, 0)); // one connection served all three
//! # Ok(()) }
//! ```
//!
//! # Sending requests
//! - [`H2Pool::send`] takes an `http::Request` with any [`http_body::Body`] and returns an
//!   `http::Response<`[`Body`]`>`. It makes an HTTP/1.1 request valid for HTTP/2 (removes
//!   connection-specific headers, gives an origin-form URI its authority; the docs of
//!   [`H2Pool::send`] list every change), streams the request body with flow control in a
//!   task of its own, and the [`Body`] gives flow-control capacity back as it is read. Every
//!   error, before or after the response head, is an [`H2Error`].
//! - [`H2Pool::dispatch`] sends to the backend a [`Backend`] or [`BackendKey`] request
//!   extension names, or else to the one the pool's picker chooses ([`Balance`]: round
//!   robin, least streams in flight, weighted; no lock; ejected backends skipped), and
//!   retries on another backend when that is safe (the error says nothing was processed,
//!   or the request is idempotent without a body, and its body could be replayed), within a
//!   retry budget; the response carries [`Attempts`]. The pool is a
//!   [`tower_service::Service`] with the same behaviour.
//! - [`H2Pool::request`] sends a whole [`Bytes`](bytes::Bytes) body and collects the whole
//!   response.
//! - The low-level path, for callers that drive h2 themselves: [`H2Pool::send_request`]
//!   sends the head as given and returns h2's request stream and a [`ResponseFuture`];
//!   flow control in both directions is then the caller's. [`H2Lease`] (below) opens
//!   several streams on one chosen connection.
//!
//! # How a request finds a connection
//! Each backend has one [`Pool`] of connection slots ([`ConnectionPool`] holds them all), one
//! slot per allowed connection. [`H2Pool::send_request`]:
//! 1. takes an available connection (`acquire`). If it is dead, past its lifetime, or has
//!    received GOAWAY, it is closed and the next one taken; if it is full, it is parked (see
//!    below) and the next one taken. Otherwise
//! 2. joins a connect already in progress to that backend, if that connect's expected
//!    streams are not all spoken for (**connect coalescing**, below), and looks again when
//!    it completes. Otherwise
//! 3. reserves an empty slot (`reserve`) and connects: TCP with `TCP_NODELAY`, the h2
//!    handshake, the connection's driver task, and one PING round trip so that the backend's
//!    SETTINGS (its stream limit) are known before the first stream; all bounded by the
//!    connect timeout. Reserving first means two requests never both open a connection for
//!    the last free slot: the second finds no empty slot and waits. A cancelled or failed
//!    connect drops its reservation, which empties the slot again and wakes a waiter.
//!    Otherwise
//! 4. waits ([`Pool::acquire_wait`], bounded by the acquire timeout) until a slot is
//!    released: a connection regains room for a stream, or a slot empties.
//!
//! The waits of steps 2 and 4 together are bounded by the acquire timeout, a connect by the
//! connect timeout.
//!
//! **Connect coalescing.** A connect in progress is expected to carry as many streams as the
//! backend allowed on its last connection (`SETTINGS_MAX_CONCURRENT_STREAMS` capped by
//! `max_streams_per_connection`); the request that connects and each request that joins it
//! take one of those. Only a request that finds them all taken opens another connection, and
//! at most [`max_connecting_per_backend`](H2PoolBuilder::max_connecting_per_backend) connects
//! run at once (beyond that, requests join the least subscribed one). So a cold burst of 64
//! requests to a backend allowing 100 streams opens one connection, not one per slot (RFC
//! 9113 §9.1). If the connect fails, every request that joined it fails at once with
//! [`H2Error::JoinedConnectFailed`] (retryable): a backend that refuses connections costs
//! one attempt per burst. If the connecting request is cancelled, its joiners carry on.
//!
//! **Runtime affinity.** One pool can serve several `current_thread` runtimes at once, one
//! per core (each with its own `SO_REUSEPORT` listener, say): the pool is `Send + Sync` and
//! lock-free. A connection is driven on the runtime that opened it when that runtime is a
//! `current_thread` one (otherwise on the runtime the pool was built on), and a request on
//! such a runtime first takes a connection driven there (step 0 above): the one its runtime
//! opened last to that backend, or, if it has none, it opens one in an empty slot (the
//! request waits for that connect). So its frames never cross threads: no wake-up of
//! another core per request. Only when its runtime's connection is busy or full, or no slot
//! is empty, does it go on with step 1, where any connection will do: a busy core overflows
//! onto the others' connections instead of waiting. A runtime that ends takes the
//! connections it drives with it; their slots are emptied at once. Give the pool at least
//! one slot per runtime: a runtime that finds none empty has no connection of its own.
//! Warm-up connections ([`min_connections_per_backend`](H2PoolBuilder::min_connections_per_backend))
//! are opened by the pool's sweeper, so they are at home on the runtime the pool was built
//! on. On a multi-thread runtime none of this applies (its workers run any task anyway).
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
//! response head has arrived, its [`RecvStream`]) is dropped; through [`H2Pool::send`],
//! until its [`Body`] has ended or is dropped. The request body's `h2::SendStream` (or
//! `send`'s upload task) does not count: a stream whose response has ended or was dropped
//! while its request body is still being sent no longer counts.
//!
//! **Measured effect.** With a backend that takes any time at all, holding the token for the
//! whole request (`max_streams_per_connection(1)`) caps the requests in flight at the number
//! of connections; the figures are in `docs/h2-multiplexing.md` in the repository.
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
//! **Keepalive.** Every 30 s (by default; [`keep_alive_interval`](H2PoolBuilder::keep_alive_interval))
//! a connection that carries streams (or any, with
//! [`keep_alive_while_idle`](H2PoolBuilder::keep_alive_while_idle)) is sent a PING; one not
//! acknowledged within [`keep_alive_timeout`](H2PoolBuilder::keep_alive_timeout) (20 s) means
//! the connection went dark (a NAT, firewall or load balancer dropped it without a FIN or
//! RST): it is closed and leaves the pool by its id as above, its streams fail with
//! [`H2Error::ConnectionLost`], and the next request opens a fresh one.
//!
//! **Backend ejection.** Consecutive failed connects (3 by default,
//! [`eject_after_connect_failures`](H2PoolBuilder::eject_after_connect_failures)) eject the
//! backend for a backoff that doubles with each further failure (1 s to 30 s by default,
//! jittered ±25 %): meanwhile a request that needs a new connection to it fails at once with
//! [`H2Error::BackendEjected`] (retryable, and it says until when) instead of paying for a
//! connect, and connections already open keep serving. When the backoff runs out one
//! connect goes through as a probe (other requests join it); its success restores the
//! backend. [`H2Pool::health`] shows the state. Health is passive: it is learnt from the
//! connects requests make anyway.
//!
//! A sweeper task closes connections that are idle (no stream for the idle timeout) or older
//! than the maximum lifetime (an over-age connection's running streams finish first); it
//! stops when the last clone of the [`H2Pool`] is dropped. It uses
//! [`Pool::evict_idle`], which holds each available connection for the moment it takes to
//! look at it; a request arriving in that moment may open a new connection instead. The
//! sweeper runs every quarter of the shorter of the two timeouts (10 ms to 5 s).
//!
//! # Backends at runtime and figures
//! [`H2Pool::add_backend`], [`H2Pool::remove_backend`] and [`H2Pool::replace_backend`]
//! change the backends by key while requests run, without touching the other backends'
//! connections: requests read an immutable table of backends (one atomic load), each entry
//! owning its slots, so a request that found a backend just removed never lands on another.
//! [`H2Pool::metrics`] gives each backend's [`BackendMetrics`] (waiters, streams in flight,
//! connects, GOAWAYs, evictions by cause, retries, ejections) without a lock; the `metrics`
//! feature publishes them through the `metrics` facade, and `tracing` events mark connects,
//! GOAWAYs, evictions, ejections, retries and long waits (`info` stays quiet in steady
//! state).
//!
//! # Shutdown
//! [`H2Pool::shutdown`] closes the pool to new requests ([`H2Error::Shutdown`]), drains
//! every connection (idle ones close at once with GOAWAY, busy ones when their streams
//! finish), stops the sweeper, and at its deadline closes what is left with its streams;
//! it returns a [`ShutdownReport`] once every connection is closed. Dropping every handle
//! without it still releases everything.
//!
//! # Errors and cancellation
//! Every failure is an [`H2Error`]; nothing panics on network conditions.
//! [`H2Error::is_retryable`] says when a failed request was certainly not processed by the
//! backend. Every path, including dropping a `send` or `send_request` future at any await
//! point, leaves no slot `in_use`: reservations free their slot on drop, acquire futures
//! pass their wake-up on, and a claimed stream is held across no await point (a parked token
//! belongs to its connection, and the end of a stream releases it). Dropping a `send` future
//! or its [`Body`] before the response has ended also resets the stream and stops its
//! upload.
//!
//! # Time limits and each caller's share
//! [`H2PoolBuilder::request_timeout`] (the whole exchange, response body included) and
//! [`H2PoolBuilder::response_header_timeout`] (a backend that accepted the stream and never
//! answers), or a request's [`Timeouts`] extension, bound [`H2Pool::send`] and the
//! [`Service`](tower_service::Service). When one runs out the stream is reset with
//! `RST_STREAM(CANCEL)`, the upload stops, the stream stops counting against its connection,
//! and the error ([`H2Error::RequestTimeout`], [`H2Error::ResponseHeaderTimeout`]) says
//! whether a retry is safe. Neither is set by default.
//!
//! The pool does not know who its callers are: streams go to requests in the order they find
//! room. A proxy that must keep one client from taking every stream bounds each client's
//! share itself; [`H2Pool::streams_in_flight`] (one atomic load) and the `waiters` of
//! [`H2Pool::stats`] are the figures for it, and a request that finds no room waits at most
//! the acquire timeout, never silently for ever.
//!
//! # Lower-level control
//! [`H2Pool::lease`] hands out one connection for exclusive use ([`H2Lease`]): open several
//! streams on it, take it out of service with [`H2Lease::drain`], or read its
//! [`ConnId`](crate::ConnId). For full control, build on [`ConnectionPool`] directly.
//!
//! # Backends: addresses, transports and TLS
//! Backends are given as users write them ([`Target`]): `http://host:port` and socket
//! addresses (h2c with prior knowledge, cleartext HTTP/2 as between a proxy and its backends
//! on a private network), `https://host:port` (HTTP/2 over TLS) and `unix:/path` (h2c over a
//! Unix socket). Host names are resolved at each connect, so a DNS change reaches the next
//! new connection.
//!
//! Opening a connection has three layers. The byte stream comes from a [`Connect`]
//! implementation: [`DefaultConnector`] (TCP with `TCP_NODELAY`, Unix sockets) unless
//! [`H2PoolBuilder::connector`] gives another. For `https://` backends the pool then runs TLS
//! (feature `rustls`, on by default; rustls with the `ring` provider): ALPN `h2` offered and
//! required ([`H2Error::AlpnNotH2`] otherwise), SNI from the host (or
//! `TlsConfig::server_name`), verification against the platform's roots or a CA bundle,
//! client certificates for mutual TLS, or a whole `rustls::ClientConfig` of the caller's
//! (`TlsConfig`). Last come the HTTP/2 handshake, the connection's driver task and a PING
//! round trip. All of it runs within the connect timeout, and a failure at any layer frees
//! the slot. A rejected certificate is an [`H2Error::Tls`] whose [`TlsFailure`] says why.
//!
//! ```no_run
//! # #[cfg(feature = "rustls")]
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tokenpool::h2::H2Error> {
//! use tokenpool::h2::{H2Pool, TlsConfig};
//!
//! let pool = H2Pool::builder(["https://127.0.0.1:9443", "unix:/run/app.sock"])
//!     .tls(TlsConfig::new().ca_file("ca.pem")?)
//!     .build()?;
//! # Ok(()) }
//! # #[cfg(not(feature = "rustls"))] fn main() {}
//! ```
//!
//! [`Pool`]: crate::Pool
//! [`ConnectionPool`]: crate::ConnectionPool
//! [`Pool::acquire_wait`]: crate::Pool::acquire_wait
//! [`Pool::evict_idle`]: crate::Pool::evict_idle

mod admission;
mod affinity;
mod backends;
mod batch;
mod body;
mod builder;
mod coalesce;
mod conn;
mod connect;
mod counters;
mod dispatch;
mod error;
mod health;
mod keepalive;
mod lease;
mod normalize;
mod picker;
mod pool;
mod send;
mod service;
mod shutdown;
mod sweep;
mod target;
mod timeouts;
#[cfg(feature = "rustls")]
mod tls;
mod transport;

pub use body::Body;
pub use builder::{
    H2PoolBuilder, DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_CONNECTION_WINDOW, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTING_PER_BACKEND, DEFAULT_MAX_CONNECTIONS_PER_BACKEND,
    DEFAULT_MAX_LIFETIME, DEFAULT_MAX_STREAMS_PER_CONNECTION, DEFAULT_STREAM_WINDOW,
};
pub use conn::{RecvStream, ResponseFuture};
pub use counters::BackendMetrics;
pub use dispatch::{Attempts, DEFAULT_MAX_ATTEMPTS, DEFAULT_RETRY_BUFFER};
pub use error::{H2Error, TlsFailure};
pub use health::{
    BackendHealth, DEFAULT_EJECTION_BACKOFF, DEFAULT_EJECT_AFTER_CONNECT_FAILURES,
    DEFAULT_MAX_EJECTION_BACKOFF,
};
pub use keepalive::{DEFAULT_KEEP_ALIVE_INTERVAL, DEFAULT_KEEP_ALIVE_TIMEOUT};
pub use lease::H2Lease;
pub use picker::Balance;
pub use pool::H2Pool;
pub use service::{Backend, BackendKey, ServiceFuture};
pub use shutdown::ShutdownReport;
pub use target::{IntoTarget, Target};
pub use timeouts::Timeouts;
#[cfg(feature = "rustls")]
pub use tls::TlsConfig;
pub use transport::{Connect, DefaultConnector, DefaultStream};
