//! The cost of checking a token: `Pool::get` on a live token (compare the pool identity, the
//! backend and the slot index, then the connection reference; no atomic is read, although
//! debug builds also assert the slot word) and on a token the pool must reject.
//!
//! A stale token (one whose connection was closed) cannot be made through the safe API: a
//! token is consumed by `release`. `get/other_pool` therefore presents a *foreign* token: one
//! issued by another pool for the same slot index, backend and generation (every pool starts
//! at generation 0), which differs only in its pool identity, rejected by the first compare.
//! `get/other_backend` is a token of another backend of the same `ConnectionPool` shown to the
//! backend-0 pool (pool identity and backend both differ). `baseline/black_box_only` is the
//! measuring loop alone (read the token through `black_box`), to be subtracted from the
//! others. Each result goes through `black_box` as one `u64` (the connection, or 0 when
//! rejected): a 16-byte `Option<u64>` through `black_box` costs a store-forwarding stall that
//! would dwarf the check itself.
//!
//! Run: `cargo bench --bench token_check`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tokenpool::{ConnectionPool, Pool};

fn token_check(c: &mut Criterion) {
    let mut g = c.benchmark_group("token_check");

    let pool = Pool::new(64).expect("pool size");
    let mut token = pool.add(7u64).expect("room");
    // What the loop and `black_box` cost alone: subtract it from the others.
    g.bench_function("baseline/black_box_only", |b| {
        b.iter(|| black_box(black_box(&token).slot()))
    });
    g.bench_function("get/valid", |b| {
        b.iter(|| black_box(pool.get(black_box(&token)).map_or(0, |c| *c)))
    });
    g.bench_function("get_mut/valid", |b| {
        b.iter(|| black_box(pool.get_mut(black_box(&mut token)).map_or(0, |c| *c)))
    });

    // Same slot index (0), backend (0) and generation (1), another pool: only the pool
    // identity differs.
    let other = Pool::new(64).expect("pool size");
    let foreign = other.add(8u64).expect("room");
    assert_eq!(
        (foreign.slot(), foreign.conn_id().generation()),
        (token.slot(), token.conn_id().generation())
    );
    assert!(pool.get(&foreign).is_none(), "a foreign token is rejected");
    g.bench_function("get/other_pool", |b| {
        b.iter(|| black_box(pool.get(black_box(&foreign)).map_or(0, |c| *c)))
    });

    // A token of backend 1 presented to the pool of backend 0.
    let multi = ConnectionPool::new(2, 64).expect("pool size");
    let b1 = multi
        .backend(1)
        .expect("backend 1")
        .add(9u64)
        .expect("room");
    let p0 = multi.backend(0).expect("backend 0");
    assert!(
        p0.get(&b1).is_none(),
        "a token of another backend is rejected"
    );
    g.bench_function("get/other_backend", |b| {
        b.iter(|| black_box(p0.get(black_box(&b1)).map_or(0, |c| *c)))
    });
    g.finish();

    pool.release(token, true);
    other.release(foreign, true);
    multi.release(b1, true);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = token_check
}
criterion_main!(benches);
