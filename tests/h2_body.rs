//! The request path in `http` + `http-body` types: [`H2Pool::send`], [`Body`], the
//! `tower::Service` impl, against real h2c backends on 127.0.0.1 (see `common`).
//!
//! Every test is bounded by a timeout (nothing may hang) and ends by checking that no slot
//! is left `in_use` or `draining`.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use common::{big_byte, within, Config, Counters, Hold, TestServer};
use http_body::Body as _;
use http_body_util::{channel::Channel, BodyExt, Empty};
use tokenpool::h2::{Backend, Body, H2Error, H2Pool};
use tokenpool::Stats;
use tower::{Service, ServiceBuilder, ServiceExt};

const MIB: usize = 1 << 20;

/// No slot held: every connection is back (available) or closed (empty).
fn assert_settled(pool: &H2Pool) -> Stats {
    let s = pool.total_stats();
    assert_eq!((s.in_use, s.draining), (0, 0), "slots left held: {s:?}");
    s
}

fn empty_get(uri: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(uri).body(Empty::new()).unwrap()
}

fn check_big(body: &[u8], n: usize) {
    assert_eq!(body.len(), n, "whole body");
    if let Some(i) = (0..n).find(|&i| body[i] != big_byte(i)) {
        panic!("byte {i} differs");
    }
}

/// The `/headers` description as (name, value) lines.
fn described(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_bodies_of_5_and_20_mib_collect_without_capacity_calls() {
    // The stream window is 2 MiB by default: without capacity given back as frames are taken,
    // both bodies would stall at 2,097,152 bytes.
    let server = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([server.addr()]).build().unwrap();
    for n in [5 * MIB, 20 * MIB] {
        let response = within(
            60,
            "big response",
            pool.send(0, empty_get(&format!("/big/{n}"))),
        )
        .await
        .expect("response head");
        let body = response.into_body();
        assert_eq!(body.size_hint().exact(), Some(n as u64), "Content-Length");
        let collected = within(60, "collect", body.collect()).await.expect("body");
        check_big(&collected.to_bytes(), n);
    }
    assert_eq!(Counters::get(&server.counters.connections), 1);
    assert_settled(&pool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_of_20_mib_from_a_slow_producer_streams_through() {
    let server = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([server.addr()]).build().unwrap();
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(1);
    let producer = tokio::spawn(async move {
        for i in 0..(20 * MIB / (64 * 1024)) {
            let chunk: Vec<u8> = (i * 64 * 1024..(i + 1) * 64 * 1024).map(big_byte).collect();
            tx.send_data(Bytes::from(chunk))
                .await
                .expect("the upload takes it");
            if i % 32 == 0 {
                // Slow: the upload waits on the producer, not only on flow control.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let request = http::Request::post("http://test/echo").body(body).unwrap();
    let response = within(60, "echo of 20 MiB", pool.send(0, request))
        .await
        .expect("response head");
    let echoed = within(60, "collect", response.into_body().collect())
        .await
        .expect("body")
        .to_bytes();
    check_big(&echoed, 20 * MIB);
    producer.await.unwrap();
    assert_settled(&pool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_travel_both_ways_in_a_grpc_like_exchange() {
    let server = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([server.addr()]).build().unwrap();
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(4);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    trailers.insert("grpc-message", "ok".parse().unwrap());
    let sent = trailers.clone();
    tokio::spawn(async move {
        // A length-prefixed message, as gRPC frames them.
        tx.send_data(Bytes::from_static(b"\0\0\0\0\x05hello"))
            .await
            .unwrap();
        tx.send_trailers(sent).await.unwrap();
    });
    let request = http::Request::post("http://test/pkg.Svc/Method")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let response = within(10, "exchange", pool.send(0, request)).await.unwrap();
    let collected = within(10, "body", response.into_body().collect())
        .await
        .unwrap();
    assert_eq!(collected.trailers(), Some(&trailers), "trailers came back");
    assert_eq!(collected.to_bytes(), &b"\0\0\0\0\x05hello"[..]);
    assert_settled(&pool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_removed_and_an_http1_request_is_forwarded() {
    let server = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([server.addr()]).build().unwrap();
    // As a proxy receives it from an HTTP/1.1 client.
    let request = http::Request::get("/headers?q=1")
        .version(http::Version::HTTP_11)
        .header("host", "api.example:8080")
        .header("connection", "keep-alive, x-hop")
        .header("keep-alive", "timeout=5")
        .header("x-hop", "1")
        .header("proxy-connection", "keep-alive")
        .header("upgrade", "h2c")
        .header("te", "trailers")
        .header("x-end-to-end", "kept")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = within(10, "send", pool.send(0, request))
        .await
        .expect("a keep-alive request is not malformed");
    let text = within(10, "body", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    let text = std::str::from_utf8(&text).unwrap();
    assert!(
        text.starts_with("uri http://api.example:8080/headers?q=1\n"),
        "authority from Host: {text}"
    );
    assert!(text.contains("end-stream-with-headers true\n"), "{text}");
    let headers = described(text);
    let mut names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["te", "x-end-to-end"], "{text}");
    assert!(
        headers.contains(&("te".into(), "trailers".into())),
        "{text}"
    );
    assert_settled(&pool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_form_request_without_host_gets_the_backend_as_authority() {
    let server = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([server.addr()]).build().unwrap();
    let response = within(10, "send", pool.send(0, empty_get("/headers")))
        .await
        .unwrap();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    let expected = format!("uri http://{}/headers\n", server.addr());
    assert!(
        std::str::from_utf8(&text).unwrap().starts_with(&expected),
        "{text:?}"
    );
    assert_settled(&pool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_body_dropped_half_way_frees_its_stream() {
    // One connection with room for one stream: were the dropped body's stream still counted,
    // the next request would wait for it and time out.
    let server = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([server.addr()])
        .max_connections_per_backend(1)
        .max_streams_per_connection(1)
        .acquire_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let response = within(
        10,
        "head",
        pool.send(0, empty_get(&format!("/big/{}", 8 * MIB))),
    )
    .await
    .unwrap();
    let mut body = response.into_body();
    let first = within(10, "first frame", body.frame())
        .await
        .expect("a frame")
        .expect("data");
    assert!(first.is_data());
    assert!(!body.is_end_stream());
    drop(body);
    assert_eq!(
        pool.stats(0).unwrap().available,
        1,
        "the connection is free"
    );
    within(120, "10,000 more requests", async {
        for i in 0..10_000 {
            let response = pool.send(0, empty_get(&format!("/n/{i}"))).await.unwrap();
            let text = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(text, format!("/n/{i}"));
        }
    })
    .await;
    assert_eq!(
        Counters::get(&server.counters.connections),
        1,
        "one connection served all"
    );
    assert_settled(&pool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_answering_before_reading_the_body_does_not_stall_the_response() {
    let server = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([server.addr()]).build().unwrap();
    // A body that never ends on its own: one chunk, then nothing.
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(1);
    tx.send_data(Bytes::from_static(b"first")).await.unwrap();
    let (body, dropped) = Tracked::new(body);
    let request = http::Request::post("http://test/early").body(body).unwrap();
    let response = within(10, "early answer", pool.send(0, request))
        .await
        .unwrap();
    let text = within(10, "body", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(text, "early");
    // The backend dropped the request body (RST_STREAM): the upload ends and drops the body.
    within(10, "upload ends", dropped).await;
    drop(tx);
    assert_settled(&pool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_under_tower_timeout_and_concurrency_limit() {
    let servers = [
        TestServer::start(Config {
            delay: Duration::from_millis(5),
            ..Config::default()
        })
        .await,
        TestServer::start(Config {
            delay: Duration::from_millis(5),
            ..Config::default()
        })
        .await,
    ];
    let pool = H2Pool::builder(servers.iter().map(|s| s.addr()))
        .build()
        .unwrap();
    let service = ServiceBuilder::new()
        .timeout(Duration::from_secs(10))
        .concurrency_limit(4)
        .service(pool.clone());
    // Round robin without a `Backend` extension.
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let svc = service.clone();
            tokio::spawn(async move {
                let response = svc
                    .oneshot(empty_get(&format!("/rr/{i}")))
                    .await
                    .expect("served");
                response.into_body().collect().await.unwrap().to_bytes()
            })
        })
        .collect();
    within(30, "64 requests through tower", async {
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), format!("/rr/{i}"));
        }
    })
    .await;
    let per_server: Vec<usize> = servers
        .iter()
        .map(|s| Counters::get(&s.counters.requests))
        .collect();
    assert_eq!(per_server, [32, 32], "round robin");
    for s in &servers {
        let max = Counters::get(&s.counters.max_active);
        assert!(
            max <= 4,
            "concurrency_limit(4) bounds what is in flight: {max}"
        );
    }
    // Pinned with the extension.
    let mut svc = service.clone();
    for _ in 0..4 {
        let mut request = empty_get("/pinned");
        request.extensions_mut().insert(Backend(1));
        let ready = ServiceExt::<http::Request<Empty<Bytes>>>::ready(&mut svc);
        let response = ready.await.unwrap().call(request).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    assert_eq!(Counters::get(&servers[1].counters.requests), 36);
    assert_eq!(Counters::get(&servers[0].counters.requests), 32);
    // The timeout layer's error when the backend is slower than it.
    let slow = TestServer::start(Config {
        hold: Hold::BeforeHead,
        ..Config::default()
    })
    .await;
    let slow_pool = H2Pool::builder([slow.addr()]).build().unwrap();
    let timed = ServiceBuilder::new()
        .timeout(Duration::from_millis(100))
        .service(slow_pool.clone());
    let e = within(10, "timeout", timed.oneshot(empty_get("/hold/x")))
        .await
        .expect_err("times out");
    assert!(e.is::<tower::timeout::error::Elapsed>(), "{e}");
    assert_settled(&pool);
    assert_settled(&slow_pool);
}

/// A request body that says when it is dropped (when the upload has ended).
struct Tracked<B> {
    inner: B,
    /// Dropped with the body, which resolves the receiver.
    _dropped: tokio::sync::oneshot::Sender<()>,
}

impl<B> Tracked<B> {
    fn new(inner: B) -> (Self, impl std::future::Future<Output = ()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let body = Tracked {
            inner,
            _dropped: tx,
        };
        (body, async move {
            let _ = rx.await;
        })
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Drops a `send` future after it was polled `polls` times, 1 ms apart (or when it completes
/// first; returns whether it did).
async fn send_and_cancel_after<B>(pool: &H2Pool, request: http::Request<B>, polls: usize) -> bool
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut fut = Box::pin(pool.send(0, request));
    for _ in 0..polls {
        let ready =
            std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx).is_ready()))
                .await;
        if ready {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

use std::future::Future as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_send_at_each_await_point_leaks_nothing() {
    // The backend holds every response head, so a send future is pending first while
    // connecting (TCP, handshake, PING), then while waiting for the head with its upload
    // running. Each round uses a new pool, so that each connects again, and cancels one poll
    // later than the round before, until three rounds were cancelled after the backend had
    // the stream.
    let server = TestServer::start(Config {
        hold: Hold::BeforeHead,
        hold_prefix: "/hold",
        ..Config::default()
    })
    .await;
    within(60, "cancellations", async {
        let (mut before_stream, mut after_stream) = (0, 0);
        let mut polls = 1;
        while after_stream < 3 {
            assert!(polls < 500, "the request never reached the backend");
            let pool = H2Pool::builder([server.addr()]).build().unwrap();
            let seen = Counters::get(&server.counters.requests);
            // A body that never ends (nothing is ever sent on `_tx`).
            let (_tx, body) = Channel::<Bytes, Infallible>::new(1);
            let (body, dropped) = Tracked::new(body);
            let request = http::Request::post("http://test/hold/c")
                .body(body)
                .unwrap();
            let done = send_and_cancel_after(&pool, request, polls).await;
            assert!(!done, "the head is held");
            // The upload (if it started) ends, and drops the request body.
            within(10, "the request body is dropped", dropped).await;
            assert_settled(&pool);
            if Counters::get(&server.counters.requests) > seen {
                after_stream += 1;
            } else {
                before_stream += 1;
            }
            polls += 1;
        }
        assert!(
            before_stream >= 1,
            "some rounds were cancelled while connecting"
        );
        server
            .counters
            .wait_until(|c| Counters::get(&c.active) == 0)
            .await;
    })
    .await;
    let pool = H2Pool::builder([server.addr()])
        .max_connections_per_backend(1)
        .max_streams_per_connection(1)
        .acquire_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    within(30, "cancellations while waiting for room", async {
        // Waiting for room: the only stream is taken by a held request.
        let p = pool.clone();
        let blocker = tokio::spawn(async move { p.send(0, empty_get("/hold/blocker")).await });
        server
            .counters
            .wait_until(|c| Counters::get(&c.active) >= 1)
            .await;
        for polls in 1..5 {
            let done = send_and_cancel_after(&pool, empty_get("/waits"), polls).await;
            assert!(!done, "no room while the blocker runs");
        }
        assert_eq!(pool.stats(0).unwrap().waiters, 0, "no waiter left behind");
        server.open_gate();
        let response = blocker.await.unwrap().unwrap();
        response.into_body().collect().await.unwrap();
        // Everything still works.
        let response = pool.send(0, empty_get("/after")).await.unwrap();
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            "/after"
        );
    })
    .await;
    server
        .counters
        .wait_until(|c| Counters::get(&c.active) == 0)
        .await;
    assert_settled(&pool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_while_the_upload_waits_for_flow_control_resets_the_stream() {
    // `/stall` reads nothing: the upload fills the backend's 64 KiB stream window and then
    // waits for capacity that never comes.
    let server = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([server.addr()]).build().unwrap();
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(1);
    let producer = tokio::spawn(async move {
        let mut sent = 0;
        while tx
            .send_data(Bytes::from(vec![7u8; 16 * 1024]))
            .await
            .is_ok()
        {
            sent += 16 * 1024;
        }
        sent // the upload dropped the body
    });
    let request = http::Request::post("http://test/stall").body(body).unwrap();
    let send = pool.send(0, request);
    // Pending for good: the backend never answers.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), send)
            .await
            .is_err(),
        "no answer from /stall"
    );
    let sent = within(10, "the upload ends", producer).await.unwrap();
    assert!(
        sent < MIB,
        "flow control held the upload back: {sent} bytes taken"
    );
    within(10, "the backend sees the reset", async {
        server
            .counters
            .wait_until(|c| Counters::get(&c.resets_seen) == 1)
            .await
    })
    .await;
    assert_settled(&pool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_reset_inside_the_response_body_is_retryable_only_for_idempotent_empty_requests() {
    let server = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([server.addr()]).build().unwrap();
    let response = within(10, "head", pool.send(0, empty_get("/reset-mid")))
        .await
        .expect("the head arrives");
    // The reset comes once the head is in hand.
    server.open_gate();
    let e = within(10, "body", response.into_body().collect())
        .await
        .expect_err("the body is cut");
    let is_internal_reset = |e: &H2Error| {
        matches!(e, H2Error::StreamReset { source, .. }
            if source.reason() == Some(h2::Reason::INTERNAL_ERROR))
    };
    assert!(is_internal_reset(&e), "{e:?}");
    assert!(
        e.is_retryable(),
        "a GET without a body may be sent again even if it was processed: {e:?}"
    );
    // The same reset for a POST with a body, and for a GET with a body: the backend may
    // have acted on them, and the pool does not hold their body to send it again.
    for method in [http::Method::POST, http::Method::GET] {
        let request = http::Request::builder()
            .method(method.clone())
            .uri("/reset-mid")
            .body(http_body_util::Full::new(Bytes::from_static(b"payload")))
            .unwrap();
        let e = match within(10, "request", pool.send(0, request)).await {
            Ok(response) => within(10, "body", response.into_body().collect())
                .await
                .expect_err("the body is cut"),
            Err(e) => e,
        };
        assert!(is_internal_reset(&e), "{method}: {e:?}");
        assert!(!e.is_retryable(), "{method}: may have been processed");
    }
    // The low-level path does not know the request: not retryable.
    let (response, _) = pool
        .send_request(
            0,
            http::Request::get("http://test/reset-mid")
                .body(())
                .unwrap(),
            true,
        )
        .await
        .unwrap();
    // The reset may overtake the head (the gate is open now).
    let e = match within(10, "head", response).await {
        Err(e) => e,
        Ok(response) => {
            let mut body = response.into_body();
            loop {
                match within(10, "data", body.data()).await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break e,
                    None => panic!("the body is cut"),
                }
            }
        }
    };
    let e = H2Error::from_h2(server.addr().into(), e);
    assert!(is_internal_reset(&e) && !e.is_retryable(), "{e:?}");
    // The connection still serves.
    let response = pool.send(0, empty_get("/ok")).await.unwrap();
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "/ok"
    );
    assert_settled(&pool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_request_body_is_a_request_body_error_and_not_retryable() {
    let server = TestServer::start(Config::default()).await;
    let pool = H2Pool::builder([server.addr()]).build().unwrap();
    let (mut tx, body) = Channel::<Bytes, std::io::Error>::new(1);
    tokio::spawn(async move {
        tx.send_data(Bytes::from_static(b"part")).await.unwrap();
        tx.abort(std::io::Error::other("client went away"));
    });
    let request = http::Request::post("http://test/echo").body(body).unwrap();
    let e = within(10, "send", pool.send(0, request))
        .await
        .expect_err("the body failed");
    assert!(matches!(e, H2Error::RequestBody(_)), "{e:?}");
    assert!(!e.is_retryable());
    assert_settled(&pool);
}

#[test]
fn body_and_service_future_are_send_and_body_is_unpin() {
    fn send_unpin<T: Send + Unpin + 'static>() {}
    send_unpin::<Body>();
    send_unpin::<tokenpool::h2::ServiceFuture>();
}
