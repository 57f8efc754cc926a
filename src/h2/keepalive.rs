//! Keepalive PING: finds a connection that a NAT, firewall or load-balancer failover has
//! blackholed (no FIN, no RST: the socket looks open, nothing arrives), which would otherwise
//! take new streams until TCP gives up, minutes later.
//!
//! Each connection's driver runs [`watch`] beside the connection: every `interval` (while
//! the connection carries streams, or always with `while_idle`) it sends a PING and waits
//! up to `timeout` for the acknowledgement. If none comes, [`watch`] resolves and the driver
//! drops the connection: it leaves the pool by its `ConnId` like any connection that ended,
//! its running streams fail, and the next request opens a fresh one. Detection takes at most
//! `interval + timeout` after the connection went dark (plus one scheduler tick).
//!
//! hyper-util's names and meanings: `keep_alive_interval`, `keep_alive_timeout`,
//! `keep_alive_while_idle`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::conn::Shared;

/// Default for [`H2PoolBuilder::keep_alive_interval`](super::H2PoolBuilder::keep_alive_interval).
pub const DEFAULT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Default for [`H2PoolBuilder::keep_alive_timeout`](super::H2PoolBuilder::keep_alive_timeout)
/// (hyper-util's).
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// When to PING, and how long to wait for the acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct KeepAlive {
    pub(super) interval: Duration,
    pub(super) timeout: Duration,
    /// PING connections that carry no stream too.
    pub(super) while_idle: bool,
}

/// Resolves when a PING went unacknowledged for `timeout`: the connection is dead. Never
/// resolves without a keepalive setting, if the connection's PING handle never arrives (the
/// connect failed), or once PINGs fail because the connection ended (the driver then ends
/// with it anyway).
pub(super) async fn watch(
    keep_alive: Option<KeepAlive>,
    ping_pong: oneshot::Receiver<::h2::PingPong>,
    shared: Arc<Shared>,
) {
    let Some(KeepAlive {
        interval,
        timeout,
        while_idle,
    }) = keep_alive
    else {
        return std::future::pending().await;
    };
    let Ok(mut ping_pong) = ping_pong.await else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate: the connect's own PING just came back
    loop {
        tick.tick().await;
        if !while_idle && shared.streams().in_flight == 0 {
            continue;
        }
        match tokio::time::timeout(timeout, ping_pong.ping(::h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            // The connection failed: the driver sees it end on its own.
            Ok(Err(_)) => return std::future::pending().await,
            Err(_elapsed) => return,
        }
    }
}
