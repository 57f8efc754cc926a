//! One slot: its word and the connection cell it guards, with one function per transition.
//!
//! Every transition is a compare-and-swap from an exact expected word (state *and*
//! generation); see [`SlotState`] for the table. The connection cell is touched only by the
//! party whose CAS moved the slot into `InUse` (the holder), between that CAS and the CAS that
//! moves it out of `InUse`/`Draining`.

use crate::sync::{AtomicU32, Ordering, UnsafeCell};
use crate::word::{Generation, SlotState, Word};

/// A slot: a word and the connection it guards.
#[derive(Debug)]
pub(crate) struct Slot<T> {
    word: AtomicU32,
    conn: UnsafeCell<Option<T>>,
}

impl<T> Slot<T> {
    /// An empty slot whose first connection gets generation 1.
    pub(crate) fn new() -> Self {
        Slot {
            word: AtomicU32::new(Word::new(SlotState::Empty, Generation::ZERO).to_bits()),
            conn: UnsafeCell::new(None),
        }
    }

    /// The current word, for validation and statistics only.
    #[inline(always)]
    pub(crate) fn load(&self) -> Word {
        // Relaxed: callers only compare the word; whoever then touches the connection has
        // already synchronized through the CAS that made it the holder (see `try_acquire`),
        // and a token moved to another thread carries that happens-before with it.
        Word::from_bits(self.word.load(Ordering::Relaxed))
    }

    /// One compare-and-swap of the word from exactly `cur` to `new`.
    #[inline(always)]
    fn cas(&self, cur: Word, new: Word, success: Ordering) -> Result<Word, Word> {
        self.word
            .compare_exchange(cur.to_bits(), new.to_bits(), success, Ordering::Relaxed)
            .map(Word::from_bits)
            .map_err(Word::from_bits)
    }

    /// `Available(g)` → `InUse(g)` if the slot is available. Returns the held word.
    #[inline(always)]
    pub(crate) fn try_acquire(&self) -> Option<Word> {
        let cur = self.load();
        if cur.state() != SlotState::Available {
            return None;
        }
        self.acquire_from(cur)
    }

    /// `Available(g)` → `InUse(g)` from exactly `cur` (an `Available` word), so a caller that
    /// decided on the connection of generation g never takes another one.
    #[inline(always)]
    pub(crate) fn acquire_from(&self, cur: Word) -> Option<Word> {
        debug_assert_eq!(cur.state(), SlotState::Available);
        let held = cur.with_state(SlotState::InUse);
        // Acquire on success: pairs with the SeqCst (⊇ Release) CAS of `release_keep` (or the
        // adder's), so the new holder sees every write the previous holder made to the
        // connection. Relaxed on failure: we touch nothing then.
        self.cas(cur, held, Ordering::Acquire).ok().map(|_| held)
    }

    /// `Empty(g)` → `InUse(g+1)`: claims the slot for a new connection. Returns the held word.
    #[inline]
    pub(crate) fn try_claim_empty(&self) -> Option<Word> {
        let cur = self.load();
        if cur.state() != SlotState::Empty {
            return None;
        }
        self.claim_empty_from(cur)
    }

    /// `Empty(g)` → `InUse(g+1)` from exactly `cur` (an `Empty` word). Returns the held word.
    #[inline]
    pub(crate) fn claim_empty_from(&self, cur: Word) -> Option<Word> {
        debug_assert_eq!(cur.state(), SlotState::Empty);
        let held = Word::new(SlotState::InUse, cur.generation().next());
        // Acquire on success: pairs with the SeqCst (⊇ Release) CAS of `close_held`, so the
        // previous holder's `take` of the old connection happens before our write of the new.
        self.cas(cur, held, Ordering::Acquire).ok().map(|_| held)
    }

    /// `InUse(g)` → `Available(g)`. On failure returns the word found: `Draining(g)` when the
    /// connection was marked for eviction (the caller must then close it), anything else when
    /// `held` is not this slot's holder.
    #[inline(always)]
    pub(crate) fn release_keep(&self, held: Word) -> Result<Word, Word> {
        // SeqCst on success: Release so the next acquirer sees our writes to the connection,
        // and sequentially consistent because `Waiters::notify_one` follows it with a SeqCst
        // load of the waiter count (the store-buffering pair of the wake-up protocol).
        // Relaxed on failure: a draining slot is still ours, and we only read our own writes.
        let available = held.with_state(SlotState::Available);
        self.cas(held, available, Ordering::SeqCst)
            .map(|_| available)
    }

    /// `InUse(g)` → `Draining(g)`. Returns whether this call marked it.
    #[inline]
    pub(crate) fn mark_draining(&self, held: Word) -> bool {
        // Relaxed: the drainer publishes no data; the holder only needs to *see* the mark in
        // its release CAS, and a CAS always reads the latest value of the word.
        self.cas(
            held,
            held.with_state(SlotState::Draining),
            Ordering::Relaxed,
        )
        .is_ok()
    }

    /// `InUse(g)`/`Draining(g)` → `Empty(g)`, taking the connection out first. The caller must
    /// be the holder of `held` (checked by the caller against the word). Returns the connection
    /// so that it is dropped outside the slot, after the slot is free again.
    pub(crate) fn close_held(&self, held: Word) -> (Option<T>, Word) {
        // SAFETY: the caller holds the slot (its word is `held` or `held | DRAINING_BIT`), so
        // no other thread reads or writes `conn` until our CAS below publishes `Empty`.
        let conn = self.conn.with_mut(|c| unsafe { (*c).take() });
        let empty = held.with_state(SlotState::Empty);
        // SeqCst on success: Release so the next adder's write of a new connection happens
        // after our `take`, and sequentially consistent for the wake-up protocol (see
        // `release_keep`). Relaxed on failure: we only retry from the one other word possible.
        if self.cas(held, empty, Ordering::SeqCst).is_err() {
            // Only the holder moves a held slot out of InUse/Draining, and we are it; the one
            // move anyone else makes is a drainer's `InUse(g)` → `Draining(g)`, after which the
            // word cannot change again until we empty it.
            let draining = held.with_state(SlotState::Draining);
            let closed = self.cas(draining, empty, Ordering::SeqCst);
            debug_assert!(
                closed.is_ok(),
                "held slot changed under its holder: {closed:?}"
            );
        }
        (conn, empty)
    }

    /// Shared access to the connection cell (`None` in a reserved slot not yet filled).
    ///
    /// # Safety
    /// The caller holds the slot for as long as the returned reference lives, and no `&mut`
    /// to the cell exists meanwhile (the token's borrow rules guarantee it).
    #[inline(always)]
    pub(crate) unsafe fn cell(&self) -> &Option<T> {
        // SAFETY: by the function contract no one writes the cell while the reference lives.
        self.conn.with(|c| unsafe { &*c })
    }

    /// Exclusive access to the connection cell.
    ///
    /// # Safety
    /// The caller holds the slot for as long as the returned reference lives, and no other
    /// reference to the cell exists meanwhile (the token is borrowed mutably).
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn cell_mut(&self) -> &mut Option<T> {
        // SAFETY: by the function contract ours is the only reference while it lives.
        self.conn.with_mut(|c| unsafe { &mut *c })
    }
}
