//! Tests aimed at specific ways the core could be subtly wrong (mutations of one condition or
//! one branch) that the behavioural tests elsewhere would let pass: closing a drained slot on
//! a keep-release, the `acquire` fast path's prediction, the backend index, pool identity
//! (other pools, other `ConnectionPool`s, dropped pools, all at the same generation), the
//! fairness hand-off to a queued waiter, the waiter count, and the total size limit.
//!
//! Waiting tests never sleep to let something happen: they poll `queued_waiters()` (bounded by
//! a deadline) until the waiter is in the queue, then act.

#[path = "common/counting.rs"]
mod counting;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::{mpsc, Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use counting::{Conn, Ledger};
use tokenpool::{
    Checkout, ConnectionPool, Lease, Pool, Released, SizeError, Stats, Token, MAX_SLOTS,
    MAX_TOTAL_SLOTS,
};

const LONG: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Allocation counting (for the size limit), per thread so that parallel tests do not interfere.

/// The system allocator, counting the allocations each thread makes.
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count_allocation() {
    // `try_with`: the thread-local may be gone while a thread shuts down.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is forwarded unchanged to `System`; counting touches no allocator state.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Runs `f` and returns its result and how many allocations this thread made meanwhile.
fn allocations_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    let r = f();
    let after = ALLOCATIONS.with(Cell::get);
    (r, after - before)
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Polls (yielding, bounded by a deadline) until `n` waiters are queued in `pool`.
fn wait_until_queued<T>(pool: &Pool<T>, n: usize) {
    let deadline = Instant::now() + LONG;
    while pool.queued_waiters() != n {
        assert!(
            Instant::now() < deadline,
            "{} waiters queued, expected {n}",
            pool.queued_waiters()
        );
        std::thread::yield_now();
    }
}

fn assert_no_waiters<T>(pool: &Pool<T>) {
    assert_eq!(
        pool.queued_waiters(),
        0,
        "a node was left in the wait queue"
    );
    assert_eq!(pool.stats().waiters, 0);
}

/// A pool of `n` slots holding `n` idle connections (ids in slot order).
fn full_idle_pool(ledger: &Arc<Ledger>, n: usize) -> Pool<Conn> {
    let pool = Pool::new(n).unwrap();
    let tokens: Vec<Token> = (0..n).map(|_| pool.add(ledger.conn(0)).unwrap()).collect();
    for (i, t) in tokens.into_iter().enumerate() {
        assert_eq!(t.slot(), i);
        assert_eq!(pool.release(t, true), Released::Returned);
    }
    pool
}

// ---------------------------------------------------------------------------------------------
// (a) A keep-release of a drained slot closes it, dropping the connection exactly once.

#[test]
fn keep_release_of_a_drained_token_closes_and_drops_exactly_once() {
    let ledger = Ledger::small();
    let pool = Pool::new(2).unwrap();
    let t = pool.add(ledger.conn(0)).unwrap();
    let id = t.conn_id();
    assert!(pool.drain(id), "a held connection is marked");
    assert_eq!(pool.stats().draining, 1);
    assert_eq!(ledger.drops(0), 0, "not dropped while held");
    assert_eq!(pool.release(t, true), Released::Closed, "keep, but drained");
    assert_eq!(ledger.drops(0), 1);
    assert_eq!(
        pool.stats(),
        Stats {
            empty: 2,
            ..Stats::default()
        }
    );
    assert!(pool.acquire().is_none(), "never handed out again");
    assert!(!pool.drain(id), "closed: nothing left to drain");

    // The same through a lease, and through a ConnectionPool's routing.
    let lease = pool.reserve().unwrap().fill(ledger.conn(0)); // id 1
    assert!(pool.drain(lease.conn_id()));
    assert_eq!(lease.release(true), Released::Closed);
    assert_eq!(ledger.drops(1), 1);

    let cp = ConnectionPool::new(2, 1).unwrap();
    let t = cp.backend(1).unwrap().add(ledger.conn(1)).unwrap(); // id 2
    assert!(cp.drain(t.conn_id()));
    assert_eq!(cp.backend(1).unwrap().stats().draining, 1);
    assert_eq!(cp.release(t, true), Released::Closed);
    assert_eq!(ledger.drops(2), 1);
    assert_eq!(cp.total_stats().empty, 2);

    // Dropping the pools drops nothing more.
    drop(pool);
    drop(cp);
    assert_eq!(ledger.alive(), Vec::<usize>::new());
    assert_eq!(ledger.total_drops(), 3);
}

// ---------------------------------------------------------------------------------------------
// (b) The `acquire` fast path: same connection back; stale predictions never misfire.

#[test]
fn returning_and_acquiring_again_gets_the_same_connection_back() {
    let ledger = Ledger::small();
    let pool = full_idle_pool(&ledger, 4);
    let t1 = pool.acquire().unwrap();
    let t2 = pool.acquire().unwrap();
    assert_ne!(t1.slot(), t2.slot());
    let id2 = t2.conn_id();
    // t2 was acquired last: returning both, the thread gets t2's connection back, although
    // t1's slot comes first from where this thread started its first scan.
    pool.release(t1, true);
    pool.release(t2, true);
    for _ in 0..3 {
        let t = pool.acquire().unwrap();
        assert_eq!(t.conn_id(), id2, "the connection this thread returned last");
        assert_eq!(pool.get(&t).unwrap().id, id2.slot());
        pool.release(t, true);
    }
    // Held, it is not handed out again; another idle one is.
    let held = pool.acquire().unwrap();
    assert_eq!(held.conn_id(), id2);
    let other = pool.acquire().unwrap();
    assert_ne!(other.slot(), held.slot());
    pool.release(other, true);
    pool.release(held, true);
    assert_eq!(pool.stats().available, 4);
}

#[test]
fn stale_prediction_after_close_and_refill_acquires_the_new_connection() {
    let ledger = Ledger::small();
    let pool = full_idle_pool(&ledger, 2); // ids 0, 1 in slots 0, 1; generation 1
    let t = pool.acquire().unwrap();
    let (s, old) = (t.slot(), t.conn_id());
    pool.release(t, true); // the thread now predicts Available(1) at slot s
                           // Take it again (the fast path) and close it: slot s is empty.
    let t = pool.acquire().unwrap();
    assert_eq!(t.conn_id(), old);
    assert_eq!(pool.release(t, false), Released::Closed);
    assert_eq!(ledger.drops(s), 1);
    // Refill slot s (the only empty one) with a new connection: generation 2.
    let t = pool.add(ledger.conn(0)).unwrap(); // id 2
    assert_eq!(t.slot(), s);
    assert_eq!(t.conn_id().generation(), old.generation() + 1);
    pool.release(t, true);
    // The prediction (Available, generation 1) is stale: the acquire must hand out the new
    // connection with a token of its real generation.
    let t = pool.acquire().unwrap();
    assert_eq!(t.slot(), s);
    assert_eq!(t.conn_id().generation(), old.generation() + 1);
    assert_ne!(t.conn_id(), old);
    assert_eq!(pool.get(&t).unwrap().id, 2);
    assert!(!pool.drain(old), "the old id names nothing");
    assert_eq!(pool.stats().draining, 0);
    // While the new connection is held, the stale prediction must not hand it out again.
    let u = pool.acquire().unwrap();
    assert_eq!(u.slot(), 1 - s);
    assert_eq!(pool.get(&u).unwrap().id, 1 - s);
    assert!(pool.acquire().is_none(), "both held");
    assert_eq!(pool.release(t, true), Released::Returned);
    assert_eq!(pool.release(u, true), Released::Returned);
    assert_eq!(pool.stats().available, 2);
    assert_eq!(ledger.total_drops(), 1);
}

#[test]
fn stale_prediction_of_a_slot_another_thread_holds_never_hands_it_out() {
    let ledger = Ledger::small();
    let pool = full_idle_pool(&ledger, 2);
    let t = pool.acquire().unwrap();
    let s = t.slot();
    pool.release(t, true); // this thread predicts Available(1) at slot s
                           // Another thread takes slot s's connection (same generation: the word is InUse(1)).
    let theirs: Token = std::thread::scope(|sc| {
        sc.spawn(|| {
            // Bounded: a broken acquire could hand out one slot for ever.
            let mut got: Vec<Token> = std::iter::from_fn(|| pool.acquire()).take(3).collect();
            assert_eq!(got.len(), 2, "two idle connections");
            assert_ne!(got[0].slot(), got[1].slot(), "one slot handed out twice");
            let i = got.iter().position(|t| t.slot() == s).unwrap();
            let theirs = got.swap_remove(i);
            for t in got {
                pool.release(t, true);
            }
            theirs
        })
        .join()
        .unwrap()
    });
    assert_eq!(theirs.slot(), s);
    let mine = pool.acquire().expect("the other slot is idle");
    assert_eq!(mine.slot(), 1 - s, "never the slot another thread holds");
    assert_eq!(pool.get(&mine).unwrap().id, 1 - s);
    assert!(pool.acquire().is_none(), "both held now");
    assert_eq!(pool.get(&theirs).unwrap().id, s);
    pool.release(mine, true);
    pool.release(theirs, true);
    assert_eq!(pool.stats().available, 2);
    assert_eq!(ledger.total_drops(), 0);
}

// ---------------------------------------------------------------------------------------------
// (c) The backend index of each pool.

#[test]
fn pool_backend_is_its_index_in_the_connection_pool_and_0_standalone() {
    let cp = ConnectionPool::new(5, 1).unwrap();
    for b in 0..5 {
        let pool = cp.backend(b).unwrap();
        assert_eq!(pool.backend(), b);
        let t = pool.add(b).unwrap();
        assert_eq!(t.backend(), b);
        assert_eq!(t.conn_id().backend(), b);
        assert_eq!(cp.get(&t), Some(&b));
        assert_eq!(cp.release(t, true), Released::Returned);
    }
    let standalone = Pool::new(3).unwrap();
    assert_eq!(standalone.backend(), 0);
    let t = standalone.add(()).unwrap();
    assert_eq!(t.backend(), 0);
    standalone.release(t, true);
}

// ---------------------------------------------------------------------------------------------
// (d), (e) Pool identity: tokens and ids of another ConnectionPool, or of a dropped pool, are
// rejected by every method even where the slot and generation match.

/// What a pool looks like from outside, to check that a rejected call changed nothing.
fn snapshot(cp: &ConnectionPool<Conn>) -> Vec<Stats> {
    (0..cp.backends())
        .map(|b| cp.backend(b).unwrap().stats())
        .collect()
}

#[test]
fn tokens_of_another_connection_pool_are_rejected_by_every_method() {
    const N: usize = 3;
    let la = Ledger::small();
    let lb = Ledger::small();
    let a = ConnectionPool::new(N, 2).unwrap();
    let b = ConnectionPool::new(N, 2).unwrap();
    // In each backend of each pool: slot 0 held, slot 1 idle, both at generation 1.
    let setup = |cp: &ConnectionPool<Conn>, ledger: &Arc<Ledger>| {
        (0..N)
            .map(|k| {
                let p = cp.backend(k).unwrap();
                let held = p.add(ledger.conn(k)).unwrap();
                let idle = p.add(ledger.conn(k)).unwrap();
                let idle_id = idle.conn_id();
                p.release(idle, true);
                (held, idle_id)
            })
            .collect::<Vec<_>>()
    };
    let a_tokens = setup(&a, &la);
    let mut b_tokens = setup(&b, &lb);
    let b_before = snapshot(&b);
    let a_before = snapshot(&a);
    for (k, (mut ta, a_idle)) in a_tokens.into_iter().enumerate() {
        let (tb, b_idle) = &b_tokens[k];
        assert_eq!(
            (ta.backend(), ta.slot(), ta.conn_id().generation()),
            (tb.backend(), tb.slot(), tb.conn_id().generation()),
            "same backend, slot and generation: only the pool differs"
        );
        assert_eq!(
            (a_idle.backend(), a_idle.slot(), a_idle.generation()),
            (b_idle.backend(), b_idle.slot(), b_idle.generation())
        );
        // Routed by the ConnectionPool, and straight to each of B's backend pools.
        assert!(b.get(&ta).is_none(), "backend {k}: get");
        assert!(b.get_mut(&mut ta).is_none(), "backend {k}: get_mut");
        assert!(!b.drain(ta.conn_id()), "backend {k}: drain of a held id");
        assert!(!b.drain(a_idle), "backend {k}: drain of an idle id");
        for j in 0..N {
            let p = b.backend(j).unwrap();
            assert!(p.get(&ta).is_none(), "backend {k} -> pool {j}: get");
            assert!(
                p.get_mut(&mut ta).is_none(),
                "backend {k} -> pool {j}: get_mut"
            );
            assert!(!p.drain(ta.conn_id()), "backend {k} -> pool {j}: drain");
            assert!(!p.drain(a_idle), "backend {k} -> pool {j}: drain idle");
        }
        let ta = Lease::new(&**b.backend(k).unwrap(), ta).expect_err("Lease::new");
        assert_eq!(snapshot(&b), b_before, "backend {k}: B changed");
        assert_eq!(lb.total_drops(), 0, "backend {k}: B dropped a connection");
        if k % 2 == 0 {
            assert_eq!(b.release(ta, false), Released::Rejected, "backend {k}");
        } else {
            let p = b.backend(k).unwrap();
            assert_eq!(p.release(ta, true), Released::Rejected, "backend {k}");
        }
        assert_eq!(snapshot(&b), b_before, "backend {k}: B changed on release");
        assert_eq!(lb.total_drops(), 0);
        // A is untouched as well: the rejected token's slot stays held (leaked).
        assert_eq!(snapshot(&a), a_before);
        assert_eq!(la.total_drops(), 0);
    }
    // B's own tokens and ids still work.
    for (k, (tb, b_idle)) in b_tokens.iter_mut().enumerate() {
        assert_eq!(b.get_mut(tb).unwrap().id, 2 * k);
        assert!(b.drain(*b_idle));
    }
    assert_eq!(
        lb.total_drops(),
        N,
        "B's own idle ids drained B's idle connections"
    );
    for (tb, _) in b_tokens {
        assert_eq!(b.release(tb, true), Released::Returned);
    }
}

#[test]
fn token_outliving_its_pool_is_rejected_by_a_new_pool_at_the_same_generation() {
    let ledger = Ledger::small();
    let old = Pool::new(2).unwrap();
    let mut stale = old.add(ledger.conn(0)).unwrap(); // id 0, slot 0, held
    let idle = old.add(ledger.conn(0)).unwrap(); // id 1, slot 1, idle
    let stale_idle = idle.conn_id();
    old.release(idle, true);
    drop(old);
    assert_eq!(ledger.total_drops(), 2, "the pool dropped its connections");

    let new = Pool::new(2).unwrap();
    let mut fresh = new.add(ledger.conn(0)).unwrap(); // id 2
    let idle = new.add(ledger.conn(0)).unwrap(); // id 3
    let fresh_idle = idle.conn_id();
    new.release(idle, true);
    assert_eq!(
        (stale.slot(), stale.conn_id().generation()),
        (fresh.slot(), fresh.conn_id().generation())
    );
    assert_eq!(stale_idle.generation(), fresh_idle.generation());
    let before = new.stats();
    assert!(new.get(&stale).is_none());
    assert!(new.get_mut(&mut stale).is_none());
    assert!(!new.drain(stale.conn_id()));
    assert!(!new.drain(stale_idle));
    let stale = Lease::new(&new, stale).expect_err("Lease::new");
    assert_eq!(new.release(stale, false), Released::Rejected);
    assert_eq!(new.stats(), before);
    assert_eq!((ledger.drops(2), ledger.drops(3)), (0, 0));
    assert_eq!(new.get_mut(&mut fresh).unwrap().id, 2);
    assert!(new.drain(fresh_idle));
    assert_eq!(ledger.drops(3), 1);
    new.release(fresh, true);

    // The same for a backend of a ConnectionPool replaced by a new one.
    let old = ConnectionPool::new(2, 1).unwrap();
    let stale = old.backend(1).unwrap().add(ledger.conn(1)).unwrap(); // id 4
    drop(old);
    let new = ConnectionPool::new(2, 1).unwrap();
    let fresh = new.backend(1).unwrap().add(ledger.conn(1)).unwrap(); // id 5
    assert_eq!(stale.conn_id().generation(), fresh.conn_id().generation());
    assert!(new.get(&stale).is_none());
    assert!(!new.drain(stale.conn_id()));
    assert_eq!(new.release(stale, true), Released::Rejected);
    assert_eq!(new.backend(1).unwrap().stats().in_use, 1);
    assert_eq!(ledger.drops(5), 0);
    assert_eq!(new.release(fresh, false), Released::Closed);
    assert_eq!(ledger.drops(5), 1);
}

// ---------------------------------------------------------------------------------------------
// (f) Fairness: a release that finds a waiter hands the freed slot to it; the releaser cannot
// take it back, even at once.

#[test]
fn blocked_waiter_gets_the_returned_connection_before_the_releasers_next_acquire() {
    let ledger = Ledger::small();
    let pool = Pool::new(1).unwrap();
    let t = pool.add(ledger.conn(0)).unwrap();
    let id = t.conn_id();
    std::thread::scope(|s| {
        // Dropped unsent if the releaser's checks fail, which lets the waiter go on (no hang).
        let (checked, checked_rx) = mpsc::channel::<()>();
        let pool = &pool;
        let waiter = s.spawn(move || {
            let lease = match pool.acquire_timeout(LONG) {
                Ok(Checkout::Acquired(lease)) => lease,
                other => panic!("expected the returned connection, got {other:?}"),
            };
            let got = (lease.conn_id(), lease.id);
            // Hold it until the releaser has tried to take it back.
            let _ = checked_rx.recv_timeout(LONG);
            lease.release(true);
            got
        });
        wait_until_queued(pool, 1);
        assert_eq!(pool.release(t, true), Released::Returned);
        assert!(
            pool.acquire().is_none(),
            "the releaser took back the slot it had handed to the waiter"
        );
        assert!(pool.try_checkout().is_none());
        checked.send(()).unwrap();
        assert_eq!(waiter.join().unwrap(), (id, 0));
    });
    assert_eq!(pool.stats().available, 1);
    assert_no_waiters(&pool);
    assert_eq!(ledger.total_drops(), 0);
}

#[test]
fn blocked_waiter_gets_the_slot_a_close_empties_before_the_releasers_reserve() {
    let ledger = Ledger::small();
    let pool = Pool::new(1).unwrap();
    let t = pool.add(ledger.conn(0)).unwrap();
    std::thread::scope(|s| {
        // Dropped unsent if the releaser's checks fail, which lets the waiter go on (no hang).
        let (checked, checked_rx) = mpsc::channel::<()>();
        let (pool, ledger) = (&pool, &ledger);
        let waiter = s.spawn(move || {
            let r = match pool.acquire_timeout(LONG) {
                Ok(Checkout::Vacant(r)) => r,
                other => panic!("expected the emptied slot, got {other:?}"),
            };
            let _ = checked_rx.recv_timeout(LONG);
            r.fill(ledger.conn(0)).release(true);
        });
        wait_until_queued(pool, 1);
        assert_eq!(pool.release(t, false), Released::Closed);
        assert_eq!(ledger.drops(0), 1);
        assert!(
            pool.reserve().is_none(),
            "the releaser reserved the slot it had handed to the waiter"
        );
        assert!(pool.acquire().is_none());
        assert!(pool.add(ledger.conn(0)).is_err(), "nor can it add into it");
        checked.send(()).unwrap();
        waiter.join().unwrap();
    });
    assert_eq!(pool.stats().available, 1);
    assert_no_waiters(&pool);
    // ids: 0 closed, 1 refused by the add and dropped by us, 2 filled by the waiter
    assert_eq!(ledger.alive(), vec![2]);
}

#[test]
fn async_waiter_gets_the_returned_connection_before_the_releasers_next_acquire() {
    let ledger = Ledger::small();
    let pool = Pool::new(1).unwrap();
    let t = pool.add(ledger.conn(0)).unwrap();
    let id = t.conn_id();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut wait = pin!(pool.acquire_wait());
        // Poll once, to register.
        poll_fn(|cx| {
            assert!(wait.as_mut().poll(cx).is_pending(), "the slot is held");
            Poll::Ready(())
        })
        .await;
        assert_eq!(pool.queued_waiters(), 1);
        assert_eq!(pool.release(t, true), Released::Returned);
        assert!(
            pool.acquire().is_none(),
            "the releaser took back the slot it had handed to the waiter"
        );
        assert!(pool.try_checkout().is_none());
        match tokio::time::timeout(LONG, wait)
            .await
            .expect("the waiter was woken")
        {
            Checkout::Acquired(lease) => {
                assert_eq!(lease.conn_id(), id);
                lease.release(true);
            }
            Checkout::Vacant(_) => panic!("expected the returned connection"),
        }
    });
    assert_eq!(pool.stats().available, 1);
    assert_no_waiters(&pool);
}

#[test]
fn async_waiter_gets_the_slot_a_close_empties_before_the_releasers_reserve() {
    let ledger = Ledger::small();
    let pool = Pool::new(1).unwrap();
    let t = pool.add(ledger.conn(0)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut wait = pin!(pool.acquire_wait());
        poll_fn(|cx| {
            assert!(wait.as_mut().poll(cx).is_pending(), "the slot is held");
            Poll::Ready(())
        })
        .await;
        assert_eq!(pool.queued_waiters(), 1);
        assert_eq!(pool.release(t, false), Released::Closed);
        assert!(
            pool.reserve().is_none(),
            "the releaser reserved the slot it had handed to the waiter"
        );
        assert!(pool.try_checkout().is_none());
        match tokio::time::timeout(LONG, wait)
            .await
            .expect("the waiter was woken")
        {
            Checkout::Vacant(r) => r.fill(ledger.conn(0)).release(true),
            Checkout::Acquired(_) => panic!("expected the emptied slot"),
        };
    });
    assert_eq!(pool.stats().available, 1);
    assert_no_waiters(&pool);
    assert_eq!(ledger.alive(), vec![1]);
}

#[test]
fn blocked_waiters_are_served_in_arrival_order() {
    let pool = Pool::new(1).unwrap();
    let t = pool.add(0u32).unwrap();
    let order = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let wait = |who: u32| {
            let (pool, order) = (&pool, &order);
            move || match pool.acquire_timeout(LONG) {
                Ok(Checkout::Acquired(lease)) => {
                    order.lock().unwrap().push(who);
                    lease.release(true);
                }
                other => panic!("waiter {who}: got {other:?}"),
            }
        };
        let first = s.spawn(wait(1));
        wait_until_queued(&pool, 1);
        let second = s.spawn(wait(2));
        wait_until_queued(&pool, 2);
        pool.release(t, true);
        first.join().unwrap();
        second.join().unwrap();
    });
    assert_eq!(
        *order.lock().unwrap(),
        vec![1, 2],
        "first come, first served"
    );
    assert_no_waiters(&pool);
}

// ---------------------------------------------------------------------------------------------
// (g) `Stats::waiters` counts queued waiters.

#[test]
fn stats_waiters_counts_queued_waiters() {
    let cp = ConnectionPool::new(2, 1).unwrap();
    let (p0, p1) = (cp.backend(0).unwrap(), cp.backend(1).unwrap());
    let t0 = p0.add(0u32).unwrap();
    let t1 = p1.add(1u32).unwrap();
    assert_eq!(cp.total_stats().waiters, 0);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut a = Box::pin(p0.acquire_wait());
    let mut b = Box::pin(p0.acquire_wait());
    assert!(a.as_mut().poll(&mut cx).is_pending());
    assert_eq!(p0.stats().waiters, 1);
    assert!(b.as_mut().poll(&mut cx).is_pending());
    assert_eq!(p0.stats().waiters, 2);
    assert_eq!(p1.stats().waiters, 0, "backends have their own queues");
    std::thread::scope(|s| {
        let blocked = s.spawn(|| match p1.acquire_timeout(LONG) {
            Ok(Checkout::Acquired(lease)) => lease.release(true),
            other => panic!("got {other:?}"),
        });
        wait_until_queued(p1, 1);
        assert_eq!(p1.stats().waiters, 1);
        assert_eq!(cp.total_stats().waiters, 3, "summed over backends");
        cp.release(t1, true);
        blocked.join().unwrap();
    });
    assert_eq!(p1.stats().waiters, 0);
    cp.release(t0, true); // handed to `a`: it leaves the queue
    assert_eq!(p0.stats().waiters, 1);
    assert_eq!(p0.queued_waiters(), 1);
    drop(a); // gives the connection on to `b`
    assert_eq!(p0.stats().waiters, 0);
    match b.as_mut().poll(&mut cx) {
        Poll::Ready(Checkout::Acquired(lease)) => lease.release(true),
        other => panic!("b: {other:?}"),
    };
    drop(b);
    assert_eq!(cp.total_stats().waiters, 0);
    assert_eq!(cp.total_stats().available, 2);
    assert_no_waiters(p0);
    assert_no_waiters(p1);
}

// ---------------------------------------------------------------------------------------------
// The total size limit of a ConnectionPool.

#[test]
fn oversized_connection_pool_is_refused_without_allocating() {
    let (r, allocations) = allocations_during(|| ConnectionPool::<()>::new(65536, 65536));
    assert_eq!(
        r.unwrap_err(),
        SizeError::OutOfRange {
            what: "slots in total",
            requested: 65536 * 65536,
            max: MAX_TOTAL_SLOTS
        }
    );
    assert_eq!(allocations, 0, "allocated before refusing");
    // Just over the limit, with each count in range on its own.
    let backends = MAX_TOTAL_SLOTS / MAX_SLOTS + 1;
    let (r, allocations) = allocations_during(|| ConnectionPool::<()>::new(backends, MAX_SLOTS));
    assert!(
        matches!(
            r,
            Err(SizeError::OutOfRange {
                what: "slots in total",
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(allocations, 0);
    assert_eq!(
        ConnectionPool::<()>::new(MAX_TOTAL_SLOTS + 1, 1).unwrap_err(),
        SizeError::OutOfRange {
            what: "backends",
            requested: MAX_TOTAL_SLOTS + 1,
            max: tokenpool::MAX_BACKENDS
        },
        "the backend count is checked first"
    );
    // A pool within the limit does allocate (the counter works).
    let (r, allocations) = allocations_during(|| ConnectionPool::<()>::new(2, 2));
    assert!(r.is_ok());
    assert!(allocations > 0);
}

// ---------------------------------------------------------------------------------------------
// Debug output names what an operator needs: which pool, backend, slot and generation.

#[test]
fn debug_output_names_pool_backend_slot_and_generation() {
    let pool = ConnectionPool::new(2, 3).unwrap();
    let backend = pool.backend(1).unwrap();
    let t = backend.add("conn").unwrap();
    let token = format!("{t:?}");
    for field in [
        "Token",
        "pool: pool#",
        "backend: 1",
        "slot: 0",
        "generation: 1",
    ] {
        assert!(token.contains(field), "{field:?} missing in {token}");
    }
    let id = format!("{:?}", t.conn_id());
    assert!(id.starts_with("ConnId(") && id.ends_with(":1:0#1)"), "{id}");
    assert_eq!(t.conn_id().to_string(), "backend 1 slot 0 generation 1");
    let p = format!("{:?}", **backend);
    for field in [
        "Pool",
        "id: pool#",
        "backend: 1",
        "capacity: 3",
        "in_use: 1",
    ] {
        assert!(p.contains(field), "{field:?} missing in {p}");
    }
    assert_eq!(pool.release(t, true), Released::Returned);
}

// Mutants that survive `cargo mutants` over the core, and why each is equivalent:
// - `PoolId::get -> 1` (the scan hint's key): a hint about another pool then predicts a word in
//   this pool; `acquire_from` CASes from that exact `Available` word, so it can only take a
//   connection this pool really has available. Only how often the fast path hits changes.
// - `tests::counter` in src/pool.rs returning `Arc::new(Default::default())`: the default
//   `AtomicUsize` is 0, the value the helper builds.
// - `Node::set_waker`'s `will_wake` guard replaced by `false` (always store a clone of the new
//   waker): the same waker is stored either way; the guard only saves a clone.

/// Counts its wake-ups.
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A waiting future polled again with another waker (a task moved to another worker, or a
/// `select!` that re-polls) must be woken through the new waker, not the stale one.
#[test]
fn waiter_repolled_with_a_new_waker_is_woken_through_it() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::task::{Context, Waker};
    let pool = Pool::new(1).unwrap();
    let held = pool.add(7u32).unwrap();
    let first = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let second = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let mut wait = Box::pin(pool.acquire_wait());
    let w1 = Waker::from(first.clone());
    let w2 = Waker::from(second.clone());
    assert!(wait
        .as_mut()
        .poll(&mut Context::from_waker(&w1))
        .is_pending());
    assert!(wait
        .as_mut()
        .poll(&mut Context::from_waker(&w2))
        .is_pending());
    assert_eq!(pool.queued_waiters(), 1, "polling twice queues once");
    assert_eq!(pool.release(held, true), Released::Returned);
    assert_eq!(second.0.load(SeqCst), 1, "the new waker is woken");
    assert_eq!(first.0.load(SeqCst), 0, "the stale waker is not");
    match wait.as_mut().poll(&mut Context::from_waker(&w2)) {
        Poll::Ready(Checkout::Acquired(lease)) => assert_eq!(*lease, 7),
        other => panic!("expected the handed-off connection, got {other:?}"),
    }
    assert_eq!(pool.queued_waiters(), 0);
}
