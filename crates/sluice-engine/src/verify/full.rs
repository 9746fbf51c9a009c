//! `sluice verify`: full-table comparison of the source (through the table's filter and
//! transforms) with the target, while replication runs, without locks.
//!
//! A table is read from the source in primary-key chunks (keyset pagination, one `SELECT` per
//! chunk, the source's GTID position read right after it). Each source row that passes the
//! row filter is projected and transformed exactly as the stream would write it, and encoded
//! canonically (`crate::verify::canonical`) into a 128-bit digest; the target's copy of the same rows
//! is read back and digested the same way. Before reading the target, verification waits
//! until the target's checkpoint covers the source position the chunk was read at, so a row
//! the stream has not applied yet is not reported.
//!
//! Three ways to compare a chunk:
//!
//! * **SQL checksum** — MariaDB to MariaDB with no row filter and no transform on the table:
//!   each server computes the chunk's checksum itself (CRC32 of each row's columns as text,
//!   XORed and summed, as pt-table-checksum does), so no row crosses the network unless the
//!   checksums differ; a chunk that differs is then compared row by row as below.
//!
//! * **Key range** — when every key column compares the same way on the source and on the
//!   target (integers, binary strings, dates, …) and no key column is transformed: the target
//!   rows between the chunk's first and last source key. One pass finds missing, different
//!   and extra rows.
//! * **Key list** — otherwise (text keys, whose collations differ between engines; keys
//!   stored as text in SQLite; `hmac`-transformed keys): the target rows with the chunk's keys
//!   finds missing and different rows; a second pass over the target in its own key order
//!   looks each target key up on the source to find extra rows. For `hmac`-transformed keys
//!   the source key cannot be derived from the target's, so that pass compares row counts
//!   only.
//!
//! A difference may still come from lag: the stream can change a row between the source read
//! and the target read. So every differing key is re-checked: source read, wait for the target
//! to catch up with it, target read, source read again. When the source row is the same in
//! both reads, the target (whose state lies between them) must hold exactly it, so a
//! difference then is real; when the source row changed, the round is inconclusive and is
//! repeated, up to `rechecks` rounds (keys still changing are reported as unsettled, not as
//! differences). `--repair` then rewrites each of them with the source's current
//! row through the target's normal write statements, in a target transaction that first
//! locks the row and confirms it still holds the version found wrong (so a row the stream
//! has meanwhile rewritten is left to the stream).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use sluice_binlog::replica::{BinlogStream, ReplicaConfig};
use sluice_binlog::{ColumnDef, ColumnKind, EventBody, EventDecoder, RowChange, SourcePosition, Value};

use crate::apply::schedule::KeyHash;
use crate::config::{Config, TargetConfig};
use crate::pipeline::{open_target, source_pool, RunError};
use crate::select::rules::TablePlan;
use crate::source_rows::{convert, convert_row, quote, KeysetQuery};
use crate::target::{Checkpoint, RowOp, RowSelection, SqlChecksum, Target, TargetError, TargetTable};
use crate::verify::canonical::{self, RowDigest};

/// Source rows per chunk unless told otherwise.
pub const DEFAULT_CHUNK_ROWS: usize = 5_000;
/// Keys per key-list query.
const KEYS_PER_QUERY: usize = 500;
/// Differing keys listed per table in the report (all are counted).
const REPORTED_KEYS: usize = 100;

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Only tables whose target or source name (`schema.table`) matches this glob.
    pub table: Option<String>,
    pub chunk_rows: usize,
    /// Rewrite differing rows from the source.
    pub repair: bool,
    /// How many times a differing key is re-checked before it counts as a difference.
    pub rechecks: u32,
    /// How long to wait for the target to catch up with a source position.
    pub catch_up_timeout: Duration,
    /// Live figures for a progress display (`sluice verify` draws a bar or logs them).
    pub progress: Arc<VerifyProgress>,
}

/// Where a running `verify` stands, updated as it goes (read by the CLI's progress display).
#[derive(Debug, Default)]
pub struct VerifyProgress {
    /// Tables to compare, and compared so far.
    pub tables_total: std::sync::atomic::AtomicUsize,
    pub tables_done: std::sync::atomic::AtomicUsize,
    /// The table being compared (its target name).
    pub table: std::sync::Mutex<String>,
    /// Source rows compared in that table so far.
    pub table_rows: std::sync::atomic::AtomicU64,
    /// Source rows compared in all tables so far.
    pub rows: std::sync::atomic::AtomicU64,
}

impl VerifyProgress {
    fn start_table(&self, name: &str) {
        *self.table.lock().expect("not poisoned") = name.to_owned();
        self.table_rows.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    fn add_rows(&self, rows: u64) {
        self.table_rows.fetch_add(rows, std::sync::atomic::Ordering::Relaxed);
        self.rows.fetch_add(rows, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            table: None,
            chunk_rows: DEFAULT_CHUNK_ROWS,
            repair: false,
            rechecks: 5,
            catch_up_timeout: Duration::from_secs(120),
            progress: Arc::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("verify {table}: source query failed: {message}")]
    Source { table: String, message: String },
    #[error("verify {table}: {message}")]
    Compare { table: String, message: String },
    #[error("verify: the target's checkpoint ({checkpoint}) did not reach source position {position} within {seconds} s; is `sluice run` running and keeping up?")]
    NotCaughtUp {
        checkpoint: String,
        position: String,
        seconds: u64,
    },
    #[error("verify: --table {0:?} matches no replicated table")]
    NoSuchTable(String),
    #[error(
        "verify: no source table matches the config's [[tables]] rules, so nothing was compared. Check the rules, \
         and that the source user can see the tables (SELECT grant)"
    )]
    NothingToCompare,
    #[error("verify: invalid --table pattern: {0}")]
    BadPattern(String),
}

impl From<TargetError> for VerifyError {
    fn from(e: TargetError) -> Self {
        VerifyError::Run(RunError::Target(e))
    }
}

/// How a table's rows differ, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Difference {
    /// The source has the row (after the filter), the target doesn't.
    Missing,
    /// The target has a row the source doesn't (or that the filter excludes).
    Extra,
    /// Both have the row, with different values.
    Different,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Equal,
    Differs,
    /// Every difference found was repaired.
    Repaired,
    /// Not compared: the table is not fully copied yet (or not created).
    NotReady,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DifferingKey {
    /// The target key, as text (`[1,"a"]`); keys are the target's, so transformed keys show
    /// their transformed values.
    pub key: String,
    pub difference: Difference,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TableVerification {
    pub table: String,
    pub source: String,
    pub outcome: Outcome,
    /// Why the table was not compared, for `not_ready`; notes on what was compared otherwise.
    pub note: Option<String>,
    /// `sql_checksum`, `key_range` or `key_list` (see the module documentation).
    pub method: &'static str,
    /// Source rows that pass the filter, and target rows compared.
    pub source_rows: u64,
    pub target_rows: u64,
    pub chunks: u64,
    /// `sql_checksum` method: chunks whose checksums differed, compared row by row.
    pub checksum_mismatches: u64,
    /// Keys that differed at first sight (before re-checks).
    pub suspects: u64,
    /// Keys that kept changing on the source during every re-check: not compared.
    pub unsettled: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    pub repaired: u64,
    /// Up to 100 of the differing keys.
    pub keys: Vec<DifferingKey>,
    pub seconds: f64,
}

impl TableVerification {
    fn new(plan: &TablePlan) -> Self {
        TableVerification {
            table: plan.target.name.clone(),
            source: plan.target.source_name.clone(),
            outcome: Outcome::Equal,
            note: None,
            method: "key_range",
            source_rows: 0,
            target_rows: 0,
            chunks: 0,
            checksum_mismatches: 0,
            suspects: 0,
            unsettled: 0,
            missing: 0,
            extra: 0,
            different: 0,
            repaired: 0,
            keys: Vec::new(),
            seconds: 0.0,
        }
    }

    pub fn differences(&self) -> u64 {
        self.missing + self.extra + self.different
    }
}

/// Whether the target engine orders and compares a key column exactly as the source does.
fn key_order_agrees(column: &ColumnDef, target: &TargetConfig) -> bool {
    let sqlite = matches!(target, TargetConfig::Sqlite { .. });
    match column.kind {
        // SQLite keeps BIGINT UNSIGNED (and BIT(64)) above i64::MAX as text.
        ColumnKind::BigInt if column.unsigned => !sqlite,
        ColumnKind::Bit => !sqlite && (1..=63).contains(&column.length),
        k if k.is_integer() => true,
        ColumnKind::Year | ColumnKind::Float | ColumnKind::Double => true,
        ColumnKind::Binary => true,
        // Fixed-width text in SQLite sorts chronologically; native types elsewhere.
        ColumnKind::Date | ColumnKind::DateTime | ColumnKind::Timestamp => true,
        // SQLite keeps TIME (with its sign) and DECIMAL as text; MariaDB keeps a DECIMAL of
        // unknown precision as text.
        ColumnKind::Time => !sqlite,
        ColumnKind::Decimal => {
            matches!(target, TargetConfig::Postgres(_))
                || (matches!(target, TargetConfig::Mariadb(_)) && column.precision > 0)
        }
        // Collations differ between engines (and from the source's).
        _ => false,
    }
}

/// A source row: its primary key as the source binds it, and its values.
type SourceRow = (Vec<mysql_async::Value>, Vec<Value>);

/// A row of the source, projected for the target.
struct Expected {
    target_key: Vec<Value>,
    source_key: Vec<mysql_async::Value>,
    /// The source key as the stream's key hash (see [`touched_keys`]).
    key_hash: KeyHash,
    digest: Option<RowDigest>,
}

/// A key that differed, with what was seen on each side the last time.
#[derive(Clone)]
struct Suspect {
    key_bytes: Vec<u8>,
    target_key: Vec<Value>,
    source_key: Vec<mysql_async::Value>,
    key_hash: KeyHash,
    difference: Difference,
    /// The target row's digest when last read (`None`: absent).
    observed: Option<RowDigest>,
}

/// The source side of one table: prepared statement texts and a connection.
struct SourceTable {
    conn: mysql_async::Conn,
    plan: Arc<TablePlan>,
    /// For reading the binlog between re-check reads (see [`touched_keys`]).
    replica: ReplicaConfig,
    query: KeysetQuery,
    /// MariaDB or MySQL: which variable holds the source's position.
    flavor: sluice_binlog::SourceFlavor,
}

impl SourceTable {
    async fn open(
        pool: &mysql_async::Pool,
        replica: ReplicaConfig,
        plan: Arc<TablePlan>,
        chunk_rows: usize,
    ) -> Result<Self, VerifyError> {
        let def = plan.source.clone();
        let table = def.qualified_name();
        let err = |e: mysql_async::Error| VerifyError::Source {
            table: table.clone(),
            message: crate::source_rows::error_text(&e),
        };
        let mut conn = pool.get_conn().await.map_err(err)?;
        // Nothing is held between chunks either.
        for setting in crate::source_rows::READ_SESSION {
            conn.query_drop(setting).await.map_err(err)?;
        }
        let query = KeysetQuery::new(&def, chunk_rows);
        let flavor = crate::source_rows::source_flavor(&mut conn).await.map_err(err)?;
        Ok(SourceTable {
            conn,
            plan,
            replica,
            query,
            flavor,
        })
    }

    fn error(&self, e: mysql_async::Error) -> VerifyError {
        VerifyError::Source {
            table: self.plan.source.qualified_name(),
            message: crate::source_rows::error_text(&e),
        }
    }

    async fn position(&mut self) -> Result<SourcePosition, VerifyError> {
        crate::source_rows::read_position(&mut self.conn, self.flavor)
            .await
            .map_err(|e| self.error(e))?
            .map_err(|message| VerifyError::Source {
                table: self.plan.source.qualified_name(),
                message,
            })
    }

    fn convert_rows(&self, raw: Vec<mysql_async::Row>) -> Result<Vec<SourceRow>, VerifyError> {
        let def = &self.plan.source;
        raw.into_iter()
            .map(|row| {
                convert_row(def, row).map_err(|column| VerifyError::Compare {
                    table: def.qualified_name(),
                    message: format!("source column {column} came back as an unexpected kind of value"),
                })
            })
            .collect()
    }

    /// The next chunk after `after` (source key values), and the position right after it.
    async fn chunk(
        &mut self,
        after: Option<&[mysql_async::Value]>,
    ) -> Result<(Vec<SourceRow>, SourcePosition), VerifyError> {
        let raw = self
            .query
            .chunk(&mut self.conn, after)
            .await
            .map_err(|e| self.error(e))?;
        let high = self.position().await?;
        Ok((self.convert_rows(raw)?, high))
    }

    /// The rows with these source keys (absent keys are left out), and the position after.
    async fn by_keys(
        &mut self,
        keys: &[Vec<mysql_async::Value>],
    ) -> Result<(Vec<SourceRow>, SourcePosition), VerifyError> {
        let mut rows = Vec::new();
        for batch in keys.chunks(KEYS_PER_QUERY) {
            let term = format!(
                "({})",
                self.query
                    .keys
                    .iter()
                    .map(|k| format!("{k} = ?"))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            );
            let sql = format!(
                "SELECT {} FROM {} WHERE {}",
                self.query.columns,
                self.query.from,
                vec![term; batch.len()].join(" OR ")
            );
            let params: Vec<mysql_async::Value> = batch.iter().flatten().cloned().collect();
            let raw: Vec<mysql_async::Row> = self.conn.exec(sql, params).await.map_err(|e| self.error(e))?;
            rows.extend(self.convert_rows(raw)?);
        }
        let high = self.position().await?;
        Ok((rows, high))
    }

    /// The key `chunk_rows` rows after `after` (the end of the next chunk), or `None` when
    /// fewer rows follow. Reads the primary key index only.
    async fn boundary(
        &mut self,
        after: Option<&[mysql_async::Value]>,
        chunk_rows: usize,
    ) -> Result<Option<Vec<mysql_async::Value>>, VerifyError> {
        let order = self.query.keys.join(", ");
        let offset = chunk_rows.saturating_sub(1);
        let row: Option<mysql_async::Row> = match after {
            None => {
                let sql = format!(
                    "SELECT {order} FROM {} ORDER BY {order} LIMIT 1 OFFSET {offset}",
                    self.query.from
                );
                self.conn.exec_first(sql, ()).await
            }
            Some(k) => {
                let (condition, bind_order) = crate::source_rows::after_key(&self.query.keys);
                let sql = format!(
                    "SELECT {order} FROM {} WHERE {condition} ORDER BY {order} LIMIT 1 OFFSET {offset}",
                    self.query.from
                );
                let params: Vec<mysql_async::Value> = bind_order.iter().map(|&i| k[i].clone()).collect();
                self.conn.exec_first(sql, params).await
            }
        }
        .map_err(|e| self.error(e))?;
        Ok(row.map(|r| r.unwrap()))
    }

    /// The `WHERE` condition and parameters of a key range given as sluice values.
    fn range_condition(&self, after: Option<&[Value]>, upto: Option<&[Value]>) -> (String, Vec<mysql_async::Value>) {
        let selection = RowSelection::KeyRange { after, upto, limit: 0 };
        let (condition, binds) = crate::target::selection_condition(&self.query.keys, &selection);
        let params = binds
            .iter()
            .map(|&b| source_param(crate::target::selection_value(&selection, b)))
            .collect();
        (
            crate::target::number_placeholders(&condition, |_| "?".to_owned()),
            params,
        )
    }

    /// The source's SQL checksum of a key range (see [`crate::target::mariadb::checksum_select`])
    /// and the position right after it.
    async fn checksum(
        &mut self,
        after: Option<&[Value]>,
        upto: Option<&[Value]>,
    ) -> Result<(SqlChecksum, SourcePosition), VerifyError> {
        let table = &self.plan.target;
        let columns: Vec<(String, ColumnKind)> =
            table.columns.iter().map(|c| (quote(&c.name), c.source.kind)).collect();
        let (condition, params) = self.range_condition(after, upto);
        let sql = crate::target::mariadb::checksum_select(&columns, &self.query.from, &condition);
        let row: Option<mysql_async::Row> = self.conn.exec_first(sql, params).await.map_err(|e| self.error(e))?;
        let values = row.map(|r| r.unwrap()).unwrap_or_default();
        let get = |i: usize| values.get(i).and_then(crate::target::mariadb::result_u64);
        let checksum = match (get(0), get(1), get(2)) {
            (Some(rows), Some(xor), Some(sum)) => SqlChecksum { rows, xor, sum },
            _ => {
                return Err(VerifyError::Source {
                    table: self.plan.source.qualified_name(),
                    message: "the checksum query returned an unexpected result".into(),
                })
            }
        };
        let high = self.position().await?;
        Ok((checksum, high))
    }

    /// Every source row of a key range, and the position right after.
    async fn range_rows(
        &mut self,
        after: Option<&[Value]>,
        upto: Option<&[Value]>,
    ) -> Result<(Vec<SourceRow>, SourcePosition), VerifyError> {
        let (condition, params) = self.range_condition(after, upto);
        let sql = format!(
            "SELECT {} FROM {} WHERE {condition} ORDER BY {}",
            self.query.columns,
            self.query.from,
            self.query.keys.join(", ")
        );
        let raw: Vec<mysql_async::Row> = self.conn.exec(sql, params).await.map_err(|e| self.error(e))?;
        let high = self.position().await?;
        Ok((self.convert_rows(raw)?, high))
    }

    /// Source rows as the target should hold them, by canonical target key.
    fn expect(&self, rows: Vec<SourceRow>, scratch: &mut Vec<u8>) -> Result<HashMap<Vec<u8>, Expected>, VerifyError> {
        let plan = &self.plan;
        let table = &plan.target;
        let mut expected = HashMap::with_capacity(rows.len());
        let name = plan.source.qualified_name();
        for (source_key, row) in rows {
            let key_hash = crate::apply::schedule::key_hash(&name, &plan.source.primary_key, &row);
            let passes = plan.passes(&row);
            let projected = plan.project(row);
            let key_bytes = canonical::encode_key(table, &projected).map_err(|e| compare_err(table, e))?;
            let digest = if passes {
                Some(canonical::row_digest(table, &projected, scratch).map_err(|e| compare_err(table, e))?)
            } else {
                None
            };
            let target_key = table.key.iter().map(|&k| projected[k].clone()).collect();
            expected.insert(
                key_bytes,
                Expected {
                    target_key,
                    source_key,
                    key_hash,
                    digest,
                },
            );
        }
        Ok(expected)
    }
}

fn compare_err(table: &TargetTable, e: impl std::fmt::Display) -> VerifyError {
    VerifyError::Compare {
        table: table.name.clone(),
        message: e.to_string(),
    }
}

/// Every target row with a key above `after` and at most `upto`, read `limit` rows at a time
/// (the target may hold more rows in the range than the source, when it holds extra ones).
fn read_target_range(
    target: &mut dyn Target,
    table: &Arc<TargetTable>,
    mut after: Option<Vec<Value>>,
    upto: Option<&[Value]>,
    limit: usize,
) -> Result<Vec<Vec<Value>>, VerifyError> {
    let mut all = Vec::new();
    loop {
        let batch = target.read_rows(
            table,
            RowSelection::KeyRange {
                after: after.as_deref(),
                upto,
                limit,
            },
        )?;
        let more = batch.len() == limit;
        if let Some(last) = batch.last() {
            after = Some(table.key.iter().map(|&k| last[k].clone()).collect());
        }
        all.extend(batch);
        if !more {
            return Ok(all);
        }
    }
}

/// Row digests by canonical key.
type Digests = HashMap<Vec<u8>, RowDigest>;

/// The target's rows by canonical key, as digests.
fn digests(
    table: &TargetTable,
    rows: &[Vec<Value>],
    scratch: &mut Vec<u8>,
) -> Result<HashMap<Vec<u8>, RowDigest>, VerifyError> {
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        let key = canonical::encode_key(table, row).map_err(|e| compare_err(table, e))?;
        out.insert(
            key,
            canonical::row_digest(table, row, scratch).map_err(|e| compare_err(table, e))?,
        );
    }
    Ok(out)
}

/// A sluice value as a parameter for the source (MariaDB/MySQL), whose comparisons convert
/// strings to the column's type, so text forms read back from a target bind as strings.
fn source_param(value: &Value) -> mysql_async::Value {
    use mysql_async::Value as M;
    match value {
        Value::Null => M::NULL,
        Value::Int(v) => M::Int(*v),
        Value::UInt(v) | Value::Bit(v) => M::UInt(*v),
        Value::Year(v) => M::UInt(u64::from(*v)),
        Value::Float(v) => M::Float(*v),
        Value::Double(v) => M::Double(*v),
        Value::Bytes(b) => M::Bytes(b.clone()),
        Value::Date { year, month, day } => M::Date(*year, *month, *day, 0, 0, 0, 0),
        Value::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
        } => M::Date(*year, *month, *day, *hour, *minute, *second, *micros),
        Value::Time {
            negative,
            hours,
            minutes,
            seconds,
            micros,
        } => M::Time(*negative, hours / 24, (hours % 24) as u8, *minutes, *seconds, *micros),
        other => M::Bytes(other.to_string().into_bytes()),
    }
}

/// A target key as JSON text, the same whichever form the target handed the values back in.
fn key_text(table: &TargetTable, key: &[Value]) -> String {
    let parts: Vec<serde_json::Value> = key
        .iter()
        .zip(&table.key)
        .map(|(v, &k)| canonical::typed(&table.columns[k].source, v).unwrap_or_else(|| v.clone()))
        .map(|v| match v {
            Value::Null => serde_json::Value::Null,
            Value::Int(i) => serde_json::json!(i),
            Value::UInt(u) | Value::Bit(u) => serde_json::json!(u),
            Value::Bytes(b) => match std::str::from_utf8(&b) {
                Ok(s) => serde_json::json!(s),
                Err(_) => serde_json::json!({ "hex": hex::encode(b) }),
            },
            other => serde_json::json!(other.to_string()),
        })
        .collect();
    serde_json::Value::Array(parts).to_string()
}

/// The stream's key hash of the source row a target key stands for (untransformed keys only:
/// target key values are the source's, possibly in the target's stored form).
fn source_key_hash(plan: &TablePlan, target_key: &[Value]) -> KeyHash {
    let def = &plan.source;
    let mut row = vec![Value::Null; def.columns.len()];
    for (i, &k) in plan.target.key.iter().enumerate() {
        let column = plan.source_columns[k];
        row[column] = canonical::typed(&def.columns[column], &target_key[i]).unwrap_or_else(|| target_key[i].clone());
    }
    crate::apply::schedule::key_hash(&def.qualified_name(), &def.primary_key, &row)
}

/// The keys of `plan`'s source table that transactions after `from`, up to `to`, changed, read
/// from the source's binlog (as the stream sees them). `None` when the binlog could not be read
/// in time: then nothing can be ruled out.
async fn touched_keys(
    replica: &ReplicaConfig,
    plan: &TablePlan,
    from: &SourcePosition,
    to: &SourcePosition,
) -> Option<HashSet<KeyHash>> {
    let mut touched = HashSet::new();
    if from.covers(to) {
        return Some(touched);
    }
    let def = &plan.source;
    let name = def.qualified_name();
    let read = async {
        let mut stream = BinlogStream::connect_from(replica, from.dump_start()).await.ok()?;
        let mut decoder = EventDecoder::new();
        let mut table_id = None;
        let mut seen = from.clone();
        loop {
            let raw = stream.next_event().await.ok()?;
            let event = decoder.decode(&raw).ok()?;
            if let Some(gtid) = event.body.source_gtid() {
                if !to.contains(gtid) {
                    return Some(());
                }
                seen.advance(gtid);
                continue;
            }
            match event.body {
                EventBody::TableMap(map) if map.schema == def.schema && map.table == def.name => {
                    table_id = Some(map.table_id);
                }
                EventBody::Rows(rows) if Some(rows.table_id) == table_id => {
                    for change in rows.rows(def).ok()? {
                        match change.ok()? {
                            RowChange::Insert(r) | RowChange::Delete(r) => {
                                touched.insert(crate::apply::schedule::key_hash(&name, &def.primary_key, &r));
                            }
                            RowChange::Update { before, after } => {
                                touched.insert(crate::apply::schedule::key_hash(&name, &def.primary_key, &before));
                                touched.insert(crate::apply::schedule::key_hash(&name, &def.primary_key, &after));
                            }
                        }
                    }
                }
                EventBody::Xid { .. } if seen.covers(to) => return Some(()),
                EventBody::Query { sql, schema, .. }
                    if seen.covers(to)
                        && crate::stream::ddl::classify(&sql, &schema) == crate::stream::ddl::Statement::Commit =>
                {
                    return Some(())
                }
                _ => {}
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), read).await {
        Ok(Some(())) => Some(touched),
        _ => None,
    }
}

/// The replication settings verify reads the binlog with. Its server id differs from
/// `sluice run`'s (the high bit set), because a server drops a replica connection when another
/// registers with the same id.
fn replica_config(config: &Config) -> Result<ReplicaConfig, VerifyError> {
    let password = config.source_password().map_err(RunError::from)?;
    let mut replica = crate::stream::reader::replica_config(config, &password);
    replica.server_id = config.source.server_id | 0x8000_0000;
    Ok(replica)
}

/// Runs `target_work` on a thread of its own while `source_work` (source queries) runs on this
/// one, so the target and the source servers work at the same time.
fn in_parallel<T: Send, S>(
    target_work: impl FnOnce() -> T + Send,
    source_work: impl std::future::Future<Output = S>,
) -> (T, S) {
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let target = scope.spawn(target_work);
            let source = tokio::runtime::Handle::current().block_on(source_work);
            (
                target.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                source,
            )
        })
    })
}

/// Waits until the target's low-water mark covers `position` (polling; the target is a
/// blocking client); returns the checkpoint.
fn wait_for_target_blocking(
    target: &mut dyn Target,
    position: &SourcePosition,
    timeout: Duration,
) -> Result<Checkpoint, VerifyError> {
    let started = Instant::now();
    loop {
        let checkpoint = target.load_checkpoint()?.unwrap_or_default();
        if checkpoint.position.covers(position) {
            return Ok(checkpoint);
        }
        if started.elapsed() >= timeout {
            return Err(VerifyError::NotCaughtUp {
                checkpoint: checkpoint.position.to_string(),
                position: position.to_string(),
                seconds: timeout.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the target's checkpoint covers `position`; returns the checkpoint.
async fn wait_for_target(
    target: &mut dyn Target,
    position: &SourcePosition,
    timeout: Duration,
) -> Result<Checkpoint, VerifyError> {
    tokio::task::block_in_place(|| wait_for_target_blocking(target, position, timeout))
}

/// Verifies every replicated table (or those `options.table` selects).
pub async fn verify(config: &Config, options: &VerifyOptions) -> Result<Vec<TableVerification>, VerifyError> {
    let pattern = match &options.table {
        Some(p) => Some(
            globset::Glob::new(p)
                .map_err(|e| VerifyError::BadPattern(e.to_string()))?
                .compile_matcher(),
        ),
        None => None,
    };
    if config.log_source().is_some() {
        return Err(RunError::from(crate::config::ConfigError::Invalid {
            key: "source.kind".into(),
            message: "`sluice verify` compares an edge with the source database, and this config's source is the \
                      fan-out log: run it with the publisher's config whose [target] is this edge's \
                      (docs/fan-out.md, \"Verifying an edge\")"
                .into(),
        })
        .into());
    }
    let pool = source_pool(config).map_err(RunError::from)?;
    let plans = crate::pipeline::current_plans(&pool, config).await?;
    let mut target = open_target(config)?;
    // Held columns are not at the edge: compared as `sluice run` replicates the table.
    let plans = tokio::task::block_in_place(|| crate::pipeline::hold_new_columns(config, target.as_mut(), plans))?;
    let plans: Vec<Arc<TablePlan>> = plans
        .into_iter()
        .filter(|p| {
            pattern
                .as_ref()
                .is_none_or(|m| m.is_match(&p.target.name) || m.is_match(&p.target.source_name))
        })
        .collect();
    match (&options.table, plans.is_empty()) {
        (Some(p), true) => return Err(VerifyError::NoSuchTable(p.clone())),
        // Comparing nothing proves nothing: never an exit status of success.
        (None, true) => return Err(VerifyError::NothingToCompare),
        _ => {}
    }
    let checkpoint = tokio::task::block_in_place(|| target.load_checkpoint())?;
    let progress = tokio::task::block_in_place(|| target.load_backfill())?;
    let mut reports = Vec::new();
    options
        .progress
        .tables_total
        .store(plans.len(), std::sync::atomic::Ordering::Relaxed);
    for plan in plans {
        options.progress.start_table(&plan.target.name);
        let mut report = TableVerification::new(&plan);
        let not_ready = if checkpoint.is_none() {
            Some("the target has no checkpoint yet: `sluice run` has not started replicating into it".to_owned())
        } else if !config.backfill.enabled {
            None
        } else {
            match progress.iter().find(|p| p.table == plan.target.name) {
                Some(p) if p.done => None,
                Some(p) => Some(format!(
                    "backfill is copying the table ({} rows so far); verify it once it is ready",
                    p.rows_copied
                )),
                None => Some("backfill has not started on this table yet".to_owned()),
            }
        };
        if let Some(reason) = not_ready {
            report.outcome = Outcome::NotReady;
            report.note = Some(reason);
            reports.push(report);
            options
                .progress
                .tables_done
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        }
        if !config.backfill.enabled {
            report.note = Some(
                "backfill is disabled: rows that existed before replication started are reported missing unless copied some other way".into(),
            );
        }
        let started = Instant::now();
        verify_table(&pool, target.as_mut(), config, plan, options, &mut report).await?;
        report.seconds = started.elapsed().as_secs_f64();
        reports.push(report);
        options
            .progress
            .tables_done
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    pool.disconnect().await.ok();
    Ok(reports)
}

async fn verify_table(
    pool: &mysql_async::Pool,
    target: &mut dyn Target,
    config: &Config,
    plan: Arc<TablePlan>,
    options: &VerifyOptions,
    report: &mut TableVerification,
) -> Result<(), VerifyError> {
    let table = plan.target.clone();
    let key_transformed = table.key.iter().any(|&k| plan.transforms[k].is_some());
    let range = !key_transformed
        && table
            .key
            .iter()
            .all(|&k| key_order_agrees(&table.columns[k].source, &config.target));
    report.method = if range { "key_range" } else { "key_list" };
    let mut source = SourceTable::open(pool, replica_config(config)?, plan.clone(), options.chunk_rows).await?;
    let mut scratch = Vec::with_capacity(256);
    let mut suspects: Vec<Suspect> = Vec::new();
    // MariaDB to MariaDB with nothing filtered or transformed: both servers compute each
    // chunk's checksum themselves; only chunks whose checksums differ are compared row by row.
    let sql_checksums = range
        && matches!(config.target, TargetConfig::Mariadb(_))
        && plan.row_filter.is_none()
        && plan.transforms.iter().all(Option::is_none);
    if sql_checksums {
        report.method = "sql_checksum";
        sql_checksum_pass(
            &mut source,
            target,
            &table,
            options,
            report,
            &mut suspects,
            &mut scratch,
        )
        .await?;
        return finish_table(
            &mut source,
            target,
            &table,
            options,
            report,
            suspects,
            &mut scratch,
            false,
        )
        .await;
    }
    // Chunk N's target side (wait for the target to catch up, read, digest) runs on a thread
    // of its own while chunk N+1 is read from the source, so both servers work at once.
    let first = source.chunk(None).await?;
    let mut next = Some(prepare_chunk(&mut source, first, options.chunk_rows, &mut scratch)?);
    // Key range: the target key the previous chunk ended at.
    let mut after_target: Option<Vec<Value>> = None;
    while let Some(chunk) = next.take() {
        let PreparedChunk {
            expected,
            high,
            done,
            after_source,
            upto,
        } = chunk;
        report.chunks += 1;
        let rows = expected.values().filter(|e| e.digest.is_some()).count() as u64;
        report.source_rows += rows;
        options.progress.add_rows(rows);
        let target_keys: Vec<Vec<Value>> = if range {
            Vec::new()
        } else {
            expected
                .values()
                .filter(|e| e.digest.is_some())
                .map(|e| e.target_key.clone())
                .collect()
        };
        let timeout = options.catch_up_timeout;
        let limit = options.chunk_rows + 1;
        let chunk_rows = options.chunk_rows;
        let (target_side, source_side) = in_parallel(
            || -> Result<(Vec<Vec<Value>>, Digests), VerifyError> {
                wait_for_target_blocking(target, &high, timeout)?;
                let mut all = Vec::new();
                if range {
                    all = read_target_range(target, &table, after_target.clone(), upto.as_deref(), limit)?;
                } else {
                    for batch in target_keys.chunks(KEYS_PER_QUERY) {
                        all.extend(target.read_rows(&table, RowSelection::Keys(batch))?);
                    }
                }
                let mut scratch = Vec::with_capacity(256);
                let found = digests(&table, &all, &mut scratch)?;
                Ok((all, found))
            },
            // The next chunk is read and digested here meanwhile.
            async {
                if done {
                    Ok(None)
                } else {
                    let read = source.chunk(after_source.as_deref()).await?;
                    prepare_chunk(&mut source, read, chunk_rows, &mut scratch).map(Some)
                }
            },
        );
        let (target_rows, found) = target_side?;
        next = source_side?;
        if range {
            after_target = upto.clone();
        }
        report.target_rows += target_rows.len() as u64;
        // With a key list every target row read has an expected key, so only missing and
        // different rows can turn up here; extra ones come from `extra_rows_pass`.
        collect_suspects_with(&plan, &table, &expected, &target_rows, &found, &mut suspects)?;
    }
    if !range && key_transformed {
        report.note = Some(
            "the key is hmac-transformed, so extra target rows are found by counting only (see target_rows)".into(),
        );
    } else if !range {
        extra_rows_pass(&mut source, target, &table, options, &mut suspects, &mut scratch).await?;
    }
    finish_table(
        &mut source,
        target,
        &table,
        options,
        report,
        suspects,
        &mut scratch,
        key_transformed,
    )
    .await
}

/// A source chunk as the row comparison needs it.
struct PreparedChunk {
    expected: HashMap<Vec<u8>, Expected>,
    /// The source position right after the chunk was read.
    high: SourcePosition,
    /// No rows follow.
    done: bool,
    /// The source key of the chunk's last row (where the next chunk starts).
    after_source: Option<Vec<mysql_async::Value>>,
    /// The target key of the chunk's last row; `None` for the last chunk (no upper bound).
    upto: Option<Vec<Value>>,
}

fn prepare_chunk(
    source: &mut SourceTable,
    (rows, high): (Vec<SourceRow>, SourcePosition),
    chunk_rows: usize,
    scratch: &mut Vec<u8>,
) -> Result<PreparedChunk, VerifyError> {
    let plan = source.plan.clone();
    let done = rows.len() < chunk_rows;
    let after_source = rows.last().map(|(key, _)| key.clone());
    let upto = if done {
        None
    } else {
        rows.last().map(|(_, row)| {
            plan.target
                .key
                .iter()
                .map(|&k| row[plan.source_columns[k]].clone())
                .collect()
        })
    };
    let expected = source.expect(rows, scratch)?;
    Ok(PreparedChunk {
        expected,
        high,
        done,
        after_source,
        upto,
    })
}

/// Re-checks the suspects, repairs if asked, and fills in the report.
#[allow(clippy::too_many_arguments)]
async fn finish_table(
    source: &mut SourceTable,
    target: &mut dyn Target,
    table: &Arc<TargetTable>,
    options: &VerifyOptions,
    report: &mut TableVerification,
    suspects: Vec<Suspect>,
    scratch: &mut Vec<u8>,
    key_transformed: bool,
) -> Result<(), VerifyError> {
    report.suspects = suspects.len() as u64;
    let mut confirmed = Vec::new();
    let mut pending = suspects;
    for round in 0..options.rechecks.max(1) {
        if pending.is_empty() {
            break;
        }
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(100 * u64::from(round))).await;
        }
        let result = recheck(source, target, table, options, pending, scratch).await?;
        confirmed.extend(result.confirmed);
        pending = result.unsettled;
    }
    report.unsettled = pending.len() as u64;
    if !pending.is_empty() {
        report.note = Some(format!(
            "{} key(s) changed on the source during every re-check and could not be compared; run verify again when they are quieter",
            pending.len()
        ));
    }
    if options.repair && !confirmed.is_empty() {
        let repaired = repair(source, target, table, &confirmed, scratch).await?;
        report.repaired = repaired;
        // Whatever the repair skipped (rewritten meanwhile) or failed to fix shows up here.
        let result = recheck(source, target, table, options, confirmed, scratch).await?;
        confirmed = result.confirmed;
        report.unsettled += result.unsettled.len() as u64;
    }
    for s in &confirmed {
        match s.difference {
            Difference::Missing => report.missing += 1,
            Difference::Extra => report.extra += 1,
            Difference::Different => report.different += 1,
        }
        if report.keys.len() < REPORTED_KEYS {
            report.keys.push(DifferingKey {
                key: key_text(table, &s.target_key),
                difference: s.difference,
            });
        }
    }
    report.outcome = if !confirmed.is_empty() {
        Outcome::Differs
    } else if report.repaired > 0 {
        Outcome::Repaired
    } else {
        Outcome::Equal
    };
    if confirmed.is_empty() && key_transformed && report.source_rows != report.target_rows {
        // Counting is all the transformed key allows; a count difference that survives is
        // reported as differing without keys.
        report.outcome = Outcome::Differs;
        report.note = Some(format!(
            "{} source rows but {} target rows with the source's keys; extra target rows cannot be named because the key is hmac-transformed",
            report.source_rows, report.target_rows
        ));
    }
    Ok(())
}

/// The SQL checksum pass: chunk boundaries from the source's key index, each chunk's checksum
/// computed by the source and (once it has caught up) by the target; chunks that differ are
/// compared row by row, which names the keys.
async fn sql_checksum_pass(
    source: &mut SourceTable,
    target: &mut dyn Target,
    table: &Arc<TargetTable>,
    options: &VerifyOptions,
    report: &mut TableVerification,
    suspects: &mut Vec<Suspect>,
    scratch: &mut Vec<u8>,
) -> Result<(), VerifyError> {
    let plan = source.plan.clone();
    // Chunks grow until one takes about this long on the source (as pt-table-checksum's
    // --chunk-time does), up to a bound that keeps a row-by-row fallback small.
    const CHUNK_TIME: Duration = Duration::from_millis(250);
    const MAX_CHUNK_ROWS: usize = 200_000;
    let mut size = options.chunk_rows.max(1);
    // Chunk N's target checksum runs on a thread of its own while chunk N+1's is computed by
    // the source, so both servers work at once.
    let mut next = Some(sql_source_chunk(source, None, None, size).await?);
    while let Some(chunk) = next.take() {
        report.chunks += 1;
        report.source_rows += chunk.checksum.rows;
        options.progress.add_rows(chunk.checksum.rows);
        if chunk.took < CHUNK_TIME / 2 && chunk.rows_asked == size {
            size = (size * 2).min(MAX_CHUNK_ROWS.max(options.chunk_rows));
        }
        let timeout = options.catch_up_timeout;
        let (theirs, following) = in_parallel(
            || -> Result<Option<SqlChecksum>, VerifyError> {
                wait_for_target_blocking(target, &chunk.high, timeout)?;
                Ok(target.sql_checksum(table, chunk.after.as_deref(), chunk.upto.as_deref())?)
            },
            async {
                match &chunk.boundary {
                    Some(b) => sql_source_chunk(source, Some(b.clone()), chunk.upto.clone(), size)
                        .await
                        .map(Some),
                    None => Ok(None),
                }
            },
        );
        let theirs = theirs?;
        next = following?;
        match theirs {
            Some(theirs) if theirs == chunk.checksum => report.target_rows += theirs.rows,
            _ => {
                report.checksum_mismatches += 1;
                // Row by row for this chunk; lag is sorted out by the re-checks.
                let (rows, high) = source.range_rows(chunk.after.as_deref(), chunk.upto.as_deref()).await?;
                let expected = source.expect(rows, scratch)?;
                wait_for_target(target, &high, options.catch_up_timeout).await?;
                let target_rows = tokio::task::block_in_place(|| {
                    read_target_range(
                        target,
                        table,
                        chunk.after.clone(),
                        chunk.upto.as_deref(),
                        options.chunk_rows + 1,
                    )
                })?;
                report.target_rows += target_rows.len() as u64;
                collect_suspects(&plan, table, &expected, &target_rows, suspects, scratch)?;
            }
        }
    }
    Ok(())
}

/// One chunk of the SQL checksum pass, as the source saw it.
struct SqlChunk {
    /// Keys above `after` and at most `upto` (`None`: unbounded).
    after: Option<Vec<Value>>,
    upto: Option<Vec<Value>>,
    /// `upto` as the source binds it; `None` for the last chunk.
    boundary: Option<Vec<mysql_async::Value>>,
    checksum: SqlChecksum,
    /// The source position right after the checksum.
    high: SourcePosition,
    rows_asked: usize,
    took: Duration,
}

/// Finds the next chunk's end on the source and has the source checksum it.
async fn sql_source_chunk(
    source: &mut SourceTable,
    after_source: Option<Vec<mysql_async::Value>>,
    after: Option<Vec<Value>>,
    size: usize,
) -> Result<SqlChunk, VerifyError> {
    let started = Instant::now();
    let boundary = source.boundary(after_source.as_deref(), size).await?;
    let def = source.plan.source.clone();
    // The boundary key (binary protocol) as sluice values, in key order.
    let upto = boundary
        .as_deref()
        .map(|key| {
            key.iter()
                .zip(&def.primary_key)
                .map(|(v, &c)| {
                    convert(v.clone(), &def.columns[c]).ok_or_else(|| VerifyError::Compare {
                        table: source.plan.target.name.clone(),
                        message: format!(
                            "key column {} came back as an unexpected kind of value",
                            def.columns[c].name
                        ),
                    })
                })
                .collect::<Result<Vec<Value>, VerifyError>>()
        })
        .transpose()?;
    let (checksum, high) = source.checksum(after.as_deref(), upto.as_deref()).await?;
    Ok(SqlChunk {
        after,
        upto,
        boundary,
        checksum,
        high,
        rows_asked: size,
        took: started.elapsed(),
    })
}

/// Suspects of one chunk compared row by row (key range): expected rows that the target lacks
/// or holds differently, and target rows the source lacks.
fn collect_suspects(
    plan: &TablePlan,
    table: &Arc<TargetTable>,
    expected: &HashMap<Vec<u8>, Expected>,
    target_rows: &[Vec<Value>],
    suspects: &mut Vec<Suspect>,
    scratch: &mut Vec<u8>,
) -> Result<(), VerifyError> {
    let found = digests(table, target_rows, scratch)?;
    collect_suspects_with(plan, table, expected, target_rows, &found, suspects)
}

/// [`collect_suspects`] with the target rows' digests already computed.
fn collect_suspects_with(
    plan: &TablePlan,
    table: &Arc<TargetTable>,
    expected: &HashMap<Vec<u8>, Expected>,
    target_rows: &[Vec<Value>],
    found: &Digests,
    suspects: &mut Vec<Suspect>,
) -> Result<(), VerifyError> {
    for (key_bytes, e) in expected {
        let got = found.get(key_bytes).copied();
        if got != e.digest {
            suspects.push(Suspect {
                key_bytes: key_bytes.clone(),
                target_key: e.target_key.clone(),
                source_key: e.source_key.clone(),
                key_hash: e.key_hash,
                difference: classify(e.digest, got),
                observed: got,
            });
        }
    }
    for row in target_rows {
        let key_bytes = canonical::encode_key(table, row).map_err(|e| compare_err(table, e))?;
        if !expected.contains_key(&key_bytes) {
            let target_key: Vec<Value> = table.key.iter().map(|&k| row[k].clone()).collect();
            suspects.push(Suspect {
                observed: found.get(&key_bytes).copied(),
                key_bytes,
                key_hash: source_key_hash(plan, &target_key),
                source_key: target_key.iter().map(source_param).collect(),
                target_key,
                difference: Difference::Extra,
            });
        }
    }
    Ok(())
}

fn classify(expected: Option<RowDigest>, got: Option<RowDigest>) -> Difference {
    match (expected, got) {
        (Some(_), None) => Difference::Missing,
        (None, Some(_)) => Difference::Extra,
        _ => Difference::Different,
    }
}

/// Key-list method, second pass: every target row whose key the source lacks (or filters
/// out) is a suspect.
async fn extra_rows_pass(
    source: &mut SourceTable,
    target: &mut dyn Target,
    table: &Arc<TargetTable>,
    options: &VerifyOptions,
    suspects: &mut Vec<Suspect>,
    scratch: &mut Vec<u8>,
) -> Result<(), VerifyError> {
    let known: HashSet<Vec<u8>> = suspects.iter().map(|s| s.key_bytes.clone()).collect();
    let mut after: Option<Vec<Value>> = None;
    loop {
        let limit = options.chunk_rows.min(KEYS_PER_QUERY * 4);
        let rows = tokio::task::block_in_place(|| {
            target.read_rows(
                table,
                RowSelection::KeyRange {
                    after: after.as_deref(),
                    upto: None,
                    limit,
                },
            )
        })?;
        let Some(last) = rows.last() else { break };
        after = Some(table.key.iter().map(|&k| last[k].clone()).collect());
        let found = digests(table, &rows, scratch)?;
        let keys: Vec<Vec<mysql_async::Value>> = rows
            .iter()
            .map(|r| table.key.iter().map(|&k| source_param(&r[k])).collect())
            .collect();
        let (source_rows, _) = source.by_keys(&keys).await?;
        let expected = source.expect(source_rows, scratch)?;
        for row in &rows {
            let key_bytes = canonical::encode_key(table, row).map_err(|e| compare_err(table, e))?;
            let passes = expected.get(&key_bytes).is_some_and(|e| e.digest.is_some());
            if !passes && !known.contains(&key_bytes) {
                let target_key: Vec<Value> = table.key.iter().map(|&k| row[k].clone()).collect();
                suspects.push(Suspect {
                    source_key: target_key.iter().map(source_param).collect(),
                    key_hash: source_key_hash(&source.plan, &target_key),
                    target_key,
                    observed: found.get(&key_bytes).copied(),
                    key_bytes,
                    difference: Difference::Extra,
                });
            }
        }
        if rows.len() < limit {
            break;
        }
    }
    Ok(())
}

/// What one re-check round made of the suspects.
struct Recheck {
    /// Differ, and the source row was the same before and after the target read.
    confirmed: Vec<Suspect>,
    /// The source row changed while the target was read: try again.
    unsettled: Vec<Suspect>,
}

/// Re-reads the suspects: the source, then the target once it has caught up with that read,
/// then the source again. The target's rows reflect some source position between the two
/// source reads, so when a source row is the same in both reads the target must hold exactly
/// it, and a difference is real, not lag. (A row changed and changed back between the reads
/// could still fool this; the next round would see it.)
async fn recheck(
    source: &mut SourceTable,
    target: &mut dyn Target,
    table: &Arc<TargetTable>,
    options: &VerifyOptions,
    suspects: Vec<Suspect>,
    scratch: &mut Vec<u8>,
) -> Result<Recheck, VerifyError> {
    let keys: Vec<Vec<mysql_async::Value>> = suspects.iter().map(|s| s.source_key.clone()).collect();
    let low = source.position().await?;
    let (rows, high) = source.by_keys(&keys).await?;
    let before = source.expect(rows, scratch)?;
    wait_for_target(target, &high, options.catch_up_timeout).await?;
    let target_keys: Vec<Vec<Value>> = suspects.iter().map(|s| s.target_key.clone()).collect();
    let mut target_rows = Vec::new();
    for batch in target_keys.chunks(KEYS_PER_QUERY) {
        target_rows.extend(tokio::task::block_in_place(|| {
            target.read_rows(table, RowSelection::Keys(batch))
        })?);
    }
    let found = digests(table, &target_rows, scratch)?;
    let (rows, high_after) = source.by_keys(&keys).await?;
    let after = source.expect(rows, scratch)?;
    // Keys any transaction changed from before the first source read to after the second:
    // for those, equal reads may still hide a change and a change back.
    let touched = touched_keys(&source.replica, &source.plan, &low, &high_after).await;
    let mut result = Recheck {
        confirmed: Vec::new(),
        unsettled: Vec::new(),
    };
    for mut s in suspects {
        let want = before.get(&s.key_bytes).and_then(|e| e.digest);
        let untouched = touched.as_ref().is_some_and(|t| !t.contains(&s.key_hash));
        let settled = untouched && after.get(&s.key_bytes).and_then(|e| e.digest) == want;
        let got = found.get(&s.key_bytes).copied();
        s.observed = got;
        if want == got && settled {
            continue;
        }
        s.difference = classify(want, got);
        if settled {
            result.confirmed.push(s);
        } else {
            result.unsettled.push(s);
        }
    }
    Ok(result)
}

/// Rewrites the confirmed differing rows from the source's current rows. Returns how many
/// rows were rewritten.
async fn repair(
    source: &mut SourceTable,
    target: &mut dyn Target,
    table: &Arc<TargetTable>,
    suspects: &[Suspect],
    scratch: &mut Vec<u8>,
) -> Result<u64, VerifyError> {
    let plan = source.plan.clone();
    let mut repaired = 0;
    for batch in suspects.chunks(KEYS_PER_QUERY) {
        let keys: Vec<Vec<mysql_async::Value>> = batch.iter().map(|s| s.source_key.clone()).collect();
        let (rows, _) = source.by_keys(&keys).await?;
        let mut current: HashMap<Vec<u8>, Vec<Value>> = HashMap::new();
        for (_, row) in rows {
            if plan.passes(&row) {
                let projected = plan.project(row);
                let kb = canonical::encode_key(table, &projected).map_err(|e| compare_err(table, e))?;
                current.insert(kb, projected);
            }
        }
        let target_keys: Vec<Vec<Value>> = batch.iter().map(|s| s.target_key.clone()).collect();
        let result: Result<u64, VerifyError> = tokio::task::block_in_place(|| {
            target.begin()?;
            // Locked until commit: a row the stream rewrites from here on waits for us, and a
            // row it rewrote since the check no longer matches what we observed.
            let locked = target.read_rows(table, RowSelection::Keys(&target_keys))?;
            let now = digests(table, &locked, scratch)?;
            let mut n = 0;
            for s in batch {
                if now.get(&s.key_bytes).copied() != s.observed {
                    continue;
                }
                let op = match current.remove(&s.key_bytes) {
                    Some(row) => RowOp::Insert {
                        table: table.clone(),
                        row,
                    },
                    None => {
                        // The key as read back from the target may be in its stored form
                        // (temporal text, say); the write path takes typed values.
                        let mut row = vec![Value::Null; table.columns.len()];
                        for (i, &k) in table.key.iter().enumerate() {
                            let column = &table.columns[k].source;
                            row[k] = canonical::typed(column, &s.target_key[i]).ok_or_else(|| {
                                compare_err(
                                    table,
                                    format!("key column {} has an unreadable stored value", column.name),
                                )
                            })?;
                        }
                        RowOp::Delete {
                            table: table.clone(),
                            row,
                        }
                    }
                };
                target.apply(&op)?;
                n += 1;
            }
            target.commit_without_checkpoint()?;
            Ok(n)
        });
        match result {
            Ok(n) => repaired += n,
            Err(e) => {
                let _ = tokio::task::block_in_place(|| target.rollback());
                return Err(e);
            }
        }
    }
    Ok(repaired)
}
