//! [`H2Pool`]: the pool's handle, its settings in use, and its public operations.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use super::admission::Admission;
use super::backends::{Backends, Entry, Template};
use super::connect::Connector;
use super::counters::{bump, millis_since};
use super::dispatch::{RetryBudget, RetryPolicy};
use super::keepalive::KeepAlive;
use super::picker::Picker;
use super::shutdown::Drivers;
use super::sweep::{self, Limits};
use super::{BackendHealth, BackendMetrics, ShutdownReport};
use super::{H2Error, H2Lease, H2PoolBuilder, IntoTarget, ResponseFuture, Target};
use crate::{Pool, Stats};

/// A pool of HTTP/2 connections (h2c, or h2 over TLS) to a fixed list of backends, addressed
/// by index.
///
/// Cheap to clone (an `Arc` inside); `Send + Sync + 'static`. See the [module docs](crate::h2)
/// for how requests share connections.
#[derive(Clone)]
pub struct H2Pool {
    inner: Arc<Inner>,
}

/// The pool proper, shared by every clone of [`H2Pool`].
struct Inner {
    /// The backends, each with its slots, counters and coalescer; changed at runtime by
    /// `add_backend` / `remove_backend` / `replace_backend`, read without a lock.
    backends: Backends,
    admission: Admission,
    limits: Limits,
    /// The runtime the pool was built in: its sweeper and warm-up connects run there, and
    /// drivers and upload tasks unless the caller is on a `current_thread` runtime.
    runtime: tokio::runtime::Handle,
    /// The pool's `request_timeout` and `response_header_timeout`.
    timeouts: super::Timeouts,
    /// Where the counters' millisecond clock starts.
    epoch: Instant,
    /// Chooses the backend of a request that does not pin one.
    picker: Picker,
    retry: RetryPolicy,
    retry_budget: RetryBudget,
    /// Dropped with the pool (or taken by `shutdown`), which stops the sweeper at once.
    stop_sweeper: Mutex<Option<oneshot::Sender<()>>>,
    /// The connection driver tasks, and whether the pool is shut down.
    drivers: Arc<Drivers>,
}

impl Inner {
    /// Publishes every backend's figures through the `metrics` facade (labelled by the
    /// backend's address as written).
    #[cfg(feature = "metrics")]
    fn publish_metrics(&self) {
        let now = Instant::now();
        for (_, entry) in self.backends.load().iter() {
            let m = entry.counters.snapshot(entry.pool.stats(), now, self.epoch);
            super::counters::publish(&entry.key, &m);
        }
    }

    /// Warm-up: opens connections (in the background) to every backend that has fewer than
    /// `min_connections` open or opening, unless it is ejected or the pool is shut down.
    /// Called by the sweeper at start, after each sweep, and when a connection ends.
    fn warm_up(self: &Arc<Self>) {
        let min = self.limits.min_connections;
        if min == 0 || self.drivers.is_closed() {
            return;
        }
        for (_, entry) in self.backends.load().iter() {
            let stats = entry.pool.stats();
            // `in_use` counts connects in progress (reserved slots) too.
            for _ in (stats.available + stats.in_use)..min {
                // Reserved here, so that the next call counts it and opens no more.
                let Some(reservation) = Pool::reserve_owned(&entry.pool) else {
                    break;
                };
                let (inner, entry) = (Arc::clone(self), Arc::clone(entry));
                self.runtime.spawn(async move {
                    inner.admission.warm(&entry, reservation).await;
                });
            }
        }
    }
}

/// What [`H2Pool::open_now`] did with a request.
pub(super) enum Opening {
    /// Opened: the response to come, and the stream to send the body on.
    Opened((ResponseFuture, ::h2::SendStream<Bytes>)),
    /// No connection has room now: the request, for [`H2Pool::open_later`].
    Later(http::Request<()>),
}

impl H2Pool {
    /// Starts configuring a pool for `backends` (backend `i` is the `i`-th address): socket
    /// addresses, [`Target`]s, or strings in the forms [`Target`] lists (`http://host:port`,
    /// `https://host:port`, `unix:/path`). A string that does not parse makes
    /// [`build`](H2PoolBuilder::build) fail with [`H2Error::InvalidConfig`] naming it.
    ///
    /// ```
    /// # use tokenpool::h2::H2Pool;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tokenpool::h2::H2Error> {
    /// let a: std::net::SocketAddr = "127.0.0.1:9001".parse().unwrap();
    /// let pool = H2Pool::builder([a]).build()?;
    /// let pool = H2Pool::builder(["http://localhost:9001", "unix:/run/b.sock"]).build()?;
    /// assert_eq!(pool.backend_addr(1).map(|t| t.to_string()), Some("unix:/run/b.sock".into()));
    /// assert!(H2Pool::builder(["http://bad host"]).build().is_err());
    /// # Ok(()) }
    /// ```
    pub fn builder<T: IntoTarget>(backends: impl IntoIterator<Item = T>) -> H2PoolBuilder {
        H2PoolBuilder::new(backends)
    }

    pub(super) fn from_builder(
        b: H2PoolBuilder,
        runtime: tokio::runtime::Handle,
    ) -> Result<H2Pool, H2Error> {
        let backends = b.backends.len();
        let picker = Picker::new(&b.balance, backends).map_err(H2Error::InvalidConfig)?;
        if backends > crate::MAX_BACKENDS {
            return Err(H2Error::InvalidConfig(format!(
                "{backends} backends: at most {} at once",
                crate::MAX_BACKENDS
            )));
        }
        #[cfg(feature = "rustls")]
        let tls = b.tls_step()?;
        let mut h2_builder = ::h2::client::Builder::new();
        h2_builder
            .initial_window_size(b.stream_window)
            .initial_connection_window_size(b.connection_window)
            // Until the backend's SETTINGS arrive, h2 would allow unlimited streams.
            .initial_max_send_streams(b.max_streams);
        let limits = Limits {
            idle_timeout: b.idle_timeout,
            max_lifetime: b.max_lifetime,
            min_connections: b.min_connections,
        };
        let epoch = Instant::now();
        let weights = match &b.balance {
            super::Balance::Weighted(w) => w.clone(),
            _ => vec![1; backends],
        };
        let initial = b
            .backends
            .iter()
            .zip(weights)
            .map(|(t, w)| (t.to_string(), t.clone(), w))
            .collect();
        let table = Backends::new(
            initial,
            Template {
                slots: b.max_connections,
                max_streams: b.max_streams,
                max_connecting: b.max_connecting,
                ejection: b.ejection,
                epoch,
            },
        )?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let drivers = Arc::new(Drivers::default());
        let inner = Arc::new(Inner {
            backends: table,
            admission: Admission {
                max_streams: b.max_streams,
                max_lifetime: b.max_lifetime,
                acquire_timeout: b.acquire_timeout,
                connector: Connector {
                    transport: b.transport,
                    #[cfg(feature = "rustls")]
                    tls,
                    h2_builder,
                    connect_timeout: b.connect_timeout,
                    max_streams: b.max_streams,
                    runtime: runtime.clone(),
                    drivers: Arc::clone(&drivers),
                    keep_alive: b.keep_alive_interval.map(|interval| KeepAlive {
                        interval,
                        timeout: b.keep_alive_timeout,
                        while_idle: b.keep_alive_while_idle,
                    }),
                },
            },
            limits,
            timeouts: b.timeouts,
            epoch,
            runtime,
            picker,
            retry: b.retry,
            retry_budget: RetryBudget::default(),
            stop_sweeper: Mutex::new(Some(stop_tx)),
            drivers,
        });
        let weak = Arc::downgrade(&inner);
        let refill = move || {
            if let Some(inner) = weak.upgrade() {
                inner.warm_up();
                #[cfg(feature = "metrics")]
                inner.publish_metrics();
            }
        };
        let weak = Arc::downgrade(&inner);
        let pools = move || {
            let inner = weak.upgrade()?;
            let table = inner.backends.load();
            Some(table.iter().map(|(_, e)| Arc::clone(&e.pool)).collect())
        };
        let drivers = Arc::clone(&inner.drivers);
        inner
            .runtime
            .spawn(sweep::sweep(pools, limits, stop_rx, drivers, refill));
        Ok(H2Pool { inner })
    }

    /// [`H2Error::Shutdown`] once [`shutdown`](H2Pool::shutdown) has begun.
    fn check_open(&self) -> Result<(), H2Error> {
        if self.inner.drivers.is_closed() {
            return Err(H2Error::Shutdown);
        }
        Ok(())
    }

    /// Whether [`shutdown`](H2Pool::shutdown) has begun (new requests fail with
    /// [`H2Error::Shutdown`]).
    pub fn is_shut_down(&self) -> bool {
        self.inner.drivers.is_closed()
    }

    /// Shuts the pool down gracefully, and returns once every connection is closed:
    /// 1. new requests (and requests still waiting for a connection) fail with
    ///    [`H2Error::Shutdown`]; no connection is opened any more;
    /// 2. every connection is drained: idle ones close at once (h2 ends a connection with
    ///    GOAWAY once it has no stream left), busy ones once their running streams finish;
    ///    the sweeper stops;
    /// 3. at `deadline`, connections still carrying streams are closed with them (the
    ///    socket closes; those requests fail with [`H2Error::ConnectionLost`]): h2's client
    ///    cannot send GOAWAY while streams are open.
    ///
    /// Returns how many connections were open and how many of them were cut at the
    /// deadline. Calling it again (or from a clone) finds nothing left and returns at once.
    /// Dropping every handle without calling it still releases everything: idle
    /// connections close, busy ones when their streams end.
    ///
    /// # Examples
    /// ```
    /// # use std::time::{Duration, Instant};
    /// # use tokenpool::h2::{H2Error, H2Pool};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = H2Pool::builder(["127.0.0.1:9"]).build()?;
    /// let report = pool.shutdown(Instant::now() + Duration::from_secs(5)).await;
    /// assert_eq!(report.cut_at_deadline, 0);
    /// let request = http::Request::get("http://backend/").body(bytes::Bytes::new())?;
    /// assert!(matches!(pool.request(0, request).await, Err(H2Error::Shutdown)));
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(&self, deadline: Instant) -> ShutdownReport {
        let drivers = &self.inner.drivers;
        drivers.close();
        // Stop the sweeper: there is nothing left for it to do.
        drop(crate::sync::lock(&self.inner.stop_sweeper).take());
        let connections = drivers.running();
        for (_, entry) in self.inner.backends.load().iter() {
            entry.pool.drain_all();
        }
        // Requests waiting for a slot are woken by the drain (slots empty) and find the pool
        // closed; those joining a connect find out when it ends.
        let cut_at_deadline = drivers.wait_or_cut(deadline).await;
        ShutdownReport {
            connections,
            cut_at_deadline,
        }
    }

    /// The pool's default time limits for [`send`](H2Pool::send).
    pub(super) fn default_timeouts(&self) -> super::Timeouts {
        self.inner.timeouts
    }

    /// Runs `task` (a request's upload) where the request's connection is driven when it was
    /// opened from here: on the caller's runtime if it is a `current_thread` one, else on
    /// the pool's (see "Runtime affinity" in the module docs).
    pub(super) fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        super::affinity::driver_runtime(&self.inner.runtime).spawn(task);
    }

    /// The backend the pool's picker ([`Balance`](super::Balance)) chooses for a request that
    /// does not pin one: no lock, ejected backends skipped while another is not ejected;
    /// `None` when the pool has no backend (all removed).
    pub fn pick(&self) -> Option<usize> {
        let epoch = self.inner.epoch;
        let table = self.inner.backends.load();
        self.inner
            .picker
            .pick(&table, || millis_since(epoch, Instant::now()))
    }

    pub(super) fn retry_policy(&self) -> RetryPolicy {
        self.inner.retry
    }

    pub(super) fn retry_budget(&self) -> &RetryBudget {
        &self.inner.retry_budget
    }

    /// Backend `backend` of the current table (one atomic load), or
    /// [`H2Error::UnknownBackend`].
    pub(super) fn entry(&self, backend: usize) -> Result<Arc<Entry>, H2Error> {
        let table = self.inner.backends.load();
        table.get(backend).cloned().ok_or(H2Error::UnknownBackend {
            backend,
            backends: table.entries.len(),
        })
    }

    /// The backend added under `key`, if present now.
    pub fn backend_index(&self, key: &str) -> Option<usize> {
        self.inner.backends.load().index(key)
    }

    /// The low-level path: opens a stream to `backend` on a pooled connection and sends the
    /// request head as given; the request body and the response body's flow control are the
    /// caller's. Most callers want [`send`](H2Pool::send).
    ///
    /// Reuses a connection with room for another stream; else reserves an empty slot and
    /// connects; else waits up to the acquire timeout for room. Returns the response future
    /// and the request body stream: with `end_of_stream = true` the request has no body (drop
    /// the `SendStream`); otherwise send the body and trailers on it (h2 buffers data sent
    /// beyond the flow-control window; use `reserve_capacity`/`poll_capacity` to stream large
    /// bodies without buffering them).
    ///
    /// The stream counts against its connection until the [`ResponseFuture`], or the
    /// [`RecvStream`](super::RecvStream) it resolves to, is dropped. Set the request's URI to
    /// an absolute one (`http://host/path`): h2 sends its scheme and authority as
    /// pseudo-headers.
    ///
    /// Must be polled within a tokio runtime: the pool's, or another one that runs as long as
    /// its connections are used (see "Runtime affinity" in the module docs). Dropping the
    /// future at any point leaves no slot in use.
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
        let entry = self.entry(backend)?;
        self.open_on(&entry, request, end_of_stream).await
    }

    /// [`send_request`](H2Pool::send_request) on a backend already looked up (one table
    /// load per request, not one per layer).
    pub(super) async fn open_on(
        &self,
        entry: &Entry,
        request: http::Request<()>,
        end_of_stream: bool,
    ) -> Result<(ResponseFuture, ::h2::SendStream<Bytes>), H2Error> {
        match self.open_now(entry, request, end_of_stream)? {
            Opening::Opened(opened) => Ok(opened),
            Opening::Later(request) => {
                Box::pin(self.open_later(entry, request, end_of_stream)).await
            }
        }
    }

    /// [`open_on`](H2Pool::open_on)'s fast path, with no await point: the request is counted
    /// and opened on a connection available now, or handed back for
    /// [`open_later`](H2Pool::open_later) (a connect or a wait). A caller that awaits
    /// `open_later` boxed keeps the rare paths out of its own future.
    pub(super) fn open_now(
        &self,
        entry: &Entry,
        request: http::Request<()>,
        end_of_stream: bool,
    ) -> Result<Opening, H2Error> {
        bump(&entry.counters.requests);
        self.check_open()?;
        match self.inner.admission.checkout_now(entry)? {
            Some(claim) => claim.open(request, end_of_stream).map(Opening::Opened),
            None => Ok(Opening::Later(request)),
        }
    }

    /// The rest of [`open_on`](H2Pool::open_on) after [`open_now`](H2Pool::open_now) handed
    /// the request back: connect, or wait for room, within the acquire timeout.
    pub(super) async fn open_later(
        &self,
        entry: &Entry,
        request: http::Request<()>,
        end_of_stream: bool,
    ) -> Result<(ResponseFuture, ::h2::SendStream<Bytes>), H2Error> {
        let claim = self.inner.admission.checkout(entry).await?;
        if let Err(e) = self.check_open() {
            // Shut down while it waited or connected: no stream, and the connection goes.
            claim.discard();
            return Err(e);
        }
        claim.open(request, end_of_stream)
    }

    /// Sends a whole request and collects the whole response body.
    ///
    /// An empty body sends the request head with END_STREAM. Trailers of the response are
    /// ignored. For large bodies, prefer [`send_request`](H2Pool::send_request) and stream.
    ///
    /// # Errors
    /// As [`send_request`](H2Pool::send_request), plus [`H2Error::ConnectionLost`] if the
    /// connection died before the response was complete and [`H2Error::StreamReset`] if the
    /// backend reset the stream; both retryable as after [`send`](H2Pool::send) (an
    /// idempotent request without a body may be sent again).
    pub async fn request(
        &self,
        backend: usize,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, H2Error> {
        let (head, body) = request.into_parts();
        let end_of_stream = body.is_empty();
        let replay_safe = end_of_stream && head.method.is_idempotent();
        let (response, mut send) = self
            .send_request(backend, http::Request::from_parts(head, ()), end_of_stream)
            .await?;
        let addr = response.backend_addr().clone();
        let lost = |e| H2Error::from_h2_sent(addr.clone(), e, replay_safe);
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

    /// Leases a connection of `backend` with room for at least one more stream, found as
    /// [`send_request`](H2Pool::send_request) finds one (reuse, else connect, else wait).
    ///
    /// # Errors
    /// As [`send_request`](H2Pool::send_request) before a stream is opened:
    /// [`H2Error::UnknownBackend`], [`H2Error::Connect`], [`H2Error::ConnectTimeout`],
    /// [`H2Error::Handshake`], [`H2Error::AcquireTimeout`].
    pub async fn lease(&self, backend: usize) -> Result<H2Lease, H2Error> {
        let entry = self.entry(backend)?;
        let claim = self.inner.admission.checkout(&entry).await?;
        // The lease opens its streams itself: it keeps the slot, not the counted stream.
        let (token, shared) = claim.into_held();
        Ok(H2Lease::new(Arc::clone(&entry.pool), token, shared))
    }

    /// The number of backend indices: backends are `0..backends()`, except indices whose
    /// backend was removed (they answer [`H2Error::UnknownBackend`] until a new backend
    /// takes them).
    pub fn backends(&self) -> usize {
        self.inner.backends.load().entries.len()
    }

    /// Adds a backend at runtime under `key` (any name; [`backend_index`](H2Pool::backend_index)
    /// finds it, the [`BackendKey`](super::BackendKey) request extension routes to it) and
    /// returns its index: the lowest one free. No other backend's connections are touched;
    /// requests see it from their next look at the backends (no lock on their path). Under
    /// [`Balance::Weighted`](super::Balance::Weighted) it gets weight 1.
    ///
    /// # Errors
    /// [`H2Error::InvalidConfig`] if `target` does not parse, needs TLS the pool was built
    /// without, or `key` is taken, or the pool has [`MAX_BACKENDS`](crate::MAX_BACKENDS).
    pub fn add_backend(
        &self,
        key: impl Into<String>,
        target: impl super::IntoTarget,
    ) -> Result<usize, H2Error> {
        let target = self.usable_target(target)?;
        let index = self.inner.backends.add(key.into(), target, 1)?;
        tracing::info!(backend = index, "backend added");
        Ok(index)
    }

    /// Removes the backend added under `key` (for backends given to the builder, their
    /// address as written): no new request goes to it, its idle connections close now and
    /// its busy ones once their running streams finish; no other backend's connections are
    /// touched. Returns how many connections it closed or marked.
    ///
    /// # Errors
    /// [`H2Error::UnknownBackendKey`].
    pub fn remove_backend(&self, key: &str) -> Result<usize, H2Error> {
        let (index, entry) = self
            .inner
            .backends
            .remove(key)
            .ok_or_else(|| H2Error::UnknownBackendKey(key.to_string()))?;
        let drained = entry.pool.drain_all();
        tracing::info!(backend = index, drained, "backend removed");
        Ok(drained)
    }

    /// Points the backend added under `key` at a new address (a DNS or service-discovery
    /// change): new requests go to the new address at once, the old address's connections
    /// drain as in [`remove_backend`](H2Pool::remove_backend). Returns the backend's index
    /// (unchanged).
    ///
    /// # Errors
    /// [`H2Error::UnknownBackendKey`]; [`H2Error::InvalidConfig`] as for
    /// [`add_backend`](H2Pool::add_backend).
    pub fn replace_backend(
        &self,
        key: &str,
        target: impl super::IntoTarget,
    ) -> Result<usize, H2Error> {
        let target = self.usable_target(target)?;
        let (index, old) = self.inner.backends.replace(key, target)?;
        let drained = old.pool.drain_all();
        tracing::info!(backend = index, drained, "backend replaced");
        Ok(index)
    }

    /// `target` parsed, if this pool can connect to it (an `https://` one needs TLS).
    fn usable_target(&self, target: impl super::IntoTarget) -> Result<Target, H2Error> {
        let target = target
            .into_target()
            .map_err(|e| H2Error::InvalidConfig(e.to_string()))?;
        if target.is_tls() && !self.inner.admission.connector.has_tls() {
            return Err(H2Error::InvalidConfig(format!(
                "`{target}` needs TLS: build the pool with a TLS configuration \
                 (H2PoolBuilder::tls) or an https:// backend"
            )));
        }
        Ok(target)
    }

    /// The address of `backend`, or `None` for an unknown index.
    pub fn backend_addr(&self, backend: usize) -> Option<Target> {
        self.inner
            .backends
            .load()
            .get(backend)
            .map(|e| e.target.clone())
    }

    /// Slot counts of `backend`: `available` connections have room for a stream, `in_use`
    /// ones are full or being opened or connected, `draining` ones close when released;
    /// `waiters` requests wait for room.
    ///
    /// **Who gets the room.** The pool has no notion of callers: streams go to requests in
    /// the order they find room, and waiters are woken in turn. So one caller that sends
    /// enough slow requests can hold every stream of a backend, and then everyone else's
    /// requests wait, each for at most the acquire timeout (then
    /// [`H2Error::AcquireTimeout`], retryable), never silently for ever. A proxy bounds each
    /// client's share itself (a semaphore per client connection sized well below
    /// `backends × connections × streams`), using [`waiters`](crate::Stats::waiters) and
    /// [`streams_in_flight`](H2Pool::streams_in_flight) to watch the pressure, and bounds how
    /// long one request may hold a stream with
    /// [`request_timeout`](super::H2PoolBuilder::request_timeout).
    ///
    /// # Errors
    /// [`H2Error::UnknownBackend`].
    pub fn stats(&self, backend: usize) -> Result<Stats, H2Error> {
        Ok(self.entry(backend)?.pool.stats())
    }

    /// `backend`'s health: consecutive connect failures, whether (and until when) it is
    /// ejected, and its connects in progress (at most
    /// [`max_connecting_per_backend`](super::H2PoolBuilder::max_connecting_per_backend)).
    ///
    /// # Errors
    /// [`H2Error::UnknownBackend`].
    pub fn health(&self, backend: usize) -> Result<BackendHealth, H2Error> {
        Ok(self.entry(backend)?.coalescer.health())
    }

    /// Streams in flight to `backend` through the pool, on all its connections: opened and
    /// not yet ended (their response side alive), as counted against the connections'
    /// limits. Read without a lock (one atomic load); together with
    /// [`Stats::waiters`](crate::Stats::waiters) from [`stats`](H2Pool::stats) (requests
    /// waiting for room) it is what a proxy needs to bound each caller's share of a backend.
    ///
    /// # Errors
    /// [`H2Error::UnknownBackend`].
    pub fn streams_in_flight(&self, backend: usize) -> Result<usize, H2Error> {
        let entry = self.entry(backend)?;
        // Relaxed: a figure; see `counters`.
        Ok(entry.counters.streams_in_flight.load(Ordering::Relaxed))
    }

    /// `backend`'s figures now: slot states, waiters, streams in flight, connects in
    /// progress, whether it is ejected, and counters since the pool was built (requests,
    /// connects, connect failures, GOAWAYs, evictions by cause, retries, acquire timeouts,
    /// ejections). Read without a lock. With the `metrics` feature the same figures are
    /// published through the `metrics` facade at every sweep.
    ///
    /// # Errors
    /// [`H2Error::UnknownBackend`].
    pub fn metrics(&self, backend: usize) -> Result<BackendMetrics, H2Error> {
        let entry = self.entry(backend)?;
        Ok(entry
            .counters
            .snapshot(entry.pool.stats(), Instant::now(), self.inner.epoch))
    }

    /// Slot counts summed over all backends.
    pub fn total_stats(&self) -> Stats {
        let mut total = Stats::default();
        for (_, entry) in self.inner.backends.load().iter() {
            let s = entry.pool.stats();
            total.empty += s.empty;
            total.available += s.available;
            total.in_use += s.in_use;
            total.draining += s.draining;
            total.waiters += s.waiters;
        }
        total
    }

    /// Drains every connection of `backend` (for example when it is taken out of service):
    /// idle ones close now, full or busy ones when released; their running streams finish.
    /// New requests open new connections. Returns how many connections it closed or marked.
    ///
    /// # Errors
    /// [`H2Error::UnknownBackend`].
    pub fn drain_backend(&self, backend: usize) -> Result<usize, H2Error> {
        Ok(self.entry(backend)?.pool.drain_all())
    }

    /// Closes idle and over-age connections now, as the sweeper does periodically. Returns
    /// how many it closed.
    pub fn evict_idle(&self) -> usize {
        let table = self.inner.backends.load();
        sweep::evict(
            table.iter().map(|(_, e)| &e.pool),
            self.inner.limits,
            Instant::now(),
        )
    }
}

impl fmt::Debug for H2Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for (b, entry) in self.inner.backends.load().iter() {
            list.entry(&(b, &entry.target, entry.pool.stats()));
        }
        list.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::RecvStream;

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
        let pool = rt.block_on(async { H2Pool::builder(["127.0.0.1:1"]).build().unwrap() });
        send(&pool.send_request(0, http::Request::new(()), true));
        send(&pool.request(0, http::Request::new(Bytes::new())));
        send(&pool.lease(0));
    }
}
