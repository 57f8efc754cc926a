//! Connection health in `H2Pool`: draining, idle and lifetime eviction, dead connections,
//! cancelled streams, and the sweeper's lifetime. Backends are real h2c servers on
//! 127.0.0.1 started here. Waits are on events (server counters), never fixed sleeps.

mod common;

use std::time::Duration;

use common::{get, head_only, within, Config, Counters, Hold, TestServer};
use tokenpool::h2::{H2Error, H2Pool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_backend_closes_idle_connections_now_and_busy_ones_after_their_streams() {
    let server = TestServer::start(Config {
        hold: Hold::AfterHead,
        max_concurrent_streams: Some(1),
        ..Config::default()
    })
    .await;
    let pool = H2Pool::builder([server.addr()])
        .max_connections_per_backend(2)
        .build()
        .unwrap();
    // Connection 1: full with a held stream. Connection 2: idle.
    let (response, _) = pool
        .send_request(0, head_only("/hold/a"), true)
        .await
        .unwrap();
    let mut held = response.await.unwrap().into_body();
    pool.request(0, get("/b")).await.unwrap();
    assert_eq!(Counters::get(&server.counters.connections), 2);
    let s = pool.stats(0).unwrap();
    assert_eq!((s.available, s.in_use), (1, 1), "{s:?}");

    assert_eq!(pool.drain_backend(0).unwrap(), 2);
    let s = pool.stats(0).unwrap();
    assert_eq!(
        (s.empty, s.draining),
        (1, 1),
        "idle closed, full one marked: {s:?}"
    );
    let c = server.counters.clone();
    within(
        10,
        "idle connection closes",
        c.wait_until(|c| Counters::get(&c.closed) == 1),
    )
    .await;

    // The held stream still finishes; then its connection closes too.
    server.open_gate();
    assert_eq!(held.data().await.unwrap().unwrap(), "/hold/a");
    drop(held);
    let s = pool.stats(0).unwrap();
    assert_eq!(s.empty, 2, "{s:?}");
    within(
        10,
        "drained connection closes",
        c.wait_until(|c| Counters::get(&c.closed) == 2),
    )
    .await;

    // New requests open a new connection.
    pool.request(0, get("/c")).await.unwrap();
    assert_eq!(Counters::get(&c.connections), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_by_the_sweeper() {
    let server = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([server.addr()])
        .idle_timeout(Duration::from_millis(40))
        .build()
        .unwrap();
    pool.request(0, get("/")).await.unwrap();
    let c = server.counters.clone();
    within(
        10,
        "idle connection closes",
        c.wait_until(|c| Counters::get(&c.closed) == 1),
    )
    .await;
    let s = pool.stats(0).unwrap();
    assert_eq!(s.empty, s.total(), "{s:?}");
    pool.request(0, get("/again")).await.unwrap();
    assert_eq!(Counters::get(&c.connections), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_connections_are_not_idle_and_over_age_ones_are_replaced() {
    let server = TestServer::start(Config {
        hold: Hold::AfterHead,
        ..Config::default()
    })
    .await;
    let pool = H2Pool::builder([server.addr()])
        .idle_timeout(Duration::from_millis(20))
        .max_lifetime(Duration::from_millis(200))
        .build()
        .unwrap();
    // A stream stays open past the idle timeout: the connection is not idle.
    let start = std::time::Instant::now();
    let (response, _) = pool
        .send_request(0, head_only("/hold/x"), true)
        .await
        .unwrap();
    let mut body = response.await.unwrap().into_body();
    let c = server.counters.clone();
    // Past its lifetime the sweeper takes the connection out of the pool even though it is
    // busy; its running stream is not cut.
    within(10, "over-age connection leaves the pool", async {
        // (The sweeper holds each idle connection for a moment while it looks at it, so
        // wait for the slot to be empty, not merely unavailable.)
        while pool.stats(0).unwrap().occupied() != 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "removed at its lifetime, not at the idle timeout"
    );
    assert_eq!(
        Counters::get(&c.closed),
        0,
        "the stream keeps its connection open"
    );
    server.open_gate();
    assert_eq!(body.data().await.unwrap().unwrap(), "/hold/x");
    drop(body);
    within(
        10,
        "old connection closes after its stream",
        c.wait_until(|c| Counters::get(&c.closed) == 1),
    )
    .await;
    pool.request(0, get("/new")).await.unwrap();
    assert_eq!(
        Counters::get(&c.connections),
        2,
        "a new connection replaced it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_idle_connection_leaves_the_pool_by_itself() {
    let mut server = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([server.addr()]).build().unwrap();
    pool.request(0, get("/")).await.unwrap();
    assert_eq!(pool.stats(0).unwrap().available, 1);
    server.kill().await;
    // The connection's driver sees EOF and drains it by its id.
    within(10, "driver drains the dead connection", async {
        while pool.stats(0).unwrap().empty != pool.stats(0).unwrap().total() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(pool.stats(0).unwrap().in_use, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_response_frees_its_stream() {
    let server = TestServer::start(Config {
        max_concurrent_streams: Some(1),
        hold: Hold::BeforeHead,
        ..Config::default()
    })
    .await;
    let pool = H2Pool::builder([server.addr()])
        .max_connections_per_backend(1)
        .acquire_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (response, _) = pool
        .send_request(0, head_only("/hold/1"), true)
        .await
        .unwrap();
    assert_eq!(pool.stats(0).unwrap().in_use, 1, "the only stream is taken");
    drop(response); // the caller gave up: h2 resets the stream
    let s = pool.stats(0).unwrap();
    assert_eq!((s.available, s.in_use), (1, 0), "{s:?}");
    let resp = within(10, "next request", pool.request(0, get("/next")))
        .await
        .unwrap();
    assert_eq!(resp.body(), "/next");
}

#[test]
fn sweeper_stops_when_the_pool_is_dropped() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.num_alive_tasks();
        let pool = H2Pool::builder(["127.0.0.1:1"]).build().unwrap();
        assert_eq!(metrics.num_alive_tasks(), before + 1, "the sweeper runs");
        let clone = pool.clone();
        drop(pool);
        tokio::task::yield_now().await;
        assert_eq!(
            metrics.num_alive_tasks(),
            before + 1,
            "a clone keeps it running"
        );
        drop(clone);
        within(10, "sweeper exits", async {
            while metrics.num_alive_tasks() > before {
                tokio::task::yield_now().await;
            }
        })
        .await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_keeps_its_connection_to_itself_until_dropped_or_drained() {
    let server = TestServer::start(Config {
        max_concurrent_streams: Some(2),
        hold: Hold::AfterHead,
        ..Config::default()
    })
    .await;
    let pool = H2Pool::builder([server.addr()])
        .max_connections_per_backend(2)
        .build()
        .unwrap();
    let mut lease = within(10, "lease", pool.lease(0)).await.unwrap();
    assert_eq!(lease.streams_available(), 2, "the backend's limit is known");
    let (a, _) = lease.send_request(head_only("/hold/a"), true).unwrap();
    let (b, _) = lease.send_request(head_only("/hold/b"), true).unwrap();
    match lease.send_request(head_only("/c"), true) {
        Err(e @ H2Error::ConnectionFull { limit: 2, .. }) => assert!(e.is_retryable()),
        other => panic!("expected ConnectionFull, got {other:?}"),
    }
    // Meanwhile other requests go to another connection.
    within(
        10,
        "request beside the lease",
        pool.request(0, get("/other")),
    )
    .await
    .unwrap();
    assert_eq!(Counters::get(&server.counters.connections), 2);
    let leased = lease.conn_id();
    drop(lease);
    let s = pool.stats(0).unwrap();
    assert_eq!(
        (s.available, s.in_use),
        (1, 1),
        "full connection parked: {s:?}"
    );

    server.open_gate();
    let (a, b) = within(10, "leased streams finish", async { (a.await, b.await) }).await;
    let (mut a, mut b) = (a.unwrap().into_body(), b.unwrap().into_body());
    assert_eq!(a.data().await.unwrap().unwrap(), "/hold/a");
    assert_eq!(b.data().await.unwrap().unwrap(), "/hold/b");
    drop((a, b));
    assert_eq!(pool.stats(0).unwrap().available, 2);

    // Draining through a lease takes exactly that connection out.
    let lease = within(10, "lease again", pool.lease(0)).await.unwrap();
    let drained = lease.conn_id();
    lease.drain();
    let s = pool.stats(0).unwrap();
    assert_eq!((s.available, s.empty), (1, 1), "{s:?}");
    let next = within(10, "lease after drain", pool.lease(0))
        .await
        .unwrap();
    assert_ne!(next.conn_id(), drained);
    let _ = leased;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_on_a_full_connection_that_gets_goaway_moves_to_a_new_one() {
    // One slot, one stream per connection, GOAWAY after the first request: the waiter gets
    // the slot back when the first stream ends, sees the GOAWAY, and reconnects.
    let server = TestServer::start(Config {
        max_concurrent_streams: Some(1),
        goaway_after: Some(1),
        hold: Hold::AfterHead,
        ..Config::default()
    })
    .await;
    let pool = H2Pool::builder([server.addr()])
        .max_connections_per_backend(1)
        .acquire_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (response, _) = pool
        .send_request(0, head_only("/hold/1"), true)
        .await
        .unwrap();
    let mut body = within(10, "first head", response)
        .await
        .unwrap()
        .into_body();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.request(0, get("/second")).await })
    };
    server.open_gate();
    assert_eq!(body.data().await.unwrap().unwrap(), "/hold/1");
    drop(body);
    let resp = within(10, "waiter", waiter).await.unwrap().unwrap();
    assert_eq!(resp.body(), "/second");
    assert_eq!(Counters::get(&server.counters.connections), 2);
    let s = pool.stats(0).unwrap();
    assert_eq!(s.in_use, 0, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_on_a_full_connection_that_dies_is_not_stranded() {
    let mut server = TestServer::start(Config {
        max_concurrent_streams: Some(1),
        hold: Hold::BeforeHead,
        ..Config::default()
    })
    .await;
    let pool = H2Pool::builder([server.addr()])
        .max_connections_per_backend(1)
        .acquire_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let first = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.request(0, get("/hold/1")).await })
    };
    let c = server.counters.clone();
    within(
        10,
        "first reaches the backend",
        c.wait_until(|c| Counters::get(&c.active) == 1),
    )
    .await;
    assert_eq!(pool.stats(0).unwrap().in_use, 1, "full and parked");
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.request(0, get("/second")).await })
    };
    server.kill().await;
    // The driver closes the full connection's slot; the waiter wakes, reconnects and is
    // refused, long before its acquire timeout.
    match within(10, "first", first).await.unwrap() {
        Err(H2Error::ConnectionLost { .. }) => {}
        other => panic!("expected ConnectionLost, got {other:?}"),
    }
    match within(10, "waiter", waiter).await.unwrap() {
        Err(H2Error::Connect { .. }) => {}
        other => panic!("expected Connect, got {other:?}"),
    }
    let s = pool.stats(0).unwrap();
    assert_eq!(s.empty, 1, "{s:?}");
}
