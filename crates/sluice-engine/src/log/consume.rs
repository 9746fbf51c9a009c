//! A consumer's end of the log (`[source] kind = "nats"`): entries read from the first one
//! the target's checkpoint does not cover, turned back into the messages the source reader
//! would have sent, and handed to the same applier. The checkpoint in the target is the only
//! record of how far this edge got: entries it covers are skipped, so each source transaction
//! is applied once whatever the log delivers again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_binlog::SourceGtid;
use tokio::sync::{mpsc, oneshot};

use super::{Body, Entry, LogCursor, LogError, TransactionLog, WireChange, WireOp};
use crate::apply::{ApplyMsg, EdgeChange};
use crate::target::{Checkpoint, RowOp, TargetTable};

const RETRY_START: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Turns entries into applier messages, keeping what the applier must know across entries:
/// the table definitions it has prepared, and the transaction being read in parts.
#[derive(Default)]
pub struct EntryReader {
    prepared: HashMap<String, Arc<TargetTable>>,
    /// The transaction in parts being read, and its next part's number.
    open: Option<(SourceGtid, u32)>,
}

impl EntryReader {
    /// The messages for the entry at `offset`; none when `applied` covers its transaction.
    pub fn messages(&mut self, offset: u64, entry: Entry, applied: &Checkpoint) -> Result<Vec<ApplyMsg>, LogError> {
        let id = entry.id();
        let out_of_order = |message: String| LogError::OutOfOrder {
            id: id.clone(),
            offset,
            message,
        };
        if let Some((gtid, next)) = self.open {
            if !matches!(entry.body, Body::Part { part, .. } if entry.gtid == gtid && part == next) {
                return Err(out_of_order(format!("part {next} of {gtid} was expected")));
            }
        }
        if applied.covers(entry.gtid) {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        match entry.body {
            Body::Txn {
                tables,
                ops,
                heartbeat_us,
            } => {
                let ops = self.row_ops(tables, ops, &mut out);
                out.push(ApplyMsg::Txn {
                    gtid: entry.gtid,
                    commit_unix: entry.commit_unix,
                    ops,
                });
                if let Some(sent_us) = heartbeat_us {
                    out.push(ApplyMsg::Heartbeat { sent_us });
                }
            }
            Body::Part {
                part,
                last,
                tables,
                ops,
            } => {
                if part == 0 {
                    let ops = self.row_ops(tables, ops, &mut out);
                    out.push(ApplyMsg::LargeStart {
                        gtid: entry.gtid,
                        commit_unix: entry.commit_unix,
                        ops,
                    });
                } else if self.open.is_none() {
                    return Err(out_of_order(format!("part {part} without part 0")));
                } else if !ops.is_empty() {
                    let ops = self.row_ops(tables, ops, &mut out);
                    out.push(ApplyMsg::LargeRows(ops));
                }
                if last {
                    out.push(ApplyMsg::LargeEnd);
                    self.open = None;
                } else {
                    self.open = Some((entry.gtid, part + 1));
                }
            }
            Body::Ddl { changes } => {
                let changes = changes
                    .into_iter()
                    .map(|change| match change {
                        WireChange::Truncate(t) => EdgeChange::Truncate(self.table(t, &mut out)),
                        WireChange::Drop(t) => EdgeChange::Drop(self.table(t, &mut out)),
                        WireChange::Hold { table, columns } => EdgeChange::Hold {
                            table: self.table(table, &mut out),
                            columns,
                        },
                    })
                    .collect();
                out.push(ApplyMsg::Ddl {
                    gtid: entry.gtid,
                    commit_unix: entry.commit_unix,
                    changes,
                });
            }
        }
        Ok(out)
    }

    /// The definition as the applier knows it, after a `PrepareTable` when it is new or
    /// changed (the source's schema changed).
    fn table(&mut self, table: TargetTable, out: &mut Vec<ApplyMsg>) -> Arc<TargetTable> {
        match self.prepared.get(&table.name) {
            Some(known) if **known == table => known.clone(),
            _ => {
                let table = Arc::new(table);
                self.prepared.insert(table.name.clone(), table.clone());
                out.push(ApplyMsg::PrepareTable(table.clone()));
                table
            }
        }
    }

    fn row_ops(&mut self, tables: Vec<TargetTable>, ops: Vec<WireOp>, out: &mut Vec<ApplyMsg>) -> Vec<RowOp> {
        let tables: Vec<Arc<TargetTable>> = tables.into_iter().map(|t| self.table(t, out)).collect();
        ops.into_iter()
            .map(|op| match op {
                WireOp::Insert { table, row } => RowOp::Insert {
                    table: tables[table as usize].clone(),
                    row,
                },
                WireOp::Update { table, before, after } => RowOp::Update {
                    table: tables[table as usize].clone(),
                    before,
                    after,
                },
                WireOp::Delete { table, row } => RowOp::Delete {
                    table: tables[table as usize].clone(),
                    row,
                },
            })
            .collect()
    }
}

/// Reads the log from the first entry `applied` does not cover and sends the applier its
/// messages, until the applier goes away or an error a retry cannot mend. A lost log
/// connection is read again from the entry after the last one handed over.
pub async fn consume<L: TransactionLog>(
    log: L,
    applied: Checkpoint,
    tx: mpsc::Sender<ApplyMsg>,
    mut connected: Option<oneshot::Sender<()>>,
) -> Result<(), LogError> {
    let mut offset = log.first_not_covered(&applied.position).await?;
    tracing::info!(offset, position = %applied.position, "reading the log");
    let mut reader = EntryReader::default();
    let mut retry_in = RETRY_START;
    loop {
        let failure = match log.read_from(offset).await {
            Ok(mut cursor) => {
                if let Some(tx) = connected.take() {
                    let _ = tx.send(());
                }
                loop {
                    match cursor.next().await {
                        Ok((at, _)) if at < offset => {}
                        Ok((at, entry)) => {
                            for msg in reader.messages(at, entry, &applied)? {
                                if tx.send(msg).await.is_err() {
                                    return Ok(());
                                }
                            }
                            offset = at + 1;
                            retry_in = RETRY_START;
                        }
                        Err(e) => break e,
                    }
                }
            }
            Err(e) => e,
        };
        match failure {
            LogError::Backend { operation, message } => {
                tracing::warn!(
                    offset,
                    retry_in_ms = retry_in.as_millis() as u64,
                    "cannot {operation} ({message}); reading the log again"
                );
                tokio::select! {
                    () = tokio::time::sleep(retry_in) => {}
                    () = tx.closed() => return Ok(()),
                }
                retry_in = (retry_in * 2).min(RETRY_MAX);
            }
            other => return Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(gtid: &str, part: u32, last: bool) -> Entry {
        Entry {
            gtid: gtid.parse().unwrap(),
            commit_unix: 0,
            body: Body::Part {
                part,
                last,
                tables: Vec::new(),
                ops: Vec::new(),
            },
        }
    }

    #[test]
    fn parts_must_follow_each_other() {
        let none = Checkpoint::default();
        let mut reader = EntryReader::default();
        assert!(matches!(
            reader.messages(1, part("0-1-5", 0, false), &none).unwrap()[..],
            [ApplyMsg::LargeStart { .. }]
        ));
        // Another transaction before the open one ended: refused, never applied half.
        assert!(matches!(
            reader.messages(2, part("0-1-6", 0, false), &none),
            Err(LogError::OutOfOrder { .. })
        ));
        let mut reader = EntryReader::default();
        assert!(matches!(
            reader.messages(1, part("0-1-5", 1, false), &none),
            Err(LogError::OutOfOrder { .. })
        ));
    }

    #[test]
    fn covered_transactions_are_skipped_whole() {
        let mut applied = Checkpoint::default();
        applied
            .position
            .advance("0-1-5".parse::<sluice_binlog::SourceGtid>().unwrap());
        let mut reader = EntryReader::default();
        for (offset, p) in [(1, 0, false), (2, 1, false), (3, 2, true)].map(|(o, n, l)| (o, part("0-1-5", n, l))) {
            assert!(reader.messages(offset, p, &applied).unwrap().is_empty());
        }
        let msgs = reader.messages(4, part("0-1-6", 0, true), &applied).unwrap();
        assert!(matches!(msgs[..], [ApplyMsg::LargeStart { .. }, ApplyMsg::LargeEnd]));
    }
}
