//! The drop-counting test connection shared by the core's test files (`connection_pool`,
//! `model`, `stress`, `mutants`, `waiting`, `unreleased`), included with
//! `#[path = "common/counting.rs"] mod counting;`. (`common/mod.rs` is the h2 test backend.)
//!
//! A [`Ledger`] hands out [`Conn`]s with distinct ids (0, 1, 2, … in creation order) and counts
//! each one's drops in its own atomic, so a test can ask how often *that* connection was
//! dropped, not only how many drops happened in total. A connection also records while it is
//! borrowed through [`Conn::use_shared`] / [`Conn::use_mut`], so two holders at once, a write
//! by another holder, or a drop during a borrow panics at once. A second drop of one id
//! panics too (it would mean the pool duplicated a connection).
#![allow(dead_code)] // each test file uses a different subset

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

/// What all connections of one test share: the next id and a drop counter per id.
#[derive(Debug)]
pub struct Ledger {
    next_id: AtomicUsize,
    drops: Box<[AtomicU32]>,
}

impl Ledger {
    /// A ledger for up to `max_conns` connections (creating more panics).
    pub fn new(max_conns: usize) -> Arc<Ledger> {
        Arc::new(Ledger {
            next_id: AtomicUsize::new(0),
            drops: (0..max_conns).map(|_| AtomicU32::new(0)).collect(),
        })
    }

    /// A ledger for the small single-threaded tests (up to 1024 connections).
    pub fn small() -> Arc<Ledger> {
        Ledger::new(1024)
    }

    /// A new connection tagged with `backend`; its id is the next one.
    pub fn conn(self: &Arc<Self>, backend: usize) -> Conn {
        // Relaxed: ids only need to be distinct; counts are read after the threads join.
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        assert!(id < self.drops.len(), "ledger full: {id} connections");
        Conn {
            id,
            backend,
            uses: 0,
            borrowed: AtomicBool::new(false),
            ledger: self.clone(),
        }
    }

    /// How many connections were created.
    pub fn created(&self) -> usize {
        self.next_id.load(Ordering::SeqCst)
    }

    /// How often connection `id` was dropped (0 or 1).
    pub fn drops(&self, id: usize) -> u32 {
        self.drops[id].load(Ordering::SeqCst)
    }

    /// Drops of every connection created so far.
    pub fn total_drops(&self) -> usize {
        (0..self.created()).map(|id| self.drops(id) as usize).sum()
    }

    /// Ids of the connections not dropped yet, in order; panics on one dropped twice.
    pub fn alive(&self) -> Vec<usize> {
        (0..self.created())
            .filter(|&id| match self.drops(id) {
                0 => true,
                1 => false,
                n => panic!("connection {id} dropped {n} times"),
            })
            .collect()
    }
}

/// A pretend connection: an id, the backend it was opened to, a counter written through
/// `get_mut`, and its entry in the [`Ledger`].
#[derive(Debug)]
pub struct Conn {
    /// Distinct per connection of a ledger.
    pub id: usize,
    /// The backend the test opened it to.
    pub backend: usize,
    /// Written by holders (through `get_mut`/`DerefMut`); a second holder would race on it.
    pub uses: u64,
    borrowed: AtomicBool,
    ledger: Arc<Ledger>,
}

impl Conn {
    /// A shared use: panics if another borrower is inside or `backend` is not this one's.
    pub fn use_shared(&self, backend: usize) {
        assert!(!self.borrowed.swap(true, Ordering::SeqCst), "two borrowers");
        assert_eq!(self.backend, backend, "connection of another backend");
        self.borrowed.store(false, Ordering::SeqCst);
    }

    /// An exclusive use that bumps `uses`: panics if another holder is inside or wrote
    /// meanwhile.
    pub fn use_mut(&mut self, backend: usize) {
        assert!(!self.borrowed.swap(true, Ordering::SeqCst), "two borrowers");
        assert_eq!(self.backend, backend, "connection of another backend");
        let before = self.uses;
        self.uses += 1;
        std::hint::black_box(&mut self.uses);
        assert_eq!(self.uses, before + 1, "another holder wrote meanwhile");
        self.borrowed.store(false, Ordering::SeqCst);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        assert!(
            !self.borrowed.load(Ordering::SeqCst),
            "dropped while borrowed"
        );
        let before = self.ledger.drops[self.id].fetch_add(1, Ordering::SeqCst);
        assert_eq!(before, 0, "connection {} dropped twice", self.id);
    }
}
