//! The proxy example (`examples/proxy/server.rs`, included here) under the attacks of issue
//! 13, each with a normal client served *during* the attack: slow POSTs pinning backend
//! streams, a stuck backend, slowloris headers, a trickled h2 preface, idle connections
//! against the connection cap, RFC 9112/9113 violations, and batched rapid reset.
//!
//! The limits are small so each test takes about a second. Set `TOKENPOOL_ATTACK_BASELINE=1`
//! to run the attacks with the limits switched off (the proxy as it was before them): the
//! limit tests then fail, and print the figures of the attack.
#![cfg(feature = "h2")]

#[path = "../examples/proxy/backend.rs"]
mod backend;
#[path = "../examples/proxy/server.rs"]
mod server;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend::Backend;
use bytes::Bytes;
use http::StatusCode;
use server::Limits;
use tokenpool::h2::H2Pool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for each step, so that a hang fails instead of blocking the suite.
const LIMIT: Duration = Duration::from_secs(10);

const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

fn baseline() -> bool {
    std::env::var_os("TOKENPOOL_ATTACK_BASELINE").is_some()
}

/// `limits`, or with `TOKENPOOL_ATTACK_BASELINE` set, limits so high they never act.
fn limits(limits: Limits) -> Limits {
    if !baseline() {
        return limits;
    }
    let day = Duration::from_secs(86_400);
    Limits {
        max_client_connections: 100_000,
        header_read_timeout: day,
        handshake_timeout: day,
        idle_timeout: day,
        keep_alive_interval: day,
        body_stall_timeout: day,
        max_streams_per_connection: 1024,
        backend_share_per_connection: 100_000,
        share_wait: day,
        max_resets_per_window: u32::MAX,
        reset_window: day,
        max_pending_accept_reset_streams: 20,
        max_local_error_reset_streams: 1024,
    }
}

/// A pool over `backends` with `response_header_timeout` (none in the baseline, unless
/// `keep_in_baseline`: the test is about another limit).
fn pool(
    backends: &[SocketAddr],
    conns: usize,
    streams: usize,
    response_header_timeout: Duration,
    keep_in_baseline: bool,
) -> H2Pool {
    let b = H2Pool::builder(backends.iter().copied())
        .max_connections_per_backend(conns)
        .max_streams_per_connection(streams)
        .acquire_timeout(Duration::from_secs(1));
    let b = if baseline() && !keep_in_baseline {
        b
    } else {
        b.response_header_timeout(response_header_timeout)
    };
    b.build().expect("valid pool")
}

/// A proxy serving on a loopback port.
struct Running {
    addr: SocketAddr,
    proxy: Arc<server::Proxy>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(pool: H2Pool, limits: Limits) -> Running {
    let listener = tokio::net::TcpListener::bind(LOOPBACK).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let proxy = server::Proxy::with_limits(pool, limits);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve(listener, Arc::clone(&proxy), async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        proxy,
        _stop: stop,
    }
}

/// An h2c client connection to `addr`.
async fn h2_client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// A normal client: one GET on a fresh h2c connection. Returns the status and how long it
/// took, or why it failed within [`LIMIT`].
async fn victim_get(addr: SocketAddr) -> Result<(StatusCode, Duration), String> {
    let started = Instant::now();
    let get = async {
        let mut send = h2_client(addr).await;
        let request = http::Request::get(format!("http://{addr}/victim"))
            .body(())
            .unwrap();
        let (response, _) = send
            .send_request(request, true)
            .map_err(|e| e.to_string())?;
        let response = response.await.map_err(|e| e.to_string())?;
        Ok::<_, String>(response.status())
    };
    match tokio::time::timeout(LIMIT, get).await {
        Ok(Ok(status)) => Ok((status, started.elapsed())),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {LIMIT:?}")),
    }
}

/// Writes `raw` on a fresh connection and reads the whole answer (the request should ask
/// for `Connection: close`).
async fn http1_raw(addr: SocketAddr, raw: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(LIMIT, tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the peer closes `tcp` within `limit` (reads until EOF or an error).
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// An h2c backend that accepts every stream and never answers; counts the streams.
async fn stuck_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(LOOPBACK).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                let mut held = Vec::new();
                while let Some(Ok(stream)) = conn.accept().await {
                    counter.fetch_add(1, Ordering::Relaxed);
                    held.push(stream);
                    // Streams the client reset are let go now and then.
                    if held.len() > 4096 {
                        held.clear();
                    }
                }
            });
        }
    });
    (addr, seen)
}

async fn healthy_backend(name: &str) -> Backend {
    Backend::start(LOOPBACK, name).await.unwrap()
}

/// Waits until `cond` holds, up to [`LIMIT`].
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Attack 1: slow POSTs (large `content-length`, one byte sent) on one h2 connection. The
/// pool has 8 backend streams in all; the attacker's connection may hold 2 of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_posts_on_one_connection_cannot_pin_every_backend_stream() {
    let backend = healthy_backend("b0").await;
    let proxy = start(
        pool(&[backend.addr()], 1, 8, Duration::from_secs(30), false),
        limits(Limits {
            backend_share_per_connection: 2,
            share_wait: Duration::from_secs(30),
            body_stall_timeout: Duration::from_secs(30),
            ..Limits::default()
        }),
    )
    .await;
    let mut attacker = h2_client(proxy.addr).await;
    let mut held = Vec::new();
    for i in 0..40 {
        let request = http::Request::post(format!("http://{}/echo/{i}", proxy.addr))
            .header("content-length", "1000000")
            .body(())
            .unwrap();
        let Ok((response, mut body)) = attacker.send_request(request, false) else {
            break;
        };
        let _ = body.send_data(Bytes::from_static(b"x"), false);
        held.push((response, body));
    }
    let pool = proxy.proxy.pool();
    // The attacker's streams reach the backend as far as its share allows.
    let pinned_target = if baseline() { 8 } else { 2 };
    eventually("the attacker's POSTs reach the backend", || {
        pool.streams_in_flight(0).unwrap() >= pinned_target
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pinned = pool.streams_in_flight(0).unwrap();
    let victim = victim_get(proxy.addr).await;
    eprintln!("attack 1: 40 slow POSTs on one connection pinned {pinned} of 8 backend streams; victim: {victim:?}");
    assert!(pinned <= 2, "the attacker holds {pinned} backend streams");
    let (status, _) = victim.expect("the victim is served during the attack");
    assert_eq!(status, StatusCode::OK);
    drop(held);
}

/// Attack 2: a backend that completes the handshake and never answers, next to a healthy
/// one. Idempotent requests time out on it and move to the healthy one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_backend_times_out_and_requests_move_to_the_healthy_one() {
    let (stuck, seen) = stuck_backend().await;
    let healthy = healthy_backend("ok").await;
    let proxy = start(
        pool(
            &[stuck, healthy.addr()],
            2,
            100,
            Duration::from_millis(200),
            false,
        ),
        limits(Limits::default()),
    )
    .await;
    let mut answered = 0;
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let (status, took) = victim_get(proxy.addr)
            .await
            .expect("every request is answered");
        assert_eq!(status, StatusCode::OK);
        answered += 1;
        slowest = slowest.max(took);
    }
    eprintln!(
        "attack 2: {answered}/10 GETs answered with one backend stuck ({} requests reached it), slowest {slowest:?}",
        seen.load(Ordering::Relaxed)
    );
    assert!(
        seen.load(Ordering::Relaxed) > 0,
        "the stuck backend was tried"
    );
    // A POST that lands on the stuck backend is not retried (it may have been processed),
    // but it is answered: 200 from the healthy one or 504.
    for _ in 0..2 {
        let answer = http1_raw(
            proxy.addr,
            b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.1 504"),
            "{answer}"
        );
    }
    // Nothing is left counted on the stuck backend.
    let pool = proxy.proxy.pool();
    eventually("the timed-out streams are freed", || {
        pool.streams_in_flight(0).unwrap() == 0
    })
    .await;
}

/// Attack 3a: HTTP/1.1 headers sent one byte at a time (slowloris).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_off() {
    let backend = healthy_backend("b0").await;
    let proxy = start(
        pool(&[backend.addr()], 1, 100, Duration::from_secs(5), false),
        limits(Limits {
            header_read_timeout: Duration::from_millis(300),
            handshake_timeout: Duration::from_millis(300),
            ..Limits::default()
        }),
    )
    .await;
    let mut loris = Vec::new();
    for _ in 0..10 {
        let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        loris.push(tcp);
    }
    // Trickle one header byte per connection every 50 ms, in the background.
    let trickle = tokio::spawn(async move {
        let started = Instant::now();
        let mut closed = vec![None; loris.len()];
        while started.elapsed() < Duration::from_secs(3) && closed.iter().any(Option::is_none) {
            for (i, tcp) in loris.iter_mut().enumerate() {
                if closed[i].is_none() && tcp.write_all(b"x").await.is_err() {
                    closed[i] = Some(started.elapsed());
                }
                let mut buf = [0u8; 256];
                if closed[i].is_none() {
                    if let Ok(Ok(0) | Err(_)) =
                        tokio::time::timeout(Duration::from_millis(1), tcp.read(&mut buf)).await
                    {
                        closed[i] = Some(started.elapsed());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        closed
    });
    let victim = victim_get(proxy.addr).await;
    let closed = trickle.await.unwrap();
    let open = closed.iter().filter(|c| c.is_none()).count();
    eprintln!(
        "attack 3a: 10 slowloris connections, {open} still open after 3 s; victim: {victim:?}"
    );
    assert_eq!(victim.expect("served").0, StatusCode::OK);
    assert_eq!(open, 0, "slowloris connections still open: {closed:?}");
}

/// Attack 3b: the h2 preface trickled one byte at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_h2_preface_is_cut_off() {
    let backend = healthy_backend("b0").await;
    let proxy = start(
        pool(&[backend.addr()], 1, 100, Duration::from_secs(5), false),
        limits(Limits {
            handshake_timeout: Duration::from_millis(300),
            ..Limits::default()
        }),
    )
    .await;
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let started = Instant::now();
    let mut cut_after = None;
    for (i, b) in preface.iter().enumerate() {
        if tcp.write_all(&[*b]).await.is_err() {
            cut_after = Some(i);
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await
        {
            cut_after = Some(i);
            break;
        }
    }
    let victim = victim_get(proxy.addr).await;
    eprintln!(
        "attack 3b: trickled preface cut after {cut_after:?} of 24 bytes, {:?}; victim: {victim:?}",
        started.elapsed()
    );
    assert!(
        cut_after.is_some(),
        "the whole trickled preface was accepted"
    );
    assert_eq!(victim.expect("served").0, StatusCode::OK);
}

/// Attack 3c: idle connections (plain TCP and h2 after one request) against a cap of 4
/// client connections: the cap holds, the idle ones are closed, a new client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_the_cap_holds() {
    let backend = healthy_backend("b0").await;
    let proxy = start(
        pool(&[backend.addr()], 1, 100, Duration::from_secs(5), false),
        limits(Limits {
            max_client_connections: 4,
            handshake_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(300),
            ..Limits::default()
        }),
    )
    .await;
    // Two h2 connections that make one request and then idle.
    let mut h2_idle = Vec::new();
    for _ in 0..2 {
        let tcp = TcpStream::connect(proxy.addr).await.unwrap();
        let (mut send, conn) = h2::client::handshake(tcp).await.unwrap();
        let driver = tokio::spawn(conn);
        let request = http::Request::get(format!("http://{}/once", proxy.addr))
            .body(())
            .unwrap();
        let (response, _) = send.send_request(request, true).unwrap();
        assert_eq!(response.await.unwrap().status(), StatusCode::OK);
        h2_idle.push((send, driver));
    }
    // Ten plain TCP connections that never send a byte; only two fit under the cap.
    let mut tcp_idle = Vec::new();
    for _ in 0..10 {
        tcp_idle.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    let open = |p: &server::Proxy| {
        let c = p.counters();
        c.connections_accepted - c.connections_closed
    };
    let mut most_open = 0;
    for _ in 0..20 {
        most_open = most_open.max(open(&proxy.proxy));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let victim = victim_get(proxy.addr).await;
    most_open = most_open.max(open(&proxy.proxy));
    // Every idle connection is closed: the h2 ones (GOAWAY, then the client's driver ends),
    // and the plain ones.
    let mut all_closed = true;
    for (_, driver) in h2_idle {
        all_closed &= tokio::time::timeout(Duration::from_secs(3), driver)
            .await
            .is_ok();
    }
    for tcp in &mut tcp_idle {
        all_closed &= closed_within(tcp, Duration::from_secs(3)).await;
    }
    let limited = proxy.proxy.counters().connections_limited;
    eprintln!(
        "attack 3c: 2 idle h2 + 10 idle TCP connections, cap 4: at most {most_open} open at once, {limited} closed for a limit, all closed: {all_closed}; victim: {victim:?}"
    );
    assert!(
        most_open <= 4,
        "{most_open} client connections open at once"
    );
    assert!(all_closed, "idle connections were held open");
    assert_eq!(victim.expect("served").0, StatusCode::OK);
}

/// Case 4: requests that break RFC 9112 / 9113 rules get 400 from the proxy and never reach
/// a backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc_violations_get_400_and_reach_no_backend() {
    let backend = healthy_backend("b0").await;
    let proxy = start(
        pool(&[backend.addr()], 1, 100, Duration::from_secs(5), false),
        limits(Limits::default()),
    )
    .await;
    let cases: [(&str, &[u8]); 5] = [
        ("no Host", b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n"),
        (
            "two Host",
            b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\nconnection: close\r\n\r\n",
        ),
        (
            "userinfo in Host",
            b"GET / HTTP/1.1\r\nhost: user:pw@a\r\nconnection: close\r\n\r\n",
        ),
        (
            "userinfo in the absolute URI",
            b"GET http://user:pw@a/ HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        ),
        (
            "malformed chunked body",
            b"POST /echo HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
    ];
    for (what, raw) in cases {
        let answer = http1_raw(proxy.addr, raw).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{what}: {}",
            answer.lines().next().unwrap_or("(nothing)")
        );
    }
    // h2: `:authority` with userinfo.
    let mut send = h2_client(proxy.addr).await;
    let request = http::Request::get(format!("http://user:pw@{}/", proxy.addr))
        .body(())
        .unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    let status = tokio::time::timeout(LIMIT, response)
        .await
        .expect("answered")
        .expect("a response")
        .status();
    assert_eq!(status, StatusCode::BAD_REQUEST, ":authority with userinfo");
    assert_eq!(
        backend.requests(),
        0,
        "a malformed request reached the backend"
    );
    // A valid request still goes through.
    assert_eq!(
        victim_get(proxy.addr).await.expect("served").0,
        StatusCode::OK
    );
}

/// Attack 5: batched rapid reset: 10 requests (POSTs that reach a backend), a 30 ms pause,
/// 10 resets, repeated on one connection. hyper's own limit counts only streams reset before the proxy took them, so
/// batches it has taken pass it; the reset budget (20 per window here) closes the
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_rapid_reset_is_stopped() {
    let (stuck, seen) = stuck_backend().await;
    let healthy = healthy_backend("ok").await;
    let proxy = start(
        pool(
            &[stuck, healthy.addr()],
            2,
            100,
            Duration::from_millis(300),
            true,
        ),
        limits(Limits {
            max_resets_per_window: 20,
            ..Limits::default()
        }),
    )
    .await;
    const BATCH: usize = 10;
    const ROUNDS: usize = 60;
    let mut attacker = h2_client(proxy.addr).await;
    let mut sent = 0;
    let started = Instant::now();
    'rounds: for _ in 0..ROUNDS {
        let mut batch = Vec::new();
        for _ in 0..BATCH {
            // A POST with one byte of its body: the proxy forwards it, and the backend
            // (stuck, or waiting for the rest of the body) holds it until the reset.
            let request = http::Request::post(format!("http://{}/echo", proxy.addr))
                .body(())
                .unwrap();
            match attacker.send_request(request, false) {
                Ok((response, mut body)) => {
                    let _ = body.send_data(Bytes::from_static(b"x"), false);
                    batch.push((response, body));
                }
                Err(e) => {
                    eprintln!("attack 5: send_request: {e}");
                    break 'rounds;
                }
            }
            sent += 1;
        }
        // Long enough for the proxy to take every stream (so that hyper's own limit on
        // streams reset before they were accepted does not act), short of any timeout.
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(batch); // RST_STREAM(CANCEL) for every stream still open
        tokio::time::sleep(Duration::from_millis(5)).await;
        if let Err(e) = std::future::poll_fn(|cx| attacker.poll_ready(cx)).await {
            eprintln!("attack 5: connection closed: {e}");
            break;
        }
    }
    let victim = victim_get(proxy.addr).await;
    // Each backend gets half of them (round robin); the stuck one counts what it got.
    let reached = 2 * seen.load(Ordering::Relaxed) as u64;
    eprintln!(
        "attack 5: batched rapid reset: {sent} of {} streams sent in {:?} before the connection was closed, about {reached} reached a backend, {} counted as reset; victim: {victim:?}",
        BATCH * ROUNDS,
        started.elapsed(),
        proxy.proxy.counters().client_resets
    );
    assert!(
        sent < BATCH * ROUNDS,
        "the attacking connection was never closed"
    );
    assert!(
        reached <= 2 * BATCH as u64 * 10,
        "about {reached} requests reached the backends"
    );
    assert_eq!(victim.expect("served").0, StatusCode::OK);
}
