//! `H2Pool` errors: each one is the right variant, with a clear message, and leaves no slot
//! held. Backends are real h2c servers (or plain sockets) on 127.0.0.1 started here.

mod common;

use std::time::Duration;

use common::{get, head_only, within, Config, Counters, Hold, TestServer};
use tokenpool::h2::{H2Error, H2Pool};

#[tokio::test]
async fn unknown_backend_is_an_error_not_a_panic() {
    let server = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([server.addr()]).build().unwrap();
    let err = pool.request(1, get("/")).await.unwrap_err();
    assert!(matches!(
        err,
        H2Error::UnknownBackend {
            backend: 1,
            backends: 1
        }
    ));
    assert_eq!(
        err.to_string(),
        "unknown backend 1: the pool has 1 backends"
    );
    assert!(matches!(
        pool.stats(7),
        Err(H2Error::UnknownBackend { backend: 7, .. })
    ));
    assert!(matches!(
        pool.drain_backend(7),
        Err(H2Error::UnknownBackend { .. })
    ));
    assert_eq!(pool.backend_addr(0), Some(server.addr().into()));
    assert_eq!(pool.backend_addr(1), None);
    assert_eq!(
        Counters::get(&server.counters.connections),
        0,
        "nothing was opened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_backend_makes_waiting_requests_time_out() {
    // One connection carrying one stream, whose body the backend holds: a second request
    // finds the connection full and no free slot, and gives up after the acquire timeout.
    let server = TestServer::start(Config {
        max_concurrent_streams: Some(1),
        hold: Hold::AfterHead,
        ..Config::default()
    })
    .await;
    let pool = H2Pool::builder([server.addr()])
        .max_connections_per_backend(1)
        .acquire_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let (response, _) = within(
        10,
        "first request",
        pool.send_request(0, head_only("/hold/1"), true),
    )
    .await
    .unwrap();
    let mut body = within(10, "first head", response)
        .await
        .unwrap()
        .into_body();
    let s = pool.stats(0).unwrap();
    assert_eq!(s.in_use, 1, "a full connection stays in use: {s:?}");

    let err = within(10, "second request", pool.request(0, get("/second")))
        .await
        .unwrap_err();
    match &err {
        H2Error::AcquireTimeout {
            backend: 0,
            timeout,
        } => {
            assert_eq!(*timeout, Duration::from_millis(50))
        }
        other => panic!("expected AcquireTimeout, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert_eq!(
        Counters::get(&server.counters.requests),
        1,
        "the second was never sent"
    );

    // The first stream ends: the connection is available again, and serves the next one.
    server.open_gate();
    let chunk = within(10, "first body", body.data())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(chunk, "/hold/1");
    drop(body);
    let s = pool.stats(0).unwrap();
    assert_eq!((s.available, s.in_use), (1, 0), "{s:?}");
    let resp = within(10, "third request", pool.request(0, get("/third")))
        .await
        .unwrap();
    assert_eq!(resp.body(), "/third");
    assert_eq!(Counters::get(&server.counters.connections), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_request_gets_the_stream_a_finished_one_frees() {
    let server = TestServer::start(Config {
        max_concurrent_streams: Some(1),
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
    let mut body = response.await.unwrap().into_body();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.request(0, get("/next")).await })
    };
    // Let the first stream finish: its end hands the connection to the waiter.
    server.open_gate();
    assert_eq!(body.data().await.unwrap().unwrap(), "/hold/1");
    drop(body);
    let resp = within(10, "waiter", waiter).await.unwrap().unwrap();
    assert_eq!(resp.body(), "/next");
    assert_eq!(Counters::get(&server.counters.connections), 1);
    assert_eq!(Counters::get(&server.counters.max_active_per_conn), 1);
    assert_eq!(pool.stats(0).unwrap().in_use, 0);
}

#[tokio::test]
async fn backend_that_does_not_speak_h2_times_out_connecting() {
    // A listener that accepts TCP but never answers: the handshake's PING gets no reply.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        socket // held open, silent
    });
    let pool = H2Pool::builder([addr])
        .connect_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let err = within(10, "silent backend", pool.request(0, get("/")))
        .await
        .unwrap_err();
    match &err {
        H2Error::ConnectTimeout { addr: a, timeout } => {
            assert_eq!((a, *timeout), (&addr.into(), Duration::from_millis(100)))
        }
        other => panic!("expected ConnectTimeout, got {other:?}"),
    }
    assert!(err.to_string().contains("timed out"));
    let s = pool.stats(0).unwrap();
    assert_eq!(s.empty, s.total(), "the slot was freed: {s:?}");
    drop(accept.await.unwrap());
}

#[tokio::test]
async fn cancelled_connect_frees_its_slot() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pool = H2Pool::builder([addr])
        .max_connections_per_backend(1)
        .connect_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let request = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.request(0, get("/")).await })
    };
    // The client is connected (TCP) and waiting for the h2 reply that never comes.
    let (_socket, _) = within(10, "client connects", listener.accept())
        .await
        .unwrap();
    assert_eq!(
        pool.stats(0).unwrap().in_use,
        1,
        "the connect holds the only slot"
    );
    request.abort();
    assert!(request.await.unwrap_err().is_cancelled());
    let s = pool.stats(0).unwrap();
    assert_eq!(
        s.empty, 1,
        "dropping the connect future freed the slot: {s:?}"
    );
}

#[tokio::test]
async fn handshake_refused_by_a_closing_peer_is_an_error() {
    // A peer that accepts and closes at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closer = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        drop(socket);
    });
    let pool = H2Pool::builder([addr]).build().unwrap();
    let err = within(10, "closing peer", pool.request(0, get("/")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, H2Error::Handshake { .. } | H2Error::Connect { .. }),
        "got {err:?}"
    );
    assert_eq!(pool.stats(0).unwrap().in_use, 0);
    closer.await.unwrap();
}

#[tokio::test]
async fn invalid_requests_fail_without_harming_the_connection() {
    let server = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([server.addr()]).build().unwrap();
    pool.request(0, get("/warm")).await.unwrap();
    // A connection-specific header is forbidden in HTTP/2: h2 rejects the request.
    let bad = http::Request::get("http://test/")
        .header("connection", "keep-alive")
        .body(bytes::Bytes::new())
        .unwrap();
    let err = pool.request(0, bad).await.unwrap_err();
    assert!(matches!(err, H2Error::Protocol(_)), "got {err:?}");
    let s = pool.stats(0).unwrap();
    assert_eq!(
        (s.available, s.in_use),
        (1, 0),
        "the connection stays pooled: {s:?}"
    );
    pool.request(0, get("/after")).await.unwrap();
    assert_eq!(Counters::get(&server.counters.connections), 1);
}

#[test]
fn build_outside_a_runtime_is_an_error() {
    let err = H2Pool::builder(["127.0.0.1:1"]).build().unwrap_err();
    assert!(matches!(err, H2Error::NoRuntime), "got {err:?}");
}

#[tokio::test]
async fn invalid_configurations_are_rejected() {
    let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
    let bad = [
        H2Pool::builder(Vec::<std::net::SocketAddr>::new()),
        H2Pool::builder([addr]).max_connections_per_backend(0),
        H2Pool::builder([addr]).max_connections_per_backend(usize::MAX),
        H2Pool::builder([addr]).max_streams_per_connection(0),
        H2Pool::builder([addr]).connect_timeout(Duration::ZERO),
        H2Pool::builder([addr]).idle_timeout(Duration::ZERO),
        H2Pool::builder([addr]).max_lifetime(Duration::ZERO),
        H2Pool::builder([addr]).initial_stream_window_size(0),
        H2Pool::builder([addr]).initial_connection_window_size(1 << 31),
    ];
    for b in bad {
        let what = format!("{b:?}");
        match b.build() {
            Err(H2Error::InvalidConfig(msg)) => assert!(!msg.is_empty()),
            other => panic!("{what}: expected InvalidConfig, got {other:?}"),
        }
    }
    // Zero acquire timeout is valid: "do not wait".
    H2Pool::builder([addr])
        .acquire_timeout(Duration::ZERO)
        .build()
        .unwrap();
}
