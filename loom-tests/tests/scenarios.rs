//! The race scenarios of the design, model-checked exhaustively (within a preemption bound)
//! against the pool's real code compiled with loom's atomics.
//!
//! Run with `.ci/loom.sh` (release mode, `RUSTFLAGS="--cfg loom"`). Each test goes through
//! [`loom_tests::check`], which sets the bound named in its doc comment and prints the number
//! of interleavings explored and the wall time (`-- --nocapture` shows them). "Unbounded" in a
//! doc comment is the same model with `TOKENPOOL_LOOM_BOUND=none`. Counts are exact (loom's
//! search is deterministic); times are release-mode wall times on a shared 2-core machine and
//! vary by about a third with its load.
#![cfg(loom)]

use std::future::Future;
use std::sync::Arc as StdArc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use loom::future::block_on;
use loom::sync::Arc;
use loom::thread;
use loom_tests::{check, Conn, Tracker};
use tokenpool::{Checkout, ConnectionPool, Pool, Released, Stats, Token};

/// A timeout that never fires in a model (loom's park has no timeout, see `src/sync.rs`); a
/// lost wake-up therefore shows up as a loom deadlock, not as `Error::Timeout`.
const FOREVER: Duration = Duration::from_secs(3600);

/// A waker that does nothing (`Waker::noop` needs Rust 1.85; the crate supports 1.80).
struct NoopWaker;

impl Wake for NoopWaker {
    fn wake(self: StdArc<Self>) {}
}

fn noop_waker() -> Waker {
    Waker::from(StdArc::new(NoopWaker))
}

fn stats(empty: usize, available: usize, in_use: usize, draining: usize) -> Stats {
    Stats {
        empty,
        available,
        in_use,
        draining,
    }
}

/// Scenario 1. **Two acquirers, one available connection.** A 2-slot pool holds one idle
/// connection (the other slot is empty); two threads call `acquire` at once and keep what they
/// get. Exactly one gets a token, the other gets none, and the connection is never handed to
/// both (a second borrower would trip `Conn`'s borrow flag or loom's cell tracking).
///
/// Bound: 5 preemptions (130 interleavings, 0.01 s). Unbounded: 72 interleavings, 0.02 s.
#[test]
fn two_acquirers_one_available_connection() {
    check("two_acquirers_one_available_connection", 5, || {
        let tracker = Tracker::new(1);
        let pool = Arc::new(Pool::new(2).unwrap());
        let t = pool.add(tracker.conn(0)).unwrap();
        assert_eq!(pool.release(t, true), Released::Returned);

        let acquirers: Vec<_> = (0..2)
            .map(|_| {
                let pool = pool.clone();
                thread::spawn(move || {
                    let mut t = pool.acquire()?;
                    pool.get_mut(&mut t).unwrap().use_mut();
                    Some(t)
                })
            })
            .collect();
        let mut got: Vec<_> = acquirers
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect();

        assert_eq!(got.len(), 1, "exactly one acquirer gets the connection");
        let t = got.pop().unwrap();
        assert_eq!(pool.get(&t).unwrap().id(), 0);
        assert_eq!(pool.stats(), stats(1, 0, 1, 0));
        assert_eq!(pool.release(t, false), Released::Closed);
        assert_eq!(tracker.drops(0), 1);
    });
}

/// Scenario 2. **Double close.** The holder uses the connection through `get_mut` and `get`
/// and releases it with `keep = false`, while another thread drains the same connection by
/// id. The connection is dropped exactly once, never while the holder is inside a borrow, and
/// the id matches nothing afterwards.
///
/// Bound: 5 preemptions (176 interleavings, 0.02 s). Unbounded: 54 interleavings, 0.01 s.
#[test]
fn double_close() {
    check("double_close", 5, || {
        let tracker = Tracker::new(1);
        let pool = Arc::new(Pool::new(1).unwrap());
        let mut t = pool.add(tracker.conn(0)).unwrap();
        let id = t.conn_id();

        let holder = {
            let pool = pool.clone();
            thread::spawn(move || {
                pool.get_mut(&mut t).unwrap().use_mut();
                pool.get(&t).unwrap().use_shared();
                pool.release(t, false)
            })
        };
        let drainer = {
            let pool = pool.clone();
            thread::spawn(move || pool.drain(id))
        };
        assert_eq!(holder.join().unwrap(), Released::Closed);
        drainer.join().unwrap(); // true if it marked the held connection, false if too late

        assert_eq!(tracker.drops(0), 1);
        assert_eq!(pool.stats(), stats(1, 0, 0, 0));
        assert!(!pool.drain(id), "a closed connection's id matches nothing");
        assert_eq!(tracker.drops(0), 1);
    });
}

/// Scenario 2, second form. **Double close of an idle connection**: two drainers (`drain` by
/// id and `drain_all`) race to close the same idle connection. Each must first take it
/// (`available → in_use`), so exactly one closes it and it is dropped exactly once. Both may
/// report it: while one drainer holds it on the way to closing it, it looks like any held
/// connection, and the other marks it (a mark the closing release absorbs).
///
/// Bound: 5 preemptions (42 interleavings, <0.01 s). Unbounded: 42 interleavings, <0.01 s.
#[test]
fn double_close_of_idle_connection_by_two_drainers() {
    check("double_close_of_idle_connection_by_two_drainers", 5, || {
        let tracker = Tracker::new(1);
        let pool = Arc::new(Pool::new(1).unwrap());
        let t = pool.add(tracker.conn(0)).unwrap();
        let id = t.conn_id();
        assert_eq!(pool.release(t, true), Released::Returned);

        let by_id = {
            let pool = pool.clone();
            thread::spawn(move || usize::from(pool.drain(id)))
        };
        let all = pool.drain_all();
        let by_id = by_id.join().unwrap();

        assert!(by_id + all >= 1, "someone drained it");
        assert_eq!(tracker.drops(0), 1);
        assert_eq!(pool.stats(), stats(1, 0, 0, 0));
    });
}

/// Scenario 3. **Eviction races usage** (the original use-after-free). A holder uses its
/// connection and returns it (`keep = true`) while another thread runs `drain_backend`. A
/// drain that comes while it is held only marks it: the holder keeps access, nothing is
/// dropped until the holder releases (checked by the holder itself right before its release,
/// by `Conn`'s borrow flag and by loom's cell tracking), and the release closes it. A drain
/// after the return closes it as idle. Either way the slot ends empty, one drop.
///
/// Bound: 5 preemptions (194 interleavings, 0.02 s). Unbounded: 114 interleavings, 0.02 s.
#[test]
fn eviction_races_usage() {
    check("eviction_races_usage", 5, || {
        let tracker = Tracker::new(1);
        let pool = Arc::new(ConnectionPool::new(1, 1).unwrap());
        let mut t = pool.add_and_acquire(tracker.conn(0), 0).unwrap();

        let holder = {
            let pool = pool.clone();
            let tracker = tracker.clone();
            thread::spawn(move || {
                pool.get_mut(&mut t).expect("still held").use_mut();
                pool.get(&t).expect("still held").use_shared();
                assert_eq!(tracker.drops(0), 0, "dropped while its holder holds it");
                pool.release(t, true)
            })
        };
        let drainer = {
            let pool = pool.clone();
            thread::spawn(move || pool.drain_backend(0).unwrap())
        };
        assert_eq!(
            drainer.join().unwrap(),
            1,
            "marked while held, or closed once idle"
        );
        // `Closed` if the mark came first (draining wins over keep); `Returned` if the holder
        // was done first, and then the drainer closed it as an idle connection.
        assert_ne!(holder.join().unwrap(), Released::Rejected);

        assert_eq!(tracker.drops(0), 1);
        assert_eq!(pool.stats(0).unwrap(), stats(1, 0, 0, 0));
    });
}

/// Scenario 3, second form. **Eviction races usage across backends with `drain_all`**: backend
/// 0 has a connection in use, backend 1 an idle one; `drain_all` races the holder. The idle
/// connection is closed by the drainer, the held one only by its holder's release, each
/// exactly once.
///
/// Bound: 5 preemptions (32 interleavings, <0.01 s). Unbounded: 32 interleavings, <0.01 s.
#[test]
fn eviction_races_usage_with_drain_all() {
    check("eviction_races_usage_with_drain_all", 5, || {
        let tracker = Tracker::new(2);
        let pool = Arc::new(ConnectionPool::new(2, 1).unwrap());
        let mut t = pool.add_and_acquire(tracker.conn(0), 0).unwrap();
        let idle = pool.add_and_acquire(tracker.conn(1), 1).unwrap();
        assert_eq!(pool.release(idle, true), Released::Returned);

        let holder = {
            let pool = pool.clone();
            let tracker = tracker.clone();
            thread::spawn(move || {
                pool.get_mut(&mut t).expect("still held").use_mut();
                assert_eq!(tracker.drops(0), 0, "dropped while its holder holds it");
                pool.release(t, true)
            })
        };
        assert_eq!(pool.drain_all(), 2);
        assert_ne!(holder.join().unwrap(), Released::Rejected);

        tracker.assert_all_dropped_once();
        assert_eq!(pool.total_stats(), stats(2, 0, 0, 0));
    });
}

/// Scenario 3, third form. **Idle eviction races usage and a drain.** `evict_idle` closes
/// every idle connection it looks at (its predicate says yes) while another thread acquires,
/// uses and returns the same connection, and the main thread drains it by id. The evictor
/// only looks at a connection it has taken (`available → in_use`), so it never closes one in
/// use; the connection is dropped exactly once, by whichever party holds it when it is
/// closed, and the pool ends empty.
///
/// Bound: 5 preemptions (18,311 interleavings, 1.3 s). Unbounded: 151,261 interleavings, 11 s.
#[test]
fn eviction_of_idle_races_usage_and_drain() {
    check("eviction_of_idle_races_usage_and_drain", 5, || {
        let tracker = Tracker::new(1);
        let pool = Arc::new(Pool::new(1).unwrap());
        let t = pool.add(tracker.conn(0)).unwrap();
        let id = t.conn_id();
        assert_eq!(pool.release(t, true), Released::Returned);

        let evictor = {
            let pool = pool.clone();
            thread::spawn(move || {
                pool.evict_idle(|c| {
                    c.use_shared();
                    true
                })
            })
        };
        let user = {
            let pool = pool.clone();
            thread::spawn(move || {
                if let Some(mut t) = pool.acquire() {
                    pool.get_mut(&mut t).unwrap().use_mut();
                    assert_ne!(pool.release(t, true), Released::Rejected);
                }
            })
        };
        let drained = pool.drain(id);
        let evicted = evictor.join().unwrap();
        user.join().unwrap();

        assert!(evicted <= 1);
        assert!(drained || evicted == 1, "someone closed it");
        assert_eq!(tracker.drops(0), 1);
        assert_eq!(pool.stats(), stats(1, 0, 0, 0));
    });
}

/// Scenario 4. **Release back vs drain.** The holder releases with `keep = true` while a
/// drainer drains the connection by id, and a third party (the main thread) tries to acquire
/// meanwhile. Either the mark comes first and the release closes it (`Closed`), or the release
/// returns it and the drainer (or whoever holds it then) closes it: the drain always succeeds,
/// the connection is dropped exactly once, and it is never available again.
///
/// Bound: 5 preemptions (102 interleavings, 0.01 s). Unbounded: 54 interleavings, 0.01 s.
#[test]
fn release_back_vs_drain() {
    check("release_back_vs_drain", 5, || {
        let tracker = Tracker::new(1);
        let pool = Arc::new(Pool::new(1).unwrap());
        let mut t = pool.add(tracker.conn(0)).unwrap();
        let id = t.conn_id();

        let holder = {
            let pool = pool.clone();
            thread::spawn(move || {
                pool.get_mut(&mut t).unwrap().use_mut();
                pool.release(t, true)
            })
        };
        let drainer = {
            let pool = pool.clone();
            thread::spawn(move || pool.drain(id))
        };
        if let Some(mut t) = pool.acquire() {
            // Only possible between the holder's return and the drain.
            pool.get_mut(&mut t).unwrap().use_mut();
            pool.release(t, true);
        }
        holder.join().unwrap();
        assert!(
            drainer.join().unwrap(),
            "the connection was in the pool to drain"
        );

        assert_eq!(tracker.drops(0), 1);
        assert_eq!(pool.stats(), stats(1, 0, 0, 0));
        assert!(
            pool.acquire().is_none(),
            "a drained connection is never handed out"
        );
    });
}

/// Scenario 5. **Stale id after reuse.** A closes its connection (generation 1), B adds a new
/// connection to the (only) slot, C drains with A's old `ConnId`. Whenever B's add lands, B's
/// connection is untouched: not dropped, not marked draining, and its `keep` release returns
/// it to the pool. (When B runs before A's close, its add finds the pool full and gets its
/// connection back.)
///
/// Bound: 5 preemptions (56,109 interleavings, 9 s). Unbounded: 108,575 interleavings, 27 s.
#[test]
fn stale_id_after_reuse() {
    check("stale_id_after_reuse", 5, || {
        let tracker = Tracker::new(2);
        let pool = Arc::new(Pool::new(1).unwrap());
        let t = pool.add(tracker.conn(0)).unwrap();
        let old = t.conn_id();

        let closer = {
            let pool = pool.clone();
            thread::spawn(move || pool.release(t, false))
        };
        let adder = {
            let pool = pool.clone();
            let conn = tracker.conn(1);
            thread::spawn(move || pool.add(conn).ok())
        };
        let stale = {
            let pool = pool.clone();
            thread::spawn(move || pool.drain(old))
        };
        assert_eq!(closer.join().unwrap(), Released::Closed);
        let added = adder.join().unwrap();
        stale.join().unwrap();
        assert_eq!(tracker.drops(0), 1);

        if let Some(mut t) = added {
            assert_eq!(t.slot(), old.slot(), "the new connection reused the slot");
            assert_ne!(t.conn_id(), old);
            assert_eq!(
                tracker.drops(1),
                0,
                "the stale drain dropped the new connection"
            );
            assert_eq!(pool.stats(), stats(0, 0, 1, 0), "the stale drain marked it");
            pool.get_mut(&mut t).unwrap().use_mut();
            assert_eq!(pool.release(t, true), Released::Returned);
            assert!(!pool.drain(old));
            assert_eq!(pool.stats(), stats(0, 1, 0, 0));
        } else {
            // B ran first and got its connection back, which it dropped on its own.
            assert_eq!(tracker.drops(1), 1);
            assert_eq!(pool.stats(), stats(1, 0, 0, 0));
        }
        drop(pool);
        tracker.assert_all_dropped_once();
    });
}

/// Scenario 6. **Two adders, one empty slot.** Slot 0 of a 2-slot pool is held, slot 1 is
/// empty; two threads `add` a connection each. Exactly one succeeds, the other gets its own
/// connection back untouched; nothing is dropped by the pool and nothing leaks.
///
/// Bound: 5 preemptions (102 interleavings, 0.01 s). Unbounded: 54 interleavings, 0.01 s.
#[test]
fn two_adders_one_empty_slot() {
    check("two_adders_one_empty_slot", 5, || {
        let tracker = Tracker::new(3);
        let pool = Arc::new(Pool::new(2).unwrap());
        let held = pool.add(tracker.conn(2)).unwrap();

        let adders: Vec<_> = (0..2)
            .map(|id| {
                let pool = pool.clone();
                let conn = tracker.conn(id);
                thread::spawn(move || pool.add(conn))
            })
            .collect();
        let results: Vec<_> = adders.into_iter().map(|h| h.join().unwrap()).collect();

        assert_eq!(tracker.total_drops(), 0, "an add dropped a connection");
        let added: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(added.len(), 1, "exactly one add succeeds");
        assert_eq!(added[0].slot(), 1);
        for (id, r) in results.into_iter().enumerate() {
            match r {
                Ok(mut t) => {
                    pool.get_mut(&mut t).unwrap().use_mut();
                    assert_eq!(
                        pool.get(&t).unwrap().id(),
                        id,
                        "the slot holds the winner's"
                    );
                    assert_eq!(pool.release(t, true), Released::Returned);
                }
                Err(conn) => assert_eq!(conn.id(), id, "the loser gets its own back"),
            }
        }
        assert_eq!(pool.stats(), stats(0, 1, 1, 0));
        assert_eq!(pool.release(held, true), Released::Returned);
        drop(pool);
        tracker.assert_all_dropped_once();
    });
}

/// Scenario 7. **Counts never underflow.** The main thread reads `stats()` (of the backend
/// and `total_stats()`) while one thread acquires and returns the idle connection 0, and
/// another adds connection 1 and then runs `drain_all` (which marks its own connection and
/// closes or marks connection 0). Every snapshot stays within `0..=capacity`, sums to the
/// capacity, and shows what the state machine allows: at most one connection ever idle (only
/// connection 0 can be returned), at most two occupied slots.
///
/// Bound: 5 preemptions (3,378 interleavings, 0.4 s). Unbounded: 1,260 interleavings, 0.3 s.
#[test]
fn counts_never_underflow() {
    check("counts_never_underflow", 5, || {
        let tracker = Tracker::new(2);
        let pool = Arc::new(ConnectionPool::new(1, 2).unwrap());
        let t = pool.add_and_acquire(tracker.conn(0), 0).unwrap();
        assert_eq!(pool.release(t, true), Released::Returned);

        let user = {
            let pool = pool.clone();
            thread::spawn(move || {
                if let Ok(mut t) = pool.acquire(0) {
                    pool.get_mut(&mut t).unwrap().use_mut();
                    pool.release(t, true);
                }
            })
        };
        let adder = {
            let pool = pool.clone();
            let conn = tracker.conn(1);
            thread::spawn(move || {
                let t = pool.add_and_acquire(conn, 0).expect("slot 1 is empty");
                assert!(pool.drain_all() >= 1, "at least its own connection");
                assert_eq!(pool.release(t, true), Released::Closed);
            })
        };
        for _ in 0..2 {
            for s in [pool.stats(0).unwrap(), pool.total_stats()] {
                assert_eq!(s.total(), 2, "{s:?}");
                for n in [s.empty, s.available, s.in_use, s.draining] {
                    assert!(n <= 2, "{s:?}");
                }
                assert!(s.available <= 1, "{s:?}");
            }
        }
        user.join().unwrap();
        adder.join().unwrap();

        assert_eq!(pool.stats(0).unwrap(), stats(2, 0, 0, 0));
        tracker.assert_all_dropped_once();
    });
}

/// Scenario 8a. **Waiting, blocking: no lost wake-up.** The only slot is held; a thread waits
/// in `acquire_timeout` (which under loom parks until unparked: a lost wake-up is a loom
/// deadlock) while the holder returns the connection. The waiter always gets that connection.
///
/// Bound: 5 preemptions (207 interleavings, 0.03 s). Unbounded: 261 interleavings, 0.05 s.
#[test]
fn waiting_blocking_release_wakes_waiter() {
    check("waiting_blocking_release_wakes_waiter", 5, || {
        let tracker = Tracker::new(1);
        let pool = Arc::new(Pool::new(1).unwrap());
        let t = pool.add(tracker.conn(0)).unwrap();

        let waiter = {
            let pool = pool.clone();
            thread::spawn(move || match pool.acquire_timeout(FOREVER) {
                Ok(Checkout::Acquired(mut t)) => {
                    pool.get_mut(&mut t).unwrap().use_mut();
                    pool.release(t, true)
                }
                other => panic!("expected the returned connection, got {other:?}"),
            })
        };
        assert_eq!(pool.release(t, true), Released::Returned);
        assert_eq!(waiter.join().unwrap(), Released::Returned);

        assert_eq!(pool.stats(), stats(0, 1, 0, 0));
        assert_eq!(tracker.drops(0), 0);
    });
}

/// Scenario 8b. **Waiting, blocking, on a close: no lost wake-up.** As 8a, but the holder
/// closes its connection: the freed slot wakes the waiter, which gets it as a reservation and
/// fills it with a new connection.
///
/// Bound: 5 preemptions (390 interleavings, 0.03 s). Unbounded: 748 interleavings, 0.2 s.
#[test]
fn waiting_blocking_close_wakes_waiter_with_vacant_slot() {
    check(
        "waiting_blocking_close_wakes_waiter_with_vacant_slot",
        5,
        || {
            let tracker = Tracker::new(2);
            let pool = Arc::new(Pool::new(1).unwrap());
            let t = pool.add(tracker.conn(0)).unwrap();

            let waiter = {
                let pool = pool.clone();
                let tracker = tracker.clone();
                thread::spawn(move || match pool.acquire_timeout(FOREVER) {
                    Ok(Checkout::Vacant(r)) => {
                        let t = r.fill(tracker.conn(1));
                        pool.release(t, true)
                    }
                    other => panic!("expected the freed slot, got {other:?}"),
                })
            };
            assert_eq!(pool.release(t, false), Released::Closed);
            assert_eq!(waiter.join().unwrap(), Released::Returned);

            assert_eq!(pool.stats(), stats(0, 1, 0, 0));
            assert_eq!(tracker.drops(0), 1);
            assert_eq!(tracker.drops(1), 0);
        },
    );
}

/// Scenario 8c. **Waiting, async: no lost wake-up.** As 8a with the `acquire_wait` future
/// driven by `loom::future::block_on`, whose waker is loom's: a wake-up that never comes is a
/// loom deadlock.
///
/// Bound: 5 preemptions (568 interleavings, 0.04 s). Unbounded: 1,099 interleavings, 0.3 s.
#[test]
fn waiting_async_release_wakes_waiter() {
    check("waiting_async_release_wakes_waiter", 5, || {
        let tracker = Tracker::new(1);
        let pool = Arc::new(Pool::new(1).unwrap());
        let t = pool.add(tracker.conn(0)).unwrap();

        let waiter = {
            let pool = pool.clone();
            thread::spawn(move || match block_on(pool.acquire_wait()) {
                Checkout::Acquired(mut t) => {
                    pool.get_mut(&mut t).unwrap().use_mut();
                    pool.release(t, true)
                }
                Checkout::Vacant(_) => panic!("expected the returned connection"),
            })
        };
        assert_eq!(pool.release(t, true), Released::Returned);
        assert_eq!(waiter.join().unwrap(), Released::Returned);

        assert_eq!(pool.stats(), stats(0, 1, 0, 0));
        assert_eq!(tracker.drops(0), 0);
    });
}

/// Scenario 8e. **Waiting, async: a waiter re-polled with a new waker is still woken.** The
/// waiter polls its future once with a no-op waker (an executor it then leaves), then drives
/// the same future with `block_on`, whose waker is new, while the holder returns the
/// connection. A release that hands its wake-up to the old waker between the waiter's check
/// and its waker swap must still be seen (a missed one is a loom deadlock).
///
/// Bound: 5 preemptions (1,046 interleavings, 0.1 s). Unbounded: 4,216 interleavings, 1.3 s.
#[test]
fn waiting_async_waiter_repolled_with_new_waker_is_woken() {
    check(
        "waiting_async_waiter_repolled_with_new_waker_is_woken",
        5,
        || {
            let tracker = Tracker::new(1);
            let pool = Arc::new(Pool::new(1).unwrap());
            let t = pool.add(tracker.conn(0)).unwrap();

            let waiter = {
                let pool = pool.clone();
                thread::spawn(move || {
                    let mut fut = Box::pin(pool.acquire_wait());
                    let waker = noop_waker();
                    let mut cx = Context::from_waker(&waker);
                    let checkout = match fut.as_mut().poll(&mut cx) {
                        Poll::Ready(c) => c,
                        Poll::Pending => block_on(fut),
                    };
                    match checkout {
                        Checkout::Acquired(mut t) => {
                            pool.get_mut(&mut t).unwrap().use_mut();
                            pool.release(t, true)
                        }
                        Checkout::Vacant(_) => panic!("the slot is never empty"),
                    }
                })
            };
            assert_eq!(pool.release(t, true), Released::Returned);
            assert_eq!(waiter.join().unwrap(), Released::Returned);

            assert_eq!(pool.stats(), stats(0, 1, 0, 0));
            assert_eq!(tracker.drops(0), 0);
        },
    );
}

/// Scenario 8f. **Waiting: two waiters, two freed slots, both woken.** Both slots of a 2-slot
/// pool are held; a blocking waiter and an async waiter wait while the main thread returns one
/// connection and closes the other. Each freed slot wakes one waiter, and both waiters end up
/// with a slot: one with the returned connection, one with the empty slot (which it fills).
/// Neither gives its slot back before the end, so a wake-up lost to the other is a deadlock.
///
/// Bound: 3 preemptions (235,265 interleavings, 31-35 s). Unbounded: did not finish within 5
/// minutes (1,620,000 interleavings explored by then, none failing).
///
/// Not 4: at bound 4 loom stops with its own internal assertion "expected to be able to
/// acquire lock" (`loom/src/rt/mutex.rs`), raised in the blocking waiter's `Waiters::cancel`.
/// That is a loom modelling artefact, not a pool bug: loom's `Thread::unpark` makes its target
/// runnable whatever it is blocked on (`set_unparked` in `loom/src/rt/thread.rs`, see
/// tokio-rs/loom#249), so when a releaser pops this waiter's node and unparks it while the
/// waiter is blocked in `Mutex::lock` on the queue lock (held by the async waiter), loom
/// resumes it inside a lock it does not have. With std an unpark only leaves a token for the
/// next `park`, and the thread keeps waiting for the lock.
#[test]
fn waiting_two_waiters_two_releases_both_woken() {
    check("waiting_two_waiters_two_releases_both_woken", 3, || {
        let tracker = Tracker::new(4);
        let pool = Arc::new(Pool::new(2).unwrap());
        let kept = pool.add(tracker.conn(0)).unwrap();
        let closed = pool.add(tracker.conn(1)).unwrap();

        fn take(pool: &Pool<Conn>, tracker: &Tracker, c: Checkout<'_, Conn>, id: usize) -> Token {
            match c {
                Checkout::Acquired(t) => {
                    assert_eq!(
                        pool.get(&t).unwrap().id(),
                        0,
                        "only connection 0 is returned"
                    );
                    t
                }
                Checkout::Vacant(r) => r.fill(tracker.conn(id)),
            }
        }
        let blocking = {
            let (pool, tracker) = (pool.clone(), tracker.clone());
            thread::spawn(move || {
                let c = pool
                    .acquire_timeout(FOREVER)
                    .expect("never times out in a model");
                take(&pool, &tracker, c, 2)
            })
        };
        let waiting = {
            let (pool, tracker) = (pool.clone(), tracker.clone());
            thread::spawn(move || {
                let c = block_on(pool.acquire_wait());
                take(&pool, &tracker, c, 3)
            })
        };
        assert_eq!(pool.release(kept, true), Released::Returned);
        assert_eq!(pool.release(closed, false), Released::Closed);
        let got = [blocking.join().unwrap(), waiting.join().unwrap()];

        assert_eq!(pool.stats(), stats(0, 0, 2, 0));
        assert_eq!(
            tracker.created_count(),
            3,
            "exactly one waiter opened a connection"
        );
        assert_eq!(
            tracker.total_drops(),
            1,
            "only the closed connection is dropped"
        );
        assert_ne!(got[0].slot(), got[1].slot());
        for t in got {
            assert_eq!(pool.release(t, true), Released::Returned);
        }
        drop(pool);
        tracker.assert_all_dropped_once();
    });
}

/// Iterations of scenario 8d in which the cancelled waiter was really waiting (its one poll
/// returned `Pending`) when it was dropped: the test asserts loom reached that case.
static CANCELLED_WHILE_PENDING: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// Scenario 8d. **Waiting, async: a cancelled waiter hands its wake-up on.** The only slot is
/// held. Waiter W1 polls its `acquire_wait` future once (with a no-op waker) and drops it;
/// waiter W2 blocks on its own future; the main thread returns the connection. Whatever the
/// order — including the release picking W1's node just before W1 withdraws — W2 is woken
/// and gets the connection (a lost hand-off is a loom deadlock). If W1's poll finds the
/// connection itself, it returns it for W2.
///
/// Bound: 4 preemptions (709,262 interleavings, 65-80 s; bound 3: 77,910, 9 s). Unbounded: did not
/// finish within 5 minutes (980,000 interleavings explored by then).
#[test]
fn waiting_cancelled_async_waiter_passes_wakeup_on() {
    // Relaxed throughout: a std counter outside the model; loom runs its iterations one after
    // another on this thread, so the final load sees every increment.
    use std::sync::atomic::Ordering::Relaxed;
    CANCELLED_WHILE_PENDING.store(0, Relaxed);
    check("waiting_cancelled_async_waiter_passes_wakeup_on", 4, || {
        let tracker = Tracker::new(1);
        let pool = Arc::new(Pool::new(1).unwrap());
        let t = pool.add(tracker.conn(0)).unwrap();

        let cancelled = {
            let pool = pool.clone();
            thread::spawn(move || {
                let mut fut = Box::pin(pool.acquire_wait());
                let waker = noop_waker();
                let mut cx = Context::from_waker(&waker);
                match fut.as_mut().poll(&mut cx) {
                    Poll::Ready(Checkout::Acquired(t)) => {
                        assert_eq!(pool.release(t, true), Released::Returned);
                    }
                    Poll::Ready(Checkout::Vacant(_)) => panic!("the slot is never empty"),
                    Poll::Pending => {
                        CANCELLED_WHILE_PENDING.fetch_add(1, Relaxed);
                    }
                }
                drop(fut); // cancel
            })
        };
        let waiter = {
            let pool = pool.clone();
            thread::spawn(move || match block_on(pool.acquire_wait()) {
                Checkout::Acquired(mut t) => {
                    pool.get_mut(&mut t).unwrap().use_mut();
                    pool.release(t, true)
                }
                Checkout::Vacant(_) => panic!("the slot is never empty"),
            })
        };
        assert_eq!(pool.release(t, true), Released::Returned);
        cancelled.join().unwrap();
        assert_eq!(waiter.join().unwrap(), Released::Returned);

        assert_eq!(pool.stats(), stats(0, 1, 0, 0));
        assert_eq!(tracker.drops(0), 0);
    });
    assert!(
        CANCELLED_WHILE_PENDING.load(Relaxed) > 0,
        "the model never cancelled a pending waiter"
    );
}

/// Scenario 9. **Reservation before connect.** Slot 0 of a 2-slot pool is held and slot 1 is
/// empty; two tasks find no available connection and both try to open one through
/// `try_checkout` (reserve first, connect second). Exactly one gets the slot and connects;
/// the other gets `None` before it opens anything, so no connection is created in vain and
/// none leaks.
///
/// Bound: 5 preemptions (460 interleavings, 0.05 s). Unbounded: 324 interleavings, 0.08 s.
#[test]
fn reservation_before_connect() {
    check("reservation_before_connect", 5, || {
        let tracker = Tracker::new(3);
        let pool = Arc::new(Pool::new(2).unwrap());
        let held = pool.add(tracker.conn(2)).unwrap();

        let tasks: Vec<_> = (0..2)
            .map(|id| {
                let pool = pool.clone();
                let tracker = tracker.clone();
                thread::spawn(move || match pool.try_checkout() {
                    Some(Checkout::Vacant(r)) => {
                        let mut t = r.fill(tracker.conn(id)); // "connect"
                        pool.get_mut(&mut t).unwrap().use_mut();
                        Some(t)
                    }
                    Some(Checkout::Acquired(_)) => panic!("no connection is ever available"),
                    None => None,
                })
            })
            .collect();
        let got: Vec<_> = tasks
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect();

        assert_eq!(got.len(), 1, "exactly one task gets the empty slot");
        assert_eq!(
            tracker.created_count(),
            2,
            "one new connection, plus the held one"
        );
        assert_eq!(tracker.total_drops(), 0);
        assert_eq!(pool.stats(), stats(0, 0, 2, 0));
        for t in got {
            assert_eq!(pool.release(t, true), Released::Returned);
        }
        assert_eq!(pool.release(held, true), Released::Returned);
        drop(pool);
        tracker.assert_all_dropped_once();
    });
}

/// Scenario 9, second form. **Reservation before connect, with waiting and a failed
/// connect.** A 1-slot pool starts empty; two tasks await `acquire_wait`. Task 0's connect
/// fails (it drops its reservation, which must wake the other task); task 1's succeeds and it
/// returns the connection after use. Every order ends with exactly one connection (task 1's)
/// idle in the pool, nothing dropped, and no task left waiting (a lost wake-up is a loom
/// deadlock).
///
/// Bound: 5 preemptions (11,420 interleavings, 1.4 s). Unbounded: 75,758 interleavings, 23 s.
#[test]
fn reservation_before_connect_with_waiting_and_failed_connect() {
    check(
        "reservation_before_connect_with_waiting_and_failed_connect",
        5,
        || {
            let tracker = Tracker::new(2);
            let pool = Arc::new(Pool::<Conn>::new(1).unwrap());

            let failing = {
                let pool = pool.clone();
                thread::spawn(move || match block_on(pool.acquire_wait()) {
                    Checkout::Vacant(r) => drop(r), // connect failed
                    Checkout::Acquired(mut t) => {
                        pool.get_mut(&mut t).unwrap().use_mut();
                        assert_eq!(pool.release(t, true), Released::Returned);
                    }
                })
            };
            let connecting = {
                let pool = pool.clone();
                let tracker = tracker.clone();
                thread::spawn(move || {
                    let mut t = match block_on(pool.acquire_wait()) {
                        Checkout::Vacant(r) => r.fill(tracker.conn(1)),
                        Checkout::Acquired(_) => panic!("only this task ever connects"),
                    };
                    pool.get_mut(&mut t).unwrap().use_mut();
                    assert_eq!(pool.release(t, true), Released::Returned);
                })
            };
            failing.join().unwrap();
            connecting.join().unwrap();

            assert_eq!(tracker.created_count(), 1);
            assert_eq!(tracker.total_drops(), 0);
            assert_eq!(pool.stats(), stats(0, 1, 0, 0));
            drop(pool);
            tracker.assert_all_dropped_once();
        },
    );
}

/// Scenario 10. **`drain_all` vs add/acquire/release** on a 2-slot pool holding one idle
/// connection: one thread adds connection 1 and returns it, one acquires whatever is idle and
/// returns it, the main thread runs `drain_all`. When all are done, every connection ever
/// added was dropped exactly once or is still idle in the pool (checked by taking every idle
/// connection out), `stats()` matches that, and dropping the pool drops the rest exactly once.
///
/// Bound: 5 preemptions (88,887 interleavings, 13 s). Unbounded: did not finish within 5 minutes
/// (1,120,000 interleavings explored by then).
#[test]
fn drain_all_vs_add_acquire_release() {
    check("drain_all_vs_add_acquire_release", 5, || {
        let tracker = Tracker::new(2);
        let pool = Arc::new(Pool::new(2).unwrap());
        let t = pool.add(tracker.conn(0)).unwrap();
        assert_eq!(pool.release(t, true), Released::Returned);

        let adder = {
            let pool = pool.clone();
            let conn = tracker.conn(1);
            thread::spawn(move || {
                let mut t = pool.add(conn).expect("a slot is empty");
                pool.get_mut(&mut t).unwrap().use_mut();
                pool.release(t, true);
            })
        };
        let user = {
            let pool = pool.clone();
            thread::spawn(move || {
                if let Some(mut t) = pool.acquire() {
                    pool.get_mut(&mut t).unwrap().use_mut();
                    pool.release(t, true);
                }
            })
        };
        pool.drain_all();
        adder.join().unwrap();
        user.join().unwrap();

        let live: Vec<usize> = (0..2).filter(|&id| tracker.drops(id) == 0).collect();
        assert_eq!(pool.stats(), stats(2 - live.len(), live.len(), 0, 0));
        let mut idle: Vec<_> = std::iter::from_fn(|| pool.acquire()).collect();
        let mut ids: Vec<usize> = idle.iter().map(|t| pool.get(t).unwrap().id()).collect();
        ids.sort_unstable();
        assert_eq!(ids, live, "every undropped connection is idle in the pool");
        for t in idle.drain(..) {
            assert_eq!(pool.release(t, true), Released::Returned);
        }
        drop(pool);
        tracker.assert_all_dropped_once();
    });
}
