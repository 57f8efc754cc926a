//! Waiting for a slot: a FIFO queue of parked threads and pending tasks, touched only on slow
//! paths, that can hand a freed slot straight to the waiter at its front.
//!
//! This module knows nothing of slots or tokens: what a releaser hands over is a payload `P`
//! (the pool's hand-off), and how a freed slot is taken back for a waiter is the pool's
//! business ([`Waiters::notify_one_with`] runs the pool's closure under the queue lock).
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
//! # Fairness
//! A releaser that finds a waiter pops the node at the front and, under the queue lock, tries
//! to take the slot it just freed back *for* that waiter (one CAS from the exact word it just
//! stored); on success the node's payload is the held slot, and the waiter owns it the moment
//! it wakes: a thread that never waited cannot take it in between. Only if another thread took
//! the slot in the few instructions between the release and the take-back does the waiter wake
//! with nothing; it then re-registers at the *front* of the queue, keeping its place.
//! A waiter that gives up (timeout, cancelled future) after its node was popped gets the
//! payload back from [`Waiters::cancel`] (its caller releases it) or, when it had none, passes
//! the wake-up on, so no freed slot is stranded.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::Waker;

use crate::sync::{
    current, fence, lock, sc_fence_after_rmw, Arc, AtomicU32, Mutex, Ordering, Thread,
};

const WAITING: u32 = 0;
const NOTIFIED: u32 = 1;

/// How a waiter is woken.
#[derive(Debug)]
enum Wake {
    Thread(Thread),
    Task(Mutex<Option<Waker>>),
}

/// One waiting thread or task, and what a releaser handed it.
#[derive(Debug)]
pub(crate) struct Node<P> {
    state: AtomicU32,
    wake: Wake,
    /// Written by a releaser under the queue lock, before `state` becomes `NOTIFIED`; taken by
    /// the waiter after it sees `NOTIFIED`, or by `cancel` under the queue lock.
    payload: Mutex<Option<P>>,
}

impl<P> Node<P> {
    /// Whether this node has been handed a wake-up.
    pub(crate) fn is_notified(&self) -> bool {
        // Acquire: pairs with the Release store in `notify`, so the woken waiter's next look at
        // the slots (and at the payload) happens after the release that freed one.
        self.state.load(Ordering::Acquire) == NOTIFIED
    }

    /// Takes what a releaser handed this (notified) node, if anything.
    pub(crate) fn take_payload(&self) -> Option<P> {
        lock(&self.payload).take()
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
                    // Another task's waker may panic; that must not unwind through the
                    // releasing thread's `release` (possibly a `Drop` already unwinding, which
                    // would abort). The hand-off is not lost: it sits in the node until the
                    // waiting future is polled again or dropped (its `Drop` gives it back).
                    let _ = catch_unwind(AssertUnwindSafe(|| w.wake()));
                }
            }
        }
    }
}

/// The waiters of one pool.
#[derive(Debug)]
pub(crate) struct Waiters<P> {
    /// Nodes in the queue; read without the lock by releasers to skip the slow path.
    count: AtomicU32,
    queue: Mutex<VecDeque<Arc<Node<P>>>>,
}

impl<P> Default for Waiters<P> {
    fn default() -> Self {
        Waiters {
            count: AtomicU32::new(0),
            queue: Mutex::new(VecDeque::new()),
        }
    }
}

impl<P> Waiters<P> {
    /// Wakes the waiter at the front, if any; called after every transition that frees a slot.
    /// `take_back` runs under the queue lock once a waiter is popped, and may return a payload
    /// for it (the freed slot, taken back for that waiter).
    #[inline(always)]
    pub(crate) fn notify_one_with(&self, take_back: impl FnOnce() -> Option<P>) {
        sc_fence_after_rmw();
        // SeqCst: the releaser's half of the store-buffering pair (module docs).
        if self.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        self.notify_one_slow(take_back);
    }

    /// Wakes the waiter at the front, if any, with nothing handed over (it will look at the
    /// slots itself).
    #[inline]
    pub(crate) fn notify_one(&self) {
        self.notify_one_with(|| None);
    }

    #[cold]
    fn notify_one_slow(&self, take_back: impl FnOnce() -> Option<P>) {
        let node = {
            let mut q = lock(&self.queue);
            let Some(node) = q.pop_front() else {
                return;
            };
            // Relaxed: `count` is only a hint for skipping the lock; the queue itself is
            // protected by the lock, and the SeqCst fence in `register` orders the waiter.
            self.count.fetch_sub(1, Ordering::Relaxed);
            // Under the queue lock, so that `cancel` (which also takes it) sees either the
            // node in the queue or its final payload.
            if let Some(p) = take_back() {
                *lock(&node.payload) = Some(p);
            }
            node
        };
        node.notify();
    }

    /// Registers the current thread; the caller must look at the slots again afterwards.
    pub(crate) fn register_thread(&self) -> Arc<Node<P>> {
        self.register(Wake::Thread(current()))
    }

    /// Registers a task; the caller must look at the slots again afterwards.
    pub(crate) fn register_task(&self, waker: &Waker) -> Arc<Node<P>> {
        self.register(Wake::Task(Mutex::new(Some(waker.clone()))))
    }

    fn register(&self, wake: Wake) -> Arc<Node<P>> {
        let node = Arc::new(Node {
            state: AtomicU32::new(WAITING),
            wake,
            payload: Mutex::new(None),
        });
        self.enqueue(&node, false);
        node
    }

    /// Puts a woken node that found nothing back at the *front* of the queue (it keeps its
    /// place); the caller must look at the slots again afterwards, as after registering.
    pub(crate) fn requeue_front(&self, node: &Arc<Node<P>>) {
        // Relaxed: the node is ours alone while it is out of the queue; the queue lock and the
        // fence in `enqueue` order it for the next releaser.
        node.state.store(WAITING, Ordering::Relaxed);
        self.enqueue(node, true);
    }

    fn enqueue(&self, node: &Arc<Node<P>>, front: bool) {
        {
            let mut q = lock(&self.queue);
            if front {
                q.push_front(node.clone());
            } else {
                q.push_back(node.clone());
            }
            // Relaxed increment; the fence below orders it before our next look at the slots.
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        // SeqCst: the waiter's half of the store-buffering pair (module docs).
        fence(Ordering::SeqCst);
    }

    /// Withdraws a node that will not wait any longer. If a releaser already popped it, its
    /// payload (if any) is returned for the caller to use or release; without one, its
    /// wake-up goes to the next waiter.
    #[must_use = "a returned payload holds a slot"]
    pub(crate) fn cancel(&self, node: &Arc<Node<P>>) -> Option<P> {
        let payload = {
            let mut q = lock(&self.queue);
            match q.iter().position(|n| Arc::ptr_eq(n, node)) {
                Some(i) => {
                    q.remove(i);
                    // Relaxed: see `notify_one_slow`.
                    self.count.fetch_sub(1, Ordering::Relaxed);
                    return None;
                }
                None => lock(&node.payload).take(),
            }
        };
        if payload.is_none() {
            self.notify_one();
        }
        payload
    }

    /// How many waiters are queued, from the lock-free count (for statistics).
    pub(crate) fn hint_len(&self) -> usize {
        // Relaxed: a statistic.
        self.count.load(Ordering::Relaxed) as usize
    }

    /// How many waiters are queued, counted in the queue under its lock (for tests).
    pub(crate) fn len(&self) -> usize {
        lock(&self.queue).len()
    }
}
