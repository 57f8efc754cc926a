//! Backend health: consecutive connect failures eject a backend for a backoff that doubles
//! with each further failure (capped, jittered); when it runs out, one connect is let
//! through as a probe, and its success restores the backend.
//!
//! Passive only: health is learnt from the connects that requests make anyway. The state
//! lives beside the backend's connects in progress (see `coalesce`), under the same mutex,
//! which only requests that need a new connection take.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// Default for [`H2PoolBuilder::eject_after_connect_failures`](super::H2PoolBuilder::eject_after_connect_failures).
pub const DEFAULT_EJECT_AFTER_CONNECT_FAILURES: u32 = 3;
/// Default first backoff of [`H2PoolBuilder::ejection_backoff`](super::H2PoolBuilder::ejection_backoff).
pub const DEFAULT_EJECTION_BACKOFF: Duration = Duration::from_secs(1);
/// Default cap of [`H2PoolBuilder::ejection_backoff`](super::H2PoolBuilder::ejection_backoff).
pub const DEFAULT_MAX_EJECTION_BACKOFF: Duration = Duration::from_secs(30);

/// When a backend is ejected, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EjectionPolicy {
    /// Consecutive connect failures that eject the backend; 0: never ejected.
    pub(super) after: u32,
    /// The first ejection's backoff; each further failure doubles it.
    pub(super) initial: Duration,
    /// The backoff's cap.
    pub(super) max: Duration,
}

/// A backend's health as the pool sees it; from [`H2Pool::health`](super::H2Pool::health).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendHealth {
    /// Connects (TCP, TLS or HTTP/2 handshake) that failed in a row since the last one
    /// that succeeded.
    pub consecutive_failures: u32,
    /// While ejected: when the next connect (a probe) will be let through. Requests that
    /// need a new connection before then fail at once with
    /// [`H2Error::BackendEjected`](super::H2Error::BackendEjected); connections already open
    /// keep serving.
    pub ejected_until: Option<Instant>,
    /// Connects in progress right now.
    pub connects_in_progress: usize,
}

impl BackendHealth {
    /// Whether the backend is ejected at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }
}

/// What a request that needs a new connection may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gate {
    /// Connect.
    Open,
    /// The backoff has run out: one connect may probe the backend.
    Probe,
    /// Fail fast: no connect before `until`.
    Ejected { until: Instant, failures: u32 },
}

/// The health state machine of one backend.
#[derive(Debug, Default)]
pub(super) struct Health {
    failures: u32,
    ejected_until: Option<Instant>,
}

impl Health {
    pub(super) fn gate(&self, now: Instant) -> Gate {
        match self.ejected_until {
            None => Gate::Open,
            Some(until) if now < until => Gate::Ejected {
                until,
                failures: self.failures,
            },
            Some(_) => Gate::Probe,
        }
    }

    /// A connect failed at `now`; returns the new ejection deadline if this failure ejects
    /// the backend (again).
    pub(super) fn failed(&mut self, now: Instant, policy: &EjectionPolicy) -> Option<Instant> {
        self.failures = self.failures.saturating_add(1);
        if policy.after == 0 || self.failures < policy.after {
            return None;
        }
        let doublings = (self.failures - policy.after).min(30);
        let backoff = policy
            .initial
            .saturating_mul(1 << doublings)
            .min(policy.max);
        let until = now.checked_add(jitter(backoff)).unwrap_or(now);
        self.ejected_until = Some(until);
        Some(until)
    }

    /// A connect succeeded: the backend is healthy again.
    pub(super) fn succeeded(&mut self) {
        self.failures = 0;
        self.ejected_until = None;
    }

    pub(super) fn snapshot(&self, connects_in_progress: usize) -> BackendHealth {
        BackendHealth {
            consecutive_failures: self.failures,
            ejected_until: self.ejected_until,
            connects_in_progress,
        }
    }
}

/// `d` times a random factor in [0.75, 1.25): backends ejected together (one outage) come
/// back at different moments.
fn jitter(d: Duration) -> Duration {
    // `RandomState` is seeded per thread and advanced per instance: random enough to
    // spread retries, and no dependency.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    let r = (h.finish() >> 11) as f64 / (1u64 << 53) as f64; // in [0, 1)
    d.mul_f64(0.75 + r / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: EjectionPolicy = EjectionPolicy {
        after: 3,
        initial: Duration::from_secs(1),
        max: Duration::from_secs(8),
    };

    #[test]
    fn ejects_after_the_threshold_with_a_doubling_capped_jittered_backoff() {
        let now = Instant::now();
        let mut h = Health::default();
        assert_eq!(h.failed(now, &POLICY), None);
        assert_eq!(h.failed(now, &POLICY), None);
        assert_eq!(h.gate(now), Gate::Open);
        for (i, base) in [1u64, 2, 4, 8, 8, 8].into_iter().enumerate() {
            let until = h.failed(now, &POLICY).expect("ejected");
            let d = until - now;
            let base = Duration::from_secs(base);
            assert!(
                d >= base.mul_f64(0.75) && d < base.mul_f64(1.25),
                "failure {}: {d:?} vs {base:?}",
                i + 3
            );
            assert_eq!(
                h.gate(now),
                Gate::Ejected {
                    until,
                    failures: 3 + i as u32
                }
            );
            assert_eq!(h.gate(until), Gate::Probe);
        }
        h.succeeded();
        assert_eq!(h.gate(now), Gate::Open);
        assert_eq!(h.snapshot(0).consecutive_failures, 0);
    }

    #[test]
    fn threshold_zero_never_ejects() {
        let policy = EjectionPolicy { after: 0, ..POLICY };
        let now = Instant::now();
        let mut h = Health::default();
        for _ in 0..100 {
            assert_eq!(h.failed(now, &policy), None);
        }
        assert_eq!(h.gate(now), Gate::Open);
        assert_eq!(h.snapshot(0).consecutive_failures, 100);
    }

    #[test]
    fn jitter_spreads_within_a_quarter() {
        let d = Duration::from_secs(4);
        let all: Vec<_> = (0..64).map(|_| jitter(d)).collect();
        assert!(all
            .iter()
            .all(|j| *j >= d.mul_f64(0.75) && *j < d.mul_f64(1.25)));
        assert!(all.iter().any(|j| *j != all[0]), "not all the same");
    }
}
