//! Connect coalescing: a request that finds no connection with room waits for a connect
//! already in progress to its backend rather than opening one more (RFC 9113 §9.1: clients
//! should not open more than one connection to a server where one will do).
//!
//! Each backend has one [`Coalescer`]. A connect in progress ([`Connecting`]) is expected to
//! carry as many streams as the backend allowed on its last connection (its
//! `SETTINGS_MAX_CONCURRENT_STREAMS` capped by `max_streams_per_connection`; the cap alone
//! until a first connection told). Those are its *seats*: the request that connects takes
//! one, and each request that joins takes one. A request that finds every seat of every
//! connect in progress taken starts a connect of its own, unless `max_connecting` connects
//! are in progress already: then it joins one anyway (over its seats) and, when it
//! completes, competes for room like any other request.
//!
//! A joined request waits for its connect's outcome (bounded by its acquire deadline):
//! - *connected*: it goes back to the start of admission and takes a stream on the new
//!   connection (which has room for every seat), or, if it lost the race for that room,
//!   joins or connects again;
//! - *failed*: it fails with the same cause at once ([`H2Error::JoinedConnectFailed`]), so a
//!   burst to a backend that refuses connections costs one connect attempt, not one each;
//! - *cancelled* (the connecting request was dropped): it goes back to the start.
//!
//! Joining and starting are decided under one small mutex per backend, taken only when no
//! pooled connection had room: the request path that finds an available connection never
//! touches it.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use std::time::Instant;

use super::counters::{bump, millis_since, Counters};
use super::health::{BackendHealth, EjectionPolicy, Gate, Health};
use super::H2Error;
use crate::sync::lock;

/// The outcome of a connect, as its joiners see it.
#[derive(Clone)]
pub(super) enum Outcome {
    /// Still connecting.
    Pending,
    /// The connection is in the pool.
    Connected,
    /// The connect failed: what its request was told, and whether that was retryable.
    Failed(Arc<(String, bool)>),
    /// The connecting request was dropped before the connect ended.
    Cancelled,
}

/// The connects in progress to one backend.
pub(super) struct Coalescer {
    state: Mutex<State>,
    /// At most this many connects in progress at once (`max_connecting_per_backend`).
    max_connecting: usize,
    policy: EjectionPolicy,
    watched: Watched,
}

/// What the coalescer reports its backend's connects and ejections to.
pub(super) struct Watched {
    pub(super) backend: usize,
    pub(super) counters: Arc<Counters>,
    /// The pool's epoch, for the lock-free ejection deadline.
    pub(super) epoch: Instant,
}

struct State {
    connecting: Vec<Connecting>,
    /// Consecutive connect failures and ejection (see `health`).
    health: Health,
    /// Streams a new connection is expected to carry: the last connection's stream limit, or
    /// `max_streams_per_connection` before the first.
    expected: usize,
    /// Identifies connects, so that a finished one removes itself and no other.
    next_id: u64,
}

/// One connect in progress.
struct Connecting {
    id: u64,
    /// Requests counting on it: the connecting one and every joiner.
    seats: usize,
    outcome: watch::Sender<Outcome>,
}

/// What [`Coalescer::join_or_start`] decided.
pub(super) enum Decision<R> {
    /// Wait for a connect in progress.
    Join(Joined),
    /// Connect into this reservation; report the outcome through the guard.
    Start(R, ConnectGuard),
    /// Nothing to join and no empty slot: wait for the pool.
    Wait,
    /// The backend is ejected: no connect before `until`.
    Ejected(Ejected),
}

/// The backend is ejected (see `health`): when the next connect is allowed, and after how
/// many failures.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ejected {
    pub(super) until: Instant,
    pub(super) failures: u32,
}

/// A request waiting for a connect in progress.
pub(super) struct Joined {
    outcome: watch::Receiver<Outcome>,
}

/// Held by the request that connects: reports the outcome to the joiners when finished, or
/// [`Outcome::Cancelled`] when dropped unfinished. Either way the connect leaves the list.
#[must_use = "dropping the guard reports the connect as cancelled"]
pub(super) struct ConnectGuard {
    coalescer: Arc<Coalescer>,
    id: u64,
    outcome: Option<watch::Sender<Outcome>>,
}

impl Coalescer {
    pub(super) fn new(
        expected: usize,
        max_connecting: usize,
        policy: EjectionPolicy,
        watched: Watched,
    ) -> Coalescer {
        Coalescer {
            state: Mutex::new(State {
                connecting: Vec::new(),
                health: Health::default(),
                expected: expected.max(1),
                next_id: 0,
            }),
            max_connecting: max_connecting.max(1),
            policy,
            watched,
        }
    }

    /// Joins a connect in progress with a free seat; else, unless the backend is ejected,
    /// starts one in the slot `reserve` gives if fewer than `max_connecting` are in progress
    /// (only one while probing an ejected backend); else joins the connect with the fewest
    /// seats taken; else (nothing in progress, no empty slot) says to wait.
    pub(super) fn join_or_start<R>(
        self: &Arc<Self>,
        reserve: impl FnOnce() -> Option<R>,
    ) -> Decision<R> {
        let mut s = lock(&self.state);
        let expected = s.expected;
        if let Some(c) = s.connecting.iter_mut().find(|c| c.seats < expected) {
            c.seats += 1;
            return Decision::Join(Joined {
                outcome: c.outcome.subscribe(),
            });
        }
        let may_start = match s.health.gate(Instant::now()) {
            Gate::Open => s.connecting.len() < self.max_connecting,
            // One probe at a time.
            Gate::Probe => s.connecting.is_empty(),
            Gate::Ejected { until, failures } => {
                if s.connecting.is_empty() {
                    return Decision::Ejected(Ejected { until, failures });
                }
                false
            }
        };
        if may_start {
            if let Some(reservation) = reserve() {
                let guard = self.register(&mut s);
                return Decision::Start(reservation, guard);
            }
        }
        match s.connecting.iter_mut().min_by_key(|c| c.seats) {
            Some(c) => {
                c.seats += 1;
                Decision::Join(Joined {
                    outcome: c.outcome.subscribe(),
                })
            }
            None => Decision::Wait,
        }
    }

    /// Registers a connect that did not come through [`join_or_start`](Self::join_or_start)
    /// (a waiter handed an empty slot), unless the backend is ejected: joiners may count on
    /// it too.
    pub(super) fn start(self: &Arc<Self>) -> Result<ConnectGuard, Ejected> {
        let mut s = lock(&self.state);
        if let Gate::Ejected { until, failures } = s.health.gate(Instant::now()) {
            return Err(Ejected { until, failures });
        }
        Ok(self.register(&mut s))
    }

    fn register(self: &Arc<Self>, s: &mut State) -> ConnectGuard {
        // Relaxed: a gauge (see `counters`).
        self.watched
            .counters
            .connecting
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = s.next_id;
        s.next_id += 1;
        let (tx, _) = watch::channel(Outcome::Pending);
        s.connecting.push(Connecting {
            id,
            seats: 1,
            outcome: tx.clone(),
        });
        ConnectGuard {
            coalescer: Arc::clone(self),
            id,
            outcome: Some(tx),
        }
    }

    /// The backend's health and connects in progress.
    pub(super) fn health(&self) -> BackendHealth {
        let s = lock(&self.state);
        s.health.snapshot(s.connecting.len())
    }

    fn finish(&self, id: u64, how: Finish) {
        let w = &self.watched;
        let mut s = lock(&self.state);
        let before = s.connecting.len();
        s.connecting.retain(|c| c.id != id);
        if s.connecting.len() < before {
            // Relaxed: a gauge (see `counters`).
            w.counters
                .connecting
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        match how {
            Finish::Connected(limit) => {
                s.expected = limit.max(1);
                let was_ejected = s.health.snapshot(0).ejected_until.is_some();
                s.health.succeeded();
                if was_ejected {
                    w.counters
                        .ejected_until_ms
                        .store(0, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(
                        backend = w.backend,
                        "backend restored: a probe connect succeeded"
                    );
                }
            }
            Finish::Failed { counts: true } => {
                if let Some(until) = s.health.failed(Instant::now(), &self.policy) {
                    bump(&w.counters.ejections);
                    // At least 1: 0 means "not ejected".
                    let until_ms = millis_since(w.epoch, until).max(1);
                    w.counters
                        .ejected_until_ms
                        .store(until_ms, std::sync::atomic::Ordering::Relaxed);
                    let failures = s.health.snapshot(0).consecutive_failures;
                    let backoff_ms = until.saturating_duration_since(Instant::now()).as_millis();
                    tracing::warn!(
                        backend = w.backend,
                        failures,
                        backoff_ms,
                        "backend ejected after consecutive connect failures"
                    );
                }
            }
            Finish::Failed { counts: false } | Finish::Cancelled => {}
        }
    }
}

/// How a connect ended, for the coalescer's bookkeeping.
enum Finish {
    Connected(usize),
    /// `counts`: a failure of the backend (connect, TLS or HTTP/2 handshake), which counts
    /// towards its ejection.
    Failed {
        counts: bool,
    },
    Cancelled,
}

impl Joined {
    /// The connect's outcome, once it is no longer pending.
    pub(super) async fn outcome(mut self) -> Outcome {
        match self
            .outcome
            .wait_for(|o| !matches!(o, Outcome::Pending))
            .await
        {
            Ok(o) => o.clone(),
            // The guard always reports before its sender goes; a closed channel without a
            // report cannot happen, but would mean the connect is over.
            Err(_) => Outcome::Cancelled,
        }
    }
}

impl ConnectGuard {
    /// The connect succeeded; `limit` is the new connection's stream limit, which the next
    /// connects are expected to offer.
    pub(super) fn connected(mut self, limit: usize) {
        self.coalescer.finish(self.id, Finish::Connected(limit));
        if let Some(tx) = self.outcome.take() {
            tx.send_replace(Outcome::Connected);
        }
    }

    /// The connect failed with `error`; the joiners fail with its description (an
    /// [`H2Error`] carries sources that cannot be cloned).
    pub(super) fn failed(mut self, error: &H2Error) {
        let counts = matches!(
            error,
            H2Error::Connect { .. } | H2Error::ConnectTimeout { .. } | H2Error::Handshake { .. }
        );
        self.coalescer.finish(self.id, Finish::Failed { counts });
        if let Some(tx) = self.outcome.take() {
            let failed = Arc::new((error.to_string(), error.is_retryable()));
            tx.send_replace(Outcome::Failed(failed));
        }
    }
}

impl Drop for ConnectGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.outcome.take() {
            self.coalescer.finish(self.id, Finish::Cancelled);
            tx.send_replace(Outcome::Cancelled);
        }
    }
}
