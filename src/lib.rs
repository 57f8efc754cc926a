//! A lock-free, token-based connection pool for HTTP/2 backend connections.
//!
//! ```
//! use std::time::Duration;
//! use tokenpool::{Checkout, ConnectionPool, Released};
//!
//! // Two backends, up to 4 connections each.
//! let pool = ConnectionPool::new(2, 4)?;
//! let backend = pool.backend(0)?;
//!
//! // Check out a connection: none is open yet, so we get a reserved slot to open one in.
//! let lease = match backend.acquire_timeout(Duration::from_secs(1))? {
//!     Checkout::Acquired(lease) => lease,
//!     Checkout::Vacant(slot) => slot.fill(String::from("conn to 10.0.0.1")),
//! };
//! let id = lease.conn_id(); // a Copy name for this connection, e.g. for its health task
//! assert_eq!(*lease, "conn to 10.0.0.1");
//! lease.release(true); // success: back to the pool (dropping the lease would close it)
//!
//! // The low-level API hands out tokens, never references; every access is checked.
//! let token = backend.acquire().expect("the connection is idle");
//! assert_eq!(pool.get(&token).map(String::as_str), Some("conn to 10.0.0.1"));
//! // Meanwhile the backend sent GOAWAY: drain that connection by id. It is in use, so it
//! // is only marked; the holder's release closes it, exactly once.
//! assert!(pool.drain(id));
//! assert_eq!(backend.stats().draining, 1);
//! assert_eq!(pool.release(token, true), Released::Closed);
//! assert_eq!(backend.stats().empty, 4);
//! # Ok::<(), tokenpool::Error>(())
//! ```
//!
//! # Why tokens
//! Pools that hand out pointers (or `Arc`s plus flags) to pooled connections let several
//! holders reach one connection, which produces three classic races: a connection closed
//! twice, a connection evicted while a request still uses it, and a connection count that
//! underflows. Here the pool never hands out a reference that outlives a check: callers hold
//! a [`Token`], 16 bytes of plain data that stand for *exclusive* access to one slot, and every
//! access ([`Pool::get`], [`Pool::get_mut`]) checks that this pool issued the token first.
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
//! slot; [`Pool::acquire_wait`] is a future that does the same on any executor. Waiters form
//! one FIFO queue, and a release that finds it non-empty hands the slot it freed straight to
//! the waiter at the front, so threads that never wait cannot starve one that does. A
//! wake-up is never lost, and a cancelled waiter gives back whatever it was handed. Both
//! return a [`Checkout`]: a connection, or a reserved empty slot in which to open one.
//!
//! # Owners and raw tokens
//! Every path that a task or thread naturally takes hands out owners that release on drop:
//! [`Lease`] (a connection; **drop closes it**, `release(true)` returns it), [`Reservation`]
//! (an empty slot; drop frees it, [`fill`](ReservationOf::fill) makes it a lease), and their
//! `Owned*` forms, which hold an `Arc` of the pool for `'static` futures. A panic, an early
//! return or a cancelled future therefore never leaves a slot `in_use`, and never returns a
//! connection in an unknown state to the pool. Raw [`Token`]s ([`Pool::acquire`],
//! [`Pool::add`], [`LeaseOf::into_token`]) are the explicit low-level API for callers that
//! store them; a token dropped without `release` leaks its slot, and debug builds count it
//! ([`unreleased_tokens`]).
//!
//! # Safety and correctness
//! - Every pool has an identity that is never reused within the process (a 64-bit counter),
//!   and every token and [`ConnId`] carries the identity of the pool that issued it. Each
//!   operation compares it (and the backend and slot index) before it touches a slot, so a
//!   token or id presented to a pool that did not issue it (another pool, a backend of
//!   another [`ConnectionPool`], or a pool that was dropped and replaced) is rejected
//!   deterministically, whatever generation its slot has reached. Tokens are 16 bytes.
//! - A live token is then held by construction: tokens are move-only and `!Sync`,
//!   [`Pool::release`] consumes them, and only the party that holds a slot moves it out of
//!   `in_use`/`draining`. That is what makes handing out `&T`/`&mut T` for the token's borrow
//!   sound, and why [`Pool::get`] reads no atomic (debug builds still check the slot word).
//! - The slot word packs a 2-bit state and a 30-bit generation (`word` module). The
//!   generation advances when a slot receives a new connection, so it names a connection
//!   instance ([`ConnId`]): an id of a closed connection is rejected until the slot has held
//!   2^30 more connections. Because every value of the word belongs to one stretch of one
//!   connection's life, a CAS from an exact expected word cannot succeed on a slot that
//!   moved on (no ABA within that horizon; tokens do not depend on it).
//! - Every `unsafe` block touches a connection cell only while the caller holds the slot. The
//!   `loom-tests` crate model-checks every race scenario of the design (double close,
//!   eviction racing use, stale ids, lost wake-ups, hand-offs to waiters, …) against this
//!   very code compiled with loom's atomics and with debug assertions on.
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
mod reservation;
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

pub use checkout::{
    AcquireWait, AcquireWaitOf, Checkout, CheckoutOf, OwnedAcquireWait, OwnedCheckout,
};
pub use connection_pool::{ConnectionPool, MAX_BACKENDS, MAX_TOTAL_SLOTS};
pub use error::{Error, SizeError, Timeout, UnknownBackend};
pub use lease::{Lease, LeaseOf, OwnedLease};
pub use pool::{Pool, Released, MAX_SLOTS};
pub use reservation::{OwnedReservation, Reservation, ReservationOf};
pub use stats::Stats;
pub use token::{unreleased_tokens, ConnId, Token};
