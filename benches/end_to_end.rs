//! End to end: requests per second and latency percentiles through four HTTP/2 clients
//! against one loopback h2c server started by the bench.
//!
//! - `h2pool`: [`tokenpool::h2::H2Pool`] (`request`), up to 4 connections to the backend (at
//!   16 and 128 in flight all 4 open: the first requests arrive together, and each that finds
//!   no connection ready reserves a free slot and connects);
//! - `h2pool_send`: the same pool through [`tokenpool::h2::H2Pool::send`] (an `Empty` request
//!   body, the response's `Body` read with `BodyExt::collect`), the path a proxy uses;
//! - `h2pool_dispatch`: the same through [`tokenpool::h2::H2Pool::dispatch`] (the picker, the
//!   retry budget, a copy of the request head per attempt), the path of the pool's `Service`;
//! - `hyper_util`: hyper-util's legacy `Client` with `http2_only(true)` (one connection);
//! - `raw_h2_1conn`, `raw_h2_4conn`: `h2::client::SendRequest` clones on 1 or 4 fixed
//!   connections, worker task `i` always on connection `i % n`: no pool at all, the ceiling
//!   (the better of the two; which one wins depends on the load and the machine).
//!
//! Each at 1, 16 and 128 requests in flight (that many tasks, each sending GET requests one
//! after another). The server answers every request with a 13-byte body. Server and clients
//! each run on a tokio runtime with one worker thread, as a proxy's event loop would.
//! Throughput is criterion's (`Throughput::Elements(1)` per request); the latency of every
//! request of the run (warm-up included) goes into p50/p99, which the bench prints and writes to
//! `target/criterion/end_to_end/latency.json` for `scripts/plot_contention.py`.
//!
//! Run: `cargo bench --bench end_to_end`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

#[path = "common/h2.rs"]
mod common;
use common::{client, run, runtime, server, CLIENTS};

/// Requests in flight.
const IN_FLIGHT: [usize; 3] = [1, 16, 128];

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn end_to_end(c: &mut Criterion) {
    let server_rt = runtime();
    let addr = server(&server_rt);
    let client_rt = runtime();
    let uri: http::Uri = format!("http://{addr}/").parse().expect("uri");
    let latencies: Arc<Mutex<BTreeMap<String, Vec<u64>>>> = Arc::default();

    let mut g = c.benchmark_group("end_to_end");
    g.throughput(Throughput::Elements(1));
    for name in CLIENTS {
        let cl = client_rt.block_on(client(name, addr));
        for in_flight in IN_FLIGHT {
            let id = format!("{name}/{in_flight}");
            let lat = latencies.clone();
            g.bench_with_input(
                BenchmarkId::new(name, in_flight),
                &in_flight,
                |b, &in_flight| {
                    b.iter_custom(|iters| {
                        let (took, l) = client_rt.block_on(run(&cl, &uri, in_flight, iters));
                        // Every request counts, the warm-up's included (a fifth of the run).
                        lat.lock()
                            .expect("latencies")
                            .entry(id.clone())
                            .or_default()
                            .extend(l);
                        took
                    })
                },
            );
        }
        client_rt.block_on(async move { drop(cl) });
    }
    g.finish();

    let mut out = String::from("{\n");
    let map = latencies.lock().expect("latencies");
    let n = map.len();
    for (k, (id, v)) in map.iter().enumerate() {
        let mut v = v.clone();
        v.sort_unstable();
        let (p50, p99) = (percentile(&v, 0.50), percentile(&v, 0.99));
        println!(
            "end_to_end/{id}: p50 {:.1} µs, p99 {:.1} µs ({} requests)",
            p50 as f64 / 1e3,
            p99 as f64 / 1e3,
            v.len()
        );
        out += &format!(
            "  \"{id}\": {{\"p50_ns\": {p50}, \"p99_ns\": {p99}, \"requests\": {}}}{}\n",
            v.len(),
            if k + 1 < n { "," } else { "" }
        );
    }
    out += "}\n";
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/criterion/end_to_end");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("latency.json"), out);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10);
    targets = end_to_end
}
criterion_main!(benches);
