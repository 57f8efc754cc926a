//! Tokens (exclusive access to one held slot), connection ids (names of one connection) and
//! the pool identity both carry.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::word::{Generation, Word};

/// The identity of one [`Pool`](crate::Pool): unique within the process, never reused.
///
/// Every token and id carries the identity of the pool that issued it, and every pool
/// operation compares it before it touches a slot, so a token of another pool, of another
/// backend's pool, or of a pool that was dropped is rejected deterministically, whatever its
/// slot and generation say.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PoolId(NonZeroU64);

/// The next identity to hand out.
static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

impl PoolId {
    /// A fresh identity.
    ///
    /// # Panics
    /// After 2^64 - 1 pools have been created in this process (never in practice: one pool per
    /// nanosecond for 584 years), as [`std::thread::ThreadId`] does when its counter runs out,
    /// rather than hand out an identity twice.
    pub(crate) fn next() -> PoolId {
        // Relaxed: only uniqueness matters, and a read-modify-write on one location never
        // hands out the same value twice, whatever the ordering. `fetch_update` with
        // `checked_add` stops at the last value instead of wrapping to a used one. A plain
        // std atomic even under loom: the value orders no memory, and pools are created
        // outside the raced parts of the models.
        let id = NEXT_POOL_ID
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
            .expect("tokenpool: pool identities exhausted (2^64 - 1 pools created)");
        PoolId(NonZeroU64::new(id).expect("the counter starts at 1 and never wraps"))
    }

    /// The bare value, for the scan hint's cache key.
    #[inline(always)]
    pub(crate) fn get(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Debug for PoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pool#{}", self.0)
    }
}

/// Tokens dropped without being released, counted in debug builds.
static UNRELEASED: AtomicU64 = AtomicU64::new(0);

/// How many [`Token`]s were dropped without being given to `release` (or wrapped in a
/// [`Lease`](crate::Lease) that released them), in this process so far. **Debug builds only**:
/// with `debug_assertions` off the count is not kept and this returns 0.
///
/// A dropped token leaves its slot `in_use` for good (the pool cannot know the token is gone),
/// so a count that grows is a leak of pool capacity. A token handed to the wrong pool's
/// `release` (answered [`Released::Rejected`](crate::Released::Rejected)) counts too: its own
/// pool never got it back. Check it at the end of a test run:
///
/// ```
/// use tokenpool::Pool;
/// let before = tokenpool::unreleased_tokens();
/// let pool = Pool::new(1)?;
/// let token = pool.add("conn").unwrap();
/// drop(token); // a bug: the slot stays in_use
/// if cfg!(debug_assertions) {
///     assert_eq!(tokenpool::unreleased_tokens(), before + 1);
/// }
/// # Ok::<(), tokenpool::Error>(())
/// ```
pub fn unreleased_tokens() -> u64 {
    // Relaxed: a statistic; it orders nothing.
    UNRELEASED.load(Ordering::Relaxed)
}

/// Exclusive access to one pooled connection: the low-level handle behind every lease.
///
/// A token is 16 bytes of plain data naming its pool, backend and slot and the slot word it
/// holds; it points at nothing. It is neither `Copy` nor `Clone`, so there is exactly one per
/// held slot, and [`Pool::release`](crate::Pool::release) consumes it. It is `Send` (hand it to
/// another thread or task) but not `Sync`, so two threads can never reach the same connection
/// through one `&Token`. Every access checks that the token belongs to the pool it is shown to.
///
/// Raw tokens come from [`Pool::acquire`](crate::Pool::acquire), [`Pool::add`](crate::Pool::add)
/// and [`LeaseOf::into_token`](crate::LeaseOf::into_token). **A token dropped without being
/// released leaves its slot `in_use` for good**; debug builds count such drops
/// ([`unreleased_tokens`]). Prefer [`Lease`](crate::Lease) and the waiting APIs, which hand out
/// owners that release on drop (also when a task is cancelled).
///
/// ```compile_fail
/// use tokenpool::Pool;
/// let pool = Pool::new(1).unwrap();
/// let token = pool.add(String::from("conn")).unwrap();
/// pool.release(token, true);
/// pool.get(&token); // error: `token` was moved into `release`
/// ```
///
/// ```compile_fail
/// use tokenpool::Pool;
/// let pool = Pool::new(1).unwrap();
/// let token = pool.add(String::from("conn")).unwrap();
/// let copy = token.clone(); // error: tokens cannot be cloned
/// ```
#[must_use = "a token holds its slot in_use until it is released"]
pub struct Token {
    pool: PoolId,
    /// The slot word this token holds: always `InUse` with this connection's generation.
    held: Word,
    slot: u16,
    backend: u16,
    /// `Cell` is `Send + !Sync`: tokens move between threads but are never shared.
    _not_sync: PhantomData<Cell<()>>,
}

const _: () = assert!(std::mem::size_of::<Token>() == 16);
const _: () = assert!(std::mem::size_of::<Option<Token>>() == 16);

impl Token {
    #[inline(always)]
    pub(crate) fn new(pool: PoolId, held: Word, slot: u16, backend: u16) -> Token {
        Token {
            pool,
            held,
            slot,
            backend,
            _not_sync: PhantomData,
        }
    }

    /// The identity of the pool that issued this token.
    #[inline(always)]
    pub(crate) fn pool_id(&self) -> PoolId {
        self.pool
    }

    /// The held slot word (`InUse` with this connection's generation).
    #[inline(always)]
    pub(crate) fn held(&self) -> Word {
        self.held
    }

    /// Ends the token without counting it as unreleased: the pool has taken its slot back
    /// (or handed it on). Returns the held word and the slot index.
    #[inline(always)]
    pub(crate) fn consume(self) -> (Word, usize) {
        let parts = (self.held, usize::from(self.slot));
        std::mem::forget(self);
        parts
    }

    /// The backend index this token belongs to (0 for a standalone [`Pool`](crate::Pool)).
    #[inline]
    pub fn backend(&self) -> usize {
        usize::from(self.backend)
    }

    /// The slot index this token holds.
    #[inline]
    pub fn slot(&self) -> usize {
        usize::from(self.slot)
    }

    /// The id of the connection this token gives access to; stays valid after the token is
    /// released, and matches nothing once that connection is closed.
    #[inline]
    pub fn conn_id(&self) -> ConnId {
        ConnId {
            pool: self.pool,
            gen: self.held.generation(),
            slot: self.slot,
            backend: self.backend,
        }
    }
}

impl Drop for Token {
    #[inline(always)]
    fn drop(&mut self) {
        if cfg!(debug_assertions) {
            // Relaxed: a statistic (see `unreleased_tokens`).
            UNRELEASED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("pool", &self.pool)
            .field("backend", &self.backend)
            .field("slot", &self.slot)
            .field("generation", &self.held.generation().get())
            .finish()
    }
}

/// The name of one connection *instance*: `Copy`, comparable, and safe to keep anywhere.
///
/// Unlike a [`Token`] it grants no access. Use it to drain a specific connection from outside,
/// for instance from the task that drives an HTTP/2 connection when it sees GOAWAY:
/// [`Pool::drain`](crate::Pool::drain) closes it now if idle, or when its holder releases it.
/// It names its pool, so no other pool acts on it. After that connection is closed and its
/// slot reused, the old id matches nothing (within the generation horizon of 2^30 connections
/// per slot, see the crate docs). 16 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    pool: PoolId,
    gen: Generation,
    slot: u16,
    backend: u16,
}

impl ConnId {
    /// The identity of the pool this connection belongs to.
    #[inline(always)]
    pub(crate) fn pool_id(&self) -> PoolId {
        self.pool
    }

    /// The generation, typed.
    #[inline(always)]
    pub(crate) fn gen(&self) -> Generation {
        self.gen
    }

    /// The backend index of the connection.
    pub fn backend(&self) -> usize {
        usize::from(self.backend)
    }

    /// The slot index of the connection.
    pub fn slot(&self) -> usize {
        usize::from(self.slot)
    }

    /// The generation of the connection (distinct for each connection a slot has held,
    /// modulo 2^30).
    pub fn generation(&self) -> u32 {
        self.gen.get()
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ConnId({}:{}:{}#{})",
            self.pool.0,
            self.backend,
            self.slot,
            self.gen.get()
        )
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "backend {} slot {} generation {}",
            self.backend,
            self.slot,
            self.gen.get()
        )
    }
}
