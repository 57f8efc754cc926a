//! `H2Pool` against real h2c backends on 127.0.0.1 started by the tests (see `common`).
//!
//! Every test is bounded by a timeout (nothing may hang) and ends by checking that no slot
//! is left `in_use` or `draining`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{get, head_only, within, Config, Counters, Hold, TestServer};
use tokenpool::h2::{H2Error, H2Pool};
use tokenpool::Stats;

/// No slot held: every connection is back (available) or closed (empty).
fn assert_settled(pool: &H2Pool, backend: usize) -> Stats {
    let s = pool.stats(backend).unwrap();
    assert_eq!((s.in_use, s.draining), (0, 0), "slots left held: {s:?}");
    s
}

fn body_of(resp: &http::Response<Bytes>) -> &str {
    std::str::from_utf8(resp.body()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_requests_share_few_connections() {
    // The gate opens only once 200 requests are active at the same time: proof that they are
    // all in flight together, over at most 4 connections.
    let server = TestServer::start(Config {
        hold: Hold::BeforeHead,
        hold_prefix: "/",
        open_gate_at: Some(200),
        ..Config::default()
    })
    .await;
    let pool = H2Pool::builder([server.addr()])
        .max_connections_per_backend(4)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.request(0, get(&format!("/r/{i}"))).await })
        })
        .collect();
    within(20, "200 concurrent requests", async {
        for (i, t) in tasks.into_iter().enumerate() {
            let resp = t.await.unwrap().expect("request succeeds");
            assert_eq!(resp.status(), 200);
            assert_eq!(
                body_of(&resp),
                format!("/r/{i}"),
                "response matches its request"
            );
        }
    })
    .await;
    let c = &server.counters;
    let conns = Counters::get(&c.connections);
    assert!(
        (1..=4).contains(&conns),
        "{conns} connections for a pool of 4"
    );
    assert_eq!(Counters::get(&c.max_active), 200);
    assert!(
        Counters::get(&c.max_active_per_conn) >= 200 / conns,
        "streams were multiplexed"
    );
    let s = assert_settled(&pool, 0);
    assert_eq!(s.available, conns, "every connection is back in the pool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_spread_over_the_open_connections() {
    // Four connections open (four leases at once), then 64 streams opened one after another
    // from one task and held: they must not pile onto one connection (the thread's scan hint
    // alone would put all 64 there, as the limit is 100), but spread over the four.
    let server = TestServer::start(Config {
        hold: Hold::BeforeHead,
        hold_prefix: "/",
        open_gate_at: Some(64),
        ..Config::default()
    })
    .await;
    let pool = H2Pool::builder([server.addr()])
        .max_connections_per_backend(4)
        .build()
        .unwrap();
    within(20, "64 streams over 4 connections", async {
        let mut leases = Vec::new();
        for _ in 0..4 {
            leases.push(pool.lease(0).await.expect("lease"));
        }
        drop(leases);
        assert_eq!(assert_settled(&pool, 0).available, 4);
        let mut responses = Vec::new();
        for i in 0..64 {
            let request = http::Request::get(format!("http://test/s/{i}"))
                .body(())
                .unwrap();
            let (response, _) = pool.send_request(0, request, true).await.expect("opened");
            responses.push(response);
        }
        for response in responses {
            assert_eq!(response.await.expect("response").status(), 200);
        }
    })
    .await;
    let c = &server.counters;
    assert_eq!(Counters::get(&c.connections), 4);
    assert_eq!(Counters::get(&c.max_active), 64);
    let per_conn = Counters::get(&c.max_active_per_conn);
    assert!(per_conn <= 32, "{per_conn} of 64 streams on one connection");
    assert_eq!(assert_settled(&pool, 0).available, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_connection_never_exceed_the_backends_limit() {
    // 2 connections x 5 streams: 100 concurrent requests must queue in the pool, not in h2
    // and not beyond the backend's limit (h2's server would refuse the excess).
    let server = TestServer::start(Config {
        max_concurrent_streams: Some(5),
        delay: Duration::from_millis(2),
        ..Config::default()
    })
    .await;
    let pool = H2Pool::builder([server.addr()])
        .max_connections_per_backend(2)
        .acquire_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.request(0, get(&format!("/r/{i}"))).await })
        })
        .collect();
    within(20, "100 requests over 10 streams", async {
        for (i, t) in tasks.into_iter().enumerate() {
            let resp = t.await.unwrap().expect("request succeeds");
            assert_eq!(body_of(&resp), format!("/r/{i}"));
        }
    })
    .await;
    let c = &server.counters;
    assert!(Counters::get(&c.connections) <= 2);
    assert!(
        Counters::get(&c.max_active_per_conn) <= 5,
        "limit respected"
    );
    assert!(Counters::get(&c.max_active) <= 10);
    assert_settled(&pool, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_streams_one_still_serves_everything() {
    let server = TestServer::start(Config {
        max_concurrent_streams: Some(1),
        ..Config::default()
    })
    .await;
    let pool = H2Pool::builder([server.addr()])
        .max_connections_per_backend(4)
        .acquire_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let body = Bytes::from(format!("payload {i}"));
                let req = http::Request::post("http://test/echo").body(body).unwrap();
                pool.request(0, req).await
            })
        })
        .collect();
    within(20, "40 requests, one stream per connection", async {
        for (i, t) in tasks.into_iter().enumerate() {
            let resp = t.await.unwrap().expect("request succeeds");
            assert_eq!(body_of(&resp), format!("payload {i}"), "body echoed");
        }
    })
    .await;
    let c = &server.counters;
    assert!(Counters::get(&c.connections) <= 4);
    assert_eq!(
        Counters::get(&c.max_active_per_conn),
        1,
        "one stream per connection"
    );
    assert_settled(&pool, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_down_at_start_fails_with_connect_then_recovers() {
    let addr = TestServer::unused_addr();
    let pool = H2Pool::builder([addr]).build().unwrap();
    let err = within(10, "request to a closed port", pool.request(0, get("/")))
        .await
        .unwrap_err();
    match &err {
        H2Error::Connect { addr: a, source } => {
            assert_eq!(*a, addr);
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        other => panic!("expected Connect, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert!(err.to_string().contains(&addr.to_string()));
    let s = assert_settled(&pool, 0);
    assert_eq!(s.empty, s.total(), "the failed connect freed its slot");

    let server = TestServer::start_at(addr, Config::default()).await;
    let resp = within(10, "request after start", pool.request(0, get("/up")))
        .await
        .unwrap();
    assert_eq!(body_of(&resp), "/up");
    assert_eq!(Counters::get(&server.counters.connections), 1);
    assert_eq!(assert_settled(&pool, 0).available, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_mid_request_fails_only_its_requests_then_restarts() {
    let mut server = TestServer::start(Config {
        hold: Hold::BeforeHead,
        ..Config::default()
    })
    .await;
    let pool = H2Pool::builder([server.addr()])
        .max_connections_per_backend(2)
        .build()
        .unwrap();
    within(10, "warm-up", async {
        for i in 0..10 {
            pool.request(0, get(&format!("/ok/{i}"))).await.unwrap();
        }
    })
    .await;

    // Ten requests in flight (held by the backend), then the backend dies.
    let held: Vec<_> = (0..10)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.request(0, get(&format!("/hold/{i}"))).await })
        })
        .collect();
    let c = server.counters.clone();
    within(
        10,
        "held requests reach the backend",
        c.wait_until(|c| Counters::get(&c.active) == 10),
    )
    .await;
    server.kill().await;
    within(10, "requests on the killed connection", async {
        for t in held {
            match t.await.unwrap() {
                Err(H2Error::ConnectionLost { .. }) => {}
                other => panic!("expected ConnectionLost, got {other:?}"),
            }
        }
    })
    .await;

    // While it is down: refused, quickly, and no slot stays held.
    match within(10, "request while down", pool.request(0, get("/down"))).await {
        Err(H2Error::Connect { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused)
        }
        other => panic!("expected Connect, got {other:?}"),
    }
    assert_settled(&pool, 0);

    server.restart().await;
    let before = Counters::get(&c.connections);
    within(10, "requests after restart", async {
        for i in 0..10 {
            let resp = pool.request(0, get(&format!("/again/{i}"))).await.unwrap();
            assert_eq!(body_of(&resp), format!("/again/{i}"));
        }
    })
    .await;
    assert!(
        Counters::get(&c.connections) > before,
        "a new connection was opened"
    );
    assert_settled(&pool, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_and_restarted_under_load_nothing_hangs() {
    let mut server = TestServer::start(Config {
        delay: Duration::from_millis(1),
        ..Config::default()
    })
    .await;
    let pool = H2Pool::builder([server.addr()])
        .max_connections_per_backend(4)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let pool = pool.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut ok, mut lost, mut refused) = (0usize, 0usize, 0usize);
                let mut i = 0;
                while !*stop.borrow() {
                    i += 1;
                    match pool.request(0, get(&format!("/w{w}/{i}"))).await {
                        Ok(resp) => {
                            assert_eq!(body_of(&resp), format!("/w{w}/{i}"));
                            ok += 1;
                        }
                        Err(H2Error::ConnectionLost { .. }) => lost += 1,
                        // Refused: by this request's connect, by the one it waited for, or
                        // at once while the backend is ejected (up to 1.25 s after three).
                        Err(
                            H2Error::Connect { .. }
                            | H2Error::JoinedConnectFailed { .. }
                            | H2Error::BackendEjected { .. },
                        ) => {
                            refused += 1;
                            // Do not spin on a closed port; wait for the next phase.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(other) => panic!("unexpected error: {other:?}"),
                    }
                }
                (ok, lost, refused)
            })
        })
        .collect();
    let c = server.counters.clone();
    within(
        20,
        "load before the kill",
        c.wait_until(|c| Counters::get(&c.requests) >= 300),
    )
    .await;
    server.kill().await;
    server.restart().await;
    let after_restart = Counters::get(&c.requests);
    within(
        20,
        "load after the restart",
        c.wait_until(|c| Counters::get(&c.requests) >= after_restart + 300),
    )
    .await;
    stop_tx.send_replace(true);
    let (mut ok, mut failed) = (0, 0);
    within(20, "workers stop", async {
        for w in workers {
            let (o, l, r) = w.await.unwrap();
            ok += o;
            failed += l + r;
        }
    })
    .await;
    // Everything the restarted backend accepted was answered; what the killed one had
    // accepted either was answered or failed with one of the errors above.
    assert!(ok >= 300, "{ok} requests succeeded, {failed} failed");
    println!("{ok} requests succeeded, {failed} failed with ConnectionLost or Connect");
    assert_settled(&pool, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_lets_running_streams_finish_and_moves_new_ones_to_a_new_connection() {
    // The backend sends GOAWAY when its first connection accepts its 5th request; the five
    // get their response heads at once and their bodies only when the gate opens.
    let server = TestServer::start(Config {
        goaway_after: Some(5),
        hold: Hold::AfterHead,
        ..Config::default()
    })
    .await;
    let pool = H2Pool::builder([server.addr()])
        .max_connections_per_backend(2)
        .build()
        .unwrap();
    let bodies = within(10, "five streams on the first connection", async {
        let mut responses = Vec::new();
        for i in 0..5 {
            let (response, _) = pool
                .send_request(0, head_only(&format!("/hold/{i}")), true)
                .await
                .unwrap();
            responses.push(response);
        }
        let mut bodies = Vec::new();
        for response in responses {
            // The heads come after the GOAWAY on the wire, so once they are here the client
            // has seen it.
            let response = response.await.unwrap();
            assert_eq!(response.status(), 200);
            bodies.push(response.into_body());
        }
        bodies
    })
    .await;
    assert_eq!(Counters::get(&server.counters.goaways), 1);
    within(10, "new requests after the GOAWAY", async {
        // Fewer than 5, or the new connection gets its own GOAWAY.
        for i in 0..4 {
            let resp = pool.request(0, get(&format!("/new/{i}"))).await.unwrap();
            assert_eq!(body_of(&resp), format!("/new/{i}"));
        }
    })
    .await;
    assert_eq!(
        Counters::get(&server.counters.connections),
        2,
        "one new connection"
    );
    let s = pool.stats(0).unwrap();
    assert_eq!(s.occupied(), 1, "the old connection left the pool: {s:?}");

    // The five streams on the old connection still finish.
    server.open_gate();
    within(10, "streams on the GOAWAY connection finish", async {
        for (i, mut body) in bodies.into_iter().enumerate() {
            let chunk = body.data().await.expect("a body").expect("no error");
            assert_eq!(chunk, format!("/hold/{i}"));
            assert!(body.data().await.is_none());
        }
    })
    .await;
    within(
        10,
        "the old connection closes",
        server
            .counters
            .wait_until(|c| Counters::get(&c.closed) == 1),
    )
    .await;
    assert_eq!(assert_settled(&pool, 0).available, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_under_load_loses_nothing_and_rotates_connections() {
    // Every connection is shut down (gracefully) after 25 requests, while 16 workers keep
    // sending: connections rotate all the time.
    let server = TestServer::start(Config {
        goaway_after: Some(25),
        ..Config::default()
    })
    .await;
    let pool = H2Pool::builder([server.addr()])
        .max_connections_per_backend(4)
        .build()
        .unwrap();
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let (mut ok, mut refused) = (0, 0);
                for i in 0..50 {
                    match pool.request(0, get(&format!("/w{w}/{i}"))).await {
                        Ok(resp) => {
                            assert_eq!(body_of(&resp), format!("/w{w}/{i}"));
                            ok += 1;
                        }
                        // Only a request that raced the GOAWAY and was not processed may fail,
                        // and it must say it is safe to retry.
                        Err(e @ H2Error::ConnectionLost { .. }) if e.is_retryable() => refused += 1,
                        Err(other) => panic!("unexpected error: {other:?}"),
                    }
                }
                (ok, refused)
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    within(30, "800 requests through rotating connections", async {
        for w in workers {
            let (o, r) = w.await.unwrap();
            ok += o;
            refused += r;
        }
    })
    .await;
    assert_eq!(ok + refused, 800);
    let c = &server.counters;
    let (conns, goaways) = (Counters::get(&c.connections), Counters::get(&c.goaways));
    println!("{conns} connections, {goaways} GOAWAYs");
    assert!(goaways >= 2, "connections rotated");
    // Every connection that carried 25 requests was shut down; only the pool's last
    // connections (at most 4) may have carried fewer.
    assert!(
        conns - goaways <= 4,
        "{conns} connections, {goaways} GOAWAYs"
    );
    assert_eq!(
        Counters::get(&c.requests),
        ok,
        "every accepted request was answered"
    );
    println!("{ok} answered, {refused} refused by a GOAWAY (retryable)");
    assert_settled(&pool, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_never_open_more_than_the_free_slots() {
    // 50 requests race for an empty pool of one slot: one reserves it and connects, the
    // others wait for that connection instead of opening their own.
    let server = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([server.addr()])
        .max_connections_per_backend(1)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.request(0, get(&format!("/r/{i}"))).await })
        })
        .collect();
    within(20, "50 racing requests", async {
        for (i, t) in tasks.into_iter().enumerate() {
            let resp = t.await.unwrap().expect("request succeeds");
            assert_eq!(body_of(&resp), format!("/r/{i}"));
        }
    })
    .await;
    assert_eq!(Counters::get(&server.counters.connections), 1);
    assert_eq!(assert_settled(&pool, 0).available, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_are_independent() {
    let mut one = TestServer::start(Config::default()).await;
    let two = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([one.addr(), two.addr()])
        .max_connections_per_backend(2)
        .build()
        .unwrap();
    assert_eq!(pool.backends(), 2);
    for i in 0..10 {
        let b = i % 2;
        let resp = pool.request(b, get(&format!("/b{b}/{i}"))).await.unwrap();
        assert_eq!(body_of(&resp), format!("/b{b}/{i}"));
    }
    assert_eq!(Counters::get(&one.counters.requests), 5);
    assert_eq!(Counters::get(&two.counters.requests), 5);
    // Backend 0 dies: only its requests fail.
    one.kill().await;
    // Either the client already saw the connection close (then it reconnects and is
    // refused), or the request went out on the dying connection and is lost with it.
    match pool.request(0, get("/x")).await {
        Err(H2Error::Connect { .. } | H2Error::ConnectionLost { .. }) => {}
        other => panic!("expected Connect or ConnectionLost, got {other:?}"),
    }
    pool.request(1, get("/y")).await.unwrap();
    assert_eq!(pool.total_stats().in_use, 0);
    assert_eq!(pool.stats(1).unwrap().available, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_flow_both_ways() {
    let server = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([server.addr()]).build().unwrap();
    let body: Bytes = (0..4 << 20)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (pool, body) = (pool.clone(), body.clone());
            tokio::spawn(async move {
                let req = http::Request::post("http://test/echo").body(body).unwrap();
                pool.request(0, req).await
            })
        })
        .collect();
    within(30, "4 x 4 MiB echoed", async {
        for t in tasks {
            let resp = t.await.unwrap().expect("echo succeeds");
            assert_eq!(resp.body().len(), body.len());
            assert!(resp.body() == &body, "echoed unchanged");
        }
    })
    .await;
    assert_settled(&pool, 0);
}
