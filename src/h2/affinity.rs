//! Runtime affinity: a pool shared by several `current_thread` runtimes (one per core, each
//! with its own listener) keeps each request on the runtime it arrived on.
//!
//! A connection's driver runs on one runtime, and its socket is registered with that
//! runtime's reactor. A request from another runtime that opens a stream there costs two
//! wake-ups across threads: the driver's, to send the request, and the request's, when the
//! response arrives (an `eventfd` write and a stolen cache line each; docs/throughput.md
//! measured 0.6 such wake-ups per request and a quarter fewer requests per second on two
//! cores).
//!
//! So a connection opened from a `current_thread` runtime is driven on that runtime (its
//! [`Home`]), and each backend remembers, per runtime, the slot of a connection at home
//! there ([`Lanes`]). A request first looks in that slot; if its runtime has no connection
//! to the backend yet (or the one it had is gone), it opens one in an empty slot, driven
//! where the request runs. Only when the home connection is busy or full, or the pool has no
//! empty slot, does the request take any connection, as on a multi-thread runtime (where
//! there is no home: its workers steal each other's tasks anyway). Work is still shared: a
//! busy runtime overflows onto the others' connections instead of waiting.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::{Handle, Id, RuntimeFlavor};

/// A `current_thread` runtime, as the pool sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Home {
    /// The runtime.
    pub(super) id: Id,
    /// Its lane: which of a backend's [`Lanes`] remembers its connection. Handed out in the
    /// order runtimes first ask, so the threads of a per-core proxy get 0, 1, 2...
    pub(super) lane: usize,
}

/// How many runtimes a backend remembers a home connection for; runtimes whose lanes are
/// equal modulo this share a cell (each then finds the other's connection there now and
/// then, and opens its own again: correct, only less local).
const LANES: usize = 64;

/// Per backend: for each lane, where the connection at home on that lane's runtime is (a
/// hint: the connection found there is checked before it is used).
pub(super) struct Lanes {
    /// [`Lane`], encoded: 0 unknown, `usize::MAX` no room, else slot index + 1.
    slots: Box<[AtomicUsize]>,
}

/// What a backend knows of one runtime's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lane {
    /// It has not opened one.
    Unknown,
    /// It opened one in this slot.
    At(usize),
    /// It found no empty slot to open one in, the last time it tried.
    NoRoom,
}

impl Default for Lanes {
    fn default() -> Self {
        Lanes {
            slots: (0..LANES).map(|_| AtomicUsize::new(0)).collect(),
        }
    }
}

impl Lanes {
    /// What is known of `home`'s connection.
    pub(super) fn get(&self, home: Home) -> Lane {
        // Relaxed: a hint about where to look; the connection's own `home` decides.
        match self.slots[home.lane % LANES].load(Ordering::Relaxed) {
            0 => Lane::Unknown,
            usize::MAX => Lane::NoRoom,
            n => Lane::At(n - 1),
        }
    }

    /// Records what `home` found.
    pub(super) fn set(&self, home: Home, lane: Lane) {
        let n = match lane {
            Lane::Unknown => 0,
            Lane::NoRoom => usize::MAX,
            // A pool has far fewer than `usize::MAX - 1` slots.
            Lane::At(slot) => slot + 1,
        };
        // Relaxed: see `get`.
        self.slots[home.lane % LANES].store(n, Ordering::Relaxed);
    }
}

thread_local! {
    /// The last runtime this thread asked about, with its lane (a thread runs one runtime
    /// at a time, and a per-core thread always the same one).
    static LAST: Cell<Option<Home>> = const { Cell::new(None) };
}

/// Lanes handed out so far.
static NEXT_LANE: AtomicUsize = AtomicUsize::new(0);

/// The caller's runtime if it is a `current_thread` one; `None` on a multi-thread runtime
/// or outside any.
pub(super) fn here() -> Option<Home> {
    let handle = Handle::try_current().ok()?;
    if handle.runtime_flavor() != RuntimeFlavor::CurrentThread {
        return None;
    }
    let id = handle.id();
    LAST.with(|last| match last.get() {
        Some(home) if home.id == id => Some(home),
        _ => {
            // Relaxed: the counter only needs distinct values.
            let home = Home {
                id,
                lane: NEXT_LANE.fetch_add(1, Ordering::Relaxed),
            };
            last.set(Some(home));
            Some(home)
        }
    })
}

/// The runtime a connection opened now is driven on: the caller's if it is a
/// `current_thread` runtime (the connection's home), else `pool_runtime` (where the pool
/// was built). The caller's task registers the socket with its own runtime's reactor, so a
/// home driver also reads and writes it without crossing threads.
pub(super) fn driver_runtime(pool_runtime: &Handle) -> Handle {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::CurrentThread => h,
        _ => pool_runtime.clone(),
    }
}

/// The home of a connection driven on `runtime`: `runtime` if it is a `current_thread` one.
pub(super) fn home_of(runtime: &Handle) -> Option<Id> {
    (runtime.runtime_flavor() == RuntimeFlavor::CurrentThread).then(|| runtime.id())
}
