//! Graceful shutdown: the connection drivers' shared state ([`Drivers`]) and what
//! [`H2Pool::shutdown`](super::H2Pool::shutdown) reports ([`ShutdownReport`]).
//!
//! Every connection's driver task registers here while it runs. Shutdown closes the pool
//! to new requests, drains every connection (idle ones close at once; h2 ends a connection
//! with GOAWAY once it has no stream and no handle), waits until the drivers have all ended
//! or the deadline has passed, and then tells the remaining drivers to stop: their
//! connections close with their streams still running.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{watch, Notify};

/// What [`H2Pool::shutdown`](super::H2Pool::shutdown) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Connections open when the shutdown began.
    pub connections: usize,
    /// Of those, the ones still carrying streams at the deadline, closed with their
    /// streams cut (those streams' requests fail with
    /// [`H2Error::ConnectionLost`](super::H2Error::ConnectionLost)). The others ended on
    /// their own: idle ones at once, busy ones when their last stream finished.
    pub cut_at_deadline: usize,
}

/// The connection driver tasks of one pool.
pub(super) struct Drivers {
    running: AtomicUsize,
    /// Notified each time a driver ends.
    ended: Notify,
    /// Set once the pool is shut down: no new request, no new connect.
    closed: AtomicBool,
    /// Set to `true` at the shutdown deadline: the drivers still running stop.
    cut: watch::Sender<bool>,
}

impl Default for Drivers {
    fn default() -> Self {
        Drivers {
            running: AtomicUsize::new(0),
            ended: Notify::new(),
            closed: AtomicBool::new(false),
            cut: watch::channel(false).0,
        }
    }
}

/// Held by a running driver task: counts it, and lets it learn of the deadline.
pub(super) struct DriverGuard {
    drivers: Arc<Drivers>,
}

impl Drivers {
    /// Registers a driver that starts now.
    pub(super) fn start(self: &Arc<Self>) -> DriverGuard {
        // SeqCst on the counter: `shutdown` reads it after its drain, and must not miss a
        // driver that started before (a plain count; nothing else is published by it).
        self.running.fetch_add(1, Ordering::SeqCst);
        DriverGuard {
            drivers: Arc::clone(self),
        }
    }

    /// Whether the pool was shut down.
    pub(super) fn is_closed(&self) -> bool {
        // Relaxed would do for a flag that only turns requests away early; SeqCst keeps the
        // reasoning simple (it is read once per request that needs a connection).
        self.closed.load(Ordering::SeqCst)
    }

    /// Closes the pool to new requests and connects.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Resolves when a driver ends after this call.
    pub(super) fn ended(&self) -> tokio::sync::futures::Notified<'_> {
        self.ended.notified()
    }

    pub(super) fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Waits until every driver has ended or `deadline` has passed; then cuts the rest.
    /// Returns how many were cut.
    pub(super) async fn wait_or_cut(&self, deadline: Instant) -> usize {
        let deadline = tokio::time::Instant::from_std(deadline);
        loop {
            // Register before looking, so that an end between the look and the wait is not
            // missed.
            let ended = self.ended.notified();
            if self.running() == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                break;
            }
        }
        let cut = self.running();
        self.cut.send_replace(true);
        // The cut drivers end at their next poll; wait for them so that the caller knows
        // every connection is closed when it returns.
        loop {
            let ended = self.ended.notified();
            if self.running() == 0 {
                return cut;
            }
            ended.await;
        }
    }
}

impl DriverGuard {
    /// Resolves once the shutdown deadline has passed with this driver still running.
    pub(super) async fn cut(&self) {
        let mut cut = self.drivers.cut.subscribe();
        // An error means the sender is gone, which cannot happen while a guard holds it.
        let _ = cut.wait_for(|cut| *cut).await;
    }
}

impl Drop for DriverGuard {
    fn drop(&mut self) {
        self.drivers.running.fetch_sub(1, Ordering::SeqCst);
        self.drivers.ended.notify_waiters();
    }
}
