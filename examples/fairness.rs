//! How fair is the blocking waiter? Counts how many releases a thread blocked in
//! `acquire_timeout` misses while threads that never wait (bargers) keep taking the slot.
//!
//! One pool, one slot, one connection. Each barger loops: `acquire()` (spinning while it gets
//! `None`; it never waits), holds the connection for `hold_ns` of busy work, counts the release
//! it is about to make, and `release(token, true)`. One waiter thread runs `rounds` rounds of:
//! read the release count (`r0`), `acquire_timeout(5 s)`, read the count again (`r1`), hold the
//! connection for the same work, release it, then spin a jittered `gap_ns` before the next
//! round.
//!
//! # What "missed" counts
//! A barger increments `releases` *just before* its `release` (not after). Every increment is
//! then sequenced before a release CAS that the next holder's acquire CAS reads from, so when
//! the waiter holds the slot, every release made so far is already counted, and no counted
//! release is still pending (a barger between its increment and its release would be holding
//! the only slot). So `r1 - r0` is exactly the number of releases made while the waiter wanted
//! the connection, *including the one that freed it for the waiter* whenever that release
//! came after `r0`; the waiter got that one, so
//!
//! ```text
//! missed = (r1 - r0) - 1      (0 when r1 == r0: the waiter got the release counted just
//!                              before r0, i.e. the barger was about to release at r0)
//! ```
//!
//! The only inexactness is at the start: a release counted just before `r0` but taken by a
//! barger again is not counted as missed (at most one per round, an undercount). A round that
//! times out counts every release `r1 - r0` as missed and waits 5 s.
//!
//! ```sh
//! cargo run --release --example fairness -- [rounds] [bargers] [hold_ns] [gap_ns]
//! ```

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokenpool::{Checkout, Lease, Pool, Released, Timeout};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Returns what `acquire_timeout` handed the waiter to the pool (kept, not closed).
fn give_back(got: Lease<'_, u64>) {
    let r = got.release(true);
    assert_eq!(r, Released::Returned, "the waiter's connection went back");
}

/// Busy work for about `ns` nanoseconds (while holding the connection, or between rounds).
fn work(ns: u64) {
    if ns == 0 {
        return;
    }
    let end = Instant::now() + Duration::from_nanos(ns);
    let mut x = 0u64;
    while Instant::now() < end {
        x = black_box(x.wrapping_add(1));
        std::hint::spin_loop();
    }
}

struct Args {
    rounds: usize,
    bargers: usize,
    hold_ns: u64,
    gap_ns: u64,
}

fn usage() -> ! {
    eprintln!(
        "usage: fairness [rounds] [bargers] [hold_ns] [gap_ns]\n\
         \n\
         rounds   waiter rounds (default 2000)\n\
         bargers  threads that take the slot without ever waiting (default 1)\n\
         hold_ns  busy work while holding the connection, bargers and waiter (default 300)\n\
         gap_ns   mean pause of the waiter between rounds, jittered 0.5x..1.5x (default 20000)"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") || args.len() > 4 {
        usage();
    }
    let num = |i: usize, default: u64, what: &str| -> u64 {
        match args.get(i) {
            None => default,
            Some(s) => s.replace('_', "").parse().unwrap_or_else(|_| {
                eprintln!("{what}: not a number: {s:?}");
                usage()
            }),
        }
    };
    let a = Args {
        rounds: num(0, 2000, "rounds") as usize,
        bargers: num(1, 1, "bargers") as usize,
        hold_ns: num(2, 300, "hold_ns"),
        gap_ns: num(3, 20_000, "gap_ns"),
    };
    if a.rounds == 0 {
        eprintln!("rounds must be at least 1");
        usage();
    }
    a
}

/// Nearest-rank percentile of sorted values.
fn pct<T: Copy>(sorted: &[T], p: f64) -> T {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn main() {
    let args = parse_args();
    let pool = Pool::<u64>::new(1).unwrap();
    pool.release(pool.add(0).expect("an empty slot"), true);

    let releases = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let mut missed: Vec<u64> = Vec::with_capacity(args.rounds);
    let mut waits: Vec<Duration> = Vec::with_capacity(args.rounds);
    let mut timeouts = 0usize;
    let start = Instant::now();

    std::thread::scope(|s| {
        for _ in 0..args.bargers {
            let (pool, releases, stop) = (&pool, &releases, &stop);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(t) = pool.acquire() else {
                        std::hint::spin_loop();
                        continue;
                    };
                    work(args.hold_ns);
                    // Counted before the release: see the module docs.
                    releases.fetch_add(1, Ordering::SeqCst);
                    pool.release(t, true);
                }
            });
        }

        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..args.rounds {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            work(args.gap_ns / 2 + rng % (args.gap_ns + 1));

            let r0 = releases.load(Ordering::SeqCst);
            let t0 = Instant::now();
            let got = pool.acquire_timeout(TIMEOUT);
            let waited = t0.elapsed();
            let r1 = releases.load(Ordering::SeqCst);
            waits.push(waited);
            match got {
                Ok(Checkout::Acquired(x)) => {
                    missed.push((r1 - r0).saturating_sub(1));
                    work(args.hold_ns);
                    give_back(x);
                }
                Ok(Checkout::Vacant(_)) => unreachable!("the only slot always holds a connection"),
                Err(Timeout) => {
                    timeouts += 1;
                    missed.push(r1 - r0);
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });

    let elapsed = start.elapsed();
    let total = releases.load(Ordering::SeqCst);
    let zero = missed.iter().filter(|&&m| m == 0).count();
    let mean_missed = missed.iter().sum::<u64>() as f64 / missed.len() as f64;
    let mean_wait = waits.iter().sum::<Duration>() / waits.len() as u32;
    missed.sort_unstable();
    waits.sort_unstable();

    println!(
        "fairness: rounds {} bargers {} hold_ns {} gap_ns {} (cpus {})",
        args.rounds,
        args.bargers,
        args.hold_ns,
        args.gap_ns,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  barger releases {total} in {elapsed:.2?} ({:.2} M/s); waiter timeouts {timeouts}",
        total as f64 / elapsed.as_secs_f64() / 1e6
    );
    println!(
        "  missed releases: max {} p99 {} p90 {} median {} mean {:.1}; rounds with none missed {:.1}%",
        missed[missed.len() - 1],
        pct(&missed, 0.99),
        pct(&missed, 0.90),
        pct(&missed, 0.50),
        mean_missed,
        100.0 * zero as f64 / missed.len() as f64
    );
    println!(
        "  wait: max {:.2?} p99 {:.2?} p90 {:.2?} median {:.2?} mean {:.2?}",
        waits[waits.len() - 1],
        pct(&waits, 0.99),
        pct(&waits, 0.90),
        pct(&waits, 0.50),
        mean_wait
    );
}
