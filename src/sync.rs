//! The one place that decides which atomics, cells, locks and thread primitives are real.
//!
//! Under `--cfg loom` with the `loom` feature (how `loom-tests/` builds this crate) every type here
//! comes from [`loom`], so the model checker explores the very code that ships. Everywhere else
//! the `std` types are re-exported unchanged. No other module imports atomics, `UnsafeCell`,
//! `Mutex`, `Arc`, thread-locals or thread parking from `std` directly. This module holds
//! primitives only: no pool policy.
//!
//! The gate is `all(loom, feature = "loom")` rather than `all(test, loom)`: `cfg(test)` is not
//! set when the crate is compiled as a dependency of the separate `loom-tests` crate.

#[cfg(all(loom, feature = "loom"))]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::{fence, AtomicU32, Ordering};
    pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
    pub(crate) use loom::thread::{current, Thread};
    pub(crate) use loom::thread_local;

    /// loom has no timed park; a model never relies on a timeout firing, so parking until
    /// unparked is the faithful stand-in (a missing unpark shows up as a loom deadlock).
    pub(crate) fn park_timeout(_dur: std::time::Duration) {
        loom::thread::park();
    }

    /// loom models `SeqCst` only on fences, not on loads, stores or read-modify-writes
    /// (tokio-rs/loom#180), so the store-buffering pair of the wake-up protocol gets a real
    /// fence here. See the std side for why std builds need none.
    pub(crate) fn sc_fence_after_rmw() {
        fence(Ordering::SeqCst);
    }

    /// Spinning only grows a model's state space: waiters park at once.
    pub(crate) const SPINS: u32 = 0;

    /// A stand-in for crossbeam's `Backoff` (never called under loom, as [`SPINS`] is 0).
    #[derive(Debug, Default)]
    pub(crate) struct Backoff;

    impl Backoff {
        pub(crate) fn new() -> Self {
            Backoff
        }
        pub(crate) fn spin(&self) {}
    }
}

#[cfg(not(all(loom, feature = "loom")))]
mod imp {
    pub(crate) use std::sync::atomic::{fence, AtomicU32, Ordering};
    pub(crate) use std::sync::{Arc, Mutex, MutexGuard};
    pub(crate) use std::thread::{current, park_timeout, Thread};
    pub(crate) use std::thread_local;

    pub(crate) use crossbeam_utils::Backoff;

    /// How many exponential spin steps a waiter tries before it queues and parks: 2^0 + … +
    /// 2^5 = 63 `spin_loop` hints, well under a microsecond. No `yield_now` phase: a waiter
    /// that yields its core is not in the queue yet, so it gets no hand-off, and on a busy
    /// machine it may not run again for a whole scheduler slice while others take the slot.
    pub(crate) const SPINS: u32 = 6;

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
}

pub(crate) use imp::*;

/// Locks `m`, ignoring poisoning.
///
/// Every lock in this crate guards a value that each critical section leaves consistent at
/// every point a panic can start (a push, a pop, a take, a replace), so a lock poisoned by a
/// panicking holder is still safe to use, and refusing it would turn one panic into many.
#[inline]
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
