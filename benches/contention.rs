//! Checkout+return pairs under contention: this crate's [`Pool`] against the pools proxies use
//! today, measured side by side in one run.
//!
//! Two shapes, each at 1, 2, 4 and 8 threads (and up to the core count where there are more):
//! - `contention64`: a pool of 64 objects, far more than threads, so a good pool lets every
//!   thread work on its own object;
//! - `contention4`: a pool of 4 objects, fewer than the threads at 8, so they fight over them.
//!
//! Every implementation does the same work per pair: take an object, touch it through
//! `black_box`, give it back. A thread that finds nothing free retries after a `spin_loop`
//! hint and yields its core every 64 failed tries (the same policy for every implementation).
//!
//! Threads are started once per criterion sample and released together by a barrier; the
//! sample's time is the wall time from the barrier to the last thread's end, and throughput is
//! total pairs per second across all threads (`Throughput::Elements(1)` per pair).
//!
//! Run: `cargo bench --bench contention` (a few minutes on 2 cores), then
//! `python3 scripts/plot_contention.py` for the table and `docs/contention.svg`.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use tokenpool::Pool;

/// The pooled object: two words, like a small connection handle.
#[derive(Debug)]
struct Conn {
    id: u64,
    _state: u64,
}

fn conn(id: usize) -> Conn {
    Conn {
        id: id as u64,
        _state: 0,
    }
}

/// The work done while holding an object, identical for every implementation.
#[inline(always)]
fn touch(c: &Conn) {
    black_box(c.id);
}

/// Retry policy when nothing is free: identical for every implementation.
#[inline(always)]
fn backoff(fails: &mut u32) {
    *fails += 1;
    if *fails % 64 == 0 {
        thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

/// One checkout+return pair.
trait Subject: Send + Sync + 'static {
    fn pair(&self);
}

/// `Pool` through its token API: `acquire` + `get` + `release(token, true)`.
struct TokenPool(Pool<Conn>);

impl Subject for TokenPool {
    #[inline(always)]
    fn pair(&self) {
        let mut fails = 0;
        let t = loop {
            match self.0.acquire() {
                Some(t) => break t,
                None => backoff(&mut fails),
            }
        };
        touch(self.0.get(&t).expect("live token"));
        self.0.release(t, true);
    }
}

/// `Pool` through its RAII lease: `acquire_lease` + deref + `release(true)`.
struct TokenPoolLease(Pool<Conn>);

impl Subject for TokenPoolLease {
    #[inline(always)]
    fn pair(&self) {
        let mut fails = 0;
        let l = loop {
            match self.0.acquire_lease() {
                Some(l) => break l,
                None => backoff(&mut fails),
            }
        };
        touch(&l);
        l.release(true);
    }
}

fn token_pool(n: usize) -> Pool<Conn> {
    let pool = Pool::new(n).expect("pool size");
    let tokens: Vec<_> = (0..n).map(|i| pool.add(conn(i)).expect("room")).collect();
    for t in tokens {
        pool.release(t, true);
    }
    pool
}

struct StdMutexVec(std::sync::Mutex<Vec<Conn>>);

impl Subject for StdMutexVec {
    #[inline(always)]
    fn pair(&self) {
        let mut fails = 0;
        let c = loop {
            match self.0.lock().unwrap().pop() {
                Some(c) => break c,
                None => backoff(&mut fails),
            }
        };
        touch(&c);
        self.0.lock().unwrap().push(c);
    }
}

struct PlMutexVec(parking_lot::Mutex<Vec<Conn>>);

impl Subject for PlMutexVec {
    #[inline(always)]
    fn pair(&self) {
        let mut fails = 0;
        let c = loop {
            match self.0.lock().pop() {
                Some(c) => break c,
                None => backoff(&mut fails),
            }
        };
        touch(&c);
        self.0.lock().push(c);
    }
}

/// pingora's pool keeps its hot idle connections in an `ArrayQueue`: pop to check out, push to
/// return.
struct Queue(ArrayQueue<Conn>);

impl Subject for Queue {
    #[inline(always)]
    fn pair(&self) {
        let mut fails = 0;
        let c = loop {
            match self.0.pop() {
                Some(c) => break c,
                None => backoff(&mut fails),
            }
        };
        touch(&c);
        // Never full: only objects taken from the queue are pushed back.
        let _ = self.0.push(c);
    }
}

/// `deadpool::unmanaged::Pool`: `try_get` checks out, dropping the object returns it.
struct Deadpool(deadpool::unmanaged::Pool<Conn>);

impl Subject for Deadpool {
    #[inline(always)]
    fn pair(&self) {
        let mut fails = 0;
        let c = loop {
            match self.0.try_get() {
                Ok(c) => break c,
                Err(_) => backoff(&mut fails),
            }
        };
        touch(&c);
        drop(c);
    }
}

/// The implementations, by the name their bench ids carry.
const SUBJECTS: &[&str] = &[
    "tokenpool_token",
    "tokenpool_lease",
    "std_mutex_vec",
    "parking_lot_mutex_vec",
    "crossbeam_arrayqueue",
    "deadpool_unmanaged",
];

/// Runs `iters` pairs split over `threads` threads, started together; returns the wall time.
fn run<S: Subject>(subject: &Arc<S>, threads: usize, iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let per = iters.div_ceil(threads as u64);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let s = subject.clone();
            let b = barrier.clone();
            thread::spawn(move || {
                b.wait();
                for _ in 0..per {
                    s.pair();
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().expect("bench thread");
    }
    start.elapsed()
}

/// Builds a fresh, full pool of `n` objects for one sample and runs it; dispatches once to
/// the concrete type, so the hot loop does not go through a vtable.
fn run_named(name: &str, n: usize, threads: usize, iters: u64) -> Duration {
    macro_rules! go {
        ($t:ty, $v:expr) => {{
            let s: Arc<$t> = Arc::new($v);
            run(&s, threads, iters)
        }};
    }
    match name {
        "tokenpool_token" => go!(TokenPool, TokenPool(token_pool(n))),
        "tokenpool_lease" => go!(TokenPoolLease, TokenPoolLease(token_pool(n))),
        "std_mutex_vec" => go!(
            StdMutexVec,
            StdMutexVec(std::sync::Mutex::new((0..n).map(conn).collect()))
        ),
        "parking_lot_mutex_vec" => go!(
            PlMutexVec,
            PlMutexVec(parking_lot::Mutex::new((0..n).map(conn).collect()))
        ),
        "crossbeam_arrayqueue" => {
            let q = ArrayQueue::new(n);
            for i in 0..n {
                q.push(conn(i)).expect("room");
            }
            go!(Queue, Queue(q))
        }
        "deadpool_unmanaged" => {
            let p = deadpool::unmanaged::Pool::new(n);
            for i in 0..n {
                p.try_add(conn(i)).map_err(|_| ()).expect("room");
            }
            go!(Deadpool, Deadpool(p))
        }
        other => unreachable!("unknown subject {other}"),
    }
}

/// 1, 2, 4, 8 threads, then doubling up to the number of cores.
fn thread_counts() -> Vec<usize> {
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let mut v = vec![1, 2, 4, 8];
    let mut t = 16;
    while t <= cores {
        v.push(t);
        t *= 2;
    }
    v
}

fn contention(c: &mut Criterion) {
    for (group, slots) in [("contention64", 64), ("contention4", 4)] {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(1));
        for &name in SUBJECTS {
            for &threads in &thread_counts() {
                g.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &threads| {
                    b.iter_custom(|iters| run_named(name, slots, threads, iters))
                });
            }
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10);
    targets = contention
}
criterion_main!(benches);
