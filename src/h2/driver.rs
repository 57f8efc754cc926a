//! Opening connections, the per-connection driver task, and the idle/lifetime sweeper.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::conn::{Conn, Shared};
use super::{H2Error, Inner};
use crate::{ConnId, Pool, Reservation, Token};

/// Connects to `addr` and puts the connection into the reserved slot: TCP with
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
pub(super) async fn connect(
    inner: &Inner,
    pool: &Arc<Pool<Conn>>,
    addr: SocketAddr,
    reservation: Reservation<'_, Conn>,
) -> Result<Token, H2Error> {
    let timeout = inner.connect_timeout;
    let id = reservation.conn_id();
    let shared = Arc::new(Shared::new(addr, Arc::downgrade(pool), inner.max_streams));
    let connect = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| H2Error::Connect { addr, source })?;
        tcp.set_nodelay(true)
            .map_err(|source| H2Error::Connect { addr, source })?;
        let (send, mut connection) = inner
            .h2_builder
            .handshake::<_, Bytes>(tcp)
            .await
            .map_err(|e| handshake_error(addr, e))?;
        let ping_pong = connection.ping_pong();
        // The driver gets the id before the slot is filled: if the connection dies at once,
        // its `drain` marks the reserved slot, and the release after the first stream closes
        // it.
        inner
            .runtime
            .spawn(drive(connection, Arc::clone(&shared), id));
        if let Some(mut ping_pong) = ping_pong {
            ping_pong
                .ping(::h2::Ping::opaque())
                .await
                .map_err(|e| handshake_error(addr, e))?;
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
async fn drive(
    connection: ::h2::client::Connection<TcpStream, Bytes>,
    shared: Arc<Shared>,
    id: ConnId,
) {
    // The outcome does not matter here: requests on this connection get the error from their
    // own streams, and new requests go elsewhere either way.
    let _ = connection.await;
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
}

/// How often the sweeper looks for idle and over-age connections: a quarter of the shorter
/// timeout, between 10 ms and 5 s.
pub(super) fn sweep_interval(idle: Duration, lifetime: Duration) -> Duration {
    (idle.min(lifetime) / 4).clamp(Duration::from_millis(10), Duration::from_secs(5))
}

/// Closes idle and over-age connections every `every`, until the pool is dropped (`stop`
/// resolves when its sender, owned by the pool, is dropped).
pub(super) async fn sweep(pool: Weak<Inner>, mut stop: oneshot::Receiver<()>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        let Some(inner) = pool.upgrade() else { return };
        inner.evict(Instant::now());
    }
}

impl Inner {
    /// One sweep: closes every idle connection that is dead, older than `max_lifetime`, or
    /// has carried no stream for `idle_timeout`. Returns how many it closed.
    ///
    /// Full connections are `in_use` (parked) and are not looked at; they are idle by
    /// definition never.
    pub(super) fn evict(&self, now: Instant) -> usize {
        let (idle, lifetime) = (self.idle_timeout, self.max_lifetime);
        (0..self.pools.backends())
            .filter_map(|b| self.pools.backend(b).ok())
            .map(|pool| {
                pool.evict_idle(|conn| {
                    let shared = &conn.shared;
                    if !shared.is_alive()
                        || now.saturating_duration_since(shared.created) >= lifetime
                    {
                        return true;
                    }
                    let s = shared.streams();
                    s.in_flight == 0 && now.saturating_duration_since(s.last_used) >= idle
                })
            })
            .sum()
    }
}
