//! Waiting for a connection: blocking (`acquire_timeout`) and async (`acquire_wait`).
//!
//! Every test ends by checking that the wait queue is empty, both as the queue itself counts it
//! under its lock (`queued_waiters`) and as the lock-free figure in `Stats` shows it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tokenpool::{AcquireWait, Checkout, CheckoutOf, Pool, Released, Timeout};

/// A waker that counts how often it was woken.
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting_waker() -> (Arc<CountingWaker>, Waker) {
    let w = Arc::new(CountingWaker(AtomicUsize::new(0)));
    (w.clone(), Waker::from(w))
}

fn poll_once<'a, T>(fut: &mut AcquireWait<'a, T>, waker: &Waker) -> Poll<Checkout<'a, T>> {
    Pin::new(fut).poll(&mut Context::from_waker(waker))
}

const LONG: Duration = Duration::from_secs(30);

/// No waiter is left behind: the queue is empty and the lock-free count agrees.
fn assert_no_waiters<T>(pool: &Pool<T>) {
    assert_eq!(
        pool.queued_waiters(),
        0,
        "a node was left in the wait queue"
    );
    assert_eq!(pool.stats().waiters, 0, "the waiter count drifted");
}

/// Spins (yielding) until `n` waiters are queued; panics after `LONG`.
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

#[test]
fn blocking_waiter_is_woken_by_a_release() {
    let pool = Pool::new(1).unwrap();
    let held = pool.add(7).unwrap();
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            barrier.wait();
            match pool.acquire_timeout(LONG) {
                Ok(Checkout::Acquired(lease)) => {
                    let v = *lease;
                    lease.release(true);
                    v
                }
                other => panic!("expected the returned connection, got {other:?}"),
            }
        });
        barrier.wait();
        pool.release(held, true);
        assert_eq!(waiter.join().unwrap(), 7);
    });
    assert_eq!(pool.stats().available, 1);
    assert_no_waiters(&pool);
}

#[test]
fn blocking_waiter_is_woken_by_a_close_with_a_vacant_slot() {
    let pool = Pool::new(1).unwrap();
    let held = pool.add(1).unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| match pool.acquire_timeout(LONG) {
            Ok(Checkout::Vacant(r)) => {
                r.fill(2).release(true);
            }
            other => panic!("expected a vacant slot, got {other:?}"),
        });
        pool.release(held, false);
        waiter.join().unwrap();
    });
    assert_eq!(pool.stats().available, 1);
    assert_no_waiters(&pool);
}

#[test]
fn blocking_wait_times_out_with_an_error_and_changes_nothing() {
    let pool = Pool::new(2).unwrap();
    let a = pool.add(1).unwrap();
    let b = pool.add(2).unwrap();
    assert_eq!(
        pool.acquire_timeout(Duration::from_millis(20)).unwrap_err(),
        Timeout
    );
    assert_eq!(pool.stats().in_use, 2);
    // after the timeout, the queue is clean: the timed-out waiter left it
    assert_no_waiters(&pool);
    pool.release(a, true);
    pool.release(b, true);
    // and a release with no waiters is a no-op
    assert_eq!(pool.stats().available, 2);
    assert_no_waiters(&pool);
}

#[test]
fn timed_out_blocking_waiter_leaves_the_queue() {
    let pool = Pool::new(1).unwrap();
    let held = pool.add(1).unwrap();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| pool.acquire_timeout(Duration::from_millis(300)).map(drop));
        // It is queued while it waits...
        wait_until_queued(&pool, 1);
        assert_eq!(pool.stats().waiters, 1);
        // ...and gone once it has given up.
        assert_eq!(waiter.join().unwrap(), Err(Timeout));
        assert_no_waiters(&pool);
    });
    assert_eq!(pool.release(held, true), Released::Returned);
    assert_eq!(
        pool.stats().available,
        1,
        "nothing handed to the departed waiter"
    );
    assert_no_waiters(&pool);
}

#[test]
fn cancelled_async_waiter_node_leaves_the_queue() {
    let pool = Pool::new(1).unwrap();
    let held = pool.add(1).unwrap();
    let (cw, w) = counting_waker();
    let mut fut = pool.acquire_wait();
    assert_no_waiters(&pool);
    assert!(poll_once(&mut fut, &w).is_pending());
    assert_eq!(pool.queued_waiters(), 1, "the pending future is queued");
    assert_eq!(pool.stats().waiters, 1);
    assert!(poll_once(&mut fut, &w).is_pending());
    assert_eq!(
        pool.queued_waiters(),
        1,
        "a second poll does not queue it twice"
    );
    drop(fut);
    assert_no_waiters(&pool);
    assert_eq!(pool.release(held, true), Released::Returned);
    assert_eq!(
        cw.0.load(Ordering::SeqCst),
        0,
        "the cancelled task is not woken"
    );
    assert_eq!(pool.stats().available, 1);
    assert_no_waiters(&pool);
}

#[test]
fn every_blocked_waiter_is_eventually_served_no_wake_up_lost() {
    const WAITERS: usize = 8;
    const ROUNDS: usize = 200;
    let pool = Pool::new(1).unwrap();
    pool.release(pool.add(0u64).unwrap(), true);
    std::thread::scope(|s| {
        for _ in 0..WAITERS {
            s.spawn(|| {
                for _ in 0..ROUNDS {
                    let mut lease = match pool.acquire_timeout(LONG) {
                        Ok(Checkout::Acquired(lease)) => lease,
                        other => panic!("expected the one connection, got {other:?}"),
                    };
                    *lease += 1;
                    lease.release(true);
                }
            });
        }
    });
    let t = pool.acquire().unwrap();
    assert_eq!(*pool.get(&t).unwrap(), (WAITERS * ROUNDS) as u64);
    pool.release(t, true);
    assert_no_waiters(&pool);
}

#[test]
fn async_waiter_is_woken_by_a_release() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pool = Arc::new(Pool::new(1).unwrap());
    let held = pool.add(3).unwrap();
    let p = pool.clone();
    let waiter = rt.spawn(async move {
        match Pool::acquire_wait_owned(&p).await {
            CheckoutOf::Acquired(lease) => {
                let v = *lease;
                lease.release(true);
                v
            }
            CheckoutOf::Vacant(_) => panic!("expected the returned connection"),
        }
    });
    pool.release(held, true);
    let v = rt
        .block_on(async { tokio::time::timeout(LONG, waiter).await })
        .expect("waiter finished")
        .unwrap();
    assert_eq!(v, 3);
    assert_eq!(pool.stats().available, 1);
    assert_no_waiters(&pool);
}

#[test]
fn one_release_wakes_exactly_one_of_several_async_waiters() {
    let pool = Pool::new(1).unwrap();
    let held = pool.add(1).unwrap();
    let wakers: Vec<_> = (0..3).map(|_| counting_waker()).collect();
    let mut futs: Vec<_> = (0..3).map(|_| pool.acquire_wait()).collect();
    for (f, (_, w)) in futs.iter_mut().zip(&wakers) {
        assert!(poll_once(f, w).is_pending());
    }
    assert_eq!(pool.queued_waiters(), 3);
    assert_eq!(pool.stats().waiters, 3);
    pool.release(held, true);
    let woken: Vec<usize> = wakers
        .iter()
        .map(|(c, _)| c.0.load(Ordering::SeqCst))
        .collect();
    assert_eq!(woken, vec![1, 0, 0], "first waiter woken, no herd");
    assert_eq!(pool.queued_waiters(), 2, "the woken one left the queue");
    match poll_once(&mut futs[0], &wakers[0].1) {
        Poll::Ready(Checkout::Acquired(lease)) => {
            lease.release(true);
        }
        _ => panic!("woken waiter must get the connection"),
    }
    // that release goes to the next waiter in line
    let woken: Vec<usize> = wakers
        .iter()
        .map(|(c, _)| c.0.load(Ordering::SeqCst))
        .collect();
    assert_eq!(woken, vec![1, 1, 0]);
    assert_eq!(pool.queued_waiters(), 1);
    match poll_once(&mut futs[1], &wakers[1].1) {
        Poll::Ready(Checkout::Acquired(lease)) => {
            lease.release(true);
        }
        _ => panic!("the second waiter must get the connection"),
    }
    match poll_once(&mut futs[2], &wakers[2].1) {
        Poll::Ready(Checkout::Acquired(lease)) => {
            lease.release(true);
        }
        _ => panic!("the third waiter must get the connection"),
    }
    drop(futs);
    assert_eq!(pool.stats().available, 1);
    assert_no_waiters(&pool);
}

#[test]
fn cancelled_async_waiter_passes_its_wake_up_on() {
    let pool = Pool::new(1).unwrap();
    let held = pool.add(1).unwrap();
    let (_, wa) = counting_waker();
    let (cb, wb) = counting_waker();
    let mut a = pool.acquire_wait();
    let mut b = pool.acquire_wait();
    assert!(poll_once(&mut a, &wa).is_pending());
    assert!(poll_once(&mut b, &wb).is_pending());
    pool.release(held, true); // wakes `a`
    assert_eq!(cb.0.load(Ordering::SeqCst), 0);
    drop(a); // cancelled after being chosen: must hand the wake-up to `b`
    assert_eq!(cb.0.load(Ordering::SeqCst), 1, "b was woken");
    match poll_once(&mut b, &wb) {
        Poll::Ready(Checkout::Acquired(lease)) => {
            lease.release(true);
        }
        _ => panic!("b must get the connection a gave up"),
    };
    drop(b);
    assert_eq!(pool.stats().available, 1);
    assert_no_waiters(&pool);
}

#[test]
fn cancelled_unwoken_async_waiter_leaves_the_queue() {
    let pool = Pool::new(1).unwrap();
    let held = pool.add(1).unwrap();
    let (ca, wa) = counting_waker();
    let (cb, wb) = counting_waker();
    let mut a = pool.acquire_wait();
    let mut b = pool.acquire_wait();
    assert!(poll_once(&mut a, &wa).is_pending());
    assert!(poll_once(&mut b, &wb).is_pending());
    assert_eq!(pool.queued_waiters(), 2);
    drop(a); // gave up before any release: withdrawn, nothing passed on
    assert_eq!(pool.queued_waiters(), 1, "a's node left the queue");
    assert_eq!(pool.stats().waiters, 1);
    assert_eq!(ca.0.load(Ordering::SeqCst), 0);
    assert_eq!(cb.0.load(Ordering::SeqCst), 0);
    pool.release(held, true);
    assert_eq!(
        cb.0.load(Ordering::SeqCst),
        1,
        "the release went to b, not to a's corpse"
    );
    match poll_once(&mut b, &wb) {
        Poll::Ready(Checkout::Acquired(lease)) => {
            assert_eq!(lease.release(true), Released::Returned);
        }
        _ => panic!("b must get the connection"),
    };
    drop(b);
    assert_no_waiters(&pool);
}
