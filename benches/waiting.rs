//! Hand-off latency from a release to a waiter: the time from just before `release(token,
//! true)` on one thread to the moment the waiter holds the connection.
//!
//! One slot, one connection. The bench thread takes it, then tells the waiter (a thread
//! calling `acquire_timeout`, or a tokio task awaiting `acquire_wait` on a one-worker runtime)
//! to ask for it; the bench thread gives the waiter 20 µs to get past its short spin and go to sleep
//! (park, or return `Pending` with the runtime idle), stamps the time, releases; the waiter
//! stamps the time as soon as it holds the connection, releases it at once and reports the
//! difference. The reported time per iteration is that latency alone (the 20 µs are not
//! counted). On a loaded machine the waiter may still be spinning after 20 µs; the figure is
//! then lower, not higher, than a true parked hand-off.
//!
//! Run: `cargo bench --bench waiting`.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use tokenpool::{Checkout, Pool};

/// How long the holder waits before releasing, so that the waiter is asleep.
const SETTLE: Duration = Duration::from_micros(20);

fn one_slot_pool() -> Arc<Pool<u64>> {
    let pool = Pool::new(1).expect("pool size");
    let t = pool.add(0).expect("room");
    pool.release(t, true);
    Arc::new(pool)
}

/// Takes the only connection, spinning: the waiter released it just before it reported.
fn take(pool: &Pool<u64>) -> tokenpool::Token {
    loop {
        if let Some(t) = pool.acquire() {
            return t;
        }
        std::hint::spin_loop();
    }
}

fn spin_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// The holder's side of `iters` hand-offs: take the connection, tell the waiter to start
/// waiting (`go`), let it fall asleep, send it the release time and release; the waiter
/// answers with the latency it saw on `done`.
fn handoffs(
    pool: &Arc<Pool<u64>>,
    iters: u64,
    go: &mpsc::Sender<()>,
    release_at: &mpsc::Sender<Instant>,
    done: &mpsc::Receiver<Duration>,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let t = take(pool);
        go.send(()).expect("waiter alive");
        spin_for(SETTLE);
        release_at.send(Instant::now()).expect("waiter alive");
        pool.release(t, true);
        total += done.recv().expect("waiter alive");
    }
    total
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

fn blocking(g: &mut Group<'_>) {
    g.bench_function("acquire_timeout", |b| {
        b.iter_custom(|iters| {
            let pool = one_slot_pool();
            let (go, go_rx) = mpsc::channel::<()>();
            let (release_tx, release_at) = mpsc::channel::<Instant>();
            let (done_tx, done) = mpsc::channel();
            let p = pool.clone();
            let waiter = thread::spawn(move || {
                for _ in 0..iters {
                    go_rx.recv().expect("bench alive");
                    let checkout = p
                        .acquire_timeout(Duration::from_secs(10))
                        .expect("hand-off");
                    let got = Instant::now();
                    let Checkout::Acquired(lease) = checkout else {
                        unreachable!("the connection is returned, never closed")
                    };
                    lease.release(true);
                    let sent = release_at.recv().expect("bench alive");
                    done_tx
                        .send(got.saturating_duration_since(sent))
                        .expect("bench alive");
                }
            });
            let total = handoffs(&pool, iters, &go, &release_tx, &done);
            waiter.join().expect("waiter");
            total
        })
    });
}

fn asynchronous(g: &mut Group<'_>) {
    // One worker thread, so the task's wake-up crosses threads exactly as a parked thread's.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    g.bench_function("acquire_wait_tokio", |b| {
        b.iter_custom(|iters| {
            let pool = one_slot_pool();
            let (go, go_rx) = mpsc::channel::<()>();
            let (release_tx, release_at) = mpsc::channel::<Instant>();
            let (done_tx, done) = mpsc::channel();
            let p = pool.clone();
            let task = rt.spawn(async move {
                for _ in 0..iters {
                    go_rx.recv().expect("bench alive");
                    let checkout = p.acquire_wait().await;
                    let got = Instant::now();
                    let Checkout::Acquired(lease) = checkout else {
                        unreachable!("the connection is returned, never closed")
                    };
                    lease.release(true);
                    // The holder sent the stamp before releasing, so it is there already.
                    let sent = release_at.recv().expect("bench alive");
                    done_tx
                        .send(got.saturating_duration_since(sent))
                        .expect("bench alive");
                }
            });
            let total = handoffs(&pool, iters, &go, &release_tx, &done);
            rt.block_on(task).expect("waiter task");
            total
        })
    });
}

fn waiting(c: &mut Criterion) {
    let mut g = c.benchmark_group("waiting");
    // Every iteration also spends SETTLE outside the measured time: flat sampling keeps the
    // real run time close to the configured measurement time.
    g.sampling_mode(SamplingMode::Flat);
    blocking(&mut g);
    asynchronous(&mut g);
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10);
    targets = waiting
}
criterion_main!(benches);
