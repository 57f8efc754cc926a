//! Connect coalescing (issue 11): a cold burst opens as few connections as the backend's
//! stream limit needs, a failed connect fails the requests that waited for it at once, and a
//! cancelled connect leaves its waiters to carry on.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{closing_listener, get, within, Config, Counters, Hold, TestServer};
use tokenpool::h2::{H2Error, H2Pool};

/// `n` requests at once to a backend allowing 100 streams per connection that holds every
/// response until all `n` are in flight: returns how many connections the pool opened.
async fn cold_burst(n: usize) -> usize {
    let server = TestServer::start(Config {
        max_concurrent_streams: Some(100),
        hold: Hold::BeforeHead,
        hold_prefix: "/",
        open_gate_at: Some(n),
        ..Config::default()
    })
    .await;
    let pool = H2Pool::builder([server.addr()])
        .max_connections_per_backend(8)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.request(0, get(&format!("/r{i}"))).await })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let response = within(20, "burst request", t).await.unwrap().unwrap();
        assert_eq!(response.body(), format!("/r{i}").as_str());
    }
    let s = pool.stats(0).unwrap();
    assert_eq!(s.in_use, 0, "{s:?}");
    assert_eq!(pool.health(0).unwrap().connects_in_progress, 0);
    Counters::get(&server.counters.connections)
}

#[tokio::test(flavor = "current_thread")]
async fn cold_burst_of_64_opens_one_connection() {
    assert_eq!(cold_burst(64).await, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn cold_burst_of_250_opens_three_connections() {
    assert_eq!(cold_burst(250).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_burst_on_a_multi_thread_runtime_opens_few_connections() {
    // Two workers may race a joiner against the slot's give-back for a moment; the count
    // stays far below one connection per slot (8).
    let opened = cold_burst(64).await;
    assert!(
        (1..=2).contains(&opened),
        "{opened} connections for 64 requests"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn requests_waiting_for_a_failed_connect_fail_with_it_after_one_attempt() {
    let (addr, accepted) = closing_listener().await;
    let pool = H2Pool::builder([addr])
        .max_connections_per_backend(8)
        .build()
        .unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.request(0, get(&format!("/r{i}"))).await })
        })
        .collect();
    let (mut direct, mut joined) = (0, 0);
    for t in tasks {
        let e = within(10, "request", t).await.unwrap().unwrap_err();
        assert!(e.is_retryable(), "nothing was sent: {e}");
        match e {
            H2Error::JoinedConnectFailed { addr: a, cause, .. } => {
                assert_eq!(a, addr);
                assert!(cause.contains(&addr.to_string()), "{cause}");
                joined += 1;
            }
            H2Error::Connect { .. } | H2Error::Handshake { .. } => direct += 1,
            other => panic!("unexpected error: {other}"),
        }
    }
    // One connect attempt for the whole burst: the others waited for it and got its error.
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!((direct, joined), (1, 63));
    let took = start.elapsed();
    assert_eq!(pool.stats(0).unwrap().in_use, 0);
    assert_eq!(pool.health(0).unwrap().connects_in_progress, 0);
    eprintln!("64 requests to a refusing backend: 1 connect attempt, all failed in {took:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_cancelled_connect_leaves_its_waiters_to_connect_again() {
    // The backend accepts TCP but answers the HTTP/2 preface only after a pause, so the
    // first request is still connecting when it is cancelled.
    let server = TestServer::start(Config::default()).await;
    let backend = server.addr();
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = relay.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = relay.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let mut upstream = tokio::net::TcpStream::connect(backend).await?;
                tokio::io::copy_bidirectional(&mut client, &mut upstream).await
            });
        }
    });
    let pool = H2Pool::builder([addr]).build().unwrap();
    let first = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.request(0, get("/first")).await })
    };
    // Let the first start its connect, then have a second wait for it.
    tokio::task::yield_now().await;
    assert_eq!(pool.health(0).unwrap().connects_in_progress, 1);
    let second = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.request(0, get("/second")).await })
    };
    tokio::task::yield_now().await;
    first.abort();
    let response = within(10, "second", second).await.unwrap().unwrap();
    assert_eq!(response.body(), "/second");
    assert_eq!(pool.stats(0).unwrap().in_use, 0);
    assert_eq!(pool.health(0).unwrap().connects_in_progress, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn max_connecting_per_backend_zero_is_rejected() {
    let err = H2Pool::builder([TestServer::unused_addr()])
        .max_connecting_per_backend(0)
        .build()
        .expect_err("invalid");
    assert!(matches!(err, H2Error::InvalidConfig(_)), "{err}");
}
