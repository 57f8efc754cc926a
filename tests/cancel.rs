//! Cancel safety: a task cancelled at any await point of checkout → use → release never
//! loses a slot. hyper drops a handler's future when its client disconnects; with raw tokens
//! a future dropped while holding one left the slot `in_use` for good. The waiting APIs now
//! resolve to owners (`Lease`, `Reservation`) that give the slot back on drop, and a waiting
//! future that was already handed a slot gives it back when dropped.
//!
//! The futures are polled by hand (no runtime), so every await point is reached in turn: for
//! each `k`, the job is polled `k` times and then dropped, and the pool must be whole again.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokenpool::{Checkout, CheckoutOf, Pool, Released};

/// A connection that counts its drops.
#[derive(Debug)]
struct Conn(Arc<AtomicUsize>);

impl Drop for Conn {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Returns `Pending` once (waking itself), then `Ready`: an await point.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn yield_now() -> YieldNow {
    YieldNow(false)
}

/// Checkout → (connect) → use → release, with an await point between every two steps.
/// Counts in `made` each connection it opens.
async fn job(pool: &Pool<Conn>, drops: Arc<AtomicUsize>, made: &AtomicUsize) -> Released {
    let lease = match pool.acquire_wait().await {
        Checkout::Acquired(lease) => lease,
        Checkout::Vacant(slot) => {
            yield_now().await; // connecting
            made.fetch_add(1, Ordering::SeqCst);
            slot.fill(Conn(drops))
        }
    };
    yield_now().await; // writing the request
    yield_now().await; // reading the response
    lease.release(true)
}

/// Polls `fut` up to `polls` times; returns its output if it finished.
fn poll_n<F: Future>(fut: Pin<&mut F>, polls: usize) -> Option<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut fut = fut;
    for _ in 0..polls {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
    }
    None
}

fn assert_whole(pool: &Pool<Conn>, held_by_test: usize, what: &str) {
    let s = pool.stats();
    assert_eq!(
        s.in_use + s.draining,
        held_by_test,
        "{what}: a slot was lost: {s:?}"
    );
    assert_eq!(
        pool.queued_waiters(),
        0,
        "{what}: a waiter was left in the queue"
    );
    assert_eq!(s.waiters, 0, "{what}: the waiter count drifted");
}

/// Every await point, with the pool in each starting state: empty (the job connects), one
/// idle connection (the job reuses it).
#[test]
fn cancelled_at_every_await_point_leaks_no_slot() {
    for idle_conn in [false, true] {
        let mut finished = false;
        for k in 0.. {
            let drops = Arc::new(AtomicUsize::new(0));
            let pool = Pool::new(1).unwrap();
            if idle_conn {
                pool.release(pool.add(Conn(drops.clone())).unwrap(), true);
            }
            let made = AtomicUsize::new(usize::from(idle_conn));
            {
                let fut = job(&pool, drops.clone(), &made);
                let mut fut = std::pin::pin!(fut);
                if poll_n(fut.as_mut(), k) == Some(Released::Returned) {
                    finished = true;
                }
            } // dropped here, after k polls
            let what = format!("idle_conn={idle_conn} cancelled after {k} polls");
            assert_whole(&pool, 0, &what);
            let s = pool.stats();
            // A connection is either back in the pool or was closed by its dropped lease.
            assert_eq!(
                s.available + drops.load(Ordering::SeqCst),
                made.load(Ordering::SeqCst),
                "{what}: {s:?}"
            );
            assert_eq!(
                made.load(Ordering::SeqCst),
                usize::from(idle_conn || k >= 2),
                "{what}"
            );
            if finished {
                assert_eq!(
                    s.available, 1,
                    "{what}: a finished job returns its connection"
                );
                break;
            }
            assert!(k < 20, "the job never finished");
        }
    }
}

/// The pool is exhausted, so the job waits; the holder releases after `r` polls of the job
/// (handing the connection to the job's queue entry, or closing it so the job gets the empty
/// slot), and the job is dropped after `k` polls, for every `r` and `k`.
#[test]
fn cancelled_waiter_gives_back_what_it_was_handed() {
    for keep in [true, false] {
        for r in 1..6 {
            let mut finished = false;
            for k in 0..12 {
                let drops = Arc::new(AtomicUsize::new(0));
                let pool = Pool::new(1).unwrap();
                let mut held = Some(pool.add(Conn(drops.clone())).unwrap());
                let made = AtomicUsize::new(1);
                {
                    let fut = job(&pool, drops.clone(), &made);
                    let mut fut = std::pin::pin!(fut);
                    let mut cx = Context::from_waker(Waker::noop());
                    for i in 0..k {
                        if i == r {
                            let t = held.take().unwrap();
                            pool.release(t, keep);
                        }
                        if let Poll::Ready(res) = fut.as_mut().poll(&mut cx) {
                            assert_eq!(res, Released::Returned);
                            finished = true;
                            break;
                        }
                    }
                }
                let what = format!("keep={keep} released at {r}, cancelled after {k} polls");
                let still_held = usize::from(held.is_some());
                assert_whole(&pool, still_held, &what);
                if let Some(t) = held.take() {
                    assert_eq!(pool.release(t, true), Released::Returned, "{what}");
                }
                let s = pool.stats();
                // Every connection ever made (the holder's, and one the job opened in a
                // slot it got empty) is either idle in the pool or was dropped: none is
                // stranded in a held slot.
                let made = made.load(Ordering::SeqCst);
                assert!(
                    made == 1 || !keep,
                    "{what}: the job opened a connection needlessly"
                );
                assert_eq!(
                    s.available + drops.load(Ordering::SeqCst),
                    made,
                    "{what}: {s:?}"
                );
                drop(pool);
                assert_eq!(
                    drops.load(Ordering::SeqCst),
                    made,
                    "{what}: dropped once each"
                );
            }
            assert!(finished, "keep={keep} r={r}: the job never finished");
        }
    }
}

/// Tasks on a multi-thread runtime, aborted at random points while others keep the pool
/// busy: afterwards every slot is free and no waiter is queued.
#[test]
fn aborted_tokio_tasks_leak_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let made = Arc::new(AtomicUsize::new(0));
    let pool = Arc::new(Pool::new(2).unwrap());
    let (finished, cancelled) = rt.block_on(async {
        let mut handles = Vec::new();
        for i in 0..400u64 {
            let pool = pool.clone();
            let drops = drops.clone();
            let made = made.clone();
            let h = tokio::spawn(async move {
                let lease = match Pool::acquire_wait_owned(&pool).await {
                    CheckoutOf::Acquired(lease) => lease,
                    CheckoutOf::Vacant(slot) => {
                        tokio::task::yield_now().await;
                        made.fetch_add(1, Ordering::SeqCst);
                        slot.fill(Conn(drops))
                    }
                };
                tokio::task::yield_now().await;
                lease.release(true);
            });
            if i % 3 == 0 {
                // Let it get somewhere, then abort it.
                for _ in 0..(i % 7) {
                    tokio::task::yield_now().await;
                }
                h.abort();
            }
            handles.push(h);
        }
        let (mut finished, mut cancelled) = (0, 0);
        for h in handles {
            match h.await {
                Ok(()) => finished += 1,
                Err(e) if e.is_cancelled() => cancelled += 1,
                Err(e) => panic!("task failed: {e}"),
            }
        }
        (finished, cancelled)
    });
    assert!(
        cancelled > 0 && finished > 0,
        "{finished} finished, {cancelled} cancelled"
    );
    let s = pool.stats();
    assert_eq!(s.in_use + s.draining, 0, "{s:?}");
    assert_eq!(pool.queued_waiters(), 0);
    // Every connection opened is idle in the pool or was closed by an aborted task's lease;
    // none is stranded in a held slot.
    let made = made.load(Ordering::SeqCst);
    assert!(made >= 1);
    assert_eq!(s.available + drops.load(Ordering::SeqCst), made, "{s:?}");
    drop(pool);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        made,
        "each dropped exactly once"
    );
}

/// A waker that panics when woken (a broken executor, or a task's own bug).
struct PanickingWaker;

impl std::task::Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        panic!("this waker panics");
    }
}

/// Another task's panicking waker must not unwind through the releasing thread's `release`
/// (which may run inside a `Drop` while already unwinding, and would abort). The slot the
/// release handed to that task is not lost: dropping its future gives it back.
#[test]
fn a_panicking_waker_does_not_make_release_panic() {
    let drops = Arc::new(AtomicUsize::new(0));
    let pool = Pool::new(1).unwrap();
    let held = pool.add(Conn(drops.clone())).unwrap();
    let waker = Waker::from(Arc::new(PanickingWaker));
    let mut cx = Context::from_waker(&waker);
    let mut wait = Box::pin(pool.acquire_wait());
    assert!(
        wait.as_mut().poll(&mut cx).is_pending(),
        "the pool is exhausted"
    );
    assert_eq!(pool.queued_waiters(), 1);

    // The release hands the connection to the waiter and wakes it: the waker panics, the
    // release does not.
    let released =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.release(held, true)));
    assert_eq!(
        released.ok(),
        Some(Released::Returned),
        "release must not panic"
    );
    assert_eq!(pool.queued_waiters(), 0);
    assert_eq!(pool.stats().in_use, 1, "handed to the waiter");

    // The task never runs again; dropping its future gives the connection back.
    drop(wait);
    let s = pool.stats();
    assert_eq!((s.available, s.in_use), (1, 0), "{s:?}");
    assert_eq!(drops.load(Ordering::SeqCst), 0, "kept, not closed");
}
