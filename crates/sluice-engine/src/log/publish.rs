//! `sluice publish`'s end of the log: the source reader's messages, which `sluice run` would
//! hand to its applier, appended to the log as entries instead.
//!
//! The log is the publisher's checkpoint: it resumes from the newest entry's transaction
//! ([`TransactionLog::resume_point`]), so a publisher killed at any moment appends every
//! transaction exactly once. An append is retried (same id) until the log confirms it; the
//! log drops the copy of one it already holds.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_binlog::{SourceGtid, SourcePosition};
use tokio::sync::mpsc;

use super::{to_wire, Body, Entry, LogError, TransactionLog};
use crate::apply::{ApplyMsg, Progress};
use crate::target::{Checkpoint, RowOp};

const RETRY_START: Duration = Duration::from_millis(200);
/// An empty transaction (no selected rows) is appended when nothing follows it this soon…
const EMPTY_IDLE: Duration = Duration::from_millis(50);
/// …or when nothing has moved the log's position for this long.
const EMPTY_EVERY: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// A transaction being appended in parts.
struct OpenTxn {
    gtid: SourceGtid,
    commit_unix: u32,
    next_part: u32,
    position_before: SourcePosition,
}

pub struct Publisher<L> {
    log: L,
    /// The source position after the last whole transaction handled (appended, or empty and
    /// left out).
    position: SourcePosition,
    /// A transaction whose first parts the log holds already (a restart or a reconnect cut it
    /// short): its parts below the number are not appended again.
    parts_held: Option<(SourceGtid, u32)>,
    open: Option<OpenTxn>,
    /// The last empty transaction (it wrote only unselected tables, or sluice's heartbeat),
    /// held back: appended with the heartbeat that follows it (the edges' lag samples), or
    /// when the source goes quiet or the log's position has not moved for a while; otherwise
    /// left out (the next entry's transaction covers it).
    held_empty: Option<(SourceGtid, u32, SourcePosition)>,
    progress: Arc<Progress>,
}

impl<L: TransactionLog> Publisher<L> {
    pub fn new(
        log: L,
        position: SourcePosition,
        parts_held: Option<(SourceGtid, u32)>,
        progress: Arc<Progress>,
    ) -> Self {
        Publisher {
            log,
            position,
            parts_held,
            open: None,
            held_empty: None,
            progress,
        }
    }

    /// Appends the reader's messages until its channel closes.
    pub async fn run(mut self, mut messages: mpsc::Receiver<ApplyMsg>) -> Result<(), LogError> {
        let mut position_published = Instant::now();
        loop {
            let msg = if self.held_empty.is_none() {
                messages.recv().await
            } else {
                match tokio::time::timeout(EMPTY_IDLE, messages.recv()).await {
                    Ok(msg) => msg,
                    Err(_) => {
                        self.append_held_empty().await?;
                        position_published = Instant::now();
                        continue;
                    }
                }
            };
            let Some(msg) = msg else { return Ok(()) };
            if position_published.elapsed() >= EMPTY_EVERY && !matches!(msg, ApplyMsg::Heartbeat { .. }) {
                // A source busy with transactions no rule selects: its position reaches the
                // edges now and then all the same.
                self.append_held_empty().await?;
                position_published = Instant::now();
            }
            if matches!(msg, ApplyMsg::Txn { ref ops, .. } if !ops.is_empty())
                || matches!(msg, ApplyMsg::Ddl { .. } | ApplyMsg::LargeEnd)
            {
                position_published = Instant::now();
            }
            self.handle(msg).await?;
        }
    }

    /// Appends the empty transaction held back, if any, so that the edges' checkpoints reach
    /// the source's position (`sluice verify` and clean stops wait for that).
    async fn append_held_empty(&mut self) -> Result<(), LogError> {
        let Some((gtid, commit_unix, before)) = self.held_empty.take() else {
            return Ok(());
        };
        self.append(&empty_txn(gtid, commit_unix, None), &before).await
    }

    async fn handle(&mut self, msg: ApplyMsg) -> Result<(), LogError> {
        let held = self.held_empty.take();
        match msg {
            ApplyMsg::Heartbeat { sent_us } => {
                if let Some((gtid, commit_unix, before)) = held {
                    self.append(&empty_txn(gtid, commit_unix, Some(sent_us)), &before)
                        .await?;
                }
            }
            // Definitions travel with the rows of every entry (see `to_wire`).
            ApplyMsg::PrepareTable(_) => {}
            ApplyMsg::Txn { gtid, commit_unix, ops } => {
                let before = self.position.clone();
                if ops.is_empty() {
                    self.held_empty = Some((gtid, commit_unix, before));
                } else {
                    let (tables, wire) = to_wire(&ops);
                    let entry = Entry {
                        gtid,
                        commit_unix,
                        body: Body::Txn {
                            tables,
                            ops: wire,
                            heartbeat_us: None,
                        },
                    };
                    let encoded = entry.encode();
                    if encoded.len() <= self.log.max_entry_bytes() {
                        self.append_encoded(&entry, encoded, &before).await?;
                    } else {
                        // Too large for one message: in parts, applied as one transaction.
                        self.open = Some(OpenTxn {
                            gtid,
                            commit_unix,
                            next_part: 0,
                            position_before: before,
                        });
                        self.append_parts(&ops).await?;
                        self.end_parts().await?;
                    }
                }
                self.finished(gtid);
            }
            ApplyMsg::Ddl {
                gtid,
                commit_unix,
                changes,
            } => {
                let entry = Entry {
                    gtid,
                    commit_unix,
                    body: Body::Ddl {
                        changes: changes.iter().map(Into::into).collect(),
                    },
                };
                let before = self.position.clone();
                self.append(&entry, &before).await?;
                self.finished(gtid);
            }
            ApplyMsg::LargeStart { gtid, commit_unix, ops } => {
                self.open = Some(OpenTxn {
                    gtid,
                    commit_unix,
                    next_part: 0,
                    position_before: self.position.clone(),
                });
                self.append_parts(&ops).await?;
            }
            ApplyMsg::LargeRows(ops) => self.append_parts(&ops).await?,
            ApplyMsg::LargeEnd => {
                let gtid = self.open.as_ref().map(|o| o.gtid);
                self.end_parts().await?;
                if let Some(gtid) = gtid {
                    self.finished(gtid);
                }
            }
            ApplyMsg::Chunk { .. } => {
                return Err(LogError::Backend {
                    operation: "publish",
                    message: "a backfill chunk reached the publisher, which copies no existing rows".into(),
                })
            }
            ApplyMsg::Abort(reply) => {
                // The source connection dropped: the reader resumes after the last whole
                // transaction; the parts of one cut short are in the log already.
                if let Some(open) = self.open.take() {
                    self.parts_held = Some((open.gtid, open.next_part));
                }
                let _ = reply.send(Checkpoint {
                    position: self.position.clone(),
                    ..Checkpoint::default()
                });
            }
        }
        Ok(())
    }

    fn finished(&mut self, gtid: SourceGtid) {
        self.position.advance(gtid);
        self.progress.source_txns_applied.fetch_add(1, Ordering::Relaxed);
        *self.progress.applied_position.lock().expect("progress lock") = self.position.clone();
    }

    /// Appends `ops` as the open transaction's next parts, each as large as a message allows.
    async fn append_parts(&mut self, ops: &[RowOp]) -> Result<(), LogError> {
        if ops.is_empty() {
            return Ok(());
        }
        let open = self.open.as_ref().expect("a transaction in parts is open");
        let part_entry = |ops: &[RowOp]| {
            let (tables, wire) = to_wire(ops);
            Entry {
                gtid: open.gtid,
                commit_unix: open.commit_unix,
                body: Body::Part {
                    part: open.next_part,
                    last: false,
                    tables,
                    ops: wire,
                },
            }
        };
        // Halve a piece until it fits (deterministic: a restart cuts the same parts).
        let max = self.log.max_entry_bytes();
        let mut pending = vec![ops];
        let mut encoded_parts = Vec::new();
        while let Some(piece) = pending.pop() {
            let encoded = part_entry(piece).encode();
            if encoded.len() <= max {
                encoded_parts.push(piece);
            } else if piece.len() == 1 {
                return Err(LogError::RowTooLarge {
                    table: piece[0].table().source_name.clone(),
                    gtid: open.gtid,
                    max_bytes: max,
                });
            } else {
                let (first, second) = piece.split_at(piece.len() / 2);
                pending.push(second);
                pending.push(first);
            }
        }
        let (gtid, commit_unix) = (open.gtid, open.commit_unix);
        for piece in encoded_parts {
            let (tables, wire) = to_wire(piece);
            let entry = Entry {
                gtid,
                commit_unix,
                body: Body::Part {
                    part: self.open.as_ref().expect("open").next_part,
                    last: false,
                    tables,
                    ops: wire,
                },
            };
            self.append_part(entry).await?;
        }
        Ok(())
    }

    /// Appends the open transaction's last part (no rows: it marks the end).
    async fn end_parts(&mut self) -> Result<(), LogError> {
        let Some(open) = self.open.as_ref() else { return Ok(()) };
        let entry = Entry {
            gtid: open.gtid,
            commit_unix: open.commit_unix,
            body: Body::Part {
                part: open.next_part,
                last: true,
                tables: Vec::new(),
                ops: Vec::new(),
            },
        };
        self.append_part(entry).await?;
        self.open = None;
        Ok(())
    }

    async fn append_part(&mut self, entry: Entry) -> Result<(), LogError> {
        let open = self.open.as_mut().expect("open");
        let Body::Part { part, .. } = entry.body else {
            unreachable!("parts only")
        };
        open.next_part += 1;
        let before = open.position_before.clone();
        if self
            .parts_held
            .is_some_and(|(gtid, held)| gtid == entry.gtid && part < held)
        {
            return Ok(());
        }
        self.parts_held = None;
        self.append(&entry, &before).await
    }

    async fn append(&self, entry: &Entry, before: &SourcePosition) -> Result<(), LogError> {
        self.append_encoded(entry, entry.encode(), before).await
    }

    /// Appends until the log confirms it: the same id again after a failure, which the log
    /// drops if the first attempt reached it.
    async fn append_encoded(&self, entry: &Entry, encoded: Vec<u8>, before: &SourcePosition) -> Result<(), LogError> {
        let mut retry_in = RETRY_START;
        loop {
            match self.log.append(entry, encoded.clone(), before).await {
                Ok(()) => {
                    let rows = match &entry.body {
                        Body::Txn { ops, .. } | Body::Part { ops, .. } => ops.len() as u64,
                        Body::Ddl { .. } => 0,
                    };
                    self.progress.rows_applied.fetch_add(rows, Ordering::Relaxed);
                    return Ok(());
                }
                Err(LogError::Backend { operation, message }) => {
                    tracing::warn!(
                        entry = %entry.id(),
                        retry_in_ms = retry_in.as_millis() as u64,
                        "cannot {operation} to the log ({message}); trying again"
                    );
                    tokio::time::sleep(retry_in).await;
                    retry_in = (retry_in * 2).min(RETRY_MAX);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A source transaction with nothing to apply (held back, or carrying sluice's heartbeat).
fn empty_txn(gtid: SourceGtid, commit_unix: u32, heartbeat_us: Option<u64>) -> Entry {
    Entry {
        gtid,
        commit_unix,
        body: Body::Txn {
            tables: Vec::new(),
            ops: Vec::new(),
            heartbeat_us,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use sluice_binlog::Value;

    use super::*;
    use crate::log::{LogCursor, ResumePoint};
    use crate::target::TargetTable;

    /// A log in memory with no de-duplication at all: what it holds twice, the publisher
    /// appended twice. Messages hold about one row each.
    #[derive(Default)]
    struct MemoryLog {
        entries: Mutex<Vec<(Entry, SourcePosition)>>,
    }

    struct NoCursor;

    impl LogCursor for NoCursor {
        async fn next(&mut self) -> Result<(u64, Entry), LogError> {
            unreachable!("the publisher does not read")
        }
    }

    impl TransactionLog for &MemoryLog {
        fn max_entry_bytes(&self) -> usize {
            250
        }

        async fn append(&self, entry: &Entry, _: Vec<u8>, before: &SourcePosition) -> Result<(), LogError> {
            self.entries.lock().unwrap().push((entry.clone(), before.clone()));
            Ok(())
        }

        async fn resume_point(&self) -> Result<Option<ResumePoint>, LogError> {
            let entries = self.entries.lock().unwrap();
            Ok(entries
                .last()
                .map(|(last, before)| ResumePoint::after(last, before.clone())))
        }

        async fn first_not_covered(&self, _: &SourcePosition) -> Result<u64, LogError> {
            unreachable!("the publisher does not read")
        }

        async fn read_from(&self, _: u64) -> Result<impl LogCursor, LogError> {
            Ok(NoCursor)
        }
    }

    fn rows(table: &Arc<TargetTable>, keys: std::ops::Range<i64>) -> Vec<RowOp> {
        keys.map(|k| RowOp::Insert {
            table: table.clone(),
            row: vec![Value::Int(k), Value::Text("x".repeat(60))],
        })
        .collect()
    }

    async fn publish(log: &MemoryLog, messages: Vec<ApplyMsg>) {
        let resume = log.resume_point().await.unwrap();
        let (position, partial) = resume.map(|r| (r.position, r.partial)).unwrap_or_default();
        let publisher = Publisher::new(log, position, partial, Arc::default());
        let (tx, rx) = mpsc::channel(messages.len() + 1);
        for m in messages {
            tx.send(m).await.unwrap();
        }
        drop(tx);
        publisher.run(rx).await.unwrap();
    }

    #[tokio::test]
    async fn a_transaction_cut_short_is_completed_without_its_parts_twice() {
        let table = Arc::new(crate::log::tests::table());
        let gtid = |s: u64| {
            SourceGtid::Mariadb(sluice_binlog::Gtid {
                domain: 0,
                server: 1,
                sequence: s,
            })
        };
        let small = |s| ApplyMsg::Txn {
            gtid: gtid(s),
            commit_unix: 0,
            ops: rows(&table, 0..1),
        };
        let large = || {
            vec![
                ApplyMsg::LargeStart {
                    gtid: gtid(2),
                    commit_unix: 0,
                    ops: rows(&table, 0..2),
                },
                ApplyMsg::LargeRows(rows(&table, 2..3)),
            ]
        };
        let log = MemoryLog::default();
        // The publisher dies after the large transaction's first three parts.
        let mut first = vec![small(1)];
        first.extend(large());
        publish(&log, first).await;
        assert_eq!(
            (&log).resume_point().await.unwrap().unwrap().partial,
            Some((gtid(2), 3))
        );
        // Started again, the reader sends the whole transaction again from its start.
        let mut again = large();
        again.extend([ApplyMsg::LargeRows(rows(&table, 3..4)), ApplyMsg::LargeEnd, small(3)]);
        publish(&log, again).await;
        let ids: Vec<String> = log.entries.lock().unwrap().iter().map(|(e, _)| e.id()).collect();
        assert_eq!(
            ids,
            ["0-1-1", "0-1-2/0", "0-1-2/1", "0-1-2/2", "0-1-2/3", "0-1-2/4", "0-1-3"]
        );
        let (last_part, before) = log.entries.lock().unwrap()[5].clone();
        assert!(matches!(last_part.body, Body::Part { last: true, .. }));
        assert_eq!(
            before.to_string(),
            "0-1-1",
            "a part's position is the one before its transaction"
        );
        assert_eq!(
            (&log).resume_point().await.unwrap().unwrap().position.to_string(),
            "0-1-3"
        );
    }
}
