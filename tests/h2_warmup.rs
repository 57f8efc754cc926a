//! Warm-up (issue 11): `min_connections_per_backend` connections are opened at build time,
//! kept open through the idle timeout, and reopened when they die.

mod common;

use std::time::Duration;

use common::{get, within, Config, Counters, TestServer};
use tokenpool::h2::{H2Error, H2Pool};

async fn wait_available(pool: &H2Pool, backend: usize, n: usize) {
    within(10, "warm connections", async {
        while pool.stats(backend).unwrap().available != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_connections_open_at_build_stay_through_idle_and_come_back_after_a_kill() {
    let mut server = TestServer::start(Config::default()).await;
    let other = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([server.addr(), other.addr()])
        .min_connections_per_backend(2)
        .max_connections_per_backend(4)
        // A short idle timeout: the sweeper runs every 50 ms and would close idle ones.
        .idle_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    // Opened in the background, before any request.
    wait_available(&pool, 0, 2).await;
    wait_available(&pool, 1, 2).await;
    assert_eq!(Counters::get(&server.counters.connections), 2);
    assert_eq!(Counters::get(&other.counters.connections), 2);
    // A burst opens more; once idle, the extra ones close and the warm two stay.
    let burst: Vec<_> = (0..8)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.request(0, get(&format!("/b{i}"))).await })
        })
        .collect();
    for t in burst {
        t.await.unwrap().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    wait_available(&pool, 0, 2).await;
    // The backend dies and comes back: the warm connections are reopened.
    server.kill().await;
    server.restart().await;
    within(10, "reopened", async {
        loop {
            let s = pool.stats(0).unwrap();
            let opened = Counters::get(&server.counters.connections);
            if s.available == 2 && opened >= 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let response = pool.request(0, get("/after")).await.unwrap();
    assert_eq!(response.body(), "/after");
    // The untouched backend kept its two connections.
    assert_eq!(Counters::get(&other.counters.connections), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn minimum_above_maximum_is_rejected() {
    let err = H2Pool::builder([TestServer::unused_addr()])
        .min_connections_per_backend(3)
        .max_connections_per_backend(2)
        .build()
        .expect_err("invalid");
    assert!(matches!(err, H2Error::InvalidConfig(_)), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_stops_the_warm_up() {
    let server = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([server.addr()])
        .min_connections_per_backend(1)
        .idle_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    wait_available(&pool, 0, 1).await;
    let report = pool
        .shutdown(std::time::Instant::now() + Duration::from_secs(5))
        .await;
    assert_eq!(report.connections, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = pool.stats(0).unwrap();
    assert_eq!((s.available, s.in_use), (0, 0), "nothing reopened: {s:?}");
    assert_eq!(Counters::get(&server.counters.connections), 1);
}
