//! Targets: the databases sluice writes into.
//!
//! # The target contract
//!
//! Every [`Target`] implementation guarantees:
//!
//! * **Atomic source transactions.** Everything between [`Target::begin`] and
//!   [`Target::commit`] becomes visible together or not at all. The caller may put several
//!   consecutive source transactions into one target transaction, never part of one.
//! * **Checkpoint with the data.** [`Target::commit`] writes the given [`Checkpoint`] in the
//!   same target transaction as the rows, so after a crash [`Target::load_checkpoint`] names
//!   exactly the last source transaction whose rows are present.
//! * **Keyed, idempotent writes.** Rows are addressed by the target table's key (the source
//!   primary key restricted to replicated columns). An insert of an existing key replaces the
//!   row; an update whose key changed moves the row; a delete of a missing row is a no-op.
//!   (Idempotency is a safety net; the checkpoint already prevents re-application.)
//! * **Per-key order.** Row changes to one key take effect in the order `apply` was called,
//!   even when a server target sends several changes in one multi-row statement.
//! * **No partial state on error.** Any error between `begin` and `commit` leaves the target
//!   as it was at the previous commit once [`Target::rollback`] (or a reconnect) has run.

mod batch;
mod common;
pub mod fence;
pub mod mariadb;
pub mod postgres;
mod server;
pub mod sqlite;

use std::sync::Arc;

use sluice_binlog::{ColumnDef, SourceGtid, SourcePosition, Value};

/// A table as it exists at the target: the replicated columns of one source table.
/// Serializable: the fan-out log carries table definitions to consumers (`crate::log`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TargetTable {
    /// Source `schema.table`, for messages and status.
    pub source_name: String,
    /// The table's name in the target database.
    pub name: String,
    /// Replicated columns, in target order. `source` carries the source type, which decides
    /// the target column type (see docs/type-mapping.md).
    pub columns: Vec<TargetColumn>,
    /// Indexes into `columns` of the key columns (the source primary key), in key order.
    /// Never empty: tables without a usable key are refused before they reach a target.
    pub key: Vec<usize>,
    /// The rule's row filter and transforms in one text (`TableSelector::rules`), recorded
    /// with the table; empty when none apply.
    pub rules: String,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TargetColumn {
    pub name: String,
    pub source: ColumnDef,
}

/// One row change, in target terms: rows hold one value per [`TargetTable::columns`] entry.
#[derive(Clone, Debug, PartialEq)]
pub enum RowOp {
    Insert {
        table: Arc<TargetTable>,
        row: Vec<Value>,
    },
    /// `before` locates the row by its key values; `after` is the whole new row.
    Update {
        table: Arc<TargetTable>,
        before: Vec<Value>,
        after: Vec<Value>,
    },
    Delete {
        table: Arc<TargetTable>,
        row: Vec<Value>,
    },
}

impl RowOp {
    /// The table the change writes.
    pub fn table(&self) -> &Arc<TargetTable> {
        match self {
            RowOp::Insert { table, .. } | RowOp::Update { table, .. } | RowOp::Delete { table, .. } => table,
        }
    }
}

/// Where replication stands, stored in the target with the rows it covers.
///
/// Parallel writers commit source transactions out of order, so progress is a *low-water
/// mark* (`position`: every transaction at or before it is applied) plus the GTIDs applied
/// beyond it (`applied`). Each writer keeps its own row (`writer`), written in the same
/// target transaction as the rows it covers; [`Target::load_checkpoint`] merges the rows:
/// the union of the positions (for MariaDB the per-domain maximum, for MySQL the union of the
/// GTID sets), and the union of the applied GTIDs above it (for MySQL folded into the set,
/// which has no order to wait for). Positions and GTIDs are stored
/// as their text ([`SourcePosition`]), which tells MariaDB's from MySQL's.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Checkpoint {
    /// Low-water mark: for MariaDB the last GTID per domain below which everything is
    /// applied, for MySQL the set of transactions all applied.
    pub position: SourcePosition,
    /// GTIDs applied beyond `position`, in no particular order.
    pub applied: Vec<SourceGtid>,
    /// Commit time (Unix seconds) of the newest applied source transaction, from its event header.
    pub source_commit_unix: u32,
    /// The writer slot this record belongs to (0 for serial apply). Meaningless in a merged,
    /// loaded checkpoint.
    pub writer: u16,
}

impl Checkpoint {
    /// Whether the transaction `gtid` is already applied.
    pub fn covers(&self, gtid: impl Into<SourceGtid>) -> bool {
        let gtid = gtid.into();
        self.position.contains(gtid) || self.applied.contains(&gtid)
    }

    /// Where the source is asked to stream from: for MariaDB the low-water mark (the
    /// transactions applied beyond it are skipped as they arrive), for MySQL the set of every
    /// transaction applied, which the source leaves out itself.
    pub fn resume_from(&self) -> SourcePosition {
        match &self.position {
            SourcePosition::Mariadb(_) => self.position.clone(),
            SourcePosition::Mysql(_) => {
                let mut all = self.position.clone();
                for gtid in &self.applied {
                    all.advance(*gtid);
                }
                all
            }
        }
    }

    /// Merges per-writer records into one checkpoint.
    pub fn merge(records: impl IntoIterator<Item = Checkpoint>) -> Option<Checkpoint> {
        let mut merged: Option<Checkpoint> = None;
        let mut applied = Vec::new();
        for r in records {
            applied.extend(r.applied.iter().copied());
            let m = merged.get_or_insert_with(Checkpoint::default);
            m.position = m.position.union(&r.position);
            m.source_commit_unix = m.source_commit_unix.max(r.source_commit_unix);
        }
        let mut m = merged?;
        if matches!(m.position, SourcePosition::Mysql(_)) || applied.iter().any(|g| matches!(g, SourceGtid::Mysql(_))) {
            // A GTID set has no order to wait for: what was applied beyond the mark joins it.
            // (Kept apart, it would never be covered by a mark that grows only by the
            // transactions streamed in this run, which the source leaves these out of, and a
            // backfill chunk's high mark holding one would never be passed.)
            for gtid in applied {
                m.position.advance(gtid);
            }
            return Some(m);
        }
        applied.retain(|g| !m.position.contains(*g));
        applied.sort();
        applied.dedup();
        m.applied = applied;
        Some(m)
    }

    /// The applied GTIDs as text (`0-1-5,0-1-9`, `uuid:5,uuid:9`), for storage.
    pub fn applied_text(&self) -> String {
        self.applied.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(",")
    }

    /// Parses [`Checkpoint::applied_text`] output.
    pub fn parse_applied(text: &str) -> Result<Vec<SourceGtid>, sluice_binlog::position::ParsePositionError> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect()
    }
}

/// Copy progress of one target table's backfill, stored in the target in the same transaction
/// as the copied rows (see `crate::backfill`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BackfillProgress {
    /// The target table name.
    pub table: String,
    /// Every existing source row has been copied.
    pub done: bool,
    /// The source primary key of the last copied row, as opaque text written by
    /// `crate::backfill`; `None` before the first chunk.
    pub last_key: Option<String>,
    pub rows_copied: u64,
    /// The source's estimate of the table's rows when the copy started (for the ETA).
    pub rows_estimate: u64,
    /// Copy speed over this run of the copy.
    pub rows_per_s: u64,
    /// Why the copy stopped, when it failed (names the table and the cause, never values).
    pub error: Option<String>,
    /// A column-only copy: the target columns it fills in existing rows. Empty for a copy
    /// of whole rows.
    pub columns: Vec<String>,
    /// The table left the config: its target table is kept but no longer replicated, so its
    /// rows go stale. Should it come back, it is dropped and copied afresh
    /// (`crate::schema_manager`).
    pub stale: bool,
}

/// What an edge application may rely on, per table and per column, kept by sluice in the
/// edge's `_sluice_readiness` table (docs/readiness.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessState {
    /// The table's existing rows are being copied: it holds only part of them.
    Copying,
    /// The column was added at the edge and a column-only copy is filling it: existing rows
    /// may still hold NULL there.
    BackfillingColumn,
    /// Everything the source holds is here, kept current by the stream.
    Ready,
    /// The column exists at the source but is held back by the rule (`new_columns = "hold"`):
    /// it is not at the edge.
    Held,
    /// The table left the config (or was dropped at the source): no longer updated.
    Stale,
}

impl ReadinessState {
    /// The text stored in `_sluice_readiness.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadinessState::Copying => "copying",
            ReadinessState::BackfillingColumn => "backfilling_column",
            ReadinessState::Ready => "ready",
            ReadinessState::Held => "held",
            ReadinessState::Stale => "stale",
        }
    }
}

/// One `_sluice_readiness` row of a table: `column` is empty for the table's own row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub column: String,
    pub state: ReadinessState,
}

impl Readiness {
    pub fn table(state: ReadinessState) -> Self {
        Readiness {
            column: String::new(),
            state,
        }
    }

    pub fn column(name: &str, state: ReadinessState) -> Self {
        Readiness {
            column: name.to_owned(),
            state,
        }
    }
}

/// A `_sluice_readiness` row as read back (the state as stored).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReadinessRow {
    pub table: String,
    /// Empty for the table's own row.
    pub column: String,
    pub state: String,
    pub updated_at_unix: i64,
}

/// The readiness table's name, for messages and for the statements of every target.
pub const READINESS_TABLE: &str = "_sluice_readiness";

/// `UPDATE` of [`Target::readiness_copied`]: the states a finished copy makes ready.
const COPY_STATES: [ReadinessState; 2] = [ReadinessState::Copying, ReadinessState::BackfillingColumn];

/// The condition on `state` of [`Target::readiness_copied`], as SQL every target parses.
pub(crate) fn copy_states_sql(quoted_state: &str) -> String {
    let list: Vec<String> = COPY_STATES.iter().map(|s| format!("'{}'", s.as_str())).collect();
    format!("{quoted_state} IN ({})", list.join(", "))
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The target database reported an error. The message never contains row values.
    #[error("target {operation} failed on table {table}: {message}")]
    Database {
        operation: &'static str,
        table: String,
        message: String,
    },
    /// The connection to the target failed or could not be made (network, server restart):
    /// worth trying again from the target's own checkpoint (`ErrorKind::Transient`).
    #[error("target unreachable ({operation}): {message}")]
    Unreachable { operation: &'static str, message: String },
    /// Setting up the session failed (connect, the database or schema, the writer lock):
    /// `what` names the database or schema, never a table.
    #[error("target {operation} failed ({what}): {message}")]
    Session {
        operation: &'static str,
        what: String,
        message: String,
    },
    #[error("target: {0}")]
    Other(String),
    /// The applier stopped because another of its threads failed (or it was told to stop):
    /// an echo of that failure, never its cause.
    #[error("target: apply stopped")]
    Stopped,
}

impl TargetError {
    /// A session-level error ([`TargetError::Session`]), or [`TargetError::Unreachable`] when
    /// `connection_lost`.
    pub(crate) fn from_session(operation: &'static str, what: String, message: String, connection_lost: bool) -> Self {
        match connection_lost {
            true => TargetError::Unreachable { operation, message },
            false => TargetError::Session {
                operation,
                what,
                message,
            },
        }
    }

    /// Adds the source transaction(s) (GTIDs, never values) a refused row change came from:
    /// to a database's refusal and to a value the target cannot hold (`Other`).
    pub fn in_source_transactions(self, gtids: &str) -> Self {
        match self {
            TargetError::Database {
                operation,
                table,
                message,
            } => TargetError::Database {
                operation,
                table,
                message: format!("{message} (source transaction {gtids})"),
            },
            TargetError::Other(message) => TargetError::Other(format!("{message} (source transaction {gtids})")),
            other => other,
        }
    }

    /// Names the target (`Config::target_description`: kind, user, host:port, database;
    /// never a password) in a connection error, which otherwise may not say where it went.
    pub fn naming_target(self, target: &str) -> Self {
        match self {
            TargetError::Unreachable { operation, message } => TargetError::Unreachable {
                operation,
                message: format!("{target}: {message}"),
            },
            TargetError::Session {
                operation,
                what,
                message,
            } => TargetError::Session {
                operation,
                what: format!("{what} at {target}"),
                message,
            },
            other => other,
        }
    }

    /// A database error, or [`TargetError::Unreachable`] when `connection_lost`.
    pub(crate) fn from_database(operation: &'static str, table: &str, message: String, connection_lost: bool) -> Self {
        if connection_lost {
            TargetError::Unreachable { operation, message }
        } else {
            TargetError::Database {
                operation,
                table: table.to_owned(),
                message,
            }
        }
    }
}

pub type TargetResult<T> = Result<T, TargetError>;

/// The numeric columns of `_sluice_lag` (`p50_us`, `p99_us`, `p999_us`, `max_us`, `samples`,
/// `window_ms`, `updated_at_us`), as the signed 64-bit integers every target stores.
pub(crate) fn lag_columns(r: &crate::ops::lag::LagReport) -> [i64; 7] {
    [
        r.p50_us,
        r.p99_us,
        r.p999_us,
        r.max_us,
        r.samples,
        r.window_ms,
        r.updated_at_us,
    ]
    .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// A `_sluice_lag` row back as a report (an unknown source reads as event timestamps).
pub(crate) fn lag_from_columns(source: &str, v: [i64; 7]) -> crate::ops::lag::LagReport {
    let u = |x: i64| u64::try_from(x).unwrap_or(0);
    crate::ops::lag::LagReport {
        source: crate::ops::lag::LagSource::parse(source)
            .unwrap_or(crate::ops::lag::LagSource::EventTimestamps)
            .as_str(),
        p50_us: u(v[0]),
        p99_us: u(v[1]),
        p999_us: u(v[2]),
        max_us: u(v[3]),
        samples: u(v[4]),
        window_ms: u(v[5]),
        updated_at_us: u(v[6]),
    }
}

/// A database sluice replicates into. See the module documentation for the contract.
pub trait Target: Send {
    /// Creates the sluice bookkeeping tables and every table in `tables` that is missing.
    /// Existing tables are left as they are. May be called inside an open transaction (between
    /// `begin` and `commit`); the tables it creates then commit or roll back with it.
    fn prepare(&mut self, tables: &[Arc<TargetTable>]) -> TargetResult<()>;

    /// The merged checkpoint of all writers' records (see [`Checkpoint::merge`]), or `None`
    /// for a fresh target.
    fn load_checkpoint(&mut self) -> TargetResult<Option<Checkpoint>>;

    /// Starts a target transaction.
    fn begin(&mut self) -> TargetResult<()>;

    /// Applies one row change inside the open transaction. A server target may buffer the
    /// change and send it later in a multi-row statement (per-key order kept exactly, see
    /// `target::batch`), so a database's refusal of a row can surface from a later `apply`
    /// or from `commit`, `record_backfill`, `record_lag`, `read_rows` or `prepare` in the same
    /// transaction; it names the table and rolls back the whole transaction all the same.
    /// Values a column cannot hold are refused here, by the call that passes them.
    fn apply(&mut self, op: &RowOp) -> TargetResult<()>;

    /// Marks this connection as a background (backfill) writer: where the target has one
    /// write lock for all connections (SQLite), the stream's writers waiting for it go first.
    fn set_background(&mut self) {}

    /// Whether every connection's transaction takes one write lock for the whole target
    /// (SQLite), so that an open transaction blocks every other writer. With source commit
    /// order such a writer opens a group only in its turn (everything before it committed):
    /// holding the lock while waiting for an earlier transaction would block that transaction.
    fn single_writer(&self) -> bool {
        false
    }

    /// Applies `ops` in order inside the open transaction, exactly as one `apply` each would
    /// (the same result, the same errors). A target may do it with fewer statements: SQLite
    /// writes a run of inserts into one table (a backfill chunk, say) as multi-row upserts.
    fn apply_all(&mut self, ops: &[RowOp]) -> TargetResult<()> {
        ops.iter().try_for_each(|op| self.apply(op))
    }

    /// Writes `checkpoint` as the record of writer `checkpoint.writer` (replacing that writer's
    /// previous record) and commits, atomically with the rows applied since `begin`.
    fn commit(&mut self, checkpoint: &Checkpoint) -> TargetResult<()>;

    /// Abandons the open transaction, if any.
    fn rollback(&mut self) -> TargetResult<()>;

    /// Records `progress` (replacing the table's previous record) inside the open transaction,
    /// so that it commits with the rows it describes.
    fn record_backfill(&mut self, progress: &BackfillProgress) -> TargetResult<()> {
        let _ = progress;
        Err(TargetError::Other("this target does not support backfill yet".into()))
    }

    /// For each of `tables` the target already has: the columns it lacks (indexes into the
    /// table's columns), which [`Target::prepare`] will add (nullable, empty in existing rows).
    /// Tables the target does not have, or has whole, are not listed. A table that differs
    /// in any other way is an error, as in `prepare`.
    fn column_gaps(&mut self, tables: &[Arc<TargetTable>]) -> TargetResult<Vec<(String, Vec<usize>)>>;

    /// Sets `columns` (indexes into the table's columns) of the existing row with `row`'s key
    /// to `row`'s values, inside the open transaction; a row the target does not hold stays
    /// absent. This is a column-only backfill's write: the row's other columns are left as
    /// the stream wrote them.
    fn fill_columns(&mut self, table: &Arc<TargetTable>, columns: &[usize], row: &[Value]) -> TargetResult<()> {
        let _ = (columns, row);
        Err(TargetError::Other(format!(
            "table {}: this target cannot fill single columns (column-only backfill)",
            table.name
        )))
    }

    /// The names of the tables sluice created in this target (recorded in `_sluice_tables`)
    /// that still exist; a recorded table someone dropped since is left out.
    fn recorded_tables(&mut self) -> TargetResult<Vec<String>>;

    /// The row filter and transforms each recorded table was created under (`TargetTable::rules`),
    /// by table name; `None` for a table recorded before sluice kept them.
    fn recorded_rules(&mut self) -> TargetResult<std::collections::HashMap<String, Option<String>>>;

    /// Drops target table `name` when it exists and forgets it (its `_sluice_tables`,
    /// `_sluice_backfill` and `_sluice_readiness` records), so that the next `prepare` creates it afresh. Called with
    /// no transaction open, after `prepare` created the bookkeeping tables. Where DDL is
    /// transactional (SQLite, PostgreSQL) all of it happens at once; elsewhere the table goes
    /// first and its records after, so a crash in between leaves records that a second call
    /// removes.
    fn drop_table(&mut self, name: &str) -> TargetResult<()>;

    /// Deletes every row of `table` inside the open transaction, so that it commits with the
    /// rows and the checkpoint around it (a source `TRUNCATE` at its GTID).
    fn empty_table(&mut self, table: &Arc<TargetTable>) -> TargetResult<()>;

    /// Records readiness rows of `table` (`_sluice_readiness`) inside the open transaction, so
    /// that they commit with the change they describe: upserts `rows`, after deleting the
    /// table's other rows when `replace`.
    fn record_readiness(&mut self, table: &str, rows: &[Readiness], replace: bool) -> TargetResult<()>;

    /// Inside the open transaction that commits `table`'s last copied chunk: its `copying` and
    /// `backfilling_column` rows become `ready`.
    fn readiness_copied(&mut self, table: &str) -> TargetResult<()>;

    /// Every `_sluice_readiness` row, by table then column; empty when there is none.
    fn load_readiness(&mut self) -> TargetResult<Vec<ReadinessRow>>;

    /// Every table's backfill record; empty for a fresh target.
    fn load_backfill(&mut self) -> TargetResult<Vec<BackfillProgress>> {
        Ok(Vec::new())
    }

    /// Records the lag percentiles (replacing the previous record) in `_sluice_lag` inside the
    /// open transaction. A target without lag storage ignores it: lag is informational and
    /// must never stop replication.
    fn record_lag(&mut self, report: &crate::ops::lag::LagReport) -> TargetResult<()> {
        let _ = report;
        Ok(())
    }

    /// The last recorded lag percentiles, `None` when none were recorded.
    fn load_lag(&mut self) -> TargetResult<Option<crate::ops::lag::LagReport>> {
        Ok(None)
    }

    /// Reads rows of `table` for verification, each with one value per column, decoded back
    /// into the [`Value`]s sluice wrote (temporal values may come back as their canonical text,
    /// see `crate::verify::canonical`). One statement, so one consistent snapshot. Inside an open
    /// transaction the rows read are locked against concurrent writers until it ends.
    fn read_rows(&mut self, table: &Arc<TargetTable>, selection: RowSelection<'_>) -> TargetResult<Vec<Vec<Value>>>;

    /// Commits the open transaction without writing a checkpoint record: for repairs made by
    /// verification, which are not part of the stream's progress.
    fn commit_without_checkpoint(&mut self) -> TargetResult<()>;

    /// Writes the incremental verifier's record (creating its table when missing), in a
    /// transaction of its own. Called with no transaction open.
    fn record_verified(&mut self, record: &VerifiedRecord) -> TargetResult<()>;

    /// The incremental verifier's record; `None` when it never wrote one.
    fn load_verified(&mut self) -> TargetResult<Option<VerifiedRecord>>;

    /// A checksum of the rows of `table` with keys above `after` and at most `upto`, computed
    /// by the target itself with [`mariadb::checksum_select`]; `None` for targets whose stored
    /// text forms differ from a MariaDB source's (then verification compares rows instead).
    fn sql_checksum(
        &mut self,
        table: &Arc<TargetTable>,
        after: Option<&[Value]>,
        upto: Option<&[Value]>,
    ) -> TargetResult<Option<SqlChecksum>> {
        let _ = (table, after, upto);
        Ok(None)
    }
}

/// A chunk checksum computed in SQL: row count, and the XOR and the sum of each row's CRC32
/// (a difference that cancels in the XOR does not cancel in the sum).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SqlChecksum {
    pub rows: u64,
    pub xor: u64,
    pub sum: u64,
}

/// What incremental verification has checked (`crate::verify::incremental`), stored in
/// `_sluice_verified`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct VerifiedRecord {
    /// Every source transaction at or before this position is applied and its rows were read
    /// back from the target and found as they should be.
    pub position: SourcePosition,
    /// Rows found different from what was written, since the target was created.
    pub mismatches: u64,
    /// Source transactions too large to check row by row (see `crate::verify::incremental`).
    pub unchecked_txns: u64,
}

/// Which rows [`Target::read_rows`] returns. Key tuples hold the key columns' values in
/// [`TargetTable::key`] order.
#[derive(Clone, Copy, Debug)]
pub enum RowSelection<'a> {
    /// Rows whose key is above `after` (from the first when `None`) and at most `upto` (no
    /// bound when `None`), in the target's key order, at most `limit` of them.
    KeyRange {
        after: Option<&'a [Value]>,
        upto: Option<&'a [Value]>,
        limit: usize,
    },
    /// The rows with these keys, in no particular order; keys without a row are left out.
    Keys(&'a [Vec<Value>]),
}

/// A keyset comparison of the key tuple with a bound, spelt out as
/// `k1 > ? OR (k1 = ? AND k2 > ?) OR …` (which every engine turns into index ranges):
/// `strict` compares the leading columns, `last` the last one (`>`/`>` for "above",
/// `<`/`<=` for "at most"). Returns the SQL and which key value each placeholder binds.
fn keyset_terms(keys: &[String], strict: &str, last: &str) -> (String, Vec<usize>) {
    let mut terms = Vec::new();
    let mut order = Vec::new();
    for i in 0..keys.len() {
        let mut parts = Vec::new();
        for (j, k) in keys.iter().enumerate().take(i) {
            parts.push(format!("{k} = {PLACEHOLDER}"));
            order.push(j);
        }
        let op = if i + 1 == keys.len() { last } else { strict };
        parts.push(format!("{} {op} {PLACEHOLDER}", keys[i]));
        order.push(i);
        terms.push(format!("({})", parts.join(" AND ")));
    }
    (format!("({})", terms.join(" OR ")), order)
}

/// Marks where a placeholder goes in SQL built by [`selection_condition`]; NUL cannot occur in
/// an identifier (every target refuses it), so a quoted name never contains the marker.
const PLACEHOLDER: char = '\0';

/// The `WHERE` condition of a [`RowSelection`] over the quoted key columns `keys`, with
/// [`PLACEHOLDER`] where each placeholder goes, and which key value (index into a key tuple) binds each one,
/// paired with which tuple (0 = `after`/first key, 1 = `upto`, n = n-th key of a key list).
pub fn selection_condition(keys: &[String], selection: &RowSelection<'_>) -> (String, Vec<(usize, usize)>) {
    match selection {
        RowSelection::KeyRange { after, upto, .. } => {
            let mut conds = Vec::new();
            let mut binds = Vec::new();
            if after.is_some() {
                let (sql, order) = keyset_terms(keys, ">", ">");
                conds.push(sql);
                binds.extend(order.into_iter().map(|k| (0, k)));
            }
            if upto.is_some() {
                let (sql, order) = keyset_terms(keys, "<", "<=");
                conds.push(sql);
                binds.extend(order.into_iter().map(|k| (1, k)));
            }
            if conds.is_empty() {
                ("1 = 1".to_owned(), binds)
            } else {
                (conds.join(" AND "), binds)
            }
        }
        RowSelection::Keys(list) if keys.len() == 1 && !list.is_empty() => {
            // One key column: `k IN (…)`, which every engine parses and plans faster than
            // an OR chain.
            let marks = vec![PLACEHOLDER.to_string(); list.len()].join(", ");
            (
                format!("{} IN ({marks})", keys[0]),
                (0..list.len()).map(|n| (n, 0)).collect(),
            )
        }
        RowSelection::Keys(list) => {
            let mut binds = Vec::new();
            let terms: Vec<String> = (0..list.len())
                .map(|n| {
                    let parts: Vec<String> = keys
                        .iter()
                        .enumerate()
                        .map(|(k, name)| {
                            binds.push((n, k));
                            format!("{name} = {PLACEHOLDER}")
                        })
                        .collect();
                    format!("({})", parts.join(" AND "))
                })
                .collect();
            if terms.is_empty() {
                ("1 = 0".to_owned(), binds)
            } else {
                (terms.join(" OR "), binds)
            }
        }
    }
}

/// Replaces each placeholder marker in `sql` with `placeholder(n)` (n counts from 1).
pub fn number_placeholders(sql: &str, placeholder: impl Fn(usize) -> String) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    for (n, part) in sql.split(PLACEHOLDER).enumerate() {
        if n > 0 {
            out.push_str(&placeholder(n));
        }
        out.push_str(part);
    }
    out
}

/// The value bound for placeholder `(tuple, key)` of [`selection_condition`].
pub fn selection_value<'a>(selection: &RowSelection<'a>, (tuple, key): (usize, usize)) -> &'a Value {
    match selection {
        RowSelection::KeyRange { after, upto, .. } => {
            let t = if tuple == 0 { after } else { upto };
            &t.expect("bound present")[key]
        }
        RowSelection::Keys(list) => &list[tuple][key],
    }
}
