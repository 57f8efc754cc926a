//! Backends that change at runtime (issue 12): add, remove and replace by key under load,
//! with nothing lost and the other backends' connections untouched.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{within, Config, Counters, TestServer};
use http_body_util::{BodyExt, Empty};
use tokenpool::h2::{BackendKey, H2Error, H2Pool};

fn get(path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(path).body(Empty::new()).unwrap()
}

/// Requests answered by each server so far.
fn answered(servers: &[&TestServer]) -> Vec<usize> {
    servers
        .iter()
        .map(|s| Counters::get(&s.counters.requests))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_remove_and_replace_under_load_lose_nothing_and_leave_the_others_alone() {
    let a = TestServer::start(Config::default()).await;
    let b = TestServer::start(Config::default()).await;
    let c = TestServer::start(Config::default()).await;
    let d = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([a.addr(), b.addr()]).build().unwrap();
    let (key_a, key_b) = (a.addr().to_string(), b.addr().to_string());
    assert_eq!(pool.backend_index(&key_a), Some(0));
    assert_eq!(pool.backend_index(&key_b), Some(1));

    // Load: 16 workers dispatching until told to stop; every request must succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let (pool, stop, failures) = (pool.clone(), Arc::clone(&stop), Arc::clone(&failures));
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let path = format!("/w{w}/{i}");
                    match pool.dispatch(get(&path)).await {
                        Ok(r) => {
                            let body = r.into_body().collect().await.unwrap().to_bytes();
                            assert_eq!(body, path);
                        }
                        Err(e) => {
                            eprintln!("request failed: {e}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let wait_for = |server: &TestServer, n: usize| {
        let c = server.counters.clone();
        async move {
            let start = Counters::get(&c.requests);
            within(
                10,
                "traffic",
                c.wait_until(|c| Counters::get(&c.requests) >= start + n),
            )
            .await
        }
    };
    wait_for(&a, 200).await;
    wait_for(&b, 200).await;
    let a_conns = Counters::get(&a.counters.connections);
    let a_connects = pool.metrics(0).unwrap().connects;

    // Add C: it gets traffic; A's connections are untouched.
    let ic = pool.add_backend("c", c.addr()).unwrap();
    assert_eq!(ic, 2);
    wait_for(&c, 200).await;

    // Remove B: its traffic stops, its connections close, nothing fails.
    let drained = pool.remove_backend(&key_b).unwrap();
    assert!(drained >= 1, "{drained}");
    assert_eq!(pool.backend_index(&key_b), None);
    assert!(matches!(pool.stats(1), Err(H2Error::UnknownBackend { .. })));
    let bc = b.counters.clone();
    within(
        10,
        "B's connections close",
        bc.wait_until(|c| Counters::get(&c.closed) == Counters::get(&c.connections)),
    )
    .await;
    // Requests that were already connecting to B when it was removed may still reach it;
    // after those, none does.
    wait_for(&a, 200).await;
    let b_after = Counters::get(&b.counters.requests);
    wait_for(&a, 200).await;
    wait_for(&c, 200).await;
    assert_eq!(
        Counters::get(&b.counters.requests),
        b_after,
        "no request to a removed backend (B: {} connections, {} closed)",
        Counters::get(&b.counters.connections),
        Counters::get(&b.counters.closed)
    );

    // Replace C by D under the same key: new requests go to D, C's connections drain.
    let id = pool.replace_backend("c", d.addr()).unwrap();
    assert_eq!(id, ic);
    wait_for(&d, 200).await;
    let cc = c.counters.clone();
    within(
        10,
        "C's connections close",
        cc.wait_until(|c| Counters::get(&c.closed) == Counters::get(&c.connections)),
    )
    .await;

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        within(10, "worker", w).await.unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0, "a request was lost");
    // Route by key (the load has stopped): "c" is now D.
    let before = answered(&[&a, &d]);
    for _ in 0..10 {
        let mut pinned = get("/by-key");
        pinned.extensions_mut().insert(BackendKey("c".into()));
        pool.dispatch(pinned).await.unwrap();
    }
    assert_eq!(answered(&[&a, &d]), [before[0], before[1] + 10]);
    // A was never touched: none of its connections was closed (a second one may have
    // opened under load, when two workers raced for the first one's slot).
    assert_eq!(Counters::get(&a.counters.closed), 0);
    assert!(Counters::get(&a.counters.connections) >= a_conns);
    let m = pool.metrics(0).unwrap();
    assert!(m.connects >= a_connects);
    assert_eq!((m.evicted_idle, m.evicted_lifetime, m.goaways), (0, 0, 0));
    eprintln!(
        "answered: A {}, B {}, C {}, D {}",
        Counters::get(&a.counters.requests),
        Counters::get(&b.counters.requests),
        Counters::get(&c.counters.requests),
        Counters::get(&d.counters.requests)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn keys_and_indices_are_checked() {
    let a = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([a.addr()]).build().unwrap();
    let err = pool
        .add_backend(a.addr().to_string(), a.addr())
        .unwrap_err();
    assert!(matches!(err, H2Error::InvalidConfig(_)), "{err}");
    assert!(matches!(
        pool.remove_backend("nope"),
        Err(H2Error::UnknownBackendKey(k)) if k == "nope"
    ));
    let err = pool.add_backend("bad", "http://bad host").unwrap_err();
    assert!(matches!(err, H2Error::InvalidConfig(_)), "{err}");
    let mut r = get("/");
    r.extensions_mut().insert(BackendKey("nope".into()));
    assert!(matches!(
        pool.dispatch(r).await,
        Err(H2Error::UnknownBackendKey(_))
    ));
    // Remove the only backend: nothing to pick; add one: it takes index 0 again.
    pool.remove_backend(&a.addr().to_string()).unwrap();
    assert_eq!(pool.backends(), 0);
    assert!(pool.dispatch(get("/")).await.is_err());
    assert_eq!(pool.add_backend("again", a.addr()).unwrap(), 0);
    let r = pool.dispatch(get("/back")).await.unwrap();
    assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), "/back");
    tokio::time::sleep(Duration::from_millis(1)).await;
}
