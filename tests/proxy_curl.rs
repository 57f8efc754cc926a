//! The proxy example's service (`examples/proxy/server.rs`, included here) in front of real
//! h2c backends (`examples/proxy/backend.rs`), driven by real clients: curl, over h2c with
//! prior knowledge and over HTTP/1.1, raw bytes, and the demo's h2c load generator
//! (`examples/demo/loadgen.rs`) while backends send GOAWAY and restart.
//!
//! The curl tests need the `curl` binary; without it they fail and say how to install it.
#![cfg(feature = "h2")]

#[path = "../examples/proxy/backend.rs"]
mod backend;
#[path = "../examples/demo/loadgen.rs"]
mod loadgen;
#[path = "../examples/proxy/server.rs"]
mod server;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend::Backend;
use tokenpool::h2::H2Pool;

/// Upper bound for each test, so a hang fails instead of blocking the suite.
const TEST_LIMIT: Duration = Duration::from_secs(60);

const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A proxy serving on a loopback port.
struct RunningProxy {
    addr: SocketAddr,
    proxy: Arc<server::Proxy>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<bool>,
}

impl RunningProxy {
    async fn start(backends: &[SocketAddr]) -> RunningProxy {
        let pool = H2Pool::builder(backends.iter().copied())
            .max_connections_per_backend(2)
            .connect_timeout(Duration::from_secs(2))
            .acquire_timeout(Duration::from_secs(2))
            .build()
            .expect("pool config is valid");
        let listener = tokio::net::TcpListener::bind(LOOPBACK)
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let proxy = server::Proxy::new(pool);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(listener, Arc::clone(&proxy), async {
            let _ = stopped.await;
        }));
        RunningProxy {
            addr,
            proxy,
            stop,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the proxy and checks that it shut down cleanly (every client connection closed
    /// within the grace period) and that no pool slot stayed in use.
    async fn stop(self) -> server::CountersSnapshot {
        let _ = self.stop.send(());
        let clean = self.task.await.expect("serve task");
        assert!(
            clean,
            "client connections outlived the shutdown grace period"
        );
        let pool = self.proxy.pool();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let busy: usize = (0..pool.backends())
                .map(|b| {
                    let s = pool.stats(b).expect("known backend");
                    s.in_use + s.draining
                })
                .sum();
            if busy == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pool slots still in use after the requests ended:\n{}",
                self.proxy.report()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.proxy.counters()
    }
}

/// What curl printed: the body, then (from `-w`) HTTP version and status.
#[derive(Debug)]
struct CurlResult {
    body: Vec<u8>,
    version: String,
    status: u16,
}

/// Marker curl prints (with `-w`) after the body, followed by version and status.
const MARK: &str = "\n--curl-meta--";

/// Runs curl with `args` (plus `-sS --max-time 20` and the `-w` trailer), feeding `stdin`.
async fn curl(args: Vec<String>, stdin: Option<Vec<u8>>) -> CurlResult {
    tokio::task::spawn_blocking(move || curl_blocking(&args, stdin))
        .await
        .expect("curl thread")
}

fn curl_blocking(args: &[String], stdin: Option<Vec<u8>>) -> CurlResult {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "-w"])
        .arg(format!("{MARK}%{{http_version}} %{{http_code}}"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "curl is not installed, and these tests drive the proxy with it: \
             install curl (Debian/Ubuntu: `apt-get install -y curl`) and run them again"
        ),
        Err(e) => panic!("cannot run curl: {e}"),
    };
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        // Written from another thread so a full pipe cannot deadlock against stdout.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let out = child.wait_with_output().expect("curl output");
    assert!(
        out.status.success(),
        "curl {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = out.stdout;
    let at = stdout
        .windows(MARK.len())
        .rposition(|w| w == MARK.as_bytes())
        .unwrap_or_else(|| {
            panic!(
                "curl output lacks the -w trailer: {:?}",
                String::from_utf8_lossy(&stdout)
            )
        });
    let meta = String::from_utf8_lossy(&stdout[at + MARK.len()..]).to_string();
    let (version, status) = meta.split_once(' ').expect("version and status");
    CurlResult {
        body: stdout[..at].to_vec(),
        version: version.to_string(),
        status: status.trim().parse().expect("numeric status"),
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A body bigger than HTTP/2's default 64 KiB windows, so flow control has to work both ways.
fn big_body() -> Vec<u8> {
    (0..300_000u32).map(|i| (i % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_h2c_prior_knowledge_gets_backend_body_and_echo() {
    tokio::time::timeout(TEST_LIMIT, async {
        let b = Backend::start(LOOPBACK, "backend-a")
            .await
            .expect("backend");
        let proxy = RunningProxy::start(&[b.addr()]).await;

        let r = curl(
            args(&["--http2-prior-knowledge", &proxy.url("/hello?x=1")]),
            None,
        )
        .await;
        assert_eq!(r.version, "2");
        assert_eq!(r.status, 200);
        assert_eq!(String::from_utf8_lossy(&r.body), "backend-a GET /hello\n");

        // HEAD: the head only (curl fails on a body it did not expect).
        let r = curl(
            args(&["--http2-prior-knowledge", "-I", &proxy.url("/hello")]),
            None,
        )
        .await;
        assert_eq!((r.version.as_str(), r.status), ("2", 200));
        let head = String::from_utf8_lossy(&r.body).to_ascii_lowercase();
        assert!(head.contains("x-backend: backend-a"), "{head}");

        // A small body (read whole by the proxy, so it could be replayed) echoed back.
        let r = curl(
            args(&[
                "--http2-prior-knowledge",
                "--data-binary",
                "small body",
                &proxy.url("/echo"),
            ]),
            None,
        )
        .await;
        assert_eq!((r.version.as_str(), r.status), ("2", 200));
        assert_eq!(String::from_utf8_lossy(&r.body), "small body");

        // A request body larger than the stream window, streamed through and echoed back.
        let body = big_body();
        let r = curl(
            args(&[
                "--http2-prior-knowledge",
                "--data-binary",
                "@-",
                "-H",
                "content-type: application/octet-stream",
                &proxy.url("/echo"),
            ]),
            Some(body.clone()),
        )
        .await;
        assert_eq!((r.version.as_str(), r.status), ("2", 200));
        assert_eq!(r.body.len(), body.len());
        assert!(r.body == body, "echoed body differs");

        let c = proxy.stop().await;
        assert_eq!(c.requests, 4);
        assert_eq!(c.forwarded, vec![4]);
        assert_eq!(c.bad_gateway, 0);
        assert_eq!(b.requests(), 4);
        b.stop().await;
    })
    .await
    .expect("test finished within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http11_gets_backend_body_and_echo() {
    tokio::time::timeout(TEST_LIMIT, async {
        let b = Backend::start(LOOPBACK, "backend-b")
            .await
            .expect("backend");
        let proxy = RunningProxy::start(&[b.addr()]).await;

        // Hop-by-hop headers from the client must not reach the h2 backend (h2 rejects them).
        let r = curl(
            args(&[
                "--http1.1",
                "-H",
                "Connection: keep-alive, x-hop",
                "-H",
                "x-hop: 1",
                "-H",
                "Keep-Alive: timeout=5",
                &proxy.url("/plain"),
            ]),
            None,
        )
        .await;
        assert_eq!((r.version.as_str(), r.status), ("1.1", 200));
        assert_eq!(String::from_utf8_lossy(&r.body), "backend-b GET /plain\n");

        let r = curl(args(&["--http1.1", "-I", &proxy.url("/plain")]), None).await;
        assert_eq!((r.version.as_str(), r.status), ("1.1", 200));
        let head = String::from_utf8_lossy(&r.body).to_ascii_lowercase();
        assert!(head.contains("x-backend: backend-b"), "{head}");

        // Chunked HTTP/1.1 upload, echoed back through the h2 stream.
        let body = big_body();
        let r = curl(
            args(&[
                "--http1.1",
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                "@-",
                &proxy.url("/echo"),
            ]),
            Some(body.clone()),
        )
        .await;
        assert_eq!((r.version.as_str(), r.status), ("1.1", 200));
        assert_eq!(r.body.len(), body.len());
        assert!(r.body == body, "echoed body differs");

        let c = proxy.stop().await;
        assert_eq!(c.requests, 3);
        assert_eq!(c.forwarded, vec![3]);
        assert_eq!(c.bad_gateway, 0);
        assert_eq!(b.requests(), 3);
        b.stop().await;
    })
    .await
    .expect("test finished within its time limit");
}

/// Addresses on which nothing listens: bound to get free ports, then closed.
async fn closed_ports(n: usize) -> Vec<SocketAddr> {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(tokio::net::TcpListener::bind(LOOPBACK).await.expect("bind"));
    }
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_answers_502_with_reason() {
    tokio::time::timeout(TEST_LIMIT, async {
        let down = closed_ports(2).await;
        let proxy = RunningProxy::start(&down).await;

        for version in ["--http2-prior-knowledge", "--http1.1"] {
            let r = curl(args(&[version, &proxy.url("/anything")]), None).await;
            assert_eq!(r.status, 502, "{version}");
            let text = String::from_utf8_lossy(&r.body);
            assert!(
                text.starts_with("502 Bad Gateway: no backend could serve the request"),
                "{version}: {text}"
            );
        }

        let c = proxy.stop().await;
        assert_eq!(c.requests, 2);
        assert_eq!(c.bad_gateway, 2);
        assert_eq!(c.forwarded, vec![0, 0]);
    })
    .await
    .expect("test finished within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_skips_a_backend_that_is_down() {
    tokio::time::timeout(TEST_LIMIT, async {
        let b = Backend::start(LOOPBACK, "backend-up")
            .await
            .expect("backend");
        let down = closed_ports(1).await[0];
        let proxy = RunningProxy::start(&[down, b.addr()]).await;

        for i in 0..4 {
            let path = format!("/r{i}");
            let r = curl(args(&["--http2-prior-knowledge", &proxy.url(&path)]), None).await;
            assert_eq!(r.status, 200);
            assert_eq!(
                String::from_utf8_lossy(&r.body),
                format!("backend-up GET {path}\n")
            );
        }

        let c = proxy.stop().await;
        assert_eq!(c.requests, 4);
        assert_eq!(c.bad_gateway, 0);
        assert_eq!(c.forwarded, vec![0, 4]);
        assert_eq!(b.requests(), 4);
        b.stop().await;
    })
    .await
    .expect("test finished within its time limit");
}

/// A POST whose body is too large to be read whole first (so it streams) is still sent to
/// the next backend when the first one refuses the connection: no attempt had read its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_post_goes_whole_to_the_next_backend_when_the_first_is_down() {
    tokio::time::timeout(TEST_LIMIT, async {
        let b = Backend::start(LOOPBACK, "backend-up")
            .await
            .expect("backend");
        let down = closed_ports(1).await[0];
        // The round-robin cursor starts at backend 0: the first attempt goes to `down`.
        let proxy = RunningProxy::start(&[down, b.addr()]).await;

        let body = big_body();
        let r = curl(
            args(&[
                "--http2-prior-knowledge",
                "--data-binary",
                "@-",
                &proxy.url("/echo"),
            ]),
            Some(body.clone()),
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(r.body == body, "echoed body differs");

        let c = proxy.stop().await;
        assert_eq!((c.requests, c.retries, c.bad_gateway), (1, 1, 0));
        assert_eq!(c.forwarded, vec![0, 1]);
        assert_eq!(b.requests(), 1);
        b.stop().await;
    })
    .await
    .expect("test finished within its time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_connect_get_errors_and_the_proxy_keeps_serving() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    tokio::time::timeout(TEST_LIMIT, async {
        let b = Backend::start(LOOPBACK, "backend-c")
            .await
            .expect("backend");
        let proxy = RunningProxy::start(&[b.addr()]).await;

        // Not HTTP at all: hyper answers 400 (or just closes); either way the connection ends.
        let mut tcp = tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("connect");
        tcp.write_all(b"\x00\x01garbage \xff\xfe\r\n\r\n")
            .await
            .expect("write");
        let mut reply = Vec::new();
        let _ = tcp.read_to_end(&mut reply).await;
        assert!(
            reply.is_empty() || reply.starts_with(b"HTTP/1.1 400"),
            "unexpected reply to garbage: {:?}",
            String::from_utf8_lossy(&reply)
        );

        // A broken HTTP/2 preface.
        let mut tcp = tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("connect");
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n\x00\x00\x00\x09\x00\x00\x00\x00\x00")
            .await
            .expect("write");
        let _ = tcp.read_to_end(&mut Vec::new()).await;

        // CONNECT is refused, not forwarded.
        let mut tcp = tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("connect");
        tcp.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
            .await
            .expect("write");
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).await.expect("CONNECT answer");
        assert_eq!(&head, b"HTTP/1.1 405");
        drop(tcp);

        // Still serving.
        let r = curl(
            args(&["--http2-prior-knowledge", &proxy.url("/after")]),
            None,
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(String::from_utf8_lossy(&r.body), "backend-c GET /after\n");

        let c = proxy.stop().await;
        assert_eq!(c.forwarded, vec![1]);
        assert_eq!(b.requests(), 1);
        b.stop().await;
    })
    .await
    .expect("test finished within its time limit");
}

/// Polls `cond` until it holds, failing the test with `what` after `limit`.
async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The demo's scenario, driven by progress instead of a clock: under load from many
/// concurrent h2c streams (GETs and echoed POSTs), backend 0 sends GOAWAY and backend 1 is
/// stopped and started again on its port. Every request must end answered or with a counted
/// error, the only errors allowed are 502s for streamed-through POSTs cut off by the restart,
/// and both backends must serve again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_and_restart_under_load_lose_no_request() {
    use loadgen::{LoadConfig, LoadGen, Outcome};
    tokio::time::timeout(TEST_LIMIT, async {
        let b0 = Backend::start(LOOPBACK, "backend-0")
            .await
            .expect("backend 0");
        let b1 = Backend::start(LOOPBACK, "backend-1")
            .await
            .expect("backend 1");
        let proxy = RunningProxy::start(&[b0.addr(), b1.addr()]).await;
        let load = LoadGen::start(LoadConfig {
            target: proxy.addr,
            connections: 2,
            streams: 16,
            post_every: 4,
        })
        .await
        .expect("load generator connects");
        let counters = Arc::clone(load.counters());
        let ok = move || counters.snapshot().ok();
        let limit = Duration::from_secs(20);

        wait_until("200 requests succeeded", limit, || ok() >= 200).await;
        let b0_before = b0.requests();
        b0.goaway();
        let mark = ok();
        wait_until("backend 0 served 200 more after its GOAWAY", limit, || {
            b0.requests() >= b0_before + 200
        })
        .await;
        wait_until("200 more requests succeeded", limit, || ok() >= mark + 200).await;

        let b1 = b1
            .restart(Duration::from_millis(100))
            .await
            .expect("restart backend 1");
        let b1_before = b1.requests();
        wait_until("restarted backend 1 served 200 requests", limit, || {
            b1.requests() >= b1_before + 200
        })
        .await;

        let result = load.finish(Duration::from_secs(10)).await;
        let c = result.counts;
        assert_eq!(result.stuck_workers, 0);
        assert_eq!(c.unfinished(), 0, "lost requests: {c:?}");
        for o in Outcome::ALL {
            if !matches!(o, Outcome::Ok | Outcome::BadGateway) {
                assert_eq!(c.outcomes[o as usize], 0, "{}: {c:?}", o.label());
            }
        }
        // Only requests in flight on backend 1 when it was killed can fail: at most one per
        // concurrent stream.
        assert!(c.outcomes[Outcome::BadGateway as usize] <= 32, "{c:?}");
        assert!(c.ok() >= 600);

        let p = proxy.stop().await;
        assert_eq!(p.requests, c.started);
        b0.stop().await;
        b1.stop().await;
    })
    .await
    .expect("test finished within its time limit");
}
