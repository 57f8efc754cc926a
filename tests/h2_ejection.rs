//! Backend ejection (issue 11): consecutive connect failures eject a backend with a doubling,
//! capped, jittered backoff; requests fail fast meanwhile; after the backoff one probe goes
//! through and its success restores the backend.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{closing_listener, get, within, Config, TestServer};
use tokenpool::h2::{H2Error, H2Pool};

#[tokio::test(flavor = "current_thread")]
async fn three_failed_connects_eject_and_requests_then_fail_fast_without_connecting() {
    let (addr, attempts) = closing_listener().await;
    let pool = H2Pool::builder([addr])
        .eject_after_connect_failures(3)
        .ejection_backoff(Duration::from_secs(30), Duration::from_secs(60))
        .build()
        .unwrap();
    for i in 1..=3 {
        let e = pool.request(0, get("/")).await.unwrap_err();
        assert!(
            matches!(e, H2Error::Connect { .. } | H2Error::Handshake { .. }),
            "{e}"
        );
        assert_eq!(pool.health(0).unwrap().consecutive_failures, i);
    }
    let health = pool.health(0).unwrap();
    let until = health.ejected_until.expect("ejected after 3 failures");
    assert!(health.is_ejected(Instant::now()));
    // Jittered around the first backoff.
    let left = until.saturating_duration_since(Instant::now());
    assert!(
        left > Duration::from_secs(20) && left <= Duration::from_secs(38),
        "{left:?}"
    );
    // Now every request fails at once, with no connect attempt.
    let start = Instant::now();
    for _ in 0..100 {
        let e = pool.request(0, get("/")).await.unwrap_err();
        match &e {
            H2Error::BackendEjected {
                backend: 0,
                addr: a,
                failures: 3,
                until: u,
            } => {
                assert_eq!((a, *u), (&addr.into(), until));
                assert!(e.is_retryable());
                assert!(e.to_string().contains("ejected after 3 consecutive"), "{e}");
            }
            other => panic!("expected BackendEjected, got {other}"),
        }
    }
    let took = start.elapsed();
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3,
        "no connect while ejected"
    );
    assert_eq!(pool.stats(0).unwrap().in_use, 0);
    eprintln!("100 requests to an ejected backend failed in {took:?} with 0 connect attempts");
}

#[tokio::test(flavor = "current_thread")]
async fn after_the_backoff_one_probe_goes_through_and_a_failed_probe_doubles_it() {
    let (addr, attempts) = closing_listener().await;
    let initial = Duration::from_millis(100);
    let pool = H2Pool::builder([addr])
        .eject_after_connect_failures(1)
        .ejection_backoff(initial, Duration::from_secs(10))
        .build()
        .unwrap();
    pool.request(0, get("/")).await.unwrap_err();
    let first = pool.health(0).unwrap().ejected_until.expect("ejected");
    tokio::time::sleep_until(first.into()).await;
    // Backoff over: ten requests at once; one probes, the others wait for its outcome.
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.request(0, get("/")).await })
        })
        .collect();
    for t in tasks {
        let e = within(10, "probe", t).await.unwrap().unwrap_err();
        assert!(e.is_retryable(), "{e}");
    }
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        2,
        "one probe for ten requests"
    );
    let health = pool.health(0).unwrap();
    assert_eq!(health.consecutive_failures, 2);
    let second = health.ejected_until.expect("ejected again");
    let backoff = second.saturating_duration_since(Instant::now());
    // Doubled: 200 ms ± 25 %, minus the moments since.
    assert!(backoff > Duration::from_millis(100), "{backoff:?}");
    assert!(backoff <= Duration::from_millis(250), "{backoff:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_backend_that_comes_back_is_restored_by_the_probe() {
    let mut server = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([server.addr()])
        .eject_after_connect_failures(2)
        .ejection_backoff(Duration::from_millis(50), Duration::from_secs(1))
        .build()
        .unwrap();
    pool.request(0, get("/warm")).await.unwrap();
    server.kill().await;
    // The pooled connection died with the backend; new connects are refused.
    let mut failed = 0;
    while pool.health(0).unwrap().ejected_until.is_none() {
        let e = within(10, "refused", pool.request(0, get("/down")))
            .await
            .unwrap_err();
        assert!(e.is_retryable(), "{e}");
        failed += 1;
        assert!(failed < 10, "not ejected after {failed} failures");
    }
    let until = pool.health(0).unwrap().ejected_until.unwrap();
    assert!(matches!(
        pool.request(0, get("/ejected")).await,
        Err(H2Error::BackendEjected { .. })
    ));
    server.restart().await;
    tokio::time::sleep_until(until.into()).await;
    let response = within(10, "probe", pool.request(0, get("/back")))
        .await
        .unwrap();
    assert_eq!(response.body(), "/back");
    let health = pool.health(0).unwrap();
    assert_eq!(
        (health.consecutive_failures, health.ejected_until),
        (0, None)
    );
    assert_eq!(pool.stats(0).unwrap().in_use, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn zero_disables_ejection_and_bad_backoffs_are_rejected() {
    let (addr, attempts) = closing_listener().await;
    let pool = H2Pool::builder([addr])
        .eject_after_connect_failures(0)
        .build()
        .unwrap();
    for _ in 0..10 {
        let e = pool.request(0, get("/")).await.unwrap_err();
        assert!(!matches!(e, H2Error::BackendEjected { .. }), "{e}");
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 10);
    assert_eq!(pool.health(0).unwrap().ejected_until, None);
    for (initial, max) in [
        (Duration::ZERO, Duration::from_secs(1)),
        (Duration::from_secs(2), Duration::from_secs(1)),
    ] {
        let err = H2Pool::builder([addr])
            .ejection_backoff(initial, max)
            .build()
            .expect_err("invalid");
        assert!(matches!(err, H2Error::InvalidConfig(_)), "{err}");
    }
}
