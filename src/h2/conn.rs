//! One pooled connection ([`Conn`]), the per-connection stream count ([`Shared`]) and the
//! handles that keep a stream counted ([`ResponseFuture`], [`RecvStream`]).

use std::fmt;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;

use super::counters::Counters;
use super::Target;
use crate::{Pool, Token};

/// What a pool slot holds: the connection's request handle and its shared state.
pub(crate) struct Conn {
    /// Only the slot's token holder touches this handle. Streams are opened on *clones* of
    /// it, so h2 never records a "pending open" stream on it, and `poll_ready` on it never
    /// registers a waker: it only reports a connection error or a received GOAWAY.
    pub(crate) send: ::h2::client::SendRequest<Bytes>,
    pub(crate) shared: Arc<Shared>,
}

/// State shared by a connection's slot, its driver task and its open streams.
pub(crate) struct Shared {
    /// False once the driver task has seen the connection end (GOAWAY completed, error, EOF).
    alive: AtomicBool,
    pub(crate) created: Instant,
    pub(crate) addr: Target,
    /// The backend's pool, to release a parked token when a stream ends.
    pool: Weak<Pool<Conn>>,
    streams: Mutex<Streams>,
    /// The backend's counters (shared by all its connections): streams in flight move with
    /// `Streams::in_flight`; evictions and GOAWAYs are counted by who sees them.
    pub(super) counters: Arc<Counters>,
    /// The `current_thread` runtime its driver runs on, if it is one (see
    /// [`affinity`](super::affinity)).
    pub(super) home: Option<tokio::runtime::Id>,
}

/// Stream accounting of one connection; see the module docs of [`crate::h2`].
pub(crate) struct Streams {
    /// Streams opened through the pool whose response side is still alive.
    pub(crate) in_flight: usize,
    /// The stream limit seen when a stream was last opened: `min(peer's
    /// SETTINGS_MAX_CONCURRENT_STREAMS, max_streams_per_connection)`.
    pub(crate) limit: usize,
    /// The slot's token while the connection is full: the slot stays `in_use`, so `acquire`
    /// skips it and waiters wait, until a stream ends and releases it.
    pub(crate) parked: Option<Token>,
    /// When a stream was last opened or ended here (for the idle timeout).
    pub(crate) last_used: Instant,
}

impl Shared {
    pub(super) fn new(
        addr: Target,
        pool: Weak<Pool<Conn>>,
        limit: usize,
        counters: Arc<Counters>,
        home: Option<tokio::runtime::Id>,
    ) -> Self {
        let now = Instant::now();
        Shared {
            alive: AtomicBool::new(true),
            created: now,
            addr,
            pool,
            streams: Mutex::new(Streams {
                in_flight: 0,
                limit,
                parked: None,
                last_used: now,
            }),
            counters,
            home,
        }
    }

    /// The stream accounting. Nothing panics while holding it, but a poisoned lock is
    /// recovered rather than propagated: the counts stay consistent under every guard.
    pub(crate) fn streams(&self) -> MutexGuard<'_, Streams> {
        crate::sync::lock(&self.streams)
    }

    /// Whether the driver task still runs the connection.
    pub(crate) fn is_alive(&self) -> bool {
        // Acquire pairs with the Release in `mark_dead`. This is a cheap early check only;
        // the decision that matters (whether to park a token) re-reads the flag under the
        // `streams` lock, which `mark_dead` takes after its store.
        self.alive.load(Ordering::Acquire)
    }

    /// Called by the driver task when the connection has ended. Returns the parked token, if
    /// the connection was full, for the driver to close.
    pub(crate) fn mark_dead(&self) -> Option<Token> {
        // Release: see `is_alive`. Any opener that locks `streams` after our lock below sees
        // `false` (the mutex orders it after this store), so it never parks a token we would
        // not find.
        self.alive.store(false, Ordering::Release);
        self.streams().parked.take()
    }

    pub(crate) fn pool(&self) -> Option<Arc<Pool<Conn>>> {
        self.pool.upgrade()
    }
}

/// Keeps one stream counted against its connection, from the moment it is counted until the
/// stream ends or is given up unopened; dropping it ends the count and, if the connection
/// was full (its token parked), hands its slot back to the pool.
///
/// While the counter also holds the slot's token (between `claim` and the release after
/// opening), nothing is parked, so an unopened ticket's drop only uncounts.
#[must_use = "dropping the ticket uncounts the stream at once"]
pub(crate) struct StreamTicket {
    shared: Arc<Shared>,
}

impl StreamTicket {
    /// Counts one more stream in `s` (the locked `streams` of `shared`) and returns its ticket.
    pub(crate) fn count(shared: &Arc<Shared>, s: &mut Streams, now: Instant) -> Self {
        s.in_flight += 1;
        s.last_used = now;
        // Relaxed: a figure for callers to read; it orders nothing (the per-connection
        // count under the lock is what admission relies on).
        shared
            .counters
            .streams_in_flight
            .fetch_add(1, Ordering::Relaxed);
        StreamTicket {
            shared: Arc::clone(shared),
        }
    }

    /// Counts one more stream if the connection has room under its last known limit; else
    /// returns that limit. For a caller that holds the slot's token (a lease).
    pub(crate) fn count_if_room(shared: &Arc<Shared>) -> Result<Self, usize> {
        let mut s = shared.streams();
        if s.in_flight >= s.limit {
            return Err(s.limit);
        }
        Ok(StreamTicket::count(shared, &mut s, Instant::now()))
    }

    /// The connection this stream is counted on.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Drop for StreamTicket {
    fn drop(&mut self) {
        let parked = {
            let mut s = self.shared.streams();
            s.in_flight -= 1;
            // Relaxed: as in `count`.
            self.shared
                .counters
                .streams_in_flight
                .fetch_sub(1, Ordering::Relaxed);
            s.last_used = Instant::now();
            if s.in_flight < s.limit {
                s.parked.take()
            } else {
                None
            }
        };
        if let Some(token) = parked {
            // The connection has room again: back to the pool (closed instead if it was
            // drained meanwhile). Without a pool there is nothing to return it to.
            if let Some(pool) = self.shared.pool() {
                let _ = pool.release(token, true);
            }
        }
    }
}

/// The response to a request sent with [`H2Pool::send_request`](super::H2Pool::send_request):
/// resolves to the response head and a [`RecvStream`] for its body.
///
/// It behaves like h2's `client::ResponseFuture` (same output apart from the body type); in
/// addition, until it and the resulting [`RecvStream`] are dropped, the stream counts against
/// its connection's stream limit.
#[must_use = "futures do nothing unless polled; dropping it cancels the stream"]
pub struct ResponseFuture {
    inner: ::h2::client::ResponseFuture,
    ticket: Option<StreamTicket>,
    addr: Target,
}

impl ResponseFuture {
    pub(super) fn new(
        inner: ::h2::client::ResponseFuture,
        ticket: StreamTicket,
        addr: Target,
    ) -> Self {
        ResponseFuture {
            inner,
            ticket: Some(ticket),
            addr,
        }
    }

    /// The HTTP/2 stream id of the request.
    pub fn stream_id(&self) -> ::h2::StreamId {
        self.inner.stream_id()
    }

    /// The address of the backend the request went to.
    pub fn backend_addr(&self) -> &Target {
        &self.addr
    }
}

impl Future for ResponseFuture {
    type Output = Result<http::Response<RecvStream>, ::h2::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(response)) => {
                let ticket = this.ticket.take();
                let addr = this.addr.clone();
                Poll::Ready(Ok(response.map(|inner| RecvStream {
                    inner,
                    _ticket: ticket,
                    addr,
                })))
            }
            Poll::Ready(Err(e)) => {
                // The stream is over: stop counting it now.
                this.ticket = None;
                Poll::Ready(Err(e))
            }
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("stream_id", &self.inner.stream_id())
            .field("backend_addr", &self.addr)
            .finish()
    }
}

/// The body of a response from [`H2Pool`](super::H2Pool): an `h2::RecvStream` (it derefs to
/// one, so `data()`, `trailers()`, `flow_control()` work as usual) that keeps its stream
/// counted against the connection's stream limit until it is dropped.
pub struct RecvStream {
    inner: ::h2::RecvStream,
    _ticket: Option<StreamTicket>,
    addr: Target,
}

impl RecvStream {
    /// Gives up the pool's accounting and returns the plain h2 body stream: from here on the
    /// pool no longer counts this stream against its connection.
    pub fn into_inner(self) -> ::h2::RecvStream {
        self.inner
    }

    /// The address of the backend the response came from.
    pub fn backend_addr(&self) -> &Target {
        &self.addr
    }
}

impl Deref for RecvStream {
    type Target = ::h2::RecvStream;

    fn deref(&self) -> &::h2::RecvStream {
        &self.inner
    }
}

impl DerefMut for RecvStream {
    fn deref_mut(&mut self) -> &mut ::h2::RecvStream {
        &mut self.inner
    }
}

impl fmt::Debug for RecvStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvStream")
            .field("inner", &self.inner)
            .field("backend_addr", &self.addr)
            .finish()
    }
}

/// Whether `send` can open a stream now: `false` after a GOAWAY or a connection error.
///
/// The pooled handle never has a pending-open stream (streams are opened on clones), so
/// h2's `poll_ready` only checks the connection's error state and never stores the waker:
/// polling with a no-op waker is a pure query.
pub(crate) fn accepts_streams(send: &mut ::h2::client::SendRequest<Bytes>) -> bool {
    refusal(send).is_none()
}

/// Why `send` cannot open a stream now (a received GOAWAY, a connection error), or `None`
/// if it can; a pure query, as [`accepts_streams`].
pub(crate) fn refusal(send: &mut ::h2::client::SendRequest<Bytes>) -> Option<::h2::Error> {
    let mut cx = Context::from_waker(Waker::noop());
    match send.poll_ready(&mut cx) {
        Poll::Ready(Err(e)) => Some(e),
        // `Pending` only with a pending-open stream, which the pooled handle never has.
        Poll::Ready(Ok(())) | Poll::Pending => None,
    }
}
