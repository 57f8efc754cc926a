use std::time::Instant;

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;

/// Runs `f` under loom's exhaustive search with at most `bound` preemptions per execution.
///
/// Every model goes through here so that its bound is explicit in the test, not taken from
/// whatever `LOOM_MAX_PREEMPTIONS` the environment happens to hold. For measuring, the bound
/// can be overridden with `TOKENPOOL_LOOM_BOUND=<n>` or lifted with `TOKENPOOL_LOOM_BOUND=none`
/// (combine with `LOOM_MAX_DURATION=<secs>` to cap an unbounded run; loom checks the cap
/// every `LOOM_CHECKPOINT_INTERVAL` iterations).
///
/// Prints one line per model to stderr (`cargo test -- --nocapture` shows it):
/// `loom-result <name> bound=<n> interleavings=<count> secs=<wall time> complete=<bool>`,
/// where `complete=false` means loom stopped at `LOOM_MAX_DURATION` before exhausting the
/// space. The interleavings are counted by a plain `std` counter bumped at the start of each
/// execution of the model (outside loom's view, so it does not change what loom explores).
pub fn check<F>(name: &str, bound: usize, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    let bound = match std::env::var("TOKENPOOL_LOOM_BOUND").as_deref() {
        Ok("none") => None,
        Ok(n) => Some(
            n.parse()
                .expect("TOKENPOOL_LOOM_BOUND is a number or `none`"),
        ),
        Err(_) => Some(bound),
    };
    builder.preemption_bound = bound;
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = runs.clone();
    let start = Instant::now();
    builder.check(move || {
        // Relaxed: a plain std counter outside the model, read after `check` returns (loom
        // runs the model's iterations one after another on this thread).
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    let secs = start.elapsed();
    let stopped_early = builder.max_duration.is_some_and(|max| secs >= max);
    let bound = bound.map_or_else(|| "none".to_string(), |b| b.to_string());
    eprintln!(
        "loom-result {name} bound={bound} interleavings={} secs={:.2} complete={}",
        runs.load(std::sync::atomic::Ordering::Relaxed),
        secs.as_secs_f64(),
        !stopped_early,
    );
}

/// Counts, per connection id, how many times a [`Conn`] was created and dropped.
#[derive(Clone, Debug)]
pub struct Tracker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    created: Vec<AtomicUsize>,
    drops: Vec<AtomicUsize>,
}

impl Tracker {
    /// A tracker for connection ids `0..ids`.
    pub fn new(ids: usize) -> Self {
        Tracker {
            inner: Arc::new(Inner {
                created: (0..ids).map(|_| AtomicUsize::new(0)).collect(),
                drops: (0..ids).map(|_| AtomicUsize::new(0)).collect(),
            }),
        }
    }

    /// A new connection with id `id` (each id is meant to be created once per execution).
    pub fn conn(&self, id: usize) -> Conn {
        let before = self.inner.created[id].fetch_add(1, Ordering::SeqCst);
        assert_eq!(before, 0, "connection {id} created twice");
        Conn {
            id,
            tracker: self.clone(),
            borrowed: AtomicBool::new(false),
            touched: UnsafeCell::new(0),
        }
    }

    /// Whether connection `id` was created.
    pub fn created(&self, id: usize) -> bool {
        self.inner.created[id].load(Ordering::SeqCst) == 1
    }

    /// How many connections were created.
    pub fn created_count(&self) -> usize {
        (0..self.inner.created.len())
            .filter(|&id| self.created(id))
            .count()
    }

    /// How many times connection `id` was dropped.
    pub fn drops(&self, id: usize) -> usize {
        self.inner.drops[id].load(Ordering::SeqCst)
    }

    /// Drops of all connections together.
    pub fn total_drops(&self) -> usize {
        (0..self.inner.drops.len()).map(|id| self.drops(id)).sum()
    }

    /// Asserts that every connection created was dropped exactly once.
    pub fn assert_all_dropped_once(&self) {
        for id in 0..self.inner.drops.len() {
            let expected = usize::from(self.created(id));
            assert_eq!(self.drops(id), expected, "connection {id} drop count");
        }
    }
}

/// A pooled connection for models: counts its drops in its [`Tracker`], and records while it
/// is borrowed (through [`Conn::use_shared`] on a `get` borrow or [`Conn::use_mut`] on a
/// `get_mut` borrow).
///
/// Two checks catch a connection reached by two parties or dropped while borrowed:
/// - the `borrowed` flag is set on entry and cleared on exit of each use; a second user or a
///   `Drop` that finds it set panics (loom can preempt between the set and the clear);
/// - each use and the drop access a loom `UnsafeCell`, so loom itself reports a use and a drop
///   (or two uses) that are not ordered by happens-before, even when they do not overlap in the
///   explored schedule.
#[derive(Debug)]
pub struct Conn {
    id: usize,
    tracker: Tracker,
    borrowed: AtomicBool,
    touched: UnsafeCell<usize>,
}

impl Conn {
    /// This connection's id.
    pub fn id(&self) -> usize {
        self.id
    }

    /// Uses the connection through a shared borrow (as a holder does after `get`).
    pub fn use_shared(&self) {
        let was = self.borrowed.swap(true, Ordering::SeqCst);
        assert!(
            !was,
            "connection {} borrowed by two parties at once",
            self.id
        );
        // SAFETY (model): a read of the use counter; loom reports it if it races a write.
        let _ = self.touched.with(|p| unsafe { *p });
        self.borrowed.store(false, Ordering::SeqCst);
    }

    /// Uses the connection through an exclusive borrow (as a holder does after `get_mut`).
    pub fn use_mut(&mut self) {
        let was = self.borrowed.swap(true, Ordering::SeqCst);
        assert!(
            !was,
            "connection {} borrowed by two parties at once",
            self.id
        );
        // SAFETY (model): loom reports this write if it races another access.
        self.touched.with_mut(|p| unsafe { *p += 1 });
        self.borrowed.store(false, Ordering::SeqCst);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        assert!(
            !self.borrowed.load(Ordering::SeqCst),
            "connection {} dropped while borrowed",
            self.id
        );
        // Loom checks this write against every earlier use for happens-before.
        self.touched.with_mut(|p| unsafe { *p = usize::MAX });
        let before = self.tracker.inner.drops[self.id].fetch_add(1, Ordering::SeqCst);
        assert_eq!(before, 0, "connection {} dropped twice", self.id);
    }
}
