//! The fan-out log: source transactions, read from the binlog once by `sluice publish`, kept
//! in a replicated log that many consumers (`[source] kind = "nats"`) apply to their edges
//! (docs/fan-out.md).
//!
//! An entry is one whole source transaction (its row changes after the publisher's filters
//! and transforms, with the definitions of the tables it writes, so that a consumer needs no
//! access to the source), a DDL the edges follow, or one numbered part of a transaction too
//! large for one log message. Entries are appended in source order; each is identified by its
//! GTID (and part), which the log uses to drop a repeated append, and which the consumers'
//! checkpoints (kept in their targets, with the rows) are made of.
//!
//! The log itself is behind [`TransactionLog`]; [`nats`] is the JetStream backend.

pub mod consume;
pub mod nats;
pub mod publish;

use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_binlog::{SourceGtid, SourcePosition, Value};

use crate::apply::EdgeChange;
use crate::target::{RowOp, TargetTable};

/// The first byte of every entry: the encoding of what follows (MessagePack of [`Entry`]).
/// A consumer refuses an entry of a version it does not know rather than guess.
pub const FORMAT_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot connect to NATS at {url}: {message}. Check [source]/[target] url and credentials_file, and that nats-server runs with JetStream (-js)")]
    Connect { url: String, message: String },
    #[error("the log stream {stream} does not exist; start `sluice publish` for it first (it creates the stream)")]
    NoStream { stream: String },
    #[error("log operation {operation} failed: {message}")]
    Backend { operation: &'static str, message: String },
    #[error("log entry {id} is written in format version {version}, which this sluice does not read; upgrade sluice")]
    UnknownVersion { id: String, version: u8 },
    #[error("log entry {id} cannot be decoded: {message}")]
    Corrupt { id: String, message: String },
    #[error(
        "one row change of table {table} in transaction {gtid} is larger than a log message may be \
         ({max_bytes} bytes); raise the NATS server's max_payload"
    )]
    RowTooLarge {
        table: String,
        gtid: SourceGtid,
        max_bytes: usize,
    },
    #[error(
        "the log no longer holds what this edge needs: its checkpoint is {checkpoint}, but the oldest entry \
         the stream keeps ({oldest}) is not covered by it, and entries before it were removed. \
         Fill the edge again (docs/fan-out.md, \"An edge that joins late\")"
    )]
    Truncated { checkpoint: String, oldest: String },
    #[error("log entry {id} at offset {offset} is out of order: {message}")]
    OutOfOrder { id: String, offset: u64, message: String },
}

/// One entry of the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub gtid: SourceGtid,
    /// The source transaction's commit time (Unix seconds, from its binlog event header).
    pub commit_unix: u32,
    pub body: Body,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// A whole source transaction.
    Txn {
        tables: Vec<TargetTable>,
        ops: Vec<WireOp>,
        /// sluice's heartbeat row in this transaction, written at this time (Unix µs), for
        /// the consumers' lag.
        heartbeat_us: Option<u64>,
    },
    /// Part `part` (from 0, consecutive) of a transaction too large for one entry; the part
    /// with `last` ends it. Consumers apply the parts in one target transaction.
    Part {
        part: u32,
        last: bool,
        tables: Vec<TargetTable>,
        ops: Vec<WireOp>,
    },
    /// A DDL transaction the edges follow (TRUNCATE, DROP TABLE of a replicated table).
    Ddl { changes: Vec<WireChange> },
}

/// A row change; `table` indexes the entry's `tables`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WireOp {
    Insert {
        table: u32,
        row: Vec<Value>,
    },
    Update {
        table: u32,
        before: Vec<Value>,
        after: Vec<Value>,
    },
    Delete {
        table: u32,
        row: Vec<Value>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WireChange {
    Truncate(TargetTable),
    Drop(TargetTable),
    /// Columns held back (`EdgeChange::Hold`). Appended last: entries written before it
    /// decode as they did.
    Hold {
        table: TargetTable,
        columns: Vec<String>,
    },
}

impl Entry {
    /// The entry's identity in the log: the GTID, and for a part its number (`0-1-42/3`).
    pub fn id(&self) -> String {
        match &self.body {
            Body::Part { part, .. } => format!("{}/{part}", self.gtid),
            _ => self.gtid.to_string(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![FORMAT_VERSION];
        rmp_serde::encode::write(&mut bytes, self).expect("entries always serialize");
        bytes
    }

    /// Decodes an entry; `id` names it in errors.
    pub fn decode(id: &str, bytes: &[u8]) -> Result<Entry, LogError> {
        match bytes.split_first() {
            Some((&FORMAT_VERSION, rest)) => rmp_serde::from_slice(rest).map_err(|e| LogError::Corrupt {
                id: id.to_owned(),
                message: e.to_string(),
            }),
            Some((&version, _)) => Err(LogError::UnknownVersion {
                id: id.to_owned(),
                version,
            }),
            None => Err(LogError::Corrupt {
                id: id.to_owned(),
                message: "empty".into(),
            }),
        }
    }
}

/// The GTID an entry id names (`0-1-42` or `0-1-42/3`).
pub fn gtid_of_id(id: &str) -> Option<SourceGtid> {
    id.split('/').next()?.parse().ok()
}

/// Row changes in wire form, with the definitions of the tables they write.
pub fn to_wire(ops: &[RowOp]) -> (Vec<TargetTable>, Vec<WireOp>) {
    let mut tables: Vec<Arc<TargetTable>> = Vec::new();
    let mut index = |table: &Arc<TargetTable>| -> u32 {
        let at = tables.iter().position(|t| Arc::ptr_eq(t, table) || **t == **table);
        at.unwrap_or_else(|| {
            tables.push(table.clone());
            tables.len() - 1
        }) as u32
    };
    let ops = ops
        .iter()
        .map(|op| match op {
            RowOp::Insert { table, row } => WireOp::Insert {
                table: index(table),
                row: row.clone(),
            },
            RowOp::Update { table, before, after } => WireOp::Update {
                table: index(table),
                before: before.clone(),
                after: after.clone(),
            },
            RowOp::Delete { table, row } => WireOp::Delete {
                table: index(table),
                row: row.clone(),
            },
        })
        .collect();
    (tables.iter().map(|t| (**t).clone()).collect(), ops)
}

impl From<&EdgeChange> for WireChange {
    fn from(change: &EdgeChange) -> Self {
        match change {
            EdgeChange::Truncate(t) => WireChange::Truncate((**t).clone()),
            EdgeChange::Drop(t) => WireChange::Drop((**t).clone()),
            EdgeChange::Hold { table, columns } => WireChange::Hold {
                table: (**table).clone(),
                columns: columns.clone(),
            },
        }
    }
}

/// Where a publisher resumes: after the transaction of the log's newest entry, or, when that
/// entry is a part of a transaction the log does not hold whole, before that transaction
/// (whose parts up to `parts_held` are then not appended again).
#[derive(Clone, Debug, PartialEq)]
pub struct ResumePoint {
    pub position: SourcePosition,
    /// The transaction cut short, and the number of its parts the log holds.
    pub partial: Option<(SourceGtid, u32)>,
}

impl ResumePoint {
    /// Where to resume when `last` is the log's newest entry, appended with `position_before`.
    pub fn after(last: &Entry, position_before: SourcePosition) -> ResumePoint {
        match last.body {
            Body::Part { part, last: false, .. } => ResumePoint {
                position: position_before,
                partial: Some((last.gtid, part + 1)),
            },
            _ => {
                let mut position = position_before;
                position.advance(last.gtid);
                ResumePoint {
                    position,
                    partial: None,
                }
            }
        }
    }
}

/// A replicated, ordered log of entries. Offsets are the log's own (JetStream stream
/// sequences, Kafka partition offsets): increasing in append order.
pub trait TransactionLog: Send + Sync {
    /// The largest encoded entry the log accepts.
    fn max_entry_bytes(&self) -> usize;

    /// Appends `entry` (encoded) under its id, recording `position_before` (the source
    /// position before the entry's transaction) beside it. Returns once the log holds it
    /// durably; an entry whose id the log already holds is not added again.
    fn append(
        &self,
        entry: &Entry,
        encoded: Vec<u8>,
        position_before: &SourcePosition,
    ) -> impl Future<Output = Result<(), LogError>> + Send;

    /// Where a publisher resumes, from the newest entry (`None`: the log is empty).
    fn resume_point(&self) -> impl Future<Output = Result<Option<ResumePoint>, LogError>> + Send;

    /// The offset of the first entry whose transaction `low_water` does not contain (the
    /// entries before it are all applied), or the offset the next entry will get.
    fn first_not_covered(&self, low_water: &SourcePosition) -> impl Future<Output = Result<u64, LogError>> + Send;

    /// Reads entries from `offset` on, in order, waiting for new ones.
    fn read_from(&self, offset: u64) -> impl Future<Output = Result<impl LogCursor, LogError>> + Send;
}

/// Entries read in order (see [`TransactionLog::read_from`]).
pub trait LogCursor: Send {
    /// The next entry and its offset; `Err` when the log connection failed (read again from
    /// the offset after the last entry returned).
    fn next(&mut self) -> impl Future<Output = Result<(u64, Entry), LogError>> + Send;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sluice_binlog::{Charset, ColumnDef, ColumnKind};

    /// A table `t (id INT, v TEXT)` keyed by `id`.
    pub(crate) fn table() -> TargetTable {
        let column = |name: &str, kind| crate::target::TargetColumn {
            name: name.into(),
            source: ColumnDef {
                name: name.into(),
                kind,
                binlog_type: 3,
                meta: 0,
                unsigned: false,
                nullable: false,
                charset: Charset::Utf8,
                labels: Vec::new(),
                precision: 0,
                scale: 0,
                fsp: 0,
                length: 0,
            },
        };
        TargetTable {
            source_name: "shop.t".into(),
            name: "t".into(),
            columns: vec![column("id", ColumnKind::Int), column("v", ColumnKind::Text)],
            key: vec![0],
            rules: String::new(),
        }
    }

    #[test]
    fn entries_round_trip_and_name_their_transaction() {
        let t = Arc::new(table());
        let ops = vec![
            RowOp::Insert {
                table: t.clone(),
                row: vec![Value::Int(1), Value::Text("a".into())],
            },
            RowOp::Delete {
                table: t.clone(),
                row: vec![Value::Int(1), Value::Null],
            },
        ];
        let (tables, wire) = to_wire(&ops);
        assert_eq!(tables.len(), 1, "one definition per table, however many rows");
        let entry = Entry {
            gtid: "0-1-42".parse().unwrap(),
            commit_unix: 7,
            body: Body::Part {
                part: 3,
                last: false,
                tables,
                ops: wire,
            },
        };
        assert_eq!(entry.id(), "0-1-42/3");
        assert_eq!(gtid_of_id(&entry.id()), Some(entry.gtid));
        let bytes = entry.encode();
        assert_eq!(Entry::decode("x", &bytes).unwrap(), entry);
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused() {
        assert!(matches!(
            Entry::decode("0-1-1", &[9, 1, 2]),
            Err(LogError::UnknownVersion { version: 9, .. })
        ));
        assert!(matches!(
            Entry::decode("0-1-1", &[FORMAT_VERSION, 0xc1]),
            Err(LogError::Corrupt { .. })
        ));
        assert!(matches!(Entry::decode("0-1-1", &[]), Err(LogError::Corrupt { .. })));
    }
}
