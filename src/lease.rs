//! RAII leases: a token that releases itself.
//!
//! **Dropping a lease closes the connection** (`release(token, false)`); returning it to the
//! pool is an explicit [`Lease::release`]`(true)` on the success path. This is the original
//! design's rule (every error path closes): a lease dropped by `?`, by a panic unwinding or by
//! a cancelled future may hold a connection in an unknown state (half a request written), and
//! closing it is the only answer that is always safe. Either way no slot stays `in_use`.
//!
//! Leases are built on the pool's raw token API; the pool knows nothing of them.

use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};

use crate::pool::{Pool, Released};
use crate::sync::Arc;
use crate::token::{ConnId, Token};

/// A [`Token`] borrowed from a [`Pool`] that closes its connection when dropped unless
/// [`release`](LeaseOf::release)d with `keep = true`. Derefs to the connection.
///
/// ```
/// use tokenpool::Pool;
/// let pool = Pool::new(1)?;
/// pool.release(pool.add(vec![1u8]).unwrap(), true);
///
/// let mut lease = pool.acquire_lease().expect("one idle connection");
/// lease.push(2); // DerefMut to the connection
/// lease.release(true); // success: back to the pool
///
/// let lease = pool.acquire_lease().unwrap();
/// assert_eq!(*lease, vec![1, 2]);
/// drop(lease); // no release(true): closed
/// assert_eq!(pool.stats().empty, 1);
/// # Ok::<(), tokenpool::Error>(())
/// ```
pub type Lease<'a, T> = LeaseOf<&'a Pool<T>, T>;

/// Like [`Lease`], but owns an `Arc` of its pool, so it is `'static` and can move into spawned
/// tasks. Dropping it closes the connection unless released with `keep = true`.
///
/// ```
/// use std::sync::Arc;
/// use tokenpool::{OwnedLease, Pool};
/// let pool = Arc::new(Pool::new(1)?);
/// pool.release(pool.add(0u64).unwrap(), true);
/// let mut lease: OwnedLease<u64> = Pool::acquire_lease_owned(&pool).expect("idle connection");
/// std::thread::spawn(move || {
///     *lease += 1;
///     lease.release(true);
/// }).join().unwrap();
/// assert_eq!(pool.stats().available, 1);
/// # Ok::<(), tokenpool::Error>(())
/// ```
pub type OwnedLease<T> = LeaseOf<Arc<Pool<T>>, T>;

/// A token together with the pool it belongs to (`P` is `&Pool<T>` for [`Lease`] or
/// `Arc<Pool<T>>` for [`OwnedLease`]); releases on drop, closing the connection.
#[must_use = "dropping a lease closes its connection"]
pub struct LeaseOf<P, T>
where
    P: Deref<Target = Pool<T>>,
{
    pool: P,
    /// Ours until `release`/`into_token` move it out (forgetting `self`) or `drop` releases it.
    token: ManuallyDrop<Token>,
    _conn: PhantomData<fn() -> T>,
}

impl<P: Deref<Target = Pool<T>>, T> LeaseOf<P, T> {
    /// Wraps a raw token of `pool`; hands the token back if `pool` did not issue it.
    ///
    /// # Errors
    /// The token, untouched, if it belongs to another pool (or backend, or a dropped pool).
    pub fn new(pool: P, token: Token) -> Result<Self, Token> {
        if pool.get(&token).is_none() {
            return Err(token);
        }
        Ok(Self::from_valid(pool, token))
    }

    /// Wraps a token `pool` just issued (acquired, added or filled) or handed off.
    #[inline(always)]
    pub(crate) fn from_valid(pool: P, token: Token) -> Self {
        LeaseOf {
            pool,
            token: ManuallyDrop::new(token),
            _conn: PhantomData,
        }
    }

    /// Takes the lease apart without running its `Drop`.
    #[inline(always)]
    fn into_parts(self) -> (P, Token) {
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is never used again and, being `ManuallyDrop`, never dropped, so each
        // field is moved out exactly once; `token` was initialized by `from_valid` and only
        // `drop` (which cannot run now) takes it otherwise.
        unsafe {
            (
                std::ptr::read(&this.pool),
                ManuallyDrop::into_inner(std::ptr::read(&this.token)),
            )
        }
    }

    /// Releases now: `keep = true` returns the connection to the pool, `false` closes it.
    #[inline(always)]
    pub fn release(self, keep: bool) -> Released {
        let (pool, token) = self.into_parts();
        pool.release(token, keep)
    }

    /// Gives up the RAII guard and returns the raw token, to be given to
    /// [`Pool::release`](crate::Pool::release) by hand.
    pub fn into_token(self) -> Token {
        self.into_parts().1
    }

    /// The id of the leased connection.
    pub fn conn_id(&self) -> ConnId {
        self.token.conn_id()
    }

    /// The pool this lease belongs to.
    pub fn pool(&self) -> &P {
        &self.pool
    }
}

impl<T> Pool<T> {
    /// Takes an available connection as a [`Lease`] (released on drop), or `None` if none is
    /// available now. Does not wait; see [`acquire_wait`](Pool::acquire_wait) for that.
    #[inline]
    pub fn acquire_lease(&self) -> Option<Lease<'_, T>> {
        self.acquire().map(|t| LeaseOf::from_valid(self, t))
    }

    /// Like [`acquire_lease`](Pool::acquire_lease), owning an `Arc` of the pool, so that the
    /// lease is `'static` and can move into spawned tasks and threads. Called as
    /// `Pool::acquire_lease_owned(&pool)`.
    #[inline]
    pub fn acquire_lease_owned(pool: &Arc<Self>) -> Option<OwnedLease<T>> {
        let t = pool.acquire()?;
        Some(LeaseOf::from_valid(Arc::clone(pool), t))
    }
}

/// Only the holder moves a held slot out of InUse/Draining, and the lease is the holder.
const VALID: &str = "a lease's token stays valid until the lease releases it";

impl<P: Deref<Target = Pool<T>>, T> Deref for LeaseOf<P, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        self.pool.get(&self.token).expect(VALID)
    }
}

impl<P: Deref<Target = Pool<T>>, T> DerefMut for LeaseOf<P, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        self.pool.get_mut(&mut self.token).expect(VALID)
    }
}

impl<P: Deref<Target = Pool<T>>, T> Drop for LeaseOf<P, T> {
    fn drop(&mut self) {
        // SAFETY: `drop` runs at most once and nothing uses `token` after it; `release` and
        // `into_token` forget the lease instead of dropping it, so they never reach here.
        let token = unsafe { ManuallyDrop::take(&mut self.token) };
        self.pool.release(token, false);
    }
}

impl<P: Deref<Target = Pool<T>>, T> fmt::Debug for LeaseOf<P, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("token", &*self.token)
            .finish()
    }
}
