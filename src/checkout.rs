//! Checking out: a connection or a free slot, now ([`Pool::try_checkout`]), blocking with a
//! timeout ([`Pool::acquire_timeout`]) or as a future ([`Pool::acquire_wait`]). Every path
//! hands out owners that release on drop ([`LeaseOf`], [`ReservationOf`]), so a panic, an
//! early return or a cancelled task never leaves a slot `in_use`.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::Timeout;
use crate::lease::LeaseOf;
use crate::pool::{Handoff, Pool};
use crate::reservation::ReservationOf;
use crate::sync::{park_timeout, Arc, Backoff, SPINS};
use crate::wait::Node;

/// What a checkout found: a connection, or a free slot to open one in (`P` is `&Pool<T>` for
/// [`Checkout`] or `Arc<Pool<T>>` for [`OwnedCheckout`]).
#[must_use = "a checkout holds a slot until its lease is released or its reservation dropped"]
pub enum CheckoutOf<P, T>
where
    P: Deref<Target = Pool<T>>,
{
    /// Exclusive access to an available connection. Dropping the lease closes it; call
    /// [`release(true)`](LeaseOf::release) to give it back for reuse.
    Acquired(LeaseOf<P, T>),
    /// No connection was available, but this slot was empty and is now reserved: open a
    /// connection and [`fill`](ReservationOf::fill) it, or drop the reservation.
    Vacant(ReservationOf<P, T>),
}

/// A [`CheckoutOf`] that borrows its pool.
pub type Checkout<'a, T> = CheckoutOf<&'a Pool<T>, T>;

/// A [`CheckoutOf`] that owns an `Arc` of its pool (`'static`).
pub type OwnedCheckout<T> = CheckoutOf<Arc<Pool<T>>, T>;

impl<P: Deref<Target = Pool<T>>, T> fmt::Debug for CheckoutOf<P, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckoutOf::Acquired(l) => f.debug_tuple("Acquired").field(l).finish(),
            CheckoutOf::Vacant(r) => f.debug_tuple("Vacant").field(r).finish(),
        }
    }
}

/// An available connection, else a reserved empty slot, else `None`.
fn try_checkout_in<P, T>(pool: &P) -> Option<CheckoutOf<P, T>>
where
    P: Deref<Target = Pool<T>> + Clone,
{
    if let Some(t) = pool.acquire() {
        return Some(CheckoutOf::Acquired(LeaseOf::from_valid(pool.clone(), t)));
    }
    let t = pool.claim_empty()?;
    Some(CheckoutOf::Vacant(ReservationOf::from_claimed(
        pool.clone(),
        t,
    )))
}

/// What a releaser handed us, as an owner.
fn from_handoff<P, T>(pool: P, handoff: Handoff) -> CheckoutOf<P, T>
where
    P: Deref<Target = Pool<T>>,
{
    match handoff {
        Handoff::Conn(t) => CheckoutOf::Acquired(LeaseOf::from_valid(pool, t)),
        Handoff::Vacant(t) => CheckoutOf::Vacant(ReservationOf::from_claimed(pool, t)),
    }
}

/// We got a slot on our own while our node may have been handed another: give that back.
fn withdraw<T>(pool: &Pool<T>, node: &Arc<Node<Handoff>>) {
    if let Some(h) = pool.waiters().cancel(node) {
        pool.release_handoff(h);
    }
}

/// The blocking wait of `acquire_timeout` and `acquire_timeout_owned`.
fn acquire_timeout_in<P, T>(pool: P, timeout: Duration) -> Result<CheckoutOf<P, T>, Timeout>
where
    P: Deref<Target = Pool<T>> + Clone,
{
    if let Some(c) = try_checkout_in(&pool) {
        return Ok(c);
    }
    let deadline = Instant::now().checked_add(timeout);
    let backoff = Backoff::new();
    for _ in 0..SPINS {
        backoff.spin();
        if let Some(c) = try_checkout_in(&pool) {
            return Ok(c);
        }
    }
    let node = pool.waiters().register_thread();
    loop {
        // Look again after (re-)registering: a release that ran before our registration was
        // visible did not see us (see `wait` for the protocol).
        if let Some(c) = try_checkout_in(&pool) {
            withdraw(&pool, &node);
            return Ok(c);
        }
        while !node.is_notified() {
            let wait = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    // Out of time; but a releaser may have handed us a slot just now.
                    _ => {
                        return match pool.waiters().cancel(&node) {
                            Some(h) => Ok(from_handoff(pool, h)),
                            None => Err(Timeout),
                        }
                    }
                },
                None => Duration::from_secs(3600),
            };
            park_timeout(wait);
        }
        // Woken, and out of the queue: the freed slot was handed to us, or (rarely) another
        // thread took it first and we look for ourselves.
        if let Some(h) = node.take_payload() {
            return Ok(from_handoff(pool, h));
        }
        if let Some(c) = try_checkout_in(&pool) {
            return Ok(c);
        }
        pool.waiters().requeue_front(&node);
    }
}

impl<T> Pool<T> {
    /// An available connection, else a reserved empty slot, else `None`. Does not wait.
    pub fn try_checkout(&self) -> Option<Checkout<'_, T>> {
        try_checkout_in(&self)
    }

    /// Like [`try_checkout`](Pool::try_checkout), owning an `Arc` of the pool. Called as
    /// `Pool::try_checkout_owned(&pool)`.
    pub fn try_checkout_owned(pool: &Arc<Self>) -> Option<OwnedCheckout<T>> {
        try_checkout_in(pool)
    }

    /// Like [`try_checkout`](Pool::try_checkout), but when every slot is held, parks the thread
    /// until a release frees one or `timeout` passes.
    ///
    /// The thread spins briefly first (well under a microsecond), then joins the pool's FIFO
    /// wait queue and parks (a futex wait on Linux). A release that
    /// finds the queue non-empty hands the slot it freed straight to the waiter at the front
    /// (the connection, or after a close the empty slot, reserved), so a thread that keeps
    /// taking and returning connections without ever waiting cannot starve a waiter.
    ///
    /// # Errors
    /// [`Timeout`] if nothing was freed in time.
    ///
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use tokenpool::{Checkout, Pool, Timeout};
    ///
    /// let pool = Pool::new(1)?;
    /// let held = pool.add("conn").unwrap();
    /// assert_eq!(pool.acquire_timeout(Duration::from_millis(10)).unwrap_err(), Timeout);
    /// std::thread::scope(|s| {
    ///     s.spawn(|| pool.release(held, true));
    ///     match pool.acquire_timeout(Duration::from_secs(5))? {
    ///         Checkout::Acquired(lease) => { lease.release(true); }
    ///         Checkout::Vacant(_) => unreachable!("the connection was returned, not closed"),
    ///     }
    ///     Ok::<(), Timeout>(())
    /// })?;
    /// # Ok::<(), tokenpool::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Checkout<'_, T>, Timeout> {
        acquire_timeout_in(self, timeout)
    }

    /// Like [`acquire_timeout`](Pool::acquire_timeout), owning an `Arc` of the pool. Called
    /// as `Pool::acquire_timeout_owned(&pool, timeout)`.
    ///
    /// # Errors
    /// [`Timeout`] if nothing was freed in time.
    pub fn acquire_timeout_owned(
        pool: &Arc<Self>,
        timeout: Duration,
    ) -> Result<OwnedCheckout<T>, Timeout> {
        acquire_timeout_in(Arc::clone(pool), timeout)
    }

    /// A future that resolves to a [`Checkout`] once a connection is available or a slot is
    /// empty, waiting in the same FIFO queue as [`acquire_timeout`](Pool::acquire_timeout).
    /// Works on any executor. Bound it with your runtime's timeout (for example
    /// `tokio::time::timeout`).
    ///
    /// Cancel-safe: dropping it before it completes gives back any slot a release handed it
    /// (or passes the wake-up on), and what it resolves to releases on drop, so a task
    /// cancelled at any point never leaves a slot `in_use`.
    ///
    /// ```
    /// use tokenpool::{Checkout, Pool};
    /// let pool = Pool::new(1).unwrap();
    /// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// rt.block_on(async {
    ///     match pool.acquire_wait().await {
    ///         Checkout::Vacant(r) => { r.fill(42).release(true); }
    ///         Checkout::Acquired(_) => unreachable!("the pool starts empty"),
    ///     }
    /// });
    /// assert_eq!(pool.stats().available, 1);
    /// ```
    pub fn acquire_wait(&self) -> AcquireWait<'_, T> {
        AcquireWaitOf {
            pool: self,
            node: None,
        }
    }

    /// Like [`acquire_wait`](Pool::acquire_wait), owning an `Arc` of the pool, so that the
    /// future and what it resolves to are `'static`. Called as
    /// `Pool::acquire_wait_owned(&pool)`.
    pub fn acquire_wait_owned(pool: &Arc<Self>) -> OwnedAcquireWait<T> {
        AcquireWaitOf {
            pool: Arc::clone(pool),
            node: None,
        }
    }
}

/// The future returned by [`Pool::acquire_wait`] and [`Pool::acquire_wait_owned`].
#[must_use = "futures do nothing unless polled"]
pub struct AcquireWaitOf<P, T>
where
    P: Deref<Target = Pool<T>> + Clone,
{
    pool: P,
    /// Our entry in the pool's wait queue while we wait.
    node: Option<Arc<Node<Handoff>>>,
}

/// An [`AcquireWaitOf`] that borrows its pool.
pub type AcquireWait<'a, T> = AcquireWaitOf<&'a Pool<T>, T>;

/// An [`AcquireWaitOf`] that owns an `Arc` of its pool (`'static`).
pub type OwnedAcquireWait<T> = AcquireWaitOf<Arc<Pool<T>>, T>;

// No field is structurally pinned: the node is behind an `Arc`.
impl<P: Deref<Target = Pool<T>> + Clone, T> Unpin for AcquireWaitOf<P, T> {}

impl<P: Deref<Target = Pool<T>> + Clone, T> Future for AcquireWaitOf<P, T> {
    type Output = CheckoutOf<P, T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CheckoutOf<P, T>> {
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
            // Woken, and out of the queue: take what was handed to us, or look ourselves.
            if let Some(h) = node.take_payload() {
                this.node = None;
                return Poll::Ready(from_handoff(this.pool.clone(), h));
            }
            if let Some(c) = try_checkout_in(&this.pool) {
                this.node = None;
                return Poll::Ready(c);
            }
            // Another thread took the freed slot first: back to the front of the queue.
            node.set_waker(cx.waker());
            this.pool.waiters().requeue_front(node);
        } else {
            if let Some(c) = try_checkout_in(&this.pool) {
                return Poll::Ready(c);
            }
            this.node = Some(this.pool.waiters().register_task(cx.waker()));
        }
        // Look again after (re-)registering (see `wait` for the protocol).
        if let Some(c) = try_checkout_in(&this.pool) {
            if let Some(node) = this.node.take() {
                withdraw(&this.pool, &node);
            }
            return Poll::Ready(c);
        }
        Poll::Pending
    }
}

impl<P: Deref<Target = Pool<T>> + Clone, T> Drop for AcquireWaitOf<P, T> {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            // Withdraw; if a release already handed us a slot, give it back (to the next
            // waiter, if any), else pass its wake-up on.
            withdraw(&self.pool, &node);
        }
    }
}

impl<P: Deref<Target = Pool<T>> + Clone, T> fmt::Debug for AcquireWaitOf<P, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcquireWait")
            .field("backend", &self.pool.backend())
            .field("waiting", &self.node.is_some())
            .finish()
    }
}
