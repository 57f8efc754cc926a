//! Opening a connection ([`Connector::connect`]) and the task that runs it until it ends
//! ([`drive`]).

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::batch::YieldBeforePoll;
use super::conn::{Conn, Shared};
use super::keepalive::{self, KeepAlive};
use super::shutdown::{DriverGuard, Drivers};
use super::H2Error;
use crate::{ConnId, Pool, ReservationOf, Token};

/// Everything the connect step needs, and nothing else: how to handshake, how long it may
/// take, the stream limit before the backend's SETTINGS, and where to spawn the driver.
pub(super) struct Connector {
    pub(super) h2_builder: ::h2::client::Builder,
    pub(super) connect_timeout: Duration,
    /// `max_streams_per_connection`: a new connection's stream limit until it is first used.
    pub(super) max_streams: usize,
    pub(super) runtime: tokio::runtime::Handle,
    /// The pool's driver tasks, for graceful shutdown.
    pub(super) drivers: Arc<Drivers>,
    /// Keepalive PINGs, if enabled.
    pub(super) keep_alive: Option<KeepAlive>,
    /// Per backend: streams in flight on all its connections (see [`Shared`]).
    pub(super) streams_in_flight: Arc<[Arc<AtomicUsize>]>,
}

impl Connector {
    /// Connects to `addr` and puts the connection into the reserved slot of `pool`: TCP with
    /// `TCP_NODELAY`, the HTTP/2 client handshake, the connection's driver task, and one PING
    /// round trip, all within `connect_timeout`.
    ///
    /// The PING is answered only after the backend's SETTINGS frame (the first frame a server
    /// sends), so when it returns the backend's `SETTINGS_MAX_CONCURRENT_STREAMS` is known and
    /// the first streams never exceed it; it also proves the backend speaks HTTP/2 before a
    /// request is committed to the connection. It costs one round trip per new connection.
    ///
    /// Cancel-safe: if this future is dropped, the reservation is dropped with it and the slot
    /// is empty again; a driver already spawned then sees its connection end (no handle, no
    /// stream) and its `drain` by the old id matches nothing.
    pub(super) async fn connect<P>(
        &self,
        pool: &Arc<Pool<Conn>>,
        addr: SocketAddr,
        reservation: ReservationOf<P, Conn>,
    ) -> Result<Token, H2Error>
    where
        P: Deref<Target = Pool<Conn>>,
    {
        let timeout = self.connect_timeout;
        let id = reservation.conn_id();
        let shared = Arc::new(Shared::new(
            addr,
            Arc::downgrade(pool),
            self.max_streams,
            Arc::clone(&self.streams_in_flight[pool.backend()]),
        ));
        let connect = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|source| H2Error::Connect { addr, source })?;
            tcp.set_nodelay(true)
                .map_err(|source| H2Error::Connect { addr, source })?;
            let (send, mut connection) = self
                .h2_builder
                .handshake::<_, Bytes>(tcp)
                .await
                .map_err(|e| handshake_error(addr, e))?;
            let ping_pong = connection.ping_pong();
            // The driver gets the id before the slot is filled: if the connection dies at
            // once, its `drain` marks the reserved slot, and the release after the first
            // stream closes it. It gets the PING handle for keepalive once the first PING
            // is back.
            let driver = self.drivers.start();
            let (keep_alive_tx, keep_alive_rx) = oneshot::channel();
            let keep_alive = (self.keep_alive, keep_alive_rx);
            self.runtime.spawn(drive(
                connection,
                Arc::clone(&shared),
                id,
                driver,
                keep_alive,
            ));
            if let Some(mut ping_pong) = ping_pong {
                ping_pong
                    .ping(::h2::Ping::opaque())
                    .await
                    .map_err(|e| handshake_error(addr, e))?;
                // The driver may have ended already; then nothing needs the handle.
                let _ = keep_alive_tx.send(ping_pong);
            }
            Ok::<_, H2Error>(send)
        };
        let send = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| H2Error::ConnectTimeout { addr, timeout })??;
        // The caller claims a stream on it at once, with no await point in between: the raw
        // token is not held across a cancellation point.
        Ok(reservation.fill(Conn { send, shared }).into_token())
    }
}

/// An h2 error while connecting: an I/O error (the peer closed or reset the connection) is a
/// failed connect; anything else is a failed HTTP/2 handshake.
fn handshake_error(addr: SocketAddr, e: ::h2::Error) -> H2Error {
    if e.is_io() {
        // `into_io` is `Some` exactly when `is_io` holds.
        let source = e
            .into_io()
            .unwrap_or_else(|| std::io::ErrorKind::Other.into());
        H2Error::Connect { addr, source }
    } else {
        H2Error::Handshake { addr, source: e }
    }
}

/// Runs one connection until it ends (GOAWAY and its last stream done, I/O error, EOF, or
/// the pool dropped its handle and every stream finished), then takes it out of the pool by
/// its id: closed now if idle or full, or when its current holder releases it. Streams on
/// other connections never notice.
///
/// At a shutdown's deadline (see [`Drivers`]), or when a keepalive PING goes unanswered
/// (see [`keepalive`](super::keepalive)), the connection is dropped with its streams still
/// running: the socket closes and those streams fail.
async fn drive(
    connection: ::h2::client::Connection<TcpStream, Bytes>,
    shared: Arc<Shared>,
    id: ConnId,
    driver: DriverGuard,
    (keep_alive, ping_pong): (Option<KeepAlive>, oneshot::Receiver<::h2::PingPong>),
) {
    // The outcome does not matter here: requests on this connection get the error from their
    // own streams, and new requests go elsewhere either way. Each wake-up first lets the
    // tasks that woke it queue their frames, so that one write carries them all.
    tokio::select! {
        _ = YieldBeforePoll::new(connection) => {}
        () = driver.cut() => {}
        () = keepalive::watch(keep_alive, ping_pong, Arc::clone(&shared)) => {}
    }
    let parked = shared.mark_dead();
    let Some(pool) = shared.pool() else { return };
    match parked {
        // Full when it died: we took the slot's token, so we close it.
        Some(token) => {
            let _ = pool.release(token, false);
        }
        // Idle: closed now. Held by a request being opened: marked, closed at its release.
        // Already closed (evicted, drained): the stale id matches nothing.
        None => {
            pool.drain(id);
        }
    }
    // `driver` ends here: the shutdown counts this connection closed.
    drop(driver);
}
