//! Choosing a backend for a request that does not pin one ([`Balance`]), without a lock: the
//! round-robin cursor is one atomic counter, the figures it looks at (streams in flight,
//! ejection deadlines) are relaxed atomic loads, and random choices come from a per-thread
//! generator.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::backends::Table;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    RoundRobin,
    LeastStreams,
    /// By the entries' weights (cumulative sums kept in the backends' table).
    Weighted,
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
                if weights.iter().all(|&w| w == 0) {
                    return Err("Balance::Weighted needs a weight above 0".into());
                }
                Policy::Weighted
            }
        };
        Ok(Picker {
            policy,
            next: AtomicUsize::new(0),
        })
    }

    /// A backend of `table` for the next request, or `None` if it has none; `now_ms` gives
    /// the time for the ejection deadlines (read only when a backend has one). With every
    /// backend ejected it still picks one (whose request then fails at once, saying until
    /// when).
    pub(super) fn pick(&self, table: &Table, now_ms: impl Fn() -> u64) -> Option<usize> {
        let live = &table.live;
        let n = live.len();
        if n == 0 {
            return None;
        }
        let counters = |b: usize| table.get(b).map(|e| &e.counters);
        let up = |b: usize| counters(b).is_some_and(|c| !c.is_ejected(&now_ms));
        let pick = match self.policy {
            Policy::RoundRobin => self.round_robin(live, up),
            Policy::LeastStreams => {
                if n == 1 {
                    return Some(live[0]);
                }
                let ia = random_below(n);
                // A second backend other than the first.
                let (a, b) = (live[ia], live[(ia + 1 + random_below(n - 1)) % n]);
                let load = |b: usize| {
                    counters(b).map_or(usize::MAX, |c| c.streams_in_flight.load(Relaxed))
                };
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
                    (false, false) => self.round_robin(live, up),
                }
            }
            Policy::Weighted => {
                if table.total_weight == 0 {
                    return Some(self.round_robin(live, up));
                }
                let r = random_u64() % table.total_weight;
                // The first backend whose cumulative weight is above `r`.
                let k = table.prefix.partition_point(|&p| p <= r);
                let b = live[k.min(n - 1)];
                if up(b) {
                    b
                } else {
                    // Ejected: the next backend with a weight that is not.
                    let weighted =
                        |k: usize| table.prefix[k] > if k == 0 { 0 } else { table.prefix[k - 1] };
                    (1..n)
                        .map(|j| (k + j) % n)
                        .find(|&j| weighted(j) && up(live[j]))
                        .map_or(b, |j| live[j])
                }
            }
        };
        Some(pick)
    }

    /// The next backend of `live` from the cursor that `up` accepts, or the cursor's if none
    /// does.
    fn round_robin(&self, live: &[usize], up: impl Fn(usize) -> bool) -> usize {
        let n = live.len();
        // Relaxed: the cursor only spreads the load; any interleaving is fine.
        let start = self.next.fetch_add(1, Relaxed);
        (0..n)
            .map(|i| live[start.wrapping_add(i) % n])
            .find(|&b| up(b))
            .unwrap_or(live[start % n])
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
    use super::super::backends::test_table;
    use super::*;

    fn spread(p: &Picker, t: &Table, picks: usize) -> Vec<usize> {
        let mut n = vec![0; t.entries.len()];
        for _ in 0..picks {
            n[p.pick(t, || 10).unwrap()] += 1;
        }
        n
    }

    #[test]
    fn round_robin_is_exact_and_skips_ejected_and_removed_backends() {
        let t = test_table(&[1, 1, 1], &[]);
        let p = Picker::new(&Balance::RoundRobin, 3).unwrap();
        assert_eq!(spread(&p, &t, 300), [100, 100, 100]);
        t.get(1)
            .unwrap()
            .counters
            .ejected_until_ms
            .store(11, Relaxed); // ejected at 10
        assert_eq!(spread(&p, &t, 300)[1], 0);
        t.get(1)
            .unwrap()
            .counters
            .ejected_until_ms
            .store(10, Relaxed); // over at 10
        assert_eq!(spread(&p, &t, 300), [100, 100, 100]);
        let t = test_table(&[1, 1, 1], &[1]);
        assert_eq!(spread(&p, &t, 300), [150, 0, 150]);
        assert_eq!(p.pick(&test_table(&[], &[]), || 0), None);
    }

    #[test]
    fn all_ejected_still_picks_in_turn() {
        let t = test_table(&[1, 1], &[]);
        for (_, e) in t.iter() {
            e.counters.ejected_until_ms.store(u64::MAX, Relaxed);
        }
        let p = Picker::new(&Balance::RoundRobin, 2).unwrap();
        assert_eq!(spread(&p, &t, 10), [5, 5]);
    }

    #[test]
    fn least_streams_prefers_the_less_loaded_and_spreads_evenly_when_equal() {
        let t = test_table(&[1, 1, 1, 1], &[]);
        let p = Picker::new(&Balance::LeastStreams, 4).unwrap();
        let even = spread(&p, &t, 40_000);
        // Equal loads: each of 4 gets 1/4 within 5 %.
        assert!(
            even.iter().all(|&k| (9_500..=10_500).contains(&k)),
            "{even:?}"
        );
        // Backend 2 carries the most streams: the other of any pair carries fewer.
        t.get(2)
            .unwrap()
            .counters
            .streams_in_flight
            .store(50, Relaxed);
        let skewed = spread(&p, &t, 40_000);
        assert_eq!(skewed[2], 0, "{skewed:?}");
        t.get(0)
            .unwrap()
            .counters
            .ejected_until_ms
            .store(u64::MAX, Relaxed);
        assert_eq!(spread(&p, &t, 10_000)[0], 0);
    }

    #[test]
    fn weighted_follows_the_weights_and_skips_ejected_and_zero_weights() {
        let t = test_table(&[1, 3, 0], &[]);
        let p = Picker::new(&Balance::Weighted(vec![1, 3, 0]), 3).unwrap();
        let got = spread(&p, &t, 40_000);
        assert_eq!(got[2], 0, "{got:?}");
        // 1 : 3 within 5 % of each share.
        assert!((9_500..=10_500).contains(&got[0]), "{got:?}");
        assert!((28_500..=31_500).contains(&got[1]), "{got:?}");
        t.get(1)
            .unwrap()
            .counters
            .ejected_until_ms
            .store(u64::MAX, Relaxed);
        assert_eq!(spread(&p, &t, 1_000), [1_000, 0, 0]);
    }

    #[test]
    fn bad_weights_are_errors() {
        assert!(Picker::new(&Balance::Weighted(vec![1]), 2).is_err());
        assert!(Picker::new(&Balance::Weighted(vec![0, 0]), 2).is_err());
    }
}
