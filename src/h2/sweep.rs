//! The sweeper: closes idle and over-age connections in the background.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::conn::Conn;
use super::counters::bump;
use super::shutdown::Drivers;
use crate::Pool;

/// When the sweeper closes a connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Closed once it has carried no stream for this long.
    pub(super) idle_timeout: Duration,
    /// Closed once older than this (its running streams finish first).
    pub(super) max_lifetime: Duration,
    /// Idle connections are not closed below this many per backend (warm-up keeps them).
    pub(super) min_connections: usize,
}

impl Limits {
    /// How often the sweeper looks: a quarter of the shorter timeout, between 10 ms and 5 s.
    pub(super) fn interval(self) -> Duration {
        (self.idle_timeout.min(self.max_lifetime) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(5))
    }
}

/// Closes idle and over-age connections every [`Limits::interval`], and calls `refill` (the
/// warm-up: reopens connections below `min_connections`) at once, after each sweep and
/// whenever a connection's driver ends (`ended`), until the pool is dropped (`stop` resolves
/// when its sender, owned by the pool, is dropped, and `pools` no longer upgrades once the
/// pool is gone).
pub(super) async fn sweep(
    pools: impl Fn() -> Option<Vec<Arc<Pool<Conn>>>>,
    limits: Limits,
    mut stop: oneshot::Receiver<()>,
    drivers: Arc<Drivers>,
    refill: impl Fn(),
) {
    let mut tick = tokio::time::interval(limits.interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    refill();
    loop {
        let ended = drivers.ended();
        tokio::select! {
            _ = tick.tick() => {
                let Some(pools) = pools() else { return };
                evict(pools.iter(), limits, Instant::now());
            }
            () = ended => {}
            _ = &mut stop => return,
        }
        refill();
    }
}

/// One sweep: closes every idle connection that is dead, older than `max_lifetime`, or has
/// carried no stream for `idle_timeout`. Returns how many it closed.
///
/// Full connections are `in_use` (parked) and are not looked at; they are idle by definition
/// never.
pub(super) fn evict<'a>(
    pools: impl Iterator<Item = &'a Arc<Pool<Conn>>>,
    limits: Limits,
    now: Instant,
) -> usize {
    let Limits {
        idle_timeout,
        max_lifetime,
        min_connections,
    } = limits;
    pools
        .map(|pool| {
            // Idle connections beyond the warm minimum (dead and over-age ones always go:
            // the warm-up replaces them).
            let stats = pool.stats();
            let mut spare = (stats.available + stats.in_use).saturating_sub(min_connections);
            let backend = pool.backend();
            pool.evict_idle(|conn| {
                let shared = &conn.shared;
                if !shared.is_alive() {
                    return true;
                }
                if now.saturating_duration_since(shared.created) >= max_lifetime {
                    bump(&shared.counters.evicted_lifetime);
                    tracing::debug!(backend, target = %shared.addr, "connection past its maximum lifetime: closed");
                    return true;
                }
                let s = shared.streams();
                let idle =
                    s.in_flight == 0 && now.saturating_duration_since(s.last_used) >= idle_timeout;
                if idle && spare > 0 {
                    spare -= 1;
                    bump(&shared.counters.evicted_idle);
                    tracing::debug!(backend, target = %shared.addr, "idle connection closed");
                    return true;
                }
                false
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
                min_connections: 0,
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
