//! Stress test: real threads doing random operations on a small [`ConnectionPool`].
//!
//! 8 threads do 1,000,000 random operations in total over 2 backends × 4 slots: acquire,
//! add, `get`/`get_mut`, release (keep or close), drain by id (often a stale id), a
//! backend's `drain_all`, reserve + fill, dropped reservations, and `acquire_timeout` with
//! timeouts of a few microseconds. Every connection has a unique id and counts its drops
//! (the shared `common/counting.rs` fixture); it also records while it is borrowed, so two
//! holders at once or a drop during a borrow panics. While the threads run, each one checks
//! that the pool shows at least the slots it holds itself as held, and fewer waiters than
//! there are other threads. After the run every connection created was dropped exactly once
//! or is idle in its own backend, each backend's counts are exactly what that leaves, no
//! waiter is left queued, no token was dropped unreleased, and dropping the pool drops the
//! rest once.
//!
//! Under AddressSanitizer (nightly):
//! `RUSTFLAGS=-Zsanitizer=address RUSTDOCFLAGS=-Zsanitizer=address cargo +nightly test
//! --target x86_64-unknown-linux-gnu --test stress -- --test-threads 1`

#[path = "common/counting.rs"]
mod counting;

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use counting::{Conn, Ledger};
use tokenpool::{Checkout, ConnId, ConnectionPool, Released, Stats, Timeout, Token};

const THREADS: usize = 8;
const BACKENDS: usize = 2;
const SLOTS: usize = 4;
/// Operations over all threads, in debug and release builds alike (a debug build runs them in
/// about a second on 2 cores, so there is no need to scale down).
const OPS: usize = 1_000_000;
/// Tokens one thread holds at most before it releases one.
const MAX_HELD: usize = 3;

/// xorshift64* (Vigna): small, fast, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() >> 32) as usize % n
    }

    fn coin(&mut self) -> bool {
        self.next() >> 63 == 1
    }
}

/// Counts of what the threads did, to check that every kind of operation really ran.
#[derive(Default, Debug, Clone, Copy)]
struct Done {
    acquired: usize,
    added: usize,
    full: usize,
    returned: usize,
    closed: usize,
    drained: usize,
    filled: usize,
    reservations_dropped: usize,
    timeouts: usize,
    waited: usize,
}

impl std::ops::AddAssign for Done {
    fn add_assign(&mut self, o: Done) {
        self.acquired += o.acquired;
        self.added += o.added;
        self.full += o.full;
        self.returned += o.returned;
        self.closed += o.closed;
        self.drained += o.drained;
        self.filled += o.filled;
        self.reservations_dropped += o.reservations_dropped;
        self.timeouts += o.timeouts;
        self.waited += o.waited;
    }
}

fn release(pool: &ConnectionPool<Conn>, t: Token, keep: bool, done: &mut Done) {
    match pool.release(t, keep) {
        Released::Returned => {
            assert!(keep, "a close returned the connection");
            done.returned += 1;
        }
        Released::Closed => done.closed += 1,
        Released::Rejected => panic!("a held token was rejected"),
    }
}

fn worker(pool: &ConnectionPool<Conn>, ledger: &Arc<Ledger>, seed: u64, ops: usize) -> Done {
    let mut rng = Rng::new(seed);
    let mut held: Vec<Token> = Vec::with_capacity(MAX_HELD);
    // Ids this thread has seen, most of them soon stale: drained by id later.
    let mut seen: Vec<ConnId> = Vec::with_capacity(16);
    let mut done = Done::default();
    let remember = |seen: &mut Vec<ConnId>, id: ConnId, rng: &mut Rng| {
        if seen.len() < 16 {
            seen.push(id);
        } else {
            seen[rng.below(16)] = id;
        }
    };
    for _ in 0..ops {
        let backend = rng.below(BACKENDS);
        let bpool = pool.backend(backend).expect("backend in range");
        if held.len() >= MAX_HELD {
            let t = held.swap_remove(rng.below(held.len()));
            let keep = rng.below(4) != 0;
            release(pool, t, keep, &mut done);
            continue;
        }
        match rng.below(100) {
            0..=24 => {
                if let Some(t) = bpool.acquire() {
                    done.acquired += 1;
                    remember(&mut seen, t.conn_id(), &mut rng);
                    held.push(t);
                }
            }
            25..=34 => match bpool.add(ledger.conn(backend)) {
                Ok(t) => {
                    done.added += 1;
                    remember(&mut seen, t.conn_id(), &mut rng);
                    held.push(t);
                }
                Err(conn) => {
                    assert_eq!(ledger.drops(conn.id), 0, "a refused add dropped it");
                    done.full += 1;
                }
            },
            35..=49 => {
                if !held.is_empty() {
                    let i = rng.below(held.len());
                    let t = &mut held[i];
                    let b = t.backend();
                    if rng.coin() {
                        let conn = pool.get_mut(t).expect("a held token stays valid");
                        conn.use_mut(b);
                    } else {
                        let conn = pool.get(t).expect("a held token stays valid");
                        conn.use_shared(b);
                    }
                }
            }
            50..=69 => {
                if !held.is_empty() {
                    let t = held.swap_remove(rng.below(held.len()));
                    let keep = rng.below(4) != 0;
                    release(pool, t, keep, &mut done);
                }
            }
            70..=76 => {
                if !seen.is_empty() {
                    let id = seen[rng.below(seen.len())];
                    if pool.drain(id) {
                        done.drained += 1;
                    }
                }
            }
            77..=78 => {
                done.drained += bpool.drain_all();
            }
            79..=86 => {
                if let Some(r) = bpool.reserve() {
                    if rng.below(3) == 0 {
                        drop(r); // the connect failed
                        done.reservations_dropped += 1;
                    } else {
                        let t = r.fill(ledger.conn(backend)).into_token();
                        done.filled += 1;
                        remember(&mut seen, t.conn_id(), &mut rng);
                        held.push(t);
                    }
                }
            }
            87..=94 => {
                // The slots this thread holds cannot change state while it holds them (only
                // a holder moves a slot out of in_use/draining), so however the other slots
                // move during the read, the pool must show at least these as held.
                let mine = held.iter().filter(|t| t.backend() == backend).count();
                let stats = bpool.stats();
                assert!(
                    stats.in_use + stats.draining >= mine,
                    "{stats:?}: this thread alone holds {mine}"
                );
                // This thread is not waiting, so at most the others are.
                assert!(stats.waiters < THREADS, "{stats:?}");
                let total = pool.total_stats();
                assert!(
                    total.in_use + total.draining >= held.len(),
                    "{total:?}: this thread alone holds {}",
                    held.len()
                );
                // `total_stats` sums the backends one after another, not at one instant: a
                // thread that moves from waiting on one backend to waiting on another can be
                // counted on both. Each of the others is counted at most once per backend.
                assert!(total.waiters <= (THREADS - 1) * BACKENDS, "{total:?}");
                if rng.below(4) == 0 {
                    // Give up the core while holding tokens, so that the other threads
                    // meet a pool in more states than one time slice would show them.
                    std::thread::yield_now();
                }
            }
            _ => {
                let timeout = Duration::from_micros(rng.below(50) as u64);
                match bpool.acquire_timeout(timeout) {
                    Ok(Checkout::Acquired(lease)) => {
                        let t = lease.into_token();
                        done.waited += 1;
                        remember(&mut seen, t.conn_id(), &mut rng);
                        held.push(t);
                    }
                    Ok(Checkout::Vacant(r)) => {
                        done.waited += 1;
                        if rng.coin() {
                            drop(r);
                            done.reservations_dropped += 1;
                        } else {
                            held.push(r.fill(ledger.conn(backend)).into_token());
                            done.filled += 1;
                        }
                    }
                    Err(Timeout) => done.timeouts += 1,
                }
            }
        }
    }
    for t in held {
        let keep = rng.coin();
        release(pool, t, keep, &mut done);
    }
    done
}

#[test]
fn random_operations_from_8_threads_drop_every_connection_exactly_once() {
    let start = Instant::now();
    let unreleased_before = tokenpool::unreleased_tokens();
    // Each operation creates at most one connection.
    let ledger = Ledger::new(OPS + THREADS);
    let pool = ConnectionPool::new(BACKENDS, SLOTS).unwrap();
    let barrier = Barrier::new(THREADS);
    let mut done = Done::default();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|i| {
                let (pool, ledger, barrier) = (&pool, &ledger, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    worker(pool, ledger, 0x5EED + i as u64, OPS / THREADS)
                })
            })
            .collect();
        for w in workers {
            done += w.join().unwrap();
        }
    });

    // Every operation kind ran (a test that silently stopped exercising one would pass).
    for (what, n) in [
        ("acquired", done.acquired),
        ("added", done.added),
        ("full", done.full),
        ("returned", done.returned),
        ("closed", done.closed),
        ("drained", done.drained),
        ("filled", done.filled),
        ("reservations_dropped", done.reservations_dropped),
        ("waited", done.waited),
    ] {
        assert!(n > 0, "no `{what}` in {done:?}");
    }

    // Every connection created was dropped exactly once, or is idle in the pool; all threads
    // released everything they held, so each backend holds exactly its undropped connections
    // as available, nothing in use or draining, the rest empty, and no waiter.
    let created = ledger.created();
    let alive: BTreeSet<usize> = ledger.alive().into_iter().collect();
    // The pool is quiescent now: these counts are exact.
    let stats: Vec<Stats> = (0..BACKENDS)
        .map(|b| pool.backend(b).unwrap().stats())
        .collect();
    for b in 0..BACKENDS {
        let waiters = pool.backend(b).unwrap().queued_waiters();
        assert_eq!(waiters, 0, "backend {b}: a waiter left queued");
    }
    assert_eq!(
        tokenpool::unreleased_tokens(),
        unreleased_before,
        "a token was dropped without release"
    );
    let mut idle = Vec::new();
    let mut in_pool = BTreeSet::new();
    for (b, stats) in stats.iter().enumerate() {
        let before = in_pool.len();
        // Bounded: a broken acquire could hand out one slot for ever.
        while let Some(t) = pool.backend(b).unwrap().acquire() {
            assert!(
                idle.len() < BACKENDS * SLOTS,
                "more idle connections than slots"
            );
            let conn = pool.get(&t).unwrap();
            assert_eq!(conn.backend, b);
            assert!(
                in_pool.insert(conn.id),
                "connection {} in two slots",
                conn.id
            );
            idle.push(t);
        }
        let here = in_pool.len() - before;
        assert_eq!(
            *stats,
            Stats {
                empty: SLOTS - here,
                available: here,
                ..Stats::default()
            },
            "backend {b}: counts vs the {here} idle connections it handed out"
        );
    }
    assert_eq!(
        in_pool, alive,
        "undropped connections are exactly those in the pool"
    );
    for t in idle {
        assert_eq!(pool.release(t, true), Released::Returned);
    }

    drop(pool);
    for id in 0..created {
        assert_eq!(
            ledger.drops(id),
            1,
            "connection {id} after dropping the pool"
        );
    }
    eprintln!(
        "stress: {OPS} ops, {created} connections, {:.2?}: {done:?}",
        start.elapsed()
    );
}
