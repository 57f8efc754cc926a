//! A lock-free, token-based connection pool for HTTP/2 backend connections.
//!
//! ```
//! use tokenpool::{ConnectionPool, Released};
//!
//! // Two backends, up to 4 connections each.
//! let pool = ConnectionPool::new(2, 4)?;
//!
//! // A new connection goes into an empty slot; we get a token, never a reference.
//! let token = pool.add_and_acquire(String::from("conn to 10.0.0.1"), 0).unwrap();
//! let id = token.conn_id(); // a Copy name for this connection, e.g. for its health task
//!
//! // Every access is checked against the slot word.
//! assert_eq!(pool.get(&token).map(String::as_str), Some("conn to 10.0.0.1"));
//! assert_eq!(pool.release(token, true), Released::Returned); // keep: back to the pool
//!
//! // The next request takes it again.
//! let token = pool.acquire(0)?;
//! // Meanwhile the backend sent GOAWAY: drain that connection by id. It is in use, so it
//! // is only marked; the holder's release closes it, exactly once.
//! assert!(pool.drain(id));
//! assert_eq!(pool.stats(0)?.draining, 1);
//! assert_eq!(pool.release(token, true), Released::Closed);
//! assert_eq!(pool.stats(0)?.empty, 4);
//! # Ok::<(), tokenpool::Error>(())
//! ```
//!
//! # Why tokens
//! Pools that hand out pointers (or `Arc`s plus flags) to pooled connections let several
//! holders reach one connection, which produces three classic races: a connection closed
//! twice, a connection evicted while a request still uses it, and a connection count that
//! underflows. Here the pool never hands out a reference that outlives a check: callers hold
//! a [`Token`], 8 bytes of plain data that stand for *exclusive* access to one slot, and every
//! access ([`Pool::get`], [`Pool::get_mut`]) validates the token against the slot word first.
//!
//! # The slot state machine
//! Each slot's state and generation live in one `AtomicU32`, changed only by compare-and-swap
//! from the exact expected word:
//!
//! ```text
//!              add / reserve                 acquire
//!   ┌───────┐ ───────────────▶ ┌────────┐ ◀──────────── ┌───────────┐
//!   │ empty │                  │ in_use │               │ available │
//!   └───────┘ ◀─────────────── └────────┘ ────────────▶ └───────────┘
//!       ▲     release(close)       │       release(keep)
//!       │                          │ drain / drain_all
//!       │   release(any)      ┌────▼─────┐
//!       └──────────────────── │ draining │
//!                             └──────────┘
//! ```
//!
//! Draining an *idle* connection first takes it (`available → in_use`), then closes it
//! (`in_use → empty`), so a connection is only ever dropped by a party that holds its slot:
//! exactly once, and never while another holder can reach it. Counts ([`Stats`]) are read
//! from the slot words, so they cannot drift or underflow.
//!
//! # Waiting
//! [`Pool::acquire_timeout`] parks the thread (after a short spin) until a release frees a
//! slot; [`Pool::acquire_wait`] is a future that does the same on any executor. Each freed
//! slot wakes at most one waiter, a wake-up is never lost, and a cancelled waiter passes its
//! wake-up on. Both return a [`Checkout`]: a connection, or a reserved empty slot in which to
//! open one.
//!
//! # Leases
//! [`Lease`] and [`OwnedLease`] wrap a token and release it on drop. **Drop closes** the
//! connection; call `release(true)` on the success path to return it. A panic or a cancelled
//! future therefore never leaves a slot `in_use`, and never returns a connection in an
//! unknown state to the pool.
//!
//! # Safety and correctness
//! - The slot word packs a 2-bit state and a 30-bit generation (`word` module). The
//!   generation advances when a slot receives a new connection, so it names a connection
//!   instance ([`ConnId`]): an id or token of a closed connection is rejected until the slot
//!   has held 2^30 more connections. Because every value of the word belongs to one stretch of
//!   one connection's life, a CAS from an exact expected word cannot succeed on a slot that
//!   moved on (no ABA within that horizon).
//! - A live token is the only one for its slot (tokens are move-only and `!Sync`), and only
//!   its holder moves the slot out of `in_use`/`draining`; that is what makes handing out
//!   `&T`/`&mut T` for the token's borrow sound. A token presented to a pool that did not
//!   issue it is rejected by its backend index, its slot index, or its generation. The last is
//!   probabilistic: pools start at spread-out generations, and a foreign token is accepted
//!   only if the other pool's slot is held with exactly the same 30-bit generation. Never
//!   pass a token to a pool that did not issue it.
//! - Every `unsafe` block (all in `slot.rs` and `pool.rs`) touches a connection cell only
//!   while the caller holds the slot. The `loom-tests` crate model-checks every race scenario
//!   of the design (double close, eviction racing use, stale ids, lost wake-ups, …) against
//!   this very code compiled with loom's atomics.
//!
//! # Features
//! - `h2` (default): the HTTP/2 layer on `h2` + `tokio`: [`h2::H2Pool`], pooled h2c connections
//!   to backends, with stream multiplexing, health checks and idle/lifetime eviction.
//! - `loom`: builds the core against loom (used by `loom-tests` with `--cfg loom`).
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![deny(unused_must_use, unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(loom, allow(dead_code, unused_imports))]

mod checkout;
mod connection_pool;
mod error;
#[cfg(all(feature = "h2", not(loom)))]
pub mod h2;
mod lease;
mod pool;
mod slot;
mod stats;
mod sync;
mod token;
mod wait;
mod word;

/// The README's examples run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use checkout::{AcquireWait, Checkout, Reservation};
pub use connection_pool::{ConnectionPool, MAX_BACKENDS};
pub use error::{AddError, Error};
pub use lease::{Lease, LeaseOf, OwnedLease};
pub use pool::{Pool, Released, MAX_SLOTS};
pub use stats::Stats;
pub use token::{ConnId, Token};
