//! Graceful shutdown (issue 11): no new requests, running streams finish until the deadline,
//! then the rest are cut; every connection is closed when `shutdown` returns.

mod common;

use std::time::{Duration, Instant};

use common::{get, within, Config, Counters, Hold, TestServer};
use tokenpool::h2::{H2Error, H2Pool};

fn held_server() -> Config {
    Config {
        hold: Hold::BeforeHead,
        hold_prefix: "/held",
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_streams_finish_before_the_deadline_and_new_requests_are_refused() {
    let server = TestServer::start(held_server()).await;
    let pool = H2Pool::builder([server.addr()]).build().unwrap();
    pool.request(0, get("/warm")).await.unwrap();
    let held: Vec<_> = (0..5)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.request(0, get(&format!("/held/{i}"))).await })
        })
        .collect();
    let c = server.counters.clone();
    within(
        10,
        "held requests arrive",
        c.wait_until(|c| Counters::get(&c.active) == 5),
    )
    .await;
    let shutdown = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.shutdown(Instant::now() + Duration::from_secs(20))
                .await
        })
    };
    // Refused from now on, without a connect.
    let refused = loop {
        match pool.request(0, get("/new")).await {
            Err(e @ H2Error::Shutdown) => break e,
            // The shutdown task may not have run yet.
            Ok(_) => tokio::task::yield_now().await,
            Err(other) => panic!("unexpected: {other}"),
        }
    };
    assert!(!refused.is_retryable());
    assert!(!shutdown.is_finished(), "waits for the running streams");
    server.open_gate();
    for (i, t) in held.into_iter().enumerate() {
        let response = within(10, "held request", t).await.unwrap().unwrap();
        assert_eq!(response.body(), format!("/held/{i}").as_str());
    }
    let report = within(10, "shutdown", shutdown).await.unwrap();
    // Usually one connection; two workers racing for its slot may have opened a second.
    let opened = Counters::get(&c.connections);
    assert_eq!((report.connections, report.cut_at_deadline), (opened, 0));
    // The backend saw its connection end.
    within(
        10,
        "connection closed",
        c.wait_until(|c| Counters::get(&c.closed) == Counters::get(&c.connections)),
    )
    .await;
    let s = pool.stats(0).unwrap();
    assert_eq!((s.available, s.in_use), (0, 0), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_still_running_at_the_deadline_are_cut() {
    let server = TestServer::start(held_server()).await;
    let pool = H2Pool::builder([server.addr()]).build().unwrap();
    let held: Vec<_> = (0..3)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.request(0, get(&format!("/held/{i}"))).await })
        })
        .collect();
    let c = server.counters.clone();
    within(
        10,
        "held requests arrive",
        c.wait_until(|c| Counters::get(&c.active) == 3),
    )
    .await;
    let start = Instant::now();
    let report = within(
        10,
        "shutdown",
        pool.shutdown(start + Duration::from_millis(200)),
    )
    .await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(190),
        "returned before the deadline: {took:?}"
    );
    // As above: one connection, or two if two workers raced for the first one's slot.
    let opened = Counters::get(&c.connections);
    assert_eq!(
        (report.connections, report.cut_at_deadline),
        (opened, opened)
    );
    for t in held {
        let e = within(10, "cut request", t).await.unwrap().unwrap_err();
        assert!(matches!(e, H2Error::ConnectionLost { .. }), "{e}");
    }
    let s = pool.stats(0).unwrap();
    assert_eq!((s.available, s.in_use), (0, 0), "{s:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn idle_connections_close_at_once_and_a_second_shutdown_finds_nothing() {
    let server = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([server.addr(), server.addr()])
        .build()
        .unwrap();
    pool.request(0, get("/a")).await.unwrap();
    pool.request(1, get("/b")).await.unwrap();
    let report = within(
        5,
        "shutdown of an idle pool",
        pool.shutdown(Instant::now() + Duration::from_secs(60)),
    )
    .await;
    assert_eq!((report.connections, report.cut_at_deadline), (2, 0));
    let c = server.counters.clone();
    within(
        5,
        "connections closed",
        c.wait_until(|c| Counters::get(&c.closed) == 2),
    )
    .await;
    let again = pool.shutdown(Instant::now()).await;
    assert_eq!((again.connections, again.cut_at_deadline), (0, 0));
    assert!(matches!(pool.lease(0).await, Err(H2Error::Shutdown)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_for_room_during_shutdown_is_refused_not_connected() {
    let server = TestServer::start(held_server()).await;
    let pool = H2Pool::builder([server.addr()])
        .max_connections_per_backend(1)
        .max_streams_per_connection(1)
        .build()
        .unwrap();
    let held = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.request(0, get("/held/0")).await })
    };
    let c = server.counters.clone();
    within(
        10,
        "held request arrives",
        c.wait_until(|c| Counters::get(&c.active) == 1),
    )
    .await;
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.request(0, get("/waits")).await })
    };
    // Let it queue for the only slot.
    within(10, "queued", async {
        while pool.stats(0).unwrap().waiters == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let shutdown = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.shutdown(Instant::now() + Duration::from_secs(20))
                .await
        })
    };
    within(10, "shutdown begins", async {
        while !pool.is_shut_down() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    server.open_gate();
    held.await.unwrap().unwrap();
    let e = within(10, "waiter", waiting).await.unwrap().unwrap_err();
    assert!(matches!(e, H2Error::Shutdown), "{e}");
    let report = within(10, "shutdown", shutdown).await.unwrap();
    assert_eq!(report.cut_at_deadline, 0);
    assert_eq!(
        Counters::get(&c.connections),
        1,
        "no connect after the shutdown began"
    );
}
