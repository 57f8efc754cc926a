//! Tokens (exclusive access to one held slot) and connection ids (names of one connection).

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use crate::word::gen_of;

/// Exclusive access to one pooled connection, returned by `acquire`, `add` and
/// [`Reservation::fill`](crate::Reservation::fill).
///
/// A token is 8 bytes of plain data naming a backend, a slot and the slot word it holds; it
/// points at nothing. It is neither `Copy` nor `Clone`, so there is exactly one per held slot
/// and [`Pool::release`](crate::Pool::release) consumes it. It is `Send` (hand it to another
/// thread or task) but not `Sync`, so two threads can never reach the same connection through
/// one `&Token`. Every access checks it against the slot word.
///
/// A token that is dropped without being released leaves its slot `in_use` for good; prefer
/// [`Lease`](crate::Lease) or [`OwnedLease`](crate::OwnedLease), which release on drop.
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
    /// The slot word this token holds: always `pack(InUse, generation)`.
    held: u32,
    slot: u16,
    backend: u16,
    /// `Cell` is `Send + !Sync`: tokens move between threads but are never shared.
    _not_sync: PhantomData<Cell<()>>,
}

const _: () = assert!(std::mem::size_of::<Token>() == 8);

impl Token {
    #[inline(always)]
    pub(crate) fn new(held: u32, slot: u16, backend: u16) -> Token {
        Token {
            held,
            slot,
            backend,
            _not_sync: PhantomData,
        }
    }

    /// The held slot word (`InUse` with this connection's generation).
    #[inline(always)]
    pub(crate) fn held(&self) -> u32 {
        self.held
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
            gen: gen_of(self.held),
            slot: self.slot,
            backend: self.backend,
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("backend", &self.backend)
            .field("slot", &self.slot)
            .field("generation", &gen_of(self.held))
            .finish()
    }
}

/// The name of one connection *instance*: `Copy`, comparable, and safe to keep anywhere.
///
/// Unlike a [`Token`] it grants no access. Use it to drain a specific connection from outside,
/// for instance from the task that drives an HTTP/2 connection when it sees GOAWAY:
/// [`Pool::drain`](crate::Pool::drain) closes it now if idle, or when its holder releases it.
/// After that connection is closed and its slot reused, the old id matches nothing (within the
/// generation horizon of 2^30 connections per slot, see the crate docs).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    gen: u32,
    slot: u16,
    backend: u16,
}

impl ConnId {
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
        self.gen
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnId({}:{}#{})", self.backend, self.slot, self.gen)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "backend {} slot {} generation {}",
            self.backend, self.slot, self.gen
        )
    }
}
