//! The per-thread scan hint: where this thread's next `acquire` starts, and which word it
//! expects to find there. Pool policy, not a primitive: it only ever saves work, and a wrong
//! or stale hint costs one failed compare-and-swap and a scan, never a wrong acquire.

use std::cell::Cell;

use crate::sync::thread_local;
use crate::token::PoolId;
use crate::word::{SlotState, Word};

/// Where a thread starts its next `acquire`: the pool and slot it acquired last, and the
/// `Available` word it expects to find there once it returned that connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ScanHint {
    /// The pool the hint is about ([`PoolId::get`]; 0 names no pool).
    pool: u64,
    /// Slot index to start the scan at (taken modulo the pool's size).
    pub(super) slot: usize,
    /// The predicted slot word; predicts nothing unless its state is `Available`.
    word: Word,
}

impl ScanHint {
    /// Not set yet on this thread (`slot` is never `usize::MAX` otherwise).
    const UNSET: ScanHint = ScanHint {
        pool: 0,
        slot: usize::MAX,
        word: Word::from_bits(0),
    };

    /// A hint for `pool`: start at `slot`, expecting `word` there.
    #[inline(always)]
    pub(super) fn new(pool: PoolId, slot: usize, word: Word) -> ScanHint {
        debug_assert_eq!(word.state(), SlotState::Available);
        ScanHint {
            pool: pool.get(),
            slot,
            word,
        }
    }

    /// The `Available` word this hint predicts at [`slot`](ScanHint::slot) of `pool`, if it is
    /// about `pool`. Hints are only ever made from `Available` words, and no pool has
    /// identity 0, so one compare decides.
    #[inline(always)]
    pub(super) fn predicted(&self, pool: PoolId) -> Option<Word> {
        (self.pool == pool.get()).then_some(self.word)
    }

    /// Where to start scanning a pool of `n` slots.
    #[inline]
    pub(super) fn start(&self, n: usize) -> usize {
        if self.slot < n {
            self.slot
        } else {
            self.slot % n
        }
    }
}

#[cfg(not(all(loom, feature = "loom")))]
thread_local! {
    /// Where this thread acquired last; [`ScanHint::UNSET`] until its first `acquire`.
    static HINT: Cell<ScanHint> = const { Cell::new(ScanHint::UNSET) };
}

// loom's `thread_local!` takes no `const { }` initializer.
#[cfg(all(loom, feature = "loom"))]
thread_local! {
    /// Where this thread acquired last; [`ScanHint::UNSET`] until its first `acquire`.
    static HINT: Cell<ScanHint> = Cell::new(ScanHint::UNSET);
}

/// This thread's hint: the slot it acquired last (where the connection it just returned is
/// most likely still available) and the word it left there. Before the thread's first
/// `acquire` it predicts nothing; see [`get_for_scan`].
#[inline(always)]
pub(super) fn get() -> ScanHint {
    HINT.with(Cell::get)
}

/// This thread's hint for a scan: as [`get`], or on first use a per-thread start, so that
/// threads do not all fight over slot 0.
#[inline]
pub(super) fn get_for_scan() -> ScanHint {
    let h = HINT.with(Cell::get);
    if h.slot != usize::MAX {
        return h;
    }
    let h = ScanHint {
        slot: first_slot(),
        ..ScanHint::UNSET
    };
    HINT.with(|c| c.set(h));
    h
}

/// Records where this thread just acquired.
#[inline(always)]
pub(super) fn set(hint: ScanHint) {
    HINT.with(|c| c.set(hint));
}

/// A distinct first slot per thread.
#[cfg(not(all(loom, feature = "loom")))]
fn first_slot() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    /// Hands out distinct first hints.
    static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);
    // Relaxed: the counter only needs distinct values, not ordering with other memory.
    NEXT_THREAD.fetch_add(1, Ordering::Relaxed) & usize::from(u16::MAX)
}

/// Under loom every thread starts at slot 0, so that a model's runs are deterministic; the
/// prediction itself (the fast path of `acquire`) works as in the shipped code.
#[cfg(all(loom, feature = "loom"))]
fn first_slot() -> usize {
    0
}
