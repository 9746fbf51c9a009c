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

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use sluice_binlog::Value;

use crate::target::RowOp;

/// Hash of one (table, key values) pair.
pub type KeyHash = u64;

/// Position of a transaction in source order, starting at 1. 0 means "none".
pub type TxnIndex = u64;

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
}

/// A scheduled transaction: its index and the index it must wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scheduled {
    pub index: TxnIndex,
    /// The transaction may start once the low-water mark is ≥ this.
    pub depends_on: TxnIndex,
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
        Scheduled { index, depends_on }
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

    #[test]
    fn disjoint_transactions_do_not_wait_and_conflicts_do() {
        let mut t = DependencyTracker::new();
        assert_eq!(
            t.schedule(&ws(&[1])),
            Scheduled {
                index: 1,
                depends_on: 0
            }
        );
        assert_eq!(
            t.schedule(&ws(&[2])),
            Scheduled {
                index: 2,
                depends_on: 0
            }
        );
        assert_eq!(
            t.schedule(&ws(&[1, 3])),
            Scheduled {
                index: 3,
                depends_on: 1
            }
        );
        assert_eq!(
            t.schedule(&WriteSet::barrier()),
            Scheduled {
                index: 4,
                depends_on: 3
            }
        );
        assert_eq!(
            t.schedule(&ws(&[9])),
            Scheduled {
                index: 5,
                depends_on: 4
            }
        );
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
        /// Simulates N writers committing in any order the dependencies allow, and checks the
        /// result equals serial application: for every key, the last writer in commit order
        /// is the last writer in source order, and every pair of conflicting transactions
        /// commits in source order.
        #[test]
        fn any_allowed_interleaving_keeps_per_key_order(
            txns in proptest::collection::vec(proptest::collection::vec(0u64..6, 0..4), 1..40),
            barriers in proptest::collection::vec(any::<bool>(), 40),
            choices in proptest::collection::vec(any::<u16>(), 200),
        ) {
            let mut t = DependencyTracker::new();
            let mut sched = Vec::new();
            for (i, keys) in txns.iter().enumerate() {
                let w = if barriers[i] && i % 7 == 3 { WriteSet::barrier() } else { ws(keys) };
                sched.push((t.schedule(&w), w));
            }
            // Run: repeatedly commit any not-yet-committed transaction whose dependency is met.
            let mut done = vec![false; sched.len()];
            let mut order = Vec::new();
            let mut c = choices.iter().cycle();
            while order.len() < sched.len() {
                let lw = t.low_water();
                let ready: Vec<usize> = (0..sched.len()).filter(|&i| !done[i] && sched[i].0.depends_on <= lw).collect();
                prop_assert!(!ready.is_empty(), "deadlock at low water {}", lw);
                let pick = ready[usize::from(*c.next().unwrap()) % ready.len()];
                done[pick] = true;
                order.push(pick);
                t.committed(sched[pick].0.index);
            }
            // Conflicting pairs commit in source order.
            let pos: Vec<usize> = { let mut p = vec![0; order.len()]; for (at, &i) in order.iter().enumerate() { p[i] = at; } p };
            for a in 0..sched.len() {
                for b in a + 1..sched.len() {
                    let (wa, wb) = (&sched[a].1, &sched[b].1);
                    let conflict = wa.barrier || wb.barrier || wa.keys.iter().any(|k| wb.keys.contains(k));
                    if conflict {
                        prop_assert!(pos[a] < pos[b], "txn {} and {} conflict but committed out of order", a + 1, b + 1);
                    }
                }
            }
            prop_assert_eq!(t.low_water(), sched.len() as u64);
        }
    }
}
