//! `tokenpool::unreleased_tokens()` counts raw tokens dropped without release (debug builds),
//! and nothing else.
//!
//! The counter is process-wide, so this file holds a single test: no other test of this
//! process can drop a token while it reads the counter.

#[path = "common/counting.rs"]
mod counting;

use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use counting::Ledger;
use tokenpool::{unreleased_tokens, Checkout, ConnectionPool, Lease, Pool, Released};

/// Asserts the counter moved by exactly `by` since `*base` (in debug builds; release builds
/// keep no count and always read 0), then moves `*base` on.
#[track_caller]
fn assert_moved(base: &mut u64, by: u64, what: &str) {
    let now = unreleased_tokens();
    if cfg!(debug_assertions) {
        assert_eq!(now, *base + by, "{what}");
    } else {
        assert_eq!(now, 0, "release builds keep no count");
    }
    *base = now;
}

#[test]
fn only_raw_tokens_dropped_without_release_are_counted() {
    let ledger = Ledger::small();
    let pool = Pool::new(4).unwrap();
    let mut base = unreleased_tokens();
    assert_moved(&mut base, 0, "nothing happened yet");

    // A raw token dropped without release: exactly one.
    let t = pool.add(ledger.conn(0)).unwrap();
    drop(t);
    assert_moved(&mut base, 1, "a dropped raw token");
    assert_eq!(pool.stats().in_use, 1, "its slot leaked");

    // Released raw tokens, kept or closed.
    let t = pool.add(ledger.conn(0)).unwrap();
    assert_eq!(pool.release(t, true), Released::Returned);
    let t = pool.acquire().unwrap();
    assert_eq!(pool.release(t, false), Released::Closed);
    assert_moved(&mut base, 0, "release, keep or close");

    // Leases: dropped (closes), released, and turned back into a raw token then released.
    pool.release(pool.add(ledger.conn(0)).unwrap(), true);
    drop(pool.acquire_lease().unwrap());
    pool.release(pool.add(ledger.conn(0)).unwrap(), true);
    pool.acquire_lease().unwrap().release(true);
    let t = pool.acquire_lease().unwrap().into_token();
    assert_eq!(pool.release(t, true), Released::Returned);
    let t = Lease::new(&pool, pool.acquire().unwrap())
        .unwrap()
        .into_token();
    assert_eq!(pool.release(t, true), Released::Returned);
    assert_moved(&mut base, 0, "leases");

    // Reservations: dropped unfilled, and filled then released.
    drop(pool.reserve().unwrap());
    pool.reserve().unwrap().fill(ledger.conn(0)).release(false);
    match pool.try_checkout() {
        Some(Checkout::Acquired(l)) => drop(l),
        other => panic!("expected the idle connection: {other:?}"),
    }
    assert_moved(&mut base, 0, "reservations and checkouts");

    // Drains and evictions take slots with tokens of their own.
    let t = pool.add(ledger.conn(0)).unwrap();
    assert!(pool.drain(t.conn_id()));
    assert_eq!(pool.release(t, true), Released::Closed);
    let t = pool.add(ledger.conn(0)).unwrap();
    let id = t.conn_id();
    pool.release(t, true);
    assert!(pool.drain(id));
    pool.release(pool.add(ledger.conn(0)).unwrap(), true);
    assert_eq!(pool.evict_idle(|_| true), 1);
    assert_moved(&mut base, 0, "drain and evict_idle");

    // Hand-offs to waiters, taken and given back by a cancelled waiter.
    let small = Pool::new(1).unwrap();
    let held = small.add(ledger.conn(0)).unwrap();
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut a = Box::pin(small.acquire_wait());
    let mut b = Box::pin(small.acquire_wait());
    assert!(a.as_mut().poll(&mut cx).is_pending());
    assert!(b.as_mut().poll(&mut cx).is_pending());
    small.release(held, true); // handed to `a`
    drop(a); // cancelled: given on to `b`
    match b.as_mut().poll(&mut cx) {
        Poll::Ready(Checkout::Acquired(l)) => l.release(true),
        other => panic!("b: {other:?}"),
    };
    drop(b);
    assert!(matches!(
        small.acquire_timeout(Duration::ZERO),
        Ok(Checkout::Acquired(_))
    ));
    assert_moved(&mut base, 0, "hand-offs and waits");

    // A token handed to the wrong pool's release counts: its own pool never got it back.
    let t = small.add(ledger.conn(0)).unwrap();
    assert_eq!(pool.release(t, true), Released::Rejected);
    assert_moved(&mut base, 1, "a token rejected by another pool");
    // And one refused by `Lease::new` counts only if it is then dropped.
    let cp = ConnectionPool::new(2, 1).unwrap();
    let t = cp.backend(1).unwrap().add(ledger.conn(1)).unwrap();
    let t = Lease::new(&**cp.backend(0).unwrap(), t).unwrap_err();
    assert_moved(&mut base, 0, "Lease::new gives the token back");
    assert_eq!(cp.release(t, true), Released::Returned);
    assert_moved(&mut base, 0, "released to its own pool");
    let t = cp.backend(0).unwrap().add(ledger.conn(0)).unwrap();
    drop(t);
    assert_moved(&mut base, 1, "a dropped raw token of a ConnectionPool");
}
