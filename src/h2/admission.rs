//! Stream admission: finding a connection of one backend with room for one more stream,
//! counting the stream on it, and giving the connection's slot back (released, or parked
//! while the connection is full). See "How a request finds a connection" and "Multiplexing"
//! in the [module docs](super).
//!
//! The unit of admission is a [`Claim`]: a stream counted against its connection while the
//! connection's slot is held. It is either opened ([`Claim::open`]: the count moves into the
//! stream's [`StreamTicket`]), turned into a lease ([`Claim::into_held`]), or dropped, which
//! undoes it on every path (a lost balance, a failed send, a cancelled caller).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::affinity::{self, Lane};
use super::backends::Entry;
use super::coalesce::{ConnectGuard, Decision, Ejected, Outcome};
use super::conn::{accepts_streams, refusal, Conn, Shared, StreamTicket};
use super::connect::Connector;
use super::counters::bump;
use super::{H2Error, ResponseFuture};
use crate::{Checkout, OwnedReservation, Pool, Reservation, Token};

/// A request that finds its connection already carrying this many streams (or more) looks at
/// one more available connection and opens its stream on whichever of the two carries fewer;
/// see "Spreading the load" in the module docs.
const BALANCE_FROM: usize = 16;

/// A wait for room this long or longer is reported (a `tracing` event at debug level).
const SLOW_WAIT: Duration = Duration::from_millis(100);

/// How streams are admitted to the connections of each backend.
pub(super) struct Admission {
    /// The cap on streams per connection (`max_streams_per_connection`).
    pub(super) max_streams: usize,
    /// A connection older than this takes no new streams.
    pub(super) max_lifetime: Duration,
    /// How long a request waits when every slot is busy.
    pub(super) acquire_timeout: Duration,
    /// Opens a connection into an empty slot.
    pub(super) connector: Connector,
}

/// One stream counted against its connection, with the connection's slot held: the right to
/// open exactly one stream there, now. Dropped unopened, it uncounts the stream and gives the
/// slot back (parked if the connection is full, released otherwise); nothing else undoes it.
///
/// Holds a raw token: never keep one across an await point (a cancelled future would drop it
/// at an arbitrary time, but it would still be given back correctly).
#[must_use = "a claim holds a connection slot until opened or dropped"]
pub(super) struct Claim<'p> {
    pool: &'p Pool<Conn>,
    /// `Some` until `into_held` or drop.
    token: Option<Token>,
    /// The counted stream; `Some` until opened or turned into a lease.
    ticket: Option<StreamTicket>,
    shared: Arc<Shared>,
    /// Streams the connection carried before this one was counted.
    before: usize,
    /// False once a send found the connection broken: the slot is then released unkept.
    usable: bool,
    /// For the claim that opened the connection: the requests waiting for that connect, told
    /// once the slot is given back (so that they find the connection available), with the
    /// connection's stream limit.
    connected: Option<(ConnectGuard, usize)>,
}

impl Claim<'_> {
    /// Opens the claimed stream (sends the request head) and gives the slot back: released
    /// with `keep`, or parked if this stream filled the connection. No await point.
    ///
    /// # Errors
    /// As [`send_on`].
    pub(super) fn open(
        mut self,
        request: http::Request<()>,
        end_of_stream: bool,
    ) -> Result<(ResponseFuture, ::h2::SendStream<Bytes>), H2Error> {
        let (Some(token), Some(ticket)) = (self.token.as_mut(), self.ticket.take()) else {
            unreachable!("an unopened claim holds its token and its ticket")
        };
        let Some(conn) = self.pool.get_mut(token) else {
            unreachable!("a claimed token is live until released")
        };
        let sent = send_on(conn, ticket, request, end_of_stream);
        if let Err((_, false)) = &sent {
            self.usable = false;
        }
        sent.map_err(|(e, _)| e)
        // `self` drops here and gives the slot back.
    }

    /// Gives the claim up without opening its stream, and closes the connection (the pool
    /// was shut down while the claim was made: a connection opened meanwhile must not stay).
    pub(super) fn discard(mut self) {
        self.usable = false;
    }

    /// Gives up the counted stream but keeps the slot: for a lease, which counts its streams
    /// itself.
    pub(super) fn into_held(mut self) -> (Token, Arc<Shared>) {
        self.ticket = None;
        // The lease keeps the connection to itself: its joiners look elsewhere now.
        if let Some((guard, limit)) = self.connected.take() {
            guard.connected(limit);
        }
        let Some(token) = self.token.take() else {
            unreachable!("an unopened claim holds its token")
        };
        (token, Arc::clone(&self.shared))
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        // Uncount first, so that `give_back` sees the connection's true load.
        self.ticket = None;
        if let Some(token) = self.token.take() {
            give_back(self.pool, token, &self.shared, self.usable);
        }
        if let Some((guard, limit)) = self.connected.take() {
            guard.connected(limit);
        }
    }
}

/// What [`Admission::checkout_home`] found.
enum Home<'p> {
    /// A stream on the runtime's own connection.
    Claimed(Claim<'p>),
    /// No connection at home: open one in this slot.
    Connect(Reservation<'p, Conn>, ConnectGuard),
    /// Look at every connection, as without affinity.
    Elsewhere,
    /// A connect is due at home: the slow path's business.
    Later,
}

impl Admission {
    /// [`checkout`](Self::checkout)'s fast path, with no await point: a stream on a
    /// connection available now (the caller's runtime's own first; see `affinity`), or
    /// `Ok(None)` when there is none and `checkout` must connect or wait. Its future holds
    /// every rare path, so a caller that boxes it only then keeps its own future small.
    pub(super) fn checkout_now<'p>(
        &self,
        backend: &'p Entry,
    ) -> Result<Option<Claim<'p>>, H2Error> {
        self.open_to(backend)?;
        if let Some(home) = affinity::here() {
            match self.checkout_home(backend, home, false) {
                Home::Claimed(claim) => return Ok(Some(claim)),
                Home::Later => return Ok(None),
                Home::Elsewhere | Home::Connect(..) => {}
            }
        }
        Ok(self.claim_available(&backend.pool))
    }

    /// `Ok` unless the pool was shut down or `backend` removed: then no new stream, and no
    /// connect.
    fn open_to(&self, backend: &Entry) -> Result<(), H2Error> {
        // Shut down (before or while this request waited).
        if self.connector.drivers.is_closed() {
            return Err(H2Error::Shutdown);
        }
        // Removed (or replaced) since the request found it: nothing more goes there.
        if backend.removed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(H2Error::BackendRemoved {
                backend: backend.pool.backend(),
                addr: backend.target.clone(),
            });
        }
        Ok(())
    }

    /// A stream on any connection available now. Each failed `claim` parks or closes the
    /// connection it looked at, so the loop soon runs out of available connections (it goes
    /// on only while streams ending elsewhere keep handing connections back, and then
    /// `claim` succeeds).
    fn claim_available<'p>(&self, pool: &'p Pool<Conn>) -> Option<Claim<'p>> {
        while let Some(token) = pool.acquire() {
            // No await point until the claim is opened or dropped.
            if let Some(claim) = self.claim(pool, token) {
                return Some(self.balance(pool, claim));
            }
        }
        None
    }

    /// A connection of `backend` with room for one more stream, with that stream counted:
    /// reuse, else join a connect in progress, else reserve and connect, else wait, all
    /// within the acquire timeout.
    pub(super) async fn checkout<'p>(&self, backend: &'p Entry) -> Result<Claim<'p>, H2Error> {
        let (pool, addr, counters) = (&backend.pool, &backend.target, &backend.counters);
        let timeout = self.acquire_timeout;
        let timed_out = || {
            bump(&counters.acquire_timeouts);
            tracing::debug!(
                backend = pool.backend(),
                ?timeout,
                "no room within the acquire timeout"
            );
            H2Error::AcquireTimeout {
                backend: pool.backend(),
                timeout,
            }
        };
        let ejected = |e: Ejected| H2Error::BackendEjected {
            backend: pool.backend(),
            addr: addr.clone(),
            until: e.until,
            failures: e.failures,
        };
        let coalescer = &backend.coalescer;
        // Set on the first wait: the fast path takes no timer.
        let mut deadline = None;
        // Looked at once, on the first pass.
        let mut home = affinity::here();
        loop {
            self.open_to(backend)?;
            // On a `current_thread` runtime: its own connection first (see `affinity`).
            if let Some(home) = home.take() {
                match self.checkout_home(backend, home, true) {
                    Home::Claimed(claim) => return Ok(claim),
                    Home::Connect(reservation, guard) => {
                        return Box::pin(self.connect_and_claim(backend, reservation, guard)).await;
                    }
                    Home::Elsewhere | Home::Later => {}
                }
            }
            if let Some(claim) = self.claim_available(pool) {
                return Ok(claim);
            }
            let deadline =
                *deadline.get_or_insert_with(|| tokio::time::Instant::now().checked_add(timeout));
            match coalescer.join_or_start(|| pool.reserve()) {
                Decision::Start(reservation, guard) => {
                    return Box::pin(self.connect_and_claim(backend, reservation, guard)).await;
                }
                Decision::Ejected(e) => return Err(ejected(e)),
                Decision::Join(joined) => {
                    let outcome = match deadline {
                        Some(d) => Box::pin(tokio::time::timeout_at(d, joined.outcome()))
                            .await
                            .map_err(|_| timed_out())?,
                        None => Box::pin(joined.outcome()).await,
                    };
                    if let Outcome::Failed(failed) = outcome {
                        let (cause, retryable) = (*failed).clone();
                        return Err(H2Error::JoinedConnectFailed {
                            addr: addr.clone(),
                            cause,
                            retryable,
                        });
                    }
                    // Connected (or cancelled): look again.
                }
                Decision::Wait => {
                    // Every slot is in use (full connections, or connects whose seats are
                    // all taken): wait for one to be released or emptied.
                    let wait = pool.acquire_wait();
                    let waiting = Instant::now();
                    let checkout = match deadline {
                        Some(d) => Box::pin(tokio::time::timeout_at(d, wait))
                            .await
                            .map_err(|_| timed_out())?,
                        None => Box::pin(wait).await,
                    };
                    let waited = waiting.elapsed();
                    if waited >= SLOW_WAIT {
                        tracing::debug!(
                            backend = pool.backend(),
                            waited_ms = waited.as_secs_f64() * 1e3,
                            "waited for room on the backend's connections"
                        );
                    }
                    match checkout {
                        Checkout::Acquired(lease) => {
                            if let Some(claim) = self.claim(pool, lease.into_token()) {
                                return Ok(claim);
                            }
                        }
                        Checkout::Vacant(reservation) => {
                            // Dropping the reservation empties the slot again.
                            let guard = coalescer.start().map_err(ejected)?;
                            return Box::pin(self.connect_and_claim(backend, reservation, guard))
                                .await;
                        }
                    }
                }
            }
        }
    }

    async fn connect_and_claim<'p>(
        &self,
        backend: &'p Entry,
        reservation: Reservation<'_, Conn>,
        guard: ConnectGuard,
    ) -> Result<Claim<'p>, H2Error> {
        let pool = &backend.pool;
        if self.connector.drivers.is_closed() {
            // The joiners look again and find the pool closed too.
            return Err(H2Error::Shutdown);
        }
        if backend.removed.load(std::sync::atomic::Ordering::SeqCst) {
            // Removed while this request looked for room: no connection to it any more.
            return Err(H2Error::BackendRemoved {
                backend: pool.backend(),
                addr: backend.target.clone(),
            });
        }
        let connect = self
            .connector
            .connect(pool, &backend.target, reservation, &backend.counters);
        let token = match connect.await {
            Ok(token) => token,
            Err(e) => {
                guard.failed(&e);
                return Err(e);
            }
        };
        // A new connection has room (its limit is at least 1). Were it already dead, sending
        // on it reports the real error.
        let Some(conn) = pool.get(&token) else {
            unreachable!("a token from `fill` is live until released")
        };
        let shared = Arc::clone(&conn.shared);
        let limit = self.stream_limit(&conn.send);
        let ticket = {
            let mut s = shared.streams();
            s.limit = limit;
            StreamTicket::count(&shared, &mut s, Instant::now())
        };
        // The joiners are told when the claim gives the slot back (opened or dropped), so
        // that they find the connection available, not held by this request.
        Ok(Claim {
            pool,
            token: Some(token),
            ticket: Some(ticket),
            shared,
            before: 0,
            usable: true,
            connected: Some((guard, limit)),
        })
    }

    /// Runtime affinity (see [`affinity`]): claims a stream on the connection at home on the
    /// caller's runtime, or reserves an empty slot to open one there. With `may_connect`
    /// false (the fast path, which cannot await a connect) it says [`Home::Later`] where it
    /// would connect. No await point.
    fn checkout_home<'p>(
        &self,
        backend: &'p Entry,
        home: affinity::Home,
        may_connect: bool,
    ) -> Home<'p> {
        let pool = &backend.pool;
        match backend.lanes.get(home) {
            Lane::At(slot) => {
                if let Some(token) = pool.try_acquire_at(slot) {
                    let Some(conn) = pool.get(&token) else {
                        unreachable!("a token from `try_acquire_at` is live until released")
                    };
                    if conn.shared.home == Some(home.id) {
                        // Not balanced against other connections: a full one overflows.
                        return match self.claim(pool, token) {
                            Some(claim) => Home::Claimed(claim),
                            None => Home::Elsewhere,
                        };
                    }
                    // Another runtime's connection took the slot since: untouched, it goes
                    // back, and this runtime opens one of its own in any empty slot.
                    let _ = pool.release(token, true);
                } else {
                    // Empty: its connection is gone; the next one goes in the same slot.
                    // Otherwise the connection is busy (full, being opened, closing): no
                    // second one, any connection will do.
                    return match pool.reserve_at(slot) {
                        Some(reservation) if may_connect => {
                            self.connect_home(backend, home, reservation)
                        }
                        // Dropped: the slot is empty again, for the slow path.
                        Some(_) => Home::Later,
                        None => Home::Elsewhere,
                    };
                }
            }
            // Found no empty slot the last time: the fast path does not look again.
            Lane::NoRoom if !may_connect => return Home::Elsewhere,
            Lane::NoRoom | Lane::Unknown => {}
        }
        if !may_connect {
            return Home::Later;
        }
        // None at home: open one, in an empty slot, if there is one.
        match pool.reserve() {
            Some(reservation) => self.connect_home(backend, home, reservation),
            None => {
                backend.lanes.set(home, Lane::NoRoom);
                Home::Elsewhere
            }
        }
    }

    /// Starts a connect into `reservation` for `home` (which remembers the slot), unless the
    /// backend is ejected.
    fn connect_home<'p>(
        &self,
        backend: &'p Entry,
        home: affinity::Home,
        reservation: Reservation<'p, Conn>,
    ) -> Home<'p> {
        match backend.coalescer.start() {
            Ok(guard) => {
                backend.lanes.set(home, Lane::At(reservation.slot()));
                Home::Connect(reservation, guard)
            }
            // Ejected: the reservation's drop empties the slot; the usual path says so.
            Err(_) => Home::Elsewhere,
        }
    }

    /// Opens a connection into `reservation` for warm-up (no request waits for it, but
    /// requests may join it) and puts it in the pool, available. A failure counts towards
    /// the backend's ejection like any other connect's; an ejected backend is not tried.
    pub(super) async fn warm(&self, backend: &Entry, reservation: OwnedReservation<Conn>) {
        if self.connector.drivers.is_closed() {
            return;
        }
        let Ok(guard) = backend.coalescer.start() else {
            return; // ejected: the reservation's drop empties the slot again
        };
        let pool = &backend.pool;
        let connect = self
            .connector
            .connect(pool, &backend.target, reservation, &backend.counters);
        match connect.await {
            Ok(token) => {
                let limit = match pool.get(&token) {
                    Some(conn) => {
                        let limit = self.stream_limit(&conn.send);
                        conn.shared.streams().limit = limit;
                        limit
                    }
                    None => unreachable!("a token from `fill` is live until released"),
                };
                let _ = pool.release(token, true);
                guard.connected(limit);
            }
            Err(e) => guard.failed(&e),
        }
    }

    /// Checks an acquired connection and claims a stream on it. On `None` the token was
    /// dealt with: closed (dead, over age, GOAWAY received) or parked (full).
    fn claim<'p>(&self, pool: &'p Pool<Conn>, mut token: Token) -> Option<Claim<'p>> {
        let now = Instant::now();
        let id = token.conn_id();
        let Some(conn) = pool.get_mut(&mut token) else {
            unreachable!("a token from `acquire` is live until released")
        };
        let counters = &conn.shared.counters;
        let healthy = if !conn.shared.is_alive() {
            false
        } else if now.saturating_duration_since(conn.shared.created) >= self.max_lifetime {
            bump(&counters.evicted_lifetime);
            tracing::debug!(backend = pool.backend(), conn = %id, "connection past its maximum lifetime: closed");
            false
        } else if let Some(e) = refusal(&mut conn.send) {
            if e.is_go_away() && e.is_remote() {
                bump(&counters.goaways);
                tracing::debug!(backend = pool.backend(), conn = %id, reason = ?e.reason(), "GOAWAY received: connection closed to new streams");
            }
            false
        } else {
            true
        };
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
        let ticket = StreamTicket::count(&shared, &mut s, now);
        drop(s);
        Some(Claim {
            pool,
            token: Some(token),
            ticket: Some(ticket),
            shared,
            before,
            usable: true,
            connected: None,
        })
    }

    /// Spreading the load: `claim`'s connection carried `before` streams when it was claimed.
    /// If that is [`BALANCE_FROM`] or more, takes one more *available* connection (never
    /// opens one, never waits) and keeps whichever of the two carried fewer streams; the
    /// other claim is dropped, which undoes it. No await point.
    fn balance<'p>(&self, pool: &'p Pool<Conn>, claim: Claim<'p>) -> Claim<'p> {
        if claim.before < BALANCE_FROM {
            return claim;
        }
        let Some(other) = pool.acquire() else {
            return claim;
        };
        // A first look at the count alone: if the other connection is no less loaded, it goes
        // back untouched (unexamined: the next request to take it checks its health).
        let Some(other_conn) = pool.get(&other) else {
            unreachable!("a token from `acquire` is live until released")
        };
        if other_conn.shared.streams().in_flight >= claim.before {
            let _ = pool.release(other, true);
            return claim;
        }
        match self.claim(pool, other) {
            Some(other) if other.before < claim.before => other,
            _ => claim,
        }
    }

    /// How many streams the pool opens on a connection at once: the backend's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` (known since the PING in `connect`), capped by
    /// `max_streams_per_connection`, and at least 1 (a backend that allows 0 streams would
    /// otherwise park its slot for good; h2 queues the stream instead).
    fn stream_limit(&self, send: &::h2::client::SendRequest<Bytes>) -> usize {
        send.current_max_send_streams().min(self.max_streams).max(1)
    }
}

/// Sends the request head on the stream counted by `ticket`, on a connection whose slot the
/// caller holds. On failure the ticket is dropped (the stream uncounted), and the flag says
/// whether the connection is still usable.
///
/// # Errors
/// [`H2Error::ConnectionLost`] (flag `false`) if the connection failed or received GOAWAY:
/// the request was not sent; [`H2Error::Protocol`] (flag `true`) if h2 rejected the request.
pub(super) fn send_on(
    conn: &mut Conn,
    ticket: StreamTicket,
    request: http::Request<()>,
    end_of_stream: bool,
) -> Result<(ResponseFuture, ::h2::SendStream<Bytes>), (H2Error, bool)> {
    // A clone, so that h2 never records a pending-open stream on the pooled handle.
    let sent = conn.send.clone().send_request(request, end_of_stream);
    let addr = ticket.shared().addr.clone();
    match sent {
        Ok((response, body)) => Ok((ResponseFuture::new(response, ticket, addr), body)),
        Err(e) => {
            drop(ticket);
            if accepts_streams(&mut conn.send) {
                Err((H2Error::Protocol(e), true))
            } else {
                Err((
                    H2Error::ConnectionLost {
                        addr,
                        source: e,
                        // The stream was never opened: nothing of the request left.
                        replay_safe: true,
                    },
                    false,
                ))
            }
        }
    }
}

/// Gives a held slot back: parked if its connection is full (a stream's end releases it),
/// otherwise released, with `keep` unless the connection is dead or broken.
pub(super) fn give_back(pool: &Pool<Conn>, token: Token, shared: &Shared, usable: bool) {
    let mut s = shared.streams();
    if usable && s.in_flight >= s.limit && shared.is_alive() {
        s.parked = Some(token);
    } else {
        drop(s);
        let _ = pool.release(token, usable && shared.is_alive());
    }
}
