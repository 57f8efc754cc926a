//! Model-based test: random sequences of operations on one thread, each checked against a
//! simple sequential reference model of the pool.
//!
//! The reference ([`Model`]) keeps, per slot, its state, how many connections it has received
//! (which is the generation: every pool starts at generation 0 and the first connection of a
//! slot gets generation 1), the connection it holds and the writes made to that connection
//! through `get_mut`.
//! After every operation the test compares the pool's answer with the model's, `stats()` of
//! every backend with the model's counts (and no waiter left queued), the drop count of every
//! connection ever made with the model's set of closed connections, and the slots the pool
//! shows held with the tokens the test holds. Tokens are also shown to a *twin* pool of the
//! same shape whose every slot holds a connection of generation 1, so a token that differs
//! from the twin's only by its pool is rejected there too.
//!
//! This is a state-machine test written by hand over a `Vec<Op>` strategy (the
//! `proptest-state-machine` crate is not a dependency); proptest shrinks a failing sequence
//! to a minimal one.

#[path = "common/counting.rs"]
mod counting;

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use counting::{Conn, Ledger};
use proptest::prelude::*;
use tokenpool::{Checkout, ConnId, ConnectionPool, Released, Reservation, Stats, Timeout, Token};

const BACKENDS: usize = 2;
const SLOTS: usize = 3;
/// Generations are 30 bits wide.
const GEN_MASK: u32 = (1 << 30) - 1;
/// Connections one case can create at most (each op creates at most one; the twin's aside).
const MAX_CONNS: usize = 1024;

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
    /// Presents a token to the pool of the other backend, and to the twin pool: rejected.
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
    /// Connections (or reservations) this slot has received: the generation (mod 2^30) of
    /// the one it holds or held last, as every slot starts at generation 0.
    received: u32,
    /// The connection it holds (`None` while empty or reserved but not filled).
    conn: Option<usize>,
    /// `uses` the connection should show.
    uses: u64,
}

/// The sequential reference.
#[derive(Debug)]
struct Model {
    slots: Vec<Vec<RefSlot>>,
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
            waiters: 0,
        }
    }

    /// The generation slot `b, s` is at: that of the connection it holds or held last.
    fn generation(&self, b: usize, s: usize) -> u32 {
        self.slots[b][s].received & GEN_MASK
    }

    /// Checks that `id` names the connection (or reservation) slot `id.slot()` holds now.
    fn check_generation(&self, id: ConnId) {
        let (b, s) = (id.backend(), id.slot());
        let received = self.slots[b][s].received;
        assert_eq!(
            id.generation(),
            self.generation(b, s),
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
        if gen.is_some_and(|g| g != self.generation(b, s)) {
            return false;
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
    ledger: Arc<Ledger>,
    /// Live tokens (each the only one for its slot).
    held: Vec<Token>,
    /// Every id handed out so far, most of them stale later.
    ids: Vec<ConnId>,
    /// A pool of the same shape with a connection of generation 1 held in every slot: the
    /// model's tokens differ from its tokens by pool alone whenever their slot has received
    /// one connection.
    twin: ConnectionPool<Conn>,
    twin_ledger: Arc<Ledger>,
    twin_held: Vec<Token>,
}

impl Harness {
    fn new() -> Self {
        let twin = ConnectionPool::new(BACKENDS, SLOTS).unwrap();
        let twin_ledger = Ledger::new(BACKENDS * SLOTS);
        let twin_held: Vec<Token> = (0..BACKENDS)
            .flat_map(|b| (0..SLOTS).map(move |_| b))
            .map(|b| twin.backend(b).unwrap().add(twin_ledger.conn(b)).unwrap())
            .collect();
        assert!(twin_held.iter().all(|t| t.conn_id().generation() == 1));
        Harness {
            pool: Rc::new(ConnectionPool::new(BACKENDS, SLOTS).unwrap()),
            model: Model::new(),
            ledger: Ledger::new(MAX_CONNS),
            held: Vec::new(),
            ids: Vec::new(),
            twin,
            twin_ledger,
            twin_held,
        }
    }

    fn new_conn(&mut self, backend: usize) -> Conn {
        let conn = self.ledger.conn(backend);
        assert_eq!(conn.id, self.model.closed.len(), "ledger ids are dense");
        self.model.closed.push(false);
        conn
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
            let conn = self.new_conn(b);
            let cid = conn.id;
            let t = r.fill(conn).into_token();
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
            Some(Checkout::Acquired(lease)) => {
                assert!(self.model.any_in(b, State::Available));
                self.took(lease.into_token(), b);
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
            Op::Acquire { backend: b } => match pool.backend(b).unwrap().acquire() {
                Some(t) => self.took(t, b),
                None => assert!(!self.model.any_in(b, State::Available)),
            },
            Op::Add { backend: b } => {
                let conn = self.new_conn(b);
                let cid = conn.id;
                match pool.backend(b).unwrap().add(conn) {
                    Ok(t) => self.added(t, b, cid),
                    Err(conn) => {
                        assert!(!self.model.any_in(b, State::Empty));
                        assert_eq!(conn.id, cid, "the refused connection comes back");
                        assert_eq!(self.ledger.drops(cid), 0);
                        drop(conn);
                        self.model.closed[cid] = true;
                    }
                }
            }
            Op::Reserve { backend: b, fill } => match pool.backend(b).unwrap().reserve() {
                Some(r) => {
                    if let Some(t) = self.vacant(r, b, fill) {
                        self.held.push(t);
                    }
                }
                None => assert!(!self.model.any_in(b, State::Empty)),
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
                    Err(Timeout) => self.checkout(None, b, fill),
                }
            }
            Op::PollWait { backend: b, fill } => {
                let pool = pool.backend(b).unwrap();
                let mut fut = Box::pin(pool.acquire_wait());
                match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(c) => self.checkout(Some(c), b, fill),
                    Poll::Pending => {
                        assert_eq!(pool.queued_waiters(), 1, "pending: queued");
                        assert_eq!(pool.stats().waiters, 1);
                        drop(fut); // cancelled: nothing changes, and it leaves the queue
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
                if self.held.is_empty() {
                    return;
                }
                let i = token % self.held.len();
                let t = &mut self.held[i];
                let other = pool.backend((t.backend() + 1) % BACKENDS).unwrap();
                assert!(other.get(t).is_none());
                assert!(other.get_mut(t).is_none());
                // The twin's slot holds a connection of generation 1, held: a token of that
                // generation differs from the twin's own by pool identity alone.
                let twin_before = self.twin.total_stats();
                assert!(self.twin.get(t).is_none(), "twin accepted {t:?}");
                assert!(self.twin.get_mut(t).is_none(), "twin accepted {t:?}");
                assert!(!self.twin.drain(t.conn_id()), "twin drained {t:?}");
                assert_eq!(self.twin.total_stats(), twin_before);
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
                assert!(!self.twin.drain(id), "the twin drained {id:?}");
            }
            Op::DrainBackend { backend: b } => {
                let expected = (0..SLOTS)
                    .filter(|&s| self.model.drain_slot(b, s, None))
                    .count();
                assert_eq!(pool.backend(b).unwrap().drain_all(), expected);
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
        let mut pool_held = 0;
        for b in 0..BACKENDS {
            let pool = self.pool.backend(b).unwrap();
            let stats = pool.stats();
            // Every count, and `waiters: 0`: a dropped `acquire_wait` left the queue.
            assert_eq!(stats, self.model.stats(b), "backend {b}");
            assert_eq!(
                pool.queued_waiters(),
                0,
                "backend {b}: a waiter left behind"
            );
            pool_held += stats.in_use + stats.draining;
        }
        assert_eq!(
            pool_held,
            self.held.len(),
            "slots the pool shows held vs tokens the test holds"
        );
        assert_eq!(self.ledger.created(), self.model.closed.len());
        for (id, &closed) in self.model.closed.iter().enumerate() {
            assert_eq!(
                self.ledger.drops(id),
                u32::from(closed),
                "drops of connection {id}"
            );
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
        for id in 0..self.ledger.created() {
            assert_eq!(
                self.ledger.drops(id),
                1,
                "connection {id} after dropping the pool"
            );
        }
        // The twin saw only foreign tokens: it still holds its connections, undropped.
        assert_eq!(self.twin_ledger.total_drops(), 0);
        assert_eq!(self.twin.total_stats().in_use, BACKENDS * SLOTS);
        for t in self.twin_held {
            assert_eq!(self.twin.release(t, false), Released::Closed);
        }
        assert_eq!(self.twin_ledger.total_drops(), BACKENDS * SLOTS);
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
