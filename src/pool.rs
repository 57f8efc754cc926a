//! [`Pool`]: the slots of one backend and the token operations on them.

use std::fmt;

use crossbeam_utils::CachePadded;

use crate::error::Error;
use crate::lease::Lease;
use crate::slot::Slot;
use crate::stats::Stats;
use crate::sync::{pool_seed, scan_hint, set_scan_hint, ScanHint};
use crate::token::{ConnId, Token};
use crate::wait::Waiters;
use crate::word::{gen_of, is_held_by, state_of, with_state, SlotState};

/// Most slots one pool can have (a token names its slot in 16 bits).
pub const MAX_SLOTS: usize = 1 << 16;

/// What [`Pool::release`] did with the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Back in the pool, available to the next `acquire`.
    Returned,
    /// Closed (dropped): `keep` was false, or the connection was draining.
    Closed,
    /// The token does not hold a slot of this pool (it came from another pool or backend);
    /// nothing was changed and nothing was dropped.
    Rejected,
}

/// A fixed array of connection slots for one backend, handing out [`Token`]s.
///
/// All operations take `&self` and are lock-free: each moves one slot word by a single
/// compare-and-swap (see the crate docs for the state machine). Only waiting
/// ([`acquire_timeout`](Pool::acquire_timeout), [`acquire_wait`](Pool::acquire_wait)) takes a
/// lock, and only while a waiter registers or is woken.
///
/// # Examples
/// ```
/// use tokenpool::{Pool, Released};
///
/// let pool = Pool::new(2)?;
/// let token = pool.add(String::from("conn-a")).expect("pool has room");
/// assert_eq!(pool.get(&token).map(String::as_str), Some("conn-a"));
/// assert_eq!(pool.release(token, true), Released::Returned);
///
/// let mut token = pool.acquire().expect("conn-a is available");
/// pool.get_mut(&mut token).unwrap().push_str("!");
/// assert_eq!(pool.release(token, false), Released::Closed); // dropped here, exactly once
/// assert_eq!(pool.stats().empty, 2);
/// # Ok::<(), tokenpool::Error>(())
/// ```
pub struct Pool<T> {
    slots: Box<[CachePadded<Slot<T>>]>,
    backend: u16,
    pub(crate) waiters: Waiters,
}

// SAFETY: a `Pool<T>` hands out access to each connection to one holder at a time (the holder
// of the slot's token, which is `!Sync`), like a `Mutex<T>`; connections move between threads
// but are never shared, so `T: Send` is all that sharing the pool needs.
unsafe impl<T: Send> Sync for Pool<T> {}

impl<T> Pool<T> {
    /// A pool of `slots` empty slots.
    ///
    /// # Errors
    /// [`Error::InvalidSize`] unless `1 <= slots <= MAX_SLOTS`.
    pub fn new(slots: usize) -> Result<Self, Error> {
        Self::for_backend(slots, 0)
    }

    pub(crate) fn for_backend(slots: usize, backend: u16) -> Result<Self, Error> {
        if slots == 0 || slots > MAX_SLOTS {
            return Err(Error::InvalidSize {
                requested: slots,
                max: MAX_SLOTS,
                what: "slots",
            });
        }
        let seed = pool_seed();
        Ok(Pool {
            slots: (0..slots)
                .map(|_| CachePadded::new(Slot::new(seed)))
                .collect(),
            backend,
            waiters: Waiters::default(),
        })
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The backend index this pool's tokens carry (0 for a standalone pool).
    pub fn backend(&self) -> usize {
        usize::from(self.backend)
    }

    /// The slot a token or id names, if it names one of this pool's.
    #[inline(always)]
    fn slot_at(&self, slot: usize, backend: usize) -> Option<&Slot<T>> {
        if backend != usize::from(self.backend) {
            return None;
        }
        self.slots.get(slot).map(|s| &**s)
    }

    /// The token for slot `slot` held with word `held`.
    #[inline(always)]
    pub(crate) fn token(&self, held: u32, slot: usize) -> Token {
        // `slot < MAX_SLOTS` was checked in `new`, so it fits in 16 bits.
        Token::new(held, slot as u16, self.backend)
    }

    /// Takes exclusive access to an available connection, or `None` if none is available now
    /// (it does not wait; see [`acquire_timeout`](Pool::acquire_timeout) and
    /// [`acquire_wait`](Pool::acquire_wait)).
    ///
    /// The search starts at the slot this thread acquired last (likely the one it just
    /// returned), so threads spread over the slots instead of fighting over the first.
    #[inline]
    pub fn acquire(&self) -> Option<Token> {
        let n = self.slots.len();
        let hint = scan_hint();
        let this = self as *const Self as usize;
        // Fast path: the connection this thread returned last is most likely still there,
        // `Available` with the word it left. CAS from that predicted word at once, without
        // loading the word first: on one thread the load would wait for our own previous
        // release CAS of the same word to complete, a stall that costs about a third of a
        // checkout+return pair. The CAS is exactly `try_acquire`'s: from an exact `Available`
        // word (state *and* generation) to the same generation `InUse`, so a stale prediction
        // (taken meanwhile, closed, another connection since) just fails and we scan.
        if hint.pool == this && hint.slot < n && state_of(hint.word) == SlotState::Available {
            if let Some(held) = self.slots[hint.slot].acquire_from(hint.word) {
                return Some(self.token(held, hint.slot));
            }
        }
        let start = if hint.slot < n {
            hint.slot
        } else {
            hint.slot % n
        };
        let mut i = start;
        loop {
            if let Some(held) = self.slots[i].try_acquire() {
                // `release(keep)` leaves this very word back in the slot, so it is the
                // prediction for our next acquire.
                set_scan_hint(ScanHint {
                    pool: this,
                    slot: i,
                    word: with_state(held, SlotState::Available),
                });
                return Some(self.token(held, i));
            }
            i += 1;
            if i == n {
                i = 0;
            }
            if i == start {
                return None;
            }
        }
    }

    /// Like [`acquire`](Pool::acquire), wrapped in a [`Lease`] that releases on drop.
    pub fn acquire_lease(&self) -> Option<Lease<'_, T>> {
        self.acquire().map(|t| Lease::from_valid(self, t))
    }

    /// Adds a new connection to an empty slot and returns exclusive access to it.
    ///
    /// # Errors
    /// A full pool hands the connection back untouched: nothing is lost or dropped.
    pub fn add(&self, conn: T) -> Result<Token, T> {
        match self.claim_empty() {
            Some((i, held)) => {
                // SAFETY: `claim_empty` made us the holder of slot `i`.
                unsafe { self.slots[i].put(conn) };
                Ok(self.token(held, i))
            }
            None => Err(conn),
        }
    }

    /// Claims an empty slot before its connection exists (for an async connect), so that two
    /// connects never race for the last slot. `None` if no slot is empty.
    ///
    /// The slot counts as `in_use` until [`Reservation::fill`](crate::Reservation::fill) puts
    /// the connection in, or the reservation is dropped (the slot is then empty again).
    pub fn reserve(&self) -> Option<crate::Reservation<'_, T>> {
        self.claim_empty()
            .map(|(i, held)| crate::Reservation::new(self, i, held))
    }

    fn claim_empty(&self) -> Option<(usize, u32)> {
        self.slots
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.try_claim_empty().map(|held| (i, held)))
    }

    /// Writes `conn` into the reserved slot `slot` and returns its token.
    pub(crate) fn fill(&self, slot: usize, held: u32, conn: T) -> Token {
        // SAFETY: the reservation that calls this holds `slot` with `held`.
        unsafe { self.slots[slot].put(conn) };
        self.token(held, slot)
    }

    /// Shared access to the connection `token` holds, or `None` if the token is not one of
    /// this pool's live tokens. One atomic load and two compares.
    #[inline(always)]
    pub fn get<'a>(&'a self, token: &'a Token) -> Option<&'a T> {
        let slot = self.slot_at(token.slot(), token.backend())?;
        if !is_held_by(slot.load(), token.held()) {
            return None;
        }
        // SAFETY: the word shows the slot held by `token`, which is move-only and `!Sync`, and
        // only its holder moves a held slot out of InUse/Draining: so the slot stays held while
        // `token` is borrowed ('a), and `&Token` gives no `&mut` access meanwhile.
        unsafe { slot.conn_ref() }
    }

    /// Exclusive access to the connection `token` holds, or `None` if the token is not one of
    /// this pool's live tokens.
    #[inline(always)]
    pub fn get_mut<'a>(&'a self, token: &'a mut Token) -> Option<&'a mut T> {
        let slot = self.slot_at(token.slot(), token.backend())?;
        if !is_held_by(slot.load(), token.held()) {
            return None;
        }
        // SAFETY: as in `get`, and the token is borrowed mutably for 'a, so no other reference
        // to this connection can be made through the pool meanwhile.
        unsafe { slot.conn_mut() }
    }

    /// Gives up `token`: `keep = true` returns the connection to the pool (unless it was
    /// drained meanwhile, in which case it is closed), `keep = false` closes it. Closing drops
    /// the connection, exactly once, after the slot is free again.
    pub fn release(&self, token: Token, keep: bool) -> Released {
        let Some(slot) = self.slot_at(token.slot(), token.backend()) else {
            return Released::Rejected;
        };
        let held = token.held();
        if keep {
            match slot.release_keep(held) {
                Ok(()) => {
                    self.waiters.notify_one();
                    return Released::Returned;
                }
                // Draining: still ours, and it must be closed now.
                Err(seen) if is_held_by(seen, held) => {}
                Err(_) => return Released::Rejected,
            }
        } else if !is_held_by(slot.load(), held) {
            return Released::Rejected;
        }
        self.close(slot, held);
        Released::Closed
    }

    /// Closes a slot we hold: empties it, wakes a waiter, then drops the connection.
    fn close(&self, slot: &Slot<T>, held: u32) {
        let conn = slot.close_held(held);
        self.waiters.notify_one();
        drop(conn);
    }

    /// Drains the connection `id` names: closes it now if it is idle, or marks it `draining`
    /// so that its holder's release closes it. Returns `false` if that connection is no longer
    /// in the pool (closed already, or the id is from another pool or backend).
    pub fn drain(&self, id: ConnId) -> bool {
        match self.slot_at(id.slot(), id.backend()) {
            Some(slot) => self.drain_slot(slot, Some(id.generation())),
            None => false,
        }
    }

    /// Drains every connection: idle ones are closed now, held ones when released. Returns
    /// how many connections this call closed or marked (already draining ones not counted).
    pub fn drain_all(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| self.drain_slot(s, None))
            .count()
    }

    /// Shared loop of `drain` (`only = Some(generation)`) and `drain_all` (`only = None`).
    fn drain_slot(&self, slot: &Slot<T>, only: Option<u32>) -> bool {
        loop {
            let cur = slot.load();
            if only.is_some_and(|g| g != gen_of(cur)) {
                return false;
            }
            let held = with_state(cur, SlotState::InUse);
            match state_of(cur) {
                SlotState::Empty => return false,
                SlotState::Draining => return only.is_some(),
                SlotState::InUse => {
                    if slot.mark_draining(held) {
                        return true;
                    }
                }
                SlotState::Available => {
                    // Become its holder (from exactly `cur`), then close it like a holder.
                    if slot.acquire_from(cur).is_some() {
                        self.close(slot, held);
                        return true;
                    }
                }
            }
            // The word moved under us; look again.
        }
    }

    /// Closes every *idle* connection for which `evict` returns true (for example: idle too
    /// long, or older than a maximum lifetime), and returns how many it closed. Connections in
    /// use are not looked at. Each idle connection is held while `evict` looks at it; if
    /// `evict` panics, that connection is closed and the panic goes on.
    pub fn evict_idle(&self, mut evict: impl FnMut(&T) -> bool) -> usize {
        let mut closed = 0;
        for (i, slot) in self.slots.iter().enumerate() {
            let cur = slot.load();
            if state_of(cur) != SlotState::Available {
                continue;
            }
            let Some(held) = slot.acquire_from(cur) else {
                continue;
            };
            let lease = Lease::from_valid(self, self.token(held, i));
            let gone = evict(&lease);
            if lease.release(!gone) == Released::Closed {
                closed += 1;
            }
        }
        closed
    }

    /// A snapshot of how many slots are in each state, read from the slot words (so the
    /// counts always sum to [`capacity`](Pool::capacity) and can never underflow). Under
    /// concurrent use each slot is read at a slightly different moment.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats::default();
        for slot in self.slots.iter() {
            match state_of(slot.load()) {
                SlotState::Empty => stats.empty += 1,
                SlotState::Available => stats.available += 1,
                SlotState::InUse => stats.in_use += 1,
                SlotState::Draining => stats.draining += 1,
            }
        }
        stats
    }
}

impl<T> fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("backend", &self.backend)
            .field("capacity", &self.capacity())
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A connection that counts its drops.
    #[derive(Debug)]
    struct Conn {
        id: usize,
        drops: Arc<AtomicUsize>,
    }

    impl Drop for Conn {
        fn drop(&mut self) {
            self.drops.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn conn(id: usize, drops: &Arc<AtomicUsize>) -> Conn {
        Conn {
            id,
            drops: drops.clone(),
        }
    }

    fn counter() -> Arc<AtomicUsize> {
        Arc::new(AtomicUsize::new(0))
    }

    #[test]
    fn new_rejects_zero_and_oversized_pools() {
        assert!(matches!(Pool::<()>::new(0), Err(Error::InvalidSize { .. })));
        assert!(matches!(
            Pool::<()>::new(MAX_SLOTS + 1),
            Err(Error::InvalidSize { .. })
        ));
        assert_eq!(Pool::<()>::new(MAX_SLOTS).unwrap().capacity(), MAX_SLOTS);
    }

    #[test]
    fn add_moves_empty_to_in_use_and_hands_back_when_full() {
        let drops = counter();
        let pool = Pool::new(1).unwrap();
        let t = pool.add(conn(1, &drops)).unwrap();
        assert_eq!(
            pool.stats(),
            Stats {
                in_use: 1,
                ..Stats::default()
            }
        );
        let back = pool.add(conn(2, &drops)).unwrap_err();
        assert_eq!(back.id, 2, "the full pool hands the same connection back");
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(back);
        assert_eq!(pool.release(t, true), Released::Returned);
    }

    #[test]
    fn release_keep_makes_available_and_acquire_takes_it_back() {
        let drops = counter();
        let pool = Pool::new(2).unwrap();
        let t = pool.add(conn(7, &drops)).unwrap();
        assert_eq!(pool.release(t, true), Released::Returned);
        assert_eq!(
            pool.stats(),
            Stats {
                empty: 1,
                available: 1,
                ..Stats::default()
            }
        );
        let t = pool.acquire().expect("available connection");
        assert_eq!(pool.get(&t).unwrap().id, 7);
        assert_eq!(
            pool.stats(),
            Stats {
                empty: 1,
                in_use: 1,
                ..Stats::default()
            }
        );
        assert!(pool.acquire().is_none(), "the only connection is held");
        assert_eq!(pool.release(t, false), Released::Closed);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(pool.stats().empty, 2);
    }

    #[test]
    fn get_mut_writes_are_seen_by_next_holder() {
        let pool = Pool::new(1).unwrap();
        let mut t = pool.add(vec![1]).unwrap();
        pool.get_mut(&mut t).unwrap().push(2);
        pool.release(t, true);
        let t = pool.acquire().unwrap();
        assert_eq!(pool.get(&t).unwrap(), &vec![1, 2]);
        pool.release(t, true);
    }

    #[test]
    fn token_of_another_pool_is_rejected_and_changes_nothing() {
        let drops = counter();
        let a = Pool::new(1).unwrap();
        let b = Pool::new(1).unwrap();
        let ta = a.add(conn(1, &drops)).unwrap();
        let tb = b.add(conn(2, &drops)).unwrap();
        // Same slot index, same backend index, different pools: the generations differ.
        assert!(b.get(&ta).is_none());
        assert_eq!(b.release(ta, false), Released::Rejected);
        assert_eq!(drops.load(Ordering::SeqCst), 0, "nothing was dropped");
        assert_eq!(b.get(&tb).unwrap().id, 2);
        assert_eq!(
            a.stats().in_use,
            1,
            "the rejected token's slot is still held (leaked)"
        );
        b.release(tb, true);
    }

    #[test]
    fn token_of_another_backend_is_rejected() {
        let a = Pool::<&str>::for_backend(1, 0).unwrap();
        let b = Pool::for_backend(1, 1).unwrap();
        let t = b.add("b").unwrap();
        assert!(a.get(&t).is_none());
        assert_eq!(a.release(t, true), Released::Rejected);
    }

    #[test]
    fn token_with_out_of_range_slot_is_rejected() {
        let big = Pool::new(4).unwrap();
        let small = Pool::<i32>::new(1).unwrap();
        let t0 = big.add(0).unwrap();
        let t1 = big.add(1).unwrap();
        assert_eq!(t1.slot(), 1);
        assert!(small.get(&t1).is_none());
        assert_eq!(small.release(t1, false), Released::Rejected);
        assert_eq!(big.release(t0, true), Released::Returned);
    }

    #[test]
    fn drain_of_idle_connection_closes_it_now() {
        let drops = counter();
        let pool = Pool::new(1).unwrap();
        let t = pool.add(conn(1, &drops)).unwrap();
        let id = t.conn_id();
        pool.release(t, true);
        assert!(pool.drain(id));
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(pool.stats().empty, 1);
        assert!(
            !pool.drain(id),
            "a closed connection cannot be drained twice"
        );
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn drain_of_held_connection_waits_for_release_even_with_keep() {
        let drops = counter();
        let pool = Pool::new(1).unwrap();
        let t = pool.add(conn(1, &drops)).unwrap();
        assert!(pool.drain(t.conn_id()));
        assert_eq!(pool.stats().draining, 1);
        assert_eq!(drops.load(Ordering::SeqCst), 0, "not dropped while held");
        assert_eq!(
            pool.get(&t).unwrap().id,
            1,
            "the holder keeps access while draining"
        );
        assert!(
            pool.drain(t.conn_id()),
            "draining again is a no-op that still says yes"
        );
        assert_eq!(pool.release(t, true), Released::Closed);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert!(
            pool.acquire().is_none(),
            "a drained connection is never handed out again"
        );
        assert_eq!(pool.stats().empty, 1);
    }

    #[test]
    fn stale_conn_id_does_not_drain_new_connection() {
        let drops = counter();
        let pool = Pool::new(1).unwrap();
        let t = pool.add(conn(1, &drops)).unwrap();
        let old = t.conn_id();
        pool.release(t, false);
        let t = pool.add(conn(2, &drops)).unwrap();
        assert_eq!(t.slot(), old.slot(), "same slot reused");
        assert_ne!(t.conn_id(), old);
        assert!(!pool.drain(old));
        assert_eq!(pool.stats().in_use, 1);
        assert_eq!(pool.release(t, true), Released::Returned);
        assert!(!pool.drain(old));
        assert_eq!(pool.stats().available, 1);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn conn_id_is_stable_across_acquire_and_release() {
        let pool = Pool::new(1).unwrap();
        let t = pool.add(()).unwrap();
        let id = t.conn_id();
        pool.release(t, true);
        let t = pool.acquire().unwrap();
        assert_eq!(t.conn_id(), id);
        pool.release(t, true);
    }

    #[test]
    fn drain_all_closes_idle_now_and_held_at_release() {
        let drops = counter();
        let pool = Pool::new(3).unwrap();
        let held = pool.add(conn(1, &drops)).unwrap();
        let idle = pool.add(conn(2, &drops)).unwrap();
        pool.release(idle, true);
        assert_eq!(pool.drain_all(), 2);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(
            pool.stats(),
            Stats {
                empty: 2,
                draining: 1,
                ..Stats::default()
            }
        );
        assert_eq!(pool.drain_all(), 0, "already draining is not counted again");
        assert_eq!(pool.release(held, true), Released::Closed);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        assert_eq!(pool.stats().empty, 3);
    }

    #[test]
    fn dropping_the_pool_drops_every_connection_once() {
        let drops = counter();
        let pool = Pool::new(4).unwrap();
        let a = pool.add(conn(1, &drops)).unwrap();
        let b = pool.add(conn(2, &drops)).unwrap();
        pool.release(a, true);
        let _still_held = b; // a token outliving its pool is inert data
        drop(pool);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn evict_idle_closes_only_matching_idle_connections() {
        let drops = counter();
        let pool = Pool::new(3).unwrap();
        let mut held = None;
        for id in 0..3 {
            let t = pool.add(conn(id, &drops)).unwrap();
            if id < 2 {
                pool.release(t, true);
            } else {
                held = Some(t); // held: must not be looked at
            }
        }
        assert_eq!(pool.evict_idle(|c| c.id == 0), 1);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(
            pool.stats(),
            Stats {
                empty: 1,
                available: 1,
                in_use: 1,
                draining: 0
            }
        );
        let t = pool.acquire().unwrap();
        assert_eq!(pool.get(&t).unwrap().id, 1);
        pool.release(t, true);
        let held = held.unwrap();
        assert_eq!(pool.get(&held).unwrap().id, 2);
        pool.release(held, true);
    }

    #[test]
    fn evict_idle_closes_the_connection_its_predicate_panicked_on() {
        let drops = counter();
        let pool = Pool::new(1).unwrap();
        let t = pool.add(conn(0, &drops)).unwrap();
        pool.release(t, true);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.evict_idle(|_| panic!("predicate failed"))
        }));
        assert!(r.is_err());
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(pool.stats().empty, 1, "no slot stays in_use");
    }

    #[test]
    fn generation_advances_on_add_and_wraps_within_30_bits() {
        let pool = Pool::<()>::new(1).unwrap();
        let t = pool.add(()).unwrap();
        let g1 = t.conn_id().generation();
        pool.release(t, false);
        let t = pool.add(()).unwrap();
        assert_eq!(t.conn_id().generation(), crate::word::next_gen(g1));
        assert!(t.conn_id().generation() <= crate::word::GEN_MAX);
        pool.release(t, false);
    }

    #[test]
    fn acquire_spreads_over_slots_and_finds_every_available_one() {
        let pool = Pool::new(8).unwrap();
        let tokens: Vec<_> = (0..8).map(|i| pool.add(i).unwrap()).collect();
        for t in tokens {
            pool.release(t, true);
        }
        let mut got: Vec<_> = std::iter::from_fn(|| pool.acquire()).collect();
        assert_eq!(got.len(), 8);
        let mut ids: Vec<_> = got.iter().map(|t| *pool.get(t).unwrap()).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..8).collect::<Vec<_>>());
        for t in got.drain(..) {
            pool.release(t, true);
        }
    }
}
