//! Choosing a backend for a request that does not pin one ([`Balance`]), without a lock: the
//! round-robin cursor is one atomic counter, the figures it looks at (streams in flight,
//! ejection deadlines) are relaxed atomic loads, and random choices come from a per-thread
//! generator.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use super::counters::Counters;

/// How [`H2Pool`](super::H2Pool) chooses a backend for a request that does not pin one with
/// the [`Backend`](super::Backend) extension ([`H2Pool::dispatch`](super::H2Pool::dispatch)
/// and the pool's `Service`). Every policy skips ejected backends while another is not
/// ejected. Set with [`H2PoolBuilder::balance`](super::H2PoolBuilder::balance).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Balance {
    /// Each backend in turn (the default).
    #[default]
    RoundRobin,
    /// The less loaded of two backends chosen at random (power of two random choices), by
    /// streams in flight through this pool: adapts to slow backends without the herd
    /// behaviour of always taking the least loaded one.
    LeastStreams,
    /// At random in proportion to the given weights, one per backend in order (a backend
    /// with weight 0 gets no unpinned request). Their number must match the backends'.
    Weighted(Vec<u32>),
}

/// The picker of one pool.
#[derive(Debug)]
pub(super) struct Picker {
    policy: Policy,
    next: AtomicUsize,
}

#[derive(Debug)]
enum Policy {
    RoundRobin,
    LeastStreams,
    /// Cumulative weights: backend `i` gets `r` in `prefix[i-1]..prefix[i]`.
    Weighted {
        prefix: Box<[u64]>,
        total: u64,
    },
}

impl Picker {
    /// A picker for `backends` backends; `Err` names what is wrong with the weights.
    pub(super) fn new(balance: &Balance, backends: usize) -> Result<Picker, String> {
        let policy = match balance {
            Balance::RoundRobin => Policy::RoundRobin,
            Balance::LeastStreams => Policy::LeastStreams,
            Balance::Weighted(weights) => {
                if weights.len() != backends {
                    return Err(format!(
                        "Balance::Weighted has {} weights for {backends} backends",
                        weights.len()
                    ));
                }
                let mut total = 0u64;
                let prefix = weights
                    .iter()
                    .map(|&w| {
                        total += u64::from(w);
                        total
                    })
                    .collect();
                if total == 0 {
                    return Err("Balance::Weighted needs a weight above 0".into());
                }
                Policy::Weighted { prefix, total }
            }
        };
        Ok(Picker {
            policy,
            next: AtomicUsize::new(0),
        })
    }

    /// A backend for the next request. `counters[i]` is backend `i`'s; `now_ms` gives the
    /// time for their ejection deadlines (read only when a backend has one). With every
    /// backend ejected it still picks one (whose request then fails at once, saying until
    /// when).
    pub(super) fn pick(&self, counters: &[Arc<Counters>], now_ms: impl Fn() -> u64) -> usize {
        let n = counters.len();
        let up = |b: usize| !counters[b].is_ejected(&now_ms);
        match &self.policy {
            Policy::RoundRobin => self.round_robin(n, up),
            Policy::LeastStreams => {
                if n == 1 {
                    return 0;
                }
                let a = random_below(n);
                // A second backend other than `a`.
                let b = (a + 1 + random_below(n - 1)) % n;
                let load = |b: usize| counters[b].streams_in_flight.load(Relaxed);
                match (up(a), up(b)) {
                    (true, true) => {
                        if load(b) < load(a) {
                            b
                        } else {
                            a
                        }
                    }
                    (true, false) => a,
                    (false, true) => b,
                    (false, false) => self.round_robin(n, up),
                }
            }
            Policy::Weighted { prefix, total } => {
                let r = random_u64() % total;
                // The first backend whose cumulative weight is above `r`.
                let b = prefix.partition_point(|&p| p <= r);
                if up(b) {
                    return b;
                }
                // Ejected: the next backend with a weight that is not.
                let weighted = |i: usize| prefix[i] > if i == 0 { 0 } else { prefix[i - 1] };
                (1..n)
                    .map(|k| (b + k) % n)
                    .find(|&i| weighted(i) && up(i))
                    .unwrap_or(b)
            }
        }
    }

    /// The next backend from the cursor that `up` accepts, or the cursor's if none does.
    fn round_robin(&self, n: usize, up: impl Fn(usize) -> bool) -> usize {
        // Relaxed: the cursor only spreads the load; any interleaving is fine.
        let start = self.next.fetch_add(1, Relaxed);
        (0..n)
            .map(|i| start.wrapping_add(i) % n)
            .find(|&b| up(b))
            .unwrap_or(start % n)
    }
}

thread_local! {
    /// xorshift64* state, seeded per thread from the standard library's random keys.
    static RNG: Cell<u64> = Cell::new({
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x9e37_79b9_7f4a_7c15);
        h.finish() | 1
    });
}

/// A random `u64` (not for cryptography: it spreads load).
fn random_u64() -> u64 {
    RNG.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// A random number in `0..n` (`n > 0`).
fn random_below(n: usize) -> usize {
    // The modulo bias is below 2^-50 for any realistic number of backends.
    (random_u64() % n as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(n: usize) -> Vec<Arc<Counters>> {
        (0..n).map(|_| Arc::default()).collect()
    }

    fn spread(p: &Picker, c: &[Arc<Counters>], picks: usize) -> Vec<usize> {
        let mut n = vec![0; c.len()];
        for _ in 0..picks {
            n[p.pick(c, || 10)] += 1;
        }
        n
    }

    #[test]
    fn round_robin_is_exact_and_skips_ejected_backends() {
        let c = counters(3);
        let p = Picker::new(&Balance::RoundRobin, 3).unwrap();
        assert_eq!(spread(&p, &c, 300), [100, 100, 100]);
        c[1].ejected_until_ms.store(11, Relaxed); // ejected at 10
        assert_eq!(spread(&p, &c, 300)[1], 0);
        c[1].ejected_until_ms.store(10, Relaxed); // over at 10
        assert_eq!(spread(&p, &c, 300), [100, 100, 100]);
    }

    #[test]
    fn all_ejected_still_picks_in_turn() {
        let c = counters(2);
        for c in &c {
            c.ejected_until_ms.store(u64::MAX, Relaxed);
        }
        let p = Picker::new(&Balance::RoundRobin, 2).unwrap();
        assert_eq!(spread(&p, &c, 10), [5, 5]);
    }

    #[test]
    fn least_streams_prefers_the_less_loaded_and_spreads_evenly_when_equal() {
        let c = counters(4);
        let p = Picker::new(&Balance::LeastStreams, 4).unwrap();
        let even = spread(&p, &c, 40_000);
        // Equal loads: each of 4 gets 1/4 within 5 %.
        assert!(
            even.iter().all(|&k| (9_500..=10_500).contains(&k)),
            "{even:?}"
        );
        // Backend 2 carries the most streams: picked only when drawn with... never, since
        // the other of the pair always carries fewer.
        c[2].streams_in_flight.store(50, Relaxed);
        let skewed = spread(&p, &c, 40_000);
        assert_eq!(skewed[2], 0, "{skewed:?}");
        c[0].ejected_until_ms.store(u64::MAX, Relaxed);
        assert_eq!(spread(&p, &c, 10_000)[0], 0);
    }

    #[test]
    fn weighted_follows_the_weights_and_skips_ejected_and_zero_weights() {
        let c = counters(3);
        let p = Picker::new(&Balance::Weighted(vec![1, 3, 0]), 3).unwrap();
        let got = spread(&p, &c, 40_000);
        assert_eq!(got[2], 0, "{got:?}");
        // 1 : 3 within 5 % of each share.
        assert!((9_500..=10_500).contains(&got[0]), "{got:?}");
        assert!((28_500..=31_500).contains(&got[1]), "{got:?}");
        c[1].ejected_until_ms.store(u64::MAX, Relaxed);
        assert_eq!(spread(&p, &c, 1_000), [1_000, 0, 0]);
    }

    #[test]
    fn bad_weights_are_errors() {
        assert!(Picker::new(&Balance::Weighted(vec![1]), 2).is_err());
        assert!(Picker::new(&Balance::Weighted(vec![0, 0]), 2).is_err());
    }
}
