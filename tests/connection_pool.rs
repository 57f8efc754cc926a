//! Behaviour of `ConnectionPool` across backends, tokens, reservations and leases.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokenpool::{
    Checkout, ConnectionPool, Error, Lease, OwnedLease, Pool, Released, Stats, MAX_BACKENDS,
};

/// A connection that counts its drops.
#[derive(Debug)]
struct Conn {
    id: u32,
    drops: Arc<AtomicUsize>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

struct Counter(Arc<AtomicUsize>);

impl Counter {
    fn new() -> Self {
        Counter(Arc::new(AtomicUsize::new(0)))
    }
    fn conn(&self, id: u32) -> Conn {
        Conn {
            id,
            drops: self.0.clone(),
        }
    }
    fn drops(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[test]
fn unknown_backend_is_a_clear_error_everywhere() {
    let c = Counter::new();
    let pool = ConnectionPool::new(2, 2).unwrap();
    let unknown = Error::UnknownBackend {
        backend: 2,
        backends: 2,
    };
    assert_eq!(pool.acquire(2).unwrap_err(), unknown);
    assert_eq!(pool.stats(2).unwrap_err(), unknown);
    assert_eq!(pool.drain_backend(2).unwrap_err(), unknown);
    assert_eq!(pool.reserve(2).unwrap_err(), unknown);
    assert!(pool.acquire_wait(2).is_err());
    assert!(matches!(
        pool.acquire_timeout(2, std::time::Duration::ZERO),
        Err(Error::UnknownBackend { .. })
    ));
    let err = pool.add_and_acquire(c.conn(9), 2).unwrap_err();
    assert_eq!(err.reason, unknown);
    assert_eq!(err.into_inner().id, 9, "the connection comes back");
    assert_eq!(c.drops(), 1, "dropped by us, after it came back");
    assert_eq!(
        unknown.to_string(),
        "unknown backend 2: the pool has 2 backends"
    );
}

#[test]
fn invalid_sizes_are_errors_not_panics() {
    assert!(matches!(
        ConnectionPool::<()>::new(0, 1),
        Err(Error::InvalidSize {
            what: "backends",
            ..
        })
    ));
    assert!(matches!(
        ConnectionPool::<()>::new(MAX_BACKENDS + 1, 1),
        Err(Error::InvalidSize {
            what: "backends",
            ..
        })
    ));
    assert!(matches!(
        ConnectionPool::<()>::new(1, 0),
        Err(Error::InvalidSize { what: "slots", .. })
    ));
}

#[test]
fn full_backend_hands_the_connection_back_and_other_backends_are_independent() {
    let c = Counter::new();
    let pool = ConnectionPool::new(2, 1).unwrap();
    let t0 = pool.add_and_acquire(c.conn(0), 0).unwrap();
    let err = pool.add_and_acquire(c.conn(1), 0).unwrap_err();
    assert_eq!(err.reason, Error::PoolFull);
    let back = err.into_inner();
    let t1 = pool.add_and_acquire(back, 1).expect("backend 1 has room");
    assert_eq!(pool.get(&t1).unwrap().id, 1);
    assert_eq!(c.drops(), 0, "nothing was lost or dropped");
    assert_eq!(pool.reserve(0).unwrap_err(), Error::PoolFull);
    pool.release(t0, true);
    pool.release(t1, true);
    assert_eq!(
        pool.total_stats(),
        Stats {
            available: 2,
            ..Stats::default()
        }
    );
}

#[test]
fn token_routes_to_its_own_backend() {
    let pool = ConnectionPool::new(3, 2).unwrap();
    let t = pool.add_and_acquire("b2", 2).unwrap();
    assert_eq!(t.backend(), 2);
    assert_eq!(pool.get(&t), Some(&"b2"));
    assert_eq!(pool.stats(2).unwrap().in_use, 1);
    assert_eq!(pool.stats(0).unwrap().in_use, 0);
    assert_eq!(pool.release(t, true), Released::Returned);
    assert_eq!(pool.acquire(0).unwrap_err(), Error::NoneAvailable);
    let t = pool.acquire(2).unwrap();
    pool.release(t, true);
}

#[test]
fn token_from_another_connection_pool_is_rejected() {
    let c = Counter::new();
    let a = ConnectionPool::new(1, 1).unwrap();
    let b = ConnectionPool::new(1, 1).unwrap();
    let ta = a.add_and_acquire(c.conn(1), 0).unwrap();
    let tb = b.add_and_acquire(c.conn(2), 0).unwrap();
    assert!(b.get(&ta).is_none());
    assert!(!b.drain(ta.conn_id()), "a foreign id drains nothing");
    assert_eq!(b.release(ta, false), Released::Rejected);
    assert_eq!(c.drops(), 0);
    assert_eq!(b.release(tb, false), Released::Closed);
    assert_eq!(c.drops(), 1);
}

#[test]
fn drain_backend_closes_idle_now_and_held_at_release() {
    let c = Counter::new();
    let pool = ConnectionPool::new(2, 2).unwrap();
    let held = pool.add_and_acquire(c.conn(0), 0).unwrap();
    let idle = pool.add_and_acquire(c.conn(1), 0).unwrap();
    let other = pool.add_and_acquire(c.conn(2), 1).unwrap();
    pool.release(idle, true);
    pool.release(other, true);
    assert_eq!(pool.drain_backend(0).unwrap(), 2);
    assert_eq!(
        c.drops(),
        1,
        "only the idle connection of backend 0 closed now"
    );
    assert_eq!(pool.stats(0).unwrap().draining, 1);
    assert_eq!(pool.stats(1).unwrap().available, 1, "backend 1 untouched");
    assert_eq!(pool.get(&held).unwrap().id, 0, "holder still has access");
    assert_eq!(pool.release(held, true), Released::Closed);
    assert_eq!(c.drops(), 2);
    assert_eq!(pool.stats(0).unwrap().empty, 2);
}

#[test]
fn reservation_fill_drain_and_drop() {
    let c = Counter::new();
    let pool = ConnectionPool::new(1, 2).unwrap();
    let r1 = pool.reserve(0).unwrap();
    let r2 = pool.reserve(0).unwrap();
    assert_eq!(
        pool.stats(0).unwrap().in_use,
        2,
        "reservations hold their slots"
    );
    assert_eq!(pool.reserve(0).unwrap_err(), Error::PoolFull);
    assert_eq!(
        pool.add_and_acquire(c.conn(9), 0).unwrap_err().reason,
        Error::PoolFull
    );
    drop(r2); // a failed connect: slot free again
    assert_eq!(pool.stats(0).unwrap().empty, 1);
    // drained while connecting: the token works, and its release closes it
    let id = r1.conn_id();
    assert_eq!(pool.drain_all(), 1);
    let t = r1.fill(c.conn(1));
    assert_eq!(
        t.conn_id(),
        id,
        "the id handed out before fill names the connection"
    );
    assert_eq!(pool.get(&t).unwrap().id, 1);
    let drops_before = c.drops();
    assert_eq!(pool.release(t, true), Released::Closed);
    assert_eq!(c.drops(), drops_before + 1);
    assert_eq!(pool.stats(0).unwrap().empty, 2);
}

#[test]
fn lease_drop_closes_and_release_true_keeps() {
    let c = Counter::new();
    let pool = Pool::new(1).unwrap();
    pool.release(pool.add(c.conn(1)).unwrap(), true);
    let lease = pool.acquire_lease().unwrap();
    assert_eq!(lease.id, 1);
    assert_eq!(lease.release(true), Released::Returned);
    assert_eq!(c.drops(), 0);
    let lease = pool.acquire_lease().unwrap();
    drop(lease);
    assert_eq!(c.drops(), 1, "dropping a lease closes its connection");
    assert_eq!(pool.stats().empty, 1);
}

#[test]
fn lease_of_panicking_holder_frees_its_slot() {
    let c = Counter::new();
    let pool = Pool::new(1).unwrap();
    pool.release(pool.add(c.conn(1)).unwrap(), true);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _lease = pool.acquire_lease().unwrap();
        panic!("handler bug");
    }));
    assert!(r.is_err());
    assert_eq!(c.drops(), 1);
    assert_eq!(pool.stats().empty, 1, "no slot stays in_use after a panic");
}

#[test]
fn lease_new_rejects_foreign_tokens_and_gives_them_back() {
    let a = Pool::new(1).unwrap();
    let b = Pool::<i32>::new(1).unwrap();
    let t = a.add(1).unwrap();
    let t = Lease::new(&b, t).unwrap_err();
    assert_eq!(a.release(t, true), Released::Returned);
    let t = a.acquire().unwrap();
    let lease = Lease::new(&a, t).unwrap();
    assert_eq!(lease.into_token().slot(), 0);
    assert_eq!(
        a.stats().in_use,
        1,
        "into_token gives up the guard, not the slot"
    );
}

#[test]
fn owned_lease_moves_into_another_thread() {
    let c = Counter::new();
    let pool = Arc::new(Pool::new(1).unwrap());
    pool.release(pool.add(c.conn(5)).unwrap(), true);
    let lease = OwnedLease::acquire(&pool).unwrap();
    let id = std::thread::spawn(move || {
        let id = lease.id;
        lease.release(true);
        id
    })
    .join()
    .unwrap();
    assert_eq!(id, 5);
    assert_eq!(pool.stats().available, 1);
    assert!(OwnedLease::acquire(&pool).is_some());
    assert_eq!(
        c.drops(),
        1,
        "the temporary lease above was dropped: closed"
    );
}

#[test]
fn checkout_prefers_a_connection_over_an_empty_slot() {
    let pool = Pool::new(2).unwrap();
    pool.release(pool.add(1).unwrap(), true);
    match pool.try_checkout() {
        Some(Checkout::Acquired(t)) => {
            pool.release(t, true);
        }
        other => panic!("expected the idle connection, got {other:?}"),
    }
    let t = pool.acquire().unwrap();
    match pool.try_checkout() {
        Some(Checkout::Vacant(r)) => drop(r),
        other => panic!("expected the empty slot, got {other:?}"),
    }
    let _r = pool.reserve().unwrap();
    assert!(
        pool.try_checkout().is_none(),
        "one held, one reserved: nothing"
    );
    pool.release(t, true);
}
