//! The one place that decides which atomics, cells and thread primitives are real.
//!
//! Under `--cfg loom` with the `loom` feature (how `loom-tests/` builds this crate) every type here
//! comes from [`loom`], so the model checker explores the very code that ships. Everywhere else
//! the `std` types are re-exported unchanged. No other module imports atomics, `UnsafeCell`,
//! `Mutex`, `Arc` or thread parking from `std` directly.
//!
//! The gate is `all(loom, feature = "loom")` rather than `all(test, loom)`: `cfg(test)` is not
//! set when the crate is compiled as a dependency of the separate `loom-tests` crate.

#[cfg(all(loom, feature = "loom"))]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::{fence, AtomicU32, Ordering};
    pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
    pub(crate) use loom::thread::{current, Thread};

    /// loom has no timed park; a model never relies on a timeout firing, so parking until
    /// unparked is the faithful stand-in (a missing unpark shows up as a loom deadlock).
    pub(crate) fn park_timeout(_dur: std::time::Duration) {
        loom::thread::park();
    }

    /// loom models `SeqCst` only on fences, not on loads, stores or read-modify-writes
    /// (tokio-rs/loom#180), so the store-buffering pair in [`crate::wait`] gets a real fence
    /// here. See [`sc_fence_after_rmw`] for why std builds need none.
    pub(crate) fn sc_fence_after_rmw() {
        fence(Ordering::SeqCst);
    }

    /// Under loom the scan always starts at slot 0 and predicts nothing: the hint is a
    /// performance aid, not part of any correctness argument, and a fixed start keeps models
    /// deterministic.
    pub(crate) fn scan_hint() -> super::ScanHint {
        super::ScanHint::NONE
    }

    /// See [`scan_hint`].
    pub(crate) fn set_scan_hint(_hint: super::ScanHint) {}

    /// A spin-then-park helper; under loom spinning only grows the state space, so it is
    /// "completed" from the start and waiters park at once.
    #[derive(Debug, Default)]
    pub(crate) struct Backoff;

    impl Backoff {
        pub(crate) fn new() -> Self {
            Backoff
        }
        pub(crate) fn snooze(&self) {}
        pub(crate) fn is_completed(&self) -> bool {
            true
        }
    }
}

#[cfg(not(all(loom, feature = "loom")))]
mod imp {
    use std::cell::Cell;
    pub(crate) use std::sync::atomic::{fence, AtomicU32, Ordering};
    pub(crate) use std::sync::{Arc, Mutex, MutexGuard};
    pub(crate) use std::thread::{current, park_timeout, Thread};

    pub(crate) use crossbeam_utils::Backoff;

    /// `std::cell::UnsafeCell` with loom's closure-based accessors, so callers are identical
    /// under both builds.
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(value: T) -> Self {
            UnsafeCell(std::cell::UnsafeCell::new(value))
        }

        #[inline(always)]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// Nothing to do on real atomics: the only caller follows a `SeqCst` read-modify-write of a
    /// slot word with a `SeqCst` load of the waiter count, and two `SeqCst` operations on
    /// different locations are ordered by the single total order `S` (C++20 [atomics.order]),
    /// which is exactly the store-buffering guarantee the wake-up protocol needs. On x86 a
    /// `SeqCst` CAS is the same `lock cmpxchg` as any CAS and a `SeqCst` load a plain `mov`, so
    /// release pays nothing for it; a `fence(SeqCst)` here would cost an `mfence` per release.
    #[inline(always)]
    pub(crate) fn sc_fence_after_rmw() {}

    thread_local! {
        /// Where this thread acquired last; `pool == usize::MAX` until first use.
        static HINT: Cell<super::ScanHint> = const {
            Cell::new(super::ScanHint { pool: usize::MAX, ..super::ScanHint::NONE })
        };
    }

    /// Hands out distinct first hints so threads start their searches at different slots.
    static NEXT_THREAD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// Where this thread should try first: the slot it acquired last (where the connection it
    /// just returned is most likely still available) and the word it left there, or on first
    /// use a per-thread start so that threads do not all fight over slot 0.
    #[inline(always)]
    pub(crate) fn scan_hint() -> super::ScanHint {
        let h = HINT.with(Cell::get);
        if h.pool != usize::MAX {
            return h;
        }
        // Relaxed: the counter only needs distinct values, not ordering with other memory.
        let fresh = NEXT_THREAD.fetch_add(1, Ordering::Relaxed) & (u16::MAX as usize);
        let h = super::ScanHint {
            slot: fresh,
            ..super::ScanHint::NONE
        };
        HINT.with(|c| c.set(h));
        h
    }

    /// Records where this thread just acquired.
    #[inline(always)]
    pub(crate) fn set_scan_hint(hint: super::ScanHint) {
        HINT.with(|c| c.set(hint));
    }
}

/// Where a thread starts its next `acquire`: the pool and slot it acquired last, and the
/// `Available` word it expects to find there when it returned that connection.
///
/// Only a hint: a wrong or stale one costs a failed compare-and-swap and a scan, never a wrong
/// acquire (see `Pool::acquire`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ScanHint {
    /// Address of the pool the hint is about (0: none).
    pub(crate) pool: usize,
    /// Slot index to start the scan at (taken modulo the pool's size).
    pub(crate) slot: usize,
    /// The predicted slot word; predicts nothing unless its state is `Available`.
    pub(crate) word: u32,
}

impl ScanHint {
    /// No pool, slot 0, no prediction (word 0 is `Empty`).
    pub(crate) const NONE: ScanHint = ScanHint {
        pool: 0,
        slot: 0,
        word: 0,
    };
}

pub(crate) use imp::*;

/// A starting generation for a new pool's slots.
///
/// Pools start at different points of the 2^30 generation space, so a token or id presented
/// to a pool that did not issue it (a programming error) is rejected unless that pool's slot
/// happens to hold exactly the same generation. Consecutive pools are spaced by the golden
/// ratio of the space, so a collision needs roughly 2^28 connections on one slot first.
/// Under loom every pool starts at 0 to keep models deterministic.
pub(crate) fn pool_seed() -> u32 {
    #[cfg(all(loom, feature = "loom"))]
    {
        0
    }
    #[cfg(not(all(loom, feature = "loom")))]
    {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        // Relaxed: only distinct values matter.
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        n.wrapping_mul(0x9E37_79B9) >> crate::word::STATE_BITS
    }
}
