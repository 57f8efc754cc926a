//! Checking out: a connection or a free slot, now ([`Pool::try_checkout`]), blocking with a
//! timeout ([`Pool::acquire_timeout`]) or as a future ([`Pool::acquire_wait`]), and the
//! [`Reservation`] of a free slot.

use std::fmt;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::pool::Pool;
use crate::sync::{park_timeout, Arc, Backoff};
use crate::token::{ConnId, Token};
use crate::wait::Node;
use crate::word::gen_of;

/// What a checkout found: a connection, or a free slot to open one in.
#[derive(Debug)]
#[must_use = "a checkout holds a slot until its token is released or its reservation dropped"]
pub enum Checkout<'a, T> {
    /// Exclusive access to an available connection.
    Acquired(Token),
    /// No connection was available, but this slot was empty and is now reserved: open a
    /// connection and [`fill`](Reservation::fill) it, or drop the reservation.
    Vacant(Reservation<'a, T>),
}

/// A claimed empty slot, before its connection exists.
///
/// Reserving first and connecting second means two tasks that both find no idle connection
/// never both open one for the last free slot: the second finds no empty slot and waits.
/// Dropping an unfilled reservation (a failed or cancelled connect) empties the slot again
/// and wakes a waiter.
///
/// ```
/// use tokenpool::Pool;
/// let pool = Pool::new(1)?;
/// let r = pool.reserve().expect("one empty slot");
/// assert!(pool.reserve().is_none(), "the only slot is reserved");
/// let token = r.fill(String::from("connected"));
/// assert_eq!(pool.get(&token).unwrap(), "connected");
/// pool.release(token, true);
/// # Ok::<(), tokenpool::Error>(())
/// ```
#[must_use = "dropping a reservation frees its slot at once"]
pub struct Reservation<'a, T> {
    pool: &'a Pool<T>,
    slot: usize,
    held: u32,
}

impl<'a, T> Reservation<'a, T> {
    pub(crate) fn new(pool: &'a Pool<T>, slot: usize, held: u32) -> Self {
        Reservation { pool, slot, held }
    }

    /// Puts the new connection into the reserved slot and returns exclusive access to it.
    ///
    /// If the slot was drained meanwhile (`drain_all`), the token is still valid, and its
    /// release closes the connection.
    pub fn fill(self, conn: T) -> Token {
        let this = ManuallyDrop::new(self);
        this.pool.fill(this.slot, this.held, conn)
    }

    /// The id the connection will have once filled in (for example, to hand to the task that
    /// will watch the connection before it is installed).
    pub fn conn_id(&self) -> ConnId {
        self.pool.token(self.held, self.slot).conn_id()
    }

    /// The reserved slot's index.
    pub fn slot(&self) -> usize {
        self.slot
    }
}

impl<T> Drop for Reservation<'_, T> {
    fn drop(&mut self) {
        // An unfilled reservation holds the slot with no connection: release it as closed.
        let token = self.pool.token(self.held, self.slot);
        let _ = self.pool.release(token, false);
    }
}

impl<T> fmt::Debug for Reservation<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("backend", &self.pool.backend())
            .field("slot", &self.slot)
            .field("generation", &gen_of(self.held))
            .finish()
    }
}

impl<T> Pool<T> {
    /// An available connection, else a reserved empty slot, else `None`. Does not wait.
    pub fn try_checkout(&self) -> Option<Checkout<'_, T>> {
        if let Some(t) = self.acquire() {
            return Some(Checkout::Acquired(t));
        }
        self.reserve().map(Checkout::Vacant)
    }

    /// Like [`try_checkout`](Pool::try_checkout), but when every slot is held, parks the thread
    /// until a release frees one or `timeout` passes.
    ///
    /// The thread spins through a short [`Backoff`](crossbeam_utils::Backoff) first, then
    /// parks (a futex wait on Linux) until a release hands it a wake-up. Each freed slot wakes
    /// at most one waiter.
    ///
    /// # Errors
    /// [`Error::Timeout`] if nothing was freed in time.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use tokenpool::{Checkout, Error, Pool};
    ///
    /// let pool = Pool::new(1)?;
    /// let held = pool.add("conn").unwrap();
    /// assert_eq!(pool.acquire_timeout(Duration::from_millis(10)).unwrap_err(), Error::Timeout);
    /// std::thread::scope(|s| {
    ///     s.spawn(|| pool.release(held, true));
    ///     match pool.acquire_timeout(Duration::from_secs(5))? {
    ///         Checkout::Acquired(t) => { pool.release(t, true); }
    ///         Checkout::Vacant(_) => unreachable!("the connection was returned, not closed"),
    ///     }
    ///     Ok::<(), Error>(())
    /// })?;
    /// # Ok::<(), tokenpool::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Checkout<'_, T>, Error> {
        if let Some(c) = self.try_checkout() {
            return Ok(c);
        }
        let deadline = Instant::now().checked_add(timeout);
        let backoff = Backoff::new();
        while !backoff.is_completed() {
            backoff.snooze();
            if let Some(c) = self.try_checkout() {
                return Ok(c);
            }
        }
        loop {
            let node = self.waiters.register_thread();
            // Look again after registering: a release that ran before our registration was
            // visible did not see us (see `wait` for the protocol).
            if let Some(c) = self.try_checkout() {
                self.waiters.cancel(&node);
                return Ok(c);
            }
            while !node.is_notified() {
                let wait = match deadline {
                    Some(d) => match d.checked_duration_since(Instant::now()) {
                        Some(left) if !left.is_zero() => left,
                        _ => {
                            self.waiters.cancel(&node);
                            return Err(Error::Timeout);
                        }
                    },
                    None => Duration::from_secs(3600),
                };
                park_timeout(wait);
            }
            if let Some(c) = self.try_checkout() {
                return Ok(c);
            }
            // Another thread took the freed slot before we woke: wait again.
        }
    }

    /// A future that resolves to a [`Checkout`] once a connection is available or a slot is
    /// empty. Works on any executor. Bound it with your runtime's timeout (for example
    /// `tokio::time::timeout`); dropping it before it completes passes on any wake-up it was
    /// given, so no release is lost.
    ///
    /// ```
    /// use tokenpool::{Checkout, Pool};
    /// let pool = Pool::new(1).unwrap();
    /// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// rt.block_on(async {
    ///     let checkout = pool.acquire_wait().await;
    ///     match checkout {
    ///         Checkout::Vacant(r) => { let t = r.fill(42); pool.release(t, true); }
    ///         Checkout::Acquired(_) => unreachable!("the pool starts empty"),
    ///     }
    /// });
    /// assert_eq!(pool.stats().available, 1);
    /// ```
    pub fn acquire_wait(&self) -> AcquireWait<'_, T> {
        AcquireWait {
            pool: self,
            node: None,
        }
    }
}

/// The future returned by [`Pool::acquire_wait`].
#[must_use = "futures do nothing unless polled"]
pub struct AcquireWait<'a, T> {
    pool: &'a Pool<T>,
    /// Our entry in the pool's wait queue while we wait.
    node: Option<Arc<Node>>,
}

impl<'a, T> Future for AcquireWait<'a, T> {
    type Output = Checkout<'a, T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Checkout<'a, T>> {
        let this = self.get_mut();
        if let Some(node) = &this.node {
            if !node.is_notified() {
                node.set_waker(cx.waker());
                // Look again after publishing the waker: a notify that took the old waker
                // stored NOTIFIED first.
                if !node.is_notified() {
                    return Poll::Pending;
                }
            }
            // Woken: our node left the queue; try for the freed slot.
            this.node = None;
        }
        if let Some(c) = this.pool.try_checkout() {
            return Poll::Ready(c);
        }
        let node = this.pool.waiters.register_task(cx.waker());
        if let Some(c) = this.pool.try_checkout() {
            this.pool.waiters.cancel(&node);
            return Poll::Ready(c);
        }
        this.node = Some(node);
        Poll::Pending
    }
}

impl<T> Drop for AcquireWait<'_, T> {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            // Withdraw; if a release already picked us, hand its wake-up to the next waiter.
            self.pool.waiters.cancel(&node);
        }
    }
}

impl<T> fmt::Debug for AcquireWait<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcquireWait")
            .field("backend", &self.pool.backend())
            .field("waiting", &self.node.is_some())
            .finish()
    }
}
