//! [`Stats`]: slot counts derived from slot words, and the waiters.

/// How many slots of a backend are in each state, counted from the slot words themselves
/// (there is no separate counter to drift or underflow), and how many callers wait.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Stats {
    /// Slots without a connection.
    pub empty: usize,
    /// Idle connections, ready to acquire.
    pub available: usize,
    /// Connections (or reservations) held by a token.
    pub in_use: usize,
    /// Held connections marked to be closed when released.
    pub draining: usize,
    /// Threads and tasks waiting for a connection or a free slot (`acquire_timeout`,
    /// `acquire_wait`). A pool with `available == 0`, `empty == 0` and waiters is exhausted.
    pub waiters: usize,
}

impl Stats {
    /// All slots counted (the pool's capacity).
    pub fn total(&self) -> usize {
        self.empty + self.available + self.in_use + self.draining
    }

    /// Slots that hold a connection or a reservation (`available + in_use + draining`).
    pub fn occupied(&self) -> usize {
        self.available + self.in_use + self.draining
    }
}

impl std::ops::Add for Stats {
    type Output = Stats;

    fn add(self, o: Stats) -> Stats {
        Stats {
            empty: self.empty + o.empty,
            available: self.available + o.available,
            in_use: self.in_use + o.in_use,
            draining: self.draining + o.draining,
            waiters: self.waiters + o.waiters,
        }
    }
}
