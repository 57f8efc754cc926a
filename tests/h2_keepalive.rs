//! Keepalive PING (issue 11): a connection blackholed without FIN or RST is found by its
//! unanswered PING and replaced; requests then succeed on a fresh connection.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{get, within, Config, TestServer};
use tokenpool::h2::{H2Error, H2Pool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP relay to a backend that can go dark: [`Relay::blackhole`] makes every connection
/// open at that moment stop forwarding in both directions while its sockets stay open (a
/// NAT that lost its mapping); connections opened later forward normally.
struct Relay {
    addr: SocketAddr,
    /// Connections numbered below this are dark.
    dark_below: Arc<AtomicUsize>,
    opened: Arc<AtomicUsize>,
}

impl Relay {
    async fn start(backend: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dark_below = Arc::new(AtomicUsize::new(0));
        let opened = Arc::new(AtomicUsize::new(0));
        let (dark, count) = (Arc::clone(&dark_below), Arc::clone(&opened));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let Ok(upstream) = TcpStream::connect(backend).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (ur, uw) = upstream.into_split();
                tokio::spawn(pump(cr, uw, n, Arc::clone(&dark)));
                tokio::spawn(pump(ur, cw, n, Arc::clone(&dark)));
            }
        });
        Relay {
            addr,
            dark_below,
            opened,
        }
    }

    /// Every connection open now goes dark.
    fn blackhole(&self) {
        self.dark_below
            .store(self.opened.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until EOF, dropping everything once connection `n` is dark.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    n: usize,
    dark_below: Arc<AtomicUsize>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok(read) = from.read(&mut buf).await else {
            return;
        };
        if read == 0 {
            return;
        }
        if n < dark_below.load(Ordering::SeqCst) {
            continue; // swallowed: no FIN, no RST, no data
        }
        if to.write_all(&buf[..read]).await.is_err() {
            return;
        }
    }
}

const INTERVAL: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_millis(100);

async fn wait_until_gone(pool: &H2Pool) -> Duration {
    let start = Instant::now();
    within(10, "dead connection leaves the pool", async {
        while pool.stats(0).unwrap().available != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_blackholed_connection_is_found_with_while_idle_and_replaced() {
    let server = TestServer::start(Config::default()).await;
    let relay = Relay::start(server.addr()).await;
    let pool = H2Pool::builder([relay.addr])
        .keep_alive_interval(INTERVAL)
        .keep_alive_timeout(TIMEOUT)
        .keep_alive_while_idle(true)
        .build()
        .unwrap();
    pool.request(0, get("/warm")).await.unwrap();
    assert_eq!(pool.stats(0).unwrap().available, 1);
    relay.blackhole();
    let detected = wait_until_gone(&pool).await;
    eprintln!(
        "idle blackholed connection detected after {detected:?} (interval + timeout = {:?})",
        INTERVAL + TIMEOUT
    );
    // Generous bound for a loaded machine; the figure is printed above.
    assert!(detected < (INTERVAL + TIMEOUT) * 5, "{detected:?}");
    // The next request opens a fresh connection (not dark) and succeeds.
    let response = within(10, "fresh", pool.request(0, get("/fresh")))
        .await
        .unwrap();
    assert_eq!(response.body(), "/fresh");
    let s = pool.stats(0).unwrap();
    assert_eq!((s.available, s.in_use), (1, 0), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_while_idle_the_first_request_on_a_dark_connection_finds_it() {
    let server = TestServer::start(Config::default()).await;
    let relay = Relay::start(server.addr()).await;
    let pool = H2Pool::builder([relay.addr])
        .keep_alive_interval(INTERVAL)
        .keep_alive_timeout(TIMEOUT)
        .build()
        .unwrap();
    pool.request(0, get("/warm")).await.unwrap();
    relay.blackhole();
    // Idle: not checked, still pooled.
    tokio::time::sleep((INTERVAL + TIMEOUT) * 3).await;
    assert_eq!(pool.stats(0).unwrap().available, 1);
    // A request goes to the dark connection; keepalive finds it within interval + timeout.
    let start = Instant::now();
    let e = within(
        10,
        "request on the dark connection",
        pool.request(0, get("/dark")),
    )
    .await
    .unwrap_err();
    let took = start.elapsed();
    eprintln!("request on a dark connection failed after {took:?}: {e}");
    assert!(matches!(e, H2Error::ConnectionLost { .. }), "{e}");
    assert!(
        e.is_retryable(),
        "a GET without a body may be sent again: {e}"
    );
    assert!(took < (INTERVAL + TIMEOUT) * 5, "{took:?}");
    let response = within(10, "retry", pool.request(0, get("/retry")))
        .await
        .unwrap();
    assert_eq!(response.body(), "/retry");
    let s = pool.stats(0).unwrap();
    assert_eq!((s.available, s.in_use), (1, 0), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keepalive_a_blackholed_connection_stays_pooled() {
    let server = TestServer::start(Config::default()).await;
    let relay = Relay::start(server.addr()).await;
    let pool = H2Pool::builder([relay.addr])
        .keep_alive_interval(None)
        .build()
        .unwrap();
    pool.request(0, get("/warm")).await.unwrap();
    relay.blackhole();
    tokio::time::sleep((INTERVAL + TIMEOUT) * 3).await;
    // Nothing noticed: the next request would hang on it (not sent here).
    assert_eq!(pool.stats(0).unwrap().available, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn zero_keepalive_settings_are_rejected() {
    for builder in [
        H2Pool::builder([TestServer::unused_addr()]).keep_alive_interval(Duration::ZERO),
        H2Pool::builder([TestServer::unused_addr()]).keep_alive_timeout(Duration::ZERO),
    ] {
        let err = builder.build().expect_err("invalid");
        assert!(matches!(err, H2Error::InvalidConfig(_)), "{err}");
    }
}
