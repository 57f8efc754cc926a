//! The loopback h2c server and the HTTP/2 clients that `benches/end_to_end.rs` measures
//! by wall clock and `examples/instr_count.rs` by instructions (included in both with
//! `#[path]`; not a bench target of its own).
//!
//! Clients, by name: `h2pool` ([`H2Pool::request`], at most [`CONNS`] connections),
//! `h2pool_send` (the same pool through [`H2Pool::send`] with an empty body, the response
//! read with `BodyExt::collect`), `h2pool_dispatch` (the same through [`H2Pool::dispatch`]:
//! the picker, the retry budget and a copy of the head per attempt), `hyper_util`
//! (hyper-util's legacy `Client`, `http2_only(true)`), `raw_h2_1conn` / `raw_h2_4conn`
//! (`h2::client::SendRequest` on 1 or 4 fixed connections; worker `i` uses connection
//! `i % n`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tokenpool::h2::H2Pool;

/// Every client's name.
pub const CLIENTS: [&str; 6] = [
    "h2pool",
    "h2pool_send",
    "h2pool_dispatch",
    "hyper_util",
    "raw_h2_1conn",
    "raw_h2_4conn",
];

/// The response body.
pub const BODY: &[u8] = b"hello, world!";
/// The most connections `h2pool` may open (as many as `raw_h2_4conn` has).
pub const CONNS: usize = 4;

/// Starts the h2c server on `rt`; returns its address.
pub fn server(rt: &tokio::runtime::Runtime) -> SocketAddr {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                tokio::spawn(async move {
                    let mut conn = h2::server::handshake(tcp).await?;
                    while let Some(next) = conn.accept().await {
                        let (_request, mut respond) = next?;
                        let mut body = respond.send_response(http::Response::new(()), false)?;
                        body.send_data(Bytes::from_static(BODY), true)?;
                    }
                    Ok::<_, h2::Error>(())
                });
            }
        });
        addr
    })
}

pub type HyperClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
>;

/// An HTTP/2 client under test; `request` returns once the whole response body is read.
#[derive(Clone)]
pub enum Client {
    H2Pool(H2Pool),
    H2PoolSend(H2Pool),
    H2PoolDispatch(H2Pool),
    /// Boxed: the client is large, and cloned once per worker task only.
    HyperUtil(Box<HyperClient>),
    RawH2(Arc<Vec<h2::client::SendRequest<Bytes>>>),
}

impl Client {
    pub async fn request(&self, uri: &http::Uri, worker: usize) {
        match self {
            Client::H2Pool(pool) => {
                let req = http::Request::get(uri.clone())
                    .body(Bytes::new())
                    .expect("request");
                let resp = pool.request(0, req).await.expect("h2pool request");
                assert_eq!(resp.body().len(), BODY.len());
            }
            Client::H2PoolSend(pool) => {
                let req = http::Request::get(uri.clone())
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let resp = pool.send(0, req).await.expect("h2pool send");
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                assert_eq!(body.len(), BODY.len());
            }
            Client::H2PoolDispatch(pool) => {
                let req = http::Request::get(uri.clone())
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let resp = pool.dispatch(req).await.expect("h2pool dispatch");
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                assert_eq!(body.len(), BODY.len());
            }
            Client::HyperUtil(client) => {
                let req = http::Request::get(uri.clone())
                    .body(Empty::new())
                    .expect("request");
                let resp = client.request(req).await.expect("hyper-util request");
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                assert_eq!(body.len(), BODY.len());
            }
            Client::RawH2(conns) => {
                let sr = conns[worker % conns.len()].clone();
                let mut sr = sr.ready().await.expect("ready");
                let req = http::Request::get(uri.clone()).body(()).expect("request");
                let (resp, _) = sr.send_request(req, true).expect("send");
                let mut body = resp.await.expect("response").into_body();
                let mut n = 0;
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.expect("data");
                    n += chunk.len();
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                assert_eq!(n, BODY.len());
            }
        }
    }
}

pub async fn client(name: &str, addr: SocketAddr) -> Client {
    match name {
        "h2pool" | "h2pool_send" | "h2pool_dispatch" => {
            let pool = H2Pool::builder([addr])
                .max_connections_per_backend(CONNS)
                .build()
                .expect("h2pool");
            match name {
                "h2pool" => Client::H2Pool(pool),
                "h2pool_send" => Client::H2PoolSend(pool),
                _ => Client::H2PoolDispatch(pool),
            }
        }
        "hyper_util" => Client::HyperUtil(Box::new(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        )),
        "raw_h2_1conn" | "raw_h2_4conn" => {
            let n = if name == "raw_h2_1conn" { 1 } else { 4 };
            let mut conns = Vec::new();
            for _ in 0..n {
                let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
                tcp.set_nodelay(true).expect("nodelay");
                let (sr, conn) = h2::client::handshake(tcp).await.expect("handshake");
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                conns.push(sr);
            }
            Client::RawH2(Arc::new(conns))
        }
        other => unreachable!("unknown client {other}"),
    }
}

/// A tokio runtime with one worker thread, like one event loop of a proxy.
#[allow(dead_code)] // the benches' (instr_count runs everything on one runtime of its own)
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Sends `total` requests from `in_flight` tasks; returns the wall time and each request's
/// latency in nanoseconds.
#[allow(dead_code)] // the benches'
pub async fn run(
    c: &Client,
    uri: &http::Uri,
    in_flight: usize,
    total: u64,
) -> (Duration, Vec<u64>) {
    let left = Arc::new(AtomicU64::new(total));
    let start = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|worker| {
            let c = c.clone();
            let uri = uri.clone();
            let left = left.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                // Relaxed: only the count matters.
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let t = Instant::now();
                    c.request(&uri, worker).await;
                    lat.push(t.elapsed().as_nanos() as u64);
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total as usize);
    for t in tasks {
        all.extend(t.await.expect("worker"));
    }
    (start.elapsed(), all)
}
