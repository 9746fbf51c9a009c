//! Write-set scheduling: which source transactions may be applied concurrently.
//!
//! Every source transaction gets a sequence index in binlog order and a *write set*: hashes
//! of (target table, key values) of every row it changes (the key before and after an
//! update), computed after filtering, so traffic sluice drops never serialises apply.
//! A transaction depends on the latest earlier transaction whose write set intersects its
//! own; it may start once every transaction up to that one has committed (the committed
//! *low-water mark* has reached it). This is MySQL's WRITESET dependency tracking applied
//! on the target side: transactions touching the same row commit in source order, disjoint
//! ones run in parallel.
//!
//! Barriers (a transaction whose write set cannot be known, such as one too large to buffer,
//! or a table without a key) depend on everything before them, and everything after them
//! depends on them.
//!
//! **Backfill chunks** have an order of their own. A chunk is placed where the stream passed
//! its watermark window, but it is not a source transaction and has no place in the stream's
//! low-water mark: if it had, every stream transaction scheduled after it would wait for it
//! (their dependencies are recent), and a slow chunk would stall the stream. Instead a chunk
//! waits for the stream transactions that wrote its keys before it (and for its table's
//! previous chunk, so recorded progress never runs ahead), and a stream transaction waits for
//! a chunk only when it touches one of the chunk's keys: then for every chunk up to that one
//! (the chunks' own low-water mark), which over-waits only for chunks of other tables
//! scheduled just before it.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use sluice_binlog::Value;

use crate::target::RowOp;

/// Hash of one (table, key values) pair.
pub type KeyHash = u64;

/// Position of a transaction in source order, starting at 1. 0 means "none".
pub type TxnIndex = u64;

/// Position of a backfill chunk in scheduling order, starting at 1. 0 means "none".
pub type ChunkId = u64;

/// Feeds a value's identity into a hasher. Values equal at the target hash equally; the
/// encoding is tagged so that e.g. `Int(1)` and `Text("1")` differ.
fn hash_value(v: &Value, h: &mut impl Hasher) {
    std::mem::discriminant(v).hash(h);
    match v {
        Value::Null => {}
        Value::Int(i) => i.hash(h),
        Value::UInt(u) => u.hash(h),
        Value::Float(f) => f.to_bits().hash(h),
        Value::Double(d) => d.to_bits().hash(h),
        Value::Year(y) => y.hash(h),
        Value::Bit(b) => b.hash(h),
        Value::Bytes(b) => b.hash(h),
        Value::Decimal(s) | Value::Text(s) | Value::Enum(s) | Value::Set(s) | Value::Json(s) => s.hash(h),
        other => other.to_string().hash(h),
    }
}

/// The hash of `table` + the key columns of `row`.
pub fn key_hash(table: &str, key: &[usize], row: &[Value]) -> KeyHash {
    // DefaultHasher::new() uses fixed keys: hashes are stable within the process, which is
    // all the scheduler needs.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    table.hash(&mut h);
    for &i in key {
        hash_value(&row[i], &mut h);
    }
    h.finish()
}

/// What a transaction touches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteSet {
    pub keys: Vec<KeyHash>,
    /// Conflicts with everything before and after it.
    pub barrier: bool,
}

impl WriteSet {
    pub fn barrier() -> Self {
        WriteSet {
            keys: Vec::new(),
            barrier: true,
        }
    }

    /// The write set of a complete transaction's row changes.
    pub fn of_ops(ops: &[RowOp]) -> Self {
        let mut keys = Vec::with_capacity(ops.len() + 1);
        for op in ops {
            match op {
                RowOp::Insert { table, row } | RowOp::Delete { table, row } => {
                    keys.push(key_hash(&table.name, &table.key, row))
                }
                RowOp::Update { table, before, after } => {
                    let old = key_hash(&table.name, &table.key, before);
                    let new = key_hash(&table.name, &table.key, after);
                    keys.push(old);
                    if new != old {
                        keys.push(new);
                    }
                }
            }
        }
        keys.sort_unstable();
        keys.dedup();
        WriteSet { keys, barrier: false }
    }
}

/// Assigns indexes and dependencies in source order, and tracks the committed low-water mark.
#[derive(Debug, Default)]
pub struct DependencyTracker {
    last_writer: HashMap<KeyHash, TxnIndex>,
    last_barrier: TxnIndex,
    next: TxnIndex,
    /// Every transaction with index ≤ `low_water` has committed.
    low_water: TxnIndex,
    /// Committed transactions above the low-water mark.
    committed_above: BTreeSet<TxnIndex>,
    /// Backfill chunks: the last chunk that wrote each key (pruned below `chunk_low_water`).
    chunk_writer: HashMap<KeyHash, ChunkId>,
    next_chunk: ChunkId,
    /// Every chunk with id ≤ this has committed.
    chunk_low_water: ChunkId,
    chunks_committed_above: BTreeSet<ChunkId>,
}

/// A scheduled transaction: its index and the index it must wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scheduled {
    pub index: TxnIndex,
    /// The transaction may start once the low-water mark is ≥ this…
    pub depends_on: TxnIndex,
    /// …and the chunks' low-water mark is ≥ this (0: it touches no pending chunk's keys).
    depends_on_chunk: ChunkId,
}

impl Scheduled {
    /// Whether everything this transaction waits for has committed.
    pub fn ready(&self, tracker: &DependencyTracker) -> bool {
        tracker.low_water >= self.depends_on && tracker.chunk_low_water >= self.depends_on_chunk
    }

    /// Like [`Self::ready`], for a transaction applied after an open group on the same
    /// connection that holds transactions `first..=last`, contiguous in source order (those
    /// between its members committed): a dependency inside the group is met once everything
    /// before the group is committed.
    pub fn ready_after_group(&self, tracker: &DependencyTracker, first: TxnIndex, last: TxnIndex) -> bool {
        let in_group = first > 0 && (first..=last).contains(&self.depends_on) && tracker.low_water + 1 >= first;
        (tracker.low_water >= self.depends_on || in_group) && tracker.chunk_low_water >= self.depends_on_chunk
    }
}

/// A scheduled backfill chunk: what it waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduledChunk {
    pub id: ChunkId,
    /// The latest earlier stream transaction that wrote one of its keys (or a barrier).
    pub depends_on: TxnIndex,
    /// Its table's previous chunk, when that has not committed yet.
    pub after_chunk: ChunkId,
}

impl ScheduledChunk {
    pub fn ready(&self, tracker: &DependencyTracker) -> bool {
        tracker.low_water >= self.depends_on && tracker.is_chunk_committed(self.after_chunk)
    }
}

/// Prune `last_writer` entries at or below the low-water mark when the map grows past this.
const PRUNE_AT: usize = 100_000;

impl DependencyTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the next transaction in source order.
    pub fn schedule(&mut self, ws: &WriteSet) -> Scheduled {
        self.next += 1;
        let index = self.next;
        let depends_on_chunk = if ws.barrier {
            // Its rows are unknown: it may touch any chunk's.
            self.next_chunk
        } else {
            ws.keys
                .iter()
                .filter_map(|k| self.chunk_writer.get(k))
                .copied()
                .filter(|&c| c > self.chunk_low_water)
                .max()
                .unwrap_or(0)
        };
        let depends_on = if ws.barrier {
            self.last_barrier = index;
            index - 1
        } else {
            let mut dep = self.last_barrier;
            for k in &ws.keys {
                if let Some(&w) = self.last_writer.get(k) {
                    dep = dep.max(w);
                }
            }
            dep
        };
        for k in &ws.keys {
            self.last_writer.insert(*k, index);
        }
        if self.last_writer.len() > PRUNE_AT {
            let lw = self.low_water;
            self.last_writer.retain(|_, w| *w > lw);
        }
        Scheduled {
            index,
            depends_on,
            depends_on_chunk,
        }
    }

    /// Registers a backfill chunk writing `keys`, placed after every stream transaction
    /// scheduled so far; `previous` is its table's previous chunk (0 for the first).
    pub fn schedule_chunk(&mut self, keys: &[KeyHash], previous: ChunkId) -> ScheduledChunk {
        self.next_chunk += 1;
        let id = self.next_chunk;
        let mut depends_on = self.last_barrier;
        for k in keys {
            if let Some(&w) = self.last_writer.get(k) {
                depends_on = depends_on.max(w);
            }
            self.chunk_writer.insert(*k, id);
        }
        if self.chunk_writer.len() > PRUNE_AT {
            let lw = self.chunk_low_water;
            self.chunk_writer.retain(|_, c| *c > lw);
        }
        ScheduledChunk {
            id,
            depends_on,
            after_chunk: if self.is_chunk_committed(previous) { 0 } else { previous },
        }
    }

    /// Records that chunk `id` committed.
    pub fn chunk_committed(&mut self, id: ChunkId) {
        self.chunks_committed_above.insert(id);
        while self.chunks_committed_above.remove(&(self.chunk_low_water + 1)) {
            self.chunk_low_water += 1;
        }
    }

    pub fn is_chunk_committed(&self, id: ChunkId) -> bool {
        id <= self.chunk_low_water || self.chunks_committed_above.contains(&id)
    }

    /// Whether every chunk scheduled so far has committed.
    pub fn chunks_idle(&self) -> bool {
        self.chunk_low_water == self.next_chunk
    }

    /// Records that `index` committed; returns the new low-water mark.
    pub fn committed(&mut self, index: TxnIndex) -> TxnIndex {
        self.committed_above.insert(index);
        while self.committed_above.remove(&(self.low_water + 1)) {
            self.low_water += 1;
        }
        self.low_water
    }

    /// The low-water mark there would be if `indexes` committed too (no state change).
    pub fn low_water_if_committed(&self, indexes: &[TxnIndex]) -> TxnIndex {
        let mut lw = self.low_water;
        while self.committed_above.contains(&(lw + 1)) || indexes.contains(&(lw + 1)) {
            lw += 1;
        }
        lw
    }

    pub fn is_committed(&self, index: TxnIndex) -> bool {
        index <= self.low_water || self.committed_above.contains(&index)
    }

    pub fn low_water(&self) -> TxnIndex {
        self.low_water
    }

    /// The number of transactions scheduled so far (the highest index).
    pub fn scheduled(&self) -> TxnIndex {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ws(keys: &[u64]) -> WriteSet {
        WriteSet {
            keys: keys.to_vec(),
            barrier: false,
        }
    }

    /// (index, depends_on) of a scheduled transaction.
    fn at(s: Scheduled) -> (TxnIndex, TxnIndex) {
        (s.index, s.depends_on)
    }

    #[test]
    fn disjoint_transactions_do_not_wait_and_conflicts_do() {
        let mut t = DependencyTracker::new();
        assert_eq!(at(t.schedule(&ws(&[1]))), (1, 0));
        assert_eq!(at(t.schedule(&ws(&[2]))), (2, 0));
        assert_eq!(at(t.schedule(&ws(&[1, 3]))), (3, 1));
        assert_eq!(at(t.schedule(&WriteSet::barrier())), (4, 3));
        assert_eq!(at(t.schedule(&ws(&[9]))), (5, 4));
    }

    #[test]
    fn chunks_wait_only_for_their_keys_and_the_stream_only_for_chunks_it_touches() {
        let mut t = DependencyTracker::new();
        let a = t.schedule(&ws(&[1]));
        let _b = t.schedule(&ws(&[2]));
        let chunk = t.schedule_chunk(&[1, 10, 11], 0);
        assert_eq!((chunk.id, chunk.depends_on, chunk.after_chunk), (1, 1, 0));
        // Unrelated stream work neither waits for the chunk nor is waited for by it.
        let c = t.schedule(&ws(&[3]));
        assert!(c.ready(&t), "an unrelated transaction must not wait for a chunk");
        let d = t.schedule(&ws(&[10]));
        assert!(!d.ready(&t), "a transaction on a chunk's key waits for it");
        assert!(!chunk.ready(&t));
        t.committed(a.index);
        assert!(chunk.ready(&t));
        let next = t.schedule_chunk(&[12], chunk.id);
        assert_eq!(next.after_chunk, chunk.id, "a table's chunks commit in order");
        assert!(!next.ready(&t));
        t.chunk_committed(chunk.id);
        assert!(d.ready(&t));
        assert!(next.ready(&t));
        // A barrier waits for every chunk before it.
        let barrier = t.schedule(&WriteSet::barrier());
        t.committed(2);
        t.committed(c.index);
        t.committed(d.index);
        assert!(!barrier.ready(&t));
        t.chunk_committed(next.id);
        assert!(barrier.ready(&t));
        assert!(t.chunks_idle());
    }

    #[test]
    fn a_dependency_inside_the_open_group_is_met_once_everything_before_the_group_is() {
        let mut t = DependencyTracker::new();
        let a = t.schedule(&ws(&[1]));
        let b = t.schedule(&ws(&[2]));
        let c = t.schedule(&ws(&[2, 3]));
        assert_eq!(c.depends_on, b.index);
        // A group holding b (2..=2) on the same connection: c may follow b only once a is in.
        assert!(!c.ready_after_group(&t, b.index, b.index));
        t.committed(a.index);
        assert!(c.ready_after_group(&t, b.index, b.index));
        assert!(!c.ready(&t), "outside the group b is still pending");
        // No group, or a group without the dependency: plain readiness.
        assert!(!c.ready_after_group(&t, 0, 0));
        let d = t.schedule(&ws(&[3]));
        assert!(!d.ready_after_group(&t, b.index, b.index));
    }

    #[test]
    fn low_water_advances_over_contiguous_commits_only() {
        let mut t = DependencyTracker::new();
        for _ in 0..4 {
            t.schedule(&ws(&[]));
        }
        assert_eq!(t.committed(2), 0);
        assert_eq!(t.committed(1), 2);
        assert_eq!(t.committed(4), 2);
        assert_eq!(t.committed(3), 4);
    }

    proptest! {
        /// Simulates N writers committing in any order the dependencies allow, with backfill
        /// chunks (of two tables) mixed into the stream, and checks the result equals serial
        /// application: every pair of conflicting items (sharing a key, a barrier and
        /// anything, or two chunks of one table) commits in scheduling order.
        #[test]
        fn any_allowed_interleaving_keeps_per_key_order(
            txns in proptest::collection::vec(proptest::collection::vec(0u64..6, 0..4), 1..40),
            barriers in proptest::collection::vec(any::<bool>(), 40),
            chunk_at in proptest::collection::vec(0u8..10, 40),
            choices in proptest::collection::vec(any::<u16>(), 200),
        ) {
            #[derive(Debug)]
            enum Item { Txn(Scheduled, WriteSet), Chunk(ScheduledChunk, Vec<u64>, u8) }
            let mut t = DependencyTracker::new();
            let mut items = Vec::new();
            let mut last_chunk = [0u64; 2];
            for (i, keys) in txns.iter().enumerate() {
                if chunk_at[i] < 3 {
                    // A chunk of table 0 or 1 (its own key space, as key hashes include the table).
                    let table = chunk_at[i] % 2;
                    let chunk_keys: Vec<u64> = keys.iter().map(|k| k + 100 * u64::from(table)).collect();
                    let c = t.schedule_chunk(&chunk_keys, last_chunk[usize::from(table)]);
                    last_chunk[usize::from(table)] = c.id;
                    items.push(Item::Chunk(c, chunk_keys, table));
                }
                let w = if barriers[i] && i % 7 == 3 {
                    WriteSet::barrier()
                } else {
                    // Stream keys reach table 1's key space too.
                    ws(&keys.iter().map(|k| if k % 2 == 0 { k + 100 } else { *k }).collect::<Vec<_>>())
                };
                items.push(Item::Txn(t.schedule(&w), w));
            }
            let mut done = vec![false; items.len()];
            let mut order = Vec::new();
            let mut c = choices.iter().cycle();
            while order.len() < items.len() {
                let ready: Vec<usize> = (0..items.len())
                    .filter(|&i| !done[i])
                    .filter(|&i| match &items[i] { Item::Txn(s, _) => s.ready(&t), Item::Chunk(s, _, _) => s.ready(&t) })
                    .collect();
                prop_assert!(!ready.is_empty(), "deadlock at low water {}", t.low_water());
                let pick = ready[usize::from(*c.next().unwrap()) % ready.len()];
                done[pick] = true;
                order.push(pick);
                match &items[pick] {
                    Item::Txn(s, _) => { t.committed(s.index); }
                    Item::Chunk(s, _, _) => t.chunk_committed(s.id),
                }
            }
            let pos: Vec<usize> = { let mut p = vec![0; order.len()]; for (at, &i) in order.iter().enumerate() { p[i] = at; } p };
            for a in 0..items.len() {
                for b in a + 1..items.len() {
                    let conflict = match (&items[a], &items[b]) {
                        (Item::Txn(_, wa), Item::Txn(_, wb)) => wa.barrier || wb.barrier || wa.keys.iter().any(|k| wb.keys.contains(k)),
                        (Item::Txn(_, w), Item::Chunk(_, keys, _)) | (Item::Chunk(_, keys, _), Item::Txn(_, w)) => w.barrier || w.keys.iter().any(|k| keys.contains(k)),
                        (Item::Chunk(_, _, ta), Item::Chunk(_, _, tb)) => ta == tb,
                    };
                    if conflict {
                        prop_assert!(pos[a] < pos[b], "items {} and {} conflict but committed out of order", a, b);
                    }
                }
            }
            prop_assert_eq!(t.low_water(), txns.len() as u64);
            prop_assert!(t.chunks_idle());
        }
    }
}
