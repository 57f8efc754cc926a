//! [`ConnectionPool`]: one [`Pool`] per backend, addressed by backend index.

use std::fmt;
use std::time::Duration;

use crate::checkout::{AcquireWait, Checkout, Reservation};
use crate::error::{AddError, Error};
use crate::pool::{Pool, Released, MAX_SLOTS};
use crate::stats::Stats;
use crate::sync::Arc;
use crate::token::{ConnId, Token};

/// Most backends one [`ConnectionPool`] can have (a token names its backend in 16 bits).
pub const MAX_BACKENDS: usize = 1 << 16;

/// Pools for many backends (the original design's `H2ConnectionPool`).
///
/// Tokens carry their backend index, so `get`, `release` and `drain` need no backend
/// argument. Backends are independent: each has its own slots and waiters.
///
/// ```
/// use tokenpool::{ConnectionPool, Error};
///
/// let pool = ConnectionPool::new(2, 4)?;
/// let t = pool.add_and_acquire("conn to backend 1", 1).unwrap();
/// assert_eq!(t.backend(), 1);
/// assert_eq!(pool.get(&t), Some(&"conn to backend 1"));
/// pool.release(t, true);
///
/// assert_eq!(pool.stats(1)?.available, 1);
/// assert!(matches!(pool.acquire(0), Err(Error::NoneAvailable)));
/// assert!(matches!(pool.acquire(7), Err(Error::UnknownBackend { backend: 7, backends: 2 })));
/// # Ok::<(), Error>(())
/// ```
pub struct ConnectionPool<T> {
    backends: Box<[Arc<Pool<T>>]>,
}

impl<T> ConnectionPool<T> {
    /// `backends` pools of `slots_per_backend` slots each.
    ///
    /// # Errors
    /// [`Error::InvalidSize`] unless `1 <= backends <= MAX_BACKENDS` and
    /// `1 <= slots_per_backend <= MAX_SLOTS`.
    pub fn new(backends: usize, slots_per_backend: usize) -> Result<Self, Error> {
        if backends == 0 || backends > MAX_BACKENDS {
            return Err(Error::InvalidSize {
                requested: backends,
                max: MAX_BACKENDS,
                what: "backends",
            });
        }
        if slots_per_backend == 0 || slots_per_backend > MAX_SLOTS {
            return Err(Error::InvalidSize {
                requested: slots_per_backend,
                max: MAX_SLOTS,
                what: "slots",
            });
        }
        let backends = (0..backends)
            // `b < MAX_BACKENDS` fits in 16 bits.
            .map(|b| Pool::for_backend(slots_per_backend, b as u16).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(ConnectionPool { backends })
    }

    /// Number of backends.
    pub fn backends(&self) -> usize {
        self.backends.len()
    }

    /// The pool of one backend (for leases, waiting and per-backend operations).
    ///
    /// # Errors
    /// [`Error::UnknownBackend`] for an index outside `0..backends()`.
    pub fn backend(&self, backend: usize) -> Result<&Arc<Pool<T>>, Error> {
        self.backends.get(backend).ok_or(Error::UnknownBackend {
            backend,
            backends: self.backends.len(),
        })
    }

    /// Takes exclusive access to an available connection of `backend`.
    ///
    /// # Errors
    /// [`Error::UnknownBackend`], or [`Error::NoneAvailable`] when no connection of that
    /// backend is available now.
    pub fn acquire(&self, backend: usize) -> Result<Token, Error> {
        self.backend(backend)?.acquire().ok_or(Error::NoneAvailable)
    }

    /// Adds a new connection to an empty slot of `backend` and returns exclusive access to it.
    ///
    /// # Errors
    /// [`Error::UnknownBackend`] or [`Error::PoolFull`], with the connection handed back.
    pub fn add_and_acquire(&self, conn: T, backend: usize) -> Result<Token, AddError<T>> {
        match self.backend(backend) {
            Ok(pool) => pool.add(conn).map_err(|conn| AddError {
                reason: Error::PoolFull,
                conn,
            }),
            Err(reason) => Err(AddError { reason, conn }),
        }
    }

    /// Reserves an empty slot of `backend` before connecting (see [`Pool::reserve`]).
    ///
    /// # Errors
    /// [`Error::UnknownBackend`], or [`Error::PoolFull`] when no slot is empty.
    pub fn reserve(&self, backend: usize) -> Result<Reservation<'_, T>, Error> {
        self.backend(backend)?.reserve().ok_or(Error::PoolFull)
    }

    /// Shared access to the connection `token` holds; `None` if the token is not live here.
    #[inline]
    pub fn get<'a>(&'a self, token: &'a Token) -> Option<&'a T> {
        self.backends.get(token.backend())?.get(token)
    }

    /// Exclusive access to the connection `token` holds; `None` if the token is not live here.
    #[inline]
    pub fn get_mut<'a>(&'a self, token: &'a mut Token) -> Option<&'a mut T> {
        self.backends.get(token.backend())?.get_mut(token)
    }

    /// Returns (`keep = true`) or closes the connection `token` holds; see [`Pool::release`].
    #[inline]
    pub fn release(&self, token: Token, keep: bool) -> Released {
        match self.backends.get(token.backend()) {
            Some(pool) => pool.release(token, keep),
            None => Released::Rejected,
        }
    }

    /// Drains one connection by id; see [`Pool::drain`].
    pub fn drain(&self, id: ConnId) -> bool {
        self.backends
            .get(id.backend())
            .is_some_and(|pool| pool.drain(id))
    }

    /// Drains every connection of `backend`: idle ones now, held ones at release. Returns how
    /// many it closed or marked.
    ///
    /// # Errors
    /// [`Error::UnknownBackend`].
    pub fn drain_backend(&self, backend: usize) -> Result<usize, Error> {
        Ok(self.backend(backend)?.drain_all())
    }

    /// Drains every backend. Returns how many connections it closed or marked.
    pub fn drain_all(&self) -> usize {
        self.backends.iter().map(|p| p.drain_all()).sum()
    }

    /// Slot counts of `backend`, derived from its slot words.
    ///
    /// # Errors
    /// [`Error::UnknownBackend`].
    pub fn stats(&self, backend: usize) -> Result<Stats, Error> {
        Ok(self.backend(backend)?.stats())
    }

    /// Slot counts summed over all backends.
    pub fn total_stats(&self) -> Stats {
        self.backends
            .iter()
            .fold(Stats::default(), |acc, p| acc + p.stats())
    }

    /// A connection of `backend` or a reserved empty slot, waiting (blocking) up to `timeout`;
    /// see [`Pool::acquire_timeout`].
    ///
    /// # Errors
    /// [`Error::UnknownBackend`] or [`Error::Timeout`].
    pub fn acquire_timeout(
        &self,
        backend: usize,
        timeout: Duration,
    ) -> Result<Checkout<'_, T>, Error> {
        self.backend(backend)?.acquire_timeout(timeout)
    }

    /// A future for a connection of `backend` or a reserved empty slot; see
    /// [`Pool::acquire_wait`].
    ///
    /// # Errors
    /// [`Error::UnknownBackend`].
    pub fn acquire_wait(&self, backend: usize) -> Result<AcquireWait<'_, T>, Error> {
        Ok(self.backend(backend)?.acquire_wait())
    }
}

impl<T> fmt::Debug for ConnectionPool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.backends.iter()).finish()
    }
}
