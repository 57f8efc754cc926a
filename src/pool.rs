//! [`Pool`]: the slots of one backend and the raw token operations on them.
//!
//! This is the engine, as parking_lot's raw locks stand under `lock_api`'s guards: it deals
//! in [`Token`]s only. The owners that release on drop ([`Lease`](crate::Lease),
//! [`Reservation`](crate::Reservation)) and the ways to wait ([`Checkout`](crate::Checkout))
//! are built on it in their own modules.

mod hint;

use std::fmt;

use crossbeam_utils::CachePadded;

use crate::error::SizeError;
use crate::slot::Slot;
use crate::stats::Stats;
use crate::token::{ConnId, PoolId, Token};
use crate::wait::Waiters;
use crate::word::{Generation, SlotState, Word};
use hint::ScanHint;

/// Most slots one pool can have (a token names its slot in 16 bits).
pub const MAX_SLOTS: usize = 1 << 16;

/// What [`Pool::release`] did with the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Back in the pool: handed to the longest waiter, or available to the next `acquire`.
    Returned,
    /// Closed (dropped): `keep` was false, or the connection was draining.
    Closed,
    /// The token was not issued by this pool (another pool, another backend, or a pool that
    /// no longer exists); nothing was changed and nothing was dropped.
    Rejected,
}

/// What a releaser hands to the waiter at the front of the queue: the slot it freed, taken
/// back for that waiter, with its connection or (after a close) empty and reserved.
#[derive(Debug)]
pub(crate) enum Handoff {
    /// A held slot with its connection.
    Conn(Token),
    /// A held slot without a connection (a reservation).
    Vacant(Token),
}

/// A fixed array of connection slots for one backend, handing out [`Token`]s.
///
/// All operations take `&self` and are lock-free: each moves one slot word by a single
/// compare-and-swap (see the crate docs for the state machine). Only waiting
/// ([`acquire_timeout`](Pool::acquire_timeout), [`acquire_wait`](Pool::acquire_wait)) takes a
/// lock, and only while a waiter registers or is woken.
///
/// This type's own methods are the raw, low-level API: a [`Token`] from [`acquire`](Pool::acquire)
/// or [`add`](Pool::add) must be given back to [`release`](Pool::release). The RAII API
/// ([`acquire_lease`](Pool::acquire_lease), [`reserve`](Pool::reserve), the waiting methods)
/// releases on drop.
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
    id: PoolId,
    backend: u16,
    slots: Box<[CachePadded<Slot<T>>]>,
    waiters: Waiters<Handoff>,
}

// SAFETY: a `Pool<T>` hands out access to each connection to one holder at a time (the holder
// of the slot's token, which is `!Sync`), like a `Mutex<T>`; connections move between threads
// but are never shared, so `T: Send` is all that sharing the pool needs.
unsafe impl<T: Send> Sync for Pool<T> {}

impl<T> Pool<T> {
    /// A pool of `slots` empty slots.
    ///
    /// # Errors
    /// [`SizeError`] unless `1 <= slots <= MAX_SLOTS` and the slots can be allocated.
    ///
    /// # Panics
    /// Only if 2^64 - 1 pools have been created in this process (see
    /// [`std::thread::ThreadId`] for the same rule): pool identities are never reused.
    pub fn new(slots: usize) -> Result<Self, SizeError> {
        Self::for_backend(slots, 0)
    }

    pub(crate) fn for_backend(slots: usize, backend: u16) -> Result<Self, SizeError> {
        SizeError::check("slots", slots, MAX_SLOTS)?;
        let mut v = Vec::new();
        v.try_reserve_exact(slots)
            .map_err(|_| SizeError::Alloc { slots })?;
        v.extend((0..slots).map(|_| CachePadded::new(Slot::new())));
        Ok(Pool {
            id: PoolId::next(),
            backend,
            slots: v.into_boxed_slice(),
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

    /// The slot `token` holds, if this pool issued it. The pool identity is compared before
    /// any slot is touched; the backend and the slot index are checked too, so that even a
    /// token that claimed this pool's identity could not reach outside its slots.
    #[inline(always)]
    fn slot_of(&self, token: &Token) -> Option<&Slot<T>> {
        if token.pool_id() != self.id || token.backend() != usize::from(self.backend) {
            return None;
        }
        self.slots.get(token.slot()).map(|s| &**s)
    }

    /// The token for slot `slot` held with word `held`.
    #[inline(always)]
    pub(crate) fn token(&self, held: Word, slot: usize) -> Token {
        // `slot < MAX_SLOTS` was checked in `new`, so it fits in 16 bits.
        Token::new(self.id, held, slot as u16, self.backend)
    }

    /// Takes exclusive access to an available connection, or `None` if none is available now
    /// (it does not wait; see [`acquire_timeout`](Pool::acquire_timeout) and
    /// [`acquire_wait`](Pool::acquire_wait)). The raw form of
    /// [`acquire_lease`](Pool::acquire_lease): the token must be given to
    /// [`release`](Pool::release).
    ///
    /// The search starts at the slot this thread acquired last (likely the one it just
    /// returned), so threads spread over the slots instead of fighting over the first.
    #[inline]
    pub fn acquire(&self) -> Option<Token> {
        // Fast path: the connection this thread returned last is most likely still there,
        // `Available` with the word it left. CAS from that predicted word at once, without
        // loading the word first: on one thread the load would wait for our own previous
        // release CAS of the same word to complete, a stall that costs about a third of a
        // checkout+return pair. The CAS is exactly `try_acquire`'s: from an exact `Available`
        // word (state *and* generation) to the same generation `InUse`, so a stale prediction
        // (taken meanwhile, closed, another connection since) just fails and we scan.
        let hint = hint::get();
        if let Some(word) = hint.predicted(self.id) {
            // A hint about this pool names one of its slots, so `get` always finds it.
            if let Some(slot) = self.slots.get(hint.slot) {
                if let Some(held) = slot.acquire_from(word) {
                    return Some(self.token(held, hint.slot));
                }
            }
        }
        self.acquire_scan()
    }

    /// Like [`acquire`](Pool::acquire), but only slot `slot` (modulo the capacity): no scan,
    /// and this thread's hint is left as it is. For a caller with placement of its own (the
    /// HTTP/2 layer's runtime affinity); the same transition as `acquire`'s.
    pub(crate) fn try_acquire_at(&self, slot: usize) -> Option<Token> {
        let i = slot % self.slots.len();
        let held = self.slots[i].try_acquire()?;
        Some(self.token(held, i))
    }

    /// Like [`claim_empty`](Pool::claim_empty), but only slot `slot` (modulo the capacity).
    pub(crate) fn claim_empty_at(&self, slot: usize) -> Option<Token> {
        let i = slot % self.slots.len();
        let held = self.slots[i].try_claim_empty()?;
        Some(self.token(held, i))
    }

    /// `acquire` without a (right) prediction: every slot once, from the hinted one on.
    #[inline(never)]
    fn acquire_scan(&self) -> Option<Token> {
        let n = self.slots.len();
        let start = hint::get_for_scan().start(n);
        let mut i = start;
        loop {
            if let Some(held) = self.slots[i].try_acquire() {
                // `release(keep)` leaves this very word back in the slot, so it is the
                // prediction for our next acquire.
                hint::set(ScanHint::new(
                    self.id,
                    i,
                    held.with_state(SlotState::Available),
                ));
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

    /// Adds a new connection to an empty slot and returns exclusive access to it (a raw token,
    /// to be given to [`release`](Pool::release)).
    ///
    /// # Errors
    /// A full pool hands the connection back untouched: nothing is lost or dropped.
    pub fn add(&self, conn: T) -> Result<Token, T> {
        match self.claim_empty() {
            Some(mut token) => {
                self.put(&mut token, conn);
                Ok(token)
            }
            None => Err(conn),
        }
    }

    /// Claims an empty slot before its connection exists; its token has no connection until
    /// [`put`](Pool::put). For the reservation types, which never let such a token out.
    pub(crate) fn claim_empty(&self) -> Option<Token> {
        self.slots
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.try_claim_empty().map(|held| self.token(held, i)))
    }

    /// Writes `conn` into the slot `token` holds (a claimed empty slot).
    pub(crate) fn put(&self, token: &mut Token, conn: T) {
        match self.cell_mut(token) {
            Some(cell) => {
                debug_assert!(cell.is_none(), "put into a slot that has a connection");
                *cell = Some(conn);
            }
            None => debug_assert!(false, "put with a token of another pool"),
        }
    }

    /// The connection cell `token` holds, if this pool issued `token`.
    #[inline(always)]
    fn cell<'a>(&'a self, token: &'a Token) -> Option<&'a Option<T>> {
        let slot = self.slot_of(token)?;
        debug_assert!(
            slot.load().is_held_by(token.held()),
            "a live token holds its slot"
        );
        // SAFETY: `token` was issued by this pool (the identity is unique in the process and
        // checked above, with the backend and the slot index) and is live (tokens are
        // move-only and `release` consumes them). The pool moves a slot out of
        // InUse/Draining only for the party that holds it (`release`, and the pool's own
        // drains and evictions of slots *they* took), so the slot stays held by `token`, and
        // no one else touches the cell, for as long as `token` is borrowed ('a): a `&Token`
        // is all a caller has, and `Token` is `!Sync`, so the only references to the cell
        // made meanwhile are shared ones like this. No load of the slot word is needed for
        // that (the word could only confirm it); debug builds check it anyway.
        Some(unsafe { slot.cell() })
    }

    /// The connection cell `token` holds, mutably, if this pool issued `token`.
    #[inline(always)]
    fn cell_mut<'a>(&'a self, token: &'a mut Token) -> Option<&'a mut Option<T>> {
        let slot = self.slot_of(token)?;
        debug_assert!(
            slot.load().is_held_by(token.held()),
            "a live token holds its slot"
        );
        // SAFETY: as in `cell`; and `token` is borrowed mutably for 'a, so no other reference
        // to this cell can be made through the pool meanwhile.
        Some(unsafe { slot.cell_mut() })
    }

    /// Shared access to the connection `token` holds, or `None` if this pool did not issue
    /// the token. Compares the pool identity, backend and slot index; reads no atomic.
    #[inline(always)]
    pub fn get<'a>(&'a self, token: &'a Token) -> Option<&'a T> {
        self.cell(token)?.as_ref()
    }

    /// Exclusive access to the connection `token` holds, or `None` if this pool did not issue
    /// the token.
    #[inline(always)]
    pub fn get_mut<'a>(&'a self, token: &'a mut Token) -> Option<&'a mut T> {
        self.cell_mut(token)?.as_mut()
    }

    /// Gives up `token`: `keep = true` returns the connection to the pool (unless it was
    /// drained meanwhile, in which case it is closed), `keep = false` closes it. Closing drops
    /// the connection, exactly once, after the slot is free again. A freed slot goes to the
    /// longest waiter first (see [`acquire_timeout`](Pool::acquire_timeout)).
    ///
    /// A token this pool did not issue is answered [`Released::Rejected`] and changes nothing.
    #[inline]
    pub fn release(&self, token: Token, keep: bool) -> Released {
        let Some(slot) = self.slot_of(&token) else {
            // Not ours: dropping it counts it as unreleased (its own pool never got it back).
            return Released::Rejected;
        };
        let (held, i) = token.consume();
        if keep {
            match slot.release_keep(held) {
                Ok(available) => {
                    self.waiters
                        .notify_one_with(|| self.take_back_available(i, available));
                    return Released::Returned;
                }
                // Draining: still ours, and it must be closed now.
                Err(seen) => debug_assert!(seen.is_held_by(held), "{seen:?} under {held:?}"),
            }
        }
        self.close(i, held);
        Released::Closed
    }

    /// Gives back what a releaser handed to a waiter that no longer wants it.
    pub(crate) fn release_handoff(&self, handoff: Handoff) {
        let _ = match handoff {
            Handoff::Conn(token) => self.release(token, true),
            // No connection in it: closing just empties the slot.
            Handoff::Vacant(token) => self.release(token, false),
        };
    }

    /// For the waiter a release is about to wake: the connection just made `available` in
    /// slot `i`, taken back (one CAS from that exact word) unless another thread took it first.
    fn take_back_available(&self, i: usize, available: Word) -> Option<Handoff> {
        let held = self.slots[i].acquire_from(available)?;
        Some(Handoff::Conn(self.token(held, i)))
    }

    /// Closes slot `i`, which we hold with `held`: empties it, hands it (reserved) to the
    /// longest waiter if there is one, then drops the connection.
    #[inline(never)]
    fn close(&self, i: usize, held: Word) {
        let (conn, empty) = self.slots[i].close_held(held);
        self.waiters.notify_one_with(|| {
            let held = self.slots[i].claim_empty_from(empty)?;
            Some(Handoff::Vacant(self.token(held, i)))
        });
        drop(conn);
    }

    /// Drains the connection `id` names: closes it now if it is idle, or marks it `draining`
    /// so that its holder's release closes it. Returns `false` if that connection is no longer
    /// in the pool (closed already) or this pool did not issue the id.
    pub fn drain(&self, id: ConnId) -> bool {
        if id.pool_id() != self.id || id.backend() != usize::from(self.backend) {
            return false;
        }
        match self.slots.get(id.slot()) {
            Some(_) => self.drain_slot(id.slot(), Some(id.gen())),
            None => false,
        }
    }

    /// Drains every connection: idle ones are closed now, held ones when released. Returns
    /// how many connections this call closed or marked (already draining ones not counted).
    pub fn drain_all(&self) -> usize {
        (0..self.slots.len())
            .filter(|&i| self.drain_slot(i, None))
            .count()
    }

    /// Shared loop of `drain` (`only = Some(generation)`) and `drain_all` (`only = None`).
    fn drain_slot(&self, i: usize, only: Option<Generation>) -> bool {
        let slot = &self.slots[i];
        loop {
            let cur = slot.load();
            if only.is_some_and(|g| g != cur.generation()) {
                return false;
            }
            let held = cur.with_state(SlotState::InUse);
            match cur.state() {
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
                        self.close(i, held);
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
            if cur.state() != SlotState::Available {
                continue;
            }
            let Some(held) = slot.acquire_from(cur) else {
                continue;
            };
            let guard = CloseOnDrop {
                pool: self,
                token: Some(self.token(held, i)),
            };
            let gone = guard.conn().is_some_and(&mut evict);
            if guard.release(!gone) == Released::Closed {
                closed += 1;
            }
        }
        closed
    }

    /// A snapshot of how many slots are in each state, read from the slot words (so the
    /// counts cannot drift or underflow), and how many callers wait. Under concurrent use
    /// each slot is read at a slightly different moment. Reads no lock.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            waiters: self.waiters.hint_len(),
            ..Stats::default()
        };
        for slot in self.slots.iter() {
            match slot.load().state() {
                SlotState::Empty => stats.empty += 1,
                SlotState::Available => stats.available += 1,
                SlotState::InUse => stats.in_use += 1,
                SlotState::Draining => stats.draining += 1,
            }
        }
        stats
    }

    /// How many waiters the wait queue holds, counted in the queue itself under its lock.
    /// For tests that check that no waiter is left behind; [`Stats::waiters`] is the
    /// lock-free figure for monitoring.
    #[doc(hidden)]
    pub fn queued_waiters(&self) -> usize {
        self.waiters.len()
    }

    /// The wait queue (for the waiting module).
    pub(crate) fn waiters(&self) -> &Waiters<Handoff> {
        &self.waiters
    }
}

/// A slot the pool took for itself (an idle connection under `evict_idle`'s predicate),
/// closed if anything unwinds before it is released: the one `Drop` for every exit path.
struct CloseOnDrop<'a, T> {
    pool: &'a Pool<T>,
    token: Option<Token>,
}

impl<T> CloseOnDrop<'_, T> {
    fn conn(&self) -> Option<&T> {
        self.pool.get(self.token.as_ref()?)
    }

    fn release(mut self, keep: bool) -> Released {
        match self.token.take() {
            Some(t) => self.pool.release(t, keep),
            None => Released::Rejected,
        }
    }
}

impl<T> Drop for CloseOnDrop<'_, T> {
    fn drop(&mut self) {
        if let Some(t) = self.token.take() {
            self.pool.release(t, false);
        }
    }
}

impl<T> fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("id", &self.id)
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
        assert!(matches!(
            Pool::<()>::new(0),
            Err(SizeError::OutOfRange {
                what: "slots",
                requested: 0,
                ..
            })
        ));
        assert!(matches!(
            Pool::<()>::new(MAX_SLOTS + 1),
            Err(SizeError::OutOfRange { max: MAX_SLOTS, .. })
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
                ..Stats::default()
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
        assert_eq!(t.conn_id().generation(), g1 + 1);
        assert!(t.conn_id().generation() <= Generation::MAX.get());
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
