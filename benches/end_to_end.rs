//! End to end: requests per second and latency percentiles through three HTTP/2 clients
//! against one loopback h2c server started by the bench.
//!
//! - `h2pool`: [`tokenpool::h2::H2Pool`] (`request`), up to 4 connections to the backend
//!   (new ones are opened only when the open ones carry their 100 streams);
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
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http_body_util::{BodyExt, Empty};
use tokenpool::h2::H2Pool;

/// The response body.
const BODY: &[u8] = b"hello, world!";
/// Requests in flight.
const IN_FLIGHT: [usize; 3] = [1, 16, 128];
/// The most connections `h2pool` may open (as many as `raw_h2_4conn` has).
const CONNS: usize = 4;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Starts the h2c server on `rt`; returns its address.
fn server(rt: &tokio::runtime::Runtime) -> SocketAddr {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                tokio::spawn(async move {
                    let mut conn = h2::server::handshake(tcp).await?;
                    while let Some(next) = conn.accept().await {
                        let (_request, mut respond) = next?;
                        let mut body = respond.send_response(http::Response::new(()), false)?;
                        body.send_data(Bytes::from_static(BODY), true)?;
                    }
                    Ok::<_, h2::Error>(())
                });
            }
        });
        addr
    })
}

type HyperClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
>;

/// One request through one client; returns once the whole response body is read.
#[derive(Clone)]
enum Client {
    H2Pool(H2Pool),
    /// Boxed: the client is large, and cloned once per worker task only.
    HyperUtil(Box<HyperClient>),
    RawH2(Arc<Vec<h2::client::SendRequest<Bytes>>>),
}

impl Client {
    async fn request(&self, uri: &http::Uri, worker: usize) {
        match self {
            Client::H2Pool(pool) => {
                let req = http::Request::get(uri.clone())
                    .body(Bytes::new())
                    .expect("request");
                let resp = pool.request(0, req).await.expect("h2pool request");
                assert_eq!(resp.body().len(), BODY.len());
            }
            Client::HyperUtil(client) => {
                let req = http::Request::get(uri.clone())
                    .body(Empty::new())
                    .expect("request");
                let resp = client.request(req).await.expect("hyper-util request");
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                assert_eq!(body.len(), BODY.len());
            }
            Client::RawH2(conns) => {
                let sr = conns[worker % conns.len()].clone();
                let mut sr = sr.ready().await.expect("ready");
                let req = http::Request::get(uri.clone()).body(()).expect("request");
                let (resp, _) = sr.send_request(req, true).expect("send");
                let mut body = resp.await.expect("response").into_body();
                let mut n = 0;
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.expect("data");
                    n += chunk.len();
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                assert_eq!(n, BODY.len());
            }
        }
    }
}

async fn client(name: &str, addr: SocketAddr) -> Client {
    match name {
        "h2pool" => Client::H2Pool(
            H2Pool::builder([addr])
                .max_connections_per_backend(CONNS)
                .build()
                .expect("h2pool"),
        ),
        "hyper_util" => Client::HyperUtil(Box::new(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        )),
        "raw_h2_1conn" | "raw_h2_4conn" => {
            let n = if name == "raw_h2_1conn" { 1 } else { 4 };
            let mut conns = Vec::new();
            for _ in 0..n {
                let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
                tcp.set_nodelay(true).expect("nodelay");
                let (sr, conn) = h2::client::handshake(tcp).await.expect("handshake");
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                conns.push(sr);
            }
            Client::RawH2(Arc::new(conns))
        }
        other => unreachable!("unknown client {other}"),
    }
}

/// Sends `total` requests from `in_flight` tasks; returns the wall time and each request's
/// latency in nanoseconds.
async fn run(c: &Client, uri: &http::Uri, in_flight: usize, total: u64) -> (Duration, Vec<u64>) {
    let left = Arc::new(AtomicU64::new(total));
    let start = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|worker| {
            let c = c.clone();
            let uri = uri.clone();
            let left = left.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                // Relaxed: only the count matters.
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let t = Instant::now();
                    c.request(&uri, worker).await;
                    lat.push(t.elapsed().as_nanos() as u64);
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total as usize);
    for t in tasks {
        all.extend(t.await.expect("worker"));
    }
    (start.elapsed(), all)
}

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
    for name in ["h2pool", "hyper_util", "raw_h2_1conn", "raw_h2_4conn"] {
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
