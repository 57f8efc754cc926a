//! [`ConnectionPool`]: one [`Pool`] per backend, addressed by backend index.

use std::fmt;

use crate::error::{SizeError, UnknownBackend};
use crate::pool::{Pool, Released, MAX_SLOTS};
use crate::stats::Stats;
use crate::sync::Arc;
use crate::token::{ConnId, Token};

/// Most backends one [`ConnectionPool`] can have (a token names its backend in 16 bits).
pub const MAX_BACKENDS: usize = 1 << 16;

/// Most slots one [`ConnectionPool`] can have over all its backends (`backends *
/// slots_per_backend`): 2^20, about 128 MiB of slots for small connection handles (each slot
/// sits on its own cache line). A larger request is a [`SizeError`], not an abort.
pub const MAX_TOTAL_SLOTS: usize = 1 << 20;

/// Pools for many backends (the original design's `H2ConnectionPool`).
///
/// Per-backend work goes through that backend's [`Pool`] ([`backend`](ConnectionPool::backend)),
/// so every operation has one form and one error: the lookup fails with [`UnknownBackend`],
/// the pool's operation as it does on a standalone pool. Tokens and ids carry their backend,
/// so `get`, `release` and `drain` route them here without a backend argument. Backends are
/// independent: each has its own slots and waiters.
///
/// ```
/// use tokenpool::{ConnectionPool, UnknownBackend};
///
/// let pool = ConnectionPool::new(2, 4)?;
/// let t = pool.backend(1)?.add("conn to backend 1").unwrap();
/// assert_eq!(t.backend(), 1);
/// assert_eq!(pool.get(&t), Some(&"conn to backend 1"));
/// pool.release(t, true);
///
/// assert_eq!(pool.backend(1)?.stats().available, 1);
/// assert!(pool.backend(0)?.acquire().is_none());
/// assert_eq!(pool.backend(7).unwrap_err(), UnknownBackend { backend: 7, backends: 2 });
/// # Ok::<(), tokenpool::Error>(())
/// ```
pub struct ConnectionPool<T> {
    backends: Box<[Arc<Pool<T>>]>,
}

impl<T> ConnectionPool<T> {
    /// `backends` pools of `slots_per_backend` slots each.
    ///
    /// # Errors
    /// [`SizeError`] unless `1 <= backends <= MAX_BACKENDS`,
    /// `1 <= slots_per_backend <= MAX_SLOTS`, `backends * slots_per_backend <=
    /// MAX_TOTAL_SLOTS`, and the slots can be allocated.
    pub fn new(backends: usize, slots_per_backend: usize) -> Result<Self, SizeError> {
        SizeError::check("backends", backends, MAX_BACKENDS)?;
        SizeError::check("slots", slots_per_backend, MAX_SLOTS)?;
        SizeError::check(
            "slots in total",
            backends.saturating_mul(slots_per_backend),
            MAX_TOTAL_SLOTS,
        )?;
        let mut pools = Vec::new();
        pools
            .try_reserve_exact(backends)
            .map_err(|_| SizeError::Alloc {
                slots: backends * slots_per_backend,
            })?;
        for b in 0..backends {
            // `b < MAX_BACKENDS` fits in 16 bits.
            pools.push(Arc::new(Pool::for_backend(slots_per_backend, b as u16)?));
        }
        Ok(ConnectionPool {
            backends: pools.into_boxed_slice(),
        })
    }

    /// Number of backends.
    pub fn backends(&self) -> usize {
        self.backends.len()
    }

    /// The pool of one backend: acquire, add, reserve, wait, drain and read its stats there.
    ///
    /// # Errors
    /// [`UnknownBackend`] for an index outside `0..backends()`.
    #[inline]
    pub fn backend(&self, backend: usize) -> Result<&Arc<Pool<T>>, UnknownBackend> {
        self.backends.get(backend).ok_or(UnknownBackend {
            backend,
            backends: self.backends.len(),
        })
    }

    /// Shared access to the connection `token` holds; `None` if this pool did not issue it.
    #[inline]
    pub fn get<'a>(&'a self, token: &'a Token) -> Option<&'a T> {
        self.backends.get(token.backend())?.get(token)
    }

    /// Exclusive access to the connection `token` holds; `None` if this pool did not issue it.
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

    /// Drains every backend. Returns how many connections it closed or marked.
    pub fn drain_all(&self) -> usize {
        self.backends.iter().map(|p| p.drain_all()).sum()
    }

    /// Slot counts and waiters summed over all backends.
    pub fn total_stats(&self) -> Stats {
        self.backends
            .iter()
            .fold(Stats::default(), |acc, p| acc + p.stats())
    }
}

impl<T> fmt::Debug for ConnectionPool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.backends.iter()).finish()
    }
}
