//! Behaviour of `ConnectionPool` across backends, tokens, reservations and leases.

#[path = "common/counting.rs"]
mod counting;

use std::sync::Arc;
use std::time::Duration;

use counting::Ledger;
use tokenpool::{
    Checkout, CheckoutOf, ConnectionPool, Error, Lease, Pool, Released, SizeError, Stats,
    UnknownBackend, MAX_BACKENDS, MAX_SLOTS,
};

#[test]
fn unknown_backend_is_a_clear_error() {
    let pool = ConnectionPool::<()>::new(2, 2).unwrap();
    let unknown = UnknownBackend {
        backend: 2,
        backends: 2,
    };
    assert_eq!(pool.backend(2).unwrap_err(), unknown);
    assert_eq!(
        pool.backend(usize::MAX).unwrap_err(),
        UnknownBackend {
            backend: usize::MAX,
            backends: 2
        }
    );
    assert_eq!(pool.backend(1).unwrap().backend(), 1, "the last one exists");
    assert_eq!(
        unknown.to_string(),
        "unknown backend 2: the pool has 2 backends"
    );
    // `?` gathers it into the umbrella error, which shows the same message.
    let via_question_mark = || -> Result<(), Error> {
        pool.backend(2)?;
        Ok(())
    };
    let err = via_question_mark().unwrap_err();
    assert_eq!(err, Error::UnknownBackend(unknown));
    assert_eq!(err.to_string(), unknown.to_string());
}

#[test]
fn invalid_sizes_are_errors_not_panics() {
    assert_eq!(
        ConnectionPool::<()>::new(0, 1).unwrap_err(),
        SizeError::OutOfRange {
            what: "backends",
            requested: 0,
            max: MAX_BACKENDS
        }
    );
    assert_eq!(
        ConnectionPool::<()>::new(MAX_BACKENDS + 1, 1).unwrap_err(),
        SizeError::OutOfRange {
            what: "backends",
            requested: MAX_BACKENDS + 1,
            max: MAX_BACKENDS
        }
    );
    assert_eq!(
        ConnectionPool::<()>::new(1, 0).unwrap_err(),
        SizeError::OutOfRange {
            what: "slots",
            requested: 0,
            max: MAX_SLOTS
        }
    );
    assert_eq!(
        ConnectionPool::<()>::new(1, MAX_SLOTS + 1).unwrap_err(),
        SizeError::OutOfRange {
            what: "slots",
            requested: MAX_SLOTS + 1,
            max: MAX_SLOTS
        }
    );
    let err = Pool::<()>::new(0).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("invalid number of slots: 0 (allowed: 1..={MAX_SLOTS})")
    );
    assert_eq!(Error::from(err.clone()), Error::Size(err));
}

#[test]
fn full_backend_hands_the_connection_back_and_other_backends_are_independent() {
    let ledger = Ledger::small();
    let pool = ConnectionPool::new(2, 1).unwrap();
    let (b0, b1) = (pool.backend(0).unwrap(), pool.backend(1).unwrap());
    let t0 = b0.add(ledger.conn(0)).unwrap();
    let refused = ledger.conn(0);
    let refused_id = refused.id;
    let back = b0.add(refused).unwrap_err();
    assert_eq!(
        back.id, refused_id,
        "the full backend hands the same one back"
    );
    assert_eq!(ledger.total_drops(), 0, "nothing was lost or dropped");
    let t1 = b1.add(back).expect("backend 1 has room");
    assert_eq!(pool.get(&t1).unwrap().id, refused_id);
    assert!(b0.reserve().is_none(), "backend 0 is full");
    assert!(b0.try_checkout().is_none());
    pool.release(t0, true);
    pool.release(t1, true);
    assert_eq!(
        pool.total_stats(),
        Stats {
            available: 2,
            ..Stats::default()
        }
    );
    assert_eq!(ledger.total_drops(), 0);
}

#[test]
fn token_routes_to_its_own_backend() {
    let pool = ConnectionPool::new(3, 2).unwrap();
    let t = pool.backend(2).unwrap().add("b2").unwrap();
    assert_eq!(t.backend(), 2);
    assert_eq!(pool.get(&t), Some(&"b2"));
    assert_eq!(pool.backend(2).unwrap().stats().in_use, 1);
    assert_eq!(pool.backend(0).unwrap().stats().in_use, 0);
    assert_eq!(pool.release(t, true), Released::Returned);
    assert!(pool.backend(0).unwrap().acquire().is_none());
    assert_eq!(pool.backend(2).unwrap().stats().available, 1);
    let t = pool.backend(2).unwrap().acquire().unwrap();
    assert_eq!(pool.get(&t), Some(&"b2"));
    pool.release(t, true);
}

#[test]
fn token_from_another_connection_pool_is_rejected() {
    let ledger = Ledger::small();
    let a = ConnectionPool::new(1, 1).unwrap();
    let b = ConnectionPool::new(1, 1).unwrap();
    let ta = a.backend(0).unwrap().add(ledger.conn(0)).unwrap();
    let mut tb = b.backend(0).unwrap().add(ledger.conn(0)).unwrap();
    // Same backend, slot and generation (every pool starts at generation 0): only the pool
    // identity tells them apart.
    assert_eq!(
        (ta.backend(), ta.slot(), ta.conn_id().generation()),
        (tb.backend(), tb.slot(), tb.conn_id().generation())
    );
    assert_ne!(ta.conn_id(), tb.conn_id());
    assert!(b.get(&ta).is_none());
    assert!(!b.drain(ta.conn_id()), "a foreign id drains nothing");
    assert_eq!(b.backend(0).unwrap().stats().draining, 0);
    assert_eq!(b.release(ta, false), Released::Rejected);
    assert_eq!(ledger.total_drops(), 0);
    assert_eq!(
        b.get_mut(&mut tb).unwrap().id,
        1,
        "b's own token still works"
    );
    assert_eq!(b.release(tb, false), Released::Closed);
    assert_eq!((ledger.drops(0), ledger.drops(1)), (0, 1));
}

#[test]
fn drain_backend_closes_idle_now_and_held_at_release() {
    let ledger = Ledger::small();
    let pool = ConnectionPool::new(2, 2).unwrap();
    let (b0, b1) = (pool.backend(0).unwrap(), pool.backend(1).unwrap());
    let held = b0.add(ledger.conn(0)).unwrap(); // id 0
    let idle = b0.add(ledger.conn(0)).unwrap(); // id 1
    let other = b1.add(ledger.conn(1)).unwrap(); // id 2
    pool.release(idle, true);
    pool.release(other, true);
    assert_eq!(b0.drain_all(), 2);
    assert_eq!(
        (ledger.drops(0), ledger.drops(1), ledger.drops(2)),
        (0, 1, 0),
        "only the idle connection of backend 0 closed now"
    );
    assert_eq!(b0.stats().draining, 1);
    assert_eq!(b1.stats().available, 1, "backend 1 untouched");
    assert_eq!(pool.get(&held).unwrap().id, 0, "holder still has access");
    assert_eq!(pool.release(held, true), Released::Closed);
    assert_eq!(ledger.drops(0), 1);
    assert_eq!(b0.stats().empty, 2);
    assert_eq!(ledger.drops(2), 0);
}

#[test]
fn reservation_fill_drain_and_drop() {
    let ledger = Ledger::small();
    let pool = ConnectionPool::new(1, 2).unwrap();
    let b0 = pool.backend(0).unwrap();
    let r1 = b0.reserve().unwrap();
    let r2 = b0.reserve().unwrap();
    assert_ne!(r1.slot(), r2.slot());
    assert_eq!(b0.stats().in_use, 2, "reservations hold their slots");
    assert!(b0.reserve().is_none());
    let refused = b0.add(ledger.conn(0)).unwrap_err();
    assert_eq!(ledger.drops(refused.id), 0, "handed back, not dropped");
    drop(refused);
    drop(r2); // a failed connect: slot free again
    assert_eq!(b0.stats().empty, 1);
    assert_eq!(
        ledger.total_drops(),
        1,
        "an unfilled reservation drops nothing"
    );
    // drained while connecting: the lease works, and its release closes it
    let id = r1.conn_id();
    assert_eq!(pool.drain_all(), 1);
    let lease = r1.fill(ledger.conn(0)); // id 1
    assert_eq!(
        lease.conn_id(),
        id,
        "the id handed out before fill names the connection"
    );
    assert_eq!(lease.id, 1);
    let t = lease.into_token();
    assert_eq!(pool.get(&t).unwrap().id, 1, "routed by the token's backend");
    assert_eq!(pool.release(t, true), Released::Closed);
    assert_eq!(ledger.drops(1), 1);
    assert_eq!(b0.stats().empty, 2);
}

#[test]
fn lease_drop_closes_and_release_true_keeps() {
    let ledger = Ledger::small();
    let pool = Pool::new(1).unwrap();
    pool.release(pool.add(ledger.conn(0)).unwrap(), true);
    let lease = pool.acquire_lease().unwrap();
    assert_eq!(lease.id, 0);
    assert_eq!(lease.release(true), Released::Returned);
    assert_eq!(ledger.drops(0), 0);
    let lease = pool.acquire_lease().unwrap();
    drop(lease);
    assert_eq!(ledger.drops(0), 1, "dropping a lease closes its connection");
    assert_eq!(pool.stats().empty, 1);
}

#[test]
fn lease_of_panicking_holder_frees_its_slot() {
    let ledger = Ledger::small();
    let pool = Pool::new(1).unwrap();
    pool.release(pool.add(ledger.conn(0)).unwrap(), true);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _lease = pool.acquire_lease().unwrap();
        panic!("handler bug");
    }));
    assert!(r.is_err());
    assert_eq!(ledger.drops(0), 1);
    assert_eq!(pool.stats().empty, 1, "no slot stays in_use after a panic");
}

#[test]
fn lease_new_rejects_foreign_tokens_and_gives_them_back() {
    let a = Pool::new(1).unwrap();
    let b = Pool::<i32>::new(1).unwrap();
    let _tb = b.add(2).unwrap(); // b's slot 0 holds a connection of the same generation
    let t = a.add(1).unwrap();
    let t = Lease::new(&b, t).unwrap_err();
    assert_eq!(a.release(t, true), Released::Returned);
    let t = a.acquire().unwrap();
    let lease = Lease::new(&a, t).unwrap();
    assert_eq!(*lease, 1);
    assert_eq!(lease.into_token().slot(), 0);
    assert_eq!(
        a.stats().in_use,
        1,
        "into_token gives up the guard, not the slot"
    );
}

#[test]
fn owned_lease_moves_into_another_thread() {
    let ledger = Ledger::small();
    let pool = Arc::new(Pool::new(1).unwrap());
    pool.release(pool.add(ledger.conn(0)).unwrap(), true);
    let lease = Pool::acquire_lease_owned(&pool).unwrap();
    let id = std::thread::spawn(move || {
        let id = lease.id;
        lease.release(true);
        id
    })
    .join()
    .unwrap();
    assert_eq!(id, 0);
    assert_eq!(pool.stats().available, 1);
    assert!(Pool::acquire_lease_owned(&pool).is_some());
    assert_eq!(
        ledger.drops(0),
        1,
        "the temporary lease above was dropped: closed"
    );
}

#[test]
fn owned_reservation_and_checkouts_fill_in_another_thread() {
    let ledger = Ledger::small();
    let pool = Arc::new(Pool::new(2).unwrap());
    let r = Pool::reserve_owned(&pool).unwrap();
    let c = match Pool::try_checkout_owned(&pool) {
        Some(CheckoutOf::Vacant(r)) => r,
        other => panic!("expected the second empty slot, got {other:?}"),
    };
    assert!(Pool::reserve_owned(&pool).is_none(), "both slots reserved");
    let l2 = ledger.clone();
    std::thread::spawn(move || {
        r.fill(l2.conn(0)).release(true);
        drop(c); // a failed connect
    })
    .join()
    .unwrap();
    assert_eq!(
        pool.stats(),
        Stats {
            empty: 1,
            available: 1,
            ..Stats::default()
        }
    );
    let lease = match Pool::acquire_timeout_owned(&pool, Duration::ZERO) {
        Ok(CheckoutOf::Acquired(l)) => l,
        other => panic!("expected the idle connection, got {other:?}"),
    };
    assert_eq!(lease.id, 0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let p = pool.clone();
    let vacant = rt.block_on(async move { Pool::acquire_wait_owned(&p).await });
    assert!(matches!(vacant, CheckoutOf::Vacant(_)), "{vacant:?}");
    drop(vacant);
    lease.release(true);
    assert_eq!(pool.stats().available, 1);
    assert_eq!(ledger.total_drops(), 0);
}

#[test]
fn checkout_prefers_a_connection_over_an_empty_slot() {
    let pool = Pool::new(2).unwrap();
    pool.release(pool.add(1).unwrap(), true);
    match pool.try_checkout() {
        Some(Checkout::Acquired(lease)) => {
            assert_eq!(*lease, 1);
            lease.release(true);
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
