//! [`H2PoolBuilder`]: the pool's settings and their defaults.

use std::time::Duration;

use super::connect::Transport;
use super::{Connect, DefaultConnector, H2Error, H2Pool, IntoTarget, Target};

/// Default for [`H2PoolBuilder::max_connections_per_backend`].
pub const DEFAULT_MAX_CONNECTIONS_PER_BACKEND: usize = 8;
/// Default for [`H2PoolBuilder::max_streams_per_connection`] (RFC 9113 §6.5.2 recommends that
/// servers allow at least 100 concurrent streams).
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: usize = 100;
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
    pub(super) stream_window: u32,
    pub(super) connection_window: u32,
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
            stream_window: DEFAULT_STREAM_WINDOW,
            connection_window: DEFAULT_CONNECTION_WINDOW,
        }
    }

    /// How many connections (pool slots) each backend may have at once. Default
    /// [`DEFAULT_MAX_CONNECTIONS_PER_BACKEND`] (8); at most [`MAX_SLOTS`](crate::MAX_SLOTS).
    pub fn max_connections_per_backend(mut self, n: usize) -> Self {
        self.max_connections = n;
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
        if !self.backends.iter().any(Target::is_tls) {
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
    /// over-age connections) on it, and later one driver task per connection. The sweeper
    /// stops when the last clone of the pool is dropped.
    ///
    /// # Errors
    /// [`H2Error::NoRuntime`] outside a tokio runtime; [`H2Error::InvalidConfig`] for a
    /// backend address that does not parse (named in the message), an `https://` backend
    /// without the `rustls` feature, TLS settings that cannot be used (no platform roots),
    /// no backends, more than [`MAX_BACKENDS`](crate::MAX_BACKENDS), zero or more than
    /// [`MAX_SLOTS`](crate::MAX_SLOTS) connections per backend, zero streams per connection,
    /// a zero connect, idle or lifetime duration, or a flow-control window outside
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
        if self.max_streams == 0 {
            return Err(H2Error::InvalidConfig(
                "max_streams_per_connection must be at least 1".into(),
            ));
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("idle_timeout", self.idle_timeout),
            ("max_lifetime", self.max_lifetime),
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
