//! The sweeper: closes idle and over-age connections in the background.

use std::sync::Weak;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::conn::Conn;
use crate::ConnectionPool;

/// When the sweeper closes a connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Closed once it has carried no stream for this long.
    pub(super) idle_timeout: Duration,
    /// Closed once older than this (its running streams finish first).
    pub(super) max_lifetime: Duration,
}

impl Limits {
    /// How often the sweeper looks: a quarter of the shorter timeout, between 10 ms and 5 s.
    pub(super) fn interval(self) -> Duration {
        (self.idle_timeout.min(self.max_lifetime) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(5))
    }
}

/// Closes idle and over-age connections every [`Limits::interval`], until the pool is dropped
/// (`stop` resolves when its sender, owned by the pool, is dropped, and `pools` no longer
/// upgrades once the pool is gone).
pub(super) async fn sweep(
    pools: Weak<ConnectionPool<Conn>>,
    limits: Limits,
    mut stop: oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(limits.interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        let Some(pools) = pools.upgrade() else { return };
        evict(&pools, limits, Instant::now());
    }
}

/// One sweep: closes every idle connection that is dead, older than `max_lifetime`, or has
/// carried no stream for `idle_timeout`. Returns how many it closed.
///
/// Full connections are `in_use` (parked) and are not looked at; they are idle by definition
/// never.
pub(super) fn evict(pools: &ConnectionPool<Conn>, limits: Limits, now: Instant) -> usize {
    let Limits {
        idle_timeout,
        max_lifetime,
    } = limits;
    (0..pools.backends())
        .filter_map(|b| pools.backend(b).ok())
        .map(|pool| {
            pool.evict_idle(|conn| {
                let shared = &conn.shared;
                if !shared.is_alive()
                    || now.saturating_duration_since(shared.created) >= max_lifetime
                {
                    return true;
                }
                let s = shared.streams();
                s.in_flight == 0 && now.saturating_duration_since(s.last_used) >= idle_timeout
            })
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_interval_is_a_quarter_of_the_shorter_timeout_within_bounds() {
        let s = Duration::from_secs;
        let every = |idle_timeout, max_lifetime| {
            Limits {
                idle_timeout,
                max_lifetime,
            }
            .interval()
        };
        assert_eq!(every(s(8), s(60)), s(2));
        assert_eq!(every(s(90), s(1800)), s(5));
        assert_eq!(
            every(Duration::from_millis(1), s(1)),
            Duration::from_millis(10)
        );
    }
}
