//! [`Reservation`]: a claimed empty slot, before its connection exists.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use crate::lease::LeaseOf;
use crate::pool::Pool;
use crate::sync::Arc;
use crate::token::{ConnId, Token};

/// A claimed empty slot of a [`Pool`], before its connection exists (`P` is `&Pool<T>` for
/// [`Reservation`] or `Arc<Pool<T>>` for [`OwnedReservation`]).
///
/// Reserving first and connecting second means two tasks that both find no idle connection
/// never both open one for the last free slot: the second finds no empty slot and waits.
/// Dropping an unfilled reservation (a failed or cancelled connect) empties the slot again
/// and hands it to the longest waiter.
///
/// ```
/// use tokenpool::Pool;
/// let pool = Pool::new(1)?;
/// let r = pool.reserve().expect("one empty slot");
/// assert!(pool.reserve().is_none(), "the only slot is reserved");
/// let lease = r.fill(String::from("connected"));
/// assert_eq!(*lease, "connected");
/// lease.release(true);
/// assert_eq!(pool.stats().available, 1);
/// # Ok::<(), tokenpool::Error>(())
/// ```
#[must_use = "dropping a reservation frees its slot at once"]
pub struct ReservationOf<P, T>
where
    P: Deref<Target = Pool<T>>,
{
    pool: P,
    /// The held slot, with no connection in it yet. `Some` until `fill` or drop.
    token: Option<Token>,
    _conn: PhantomData<fn() -> T>,
}

/// A [`ReservationOf`] that borrows its pool.
pub type Reservation<'a, T> = ReservationOf<&'a Pool<T>, T>;

/// A [`ReservationOf`] that owns an `Arc` of its pool: `'static`, so a spawned task can
/// connect and fill it.
pub type OwnedReservation<T> = ReservationOf<Arc<Pool<T>>, T>;

/// The token is taken only by `fill`, which consumes the reservation.
const RESERVED: &str = "a reservation owns its token until it is filled";

impl<P: Deref<Target = Pool<T>>, T> ReservationOf<P, T> {
    /// Wraps the token of an empty slot `pool` just claimed (or handed off).
    pub(crate) fn from_claimed(pool: P, token: Token) -> Self {
        ReservationOf {
            pool,
            token: Some(token),
            _conn: PhantomData,
        }
    }

    /// Puts the new connection into the reserved slot and returns exclusive access to it, as
    /// a [`LeaseOf`] (dropping it closes the connection; `release(true)` keeps it).
    ///
    /// If the slot was drained meanwhile (`drain_all`), the lease is still valid, and its
    /// release closes the connection.
    pub fn fill(mut self, conn: T) -> LeaseOf<P, T> {
        let mut token = self.token.take().expect(RESERVED);
        self.pool.put(&mut token, conn);
        // `self` now holds no token, so its drop does nothing; the pool moves into the lease.
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again, so reading `pool` out of it moves the
        // value exactly once.
        let pool = unsafe { std::ptr::read(&this.pool) };
        LeaseOf::from_valid(pool, token)
    }

    /// The id the connection will have once filled in (for example, to hand to the task that
    /// will watch the connection before it is installed).
    pub fn conn_id(&self) -> ConnId {
        self.token.as_ref().expect(RESERVED).conn_id()
    }

    /// The reserved slot's index.
    pub fn slot(&self) -> usize {
        self.token.as_ref().expect(RESERVED).slot()
    }

    /// The pool this reservation belongs to.
    pub fn pool(&self) -> &P {
        &self.pool
    }
}

impl<P: Deref<Target = Pool<T>>, T> Drop for ReservationOf<P, T> {
    fn drop(&mut self) {
        // An unfilled reservation holds the slot with no connection: release it as closed.
        if let Some(token) = self.token.take() {
            let _ = self.pool.release(token, false);
        }
    }
}

impl<P: Deref<Target = Pool<T>>, T> fmt::Debug for ReservationOf<P, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("token", &self.token)
            .finish()
    }
}

impl<T> Pool<T> {
    /// Claims an empty slot before its connection exists (for an async connect), so that two
    /// connects never race for the last slot. `None` if no slot is empty.
    ///
    /// The slot counts as `in_use` until [`fill`](ReservationOf::fill) puts the connection in,
    /// or the reservation is dropped (the slot is then empty again).
    pub fn reserve(&self) -> Option<Reservation<'_, T>> {
        let token = self.claim_empty()?;
        Some(ReservationOf::from_claimed(self, token))
    }

    /// Like [`reserve`](Pool::reserve), but only slot `slot` (modulo the capacity), if it
    /// is empty: for a caller that places connections itself.
    pub(crate) fn reserve_at(&self, slot: usize) -> Option<Reservation<'_, T>> {
        let token = self.claim_empty_at(slot)?;
        Some(ReservationOf::from_claimed(self, token))
    }

    /// Like [`reserve`](Pool::reserve), owning an `Arc` of the pool. Called as
    /// `Pool::reserve_owned(&pool)`.
    pub fn reserve_owned(pool: &Arc<Self>) -> Option<OwnedReservation<T>> {
        let token = pool.claim_empty()?;
        Some(ReservationOf::from_claimed(Arc::clone(pool), token))
    }
}
