//! Measures what multiplexing buys: requests/s with 64 requests in flight over a pool of 4
//! connections, when a connection carries up to 100 streams at once (the token is held only
//! while a stream is opened) versus one stream at a time (`max_streams_per_connection(1)`:
//! the token stays with the request until its response has been read, as if held for the
//! whole request); and, for scale, one stream at a time over 64 connections (what holding the
//! token for the whole request needs to keep 64 requests in flight). Not a test of speed (no
//! timing is asserted): run it by hand, in release:
//!
//! ```text
//! cargo test --release --test h2_multiplexing -- --ignored --nocapture
//! ```

mod common;

use std::time::{Duration, Instant};

use common::{get, Config, TestServer};
use tokenpool::h2::H2Pool;

const IN_FLIGHT: usize = 64;
const REQUESTS: usize = 40_000;

async fn run(server: &TestServer, connections: usize, streams_per_connection: usize) -> f64 {
    let pool = H2Pool::builder([server.addr()])
        .max_connections_per_backend(connections)
        .max_streams_per_connection(streams_per_connection)
        .acquire_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // Warm up: open the connections.
    let warm: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.request(0, get("/warm")).await.unwrap() })
        })
        .collect();
    for w in warm {
        w.await.unwrap();
    }
    let start = Instant::now();
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for _ in 0..REQUESTS / IN_FLIGHT {
                    let resp = pool.request(0, get("/m")).await.unwrap();
                    assert_eq!(resp.body(), "/m");
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let rate = REQUESTS as f64 / start.elapsed().as_secs_f64();
    let s = pool.stats(0).unwrap();
    assert_eq!(s.in_use, 0);
    rate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand with --release --ignored --nocapture"]
async fn multiplexed_streams_versus_one_stream_per_connection() {
    for delay_us in [0u64, 1000] {
        let server = TestServer::start(Config {
            delay: Duration::from_micros(delay_us),
            ..Config::default()
        })
        .await;
        for round in 0..3 {
            let shared = run(&server, 4, 100).await;
            let exclusive = run(&server, 4, 1).await;
            let exclusive_64 = run(&server, 64, 1).await;
            println!(
                "backend delay {delay_us} us, round {round}, 64 in flight: 4 connections with \
                 up to 100 streams each {shared:.0} req/s; 4 connections with 1 stream each \
                 (token held for the request) {exclusive:.0} req/s (ratio {:.2}); \
                 64 connections with 1 stream each {exclusive_64:.0} req/s",
                shared / exclusive
            );
        }
    }
}

/// Requests/s over one connection with 64 in flight: raw h2 (`SendRequest` cloned per
/// request) against `H2Pool::send_request` with one connection, the same request and the
/// same body loop, to see what the pool layer costs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand with --release --ignored --nocapture"]
async fn pool_layer_overhead_against_raw_h2() {
    async fn read(resp: http::Response<impl std::ops::DerefMut<Target = h2::RecvStream>>) {
        let mut body = resp.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
        }
    }
    fn req() -> http::Request<()> {
        http::Request::get("http://test/m").body(()).unwrap()
    }
    let server = TestServer::start(Config::default()).await;
    for round in 0..5 {
        let pool = H2Pool::builder([server.addr()])
            .max_connections_per_backend(1)
            .build()
            .unwrap();
        pool.request(0, get("/warm")).await.unwrap();
        let start = Instant::now();
        let workers: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    for _ in 0..REQUESTS / IN_FLIGHT {
                        let (resp, _) = pool.send_request(0, req(), true).await.unwrap();
                        read(resp.await.unwrap()).await;
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        let pooled = REQUESTS as f64 / start.elapsed().as_secs_f64();
        drop(pool);

        let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (send, connection) = h2::client::handshake(tcp).await.unwrap();
        let driver = tokio::spawn(connection);
        let start = Instant::now();
        let workers: Vec<_> = (0..IN_FLIGHT)
            .map(|_| {
                let send = send.clone();
                tokio::spawn(async move {
                    for _ in 0..REQUESTS / IN_FLIGHT {
                        let mut send = send.clone().ready().await.unwrap();
                        let (resp, _) = send.send_request(req(), true).unwrap();
                        let resp = resp.await.unwrap();
                        read(resp.map(Box::new)).await;
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        let raw = REQUESTS as f64 / start.elapsed().as_secs_f64();
        drop(send);
        driver.abort();
        println!(
            "round {round}, 64 in flight over 1 connection: H2Pool::send_request \
             {pooled:.0} req/s, raw h2 {raw:.0} req/s (ratio {:.2})",
            pooled / raw
        );
    }
}
