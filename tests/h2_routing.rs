//! Routing and observability (issue 12): the picker's spread and its skipping of ejected
//! backends, retries only when safe and within the budget, counters that equal what the test
//! counted, and tracing events.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{within, Config, Counters, TestServer};
use http_body_util::{BodyExt, Empty, Full};
use tokenpool::h2::{Attempts, Backend, Balance, H2Error, H2Pool};

fn get(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(path).body(Empty::new()).unwrap()
}

/// An h2c backend that answers each request with `how(n)` for the `n`-th request (from 0):
/// `None` answers 200 with the path, `Some(reason)` resets the stream with that reason after
/// reading the request body. Returns its address and the number of requests it saw.
async fn scripted(
    how: impl Fn(usize) -> Option<h2::Reason> + Send + Sync + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let (count, how) = (Arc::clone(&seen), Arc::new(how));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (count, how) = (Arc::clone(&count), Arc::clone(&how));
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(tcp).await?;
                while let Some((request, mut respond)) = conn.accept().await.transpose()? {
                    let n = count.fetch_add(1, Ordering::SeqCst);
                    let (count, how) = (Arc::clone(&count), Arc::clone(&how));
                    let _ = count;
                    tokio::spawn(async move {
                        let path = request.uri().path().to_string();
                        let mut body = request.into_body();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                        }
                        match how(n) {
                            Some(reason) => respond.send_reset(reason),
                            None => {
                                if let Ok(mut s) =
                                    respond.send_response(http::Response::new(()), false)
                                {
                                    let _ = s.send_data(Bytes::from(path), true);
                                }
                            }
                        }
                    });
                }
                Ok::<_, h2::Error>(())
            });
        }
    });
    (addr, seen)
}

async fn body_of(response: http::Response<tokenpool::h2::Body>) -> Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test(flavor = "current_thread")]
async fn round_robin_and_weighted_spread_and_least_streams_avoids_the_busy_backend() {
    let servers = [
        TestServer::start(Config::default()).await,
        TestServer::start(Config::default()).await,
        TestServer::start(Config::default()).await,
    ];
    let addrs: Vec<_> = servers.iter().map(|s| s.addr()).collect();
    let spread = |servers: &[TestServer; 3]| -> Vec<usize> {
        servers
            .iter()
            .map(|s| Counters::get(&s.counters.requests))
            .collect()
    };

    let pool = H2Pool::builder(addrs.clone()).build().unwrap();
    for i in 0..300 {
        pool.dispatch(get(&format!("/rr{i}"))).await.unwrap();
    }
    assert_eq!(spread(&servers), [100, 100, 100], "round robin is exact");
    for (b, s) in servers.iter().enumerate() {
        assert_eq!(pool.metrics(b).unwrap().requests, 100);
        let _ = s;
    }

    let before = spread(&servers);
    let pool = H2Pool::builder(addrs.clone())
        .balance(Balance::Weighted(vec![1, 3, 0]))
        .build()
        .unwrap();
    for i in 0..4000 {
        pool.dispatch(get(&format!("/w{i}"))).await.unwrap();
    }
    let after = spread(&servers);
    let got: Vec<usize> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    // Weights 1 : 3 : 0, each share within 10 % of its expected count.
    assert_eq!(got[2], 0, "{got:?}");
    assert!((900..=1100).contains(&got[0]), "{got:?}");
    assert!((2700..=3300).contains(&got[1]), "{got:?}");
    eprintln!("weighted 1:3:0 over 4000 requests: {got:?}");

    // Least streams: backend 0 holds 20 slow requests; new ones go to 1 and 2.
    let slow = TestServer::start(Config {
        hold: common::Hold::BeforeHead,
        hold_prefix: "/hold",
        ..Config::default()
    })
    .await;
    let pool = H2Pool::builder([slow.addr(), addrs[1], addrs[2]])
        .balance(Balance::LeastStreams)
        .build()
        .unwrap();
    let held: Vec<_> = (0..20)
        .map(|i| {
            let mut r = get(&format!("/hold/{i}"));
            r.extensions_mut().insert(Backend(0));
            let pool = pool.clone();
            tokio::spawn(async move { pool.dispatch(r).await })
        })
        .collect();
    within(
        10,
        "held",
        slow.counters.wait_until(|c| Counters::get(&c.active) == 20),
    )
    .await;
    let before = spread(&servers);
    for i in 0..200 {
        pool.dispatch(get(&format!("/ls{i}"))).await.unwrap();
    }
    assert_eq!(
        Counters::get(&slow.counters.requests),
        20,
        "none to the busy backend"
    );
    let after = spread(&servers);
    assert_eq!((after[1] - before[1]) + (after[2] - before[2]), 200);
    slow.open_gate();
    for t in held {
        t.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_ejected_backend_is_skipped_and_its_requests_retried_elsewhere() {
    let good = TestServer::start(Config::default()).await;
    let dead = TestServer::unused_addr();
    let pool = H2Pool::builder([dead, good.addr()])
        .eject_after_connect_failures(2)
        .ejection_backoff(Duration::from_secs(30), Duration::from_secs(30))
        .build()
        .unwrap();
    let mut retried = 0;
    for i in 0..100 {
        let response = pool.dispatch(get(&format!("/r{i}"))).await.unwrap();
        let Attempts(n) = *response.extensions().get::<Attempts>().unwrap();
        if n > 1 {
            retried += 1;
        }
        assert_eq!(body_of(response).await, format!("/r{i}"));
    }
    // The first requests to the dead backend were retried on the good one; once ejected,
    // the dead backend is not picked.
    assert_eq!(retried, 2, "two connect failures, then ejected");
    let m = pool.metrics(0).unwrap();
    assert!(m.ejected);
    assert_eq!((m.connect_failures, m.ejections, m.requests), (2, 1, 2));
    assert_eq!(pool.metrics(1).unwrap().retries, 2);
    assert_eq!(Counters::get(&good.counters.requests), 100);
}

#[tokio::test(flavor = "current_thread")]
async fn a_refused_get_is_retried_but_a_post_reset_after_it_was_processed_is_not() {
    // Refuses its first request with REFUSED_STREAM (not processed), answers the rest.
    let (refusing, seen) = scripted(|n| (n == 0).then_some(h2::Reason::REFUSED_STREAM)).await;
    let pool = H2Pool::builder([refusing]).build().unwrap();
    let mut request = get("/again");
    request.extensions_mut().insert(Backend(0));
    let response = pool.dispatch(request).await.unwrap();
    assert_eq!(response.extensions().get::<Attempts>(), Some(&Attempts(2)));
    assert_eq!(body_of(response).await, "/again");
    assert_eq!(seen.load(Ordering::SeqCst), 2);

    // Resets every POST with INTERNAL_ERROR after reading its body: processed, maybe.
    let (resetting, seen) = scripted(|_| Some(h2::Reason::INTERNAL_ERROR)).await;
    let pool = H2Pool::builder([resetting]).build().unwrap();
    let post = http::Request::post("/pay")
        .body(Full::new(Bytes::from_static(b"100 EUR")))
        .unwrap();
    let e = pool.dispatch(post).await.unwrap_err();
    assert!(matches!(e, H2Error::StreamReset { .. }), "{e}");
    assert!(!e.is_retryable());
    assert_eq!(seen.load(Ordering::SeqCst), 1, "the POST was sent once");
    // A GET without a body may be sent again: all three attempts, then the list.
    let e = pool.dispatch(get("/idempotent")).await.unwrap_err();
    match &e {
        H2Error::AllAttemptsFailed(attempts) => assert_eq!(attempts.len(), 3, "{e}"),
        other => panic!("expected AllAttemptsFailed, got {other}"),
    }
    assert!(
        e.to_string()
            .starts_with("all 3 attempts failed: #1 (backend 0)"),
        "{e}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 4);
    assert_eq!(pool.metrics(0).unwrap().retries, 2);
}

#[tokio::test(flavor = "current_thread")]
async fn the_retry_budget_bounds_retries_when_a_backend_fails_everything() {
    // Every request refused: each could be retried, but the budget (floor 0, 10 %) lets only
    // a tenth of the requests in progress retry at once.
    let (refusing, seen) = scripted(|_| Some(h2::Reason::REFUSED_STREAM)).await;
    let pool = H2Pool::builder([refusing])
        .max_attempts(2)
        .retry_budget(10, 0)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.dispatch(get(&format!("/b{i}"))).await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().is_err());
    }
    let attempts = seen.load(Ordering::SeqCst);
    let retries = pool.metrics(0).unwrap().retries as usize;
    eprintln!(
        "100 requests to a backend refusing everything: {attempts} attempts, {retries} retries"
    );
    assert_eq!(attempts, 100 + retries);
    // Without a budget, every request would be retried once (200 attempts). The budget
    // bounds retries *in progress* (10 % of the 100 requests in progress); as requests end,
    // later ones may retry too, so the total is bounded loosely.
    assert!(retries <= 20, "{retries} retries: the budget did not hold");
    // Budget off: no retry at all.
    let pool = H2Pool::builder([refusing])
        .retry_budget(0, 0)
        .build()
        .unwrap();
    let e = pool.dispatch(get("/none")).await.unwrap_err();
    assert!(matches!(e, H2Error::StreamReset { .. }), "{e}");
}

#[tokio::test(flavor = "current_thread")]
async fn counters_equal_what_happened() {
    let server = TestServer::start(Config {
        goaway_after: Some(5),
        ..Config::default()
    })
    .await;
    let pool = H2Pool::builder([server.addr()])
        .acquire_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    for i in 0..12 {
        let mut r = get(&format!("/c{i}"));
        r.extensions_mut().insert(Backend(0));
        let response = within(10, "request", pool.dispatch(r)).await.unwrap();
        body_of(response).await;
    }
    let m = pool.metrics(0).unwrap();
    let accepted = Counters::get(&server.counters.connections) as u64;
    assert_eq!(m.connects, accepted, "{m:?}");
    assert_eq!(m.requests, 12 + m.retries, "{m:?}");
    // The backend closes each connection after 5 requests: 12 requests need 3 connections,
    // and the pool saw the first two say GOAWAY (or end) before using them again.
    assert!(accepted >= 3, "{accepted}");
    assert_eq!(m.connect_failures, 0);
    assert_eq!(
        (m.streams_in_flight, m.connects_in_progress, m.waiters),
        (0, 0, 0)
    );
}

/// Collects the events of a test: their message and fields as text.
#[derive(Default, Clone)]
struct Events(Arc<Mutex<Vec<String>>>);

impl Events {
    fn contains(&self, all: &[&str]) -> bool {
        self.0
            .lock()
            .unwrap()
            .iter()
            .any(|e| all.iter().all(|part| e.contains(part)))
    }
}

struct Visitor<'a>(&'a mut String);

impl tracing::field::Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
}

impl tracing::Subscriber for Events {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = format!("{}", event.metadata().level());
        event.record(&mut Visitor(&mut line));
        self.0.lock().unwrap().push(line);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(flavor = "current_thread")]
async fn tracing_events_for_a_connect_failure_and_a_goaway() {
    let events = Events::default();
    let _guard = tracing::subscriber::set_default(events.clone());
    // A connect failure.
    let dead = TestServer::unused_addr();
    let pool = H2Pool::builder([dead]).build().unwrap();
    pool.request(0, common::get("/x")).await.unwrap_err();
    assert!(
        events.contains(&[
            "INFO",
            "connect failed",
            "backend=0",
            &dead.port().to_string()
        ]),
        "{:?}",
        events.0.lock().unwrap()
    );
    // A GOAWAY: the backend says it after its second request while the first is still
    // held, so the connection stays open with GOAWAY received; the next request finds it.
    let server = TestServer::start(Config {
        goaway_after: Some(2),
        hold: common::Hold::BeforeHead,
        hold_prefix: "/hold",
        ..Config::default()
    })
    .await;
    let pool = H2Pool::builder([server.addr()]).build().unwrap();
    let held = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.dispatch(get("/hold/a")).await })
    };
    within(
        5,
        "held",
        server
            .counters
            .wait_until(|c| Counters::get(&c.active) == 1),
    )
    .await;
    pool.dispatch(get("/b")).await.unwrap();
    within(5, "GOAWAY noticed", async {
        while pool.metrics(0).unwrap().goaways == 0 {
            pool.dispatch(get("/c")).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        events.contains(&["DEBUG", "GOAWAY received", "backend=0", "conn="]),
        "{:?}",
        events.0.lock().unwrap()
    );
    assert!(events.contains(&["DEBUG", "connected", "elapsed_ms"]));
    server.open_gate();
    held.await.unwrap().unwrap();
    assert_eq!(pool.metrics(0).unwrap().goaways, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_long_wait_for_room_is_traced() {
    let events = Events::default();
    let _guard = tracing::subscriber::set_default(events.clone());
    let server = TestServer::start(Config {
        hold: common::Hold::BeforeHead,
        hold_prefix: "/hold",
        ..Config::default()
    })
    .await;
    let pool = H2Pool::builder([server.addr()])
        .max_connections_per_backend(1)
        .max_streams_per_connection(1)
        .build()
        .unwrap();
    let held = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.dispatch(get("/hold/1")).await })
    };
    within(
        5,
        "held",
        server
            .counters
            .wait_until(|c| Counters::get(&c.active) == 1),
    )
    .await;
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.dispatch(get("/after")).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.open_gate();
    held.await.unwrap().unwrap();
    waiter.await.unwrap().unwrap();
    assert!(
        events.contains(&["DEBUG", "waited for room", "backend=0", "waited_ms="]),
        "{:?}",
        events
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| !e.starts_with("TRACE"))
            .collect::<Vec<_>>()
    );
}
