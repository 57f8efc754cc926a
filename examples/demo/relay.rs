//! A loopback TCP relay in front of a backend that can black-hole its connections: after
//! [`Relay::blackhole`], every connection open at that moment stops forwarding in both
//! directions while both its sockets stay open (no FIN, no RST), as when a NAT or a load
//! balancer loses its mapping; connections opened later forward normally. The demo uses it
//! to show the pool's keepalive PING finding dark connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// The relay's counts. Relaxed everywhere: each is a plain counter read for a report.
#[derive(Debug, Default)]
struct Counts {
    /// Connections accepted (numbered in this order from 0).
    opened: AtomicUsize,
    /// Connections numbered below this are dark.
    dark_below: AtomicUsize,
    /// Dark connections whose client side (the pool) has closed.
    dark_closed: AtomicUsize,
}

pub struct Relay {
    addr: SocketAddr,
    counts: Arc<Counts>,
}

impl Relay {
    /// Listens on a free loopback port and relays every connection to `backend`.
    pub async fn start(backend: SocketAddr) -> std::io::Result<Relay> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        let c = Arc::clone(&counts);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let n = c.opened.fetch_add(1, Ordering::Relaxed);
                let Ok(upstream) = TcpStream::connect(backend).await else {
                    continue;
                };
                let _ = upstream.set_nodelay(true);
                let _ = client.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (ur, uw) = upstream.into_split();
                tokio::spawn(pump(cr, uw, n, Arc::clone(&c), true));
                tokio::spawn(pump(ur, cw, n, Arc::clone(&c), false));
            }
        });
        Ok(Relay { addr, counts })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every connection open now goes dark; returns how many.
    pub fn blackhole(&self) -> usize {
        let open = self.counts.opened.load(Ordering::Relaxed);
        self.counts.dark_below.store(open, Ordering::Relaxed);
        open
    }

    /// How many dark connections the client side (the pool) has closed.
    pub fn dark_closed(&self) -> usize {
        self.counts.dark_closed.load(Ordering::Relaxed)
    }
}

/// Copies `from` to `to` until EOF, swallowing everything once connection `n` is dark.
/// `from_client`: `from` is the pool's side, whose close is counted for dark connections.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    n: usize,
    counts: Arc<Counts>,
    from_client: bool,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let read = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if n < counts.dark_below.load(Ordering::Relaxed) {
            continue; // swallowed: no data, no FIN, no RST
        }
        if to.write_all(&buf[..read]).await.is_err() {
            return;
        }
    }
    if from_client && n < counts.dark_below.load(Ordering::Relaxed) {
        counts.dark_closed.fetch_add(1, Ordering::Relaxed);
    }
    // Returning drops `to`, which passes the EOF on (FIN); the other direction ends on its
    // own.
}
