//! The backends of a pool, which can change while it runs: an immutable [`Table`] of
//! [`Entry`]s published through an [`ArcSwap`], so that every request reads the current
//! table without a lock (one `load`), and the rare writers (add, remove, replace) build a new
//! table under a mutex and swap it in.
//!
//! Each entry owns its backend's slots (its own [`Pool`]), counters and coalescer. A request
//! that loaded a table keeps using the entries it found there, so a backend removed (or an
//! index reused by another backend) meanwhile never mixes connections: the old entry's pool
//! lives on while anything refers to it, and its connections close as they are released.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

use super::affinity::Lanes;
use super::coalesce::{Coalescer, Watched};
use super::conn::Conn;
use super::counters::Counters;
use super::health::EjectionPolicy;
use super::{H2Error, Target};
use crate::Pool;

/// One backend.
pub(super) struct Entry {
    /// The key it was added under (its address as written, for backends given to the
    /// builder).
    pub(super) key: String,
    pub(super) target: Target,
    /// Its connection slots.
    pub(super) pool: Arc<Pool<Conn>>,
    pub(super) counters: Arc<Counters>,
    pub(super) coalescer: Arc<Coalescer>,
    /// Its weight under [`Balance::Weighted`](super::Balance::Weighted) (1 for backends
    /// added at runtime).
    pub(super) weight: u32,
    /// Set when the backend is removed or replaced: a request that found it in an older
    /// table opens no stream and no connection on it (it fails with the retryable
    /// [`H2Error::BackendRemoved`], and `dispatch` tries the current table).
    pub(super) removed: AtomicBool,
    /// Where each `current_thread` runtime's own connection to it is (see
    /// [`affinity`](super::affinity)).
    pub(super) lanes: Lanes,
}

/// The backends at one moment. Index `i` is backend `i`; `None` where a backend was removed
/// (the index is reused by the next one added).
#[derive(Default)]
pub(super) struct Table {
    pub(super) entries: Box<[Option<Arc<Entry>>]>,
    /// The indices of the backends present, in order.
    pub(super) live: Box<[usize]>,
    by_key: HashMap<String, usize>,
    /// Cumulative weights over `live` (for the weighted picker), and their total.
    pub(super) prefix: Box<[u64]>,
    pub(super) total_weight: u64,
}

impl Table {
    fn new(entries: Vec<Option<Arc<Entry>>>) -> Table {
        let live: Box<[usize]> = entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|_| i))
            .collect();
        let by_key = live
            .iter()
            .filter_map(|&i| entries[i].as_ref().map(|e| (e.key.clone(), i)))
            .collect();
        let mut total = 0;
        let prefix = live
            .iter()
            .map(|&i| {
                total += entries[i].as_ref().map_or(0, |e| u64::from(e.weight));
                total
            })
            .collect();
        Table {
            entries: entries.into_boxed_slice(),
            live,
            by_key,
            prefix,
            total_weight: total,
        }
    }

    /// Backend `backend`, if present.
    pub(super) fn get(&self, backend: usize) -> Option<&Arc<Entry>> {
        self.entries.get(backend).and_then(Option::as_ref)
    }

    /// The index of the backend added under `key`.
    pub(super) fn index(&self, key: &str) -> Option<usize> {
        self.by_key.get(key).copied()
    }

    /// The backends present.
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &Arc<Entry>)> {
        self.live
            .iter()
            .filter_map(|&i| self.entries[i].as_ref().map(|e| (i, e)))
    }
}

/// What a new entry needs besides its key and target.
pub(super) struct Template {
    pub(super) slots: usize,
    pub(super) max_streams: usize,
    pub(super) max_connecting: usize,
    pub(super) ejection: EjectionPolicy,
    pub(super) epoch: Instant,
}

impl Template {
    fn entry(
        &self,
        index: usize,
        key: String,
        target: Target,
        weight: u32,
    ) -> Result<Entry, H2Error> {
        let backend = u16::try_from(index).map_err(|_| {
            H2Error::InvalidConfig(format!("at most {} backends at once", crate::MAX_BACKENDS))
        })?;
        let pool = Arc::new(Pool::for_backend(self.slots, backend)?);
        let counters = Arc::<Counters>::default();
        let coalescer = Arc::new(Coalescer::new(
            self.max_streams,
            self.max_connecting,
            self.ejection,
            Watched {
                backend: index,
                counters: Arc::clone(&counters),
                epoch: self.epoch,
            },
        ));
        Ok(Entry {
            key,
            target,
            pool,
            counters,
            coalescer,
            weight,
            removed: AtomicBool::new(false),
            lanes: Lanes::default(),
        })
    }
}

/// The current table, and how to change it.
pub(super) struct Backends {
    table: ArcSwap<Table>,
    /// Serialises writers (readers never take it).
    write: Mutex<()>,
    template: Template,
}

impl Backends {
    /// The backends given to the builder: `(key, target, weight)` each.
    pub(super) fn new(
        initial: Vec<(String, Target, u32)>,
        template: Template,
    ) -> Result<Backends, H2Error> {
        let mut entries = Vec::with_capacity(initial.len());
        for (i, (key, target, weight)) in initial.into_iter().enumerate() {
            entries.push(Some(Arc::new(template.entry(i, key, target, weight)?)));
        }
        Ok(Backends {
            table: ArcSwap::from_pointee(Table::new(entries)),
            write: Mutex::new(()),
            template,
        })
    }

    /// The current table: one atomic load, no lock.
    pub(super) fn load(&self) -> arc_swap::Guard<Arc<Table>> {
        self.table.load()
    }

    /// Adds a backend under `key` at the lowest free index; returns that index.
    pub(super) fn add(&self, key: String, target: Target, weight: u32) -> Result<usize, H2Error> {
        let _w = crate::sync::lock(&self.write);
        let current = self.table.load_full();
        if current.index(&key).is_some() {
            return Err(H2Error::InvalidConfig(format!(
                "a backend with the key `{key}` is already present"
            )));
        }
        let mut entries: Vec<_> = current.entries.to_vec();
        let index = entries
            .iter()
            .position(Option::is_none)
            .unwrap_or(entries.len());
        let entry = Arc::new(self.template.entry(index, key, target, weight)?);
        if index == entries.len() {
            entries.push(Some(entry));
        } else {
            entries[index] = Some(entry);
        }
        self.table.store(Arc::new(Table::new(entries)));
        Ok(index)
    }

    /// Removes the backend added under `key`; returns it (its index and entry) for the
    /// caller to drain.
    pub(super) fn remove(&self, key: &str) -> Option<(usize, Arc<Entry>)> {
        let _w = crate::sync::lock(&self.write);
        let current = self.table.load_full();
        let index = current.index(key)?;
        let mut entries: Vec<_> = current.entries.to_vec();
        let removed = entries[index].take()?;
        // Before the new table is published, so that a request that sees this entry in an
        // older table after the swap also sees the flag (SeqCst store, SeqCst load in
        // admission: a plain flag, no other data rides on it).
        removed.removed.store(true, Ordering::SeqCst);
        // Trailing empty positions go, so that `backends()` shrinks back.
        while entries.last().is_some_and(Option::is_none) {
            entries.pop();
        }
        self.table.store(Arc::new(Table::new(entries)));
        Some((index, removed))
    }

    /// Replaces the backend under `key` by one at `target` (same key, same weight, a new
    /// index may be chosen); returns the new index and the old entry for the caller to
    /// drain.
    pub(super) fn replace(
        &self,
        key: &str,
        target: Target,
    ) -> Result<(usize, Arc<Entry>), H2Error> {
        let _w = crate::sync::lock(&self.write);
        let current = self.table.load_full();
        let index = current
            .index(key)
            .ok_or_else(|| H2Error::UnknownBackendKey(key.to_string()))?;
        let mut entries: Vec<_> = current.entries.to_vec();
        let old = entries[index]
            .take()
            .ok_or_else(|| H2Error::UnknownBackendKey(key.to_string()))?;
        let entry = Arc::new(
            self.template
                .entry(index, key.to_string(), target, old.weight)?,
        );
        entries[index] = Some(entry);
        self.table.store(Arc::new(Table::new(entries)));
        Ok((index, old))
    }
}

/// A table of backends with these weights, those at the indices in `removed` left out (for
/// the picker's tests).
#[cfg(test)]
pub(super) fn test_table(weights: &[u32], removed: &[usize]) -> Table {
    let template = Template {
        slots: 1,
        max_streams: 1,
        max_connecting: 1,
        ejection: EjectionPolicy {
            after: 0,
            initial: std::time::Duration::from_secs(1),
            max: std::time::Duration::from_secs(1),
        },
        epoch: Instant::now(),
    };
    let entries = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let target: Target = std::net::SocketAddr::from(([127, 0, 0, 1], 1)).into();
            (!removed.contains(&i))
                .then(|| Arc::new(template.entry(i, format!("b{i}"), target, w).unwrap()))
        })
        .collect();
    Table::new(entries)
}
