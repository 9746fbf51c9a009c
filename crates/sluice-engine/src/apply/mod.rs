//! The applier: turns the stream of source transactions into target transactions, on one or
//! more writers.
//!
//! ```text
//! source reader ──ApplyMsg──► coordinator ──Work──► writer 0 ─► target connection 0
//!                             (write sets,  ──Work──► writer 1 ─► target connection 1
//!                              dependencies)   …
//! ```
//!
//! * The **coordinator** gives each source transaction an index in binlog order and a
//!   dependency ([`crate::apply::schedule`]): the latest earlier transaction touching one of the same
//!   target rows. It hands transactions to writers round-robin.
//! * A **writer** starts a transaction only once every transaction up to its dependency has
//!   committed (the low-water mark). It groups consecutive transactions into one target
//!   transaction within `batch_max_rows` / `batch_max_delay`, and commits early when it has
//!   had nothing queued for a moment (`GROUP_LINGER`, 2 ms: waiting longer would only add
//!   lag) or must wait for a dependency (holding an open group while waiting could deadlock
//!   with the writer it waits for).
//! * **Commit order** (`[apply] commit_order`). In `"source"` order (the default) target
//!   commits become visible in source order: the coordinator sends runs of consecutive
//!   transactions (up to `batch_max_rows` rows) to one writer, a group holds transactions
//!   contiguous in source order, and a writer commits it only once every transaction before
//!   it has committed. It waits holding its open target transaction, but only for earlier
//!   transactions, which never wait for it: the earliest uncommitted transaction can always
//!   proceed, so there is no cycle. On SQLite (one write lock for all) a writer opens a group
//!   only in its turn. In `"key"` order transactions go round-robin and commit as soon as
//!   their group is done: only transactions touching the same rows keep source order.
//! * **Large transactions** (more rows than one message) cannot be buffered to compute their
//!   write set; they are barriers streamed into one writer's open transaction, so memory stays
//!   bounded whatever the transaction size.
//! * Every target commit writes the writer's checkpoint record in the same transaction: the
//!   low-water mark known at that moment and the GTIDs this writer committed beyond it, so a
//!   restart knows exactly what was applied, gaps included.
//! * **Backfill chunks** go to writers of their own (`[backfill] writers`, each with its own
//!   target connection), one chunk per target transaction with its copy progress. They are
//!   ordered against the stream by key only ([`crate::apply::schedule`]): a chunk never holds back
//!   the stream's low-water mark, and a stream transaction waits for a chunk only when it
//!   touches one of the chunk's rows.

pub mod schedule;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sluice_binlog::{SourceGtid, SourcePosition};
use tokio::sync::{mpsc, oneshot};

pub use crate::config::CommitOrder;

use crate::apply::schedule::{ChunkId, DependencyTracker, Scheduled, ScheduledChunk, TxnIndex, WriteSet};
use crate::target::{BackfillProgress, Checkpoint, Readiness, ReadinessState, RowOp, Target, TargetError, TargetTable};
use crate::verify::incremental::{
    run_verifier, CommittedGroup, IncrementalPolicy, VerifierLink, Written, VERIFIER_QUEUE,
};

/// Messages from the source reader to the applier, in binlog order.
#[derive(Debug)]
pub enum ApplyMsg {
    /// A replicated table seen for the first time: create it at the target.
    PrepareTable(Arc<TargetTable>),
    /// A source DDL transaction (no rows) with an effect on target tables: applied as a
    /// barrier, in one target transaction with the checkpoint that covers `gtid`.
    Ddl {
        gtid: SourceGtid,
        commit_unix: u32,
        changes: Vec<EdgeChange>,
    },
    /// A complete source transaction (its row changes after filtering; may be empty).
    Txn {
        gtid: SourceGtid,
        commit_unix: u32,
        ops: Vec<RowOp>,
    },
    /// The first rows of a transaction too large to buffer; `LargeRows` follow, then `LargeEnd`.
    LargeStart {
        gtid: SourceGtid,
        commit_unix: u32,
        ops: Vec<RowOp>,
    },
    LargeRows(Vec<RowOp>),
    LargeEnd,
    /// Existing rows of a table being backfilled (already filtered and projected: upserts),
    /// placed in the stream where their watermark window closed, with the copy progress to
    /// record in the same target transaction.
    Chunk {
        ops: Vec<RowOp>,
        progress: BackfillProgress,
        /// A column-only copy: the target columns to fill in existing rows.
        fill: Option<Arc<Vec<usize>>>,
        /// The copy's allowance for this chunk, given back once it committed: it bounds the
        /// chunks between the copy's reads and the backfill writers, so the coordinator never
        /// waits for a backfill writer (the stream's transactions behind a chunk would).
        in_flight: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    /// The transaction just sent carried sluice's heartbeat row written at `sent_us` (Unix
    /// microseconds, sluice's clock): sample the lag once it is committed (see [`crate::ops::lag`]).
    Heartbeat {
        sent_us: u64,
    },
    /// The source lost its connection: drop everything not committed and reply with the
    /// committed checkpoint, from which the source resumes.
    Abort(oneshot::Sender<Checkpoint>),
}

impl From<crate::backfill::Chunk> for ApplyMsg {
    /// A backfill chunk as the applier's message: target row changes (upserts), the progress
    /// to record with them, the columns a column-only copy fills, and its allowance.
    fn from(chunk: crate::backfill::Chunk) -> Self {
        let table = &chunk.plan.target;
        let ops = chunk
            .rows
            .into_iter()
            .map(|(_, row)| RowOp::Insert {
                table: table.clone(),
                row,
            })
            .collect();
        ApplyMsg::Chunk {
            ops,
            progress: chunk.progress,
            fill: chunk.fill,
            in_flight: chunk.in_flight,
        }
    }
}

/// The applier's target connections, one per thread.
pub struct Connections {
    /// The stream's writers (at least one).
    pub writers: Vec<Box<dyn Target>>,
    /// Writers of backfill chunks (none when nothing is being copied).
    pub backfill_writers: Vec<Box<dyn Target>>,
    /// The incremental verifier's connection and policy, when it is on.
    pub verifier: Option<(Box<dyn Target>, IncrementalPolicy)>,
}

#[derive(Clone, Copy, Debug)]
pub struct BatchPolicy {
    pub max_rows: usize,
    pub max_delay: Duration,
    /// Whether target commits keep the source's commit order (see [`CommitOrder`]).
    pub commit_order: CommitOrder,
}

/// Live counters, shared with progress displays and status.
#[derive(Debug, Default)]
pub struct Progress {
    pub rows_applied: AtomicU64,
    pub source_txns_applied: AtomicU64,
    pub target_commits: AtomicU64,
    /// Source commit time (Unix seconds) of the newest committed source transaction.
    pub last_source_commit_unix: AtomicU64,
    /// The low-water mark: every source transaction at or before it is committed.
    pub applied_position: Mutex<SourcePosition>,
    /// Replication lag percentiles (heartbeat or event timestamps).
    pub lag: Arc<crate::ops::lag::LagMeter>,
    /// Every table's copy of existing rows in this process.
    pub backfill: Arc<crate::backfill::CopyBoard>,
    /// Row changes the reader received per target table, and how many of them the row
    /// filter kept away from the target (for `/metrics`).
    pub stream_rows: Mutex<std::collections::BTreeMap<String, TableRowCounts>>,
    /// Source and target reachability as this process sees it (for the status page).
    pub health: crate::ops::status::Health,
}

/// One table's row changes seen by the reader (see [`Progress::stream_rows`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableRowCounts {
    pub received: u64,
    pub filtered: u64,
}

impl Progress {
    /// Adds one rows event's figures for `table` (one lock per rows event, not per row).
    pub fn count_stream_rows(&self, table: &str, received: u64, filtered: u64) {
        let mut map = self.stream_rows.lock().expect("progress lock");
        let counts = match map.get_mut(table) {
            Some(c) => c,
            None => map.entry(table.to_owned()).or_default(),
        };
        counts.received += received;
        counts.filtered += filtered;
    }
}

/// The reader sends at most this many row changes per message; a transaction with more is
/// streamed as a large transaction.
pub const ROWS_PER_MESSAGE: usize = 512;

/// A debug line is logged each time an open target transaction grows by this many rows.
const LARGE_BATCH_LOG_EVERY: usize = 50_000;

/// Work items queued per writer; bounds memory together with the reader's channel.
const WRITER_QUEUE: usize = 64;

/// How long a writer with an open group waits for more work before committing it (capped
/// by `batch_max_delay`): a pause shorter than one commit's fsync, so a writer keeps filling
/// its group while the coordinator catches up, and an idle stream still commits at once.
const GROUP_LINGER: Duration = Duration::from_millis(2);

/// The committed state shared by the coordinator and the writers.
struct Shared {
    state: Mutex<LowWater>,
    changed: Condvar,
}

impl Shared {
    /// A writer or the verifier failed: every thread gives up, and the pipeline is told.
    fn stop_all(&self, failed: &tokio::sync::Notify) {
        self.state.lock().expect("lock").stop = true;
        self.changed.notify_all();
        failed.notify_one();
    }
}

struct LowWater {
    tracker: DependencyTracker,
    /// Scheduled transactions not yet folded into `position`, by index.
    pending: BTreeMap<TxnIndex, (SourceGtid, u32)>,
    /// The low-water mark as a GTID position.
    position: SourcePosition,
    commit_unix: u32,
    /// Set when a writer failed or the applier is aborting: waiting writers give up.
    stop: bool,
    /// The coordinator is rolling back uncommitted work (the source connection was lost):
    /// a writer waiting for a dependency or for its turn to commit drops its work instead.
    aborting: bool,
    /// The highest low-water mark any writer has recorded in the target so far.
    persisted: SourcePosition,
    /// Incremental verification (`crate::verify::incremental`) is on.
    verifying: bool,
    /// Committed transactions whose rows the verifier has not checked yet.
    unverified: BTreeSet<TxnIndex>,
    /// Like `pending`, for the verified mark.
    verify_pending: BTreeMap<TxnIndex, Option<SourceGtid>>,
    /// Every transaction at or before it is committed and its rows were checked.
    verified: SourcePosition,
    /// Commit order of groups, for the verifier.
    commit_seq: u64,
    /// Heartbeats (send time, µs) by the index of the transaction that carried them, sampled
    /// when the low-water mark passes that transaction.
    heartbeats: BTreeMap<TxnIndex, u64>,
    lag: Arc<crate::ops::lag::LagMeter>,
}

impl LowWater {
    fn commit(&mut self, index: TxnIndex) {
        let lw = self.tracker.committed(index);
        while let Some((&i, _)) = self.pending.first_key_value() {
            if i > lw {
                break;
            }
            let (gtid, unix) = self.pending.remove(&i).expect("present");
            self.position.advance(gtid);
            self.commit_unix = self.commit_unix.max(unix);
            self.lag.record_event(unix);
        }
        self.advance_verified();
        self.sample_heartbeats();
    }

    /// Moves the verified mark over committed transactions whose rows were checked.
    fn advance_verified(&mut self) {
        let limit = self.tracker.low_water();
        let first_unverified = self.unverified.first().copied();
        while let Some((&i, _)) = self.verify_pending.first_key_value() {
            if i > limit || first_unverified.is_some_and(|u| i >= u) {
                break;
            }
            if let Some(gtid) = self.verify_pending.remove(&i).expect("present") {
                self.verified.advance(gtid);
            }
        }
    }

    /// Samples every heartbeat whose transaction (and everything before it) is committed.
    fn sample_heartbeats(&mut self) {
        let lw = self.tracker.low_water();
        while let Some((&i, &sent_us)) = self.heartbeats.first_key_value() {
            if i > lw {
                break;
            }
            self.heartbeats.remove(&i);
            self.lag.record_heartbeat(sent_us);
        }
    }
}

enum Work {
    Txn {
        sched: Scheduled,
        gtid: SourceGtid,
        ops: Vec<RowOp>,
    },
    LargeStart {
        sched: Scheduled,
        gtid: SourceGtid,
        ops: Vec<RowOp>,
    },
    /// Persist the low-water mark (advanced by transactions that had nothing to apply).
    Flush,
    LargeRows(Vec<RowOp>),
    LargeEnd,
    Prepare(Arc<TargetTable>, std_mpsc::Sender<Result<(), TargetError>>),
    /// A source DDL transaction's effect on target tables (scheduled as a barrier).
    Ddl {
        sched: Scheduled,
        gtid: SourceGtid,
        changes: Vec<EdgeChange>,
    },
    /// Roll back the open group, forget uncommitted work, acknowledge.
    Abort(std_mpsc::Sender<()>),
}

/// What a source DDL statement does to a target table (see docs/schema-changes.md).
#[derive(Clone, Debug)]
pub enum EdgeChange {
    /// `TRUNCATE` of a replicated table: every row of the target table is deleted.
    Truncate(Arc<TargetTable>),
    /// `DROP TABLE` of a replicated table: the target table is emptied and marked stale, so
    /// that a table created again under the name is created afresh (`crate::schema_manager`).
    Drop(Arc<TargetTable>),
    /// `ADD COLUMN` of columns the rule holds back: nothing changes at the edge but the
    /// columns' readiness (`held`), recorded with the DDL's checkpoint.
    Hold {
        table: Arc<TargetTable>,
        columns: Vec<String>,
    },
}

/// A backfill chunk for a backfill writer.
struct ChunkWork {
    sched: ScheduledChunk,
    ops: Vec<RowOp>,
    progress: BackfillProgress,
    fill: Option<Arc<Vec<usize>>>,
    /// Dropped (given back to the copy) once the chunk committed.
    _in_flight: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Applies backfill chunks on a connection of its own: each chunk, once what it waits for has
/// committed, in one target transaction with its table's copy progress (no stream checkpoint:
/// a chunk is not a source transaction, and the stream's record stays with its writers).
fn run_backfill_writer(
    target: &mut dyn Target,
    rx: std_mpsc::Receiver<ChunkWork>,
    shared: &Shared,
    progress: &Progress,
) -> Result<(), TargetError> {
    let stopped = || TargetError::Stopped;
    for work in rx {
        {
            let guard = shared.state.lock().expect("lock");
            let guard = shared
                .changed
                .wait_while(guard, |lw| !lw.stop && !work.sched.ready(&lw.tracker))
                .expect("lock");
            if guard.stop {
                return Err(stopped());
            }
        }
        target.begin()?;
        match &work.fill {
            Some(columns) => {
                for op in &work.ops {
                    match op {
                        RowOp::Insert { table, row } => target.fill_columns(table, columns, row)?,
                        _ => target.apply(op)?,
                    }
                }
            }
            None => target.apply_all(&work.ops)?,
        }
        target.record_backfill(&work.progress)?;
        if work.progress.done {
            // Ready once the last chunk commits, in its transaction.
            target.readiness_copied(&work.progress.table)?;
        }
        target.commit_without_checkpoint()?;
        shared
            .state
            .lock()
            .expect("lock")
            .tracker
            .chunk_committed(work.sched.id);
        shared.changed.notify_all();
        progress.backfill.committed(&work.progress);
    }
    Ok(())
}

/// One open target transaction of a writer.
struct Group {
    started: Instant,
    rows: usize,
    /// Source transactions (and GTID-less backfill chunks) in this group.
    txns: Vec<(TxnIndex, Option<SourceGtid>)>,
    /// Inside a large transaction (its end not yet seen).
    mid_large: bool,
    /// The row changes applied, for incremental verification.
    written: Written,
}

struct Writer<'a> {
    id: u16,
    target: &'a mut dyn Target,
    shared: &'a Shared,
    policy: BatchPolicy,
    progress: &'a Progress,
    group: Option<Group>,
    /// The open large transaction: index, GTID.
    large: Option<(TxnIndex, SourceGtid)>,
    /// GTIDs this writer committed that the low-water mark may not cover yet.
    committed_above: Vec<SourceGtid>,
    /// The incremental verifier, when on: shared counters, and its queue.
    verifier: Option<(&'a VerifierLink, std_mpsc::SyncSender<CommittedGroup>)>,
    /// The coordinator is aborting: the work queued before its `Abort` is dropped unapplied.
    discarding: bool,
}

impl Writer<'_> {
    fn run(&mut self, rx: std_mpsc::Receiver<Work>) -> Result<(), TargetError> {
        loop {
            let work = match rx.try_recv() {
                Ok(w) => w,
                Err(std_mpsc::TryRecvError::Empty) => {
                    // Nothing queued: wait a moment for the next transaction (catching up,
                    // the coordinator is rarely more than that behind), then commit rather
                    // than add lag. Without the pause, writers faster than the coordinator
                    // would commit (and fsync) after nearly every transaction.
                    if self.group.as_ref().is_some_and(|g| !g.mid_large) {
                        let linger = GROUP_LINGER.min(self.policy.max_delay);
                        match rx.recv_timeout(linger) {
                            Ok(w) => {
                                self.handle(w)?;
                                continue;
                            }
                            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                            Err(std_mpsc::RecvTimeoutError::Disconnected) => return self.finish(),
                        }
                        self.commit_group()?;
                        // Writers committing at the same moment each record the mark without
                        // the other's transactions; while idle, record the full mark once.
                        if self.mark_unrecorded() {
                            self.flush()?;
                        }
                    }
                    match rx.recv() {
                        Ok(w) => w,
                        Err(_) => return self.finish(),
                    }
                }
                Err(std_mpsc::TryRecvError::Disconnected) => return self.finish(),
            };
            self.handle(work)?;
        }
    }

    /// Does one piece of work.
    fn handle(&mut self, work: Work) -> Result<(), TargetError> {
        if self.discarding && !matches!(work, Work::Abort(_) | Work::Prepare(..)) {
            // Queued before the coordinator's `Abort`: rolled back with everything uncommitted.
            return Ok(());
        }
        {
            match work {
                Work::Txn { sched, gtid, ops } => {
                    if !self.start_txn(sched)? {
                        return Ok(());
                    }
                    tracing::trace!(writer = self.id, %gtid, rows = ops.len(), "applying a source transaction");
                    self.apply_ops(ops)
                        .map_err(|e| e.in_source_transactions(&gtid.to_string()))?;
                    self.end_txn(sched.index, Some(gtid))?;
                }
                Work::Ddl { sched, gtid, changes } => {
                    if !self.start_txn(sched)? {
                        return Ok(());
                    }
                    for change in &changes {
                        if let EdgeChange::Truncate(table) | EdgeChange::Drop(table) = change {
                            if self.verifier.is_some() {
                                self.group.as_mut().expect("open").written.emptied(&table.name);
                            }
                        }
                        match change {
                            EdgeChange::Truncate(table) => self.target.empty_table(table)?,
                            EdgeChange::Drop(table) => {
                                self.target.empty_table(table)?;
                                self.target.record_backfill(&BackfillProgress {
                                    table: table.name.clone(),
                                    stale: true,
                                    ..Default::default()
                                })?;
                                self.target.record_readiness(
                                    &table.name,
                                    &[Readiness::table(ReadinessState::Stale)],
                                    false,
                                )?;
                            }
                            EdgeChange::Hold { table, columns } => {
                                let rows: Vec<Readiness> = columns
                                    .iter()
                                    .map(|c| Readiness::column(c, ReadinessState::Held))
                                    .collect();
                                self.target.record_readiness(&table.name, &rows, false)?;
                            }
                        }
                    }
                    self.end_txn(sched.index, Some(gtid))?;
                }
                Work::LargeStart { sched, gtid, ops } => {
                    if !self.start_txn(sched)? {
                        return Ok(());
                    }
                    self.group.as_mut().expect("open").mid_large = true;
                    self.large = Some((sched.index, gtid));
                    self.apply_ops(ops)
                        .map_err(|e| e.in_source_transactions(&gtid.to_string()))?;
                }
                Work::LargeRows(ops) => {
                    let gtid = self.large.map(|(_, g)| g.to_string()).unwrap_or_default();
                    self.apply_ops(ops).map_err(|e| e.in_source_transactions(&gtid))?
                }
                Work::LargeEnd => {
                    let (index, gtid) = self.large.take().expect("large transaction open");
                    self.group.as_mut().expect("open").mid_large = false;
                    self.end_txn(index, Some(gtid))?;
                }
                Work::Flush => self.flush()?,
                Work::Prepare(table, ack) => {
                    // A table back in the config after an earlier stay left it stale is
                    // created afresh (inside a large transaction that cannot be done: refused).
                    let admitted = crate::schema_manager::admit_table(&mut *self.target, &table);
                    let _ = ack.send(admitted.and_then(|()| self.target.prepare(&[table])));
                }
                Work::Abort(ack) => {
                    if self.group.take().is_some() {
                        self.target.rollback()?;
                    }
                    self.large = None;
                    self.discarding = false;
                    let _ = ack.send(());
                }
            }
        }
        Ok(())
    }

    /// Commits the open group (or an empty transaction), recording the current mark.
    fn flush(&mut self) -> Result<(), TargetError> {
        if self.group.as_ref().is_some_and(|g| g.mid_large) {
            return Ok(());
        }
        if self.group.is_none() {
            self.target.begin()?;
            self.group = Some(Group {
                started: Instant::now(),
                rows: 0,
                txns: Vec::new(),
                mid_large: false,
                written: Written::default(),
            });
        }
        self.commit_group()
    }

    /// Whether the low-water mark is ahead of every mark recorded in the target.
    fn mark_unrecorded(&self) -> bool {
        let lw = self.shared.state.lock().expect("lock");
        !lw.persisted.covers(&lw.position)
    }

    /// On shutdown: commit complete transactions, roll back an incomplete large one. Then,
    /// like an idle writer, record the full mark when writers that committed at the same
    /// moment each left it short (the last writer to commit sees it): otherwise transactions
    /// with nothing to apply at the end of the stream would stay unrecorded until a restart.
    fn finish(&mut self) -> Result<(), TargetError> {
        match &self.group {
            Some(g) if g.mid_large => {
                self.group = None;
                return self.target.rollback();
            }
            Some(_) => self.commit_group()?,
            None => {}
        }
        let stopped = self.shared.state.lock().expect("lock").stop;
        if !stopped && self.mark_unrecorded() {
            self.flush()?;
        }
        Ok(())
    }

    /// Waits until `sched` may be applied and opens a group for it if none is open. Returns
    /// false when the coordinator is aborting: the transaction is dropped unapplied (and so is
    /// everything queued before the `Abort`).
    fn start_txn(&mut self, sched: Scheduled) -> Result<bool, TargetError> {
        let stopped = || TargetError::Stopped;
        let source_order = self.policy.commit_order == CommitOrder::Source;
        let (satisfied, extends_group) = {
            let lw = self.shared.state.lock().expect("lock");
            if lw.stop {
                return Err(stopped());
            }
            match (&self.group, source_order) {
                (Some(group), true) => {
                    // In source order a group holds transactions contiguous in source order
                    // (gaps only where the transactions between are committed already): it
                    // commits once every transaction before its first one has, and those never
                    // wait for it. A dependency inside the open group is met by applying after
                    // it on the same connection.
                    let first = group.txns.first().map_or(0, |(i, _)| *i);
                    let last = group.txns.last().map_or(0, |(i, _)| *i);
                    let contiguous = last == 0 || (last + 1..sched.index).all(|i| lw.tracker.is_committed(i));
                    let satisfied = sched.ready_after_group(&lw.tracker, first, last);
                    (satisfied, contiguous)
                }
                _ => (sched.ready(&lw.tracker), true),
            }
        };
        if !extends_group && self.group.is_some() {
            self.commit_group()?;
            if self.discarding {
                return Ok(false);
            }
        }
        if !satisfied || (source_order && !extends_group) {
            // Never wait for a dependency while holding an open group: the transaction we
            // wait for may need this group's commit to advance the low-water mark.
            if self.group.is_some() && !sched.ready(&self.shared.state.lock().expect("lock").tracker) {
                self.commit_group()?;
                if self.discarding {
                    return Ok(false);
                }
            }
            let guard = self.shared.state.lock().expect("lock");
            let guard = self
                .shared
                .changed
                .wait_while(guard, |lw| !lw.stop && !lw.aborting && !sched.ready(&lw.tracker))
                .expect("lock");
            if guard.stop {
                return Err(stopped());
            }
            if guard.aborting && !sched.ready(&guard.tracker) {
                drop(guard);
                self.discard()?;
                return Ok(false);
            }
        }
        if self.group.is_none() {
            // One write lock for all writers: take it only in this transaction's turn.
            if source_order && self.target.single_writer() && !self.wait_for_turn(sched.index)? {
                return Ok(false);
            }
            self.target.begin()?;
            self.group = Some(Group {
                started: Instant::now(),
                rows: 0,
                txns: Vec::new(),
                mid_large: false,
                written: Written::default(),
            });
        }
        Ok(true)
    }

    /// The coordinator is aborting: roll back the open group and drop the work queued before
    /// its `Abort` (none of it is committed, so the source sends it again).
    fn discard(&mut self) -> Result<(), TargetError> {
        self.discarding = true;
        self.large = None;
        if self.group.take().is_some() {
            self.target.rollback()?;
        }
        Ok(())
    }

    fn apply_ops(&mut self, ops: Vec<RowOp>) -> Result<(), TargetError> {
        let group = self.group.as_mut().expect("open group");
        let before = group.rows;
        group.rows += ops.len();
        if before / LARGE_BATCH_LOG_EVERY != group.rows / LARGE_BATCH_LOG_EVERY {
            tracing::debug!(
                writer = self.id,
                rows = group.rows,
                "large target transaction in progress"
            );
        }
        self.target.apply_all(&ops)?;
        if let Some((link, _)) = &self.verifier {
            // The verifier works out what the rows must be from the changes themselves, on its
            // own thread; the writer only keeps them (up to the memory bound).
            group.written.keep(ops, link.policy.max_rows_per_group);
        }
        Ok(())
    }

    fn end_txn(&mut self, index: TxnIndex, gtid: Option<SourceGtid>) -> Result<(), TargetError> {
        let group = self.group.as_mut().expect("open group");
        group.txns.push((index, gtid));
        if group.rows >= self.policy.max_rows || group.started.elapsed() >= self.policy.max_delay {
            self.commit_group()?;
        }
        Ok(())
    }

    /// In source commit order, waits until every transaction before the open group's last one
    /// is committed or in the group, so that its commit makes visible a state the source had.
    /// The group holds transactions contiguous in source order (see `start_txn`): it waits
    /// only for transactions before its first one, which are in other writers' groups or
    /// queues and never wait for this one. Returns false when the coordinator is aborting
    /// instead: the group is rolled back.
    fn await_turn(&mut self) -> Result<bool, TargetError> {
        let Some(group) = &self.group else { return Ok(true) };
        let Some(&(first, _)) = group.txns.first() else {
            return Ok(true);
        };
        // The group is contiguous (transactions between its members are committed): its turn
        // comes when every transaction before its first one is committed.
        self.wait_for_turn(first)
    }

    /// Waits until every source transaction before `index` has committed. False when the
    /// coordinator is aborting instead (the open group and the queued work are discarded).
    fn wait_for_turn(&mut self, index: TxnIndex) -> Result<bool, TargetError> {
        let turn = |lw: &LowWater| lw.tracker.low_water() + 1 >= index;
        let guard = self.shared.state.lock().expect("lock");
        let guard = self
            .shared
            .changed
            .wait_while(guard, |lw| !lw.stop && !lw.aborting && !turn(lw))
            .expect("lock");
        if guard.stop {
            return Err(TargetError::Stopped);
        }
        if !turn(&guard) {
            drop(guard);
            self.discard()?;
            return Ok(false);
        }
        Ok(true)
    }

    fn commit_group(&mut self) -> Result<(), TargetError> {
        if self.policy.commit_order == CommitOrder::Source && !self.await_turn()? {
            return Ok(());
        }
        let Some(group) = self.group.take() else { return Ok(()) };
        // Record the low-water mark as it will be once this group commits, and the GTIDs
        // beyond it: with one writer that is simply "everything up to the last transaction".
        let (position, commit_unix) = {
            let lw = self.shared.state.lock().expect("lock");
            let indexes: Vec<TxnIndex> = group.txns.iter().map(|(i, _)| *i).collect();
            let mark = lw.tracker.low_water_if_committed(&indexes);
            let mut position = lw.position.clone();
            let mut commit_unix = lw.commit_unix;
            for (gtid, unix) in lw.pending.range(..=mark).map(|(_, p)| p) {
                position.advance(*gtid);
                commit_unix = commit_unix.max(*unix);
            }
            (position, commit_unix)
        };
        self.committed_above.retain(|g| !position.contains(*g));
        let mut applied = self.committed_above.clone();
        applied.extend(
            group
                .txns
                .iter()
                .filter_map(|(_, g)| *g)
                .filter(|g| !position.contains(*g)),
        );
        let checkpoint = Checkpoint {
            position: position.clone(),
            applied,
            source_commit_unix: commit_unix,
            writer: self.id,
        };
        // Writer 0 alone records the lag percentiles (one row, so writers never contend on it).
        if self.id == 0 {
            if let Some(report) = self.progress.lag.due_report(crate::ops::lag::PERSIST_EVERY) {
                self.target.record_lag(&report)?;
            }
        }
        if let Some((link, _)) = &self.verifier {
            link.started[usize::from(self.id)].fetch_add(1, Ordering::SeqCst);
        }
        tracing::trace!(writer = self.id, txns = group.txns.len(), rows = group.rows, position = %position, "committing a target transaction");
        self.target.commit(&checkpoint).map_err(|e| {
            // Server targets send buffered rows at commit: a refusal then is of one of these.
            let mut gtids = group.txns.iter().filter_map(|(_, g)| *g);
            match (gtids.next(), gtids.next_back()) {
                (Some(first), Some(last)) => e.in_source_transactions(&format!("{first} … {last}")),
                (Some(only), None) => e.in_source_transactions(&only.to_string()),
                _ => e,
            }
        })?;
        self.committed_above.extend(group.txns.iter().filter_map(|(_, g)| *g));
        let mut lw = self.shared.state.lock().expect("lock");
        let seq = lw.commit_seq;
        lw.commit_seq += 1;
        if lw.verifying {
            // Before `commit` below moves the verified mark: these are not checked yet.
            lw.unverified.extend(group.txns.iter().map(|(i, _)| *i));
        }
        for (index, _) in &group.txns {
            lw.commit(*index);
        }
        lw.persisted = lw.persisted.union(&position);
        self.progress.target_commits.fetch_add(1, Ordering::Relaxed);
        self.progress
            .rows_applied
            .fetch_add(group.rows as u64, Ordering::Relaxed);
        self.progress.source_txns_applied.fetch_add(
            group.txns.iter().filter(|(_, g)| g.is_some()).count() as u64,
            Ordering::Relaxed,
        );
        self.progress
            .last_source_commit_unix
            .store(u64::from(lw.commit_unix), Ordering::Relaxed);
        *self.progress.applied_position.lock().expect("progress lock") = lw.position.clone();
        drop(lw);
        self.shared.changed.notify_all();
        if let Some((link, queue)) = &self.verifier {
            let handed = queue.send(CommittedGroup {
                seq,
                txns: group.txns,
                written: group.written,
            });
            link.handed_over[usize::from(self.id)].fetch_add(1, Ordering::SeqCst);
            if handed.is_err() {
                return Err(TargetError::Other("incremental verification stopped".into()));
            }
        }
        Ok(())
    }
}

/// Runs the applier until the reader's channel closes (then complete transactions are
/// committed and an incomplete large one rolled back) or a writer fails. `targets` holds one
/// connection per writer.
///
/// `failed` is notified when a writer fails, so that the caller can stop the reader even while
/// the coordinator is waiting for the next message.
pub fn run_applier(
    connections: Connections,
    mut rx: mpsc::Receiver<ApplyMsg>,
    policy: BatchPolicy,
    start: Checkpoint,
    progress: &Progress,
    failed: &tokio::sync::Notify,
) -> Result<(), TargetError> {
    let Connections {
        writers: targets,
        backfill_writers: backfill_targets,
        verifier,
    } = connections;
    let shared = Shared {
        state: Mutex::new(LowWater {
            tracker: DependencyTracker::new(),
            pending: BTreeMap::new(),
            position: start.position.clone(),
            commit_unix: start.source_commit_unix,
            stop: false,
            aborting: false,
            persisted: start.position.clone(),
            verifying: verifier.is_some(),
            unverified: BTreeSet::new(),
            verify_pending: BTreeMap::new(),
            verified: start.position.clone(),
            commit_seq: 0,
            heartbeats: BTreeMap::new(),
            lag: progress.lag.clone(),
        }),
        changed: Condvar::new(),
    };
    *progress.applied_position.lock().expect("progress lock") = start.position.clone();
    let n = targets.len();
    assert!(n > 0, "at least one writer");
    let link = verifier.as_ref().map(|(_, policy)| VerifierLink {
        started: (0..n).map(|_| AtomicU64::new(0)).collect(),
        handed_over: (0..n).map(|_| AtomicU64::new(0)).collect(),
        policy: *policy,
    });
    let link = link.as_ref();
    std::thread::scope(|scope| {
        let mut queues = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        let mut verify_queue = None;
        let mut verifier_handle = None;
        if let (Some((mut target, _)), Some(link)) = (verifier, link) {
            let (tx, rx) = std_mpsc::sync_channel::<CommittedGroup>(VERIFIER_QUEUE);
            verify_queue = Some(tx);
            let shared = &shared;
            verifier_handle = Some(scope.spawn(move || {
                let mark_verified = |indexes: &[TxnIndex]| {
                    let mut lw = shared.state.lock().expect("lock");
                    for i in indexes {
                        lw.unverified.remove(i);
                    }
                    lw.advance_verified();
                    let verified = lw.verified.clone();
                    drop(lw);
                    shared.changed.notify_all();
                    verified
                };
                let stopped = || shared.state.lock().expect("lock").stop;
                let result = run_verifier(target.as_mut(), rx, link, &mark_verified, &stopped);
                if result.is_err() {
                    shared.stop_all(failed);
                }
                result
            }));
        }
        for (id, mut target) in targets.into_iter().enumerate() {
            let (tx, rx) = std_mpsc::sync_channel::<Work>(WRITER_QUEUE);
            queues.push(tx);
            let shared = &shared;
            let applied_before = start.applied.clone();
            let queue = verify_queue.clone();
            handles.push(scope.spawn(move || {
                let mut writer = Writer {
                    id: id as u16,
                    target: target.as_mut(),
                    shared,
                    policy,
                    progress,
                    group: None,
                    large: None,
                    // GTIDs applied beyond the mark before this run stay recorded (by writer 0)
                    // until the mark passes them.
                    committed_above: if id == 0 { applied_before } else { Vec::new() },
                    verifier: link.zip(queue),
                    discarding: false,
                };
                let result = writer.run(rx);
                if result.is_err() {
                    let _ = writer.target.rollback();
                    shared.stop_all(failed);
                }
                result
            }));
        }
        let mut backfill_queues = Vec::with_capacity(backfill_targets.len());
        for mut target in backfill_targets {
            target.set_background();
            // Unbounded: the copies' allowance of chunks in flight bounds it (see `ApplyMsg::Chunk`).
            let (tx, rx) = std_mpsc::channel::<ChunkWork>();
            backfill_queues.push(tx);
            let shared = &shared;
            handles.push(scope.spawn(move || {
                let result = run_backfill_writer(target.as_mut(), rx, shared, progress);
                if result.is_err() {
                    let _ = target.rollback();
                    shared.stop_all(failed);
                }
                result
            }));
        }
        let coordinator = Coordinator {
            queues,
            backfill_queues,
            next_backfill_writer: 0,
            last_chunk: Default::default(),
            shared: &shared,
            next_writer: 0,
            run_rows: 0,
            large_writer: None,
            last_flush: Instant::now(),
            unflushed: false,
            policy,
        };
        let coordinated = coordinator.run(&mut rx, &start);
        if coordinated.is_err() {
            // Writers waiting for a dependency that will never commit must give up too.
            shared.state.lock().expect("lock").stop = true;
            shared.changed.notify_all();
        }
        // Dropping the queues (inside `run`) lets the writers drain and stop; once they have,
        // the verifier's queue closes too.
        drop(verify_queue);
        // `Stopped` only echoes another thread's failure: the cause is reported (its
        // kind decides whether sluice runs again, e.g. after a target restart), whichever
        // thread noticed first.
        let is_echo = |e: &TargetError| matches!(e, TargetError::Stopped);
        let mut first_error = coordinated.err();
        for h in handles.into_iter().chain(verifier_handle) {
            if let Err(e) = h
                .join()
                .unwrap_or_else(|_| Err(TargetError::Other("a writer thread panicked".into())))
            {
                if first_error.as_ref().is_none_or(|first| is_echo(first) && !is_echo(&e)) {
                    first_error = Some(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })
}

struct Coordinator<'a> {
    queues: Vec<std_mpsc::SyncSender<Work>>,
    /// The backfill writers' queues (empty when nothing is being copied).
    backfill_queues: Vec<std_mpsc::Sender<ChunkWork>>,
    next_backfill_writer: usize,
    /// Each table's last scheduled chunk.
    last_chunk: std::collections::HashMap<String, ChunkId>,
    shared: &'a Shared,
    next_writer: usize,
    /// In source commit order: row changes sent to `next_writer` in its current run.
    run_rows: usize,
    large_writer: Option<usize>,
    last_flush: Instant,
    /// The low-water mark moved over transactions no writer committed.
    unflushed: bool,
    policy: BatchPolicy,
}

impl Coordinator<'_> {
    fn send(&self, writer: usize, work: Work) -> Result<(), TargetError> {
        self.queues[writer].send(work).map_err(|_| TargetError::Stopped)
    }

    fn stopped(&self) -> bool {
        self.shared.state.lock().expect("lock").stop
    }

    fn run(mut self, rx: &mut mpsc::Receiver<ApplyMsg>, start: &Checkpoint) -> Result<(), TargetError> {
        let mut applied_above = start.applied.clone();
        loop {
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(mpsc::error::TryRecvError::Empty) => {
                    self.flush_if_needed(true)?;
                    match rx.blocking_recv() {
                        Some(m) => m,
                        None => return self.final_flush(),
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return self.final_flush(),
            };
            if self.stopped() {
                return Err(TargetError::Stopped);
            }
            match msg {
                ApplyMsg::PrepareTable(table) => self.prepare(table)?,
                ApplyMsg::Txn { gtid, commit_unix, ops } => {
                    let ws = if ops.is_empty() {
                        WriteSet::default()
                    } else {
                        WriteSet::of_ops(&ops)
                    };
                    let sched = self.schedule(&ws, gtid, commit_unix);
                    if ops.is_empty() {
                        // Nothing to apply: committed as soon as it is scheduled.
                        self.shared.state.lock().expect("lock").commit(sched.index);
                        self.shared.changed.notify_all();
                        self.unflushed = true;
                        self.flush_if_needed(false)?;
                    } else {
                        let w = self.pick_writer(ops.len());
                        self.send(w, Work::Txn { sched, gtid, ops })?;
                    }
                }
                ApplyMsg::Ddl {
                    gtid,
                    commit_unix,
                    changes,
                } => {
                    // A barrier: after every earlier transaction and chunk, before every later one.
                    let sched = self.schedule(&WriteSet::barrier(), gtid, commit_unix);
                    let w = self.pick_writer(1);
                    self.send(w, Work::Ddl { sched, gtid, changes })?;
                }
                ApplyMsg::LargeStart { gtid, commit_unix, ops } => {
                    let sched = self.schedule(&WriteSet::barrier(), gtid, commit_unix);
                    let w = self.pick_writer(self.policy.max_rows);
                    self.large_writer = Some(w);
                    self.send(w, Work::LargeStart { sched, gtid, ops })?;
                }
                ApplyMsg::Chunk {
                    ops,
                    progress,
                    fill,
                    in_flight,
                } => self.schedule_chunk(ops, progress, fill, in_flight)?,
                ApplyMsg::LargeRows(ops) => {
                    let w = self.large_writer.expect("large transaction started");
                    self.send(w, Work::LargeRows(ops))?;
                }
                ApplyMsg::LargeEnd => {
                    let w = self.large_writer.take().expect("large transaction started");
                    self.send(w, Work::LargeEnd)?;
                }
                ApplyMsg::Heartbeat { sent_us } => {
                    let mut lw = self.shared.state.lock().expect("lock");
                    let index = lw.tracker.scheduled();
                    lw.heartbeats.insert(index, sent_us);
                    // Its transaction may have committed already (an empty one commits when
                    // scheduled).
                    lw.sample_heartbeats();
                }
                ApplyMsg::Abort(reply) => {
                    let checkpoint = self.abort(&mut applied_above)?;
                    let _ = reply.send(checkpoint);
                }
            }
        }
    }

    fn schedule(&mut self, ws: &WriteSet, gtid: SourceGtid, commit_unix: u32) -> Scheduled {
        let mut lw = self.shared.state.lock().expect("lock");
        let sched = lw.tracker.schedule(ws);
        lw.pending.insert(sched.index, (gtid, commit_unix));
        if lw.verifying {
            lw.verify_pending.insert(sched.index, Some(gtid));
        }
        sched
    }

    /// Hands a backfill chunk to the next backfill writer, ordered against the stream by its
    /// keys and after its table's previous chunk.
    fn schedule_chunk(
        &mut self,
        ops: Vec<RowOp>,
        progress: BackfillProgress,
        fill: Option<Arc<Vec<usize>>>,
        in_flight: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<(), TargetError> {
        if self.backfill_queues.is_empty() {
            return Err(TargetError::Other(format!(
                "internal error: a backfill chunk of {} arrived but no backfill writer runs",
                progress.table
            )));
        }
        let keys = WriteSet::of_ops(&ops).keys;
        let previous = self.last_chunk.get(&progress.table).copied().unwrap_or(0);
        let sched = self
            .shared
            .state
            .lock()
            .expect("lock")
            .tracker
            .schedule_chunk(&keys, previous);
        self.last_chunk.insert(progress.table.clone(), sched.id);
        let w = self.next_backfill_writer;
        self.next_backfill_writer = (w + 1) % self.backfill_queues.len();
        self.backfill_queues[w]
            .send(ChunkWork {
                sched,
                ops,
                progress,
                fill,
                _in_flight: in_flight,
            })
            .map_err(|_| TargetError::Stopped)
    }

    /// The writer for the next transaction, of `rows` row changes. By key, round-robin. In
    /// source order, runs of consecutive transactions (up to `batch_max_rows` row changes) go
    /// to one writer, so that its group is contiguous in source order and commits whole,
    /// while the next run is applied on the next writer.
    fn pick_writer(&mut self, rows: usize) -> usize {
        if self.policy.commit_order == CommitOrder::Key {
            let w = self.next_writer;
            self.next_writer = (self.next_writer + 1) % self.queues.len();
            return w;
        }
        if self.run_rows > 0 && self.run_rows + rows > self.policy.max_rows {
            self.next_writer = (self.next_writer + 1) % self.queues.len();
            self.run_rows = 0;
        }
        self.run_rows += rows.max(1);
        self.next_writer
    }

    /// Persists a low-water mark that moved without any writer committing.
    fn flush_if_needed(&mut self, idle: bool) -> Result<(), TargetError> {
        // When idle, also record a mark that writers committing concurrently each left short
        // (each recorded the mark without the other's transactions): the merged checkpoint is
        // exact either way, but a clean mark keeps it compact and readable.
        let behind = idle && {
            let lw = self.shared.state.lock().expect("lock");
            !lw.persisted.covers(&lw.position)
        };
        if (self.unflushed || behind)
            && (idle || self.last_flush.elapsed() >= self.policy.max_delay.max(Duration::from_millis(100)))
        {
            self.unflushed = false;
            self.last_flush = Instant::now();
            if self.large_writer.is_none() {
                // Best effort: a full queue means a commit (which persists the mark) is coming.
                let _ = self.queues[0].try_send(Work::Flush);
            }
        }
        Ok(())
    }

    /// At shutdown, persists a mark that moved over transactions with nothing to apply.
    fn final_flush(&mut self) -> Result<(), TargetError> {
        if self.unflushed && self.large_writer.is_none() && !self.stopped() {
            self.send(0, Work::Flush)?;
        }
        Ok(())
    }

    /// Waits until every scheduled transaction has committed.
    fn quiesce(&self) -> Result<(), TargetError> {
        let guard = self.shared.state.lock().expect("lock");
        let guard = self
            .shared
            .changed
            .wait_while(guard, |lw| {
                !lw.stop && (lw.tracker.low_water() < lw.tracker.scheduled() || !lw.tracker.chunks_idle())
            })
            .expect("lock");
        if guard.stop {
            return Err(TargetError::Stopped);
        }
        Ok(())
    }

    /// Creates a table. Inside a large transaction it goes into that transaction (which is
    /// the only one running); otherwise all writers first commit what they have, so that every
    /// connection sees the committed table.
    fn prepare(&mut self, table: Arc<TargetTable>) -> Result<(), TargetError> {
        let writers: Vec<usize> = match self.large_writer {
            Some(w) => vec![w],
            None => {
                self.quiesce()?;
                (0..self.queues.len()).collect()
            }
        };
        for w in writers {
            let (ack, done) = std_mpsc::channel();
            self.send(w, Work::Prepare(table.clone(), ack))?;
            done.recv().map_err(|_| TargetError::Stopped)??;
        }
        Ok(())
    }

    /// Rolls back all uncommitted work and returns what is committed.
    fn abort(&mut self, applied_above: &mut Vec<SourceGtid>) -> Result<Checkpoint, TargetError> {
        if !self.shared.state.lock().expect("lock").tracker.chunks_idle() {
            // A chunk waits for stream transactions about to be rolled back; its progress is
            // in the target, so a restart resumes the copy exactly.
            return Err(TargetError::Other(
                "the source connection was lost while backfill chunks were being applied; \
                 restart sluice: the copy resumes from its last committed chunk"
                    .into(),
            ));
        }
        // Writers waiting for a transaction that is about to be rolled back (their dependency,
        // or in source order their turn to commit) drop their work instead of waiting forever.
        self.shared.state.lock().expect("lock").aborting = true;
        self.shared.changed.notify_all();
        let aborted = (0..self.queues.len()).try_for_each(|w| {
            let (ack, done) = std_mpsc::channel();
            self.send(w, Work::Abort(ack))?;
            done.recv().map_err(|_| TargetError::Stopped)
        });
        self.shared.state.lock().expect("lock").aborting = false;
        aborted?;
        self.large_writer = None;
        self.run_rows = 0;
        let lw = self.shared.state.lock().expect("lock");
        // The verifier checks what was committed before the indexes start over.
        let mut lw = self
            .shared
            .changed
            .wait_while(lw, |lw| !lw.stop && !lw.unverified.is_empty())
            .expect("lock");
        if lw.verifying {
            let position = lw.position.clone();
            lw.verified = position;
            lw.verify_pending.clear();
        }
        // Committed transactions above the mark stay applied; everything else is void.
        let committed_above: Vec<SourceGtid> = lw
            .pending
            .iter()
            .filter(|(i, _)| lw.tracker.is_committed(**i))
            .map(|(_, (g, _))| *g)
            .collect();
        applied_above.extend(committed_above);
        applied_above.retain(|g| !lw.position.contains(*g));
        let position = lw.position.clone();
        let commit_unix = lw.commit_unix;
        lw.pending.clear();
        lw.heartbeats.clear();
        lw.tracker = DependencyTracker::new();
        self.last_chunk.clear();
        Ok(Checkpoint {
            position,
            applied: applied_above.clone(),
            source_commit_unix: commit_unix,
            writer: 0,
        })
    }
}
