//! A token of one pool must never be accepted by another pool, even when the other pool's slot
//! holds a connection of exactly the same generation.
//!
//! A token names a backend, a slot and a generation (and, since core v2, its pool). Pools
//! used to start their slots at different generations, but safe code moves a slot's
//! generation forward by one per `reserve()` + drop,
//! so a pool B can be driven, one step at a time, until its next connection gets the very
//! generation that pool A's held connection has. Then B's token and A's token are the same
//! bits, and every check that looks only at (backend, slot, generation) lets B's token reach
//! A's connection: read it, write it, drain it, close it under A's holder.
//!
//! The tests forge such a token with the public API only and assert that A rejects it on every
//! path. They failed on the code before pools had an identity (every path accepted the
//! forged token, and `release` closed A's connection under its holder). Distances are computed from *observed* generations (nothing here knows how a pool
//! picks its first generation), and the forge is bounded: it picks, out of many fresh pools,
//! the one whose next generation is closest below the target, and gives up with a clear message
//! if even that one is more than `MAX_STEPS` steps away.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokenpool::{ConnectionPool, Lease, OwnedLease, Pool, Released, Token};

/// Generations are 30-bit counters that wrap (the crate's documented horizon).
const GEN_MASK: u32 = (1 << 30) - 1;
/// Fresh pools to look at, at most, for one close to the target generation.
const MAX_CANDIDATES: usize = 100_000;
/// A candidate this close (in reserve+drop steps) is good enough: stop looking.
const CLOSE_ENOUGH: u32 = 1 << 14;
/// Give up rather than cycle a slot for ever.
const MAX_STEPS: u32 = 1 << 24;

/// A connection that knows who it is and counts its drops.
#[derive(Debug)]
struct Conn {
    id: &'static str,
    drops: Arc<AtomicUsize>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

fn conn(id: &'static str) -> (Conn, Arc<AtomicUsize>) {
    let drops = Arc::new(AtomicUsize::new(0));
    (
        Conn {
            id,
            drops: drops.clone(),
        },
        drops,
    )
}

/// Steps from `from` forward to `to` (each reserve+drop is one step), modulo 2^30.
fn distance(from: u32, to: u32) -> u32 {
    to.wrapping_sub(from) & GEN_MASK
}

/// What one forge cost.
#[derive(Debug)]
struct ForgeReport {
    candidates: usize,
    steps: u32,
    search: Duration,
    cycle: Duration,
}

/// Finds, among fresh pools made by `fresh`, one whose slot can be driven to `target`, and
/// drives it there: afterwards the pool's next new connection gets generation `target`.
///
/// `probe` reserves the slot under test, returns the reserved generation and drops the
/// reservation; it is both how we read a pool's next generation and how we advance it.
fn forge<P>(
    target: u32,
    mut fresh: impl FnMut() -> P,
    mut probe: impl FnMut(&P) -> u32,
) -> (P, ForgeReport) {
    let start = Instant::now();
    let mut best: Option<(P, u32, u32)> = None; // (pool, generation after its probe, steps)
    let mut candidates = 0;
    while candidates < MAX_CANDIDATES {
        let pool = fresh();
        candidates += 1;
        let probed = probe(&pool);
        // The probe consumed `probed`; the next connection gets `probed + 1`.
        let steps = distance((probed + 1) & GEN_MASK, target);
        if best.as_ref().is_none_or(|(_, _, s)| steps < *s) {
            best = Some((pool, probed, steps));
            if steps <= CLOSE_ENOUGH {
                break;
            }
        }
    }
    let search = start.elapsed();
    let (pool, mut last, steps) = best.expect("at least one candidate");
    assert!(
        steps <= MAX_STEPS,
        "cannot forge cheaply: after {candidates} fresh pools the closest next generation is \
         {steps} steps below the target {target} (limit {MAX_STEPS}); pools' first generations \
         are not spread the way this test expects. Nothing was checked."
    );
    let start = Instant::now();
    for _ in 0..steps {
        let g = probe(&pool);
        assert_eq!(
            g,
            (last + 1) & GEN_MASK,
            "a reserve+drop should advance the slot's generation by exactly one"
        );
        last = g;
    }
    let cycle = start.elapsed();
    (
        pool,
        ForgeReport {
            candidates,
            steps,
            search,
            cycle,
        },
    )
}

fn print_report(test: &str, target: u32, r: &ForgeReport) {
    println!(
        "{test}: forged generation {target}: {} candidate pools in {:?}, then {} reserve+drop \
         steps in {:?} (total {:?})",
        r.candidates,
        r.search,
        r.steps,
        r.cycle,
        r.search + r.cycle
    );
}

/// One reserve+drop on a standalone pool's only slot; returns the reserved generation.
fn probe_pool(p: &Pool<Conn>) -> u32 {
    p.reserve()
        .expect("the slot is empty")
        .conn_id()
        .generation()
}

/// Presents `foreign` (a token of another pool that names the same backend, slot and
/// generation as `mine`) to `pool` on every path that takes a token or id, and lists every
/// path that accepted it. `mine` holds `pool`'s connection `expect_id`, whose drops are
/// counted by `drops`. Ends by releasing `mine` (keep) and checking it was not drained.
fn assert_foreign_token_rejected(
    pool: &Arc<Pool<Conn>>,
    mine: Token,
    expect_id: &'static str,
    drops: &AtomicUsize,
    foreign: Token,
) {
    assert_eq!(foreign.backend(), mine.backend(), "forge: same backend");
    assert_eq!(foreign.slot(), mine.slot(), "forge: same slot");
    assert_eq!(
        foreign.conn_id().generation(),
        mine.conn_id().generation(),
        "forge: same generation"
    );
    let mut accepted: Vec<String> = Vec::new();
    let mut foreign = Some(foreign);
    let untouched = |accepted: &mut Vec<String>, after: &str| {
        if drops.load(Ordering::SeqCst) != 0 {
            accepted.push(format!(
                "after {after}: the pool's own connection was dropped"
            ));
        }
        match pool.get(&mine).map(|c| c.id) {
            Some(id) if id == expect_id => {}
            other => accepted.push(format!(
                "after {after}: the pool's own token sees {other:?}, not Some({expect_id:?})"
            )),
        }
    };

    if let Some(c) = pool.get(foreign.as_ref().unwrap()) {
        accepted.push(format!("get returned the pool's connection {:?}", c.id));
    }
    if let Some(c) = pool.get_mut(foreign.as_mut().unwrap()) {
        accepted.push(format!("get_mut returned the pool's connection {:?}", c.id));
    }
    match Lease::new(&**pool, foreign.take().unwrap()) {
        Err(t) => foreign = Some(t),
        Ok(lease) => {
            accepted.push(format!(
                "Lease::new accepted it (lease derefs to {:?})",
                lease.id
            ));
            // Take the token back without releasing: dropping the lease would close.
            foreign = Some(lease.into_token());
        }
    }
    match OwnedLease::new(pool.clone(), foreign.take().unwrap()) {
        Err(t) => foreign = Some(t),
        Ok(lease) => {
            accepted.push(format!(
                "OwnedLease::new accepted it (lease derefs to {:?})",
                lease.id
            ));
            foreign = Some(lease.into_token());
        }
    }
    untouched(&mut accepted, "get/get_mut/leases");
    let id = foreign.as_ref().unwrap().conn_id();
    if pool.drain(id) {
        accepted.push(format!("drain({id:?}) marked the pool's connection"));
    }
    untouched(&mut accepted, "drain");
    match pool.release(foreign.take().unwrap(), false) {
        Released::Rejected => {}
        other => accepted.push(format!("release(foreign, false) returned {other:?}")),
    }
    untouched(&mut accepted, "release(foreign, false)");
    // The pool's own holder still holds its connection and may return it: not drained, not
    // closed, not taken.
    match pool.release(mine, true) {
        Released::Returned => {}
        other => accepted.push(format!(
            "the pool's own release(mine, true) returned {other:?}, not Returned"
        )),
    }
    assert!(
        accepted.is_empty(),
        "a token of another pool with the same backend/slot/generation was accepted:\n  - {}",
        accepted.join("\n  - ")
    );
}

#[test]
fn forged_token_of_another_pool_is_rejected() {
    let a = Arc::new(Pool::new(1).unwrap());
    // One reserve+drop first, exactly as every candidate below gets: pools that all start at
    // the same generation then need no cycling at all.
    probe_pool(&a);
    let (ca, a_drops) = conn("A");
    let ta = a.add(ca).unwrap();
    let ga = ta.conn_id().generation();

    let (b, report) = forge(ga, || Pool::<Conn>::new(1).unwrap(), probe_pool);
    print_report("pool", ga, &report);
    let (cb, b_drops) = conn("B");
    let tb = b.add(cb).unwrap();
    assert_eq!(
        tb.conn_id().generation(),
        ga,
        "forge: B's connection did not get A's generation"
    );

    assert_foreign_token_rejected(&a, ta, "A", &a_drops, tb);
    drop(b);
    assert_eq!(
        b_drops.load(Ordering::SeqCst),
        1,
        "B's connection dropped with B"
    );
}

#[test]
fn token_outliving_its_pool_is_rejected_by_a_new_pool() {
    let old = Pool::new(1).unwrap();
    probe_pool(&old);
    let (c_old, old_drops) = conn("old");
    let stale = old.add(c_old).unwrap();
    let g = stale.conn_id().generation();
    drop(old);
    assert_eq!(
        old_drops.load(Ordering::SeqCst),
        1,
        "the old pool dropped its connection"
    );

    // New pools, made after the old one is gone (possibly at its address).
    let (new, report) = forge(
        g,
        || Arc::new(Pool::<Conn>::new(1).unwrap()),
        |p| probe_pool(p),
    );
    print_report("outliving", g, &report);
    let (c_new, new_drops) = conn("new");
    let mine = new.add(c_new).unwrap();
    assert_eq!(
        mine.conn_id().generation(),
        g,
        "forge: the new pool's connection did not get the stale token's generation"
    );

    assert_foreign_token_rejected(&new, mine, "new", &new_drops, stale);
    drop(new);
    assert_eq!(new_drops.load(Ordering::SeqCst), 1);
}

#[test]
fn forged_token_of_another_connection_pool_is_rejected() {
    const BACKENDS: usize = 3;
    const K: usize = 1;
    let probe_k = |p: &ConnectionPool<Conn>| {
        p.backend(K)
            .unwrap()
            .reserve()
            .expect("backend K's slot is empty")
            .conn_id()
            .generation()
    };

    let x = ConnectionPool::new(BACKENDS, 1).unwrap();
    probe_k(&x);
    let (cx, x_drops) = conn("X");
    let tx = x.backend(K).unwrap().add(cx).unwrap();
    let gx = tx.conn_id().generation();

    let (y, report) = forge(
        gx,
        || ConnectionPool::<Conn>::new(BACKENDS, 1).unwrap(),
        probe_k,
    );
    print_report("connection pool", gx, &report);
    let (cy, y_drops) = conn("Y");
    let mut ty = y.backend(K).unwrap().add(cy).unwrap();
    // Same backend, slot and generation: all a token named before pools had an identity (a
    // fixed `ConnId` may also name its pool, so the ids themselves are not compared).
    assert_eq!((ty.backend(), ty.slot()), (tx.backend(), tx.slot()));
    assert_eq!(
        ty.conn_id().generation(),
        gx,
        "forge: Y's backend {K} connection did not get X's generation"
    );

    let mut accepted: Vec<String> = Vec::new();
    let untouched = |accepted: &mut Vec<String>, after: &str| {
        if x_drops.load(Ordering::SeqCst) != 0 {
            accepted.push(format!("after {after}: X's connection was dropped"));
        }
        match x.get(&tx).map(|c| c.id) {
            Some("X") => {}
            other => accepted.push(format!("after {after}: X's token sees {other:?}")),
        }
    };
    if let Some(c) = x.get(&ty) {
        accepted.push(format!("get returned X's connection {:?}", c.id));
    }
    if let Some(c) = x.get_mut(&mut ty) {
        accepted.push(format!("get_mut returned X's connection {:?}", c.id));
    }
    untouched(&mut accepted, "get/get_mut");
    if x.drain(ty.conn_id()) {
        accepted.push(format!("drain({:?}) marked X's connection", ty.conn_id()));
    }
    untouched(&mut accepted, "drain");
    match x.release(ty, false) {
        Released::Rejected => {}
        other => accepted.push(format!("release(Y's token, false) returned {other:?}")),
    }
    untouched(&mut accepted, "release(Y's token, false)");
    match x.release(tx, true) {
        Released::Returned => {}
        other => accepted.push(format!("X's own release(tx, true) returned {other:?}")),
    }
    assert!(
        accepted.is_empty(),
        "a token of another ConnectionPool (backend {K}, same slot and generation) was \
         accepted:\n  - {}",
        accepted.join("\n  - ")
    );
    drop(y);
    assert_eq!(
        y_drops.load(Ordering::SeqCst),
        1,
        "Y's connection dropped with Y"
    );
}
