//! Waiting for a slot: a queue of parked threads and pending tasks, touched only on slow paths.
//!
//! # Protocol
//! A waiter *registers* (pushes a node and bumps `count`), issues a `SeqCst` fence, and then
//! looks at the slots again before it sleeps. A releaser moves a slot word with a `SeqCst`
//! CAS and then loads `count` with `SeqCst`. This is the store-buffering (Dekker) pattern: in
//! the single total order of `SeqCst` operations either the releaser's CAS comes first, and
//! the waiter's second look sees the freed slot, or the waiter's fence comes first, and the
//! releaser sees `count > 0` and wakes a node. So a wake-up is never lost, and a release with
//! no waiters costs one load of a read-mostly cache line.
//!
//! Each freed slot wakes at most one waiter (no thundering herd). A woken waiter that finds
//! the slot taken by a thread that never waited (barging) registers again. A waiter that gives
//! up (timeout, cancelled future) after its node was popped passes the wake-up on, so the slot
//! it was meant for reaches the next waiter.

use std::collections::VecDeque;
use std::task::Waker;

use crate::sync::{current, fence, sc_fence_after_rmw, Arc, AtomicU32, Mutex, Ordering, Thread};

const WAITING: u32 = 0;
const NOTIFIED: u32 = 1;

/// How a waiter is woken.
#[derive(Debug)]
enum Wake {
    Thread(Thread),
    Task(Mutex<Option<Waker>>),
}

/// One waiting thread or task.
#[derive(Debug)]
pub(crate) struct Node {
    state: AtomicU32,
    wake: Wake,
}

impl Node {
    /// Whether this node has been handed a wake-up.
    pub(crate) fn is_notified(&self) -> bool {
        // Acquire: pairs with the Release store in `notify`, so the woken waiter's next look at
        // the slots happens after the release that freed one.
        self.state.load(Ordering::Acquire) == NOTIFIED
    }

    /// Replaces the task waker (async waiters only).
    pub(crate) fn set_waker(&self, waker: &Waker) {
        if let Wake::Task(slot) = &self.wake {
            let mut guard = lock(slot);
            match &*guard {
                Some(w) if w.will_wake(waker) => {}
                _ => *guard = Some(waker.clone()),
            }
        }
    }

    fn notify(&self) {
        // Release: pairs with the Acquire in `is_notified`.
        self.state.store(NOTIFIED, Ordering::Release);
        match &self.wake {
            Wake::Thread(t) => t.unpark(),
            Wake::Task(slot) => {
                // Take the waker under the lock, wake outside it.
                let waker = lock(slot).take();
                if let Some(w) = waker {
                    w.wake();
                }
            }
        }
    }
}

/// The waiters of one pool.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    /// Nodes in the queue; read without the lock by releasers to skip the slow path.
    count: AtomicU32,
    queue: Mutex<VecDeque<Arc<Node>>>,
}

fn lock<T>(m: &Mutex<T>) -> crate::sync::MutexGuard<'_, T> {
    // A panic while the queue lock is held cannot leave the queue inconsistent (every critical
    // section is a single push, pop or remove), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Waiters {
    /// Wakes one waiter, if any; called after every transition that frees a slot.
    #[inline(always)]
    pub(crate) fn notify_one(&self) {
        sc_fence_after_rmw();
        // SeqCst: the releaser's half of the store-buffering pair (module docs).
        if self.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        self.notify_one_slow();
    }

    #[cold]
    fn notify_one_slow(&self) {
        let node = {
            let mut q = lock(&self.queue);
            let node = q.pop_front();
            if node.is_some() {
                // Relaxed: `count` is only a hint for skipping the lock; the queue itself is
                // protected by the lock, and the SeqCst fence in `register` orders the waiter.
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
            node
        };
        if let Some(node) = node {
            node.notify();
        }
    }

    /// Registers the current thread; the caller must look at the slots again afterwards.
    pub(crate) fn register_thread(&self) -> Arc<Node> {
        self.register(Wake::Thread(current()))
    }

    /// Registers a task; the caller must look at the slots again afterwards.
    pub(crate) fn register_task(&self, waker: &Waker) -> Arc<Node> {
        self.register(Wake::Task(Mutex::new(Some(waker.clone()))))
    }

    fn register(&self, wake: Wake) -> Arc<Node> {
        let node = Arc::new(Node {
            state: AtomicU32::new(WAITING),
            wake,
        });
        {
            let mut q = lock(&self.queue);
            q.push_back(node.clone());
            // Relaxed increment; the fence below orders it before our next look at the slots.
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        // SeqCst: the waiter's half of the store-buffering pair (module docs).
        fence(Ordering::SeqCst);
        node
    }

    /// Withdraws a node that will not wait any longer. If it was already popped by a releaser
    /// (so it holds, or is about to hold, a wake-up), the wake-up goes to the next waiter.
    pub(crate) fn cancel(&self, node: &Arc<Node>) {
        let removed = {
            let mut q = lock(&self.queue);
            match q.iter().position(|n| Arc::ptr_eq(n, node)) {
                Some(i) => {
                    q.remove(i);
                    // Relaxed: see `notify_one_slow`.
                    self.count.fetch_sub(1, Ordering::Relaxed);
                    true
                }
                None => false,
            }
        };
        if !removed {
            self.notify_one();
        }
    }
}
