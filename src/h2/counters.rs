//! Per-backend figures ([`Counters`]), counted lock-free where they happen, and their public
//! snapshot ([`BackendMetrics`], from [`H2Pool::metrics`](super::H2Pool::metrics)).
//!
//! Every counter is a relaxed atomic: each is a figure for operators, read on its own; none
//! orders any other memory (the pool's decisions rest on the slot words and the
//! per-connection stream counts, not on these). A snapshot reads them one after another, so
//! two figures of one snapshot can be a few events apart.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

/// The live counters of one backend, shared by its connections, its coalescer and the
/// request path.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) streams_in_flight: AtomicUsize,
    pub(super) connecting: AtomicUsize,
    pub(super) requests: AtomicU64,
    pub(super) connects: AtomicU64,
    pub(super) connect_failures: AtomicU64,
    pub(super) goaways: AtomicU64,
    pub(super) evicted_idle: AtomicU64,
    pub(super) evicted_lifetime: AtomicU64,
    pub(super) evicted_keepalive: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) acquire_timeouts: AtomicU64,
    pub(super) ejections: AtomicU64,
    /// While ejected: the ejection deadline in milliseconds after the pool's epoch (0: not
    /// ejected), for the picker to read without the coalescer's lock.
    pub(super) ejected_until_ms: AtomicU64,
}

/// Adds one to a counter.
pub(super) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

impl Counters {
    /// Whether the backend is ejected at `now_ms()` (milliseconds after the pool's epoch),
    /// which is asked only if the backend has an ejection deadline at all.
    pub(super) fn is_ejected(&self, now_ms: impl FnOnce() -> u64) -> bool {
        match self.ejected_until_ms.load(Relaxed) {
            0 => false,
            until => until > now_ms(),
        }
    }

    pub(super) fn snapshot(
        &self,
        stats: crate::Stats,
        now: Instant,
        epoch: Instant,
    ) -> BackendMetrics {
        let until = self.ejected_until_ms.load(Relaxed);
        let now_ms = millis_since(epoch, now);
        BackendMetrics {
            available: stats.available,
            in_use: stats.in_use,
            draining: stats.draining,
            waiters: stats.waiters,
            streams_in_flight: self.streams_in_flight.load(Relaxed),
            connects_in_progress: self.connecting.load(Relaxed),
            ejected: until > now_ms,
            requests: self.requests.load(Relaxed),
            connects: self.connects.load(Relaxed),
            connect_failures: self.connect_failures.load(Relaxed),
            goaways: self.goaways.load(Relaxed),
            evicted_idle: self.evicted_idle.load(Relaxed),
            evicted_lifetime: self.evicted_lifetime.load(Relaxed),
            evicted_keepalive: self.evicted_keepalive.load(Relaxed),
            retries: self.retries.load(Relaxed),
            acquire_timeouts: self.acquire_timeouts.load(Relaxed),
            ejections: self.ejections.load(Relaxed),
        }
    }
}

/// Milliseconds from `epoch` to `t` (0 before it), saturating.
pub(super) fn millis_since(epoch: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

/// A backend's figures at one moment, from [`H2Pool::metrics`](super::H2Pool::metrics): gauges
/// (what is now) and counters (what happened since the pool was built; they only grow). All
/// read without a lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendMetrics {
    /// Connections with room for another stream.
    pub available: usize,
    /// Slots in use: full connections, connects in progress, connections being looked at.
    pub in_use: usize,
    /// Connections marked to close once released.
    pub draining: usize,
    /// Requests waiting for room (every slot in use). With `available == 0` the backend is
    /// saturated: the figure to alert on.
    pub waiters: usize,
    /// Streams open to the backend through the pool, on all its connections.
    pub streams_in_flight: usize,
    /// Connects in progress.
    pub connects_in_progress: usize,
    /// Whether the backend is ejected now (see
    /// [`H2PoolBuilder::eject_after_connect_failures`](super::H2PoolBuilder::eject_after_connect_failures)).
    pub ejected: bool,
    /// Requests that asked for a stream to this backend (each attempt of a retried request
    /// counts).
    pub requests: u64,
    /// Connections opened (TCP, TLS and HTTP/2 handshake done).
    pub connects: u64,
    /// Connects that failed (including timeouts).
    pub connect_failures: u64,
    /// Connections found to have received GOAWAY from the backend.
    pub goaways: u64,
    /// Connections closed by the sweeper for being idle.
    pub evicted_idle: u64,
    /// Connections closed for being older than the maximum lifetime.
    pub evicted_lifetime: u64,
    /// Connections closed because a keepalive PING went unanswered.
    pub evicted_keepalive: u64,
    /// Attempts of requests retried on this backend after a failed attempt (anywhere).
    pub retries: u64,
    /// Requests that found no room within the acquire timeout.
    pub acquire_timeouts: u64,
    /// Times the backend was ejected.
    pub ejections: u64,
}

/// Publishes `m`, backend `label`'s figures, through the `metrics` facade: gauges for what
/// is now, counters (set to their absolute values) for what happened, each with a `backend`
/// label. Names are prefixed `tokenpool_h2_`.
#[cfg(feature = "metrics")]
pub(super) fn publish(label: &str, m: &BackendMetrics) {
    use metrics::{counter, gauge};
    let backend = label.to_string();
    for (name, value) in [
        ("tokenpool_h2_connections_available", m.available),
        ("tokenpool_h2_connections_in_use", m.in_use),
        ("tokenpool_h2_connections_draining", m.draining),
        ("tokenpool_h2_waiters", m.waiters),
        ("tokenpool_h2_streams_in_flight", m.streams_in_flight),
        ("tokenpool_h2_connects_in_progress", m.connects_in_progress),
        ("tokenpool_h2_ejected", usize::from(m.ejected)),
    ] {
        gauge!(name, "backend" => backend.clone()).set(value as f64);
    }
    for (name, value) in [
        ("tokenpool_h2_requests_total", m.requests),
        ("tokenpool_h2_connects_total", m.connects),
        ("tokenpool_h2_connect_failures_total", m.connect_failures),
        ("tokenpool_h2_goaways_total", m.goaways),
        ("tokenpool_h2_evicted_idle_total", m.evicted_idle),
        ("tokenpool_h2_evicted_lifetime_total", m.evicted_lifetime),
        ("tokenpool_h2_evicted_keepalive_total", m.evicted_keepalive),
        ("tokenpool_h2_retries_total", m.retries),
        ("tokenpool_h2_acquire_timeouts_total", m.acquire_timeouts),
        ("tokenpool_h2_ejections_total", m.ejections),
    ] {
        counter!(name, "backend" => backend.clone()).absolute(value);
    }
}
