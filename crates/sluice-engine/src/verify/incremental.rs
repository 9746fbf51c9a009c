//! Incremental verification: every committed target transaction's rows are read back from
//! the target, on a connection of their own, and compared with what was written.
//!
//! While a writer applies a group of source transactions it notes, per target row it touches,
//! the row's canonical digest after the group (or that the row must be absent). After the
//! group commits it hands these *expectations* to the verifier thread, which reads the rows
//! back by key in batches and compares digests. The applier keeps a second mark beside the
//! applied low-water mark: the **verified** position, which passes a transaction only once
//! its rows were checked (`_sluice_verified` in the target; `sluice status` shows it).
//!
//! A later transaction may rewrite a row between the commit and the read-back. So a row that
//! differs is only counted after the verifier has waited for every commit that had started
//! when it read the row to be handed over: if one of those (or anything later) wrote the row
//! again, the newer expectation supersedes the old one; otherwise the row is read once more
//! and a difference then is real (something outside sluice changed the row, or sluice wrote
//! it wrong).
//!
//! What happens then is `[verify] on_mismatch`: `stop` (the default: replication stops with
//! an error naming the table and the transaction), `repair` (the expected row is written
//! again) or `report` (counted in status and logged). Neither logs nor errors carry values.
//!
//! Memory is bounded: a group keeps at most `max_rows_per_group` expectations; rows beyond
//! that of a huge transaction are not read back (counted as `unchecked_txns`; `sluice verify`
//! covers them).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use sluice_binlog::{SourceGtid, SourcePosition, Value};

use crate::apply::schedule::TxnIndex;
use crate::config::MismatchPolicy;
use crate::target::{RowOp, RowSelection, Target, TargetError, TargetTable, VerifiedRecord};
use crate::verify::canonical::{self, RowDigest};

#[derive(Clone, Copy, Debug)]
pub struct IncrementalPolicy {
    pub on_mismatch: MismatchPolicy,
    pub max_rows_per_group: usize,
}

/// Keys read back per query.
const KEYS_PER_READ: usize = 500;
/// How often the verified record is written to the target (when it changed).
const RECORD_EVERY: Duration = Duration::from_millis(500);
/// Groups taken from the queue per round.
const GROUPS_PER_ROUND: usize = 64;
/// Committed groups queued for the verifier; a full queue makes writers wait (back-pressure).
pub const VERIFIER_QUEUE: usize = 32;

/// A row as it must be in the target after a committed group.
pub struct Expectation {
    table: Arc<TargetTable>,
    key: Vec<Value>,
    /// `None`: the row must be absent.
    digest: Option<RowDigest>,
    /// The row itself, kept only to repair with.
    row: Option<Vec<Value>>,
}

/// Expectations of one open group, one per target row (the last write wins).
#[derive(Default)]
pub struct Expectations {
    rows: HashMap<(String, Vec<u8>), Expectation>,
    /// Rows not noted because the group outgrew `max_rows_per_group`.
    overflow: bool,
    scratch: Vec<u8>,
}

impl Expectations {
    /// Notes what `op` leaves in the target.
    pub fn note(&mut self, op: &RowOp, policy: &IncrementalPolicy) -> Result<(), TargetError> {
        match op {
            RowOp::Insert { table, row } => self.expect(table, row, Some(row), policy),
            RowOp::Delete { table, row } => self.expect(table, row, None, policy),
            RowOp::Update { table, before, after } => {
                if table.key.iter().any(|&k| before[k] != after[k]) {
                    self.expect(table, before, None, policy)?;
                }
                self.expect(table, after, Some(after), policy)
            }
        }
    }

    fn expect(
        &mut self,
        table: &Arc<TargetTable>,
        key_row: &[Value],
        row: Option<&Vec<Value>>,
        policy: &IncrementalPolicy,
    ) -> Result<(), TargetError> {
        let key_bytes = canonical::encode_key(table, key_row).map_err(|e| TargetError::Other(e.to_string()))?;
        let id = (table.name.clone(), key_bytes);
        if !self.rows.contains_key(&id) && self.rows.len() >= policy.max_rows_per_group {
            self.overflow = true;
            return Ok(());
        }
        let digest = match row {
            Some(r) => Some(
                canonical::row_digest(table, r, &mut self.scratch).map_err(|e| TargetError::Other(e.to_string()))?,
            ),
            None => None,
        };
        self.rows.insert(
            id,
            Expectation {
                table: table.clone(),
                key: table.key.iter().map(|&k| key_row[k].clone()).collect(),
                digest,
                row: row.filter(|_| policy.on_mismatch == MismatchPolicy::Repair).cloned(),
            },
        );
        Ok(())
    }
}

/// The row changes a writer applied in its open group, kept for the verifier.
#[derive(Default)]
pub struct Written {
    batches: Vec<Vec<RowOp>>,
    rows: usize,
    /// Changes beyond the memory bound were not kept.
    overflow: bool,
    /// Target tables emptied in the group (a source TRUNCATE or DROP TABLE): changes to them
    /// kept before that are gone, and rows of theirs that earlier groups wrote are superseded.
    emptied: Vec<String>,
}

impl Written {
    /// Keeps `ops` unless the group already holds `max_rows` changes.
    pub fn keep(&mut self, ops: Vec<RowOp>, max_rows: usize) {
        if self.overflow || self.rows + ops.len() > max_rows {
            self.overflow = true;
            return;
        }
        self.rows += ops.len();
        self.batches.push(ops);
    }

    /// Notes that every row of target table `table` was deleted after the changes kept so far.
    pub fn emptied(&mut self, table: &str) {
        for batch in &mut self.batches {
            batch.retain(|op| {
                let (RowOp::Insert { table: t, .. } | RowOp::Update { table: t, .. } | RowOp::Delete { table: t, .. }) =
                    op;
                t.name != table
            });
        }
        self.emptied.push(table.to_owned());
    }
}

/// A committed group, handed from its writer to the verifier.
pub struct CommittedGroup {
    /// Commit order among groups (per key, a later write has a higher sequence).
    pub seq: u64,
    pub txns: Vec<(TxnIndex, Option<SourceGtid>)>,
    pub written: Written,
}

/// A committed group with what its rows must be, worked out on the verifier's thread.
struct CheckedGroup {
    seq: u64,
    txns: Vec<(TxnIndex, Option<SourceGtid>)>,
    expectations: Expectations,
    emptied: Vec<String>,
}

impl CheckedGroup {
    fn new(group: CommittedGroup, policy: &IncrementalPolicy) -> Result<Self, TargetError> {
        let mut expectations = Expectations {
            overflow: group.written.overflow,
            ..Expectations::default()
        };
        for op in group.written.batches.iter().flatten() {
            expectations.note(op, policy)?;
        }
        Ok(CheckedGroup {
            seq: group.seq,
            txns: group.txns,
            expectations,
            emptied: group.written.emptied,
        })
    }
}

/// What writers and the verifier share: per writer, how many commits it has started and how
/// many it has handed over (see the module documentation). Each writer also holds a sender of
/// the verifier's queue.
pub struct VerifierLink {
    pub started: Vec<AtomicU64>,
    pub handed_over: Vec<AtomicU64>,
    pub policy: IncrementalPolicy,
}

/// The verifier thread. `mark_verified` records that the given transactions were checked
/// and returns the verified position; `stopped` says whether the applier is stopping.
pub fn run_verifier(
    target: &mut dyn Target,
    rx: std_mpsc::Receiver<CommittedGroup>,
    link: &VerifierLink,
    mark_verified: &dyn Fn(&[TxnIndex]) -> SourcePosition,
    stopped: &dyn Fn() -> bool,
) -> Result<(), TargetError> {
    let loaded = target.load_verified()?;
    let start = mark_verified(&[]);
    let mut record = loaded.clone().unwrap_or_default();
    match &loaded {
        Some(r) if !r.position.covers(&start) => {
            // A crash (or a run without verification) left committed transactions unread;
            // their rows are not known here any more. The full verifier checks them.
            tracing::warn!(
                verified = %r.position,
                applied = %start,
                "transactions applied before this start were not all read back; run `sluice verify` to check them"
            );
            record.unchecked_txns += 1;
        }
        None if !start.is_empty() => {
            tracing::info!(from = %start, "incremental verification starts here; `sluice verify` checks what came before");
        }
        _ => {}
    }
    record.position = start;
    let mut dirty = true;
    let mut last_record = Instant::now();
    let mut carried: VecDeque<CheckedGroup> = VecDeque::new();
    let policy = link.policy;
    let checked_group = |g: CommittedGroup| CheckedGroup::new(g, &policy);
    let mut scratch = Vec::with_capacity(256);
    // Groups arrive out of commit order (each writer hands over its own). Per row, the newest
    // commit checked so far: an older expectation that arrives later is superseded.
    let mut checked: HashMap<RowId, u64> = HashMap::new();
    // Every group below this sequence has been checked; `checked` entries below it can no
    // longer supersede anything.
    let mut below = 0u64;
    let mut seen_above: std::collections::BTreeSet<u64> = std::collections::BTreeSet::new();
    // Per target table, the latest commit that emptied it (TRUNCATE, DROP TABLE).
    let mut emptied_at: HashMap<String, u64> = HashMap::new();
    loop {
        let first = match carried.pop_front() {
            Some(g) => g,
            None => match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(g) => checked_group(g)?,
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    // Transactions with nothing to apply move the mark without a group.
                    let position = mark_verified(&[]);
                    if position != record.position {
                        record.position = position;
                        dirty = true;
                    }
                    if dirty {
                        dirty = !persist(target, &record);
                        last_record = Instant::now();
                    }
                    continue;
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                    let position = mark_verified(&[]);
                    if position != record.position {
                        record.position = position;
                        dirty = true;
                    }
                    if dirty {
                        persist(target, &record);
                    }
                    return Ok(());
                }
            },
        };
        let mut groups = vec![first];
        while groups.len() < GROUPS_PER_ROUND {
            match carried.pop_front() {
                Some(g) => groups.push(g),
                None => match rx.try_recv() {
                    Ok(g) => groups.push(checked_group(g)?),
                    Err(_) => break,
                },
            }
        }
        // Tables emptied by a later commit: their earlier rows are superseded.
        for g in &groups {
            for table in &g.emptied {
                let at = emptied_at.entry(table.clone()).or_insert(g.seq);
                *at = (*at).max(g.seq);
            }
        }
        // The latest expectation per row in this round.
        let mut latest: HashMap<RowId, (u64, &Expectation)> = HashMap::new();
        for g in &groups {
            for (id, e) in &g.expectations.rows {
                if checked.get(id).is_some_and(|&seq| seq > g.seq)
                    || emptied_at.get(&id.0).is_some_and(|&seq| seq > g.seq)
                {
                    continue;
                }
                match latest.get(id) {
                    Some((seq, _)) if *seq > g.seq => {}
                    _ => {
                        latest.insert(id.clone(), (g.seq, e));
                    }
                }
            }
        }
        let mut differing = differing_rows(target, &latest, &mut scratch)?;
        if !differing.is_empty() {
            // Wait until every commit that had started by now is handed over, taking what
            // arrives meanwhile (writers may be blocked handing theirs over).
            let snapshot: Vec<u64> = link.started.iter().map(|s| s.load(Ordering::SeqCst)).collect();
            while link
                .handed_over
                .iter()
                .zip(&snapshot)
                .any(|(h, &s)| h.load(Ordering::SeqCst) < s)
            {
                if stopped() {
                    return Ok(());
                }
                match rx.recv_timeout(Duration::from_millis(1)) {
                    Ok(g) => carried.push_back(checked_group(g)?),
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                        // Every writer has gone. A writer counts its hand-over just after
                        // sending, so look again: if one still owes a group, it failed between
                        // its commit and the hand-over (the stop flag may not be visible here
                        // yet). What that commit wrote is unknown, so nothing can be judged: the
                        // run is ending, and a restart verifies from its checkpoint.
                        let owed = link
                            .handed_over
                            .iter()
                            .zip(&snapshot)
                            .any(|(h, &s)| h.load(Ordering::SeqCst) < s);
                        if owed {
                            return Ok(());
                        }
                        break;
                    }
                }
            }
            while let Ok(g) = rx.try_recv() {
                carried.push_back(checked_group(g)?);
            }
            differing.retain(|(id, _)| {
                let seq = latest[id].0;
                !carried
                    .iter()
                    .any(|g| g.seq > seq && (g.expectations.rows.contains_key(id) || g.emptied.contains(&id.0)))
            });
            if !differing.is_empty() {
                let still: HashMap<RowId, (u64, &Expectation)> =
                    differing.iter().map(|(id, _)| (id.clone(), latest[id])).collect();
                differing = differing_rows(target, &still, &mut scratch)?;
            }
        }
        if !differing.is_empty() {
            handle_mismatches(
                target,
                &latest,
                &differing,
                &groups,
                link.policy.on_mismatch,
                &mut record,
            )?;
        }
        for (id, (seq, _)) in &latest {
            let entry = checked.entry(id.clone()).or_insert(*seq);
            *entry = (*entry).max(*seq);
        }
        for g in &groups {
            seen_above.insert(g.seq);
        }
        while seen_above.remove(&below) {
            below += 1;
        }
        checked.retain(|_, seq| *seq >= below);
        let indexes: Vec<TxnIndex> = groups.iter().flat_map(|g| g.txns.iter().map(|(i, _)| *i)).collect();
        record.unchecked_txns += groups.iter().filter(|g| g.expectations.overflow).count() as u64;
        drop(latest);
        record.position = mark_verified(&indexes);
        dirty = true;
        if last_record.elapsed() >= RECORD_EVERY {
            dirty = !persist(target, &record);
            last_record = Instant::now();
        }
    }
}

/// Writes the verified record; `false` when it could not (a writer holding SQLite's write lock
/// through a long transaction, say). The record is only a report of progress, so a failed
/// write is retried later instead of stopping replication.
fn persist(target: &mut dyn Target, record: &VerifiedRecord) -> bool {
    match target.record_verified(record) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!("could not record the verified position yet (will retry): {e}");
            false
        }
    }
}

/// A row's identity: target table name and canonical key.
type RowId = (String, Vec<u8>);

/// Reads the rows back and returns those whose digest differs from the expectation, with the
/// digest found (`None`: absent).
fn differing_rows(
    target: &mut dyn Target,
    expected: &HashMap<RowId, (u64, &Expectation)>,
    scratch: &mut Vec<u8>,
) -> Result<Vec<(RowId, Option<RowDigest>)>, TargetError> {
    let mut by_table: HashMap<&str, Vec<(&RowId, &Expectation)>> = HashMap::new();
    for (id, (_, e)) in expected {
        by_table.entry(e.table.name.as_str()).or_default().push((id, e));
    }
    let mut differing = Vec::new();
    for (_, rows) in by_table {
        let table = rows[0].1.table.clone();
        for batch in rows.chunks(KEYS_PER_READ) {
            let keys: Vec<Vec<Value>> = batch.iter().map(|(_, e)| e.key.clone()).collect();
            let found = target.read_rows(&table, RowSelection::Keys(&keys))?;
            let mut digests: HashMap<Vec<u8>, RowDigest> = HashMap::with_capacity(found.len());
            for row in &found {
                let key = canonical::encode_key(&table, row).map_err(|e| TargetError::Other(e.to_string()))?;
                let digest =
                    canonical::row_digest(&table, row, scratch).map_err(|e| TargetError::Other(e.to_string()))?;
                digests.insert(key, digest);
            }
            for (id, e) in batch {
                let found = digests.get(&id.1).copied();
                if found != e.digest {
                    differing.push(((*id).clone(), found));
                }
            }
        }
    }
    Ok(differing)
}

fn handle_mismatches(
    target: &mut dyn Target,
    latest: &HashMap<RowId, (u64, &Expectation)>,
    differing: &[(RowId, Option<RowDigest>)],
    groups: &[CheckedGroup],
    policy: MismatchPolicy,
    record: &mut VerifiedRecord,
) -> Result<(), TargetError> {
    let mut tables: Vec<&str> = differing.iter().map(|((t, _), _)| t.as_str()).collect();
    tables.sort_unstable();
    tables.dedup();
    // The transactions that wrote the rows, for the message (never the values).
    let gtids: Vec<String> = differing
        .iter()
        .filter_map(|(id, _)| {
            let seq = latest[id].0;
            groups.iter().find(|g| g.seq == seq)
        })
        .flat_map(|g| g.txns.iter().filter_map(|(_, g)| g.map(|g| g.to_string())))
        .take(5)
        .collect();
    record.mismatches += differing.len() as u64;
    let what = format!(
        "{} row(s) of table(s) {} read back from the target differ from what sluice wrote (transactions {})",
        differing.len(),
        tables.join(", "),
        if gtids.is_empty() {
            "-".to_owned()
        } else {
            gtids.join(", ")
        }
    );
    match policy {
        MismatchPolicy::Stop => {
            let _ = target.record_verified(record);
            Err(TargetError::Other(format!(
                "incremental verification: {what}. Something changed the target behind sluice's back, or sluice wrote \
                 it wrong; replication stops ([verify] on_mismatch = \"stop\"). Run `sluice verify --repair`, then restart"
            )))
        }
        MismatchPolicy::Report => {
            tracing::warn!(
                "incremental verification: {what}; counted and left as is ([verify] on_mismatch = \"report\")"
            );
            Ok(())
        }
        MismatchPolicy::Repair => {
            target.begin()?;
            let result = repair_rows(target, latest, differing);
            if result.is_err() {
                let _ = target.rollback();
            }
            result?;
            target.commit_without_checkpoint()?;
            tracing::warn!("incremental verification: {what}; rewritten ([verify] on_mismatch = \"repair\")");
            Ok(())
        }
    }
}

/// Rewrites the differing rows inside the open transaction: each is first read under a lock,
/// and left alone when it no longer holds the version found wrong (the stream rewrote it
/// since, and the newer write stands).
fn repair_rows(
    target: &mut dyn Target,
    latest: &HashMap<RowId, (u64, &Expectation)>,
    differing: &[(RowId, Option<RowDigest>)],
) -> Result<(), TargetError> {
    let mut scratch = Vec::new();
    for (id, observed) in differing {
        let e = latest[id].1;
        let locked = target.read_rows(&e.table, RowSelection::Keys(std::slice::from_ref(&e.key)))?;
        let now = match locked.first() {
            Some(row) => Some(
                canonical::row_digest(&e.table, row, &mut scratch).map_err(|e| TargetError::Other(e.to_string()))?,
            ),
            None => None,
        };
        if now != *observed {
            continue;
        }
        let op = match &e.row {
            Some(row) => RowOp::Insert {
                table: e.table.clone(),
                row: row.clone(),
            },
            None => {
                let mut row = vec![Value::Null; e.table.columns.len()];
                for (i, &k) in e.table.key.iter().enumerate() {
                    row[k] = e.key[i].clone();
                }
                RowOp::Delete {
                    table: e.table.clone(),
                    row,
                }
            }
        };
        target.apply(&op)?;
    }
    Ok(())
}
