//! The applier: turns the stream of source transactions into target transactions.
//!
//! It runs on its own thread (targets are blocking), fed by a bounded channel so that a
//! large source transaction flows through in chunks instead of being held in memory.
//! Consecutive source transactions are grouped into one target transaction until it holds
//! `batch_max_rows` row changes, has been open `batch_max_delay`, or the channel is empty
//! (the source is idle, so waiting would only add lag). A target transaction only ever ends
//! at a source transaction boundary, and its checkpoint names the last source transaction in
//! it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_binlog::{Gtid, GtidPosition};
use tokio::sync::{mpsc, oneshot};

use crate::target::{Checkpoint, RowOp, Target, TargetError, TargetTable};

/// Messages from the source reader to the applier, in binlog order.
#[derive(Debug)]
pub enum ApplyMsg {
    /// A replicated table seen for the first time: create it at the target.
    PrepareTable(Arc<TargetTable>),
    /// Row changes of the current source transaction (one chunk of it).
    Rows(Vec<RowOp>),
    /// The current source transaction is complete.
    Commit { gtid: Gtid, commit_unix: u32 },
    /// The source lost its connection: drop everything not committed and reply with the
    /// committed checkpoint, from which the source resumes.
    Abort(oneshot::Sender<Checkpoint>),
}

#[derive(Clone, Copy, Debug)]
pub struct BatchPolicy {
    pub max_rows: usize,
    pub max_delay: Duration,
}

/// Live counters, shared with progress displays and status.
#[derive(Debug, Default)]
pub struct Progress {
    pub rows_applied: AtomicU64,
    pub source_txns_applied: AtomicU64,
    pub target_commits: AtomicU64,
    /// Source commit time (Unix seconds) of the last committed source transaction.
    pub last_source_commit_unix: AtomicU64,
    pub applied_position: Mutex<GtidPosition>,
}

/// A debug line is logged each time an open target transaction grows by this many rows.
const LARGE_BATCH_LOG_EVERY: usize = 50_000;

/// Feeds the applier: `Rows` messages with at most this many row changes.
pub const ROWS_PER_MESSAGE: usize = 512;

struct Batch {
    started: Instant,
    rows: usize,
    source_txns: u64,
    /// Rows of the current (incomplete) source transaction have been applied.
    mid_transaction: bool,
}

/// Runs until the channel closes. On close, commits complete source transactions and rolls
/// back an incomplete one.
pub fn run_applier(
    target: &mut dyn Target,
    mut rx: mpsc::Receiver<ApplyMsg>,
    policy: BatchPolicy,
    mut checkpoint: Checkpoint,
    progress: &Progress,
) -> Result<(), TargetError> {
    let mut committed = checkpoint.clone();
    let mut batch: Option<Batch> = None;
    let mut batch_rows_total = 0u64;

    let flush = |target: &mut dyn Target,
                 batch: &mut Option<Batch>,
                 checkpoint: &Checkpoint,
                 committed: &mut Checkpoint,
                 rows: &mut u64|
     -> Result<(), TargetError> {
        if let Some(b) = batch.take() {
            target.commit(checkpoint)?;
            *committed = checkpoint.clone();
            progress.target_commits.fetch_add(1, Ordering::Relaxed);
            progress.rows_applied.fetch_add(*rows, Ordering::Relaxed);
            progress.source_txns_applied.fetch_add(b.source_txns, Ordering::Relaxed);
            progress
                .last_source_commit_unix
                .store(u64::from(checkpoint.source_commit_unix), Ordering::Relaxed);
            *progress.applied_position.lock().expect("progress lock") = checkpoint.position.clone();
            *rows = 0;
        }
        Ok(())
    };

    loop {
        // Wait for the next message, but not past the batch's deadline.
        let msg = match &batch {
            Some(b) if !b.mid_transaction => {
                match rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        // The source is idle: commit now rather than add lag.
                        flush(target, &mut batch, &checkpoint, &mut committed, &mut batch_rows_total)?;
                        rx.blocking_recv()
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            }
            _ => rx.blocking_recv(),
        };
        let Some(msg) = msg else {
            match &batch {
                Some(b) if b.mid_transaction => {
                    target.rollback()?;
                }
                Some(_) => flush(target, &mut batch, &checkpoint, &mut committed, &mut batch_rows_total)?,
                None => {}
            }
            return Ok(());
        };
        match msg {
            // A table first seen inside a source transaction is created inside the open
            // target transaction, so it commits (or rolls back) with the rows.
            ApplyMsg::PrepareTable(table) => target.prepare(&[table])?,
            ApplyMsg::Rows(ops) => {
                let b = match &mut batch {
                    Some(b) => b,
                    None => {
                        target.begin()?;
                        batch.insert(Batch {
                            started: Instant::now(),
                            rows: 0,
                            source_txns: 0,
                            mid_transaction: false,
                        })
                    }
                };
                b.mid_transaction = true;
                let before = b.rows;
                b.rows += ops.len();
                if before / LARGE_BATCH_LOG_EVERY != b.rows / LARGE_BATCH_LOG_EVERY {
                    tracing::debug!(rows = b.rows, "large target transaction in progress");
                }
                batch_rows_total += ops.len() as u64;
                for op in &ops {
                    target.apply(op)?;
                }
            }
            ApplyMsg::Commit { gtid, commit_unix } => {
                let b = match &mut batch {
                    Some(b) => b,
                    None => {
                        target.begin()?;
                        batch.insert(Batch {
                            started: Instant::now(),
                            rows: 0,
                            source_txns: 0,
                            mid_transaction: false,
                        })
                    }
                };
                b.mid_transaction = false;
                b.source_txns += 1;
                checkpoint.position.advance(gtid);
                checkpoint.source_commit_unix = commit_unix;
                if b.rows >= policy.max_rows || b.started.elapsed() >= policy.max_delay {
                    flush(target, &mut batch, &checkpoint, &mut committed, &mut batch_rows_total)?;
                }
            }
            ApplyMsg::Abort(reply) => {
                if batch.take().is_some() {
                    target.rollback()?;
                }
                batch_rows_total = 0;
                checkpoint = committed.clone();
                let _ = reply.send(committed.clone());
            }
        }
    }
}
