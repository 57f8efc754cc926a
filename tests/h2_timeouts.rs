//! `H2Pool::send` time limits (`request_timeout`, `response_header_timeout`, the `Timeouts`
//! extension) against a backend that completes the handshake and then never answers: the
//! stream is reset with `CANCEL`, its place on the connection is freed, the upload stops and
//! the error says whether a retry is safe.
#![cfg(feature = "h2")]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Empty};
use tokenpool::h2::{H2Error, H2Pool, Timeouts};
use tokio::sync::mpsc;

/// Upper bound for each step, so that a hang fails instead of blocking the suite.
const LIMIT: Duration = Duration::from_secs(10);

/// What the stuck backend does with each request.
#[derive(Clone, Copy)]
enum Stuck {
    /// Never sends a response head.
    BeforeHead,
    /// Sends the head, then never a byte of body.
    AfterHead,
    /// Sends the head, then a small data frame every 2 ms without end: a reader slower than
    /// that always finds data ready.
    Endless,
}

/// An h2c backend that accepts every stream and then stalls as `mode` says; each stream's
/// reset reason (as the backend saw it) is sent on the returned channel.
async fn stuck_backend(mode: Stuck) -> (SocketAddr, mpsc::UnboundedReceiver<h2::Reason>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (resets, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let resets = resets.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    let resets = resets.clone();
                    tokio::spawn(async move {
                        // Keep the request body open (unread) so the client's upload stays
                        // blocked on it rather than being refused.
                        let _body = request.into_body();
                        // (`SendResponse::poll_reset` reports CANCEL at once once the
                        // head is sent, so after the head the body's stream is watched.)
                        let reason = match mode {
                            Stuck::BeforeHead => {
                                std::future::poll_fn(|cx| respond.poll_reset(cx)).await
                            }
                            Stuck::AfterHead => {
                                let Ok(mut send) =
                                    respond.send_response(http::Response::new(()), false)
                                else {
                                    return;
                                };
                                std::future::poll_fn(|cx| send.poll_reset(cx)).await
                            }
                            Stuck::Endless => {
                                let Ok(mut send) =
                                    respond.send_response(http::Response::new(()), false)
                                else {
                                    return;
                                };
                                loop {
                                    let reset = tokio::time::timeout(
                                        Duration::from_millis(2),
                                        std::future::poll_fn(|cx| send.poll_reset(cx)),
                                    );
                                    if let Ok(reason) = reset.await {
                                        break reason;
                                    }
                                    if send.send_data(Bytes::from_static(b"more"), false).is_err() {
                                        return;
                                    }
                                }
                            }
                        };
                        if let Ok(reason) = reason {
                            let _ = resets.send(reason);
                        }
                    });
                }
            });
        }
    });
    (addr, rx)
}

fn get() -> http::Request<Empty<Bytes>> {
    http::Request::get("/stuck").body(Empty::new()).unwrap()
}

async fn next_reset(rx: &mut mpsc::UnboundedReceiver<h2::Reason>) -> h2::Reason {
    tokio::time::timeout(LIMIT, rx.recv())
        .await
        .expect("the backend saw the stream reset")
        .expect("backend running")
}

/// No stream counted, no slot held: the place the timed-out request had is free.
async fn assert_freed(pool: &H2Pool) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let s = pool.stats(0).unwrap();
        if pool.streams_in_flight(0).unwrap() == 0 && s.in_use == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream or slot still held: {s:?}, {} streams in flight",
            pool.streams_in_flight(0).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_header_timeout_resets_the_stream_and_frees_its_place() {
    let (addr, mut resets) = stuck_backend(Stuck::BeforeHead).await;
    // One connection with room for one stream: the second request is served only if the
    // first one's place was given back.
    let pool = H2Pool::builder([addr])
        .max_connections_per_backend(1)
        .max_streams_per_connection(1)
        .acquire_timeout(Duration::from_secs(5))
        .response_header_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    for round in 0..2 {
        let err = tokio::time::timeout(LIMIT, pool.send(0, get()))
            .await
            .expect("send ends")
            .unwrap_err();
        assert!(
            matches!(&err, H2Error::ResponseHeaderTimeout { addr: a, timeout }
                if *a == addr && *timeout == Duration::from_millis(100)),
            "round {round}: {err:?}"
        );
        assert!(!err.is_retryable(), "the backend may be processing it");
        assert_eq!(next_reset(&mut resets).await, h2::Reason::CANCEL);
        assert_freed(&pool).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_before_the_head_is_sent_is_retryable() {
    let (addr, _resets) = stuck_backend(Stuck::BeforeHead).await;
    let pool = H2Pool::builder([addr])
        .max_connections_per_backend(1)
        .max_streams_per_connection(1)
        .acquire_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // The only stream is taken by a request with no limit of its own...
    let first = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.send(0, get()).await })
    };
    while pool.streams_in_flight(0).unwrap() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ...so this one waits for room, and its own limit ends the wait long before the
    // acquire timeout would.
    let mut request = get();
    request.extensions_mut().insert(Timeouts {
        request: Some(Duration::from_millis(100)),
        response_header: None,
    });
    assert_eq!(pool.stats(0).unwrap().waiters, 0);
    let err = tokio::time::timeout(LIMIT, pool.send(0, request))
        .await
        .expect("the request limit ends the wait")
        .unwrap_err();
    assert!(
        matches!(err, H2Error::RequestTimeout { sent: false, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable(), "nothing was sent");
    assert_eq!(
        pool.stats(0).unwrap().waiters,
        0,
        "the waiter left the queue"
    );
    assert_eq!(
        pool.streams_in_flight(0).unwrap(),
        1,
        "the first one still runs"
    );
    first.abort();
    let _ = first.await;
    assert_freed(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_bounds_the_response_body() {
    let (addr, mut resets) = stuck_backend(Stuck::AfterHead).await;
    let pool = H2Pool::builder([addr])
        .request_timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let response = tokio::time::timeout(LIMIT, pool.send(0, get()))
        .await
        .expect("send ends")
        .expect("the head comes in time");
    assert_eq!(pool.streams_in_flight(0).unwrap(), 1);
    let err = tokio::time::timeout(LIMIT, response.into_body().collect())
        .await
        .expect("the body ends")
        .unwrap_err();
    assert!(
        matches!(err, H2Error::RequestTimeout { sent: true, .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert_eq!(next_reset(&mut resets).await, h2::Reason::CANCEL);
    assert_freed(&pool).await;
}

/// The limit holds for a body that keeps coming too: a reader slower than the backend finds
/// a frame ready at every poll, and the body still fails once the limit has run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_bounds_a_response_body_that_never_pauses() {
    let (addr, mut resets) = stuck_backend(Stuck::Endless).await;
    let pool = H2Pool::builder([addr])
        .request_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let response = tokio::time::timeout(LIMIT, pool.send(0, get()))
        .await
        .expect("send ends")
        .expect("the head comes in time");
    let mut body = response.into_body();
    // Let frames pile up (past the limit) and read slower than they come, so that no read
    // has to wait: the body never returns `Pending`.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let frames = async {
        let mut frames = 0usize;
        loop {
            match body.frame().await {
                Some(Ok(_)) => frames += 1,
                Some(Err(e)) => return (frames, e),
                None => panic!("an endless body ended"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (frames, err) = tokio::time::timeout(LIMIT, frames)
        .await
        .expect("the limit ends the body");
    eprintln!("{frames} frames read before the limit took effect");
    assert!(
        matches!(err, H2Error::RequestTimeout { sent: true, .. }),
        "{err:?}"
    );
    assert_eq!(next_reset(&mut resets).await, h2::Reason::CANCEL);
    assert_freed(&pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_stops_the_upload_of_an_endless_body() {
    let (addr, mut resets) = stuck_backend(Stuck::BeforeHead).await;
    let pool = H2Pool::builder([addr]).build().unwrap();
    // A request body that sends one chunk and then never ends (a slow client).
    let (mut tx, body) = Channel::<Bytes, std::io::Error>::new(1);
    tx.send_data(Bytes::from_static(b"x")).await.unwrap();
    let mut request = http::Request::post("/upload").body(body).unwrap();
    request.extensions_mut().insert(Timeouts {
        request: None,
        response_header: Some(Duration::from_millis(100)),
    });
    let err = tokio::time::timeout(LIMIT, pool.send(0, request))
        .await
        .expect("send ends")
        .unwrap_err();
    assert!(
        matches!(err, H2Error::ResponseHeaderTimeout { .. }),
        "{err:?}"
    );
    assert_eq!(next_reset(&mut resets).await, h2::Reason::CANCEL);
    // The upload task dropped the body: sending more fails once the receiver is gone (and
    // would block for good, the channel being full, if it were still held).
    tokio::time::timeout(LIMIT, async {
        while tx.send_data(Bytes::from_static(b"y")).await.is_ok() {}
    })
    .await
    .expect("the upload stopped and dropped the request body");
    assert_freed(&pool).await;
}

#[tokio::test]
async fn zero_timeouts_are_rejected() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for b in [
        H2Pool::builder([addr]).request_timeout(Duration::ZERO),
        H2Pool::builder([addr]).response_header_timeout(Duration::ZERO),
    ] {
        assert!(matches!(b.build(), Err(H2Error::InvalidConfig(_))));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_applies_the_timeouts_extension() {
    use tower::ServiceExt;

    let (addr, mut resets) = stuck_backend(Stuck::BeforeHead).await;
    // No pool-wide limit: the extension alone bounds the request.
    let pool = H2Pool::builder([addr]).build().unwrap();
    let mut request = get();
    request.extensions_mut().insert(Timeouts {
        request: Some(Duration::from_millis(100)),
        response_header: None,
    });
    let err = tokio::time::timeout(LIMIT, pool.clone().oneshot(request))
        .await
        .expect("the call ends")
        .unwrap_err();
    assert!(
        matches!(err, H2Error::RequestTimeout { sent: true, timeout, .. }
            if timeout == Duration::from_millis(100)),
        "{err:?}"
    );
    assert_eq!(next_reset(&mut resets).await, h2::Reason::CANCEL);
    assert_freed(&pool).await;
}
