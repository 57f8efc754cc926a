//! Issue 13's descriptor-exhaustion attack, in a test binary of its own (it lowers the
//! process's descriptor limit): idle connections fill the descriptor table, `accept` fails
//! with EMFILE, and the proxy backs off (no spin, no log storm) and serves a new client as
//! soon as descriptors are free again.
#![cfg(all(feature = "h2", unix))]

#[path = "../examples/proxy/backend.rs"]
mod backend;
#[path = "../examples/proxy/server.rs"]
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend::Backend;
use server::Limits;
use tokenpool::h2::H2Pool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Descriptors open in this process now.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Lowers this process's soft descriptor limit to `n`.
fn limit_descriptors(n: u64) {
    let limit = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: `setrlimit` reads the struct we pass; it touches no other memory.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// A plain HTTP/1.1 GET through the proxy; the status line.
async fn get(addr: SocketAddr) -> std::io::Result<String> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(b"GET /after HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out);
    Ok(text.lines().next().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_exhaustion_backs_off_without_a_log_storm_and_recovers() {
    let backend = Backend::start(LOOPBACK, "b").await.unwrap();
    let pool = H2Pool::builder([backend.addr()]).build().unwrap();
    // The connection cap is far above the descriptor limit: the table fills first.
    let proxy = server::Proxy::with_limits(
        pool,
        Limits {
            max_client_connections: 10_000,
            ..Limits::default()
        },
    );
    let listener = tokio::net::TcpListener::bind(LOOPBACK).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve(listener, Arc::clone(&proxy), async {
        let _ = stopped.await;
    }));
    // Warm the backend connection, so serving later needs no new descriptor for it.
    assert!(get(addr).await.unwrap().contains("200"));

    limit_descriptors(open_descriptors() as u64 + 40);
    // Idle clients until the proxy cannot accept any more (each accepted one costs the
    // process a descriptor on both sides; the last ones wait in the backlog).
    let mut idle = Vec::new();
    for _ in 0..200 {
        match TcpStream::connect(addr).await {
            Ok(tcp) => idle.push(tcp),
            Err(_) => break,
        }
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = proxy.counters();
    let took = start.elapsed().as_secs_f64();
    eprintln!(
        "{} idle clients; in {took:.1} s: {} failed accepts, {} log lines",
        idle.len(),
        during.accept_failures,
        during.accept_failure_logs
    );
    assert!(
        during.accept_failures > 0,
        "the descriptor table never filled"
    );
    // Backing off (10 ms doubling to 1 s): a handful of tries per second, not a spin.
    assert!(
        during.accept_failures <= 20,
        "{} failed accepts",
        during.accept_failures
    );
    // At most one line per 5 s.
    assert!(
        during.accept_failure_logs <= 1,
        "{} log lines",
        during.accept_failure_logs
    );

    // Descriptors free again: a new client is served (within the back-off's 1 s).
    drop(idle);
    let served = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(status) = get(addr).await {
                if status.contains("200") {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        served.is_ok(),
        "no client served after the descriptors were freed"
    );
}
