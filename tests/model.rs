//! Model-based test: random sequences of operations on one thread, each checked against a
//! simple sequential reference model of the pool.
//!
//! The reference ([`Model`]) keeps, per slot, its state, how many connections it has received
//! (from which the generation follows), the connection it holds and the writes made to that
//! connection through `get_mut`.
//! After every operation the test compares the pool's answer with the model's, `stats()` of
//! every backend with the model's counts, and the drop count of every connection ever made
//! with the model's set of closed connections. Generations are checked relative to each
//! backend's starting generation (pools start at spread-out generations, which the model
//! learns from the first id it sees).
//!
//! This is a state-machine test written by hand over a `Vec<Op>` strategy (the
//! `proptest-state-machine` crate is not a dependency); proptest shrinks a failing sequence
//! to a minimal one.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use proptest::prelude::*;
use tokenpool::{Checkout, ConnId, ConnectionPool, Error, Released, Reservation, Stats, Token};

const BACKENDS: usize = 2;
const SLOTS: usize = 3;
/// Generations are 30 bits wide.
const GEN_MASK: u32 = (1 << 30) - 1;

/// A waker that does nothing (`Waker::noop` needs Rust 1.85; the crate supports 1.80).
struct NoopWaker;

impl Wake for NoopWaker {
    fn wake(self: Arc<Self>) {}
}

fn noop_waker() -> Waker {
    Waker::from(Arc::new(NoopWaker))
}

/// One step of a test case. Indices (`token`, `id`) pick among what exists at that point,
/// modulo its length.
#[derive(Clone, Debug)]
enum Op {
    Acquire {
        backend: usize,
    },
    Add {
        backend: usize,
    },
    /// `reserve`, then fill the slot or drop the reservation (a failed connect).
    Reserve {
        backend: usize,
        fill: bool,
    },
    TryCheckout {
        backend: usize,
        fill: bool,
    },
    /// `acquire_timeout` with a zero timeout: never waits, so the outcome is deterministic.
    AcquireTimeout {
        backend: usize,
        fill: bool,
    },
    /// Polls an `acquire_wait` future once, then drops it if it is pending.
    PollWait {
        backend: usize,
        fill: bool,
    },
    Release {
        token: usize,
        keep: bool,
    },
    Get {
        token: usize,
    },
    GetMut {
        token: usize,
    },
    /// Presents a token to the pool of the other backend: rejected.
    ForeignGet {
        token: usize,
    },
    /// Drains by an id seen earlier (often stale).
    Drain {
        id: usize,
    },
    DrainBackend {
        backend: usize,
    },
    DrainAll,
    /// Closes the idle connections of `backend` whose id has this parity.
    EvictIdle {
        backend: usize,
        parity: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let b = 0..BACKENDS;
    prop_oneof![
        4 => b.clone().prop_map(|backend| Op::Acquire { backend }),
        4 => b.clone().prop_map(|backend| Op::Add { backend }),
        2 => (b.clone(), any::<bool>()).prop_map(|(backend, fill)| Op::Reserve { backend, fill }),
        2 => (b.clone(), any::<bool>())
            .prop_map(|(backend, fill)| Op::TryCheckout { backend, fill }),
        1 => (b.clone(), any::<bool>())
            .prop_map(|(backend, fill)| Op::AcquireTimeout { backend, fill }),
        2 => (b.clone(), any::<bool>()).prop_map(|(backend, fill)| Op::PollWait { backend, fill }),
        6 => (any::<usize>(), any::<bool>()).prop_map(|(token, keep)| Op::Release { token, keep }),
        2 => any::<usize>().prop_map(|token| Op::Get { token }),
        2 => any::<usize>().prop_map(|token| Op::GetMut { token }),
        1 => any::<usize>().prop_map(|token| Op::ForeignGet { token }),
        3 => any::<usize>().prop_map(|id| Op::Drain { id }),
        1 => b.clone().prop_map(|backend| Op::DrainBackend { backend }),
        1 => Just(Op::DrainAll),
        1 => (b, 0..2usize).prop_map(|(backend, parity)| Op::EvictIdle { backend, parity }),
    ]
}

/// A connection: its id, a counter written through `get_mut`, and its drop count.
#[derive(Debug)]
struct Conn {
    id: usize,
    uses: u32,
    drops: Rc<RefCell<Vec<u32>>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.drops.borrow_mut()[self.id] += 1;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Empty,
    Available,
    InUse,
    Draining,
}

#[derive(Clone, Debug)]
struct RefSlot {
    state: State,
    /// Connections (or reservations) this slot has received; the generation is the
    /// backend's starting generation plus this.
    received: u32,
    /// The connection it holds (`None` while empty or reserved but not filled).
    conn: Option<usize>,
    /// `uses` the connection should show.
    uses: u32,
}

/// The sequential reference.
#[derive(Debug)]
struct Model {
    slots: Vec<Vec<RefSlot>>,
    /// Each backend's starting generation, learned from the first id seen.
    seed: [Option<u32>; BACKENDS],
    /// `closed[id]`: the connection was dropped (by the pool or handed back and dropped).
    closed: Vec<bool>,
}

impl Model {
    fn new() -> Self {
        let slot = RefSlot {
            state: State::Empty,
            received: 0,
            conn: None,
            uses: 0,
        };
        Model {
            slots: vec![vec![slot; SLOTS]; BACKENDS],
            seed: [None; BACKENDS],
            closed: Vec::new(),
        }
    }

    fn slot(&mut self, b: usize, s: usize) -> &mut RefSlot {
        &mut self.slots[b][s]
    }

    fn any_in(&self, b: usize, state: State) -> bool {
        self.slots[b].iter().any(|s| s.state == state)
    }

    fn stats(&self, b: usize) -> Stats {
        let count = |st| self.slots[b].iter().filter(|s| s.state == st).count();
        Stats {
            empty: count(State::Empty),
            available: count(State::Available),
            in_use: count(State::InUse),
            draining: count(State::Draining),
        }
    }

    /// Checks that `id` names the connection (or reservation) slot `id.slot()` holds now.
    fn check_generation(&mut self, id: ConnId) {
        let (b, s) = (id.backend(), id.slot());
        let received = self.slots[b][s].received;
        let seed = *self.seed[b].get_or_insert(id.generation().wrapping_sub(received) & GEN_MASK);
        assert_eq!(
            id.generation(),
            seed.wrapping_add(received) & GEN_MASK,
            "generation of {id:?} after {received} connections in that slot"
        );
    }

    /// The slot `b, s` leaves `Empty` for a new connection or reservation.
    fn claim(&mut self, id: ConnId) {
        let slot = self.slot(id.backend(), id.slot());
        assert_eq!(
            slot.state,
            State::Empty,
            "claimed a slot that is not empty: {id:?}"
        );
        slot.state = State::InUse;
        slot.received += 1;
        slot.uses = 0;
        self.check_generation(id);
    }

    /// A held slot is closed: its connection (if any) is dropped.
    fn close(&mut self, b: usize, s: usize) {
        let slot = self.slot(b, s);
        assert!(matches!(slot.state, State::InUse | State::Draining));
        slot.state = State::Empty;
        if let Some(c) = slot.conn.take() {
            self.closed[c] = true;
        }
    }

    /// What `drain_slot` does to one slot, for drain by id (`gen = Some`) and drain-all.
    fn drain_slot(&mut self, b: usize, s: usize, gen: Option<u32>) -> bool {
        if let Some(g) = gen {
            let seed = self.seed[b].expect("an id was seen on this backend");
            let current = seed.wrapping_add(self.slots[b][s].received) & GEN_MASK;
            if g != current {
                return false;
            }
        }
        match self.slots[b][s].state {
            State::Empty => false,
            State::Draining => gen.is_some(),
            State::InUse => {
                self.slot(b, s).state = State::Draining;
                true
            }
            State::Available => {
                self.slot(b, s).state = State::InUse;
                self.close(b, s);
                true
            }
        }
    }
}

/// The system under test together with what the test holds.
struct Harness {
    pool: Rc<ConnectionPool<Conn>>,
    model: Model,
    drops: Rc<RefCell<Vec<u32>>>,
    /// Live tokens (each the only one for its slot).
    held: Vec<Token>,
    /// Every id handed out so far, most of them stale later.
    ids: Vec<ConnId>,
}

impl Harness {
    fn new() -> Self {
        Harness {
            pool: Rc::new(ConnectionPool::new(BACKENDS, SLOTS).unwrap()),
            model: Model::new(),
            drops: Rc::new(RefCell::new(Vec::new())),
            held: Vec::new(),
            ids: Vec::new(),
        }
    }

    fn new_conn(&mut self) -> Conn {
        let id = self.model.closed.len();
        self.model.closed.push(false);
        self.drops.borrow_mut().push(0);
        Conn {
            id,
            uses: 0,
            drops: self.drops.clone(),
        }
    }

    /// A token for an available connection was handed out.
    fn took(&mut self, t: Token, b: usize) {
        assert_eq!(t.backend(), b);
        let slot = self.model.slot(b, t.slot());
        assert_eq!(
            slot.state,
            State::Available,
            "acquired a slot that was not available"
        );
        slot.state = State::InUse;
        self.model.check_generation(t.conn_id());
        let expected = self.model.slots[b][t.slot()].conn;
        assert_eq!(self.pool.get(&t).map(|c| c.id), expected);
        self.ids.push(t.conn_id());
        self.held.push(t);
    }

    /// A new connection went into a slot just claimed (by `add` or a filled reservation).
    fn added(&mut self, t: Token, b: usize, conn: usize) {
        assert_eq!(t.backend(), b);
        self.model.claim(t.conn_id());
        self.model.slot(b, t.slot()).conn = Some(conn);
        assert_eq!(self.pool.get(&t).map(|c| c.id), Some(conn));
        self.ids.push(t.conn_id());
        self.held.push(t);
    }

    /// A checkout found a free slot: fill it with a new connection, or drop the reservation.
    fn vacant(&mut self, r: Reservation<'_, Conn>, b: usize, fill: bool) -> Option<Token> {
        let id = r.conn_id();
        assert_eq!((id.backend(), id.slot()), (b, r.slot()));
        self.model.claim(id);
        self.ids.push(id);
        if fill {
            let conn = self.new_conn();
            let cid = conn.id;
            let t = r.fill(conn);
            assert_eq!(t.conn_id(), id, "the filled token has the reserved id");
            self.model.slot(b, t.slot()).conn = Some(cid);
            Some(t)
        } else {
            drop(r);
            self.model.close(b, id.slot());
            None
        }
    }

    fn checkout(&mut self, c: Option<Checkout<'_, Conn>>, b: usize, fill: bool) {
        match c {
            Some(Checkout::Acquired(t)) => {
                assert!(self.model.any_in(b, State::Available));
                self.took(t, b);
            }
            Some(Checkout::Vacant(r)) => {
                assert!(
                    !self.model.any_in(b, State::Available),
                    "vacant while one is idle"
                );
                if let Some(t) = self.vacant(r, b, fill) {
                    self.held.push(t);
                }
            }
            None => {
                assert!(
                    !self.model.any_in(b, State::Available),
                    "none while one is idle"
                );
                assert!(
                    !self.model.any_in(b, State::Empty),
                    "none while one is empty"
                );
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        // A clone of the handle, so that reservations borrow it rather than `self`.
        let pool = self.pool.clone();
        let pool = &*pool;
        match *op {
            Op::Acquire { backend: b } => match pool.acquire(b) {
                Ok(t) => self.took(t, b),
                Err(e) => {
                    assert_eq!(e, Error::NoneAvailable);
                    assert!(!self.model.any_in(b, State::Available));
                }
            },
            Op::Add { backend: b } => {
                let conn = self.new_conn();
                let cid = conn.id;
                match pool.add_and_acquire(conn, b) {
                    Ok(t) => self.added(t, b, cid),
                    Err(e) => {
                        assert_eq!(e.reason, Error::PoolFull);
                        assert!(!self.model.any_in(b, State::Empty));
                        let conn = e.into_inner();
                        assert_eq!(conn.id, cid, "the refused connection comes back");
                        assert_eq!(self.drops.borrow()[cid], 0);
                        drop(conn);
                        self.model.closed[cid] = true;
                    }
                }
            }
            Op::Reserve { backend: b, fill } => match pool.reserve(b) {
                Ok(r) => {
                    if let Some(t) = self.vacant(r, b, fill) {
                        self.held.push(t);
                    }
                }
                Err(e) => {
                    assert_eq!(e, Error::PoolFull);
                    assert!(!self.model.any_in(b, State::Empty));
                }
            },
            Op::TryCheckout { backend: b, fill } => {
                let pool = pool.backend(b).unwrap();
                let c = pool.try_checkout();
                self.checkout(c, b, fill);
            }
            Op::AcquireTimeout { backend: b, fill } => {
                let pool = pool.backend(b).unwrap();
                match pool.acquire_timeout(Duration::ZERO) {
                    Ok(c) => self.checkout(Some(c), b, fill),
                    Err(e) => {
                        assert_eq!(e, Error::Timeout);
                        self.checkout(None, b, fill);
                    }
                }
            }
            Op::PollWait { backend: b, fill } => {
                let pool = pool.backend(b).unwrap();
                let mut fut = Box::pin(pool.acquire_wait());
                match fut.as_mut().poll(&mut Context::from_waker(&noop_waker())) {
                    Poll::Ready(c) => self.checkout(Some(c), b, fill),
                    Poll::Pending => {
                        drop(fut); // cancelled: nothing changes
                        self.checkout(None, b, fill);
                    }
                }
            }
            Op::Release { token, keep } => {
                if self.held.is_empty() {
                    return;
                }
                let t = self.held.swap_remove(token % self.held.len());
                let (b, s) = (t.backend(), t.slot());
                let state = self.model.slots[b][s].state;
                let got = pool.release(t, keep);
                if keep && state == State::InUse {
                    assert_eq!(got, Released::Returned);
                    self.model.slot(b, s).state = State::Available;
                } else {
                    assert_eq!(got, Released::Closed, "keep={keep} from {state:?}");
                    self.model.close(b, s);
                }
            }
            Op::Get { token } => {
                if let Some(t) = self.pick(token) {
                    let slot = &self.model.slots[t.backend()][t.slot()];
                    let conn = pool.get(t).expect("a held token is valid");
                    assert_eq!(Some(conn.id), slot.conn);
                    assert_eq!(conn.uses, slot.uses, "writes through get_mut are kept");
                }
            }
            Op::GetMut { token } => {
                if self.held.is_empty() {
                    return;
                }
                let i = token % self.held.len();
                let (b, s) = (self.held[i].backend(), self.held[i].slot());
                let conn = pool
                    .get_mut(&mut self.held[i])
                    .expect("a held token is valid");
                conn.uses += 1;
                let (id, uses) = (conn.id, conn.uses);
                let slot = self.model.slot(b, s);
                slot.uses += 1;
                assert_eq!((Some(id), uses), (slot.conn, slot.uses));
            }
            Op::ForeignGet { token } => {
                if let Some(t) = self.pick(token) {
                    let other = (t.backend() + 1) % BACKENDS;
                    assert!(pool.backend(other).unwrap().get(t).is_none());
                }
            }
            Op::Drain { id } => {
                if self.ids.is_empty() {
                    return;
                }
                let id = self.ids[id % self.ids.len()];
                let expected =
                    self.model
                        .drain_slot(id.backend(), id.slot(), Some(id.generation()));
                assert_eq!(pool.drain(id), expected, "drain({id:?})");
            }
            Op::DrainBackend { backend: b } => {
                let expected = (0..SLOTS)
                    .filter(|&s| self.model.drain_slot(b, s, None))
                    .count();
                assert_eq!(pool.drain_backend(b), Ok(expected));
            }
            Op::DrainAll => {
                let expected = (0..BACKENDS)
                    .flat_map(|b| (0..SLOTS).map(move |s| (b, s)))
                    .filter(|&(b, s)| self.model.drain_slot(b, s, None))
                    .count();
                assert_eq!(pool.drain_all(), expected);
            }
            Op::EvictIdle { backend: b, parity } => {
                let mut expected = 0;
                for s in 0..SLOTS {
                    let slot = &self.model.slots[b][s];
                    if slot.state == State::Available && slot.conn.unwrap() % 2 == parity {
                        self.model.slot(b, s).state = State::InUse;
                        self.model.close(b, s);
                        expected += 1;
                    }
                }
                let pool = pool.backend(b).unwrap();
                assert_eq!(pool.evict_idle(|c| c.id % 2 == parity), expected);
            }
        }
    }

    fn pick(&self, i: usize) -> Option<&Token> {
        if self.held.is_empty() {
            None
        } else {
            Some(&self.held[i % self.held.len()])
        }
    }

    /// The invariants that hold between operations.
    fn check(&self) {
        for b in 0..BACKENDS {
            let stats = self.pool.stats(b).unwrap();
            assert_eq!(stats, self.model.stats(b), "backend {b}");
            assert_eq!(stats.total(), SLOTS);
        }
        let drops = self.drops.borrow();
        for (id, &closed) in self.model.closed.iter().enumerate() {
            assert_eq!(drops[id], u32::from(closed), "drops of connection {id}");
        }
        // Each held token holds a distinct slot the model shows held.
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.held {
            assert!(
                seen.insert((t.backend(), t.slot())),
                "two tokens for one slot"
            );
            let state = self.model.slots[t.backend()][t.slot()].state;
            assert!(matches!(state, State::InUse | State::Draining));
        }
        let held_slots = self.model.slots.iter().flatten();
        let held_count = held_slots
            .filter(|s| matches!(s.state, State::InUse | State::Draining))
            .count();
        assert_eq!(held_count, self.held.len(), "a held slot without a token");
    }

    /// Releases everything, drops the pool, and checks that every connection was dropped
    /// exactly once.
    fn finish(mut self) {
        for t in std::mem::take(&mut self.held) {
            assert_ne!(self.pool.release(t, true), Released::Rejected);
        }
        drop(self.pool);
        for (id, &n) in self.drops.borrow().iter().enumerate() {
            assert_eq!(n, 1, "connection {id} after dropping the pool");
        }
    }
}

fn run(ops: &[Op]) {
    let mut h = Harness::new();
    for op in ops {
        h.apply(op);
        h.check();
    }
    h.finish();
}

proptest! {
    // proptest's default of 256 cases (about 6 s in a debug build); set `PROPTEST_CASES` for
    // a longer run.

    /// The pool answers every operation as the sequential model does, its counts match the
    /// model's after every step, and every connection is dropped exactly when the model closes
    /// it (and all of them once the pool is dropped).
    #[test]
    fn pool_matches_sequential_model(ops in prop::collection::vec(op(), 1..150)) {
        run(&ops);
    }
}

/// A fixed sequence that reaches every kind of transition, so the model itself is checked on
/// a known path even if the random cases were to drift.
#[test]
fn model_walks_every_transition() {
    use Op::*;
    run(&[
        Add { backend: 0 },
        Release {
            token: 0,
            keep: true,
        },
        Acquire { backend: 0 },
        GetMut { token: 0 },
        Get { token: 0 },
        ForeignGet { token: 0 },
        Drain { id: 0 },
        Release {
            token: 0,
            keep: true,
        }, // draining: closed
        Drain { id: 0 }, // stale: false
        Reserve {
            backend: 1,
            fill: false,
        },
        Reserve {
            backend: 1,
            fill: true,
        },
        TryCheckout {
            backend: 1,
            fill: true,
        },
        AcquireTimeout {
            backend: 1,
            fill: true,
        },
        AcquireTimeout {
            backend: 1,
            fill: true,
        }, // full: times out
        PollWait {
            backend: 1,
            fill: true,
        }, // full: pending, cancelled
        Release {
            token: 0,
            keep: true,
        },
        Release {
            token: 0,
            keep: false,
        },
        PollWait {
            backend: 1,
            fill: false,
        },
        EvictIdle {
            backend: 1,
            parity: 0,
        },
        EvictIdle {
            backend: 1,
            parity: 1,
        },
        Add { backend: 0 },
        DrainBackend { backend: 0 },
        DrainAll,
    ]);
}
