//! Row changes buffered inside an open target transaction and sent as multi-row statements
//! (the MariaDB and PostgreSQL targets; SQLite runs in-process and writes row by row).
//!
//! # Why reordering is safe
//!
//! Target tables have one key (the primary key sluice created), and a keyed write's effect
//! depends only on the key it addresses: an upsert writes the whole row (every non-key column
//! is set), so the row ends up as given whatever was there; a delete leaves no row. Writes to
//! different keys therefore commute, and for one key only the *last* change decides the
//! outcome. [`Pending`] keeps, per table and key, at most one delete and one upsert:
//!
//! * an upsert of a key replaces a buffered upsert of that key (the last row wins);
//! * a delete of a key drops a buffered upsert of that key and buffers the delete.
//!
//! A table's buffered deletes are sent before its buffered upserts, so a key with both (a
//! delete then a re-insert, a key change that moved a row back) ends up holding the upsert,
//! exactly as the changes applied one by one would. Per-key order is therefore preserved
//! exactly; only changes to different keys are regrouped. Two upserts of the same key never
//! share a statement (PostgreSQL's `ON CONFLICT DO UPDATE` refuses to touch a row twice).
//!
//! Key identity is the exact key values ([`key_identity`]): two keys sluice tells apart are
//! two target rows (text keys use binary collations, see each target).
//!
//! The buffer is flushed (its statements executed, in order) whenever it holds
//! [`MAX_PENDING_OPS`] changes or [`MAX_PENDING_BYTES`] of values, and always before the
//! checkpoint, backfill or lag record is written, before reads and DDL inside the transaction,
//! and before commit; it is dropped on rollback. An error in a flush rolls back the whole
//! target transaction like any failed write, and names the table.

use std::collections::HashMap;

use sluice_binlog::Value;

/// Flush once this many row changes are buffered.
pub(super) const MAX_PENDING_OPS: usize = 1024;

/// Flush once the buffered values hold about this many bytes of text and binary data.
pub(super) const MAX_PENDING_BYTES: usize = 4 << 20;

/// Rows per multi-row statement: a few fixed sizes, so each table has at most four prepared
/// statements per kind (upsert, delete). A run of n rows is sent as the fewest statements of
/// these sizes (largest first).
pub(super) const BATCH_SIZES: [usize; 4] = [256, 64, 8, 1];

/// Placeholders per statement: MariaDB and PostgreSQL both allow at most 65,535.
pub(super) const MAX_PARAMS: usize = 65_535;

/// The statement sizes for a run of `rows` rows of `params_per_row` placeholders each, in the
/// order they are sent.
pub(super) fn chunk_sizes(rows: usize, params_per_row: usize) -> Vec<usize> {
    let cap = (MAX_PARAMS / params_per_row.max(1)).max(1);
    let mut out = Vec::new();
    let mut left = rows;
    while left > 0 {
        let size = BATCH_SIZES.into_iter().find(|&s| s <= left && s <= cap).unwrap_or(1);
        out.push(size);
        left -= size;
    }
    out
}

/// The identity of a key: the values themselves, written unambiguously (strings escaped,
/// variants named). Floating-point zero is one key whatever its sign, as at the target.
pub(super) fn key_identity<'a>(values: impl Iterator<Item = &'a Value>) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for v in values {
        match v {
            Value::Float(f) if *f == 0.0 => out.push_str("Float(0)"),
            Value::Double(d) if *d == 0.0 => out.push_str("Double(0)"),
            other => {
                let _ = write!(out, "{other:?}");
            }
        }
        out.push('\u{1}');
    }
    out
}

/// A rough size of a value's payload, for [`MAX_PENDING_BYTES`].
pub(super) fn value_bytes(v: &Value) -> usize {
    match v {
        Value::Bytes(b) => b.len(),
        Value::Decimal(s) | Value::Text(s) | Value::Enum(s) | Value::Set(s) | Value::Json(s) => s.len(),
        _ => 8,
    }
}

/// The buffered changes of one table.
pub(super) struct PendingTable<R> {
    pub name: String,
    /// Keys to delete (bound however the target binds them), each key once.
    pub deletes: Vec<R>,
    delete_keys: HashMap<String, ()>,
    /// Rows to upsert; `None` where a later delete of the same key dropped the upsert.
    pub upserts: Vec<Option<R>>,
    upsert_keys: HashMap<String, usize>,
}

/// Buffered row changes of the open transaction (see the module documentation).
pub(super) struct Pending<R> {
    tables: Vec<PendingTable<R>>,
    ops: usize,
    bytes: usize,
}

impl<R> Default for Pending<R> {
    fn default() -> Self {
        Pending {
            tables: Vec::new(),
            ops: 0,
            bytes: 0,
        }
    }
}

impl<R> Pending<R> {
    fn table(&mut self, name: &str) -> &mut PendingTable<R> {
        let i = match self.tables.iter().position(|t| t.name == name) {
            Some(i) => i,
            None => {
                self.tables.push(PendingTable {
                    name: name.to_owned(),
                    deletes: Vec::new(),
                    delete_keys: HashMap::new(),
                    upserts: Vec::new(),
                    upsert_keys: HashMap::new(),
                });
                self.tables.len() - 1
            }
        };
        &mut self.tables[i]
    }

    /// Buffers an upsert of the row `bound` whose key is `key` (from [`key_identity`]).
    pub fn upsert(&mut self, table: &str, key: String, bound: R, bytes: usize) {
        self.ops += 1;
        self.bytes += bytes;
        let t = self.table(table);
        match t.upsert_keys.get(&key) {
            Some(&i) => t.upserts[i] = Some(bound),
            None => {
                t.upsert_keys.insert(key, t.upserts.len());
                t.upserts.push(Some(bound));
            }
        }
    }

    /// Buffers a delete of the key `bound` (identity `key`).
    pub fn delete(&mut self, table: &str, key: String, bound: R, bytes: usize) {
        self.ops += 1;
        self.bytes += bytes;
        let t = self.table(table);
        if let Some(i) = t.upsert_keys.remove(&key) {
            t.upserts[i] = None;
        }
        if t.delete_keys.insert(key, ()).is_none() {
            t.deletes.push(bound);
        }
    }

    /// Whether the buffer should be flushed now.
    pub fn is_full(&self) -> bool {
        self.ops >= MAX_PENDING_OPS || self.bytes >= MAX_PENDING_BYTES
    }

    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    /// Takes every buffered table's changes, leaving the buffer empty.
    pub fn take(&mut self) -> Vec<PendingTable<R>> {
        self.ops = 0;
        self.bytes = 0;
        std::mem::take(&mut self.tables)
    }

    /// Drops everything buffered (rollback).
    pub fn clear(&mut self) {
        self.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_use_fixed_sizes_within_the_parameter_limit() {
        assert_eq!(chunk_sizes(0, 3), Vec::<usize>::new());
        assert_eq!(chunk_sizes(1, 3), vec![1]);
        assert_eq!(chunk_sizes(300, 3), vec![256, 8, 8, 8, 8, 8, 1, 1, 1, 1]);
        assert_eq!(chunk_sizes(600, 3).iter().sum::<usize>(), 600);
        // 1,000 columns: at most 65 rows per statement.
        assert_eq!(chunk_sizes(130, 1000), vec![64, 64, 1, 1]);
        // Wider than the limit allows for 8 rows: one row per statement.
        assert_eq!(chunk_sizes(3, 20_000), vec![1, 1, 1]);
    }

    #[test]
    fn last_change_per_key_wins_and_deletes_go_first() {
        let mut p: Pending<&str> = Pending::default();
        let k = |i: i64| key_identity([Value::Int(i)].iter());
        p.upsert("t", k(1), "u1a", 0);
        p.upsert("t", k(2), "u2", 0);
        p.upsert("t", k(1), "u1b", 0); // replaces u1a in place
        p.delete("t", k(2), "d2", 0); // drops u2
        p.upsert("t", k(2), "u2b", 0); // delete, then re-insert
        p.delete("t", k(2), "d2again", 0); // the delete is already buffered
        p.delete("u", k(1), "x", 0);
        let tables = p.take();
        assert!(p.is_empty());
        assert_eq!(tables.len(), 2);
        assert_eq!(tables[0].deletes, vec!["d2"]);
        assert_eq!(
            tables[0].upserts.iter().flatten().copied().collect::<Vec<_>>(),
            vec!["u1b"]
        );
        assert_eq!(tables[1].deletes, vec!["x"]);
    }

    #[test]
    fn key_identity_is_exact() {
        let a = key_identity([Value::Text("a\u{1}".into()), Value::Text("b".into())].iter());
        let b = key_identity([Value::Text("a".into()), Value::Text("\u{1}b".into())].iter());
        assert_ne!(a, b);
        assert_ne!(
            key_identity([Value::Int(1)].iter()),
            key_identity([Value::Text("1".into())].iter())
        );
        assert_eq!(
            key_identity([Value::Double(-0.0)].iter()),
            key_identity([Value::Double(0.0)].iter())
        );
    }
}
