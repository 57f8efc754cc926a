//! Opening a connection ([`Connector::connect`]: the user's or the built-in [`Connect`],
//! then TLS, the HTTP/2 handshake and a PING) and the task that runs it until it ends
//! ([`drive`]).

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use super::affinity;
use super::batch::YieldBeforePoll;
use super::conn::{Conn, Shared};
use super::counters::{bump, Counters};
use super::keepalive::{self, KeepAlive};
use super::shutdown::{DriverGuard, Drivers};
use super::{Connect, H2Error, Target};
use crate::{ConnId, Pool, ReservationOf, Token};

type SendRequest = ::h2::client::SendRequest<Bytes>;
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything the connect step needs, and nothing else: how to open the byte stream, TLS,
/// how to handshake, how long it may take, the stream limit before the backend's SETTINGS,
/// and where to spawn the driver.
pub(super) struct Connector {
    pub(super) transport: Transport,
    #[cfg(feature = "rustls")]
    pub(super) tls: Option<super::tls::Tls>,
    pub(super) h2_builder: ::h2::client::Builder,
    pub(super) connect_timeout: Duration,
    /// `max_streams_per_connection`: a new connection's stream limit until it is first used.
    pub(super) max_streams: usize,
    pub(super) runtime: tokio::runtime::Handle,
    /// The pool's driver tasks, for graceful shutdown.
    pub(super) drivers: Arc<Drivers>,
    /// Keepalive PINGs, if enabled.
    pub(super) keep_alive: Option<KeepAlive>,
}

/// A [`Connect`] with its stream type erased at the level of a whole connect: one boxed
/// future per new connection, and the driver task still compiled for the concrete stream.
#[derive(Clone)]
pub(super) struct Transport(Arc<dyn Open>);

impl Transport {
    pub(super) fn new(connector: impl Connect) -> Transport {
        Transport(Arc::new(Erased(connector)))
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connect")
    }
}

trait Open: Send + Sync {
    /// Opens the stream, runs TLS if `target` asks for it, then [`Connector::handshake`].
    fn open<'a>(
        &'a self,
        c: &'a Connector,
        target: &'a Target,
        shared: &'a Arc<Shared>,
        id: ConnId,
    ) -> BoxFuture<'a, Result<SendRequest, H2Error>>;
}

struct Erased<C>(C);

impl<C: Connect> Open for Erased<C> {
    fn open<'a>(
        &'a self,
        c: &'a Connector,
        target: &'a Target,
        shared: &'a Arc<Shared>,
        id: ConnId,
    ) -> BoxFuture<'a, Result<SendRequest, H2Error>> {
        Box::pin(async move {
            let io = self
                .0
                .connect(target)
                .await
                .map_err(|source| H2Error::Connect {
                    addr: target.clone(),
                    source,
                })?;
            if target.is_tls() {
                #[cfg(feature = "rustls")]
                if let Some(tls) = &c.tls {
                    let io = tls.handshake(io, target).await?;
                    let seen = io.seen();
                    let classify = move |e: ::h2::Error| match seen.get() {
                        // The TLS layer saw rustls fail (an alert after the handshake, such
                        // as `certificate_required`); h2 passes on only its text.
                        Some(tls) => super::tls::rustls_error(target, tls, into_io(e)),
                        None => handshake_error(target, e),
                    };
                    return c.handshake(io, shared, id, &classify).await;
                }
                // `build` refuses `https://` backends without TLS; kept as an error, not a
                // panic.
                return Err(H2Error::InvalidConfig(format!(
                    "`{target}` needs TLS, which this pool was built without"
                )));
            }
            c.handshake(io, shared, id, &|e| handshake_error(target, e))
                .await
        })
    }
}

impl Connector {
    /// Whether `https://` backends can be reached (a TLS configuration was built).
    pub(super) fn has_tls(&self) -> bool {
        #[cfg(feature = "rustls")]
        return self.tls.is_some();
        #[cfg(not(feature = "rustls"))]
        return false;
    }

    /// Connects to `target` and puts the connection into the reserved slot of `pool`: the
    /// connector's byte stream (TCP with `TCP_NODELAY` for the built-in one), TLS for an
    /// `https://` target, the HTTP/2 client handshake, the connection's driver task, and one
    /// PING round trip, all within `connect_timeout`.
    ///
    /// The PING is answered only after the backend's SETTINGS frame (the first frame a server
    /// sends), so when it returns the backend's `SETTINGS_MAX_CONCURRENT_STREAMS` is known and
    /// the first streams never exceed it; it also proves the backend speaks HTTP/2 before a
    /// request is committed to the connection (and, over TLS 1.3, that the backend accepted
    /// the client certificate). It costs one round trip per new connection.
    ///
    /// Cancel-safe: if this future is dropped, the reservation is dropped with it and the slot
    /// is empty again; a driver already spawned then sees its connection end (no handle, no
    /// stream) and its `drain` by the old id matches nothing.
    pub(super) async fn connect<P>(
        &self,
        pool: &Arc<Pool<Conn>>,
        target: &Target,
        reservation: ReservationOf<P, Conn>,
        counters: &Arc<Counters>,
    ) -> Result<Token, H2Error>
    where
        P: Deref<Target = Pool<Conn>>,
    {
        let timeout = self.connect_timeout;
        let id = reservation.conn_id();
        let shared = Arc::new(Shared::new(
            target.detached(),
            Arc::downgrade(pool),
            self.max_streams,
            Arc::clone(counters),
            affinity::home_of(&affinity::driver_runtime(&self.runtime)),
        ));
        let backend = pool.backend();
        let start = Instant::now();
        tracing::debug!(backend, conn = %id, %target, "connecting");
        let connect = self.transport.0.open(self, target, &shared, id);
        let outcome = tokio::time::timeout(timeout, connect)
            .await
            .unwrap_or_else(|_| {
                Err(H2Error::ConnectTimeout {
                    addr: target.clone(),
                    timeout,
                })
            });
        let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
        let send = match outcome {
            Ok(send) => {
                bump(&counters.connects);
                tracing::debug!(backend, conn = %id, %target, elapsed_ms, "connected");
                send
            }
            Err(e) => {
                bump(&counters.connect_failures);
                tracing::info!(backend, conn = %id, %target, elapsed_ms, error = %e, "connect failed");
                return Err(e);
            }
        };
        // The caller claims a stream on it at once, with no await point in between: the raw
        // token is not held across a cancellation point.
        Ok(reservation.fill(Conn { send, shared }).into_token())
    }

    /// The HTTP/2 part of a connect, on an open byte stream: handshake, driver task, PING.
    async fn handshake<T>(
        &self,
        io: T,
        shared: &Arc<Shared>,
        id: ConnId,
        classify: &(dyn Fn(::h2::Error) -> H2Error + Sync),
    ) -> Result<SendRequest, H2Error>
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (send, mut connection) = self
            .h2_builder
            .handshake::<_, Bytes>(io)
            .await
            .map_err(classify)?;
        let ping_pong = connection.ping_pong();
        // The driver gets the id before the slot is filled: if the connection dies at
        // once, its `drain` marks the reserved slot, and the release after the first
        // stream closes it. It gets the PING handle for keepalive once the first PING is
        // back.
        let driver = self.drivers.start();
        let (keep_alive_tx, keep_alive_rx) = oneshot::channel();
        let keep_alive = (self.keep_alive, keep_alive_rx);
        // On the connection's home runtime, if it has one (the same call as in `connect`,
        // from the same task).
        affinity::driver_runtime(&self.runtime).spawn(drive(
            connection,
            Arc::clone(shared),
            id,
            driver,
            keep_alive,
        ));
        if let Some(mut ping_pong) = ping_pong {
            ping_pong
                .ping(::h2::Ping::opaque())
                .await
                .map_err(classify)?;
            // The driver may have ended already; then nothing needs the handle.
            let _ = keep_alive_tx.send(ping_pong);
        }
        Ok(send)
    }
}

/// The I/O error inside `e`, or `e` as one.
#[cfg(feature = "rustls")]
fn into_io(e: ::h2::Error) -> std::io::Error {
    if e.is_io() {
        // `into_io` is `Some` exactly when `is_io` holds.
        e.into_io()
            .unwrap_or_else(|| std::io::ErrorKind::Other.into())
    } else {
        std::io::Error::other(e)
    }
}

/// An h2 error while connecting: an I/O error (the peer closed or reset the connection) is a
/// failed connect; anything else is a failed HTTP/2 handshake.
fn handshake_error(target: &Target, e: ::h2::Error) -> H2Error {
    if e.is_io() {
        // `into_io` is `Some` exactly when `is_io` holds.
        let source = e
            .into_io()
            .unwrap_or_else(|| std::io::ErrorKind::Other.into());
        H2Error::Connect {
            addr: target.clone(),
            source,
        }
    } else {
        H2Error::Handshake {
            addr: target.clone(),
            source: e,
        }
    }
}

/// Runs one connection until it ends (GOAWAY and its last stream done, I/O error, EOF, or
/// the pool dropped its handle and every stream finished), then takes it out of the pool by
/// its id: closed now if idle or full, or when its current holder releases it. Streams on
/// other connections never notice. Compiled for each stream type, so frames are read and
/// written with no `dyn` call.
///
/// At a shutdown's deadline (see [`Drivers`]), or when a keepalive PING goes unanswered
/// (see [`keepalive`](super::keepalive)), the connection is dropped with its streams still
/// running: the socket closes and those streams fail.
async fn drive<T>(
    connection: ::h2::client::Connection<T, Bytes>,
    shared: Arc<Shared>,
    id: ConnId,
    driver: DriverGuard,
    (keep_alive, ping_pong): (Option<KeepAlive>, oneshot::Receiver<::h2::PingPong>),
) where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // Whichever way this ends, the connection's slot learns it: also if this future is
    // dropped unfinished, with the runtime it was spawned on (a connection is driven on the
    // runtime that opened it, which may end before the pool; see `affinity`).
    let ended = Ended { shared, id };
    let shared = &ended.shared;
    // The outcome does not matter here: requests on this connection get the error from their
    // own streams, and new requests go elsewhere either way. Each wake-up first lets the
    // tasks that woke it queue their frames, so that one write carries them all.
    let backend = shared.pool().map(|p| p.backend());
    tokio::select! {
        ended = YieldBeforePoll::new(connection) => {
            match ended {
                Ok(()) => tracing::debug!(backend, conn = %id, "connection closed"),
                Err(e) => tracing::debug!(backend, conn = %id, error = %e, "connection ended"),
            }
        }
        () = driver.cut() => {
            tracing::debug!(backend, conn = %id, "connection cut at the shutdown deadline");
        }
        () = keepalive::watch(keep_alive, ping_pong, Arc::clone(shared)) => {
            bump(&shared.counters.evicted_keepalive);
            tracing::warn!(
                backend,
                conn = %id,
                target = %shared.addr,
                "keepalive PING unanswered: connection closed"
            );
        }
    }
    drop(ended);
    // `driver` ends here, after the slot: the shutdown counts this connection closed.
    drop(driver);
}

/// Marks a driven connection dead and closes its slot, when its driver ends or is dropped.
struct Ended {
    shared: Arc<Shared>,
    id: ConnId,
}

impl Drop for Ended {
    fn drop(&mut self) {
        let parked = self.shared.mark_dead();
        let Some(pool) = self.shared.pool() else {
            return;
        };
        match parked {
            // Full when it died: we took the slot's token, so we close it.
            Some(token) => {
                let _ = pool.release(token, false);
            }
            // Idle: closed now. Held by a request being opened: marked, closed at its release.
            // Already closed (evicted, drained): the stale id matches nothing.
            None => {
                pool.drain(self.id);
            }
        }
    }
}
