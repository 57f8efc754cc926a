//! [`H2PoolBuilder`]: the pool's settings and their defaults.

use std::time::Duration;

use super::connect::Transport;
use super::health::{
    EjectionPolicy, DEFAULT_EJECTION_BACKOFF, DEFAULT_EJECT_AFTER_CONNECT_FAILURES,
    DEFAULT_MAX_EJECTION_BACKOFF,
};
use super::keepalive::{DEFAULT_KEEP_ALIVE_INTERVAL, DEFAULT_KEEP_ALIVE_TIMEOUT};
use super::{Connect, DefaultConnector, H2Error, H2Pool, IntoTarget, Target};

/// Default for [`H2PoolBuilder::max_connections_per_backend`].
pub const DEFAULT_MAX_CONNECTIONS_PER_BACKEND: usize = 8;
/// Default for [`H2PoolBuilder::max_streams_per_connection`] (RFC 9113 §6.5.2 recommends that
/// servers allow at least 100 concurrent streams).
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: usize = 100;
/// Default for [`H2PoolBuilder::max_connecting_per_backend`].
pub const DEFAULT_MAX_CONNECTING_PER_BACKEND: usize = 2;
/// Default for [`H2PoolBuilder::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default for [`H2PoolBuilder::acquire_timeout`].
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`H2PoolBuilder::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Default for [`H2PoolBuilder::max_lifetime`].
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Default for [`H2PoolBuilder::initial_stream_window_size`] (h2's own default, 64 KiB, caps
/// a single response at about 64 KiB per round trip).
pub const DEFAULT_STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// Default for [`H2PoolBuilder::initial_connection_window_size`].
pub const DEFAULT_CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// Settings for an [`H2Pool`]; made by [`H2Pool::builder`], finished by
/// [`build`](H2PoolBuilder::build).
///
/// ```
/// use std::time::Duration;
/// use tokenpool::h2::H2Pool;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tokenpool::h2::H2Error> {
/// let pool = H2Pool::builder(["http://127.0.0.1:9001"])
///     .max_connections_per_backend(4)
///     .connect_timeout(Duration::from_millis(500))
///     .acquire_timeout(Duration::from_secs(1))
///     .build()?; // inside a tokio runtime
/// assert_eq!(pool.backends(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct H2PoolBuilder {
    pub(super) backends: Vec<Target>,
    /// The first backend address that did not parse: `build` fails with it.
    invalid: Option<String>,
    pub(super) transport: Transport,
    #[cfg(feature = "rustls")]
    tls: Option<std::sync::Arc<super::TlsConfig>>,
    pub(super) max_connections: usize,
    pub(super) max_streams: usize,
    pub(super) connect_timeout: Duration,
    pub(super) acquire_timeout: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) max_lifetime: Duration,
    pub(super) max_connecting: usize,
    pub(super) min_connections: usize,
    pub(super) balance: super::Balance,
    pub(super) retry: super::dispatch::RetryPolicy,
    pub(super) ejection: EjectionPolicy,
    pub(super) keep_alive_interval: Option<Duration>,
    pub(super) keep_alive_timeout: Duration,
    pub(super) keep_alive_while_idle: bool,
    pub(super) stream_window: u32,
    pub(super) connection_window: u32,
    /// `request_timeout` and `response_header_timeout`; `None`: no limit.
    pub(super) timeouts: super::Timeouts,
}

impl H2PoolBuilder {
    pub(super) fn new<T: IntoTarget>(backends: impl IntoIterator<Item = T>) -> Self {
        let mut invalid = None;
        let backends = backends
            .into_iter()
            .filter_map(|b| match b.into_target() {
                Ok(t) => Some(t),
                Err(e) => {
                    let msg = match e {
                        H2Error::InvalidConfig(msg) => msg,
                        other => other.to_string(),
                    };
                    invalid.get_or_insert(msg);
                    None
                }
            })
            .collect();
        H2PoolBuilder {
            backends,
            invalid,
            transport: Transport::new(DefaultConnector),
            #[cfg(feature = "rustls")]
            tls: None,
            max_connections: DEFAULT_MAX_CONNECTIONS_PER_BACKEND,
            max_streams: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_lifetime: DEFAULT_MAX_LIFETIME,
            max_connecting: DEFAULT_MAX_CONNECTING_PER_BACKEND,
            min_connections: 0,
            balance: super::Balance::default(),
            retry: super::dispatch::RetryPolicy::default(),
            keep_alive_interval: Some(DEFAULT_KEEP_ALIVE_INTERVAL),
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
            keep_alive_while_idle: false,
            ejection: EjectionPolicy {
                after: DEFAULT_EJECT_AFTER_CONNECT_FAILURES,
                initial: DEFAULT_EJECTION_BACKOFF,
                max: DEFAULT_MAX_EJECTION_BACKOFF,
            },
            stream_window: DEFAULT_STREAM_WINDOW,
            connection_window: DEFAULT_CONNECTION_WINDOW,
            timeouts: super::Timeouts::default(),
        }
    }

    /// How many connections (pool slots) each backend may have at once. Default
    /// [`DEFAULT_MAX_CONNECTIONS_PER_BACKEND`] (8); at most [`MAX_SLOTS`](crate::MAX_SLOTS).
    pub fn max_connections_per_backend(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// How a request that does not pin a backend (with the [`Backend`](super::Backend)
    /// extension) gets one in [`H2Pool::dispatch`] and the pool's `Service`: round robin
    /// (default), least streams in flight (power of two random choices) or weighted; ejected
    /// backends are skipped. See [`Balance`](super::Balance).
    pub fn balance(mut self, balance: super::Balance) -> Self {
        self.balance = balance;
        self
    }

    /// The most attempts [`H2Pool::dispatch`] (and the `Service`) makes for one request,
    /// the first included; 1 turns retries off. Default
    /// [`DEFAULT_MAX_ATTEMPTS`](super::DEFAULT_MAX_ATTEMPTS) (3). A retry happens only when it
    /// is safe (see [`H2Pool::dispatch`]) and the retry budget allows it.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.retry.max_attempts = n;
        self
    }

    /// Request bodies whose size hint says they fit in this many bytes are read whole
    /// before the first attempt of [`H2Pool::dispatch`], so that a retry can send them
    /// again; larger ones stream, with one attempt. Default
    /// [`DEFAULT_RETRY_BUFFER`](super::DEFAULT_RETRY_BUFFER) (64 KiB); 0 retries only
    /// requests without a body.
    pub fn retry_buffer(mut self, bytes: usize) -> Self {
        self.retry.buffer = bytes;
        self
    }

    /// The retry budget (as Envoy's): a retry may start only while the retries in progress
    /// are fewer than `percent` % of the requests in progress through
    /// [`H2Pool::dispatch`], or fewer than `floor`. Default 20 % and 3: when a backend fails
    /// everything, retries add at most a fifth to the load.
    pub fn retry_budget(mut self, percent: u32, floor: usize) -> Self {
        self.retry.budget_percent = percent;
        self.retry.budget_floor = floor;
        self
    }

    /// Connections kept open to each backend (warm-up). Default 0.
    ///
    /// They are opened in the background when the pool is built, reopened when they die or
    /// age out (at once when a connection ends, or at the sweeper's next round), and not
    /// closed for being idle. They count against
    /// [`max_connections_per_backend`](Self::max_connections_per_backend). An ejected
    /// backend is not warmed until its backoff runs out; a failed warm-up connect counts
    /// towards ejection like any other.
    pub fn min_connections_per_backend(mut self, n: usize) -> Self {
        self.min_connections = n;
        self
    }

    /// How many connects to one backend may be in progress at once. Default
    /// [`DEFAULT_MAX_CONNECTING_PER_BACKEND`] (2).
    ///
    /// Connects are coalesced: a request that finds no connection with room waits for a
    /// connect already in progress, as long as that connect's expected streams (the
    /// backend's last `SETTINGS_MAX_CONCURRENT_STREAMS`, capped by
    /// [`max_streams_per_connection`](Self::max_streams_per_connection)) are not all spoken
    /// for; only then does it open another connection, up to this many at once. So a cold
    /// burst of 64 requests to a backend allowing 100 streams opens one connection, and 250
    /// open three. A request whose connect fails gets the error; the requests that waited
    /// for it get [`H2Error::JoinedConnectFailed`] at the same moment.
    pub fn max_connecting_per_backend(mut self, n: usize) -> Self {
        self.max_connecting = n;
        self
    }

    /// How often a connection is checked with an HTTP/2 PING; `None` turns keepalive off.
    /// Default `Some(`[`DEFAULT_KEEP_ALIVE_INTERVAL`]`)` (30 s).
    ///
    /// A connection whose PING is not acknowledged within
    /// [`keep_alive_timeout`](Self::keep_alive_timeout) is taken out of the pool and closed
    /// (a NAT, firewall or load-balancer failover can blackhole a connection without a FIN
    /// or RST; without keepalive it would take new streams until TCP gives up, minutes
    /// later). Its running streams fail with [`H2Error::ConnectionLost`]; the next request
    /// opens a fresh connection. Detection takes at most interval + timeout. Only
    /// connections carrying streams are checked unless
    /// [`keep_alive_while_idle`](Self::keep_alive_while_idle) is set. (hyper-util's names.)
    pub fn keep_alive_interval(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.keep_alive_interval = interval.into();
        self
    }

    /// How long to wait for a keepalive PING's acknowledgement. Default
    /// [`DEFAULT_KEEP_ALIVE_TIMEOUT`] (20 s).
    pub fn keep_alive_timeout(mut self, timeout: Duration) -> Self {
        self.keep_alive_timeout = timeout;
        self
    }

    /// Whether idle connections (no stream) are checked too. Default `false`: an idle
    /// connection that went dark is found by the first request's keepalive check instead
    /// (that request fails with [`H2Error::ConnectionLost`]; an idle timeout shorter than a
    /// NAT's usually closes such connections first).
    pub fn keep_alive_while_idle(mut self, while_idle: bool) -> Self {
        self.keep_alive_while_idle = while_idle;
        self
    }

    /// How many connects to a backend must fail in a row (TCP connect, TLS or HTTP/2
    /// handshake, or their timeout) to eject it; 0 never ejects. Default
    /// [`DEFAULT_EJECT_AFTER_CONNECT_FAILURES`] (3).
    ///
    /// While a backend is ejected, a request that would need a new connection to it fails
    /// at once with [`H2Error::BackendEjected`] (retryable: nothing was sent), instead of
    /// each paying for a connect that will most likely fail; connections already open keep
    /// serving. When the backoff (see [`ejection_backoff`](Self::ejection_backoff)) runs
    /// out, one connect is let through: if it succeeds the backend is restored, if it fails
    /// the backoff doubles. [`H2Pool::health`] shows the state.
    pub fn eject_after_connect_failures(mut self, n: u32) -> Self {
        self.ejection.after = n;
        self
    }

    /// The first ejection's backoff and its cap: each further failed connect doubles it, up
    /// to `max`; each is jittered by ±25 % so that backends ejected together do not come
    /// back together. Defaults [`DEFAULT_EJECTION_BACKOFF`] (1 s) and
    /// [`DEFAULT_MAX_EJECTION_BACKOFF`] (30 s).
    pub fn ejection_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.ejection.initial = initial;
        self.ejection.max = max;
        self
    }

    /// The most streams the pool opens on one connection at once; the effective limit is the
    /// smaller of this and the backend's `SETTINGS_MAX_CONCURRENT_STREAMS`. It also applies
    /// before the backend's SETTINGS frame has arrived. Default
    /// [`DEFAULT_MAX_STREAMS_PER_CONNECTION`] (100).
    pub fn max_streams_per_connection(mut self, n: usize) -> Self {
        self.max_streams = n;
        self
    }

    /// How long opening a connection may take: the connector (TCP connect, name
    /// resolution), the TLS handshake, the HTTP/2 handshake and its first PING round trip.
    /// Default [`DEFAULT_CONNECT_TIMEOUT`] (3 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// How long a request may wait for stream capacity when every connection of its backend
    /// is full (or being opened) and no slot is free for a new one. Zero means "do not
    /// wait". Connecting is bounded by [`connect_timeout`](H2PoolBuilder::connect_timeout),
    /// not by this. Default [`DEFAULT_ACQUIRE_TIMEOUT`] (5 s).
    pub fn acquire_timeout(mut self, d: Duration) -> Self {
        self.acquire_timeout = d;
        self
    }

    /// A connection that has carried no stream for this long is closed by the sweeper.
    /// Default [`DEFAULT_IDLE_TIMEOUT`] (90 s).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// A connection older than this takes no new streams: it is closed when next found idle in
    /// the pool (its running streams finish first). Default [`DEFAULT_MAX_LIFETIME`] (30 min).
    pub fn max_lifetime(mut self, d: Duration) -> Self {
        self.max_lifetime = d;
        self
    }

    /// HTTP/2 flow-control window for each stream (how much response body the backend may
    /// send ahead of the reader). Default [`DEFAULT_STREAM_WINDOW`] (2 MiB).
    pub fn initial_stream_window_size(mut self, bytes: u32) -> Self {
        self.stream_window = bytes;
        self
    }

    /// HTTP/2 flow-control window for each connection. Default
    /// [`DEFAULT_CONNECTION_WINDOW`] (5 MiB).
    pub fn initial_connection_window_size(mut self, bytes: u32) -> Self {
        self.connection_window = bytes;
        self
    }

    /// The limit on a whole exchange through [`send`](H2Pool::send) or the pool's
    /// [`Service`](tower_service::Service): finding a connection, sending the request, the
    /// response head **and the response body**. When it runs out the stream is reset with
    /// `RST_STREAM(CANCEL)`, the upload stops, and `send` (or, after the head, the
    /// [`Body`](super::Body)) fails with [`H2Error::RequestTimeout`]. A request's
    /// [`Timeouts`](super::Timeouts) extension overrides it. Default: none (the pool cannot
    /// know how long a backend's downloads or streams legitimately last; a proxy should set
    /// one). Not applied to [`send_request`](H2Pool::send_request),
    /// [`request`](H2Pool::request) or leases, whose streams the caller drives.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.timeouts.request = Some(d);
        self
    }

    /// The limit on the wait for the response head once the request head has been handed to
    /// a connection, for [`send`](H2Pool::send) and the pool's
    /// [`Service`](tower_service::Service): a backend that accepted the stream and never
    /// answers. When it runs out the stream is reset with `RST_STREAM(CANCEL)`, the upload
    /// stops, and `send` fails with [`H2Error::ResponseHeaderTimeout`] (not retryable). A
    /// request's [`Timeouts`](super::Timeouts) extension overrides it. Default: none.
    pub fn response_header_timeout(mut self, d: Duration) -> Self {
        self.timeouts.response_header = Some(d);
        self
    }

    /// What opens each backend's byte stream; default [`DefaultConnector`] (TCP with
    /// `TCP_NODELAY`, Unix sockets). The pool still runs TLS (for `https://` backends) and
    /// HTTP/2 on top of what it returns. See [`Connect`].
    pub fn connector(mut self, connector: impl Connect) -> Self {
        self.transport = Transport::new(connector);
        self
    }

    /// How to speak TLS to `https://` backends. Without it they are verified against the
    /// platform's trust store ([`TlsConfig::new`](super::TlsConfig::new)).
    #[cfg(feature = "rustls")]
    pub fn tls(mut self, tls: super::TlsConfig) -> Self {
        self.tls = Some(std::sync::Arc::new(tls));
        self
    }

    /// The TLS step, made once: `None` when no backend is `https://`.
    #[cfg(feature = "rustls")]
    pub(super) fn tls_step(&self) -> Result<Option<super::tls::Tls>, H2Error> {
        // Built when a backend needs it, or when asked for (backends added at runtime may).
        if !self.backends.iter().any(Target::is_tls) && self.tls.is_none() {
            return Ok(None);
        }
        match &self.tls {
            Some(tls) => tls.connector().map(Some),
            None => super::TlsConfig::new().connector().map(Some),
        }
    }

    /// Builds the pool. No connection is opened until the first request.
    ///
    /// Must be called from within a tokio runtime: the pool spawns a sweeper task (idle and
    /// over-age connections) on it, and later one driver task per connection, there or, for
    /// a connection opened from another `current_thread` runtime, on that one (see "Runtime
    /// affinity" in the [module docs](super)). The sweeper stops when the last clone of the
    /// pool is dropped.
    ///
    /// # Errors
    /// [`H2Error::NoRuntime`] outside a tokio runtime; [`H2Error::InvalidConfig`] for a
    /// backend address that does not parse (named in the message), an `https://` backend
    /// without the `rustls` feature, TLS settings that cannot be used (no platform roots),
    /// no backends, more than [`MAX_BACKENDS`](crate::MAX_BACKENDS), zero or more than
    /// [`MAX_SLOTS`](crate::MAX_SLOTS) connections per backend, a warm minimum above that,
    /// zero connects in progress or zero streams per connection, a zero connect, idle,
    /// lifetime, request, response-header or keepalive duration, an ejection backoff that is
    /// zero or whose cap is below it, or a flow-control window outside
    /// `1..=2^31-1`.
    pub fn build(self) -> Result<H2Pool, H2Error> {
        if let Some(invalid) = &self.invalid {
            return Err(H2Error::InvalidConfig(invalid.clone()));
        }
        #[cfg(not(feature = "rustls"))]
        if let Some(t) = self.backends.iter().find(|t| t.is_tls()) {
            return Err(H2Error::InvalidConfig(format!(
                "`{t}` needs TLS: build tokenpool with the `rustls` feature"
            )));
        }
        if self.backends.is_empty() {
            return Err(H2Error::InvalidConfig("no backends".into()));
        }
        if self.ejection.initial.is_zero() || self.ejection.max < self.ejection.initial {
            return Err(H2Error::InvalidConfig(format!(
                "ejection_backoff must be non-zero with max >= initial, got {:?} and {:?}",
                self.ejection.initial, self.ejection.max
            )));
        }
        if self.keep_alive_interval.is_some_and(|d| d.is_zero())
            || self.keep_alive_timeout.is_zero()
        {
            return Err(H2Error::InvalidConfig(
                "keep_alive_interval and keep_alive_timeout must not be zero".into(),
            ));
        }
        if self.min_connections > self.max_connections {
            return Err(H2Error::InvalidConfig(format!(
                "min_connections_per_backend ({}) is above max_connections_per_backend ({})",
                self.min_connections, self.max_connections
            )));
        }
        if self.retry.max_attempts == 0 {
            return Err(H2Error::InvalidConfig(
                "max_attempts must be at least 1".into(),
            ));
        }
        if self.max_connecting == 0 {
            return Err(H2Error::InvalidConfig(
                "max_connecting_per_backend must be at least 1".into(),
            ));
        }
        if self.max_streams == 0 {
            return Err(H2Error::InvalidConfig(
                "max_streams_per_connection must be at least 1".into(),
            ));
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("idle_timeout", self.idle_timeout),
            ("max_lifetime", self.max_lifetime),
            (
                "request_timeout",
                self.timeouts.request.unwrap_or(Duration::MAX),
            ),
            (
                "response_header_timeout",
                self.timeouts.response_header.unwrap_or(Duration::MAX),
            ),
        ] {
            if d.is_zero() {
                return Err(H2Error::InvalidConfig(format!("{name} must not be zero")));
            }
        }
        const MAX_WINDOW: u32 = (1 << 31) - 1;
        for (name, w) in [
            ("initial_stream_window_size", self.stream_window),
            ("initial_connection_window_size", self.connection_window),
        ] {
            if w == 0 || w > MAX_WINDOW {
                return Err(H2Error::InvalidConfig(format!(
                    "{name} must be in 1..={MAX_WINDOW}, got {w}"
                )));
            }
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| H2Error::NoRuntime)?;
        H2Pool::from_builder(self, runtime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn invalid_addresses_and_tls_without_rustls_fail_the_build() {
        match H2Pool::builder(["http://127.0.0.1:1", "http://a b:1"]).build() {
            Err(H2Error::InvalidConfig(msg)) => assert!(msg.contains("`http://a b:1`"), "{msg}"),
            other => panic!("{other:?}"),
        }
        let tls = H2Pool::builder(["https://127.0.0.1:9443"]).build();
        #[cfg(not(feature = "rustls"))]
        match tls {
            Err(H2Error::InvalidConfig(msg)) => assert!(msg.contains("`rustls` feature"), "{msg}"),
            other => panic!("{other:?}"),
        }
        #[cfg(feature = "rustls")]
        drop(tls); // platform roots or not: depends on the machine
    }
}
