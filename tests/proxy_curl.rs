//! The proxy example's service (`examples/proxy/server.rs`, included here) in front of real
//! h2c backends (`examples/proxy/backend.rs`), driven by a real client: curl, over h2c with
//! prior knowledge and over HTTP/1.1.
//!
//! These tests need the `curl` binary; without it they fail and say how to install it.
#![cfg(feature = "h2")]

#[path = "../examples/proxy/backend.rs"]
mod backend;
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
        assert_eq!(c.requests, 2);
        assert_eq!(c.forwarded, vec![2]);
        assert_eq!(c.bad_gateway, 0);
        assert_eq!(b.requests(), 2);
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
        assert_eq!(c.requests, 2);
        assert_eq!(c.bad_gateway, 0);
        assert_eq!(b.requests(), 2);
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
