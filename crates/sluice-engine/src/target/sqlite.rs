//! SQLite target: replicates into one SQLite database file.
//!
//! # Design
//!
//! * **WAL journal, `synchronous=NORMAL`.** In WAL mode readers never block the writer and
//!   the writer never blocks readers: an application reading the edge database always sees
//!   the last committed target transaction while sluice writes the next one. With
//!   `synchronous=NORMAL` a commit is not fsynced, so a power loss may drop the most recent
//!   commits, but never leaves a torn one; since the checkpoint is committed with the rows it
//!   covers, a dropped commit drops its checkpoint too and sluice simply re-applies those
//!   source transactions. A `busy_timeout` covers the short moments where another
//!   connection holds the write lock (or runs a WAL checkpoint).
//! * **STRICT tables.** Every target table is `STRICT`, so SQLite stores exactly the storage
//!   class sluice binds (no affinity conversions) and rejects anything else. The column
//!   types are listed in `docs/type-mapping.md`. BIGINT UNSIGNED (and BIT whose width may
//!   reach 64 bits) uses an `ANY` column: in a STRICT table `ANY` keeps the bound storage
//!   class as is, so values up to `i64::MAX` are INTEGERs and larger ones are decimal TEXT,
//!   both exact. (An `INTEGER` column cannot hold them, and INTEGER/NUMERIC *affinity* in a
//!   non-strict table would turn such text into a REAL, i.e. round it to 53 bits.)
//! * **Row identity is the key.** Each table has `PRIMARY KEY (key columns)`. A table whose
//!   key is a single INTEGER column is an ordinary rowid table: its key is then an alias of
//!   the rowid, so the table is one B-tree searched by the key, and large rows don't matter.
//!   Other keys (composite, text, `ANY`) get `WITHOUT ROWID` when the row is provably small
//!   (every column bounded and at most ~1/20 of a page): the table is then one B-tree
//!   clustered on the key, instead of a rowid table plus a separate key index that every
//!   keyed write has to search and maintain. Wide rows (unbounded TEXT/BLOB/JSON, long
//!   VARCHARs) stay rowid tables, because SQLite stores `WITHOUT ROWID` rows inside the
//!   B-tree's interior structure and performs poorly with large rows.
//! * **Upserts.** An insert is `INSERT … ON CONFLICT (key) DO UPDATE SET …`, so re-applying
//!   an insert (or inserting over a row that is already there) replaces the row instead of
//!   failing; unlike `INSERT OR REPLACE` it updates in place rather than deleting and
//!   re-inserting. An update whose key is unchanged is an `UPDATE … WHERE key`, falling back to
//!   the upsert when no row matched (the target missed the row: write it whole); an update that
//!   changes the key deletes the old key and upserts the new row. A delete of a missing row
//!   changes nothing. Statements are built once per table and prepared through rusqlite's
//!   statement cache; values are always bound as parameters and identifiers always quoted.
//! * **Checkpoint with the rows.** [`Target::begin`] is `BEGIN IMMEDIATE` (take the write lock
//!   up front, so the transaction can't fail half-way with `SQLITE_BUSY` on lock upgrade);
//!   [`Target::commit`] upserts the single row of `_sluice_checkpoint` and `COMMIT`s, so the
//!   stored position always names exactly the last source transaction whose rows are
//!   present. `_sluice_backfill` holds each table's backfill progress, upserted by
//!   [`Target::record_backfill`] inside the transaction of the rows it covers.
//!   `_sluice_tables` records, per target table, the source table and a JSON description of
//!   the columns and types sluice created it with (for schema-change detection later).
//! * **No partial state.** A failed write rolls the whole target transaction back at once;
//!   the transaction is then marked failed, and [`Target::commit`] refuses to commit it.
//!   Closing the connection with an open transaction also rolls it back.
//!
//! Error messages name tables and columns, never row values (values may be personal data).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use sluice_binlog::{Charset, ColumnDef, ColumnKind, Value};

use super::common::{
    backfill_detail_to_db, backfill_from_row, check_fill_columns, check_row_len, check_table_shape,
    checkpoint_from_rows, definition_json, fill_columns_sql, missing_columns, plan_is_current, rows_copied_to_db,
    unix_now, verified_from_row, TxProtocol, TxState, BACKFILL_TABLE,
};
use super::{
    number_placeholders, selection_condition, selection_value, BackfillProgress, Checkpoint, Readiness, ReadinessRow,
    ReadinessState, RowOp, RowSelection, Target, TargetError, TargetResult, TargetTable, VerifiedRecord,
    READINESS_TABLE,
};

/// How long a write waits for another connection's lock before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows per multi-row upsert: enough to spread a statement's fixed cost thin, few enough to
/// keep the statement text (parsed once, then cached) small.
const UPSERT_ROWS_MAX: usize = 64;
/// Bound parameters per statement SQLite accepts (`SQLITE_MAX_VARIABLE_NUMBER` since 3.32).
const SQLITE_MAX_PARAMS: usize = 32_766;

/// Rows whose worst-case size (see [`max_row_bytes`]) is at most this many bytes get
/// `WITHOUT ROWID` (about 1/20 of SQLite's default 4096-byte page, SQLite's own guidance).
const WITHOUT_ROWID_MAX_ROW_BYTES: u64 = 200;

const CREATE_BOOKKEEPING: &str = r#"
CREATE TABLE IF NOT EXISTS "_sluice_checkpoint" (
    "writer" INTEGER PRIMARY KEY,
    "position" TEXT NOT NULL,
    "applied" TEXT NOT NULL,
    "source_commit_unix" INTEGER NOT NULL,
    "updated_at_unix" INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS "_sluice_tables" (
    "name" TEXT NOT NULL PRIMARY KEY,
    "source_name" TEXT NOT NULL,
    "definition" TEXT NOT NULL,
    "created_at_unix" INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS "_sluice_backfill" (
    "name" TEXT NOT NULL PRIMARY KEY,
    "done" INTEGER NOT NULL,
    "last_key" TEXT,
    "rows_copied" INTEGER NOT NULL,
    "updated_at_unix" INTEGER NOT NULL,
    "detail" TEXT
) STRICT;
CREATE TABLE IF NOT EXISTS "_sluice_readiness" (
    "table_name" TEXT NOT NULL,
    "column_name" TEXT NOT NULL,
    "state" TEXT NOT NULL,
    "updated_at_unix" INTEGER NOT NULL,
    PRIMARY KEY ("table_name", "column_name")
) STRICT;
CREATE TABLE IF NOT EXISTS "_sluice_lag" (
    "id" INTEGER PRIMARY KEY,
    "source" TEXT NOT NULL,
    "p50_us" INTEGER NOT NULL,
    "p99_us" INTEGER NOT NULL,
    "p999_us" INTEGER NOT NULL,
    "max_us" INTEGER NOT NULL,
    "samples" INTEGER NOT NULL,
    "window_ms" INTEGER NOT NULL,
    "updated_at_us" INTEGER NOT NULL
) STRICT;
"#;

/// One row (`id` = 1): the lag percentiles writer 0 records (see `crate::ops::lag`).
const UPSERT_LAG: &str = r#"INSERT INTO "_sluice_lag" ("id", "source", "p50_us", "p99_us", "p999_us", "max_us", "samples", "window_ms", "updated_at_us") VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT ("id") DO UPDATE SET "source" = excluded."source", "p50_us" = excluded."p50_us", "p99_us" = excluded."p99_us", "p999_us" = excluded."p999_us", "max_us" = excluded."max_us", "samples" = excluded."samples", "window_ms" = excluded."window_ms", "updated_at_us" = excluded."updated_at_us""#;

const SELECT_LAG: &str = r#"SELECT "source", "p50_us", "p99_us", "p999_us", "max_us", "samples", "window_ms", "updated_at_us" FROM "_sluice_lag" WHERE "id" = 1"#;

const UPSERT_CHECKPOINT: &str = r#"INSERT INTO "_sluice_checkpoint" ("writer", "position", "applied", "source_commit_unix", "updated_at_unix") VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT ("writer") DO UPDATE SET "position" = excluded."position", "applied" = excluded."applied", "source_commit_unix" = excluded."source_commit_unix", "updated_at_unix" = excluded."updated_at_unix""#;

const SELECT_CHECKPOINT: &str = r#"SELECT "position", "applied", "source_commit_unix" FROM "_sluice_checkpoint""#;

const UPSERT_BACKFILL: &str = r#"INSERT INTO "_sluice_backfill" ("name", "done", "last_key", "rows_copied", "updated_at_unix", "detail") VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT ("name") DO UPDATE SET "done" = excluded."done", "last_key" = excluded."last_key", "rows_copied" = excluded."rows_copied", "updated_at_unix" = excluded."updated_at_unix", "detail" = excluded."detail""#;

const UPSERT_READINESS: &str = r#"INSERT INTO "_sluice_readiness" ("table_name", "column_name", "state", "updated_at_unix") VALUES (?1, ?2, ?3, ?4) ON CONFLICT ("table_name", "column_name") DO UPDATE SET "state" = excluded."state", "updated_at_unix" = excluded."updated_at_unix""#;

const DELETE_READINESS: &str = r#"DELETE FROM "_sluice_readiness" WHERE "table_name" = ?1"#;

const SELECT_READINESS: &str = r#"SELECT "table_name", "column_name", "state", "updated_at_unix" FROM "_sluice_readiness" ORDER BY "table_name", "column_name""#;

const SELECT_BACKFILL: &str =
    r#"SELECT "name", "done", "last_key", "rows_copied", "detail" FROM "_sluice_backfill" ORDER BY "name""#;

/// The declared type of a target column (the storage class SQLite enforces in a STRICT table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SqliteType {
    Integer,
    Real,
    Text,
    Blob,
    /// Integers up to `i64::MAX` stored as INTEGER, larger ones as decimal TEXT.
    Any,
}

impl SqliteType {
    pub fn as_sql(self) -> &'static str {
        match self {
            SqliteType::Integer => "INTEGER",
            SqliteType::Real => "REAL",
            SqliteType::Text => "TEXT",
            SqliteType::Blob => "BLOB",
            SqliteType::Any => "ANY",
        }
    }
}

/// The target column type for a source column (docs/type-mapping.md).
pub fn sqlite_type(column: &ColumnDef) -> SqliteType {
    match column.kind {
        ColumnKind::BigInt if column.unsigned => SqliteType::Any,
        ColumnKind::TinyInt
        | ColumnKind::SmallInt
        | ColumnKind::MediumInt
        | ColumnKind::Int
        | ColumnKind::BigInt
        | ColumnKind::Year => SqliteType::Integer,
        // BIT(n) is an unsigned n-bit number: BIT(64) can exceed i64::MAX. `length` is the
        // declared width in bits; when unknown (0), be safe.
        ColumnKind::Bit if (1..=63).contains(&column.length) => SqliteType::Integer,
        ColumnKind::Bit => SqliteType::Any,
        ColumnKind::Float | ColumnKind::Double => SqliteType::Real,
        ColumnKind::Decimal
        | ColumnKind::Date
        | ColumnKind::Time
        | ColumnKind::DateTime
        | ColumnKind::Timestamp
        | ColumnKind::Enum
        | ColumnKind::Set
        | ColumnKind::Json => SqliteType::Text,
        // Character data in a charset sluice doesn't decode arrives as bytes.
        ColumnKind::Text if matches!(column.charset, Charset::Binary | Charset::Other(_)) => SqliteType::Blob,
        ColumnKind::Text => SqliteType::Text,
        ColumnKind::Binary | ColumnKind::Other => SqliteType::Blob,
    }
}

/// Quotes an SQL identifier: wrapped in double quotes, embedded double quotes doubled.
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for ch in name.chars() {
        if ch == '"' {
            out.push('"');
        }
        out.push(ch);
    }
    out.push('"');
    out
}

/// Worst-case stored size of one row in bytes, or `None` when some column is unbounded.
fn max_row_bytes(table: &TargetTable) -> Option<u64> {
    let mut total: u64 = 0;
    for col in &table.columns {
        let c = &col.source;
        let len = u64::from(c.length);
        let bytes = match c.kind {
            ColumnKind::TinyInt
            | ColumnKind::SmallInt
            | ColumnKind::MediumInt
            | ColumnKind::Int
            | ColumnKind::BigInt
            | ColumnKind::Year
            | ColumnKind::Bit
            | ColumnKind::Float
            | ColumnKind::Double => 20,
            ColumnKind::Decimal => u64::from(c.precision) + 2,
            ColumnKind::Date => 10,
            ColumnKind::Time | ColumnKind::DateTime | ColumnKind::Timestamp => 26,
            // `length` is in characters for text; UTF-8 takes up to 4 bytes per character.
            ColumnKind::Text if len > 0 => len * 4,
            ColumnKind::Binary if len > 0 => len,
            ColumnKind::Enum => c.labels.iter().map(|l| l.len() as u64).max()?,
            ColumnKind::Set => c.labels.iter().map(|l| l.len() as u64 + 1).sum(),
            ColumnKind::Text | ColumnKind::Binary | ColumnKind::Json | ColumnKind::Other => return None,
        };
        total += bytes + 1;
    }
    Some(total)
}

/// Whether the table is created `WITHOUT ROWID` (see the module documentation).
fn use_without_rowid(table: &TargetTable, types: &[SqliteType]) -> bool {
    let integer_key = table.key.len() == 1 && types[table.key[0]] == SqliteType::Integer;
    !integer_key && max_row_bytes(table).is_some_and(|n| n <= WITHOUT_ROWID_MAX_ROW_BYTES)
}

/// Everything sluice derives once per target table: column types and statement texts.
struct TablePlan {
    table: Arc<TargetTable>,
    types: Vec<SqliteType>,
    /// `INSERT … ON CONFLICT (key) DO UPDATE …` binding the whole row as `?1..?n`.
    upsert: String,
    /// The same upsert for `UPSERT_ROWS_MAX` rows at once (fewer for wide tables), and how
    /// many rows that is: runs of inserts (backfill chunks) are written with it.
    upsert_many: (usize, String),
    /// `UPDATE … SET non-key = ?i WHERE key = ?k` binding the whole row; `None` when every
    /// column is a key column.
    update: Option<String>,
    /// `DELETE … WHERE key` binding the key values as `?1..?k`.
    delete: String,
    /// `SELECT … ORDER BY key`, for [`read_rows`].
    select: String,
}

impl TablePlan {
    fn new(table: Arc<TargetTable>) -> TargetResult<TablePlan> {
        validate_table(&table)?;
        let types: Vec<SqliteType> = table.columns.iter().map(|c| sqlite_type(&c.source)).collect();
        let name = quote_ident(&table.name);
        let cols: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let key_cols: Vec<&str> = table.key.iter().map(|&k| cols[k].as_str()).collect();
        let non_key: Vec<usize> = (0..cols.len()).filter(|i| !table.key.contains(i)).collect();
        let placeholders: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();

        let conflict_action = if non_key.is_empty() {
            "NOTHING".to_owned()
        } else {
            let sets: Vec<String> = non_key
                .iter()
                .map(|&i| format!("{c} = excluded.{c}", c = cols[i]))
                .collect();
            format!("UPDATE SET {}", sets.join(", "))
        };
        let upsert = format!(
            "INSERT INTO {name} ({}) VALUES ({}) ON CONFLICT ({}) DO {conflict_action}",
            cols.join(", "),
            placeholders.join(", "),
            key_cols.join(", "),
        );
        // SQLite runs a multi-row upsert row by row, each row's conflict checked against the
        // table as the rows before it left it: the same as one statement per row.
        let rows_many = (SQLITE_MAX_PARAMS / cols.len()).clamp(1, UPSERT_ROWS_MAX);
        let tuples: Vec<String> = (0..rows_many)
            .map(|r| {
                let params: Vec<String> = (1..=cols.len()).map(|i| format!("?{}", r * cols.len() + i)).collect();
                format!("({})", params.join(", "))
            })
            .collect();
        let upsert_many = (
            rows_many,
            format!(
                "INSERT INTO {name} ({}) VALUES {} ON CONFLICT ({}) DO {conflict_action}",
                cols.join(", "),
                tuples.join(", "),
                key_cols.join(", "),
            ),
        );
        let where_row: Vec<String> = table.key.iter().map(|&k| format!("{} = ?{}", cols[k], k + 1)).collect();
        let update = (!non_key.is_empty()).then(|| {
            let sets: Vec<String> = non_key.iter().map(|&i| format!("{} = ?{}", cols[i], i + 1)).collect();
            format!(
                "UPDATE {name} SET {} WHERE {}",
                sets.join(", "),
                where_row.join(" AND ")
            )
        });
        let where_key: Vec<String> = key_cols
            .iter()
            .enumerate()
            .map(|(n, c)| format!("{c} = ?{}", n + 1))
            .collect();
        let delete = format!("DELETE FROM {name} WHERE {}", where_key.join(" AND "));
        let select = format!(
            "SELECT {} FROM {name} ORDER BY {}",
            cols.join(", "),
            key_cols.join(", ")
        );
        Ok(TablePlan {
            table,
            types,
            upsert,
            upsert_many,
            update,
            delete,
            select,
        })
    }

    fn create_sql(&self) -> String {
        let t = &self.table;
        let mut defs: Vec<String> = t
            .columns
            .iter()
            .zip(&self.types)
            .enumerate()
            .map(|(i, (c, ty))| {
                let not_null = if !c.source.nullable || t.key.contains(&i) {
                    " NOT NULL"
                } else {
                    ""
                };
                format!("{} {}{not_null}", quote_ident(&c.name), ty.as_sql())
            })
            .collect();
        let key: Vec<String> = t.key.iter().map(|&k| quote_ident(&t.columns[k].name)).collect();
        defs.push(format!("PRIMARY KEY ({})", key.join(", ")));
        let options = if use_without_rowid(t, &self.types) {
            "STRICT, WITHOUT ROWID"
        } else {
            "STRICT"
        };
        format!(
            "CREATE TABLE {} (\n    {}\n) {options}",
            quote_ident(&t.name),
            defs.join(",\n    ")
        )
    }

    /// The JSON description stored in `_sluice_tables.definition`.
    fn definition_json(&self) -> TargetResult<String> {
        let types: Vec<&str> = self.types.iter().map(|ty| ty.as_sql()).collect();
        let without_rowid = use_without_rowid(&self.table, &self.types);
        definition_json(
            &self.table,
            &types,
            &[("without_rowid", serde_json::Value::Bool(without_rowid))],
        )
    }

    /// Converts `value` for column `i`, or names the column when the value doesn't fit.
    fn bind<'a>(&self, i: usize, value: &'a Value) -> TargetResult<ToSqlOutput<'a>> {
        let column = &self.table.columns[i].source;
        to_sql(value, column.kind, self.types[i]).ok_or_else(|| {
            TargetError::Other(format!(
                "table {}: column {} ({:?} stored as {}) cannot hold a {} value",
                self.table.name,
                self.table.columns[i].name,
                column.kind,
                self.types[i].as_sql(),
                value.kind()
            ))
        })
    }

    fn bind_row<'a>(&self, row: &'a [Value]) -> TargetResult<Vec<ToSqlOutput<'a>>> {
        self.check_len(row)?;
        row.iter().enumerate().map(|(i, v)| self.bind(i, v)).collect()
    }

    fn bind_key<'a>(&self, row: &'a [Value]) -> TargetResult<Vec<ToSqlOutput<'a>>> {
        self.check_len(row)?;
        self.table.key.iter().map(|&k| self.bind(k, &row[k])).collect()
    }

    fn check_len(&self, row: &[Value]) -> TargetResult<()> {
        check_row_len(&self.table, row)
    }
}

fn validate_table(table: &TargetTable) -> TargetResult<()> {
    let fail = |why: String| Err(TargetError::Other(format!("table {}: {why}", table.name)));
    if table.name.is_empty() {
        return fail("empty table name".into());
    }
    if table.name.contains('\0') || table.columns.iter().any(|c| c.name.contains('\0')) {
        return fail("identifier contains a NUL character".into());
    }
    check_table_shape(table)
}

/// Converts a value to what is stored in a column of `kind` declared as `ty`; `None` when the
/// value's variant doesn't belong in such a column (or can't be stored there losslessly).
fn to_sql(value: &Value, kind: ColumnKind, ty: SqliteType) -> Option<ToSqlOutput<'_>> {
    use ToSqlOutput::{Borrowed, Owned};
    let out = match (ty, value) {
        (_, Value::Null) => Borrowed(ValueRef::Null),
        (SqliteType::Integer | SqliteType::Any, Value::Int(v)) => Owned(SqlValue::Integer(*v)),
        (SqliteType::Integer | SqliteType::Any, Value::Year(v)) => Owned(SqlValue::Integer(i64::from(*v))),
        (SqliteType::Integer, Value::UInt(v) | Value::Bit(v)) => Owned(SqlValue::Integer(i64::try_from(*v).ok()?)),
        (SqliteType::Any, Value::UInt(v) | Value::Bit(v)) => match i64::try_from(*v) {
            Ok(i) => Owned(SqlValue::Integer(i)),
            Err(_) => Owned(SqlValue::Text(v.to_string())),
        },
        (SqliteType::Real, Value::Float(v)) => Owned(SqlValue::Real(widen_f32(*v))),
        (SqliteType::Real, Value::Double(v)) => Owned(SqlValue::Real(*v)),
        (SqliteType::Text, v) => match (kind, v) {
            (ColumnKind::Decimal, Value::Decimal(s))
            | (ColumnKind::Text, Value::Text(s))
            | (ColumnKind::Enum, Value::Enum(s) | Value::Text(s))
            | (ColumnKind::Set, Value::Set(s) | Value::Text(s))
            | (ColumnKind::Json, Value::Json(s) | Value::Text(s)) => Borrowed(ValueRef::Text(s.as_bytes())),
            (ColumnKind::Date, Value::Date { .. })
            | (ColumnKind::Time, Value::Time { .. })
            | (ColumnKind::DateTime, Value::DateTime { .. })
            | (ColumnKind::Timestamp, Value::Timestamp { .. }) => Owned(SqlValue::Text(v.to_string())),
            _ => return None,
        },
        (SqliteType::Blob, Value::Bytes(b)) => Borrowed(ValueRef::Blob(b)),
        // Text in a column of an undecoded charset: its UTF-8 bytes.
        (SqliteType::Blob, Value::Text(s)) if kind == ColumnKind::Text => Borrowed(ValueRef::Blob(s.as_bytes())),
        _ => return None,
    };
    Some(out)
}

pub use crate::verify::canonical::widen_f32;

/// Binds a key value for a verification read. Besides what a write accepts, a value read back
/// from this target is accepted in its stored form (temporal text, big unsigned integers as
/// text), so a read can continue after a key it returned.
fn bind_read<'a>(plan: &TablePlan, i: usize, value: &'a Value) -> TargetResult<ToSqlOutput<'a>> {
    match (plan.types[i], value) {
        (SqliteType::Text | SqliteType::Any, Value::Text(s)) => Ok(ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()))),
        (SqliteType::Real, Value::Double(d)) => Ok(ToSqlOutput::Owned(SqlValue::Real(*d))),
        _ => plan.bind(i, value),
    }
}

/// A stored value as a [`Value`] for verification: integers by the column's kind, REAL as a
/// double, text as `Text` (DECIMAL and temporal text is already canonical), BLOB as bytes.
fn read_value(column: &ColumnDef, stored: ValueRef<'_>) -> Value {
    match stored {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => match column.kind {
            ColumnKind::Year => Value::Year(i as u16),
            ColumnKind::Bit => Value::Bit(i as u64),
            _ if column.unsigned => Value::UInt(i as u64),
            _ => Value::Int(i),
        },
        ValueRef::Real(d) => Value::Double(d),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => Value::Text(s.to_owned()),
            Err(_) => Value::Bytes(t.to_vec()),
        },
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
    }
}

fn db_err(operation: &'static str, table: &str) -> impl FnOnce(rusqlite::Error) -> TargetError {
    let table = table.to_owned();
    move |e| TargetError::Database {
        operation,
        table,
        message: e.to_string(),
    }
}

/// A SQLite database file sluice replicates into.
pub struct SqliteTarget {
    conn: Connection,
    plans: HashMap<String, TablePlan>,
    state: TxState,
    /// The file's write gate, and this connection's turn while its transaction is open.
    gate: Arc<WriteGate>,
    turn: Option<WriteTurn>,
    /// A backfill writer: lets stream writers waiting for the gate go first.
    background: bool,
}

/// The order of SQLite's single write lock among sluice's own connections to one file.
///
/// A writer that finds SQLite's lock taken polls it: the busy handler sleeps 1, 2, 5 … up to
/// 100 ms between tries. With a backfill writer committing chunk after chunk, a stream writer
/// could lose that race many times over and the stream would lag by hundreds of
/// milliseconds. Sluice's connections to one file therefore take turns here first: the lock
/// passes from one transaction to the next without sleeps, and a stream writer waiting goes
/// before a backfill writer. (Other processes writing the file still meet SQLite's own lock
/// and the busy timeout.)
#[derive(Default)]
struct WriteGate {
    state: std::sync::Mutex<GateState>,
    freed: std::sync::Condvar,
}

#[derive(Default)]
struct GateState {
    taken: bool,
    /// Stream (not background) writers waiting for their turn.
    waiting_foreground: usize,
}

/// One connection's turn at the gate; the next one may go when it is dropped.
struct WriteTurn(Arc<WriteGate>);

impl Drop for WriteTurn {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        state.taken = false;
        drop(state);
        self.0.freed.notify_all();
    }
}

impl WriteGate {
    /// The gate of the database file at `path` (one per file and process).
    fn of(path: &Path) -> Arc<WriteGate> {
        static GATES: std::sync::Mutex<Vec<(std::path::PathBuf, std::sync::Weak<WriteGate>)>> =
            std::sync::Mutex::new(Vec::new());
        let key = path.canonicalize().unwrap_or_else(|_| path.to_owned());
        let mut gates = GATES.lock().unwrap_or_else(|p| p.into_inner());
        gates.retain(|(_, gate)| gate.strong_count() > 0);
        if let Some(gate) = gates.iter().find(|(p, _)| *p == key).and_then(|(_, g)| g.upgrade()) {
            return gate;
        }
        let gate = Arc::new(WriteGate::default());
        gates.push((key, Arc::downgrade(&gate)));
        gate
    }

    /// Waits for this connection's turn (after every waiting stream writer when `background`).
    fn enter(self: &Arc<Self>, background: bool) -> WriteTurn {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if background {
            while state.taken || state.waiting_foreground > 0 {
                state = self.freed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        } else {
            state.waiting_foreground += 1;
            while state.taken {
                state = self.freed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            state.waiting_foreground -= 1;
        }
        state.taken = true;
        WriteTurn(Arc::clone(self))
    }
}

impl SqliteTarget {
    /// Opens (creating if needed) the database at `path` and configures the connection.
    pub fn open(path: &Path) -> TargetResult<SqliteTarget> {
        let file = path.display().to_string();
        let conn = Connection::open(path).map_err(db_err("open", &file))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err("configure", &file))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(db_err("configure", &file))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(TargetError::Other(format!(
                "cannot put {} in WAL mode (journal_mode is {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_err("configure", &file))?;
        Ok(SqliteTarget {
            conn,
            plans: HashMap::new(),
            state: TxState::Idle,
            gate: WriteGate::of(path),
            turn: None,
            background: false,
        })
    }

    /// The plan for `table`, built on first use and rebuilt when the definition changes.
    fn plan(&mut self, table: &Arc<TargetTable>) -> TargetResult<&TablePlan> {
        let fresh = !self
            .plans
            .get_mut(&table.name)
            .is_some_and(|plan| plan_is_current(&mut plan.table, table));
        if fresh {
            let plan = TablePlan::new(Arc::clone(table))?;
            let capacity = (self.plans.len() + 1) * 4 + 8;
            self.conn.set_prepared_statement_cache_capacity(capacity);
            self.plans.insert(table.name.clone(), plan);
        }
        Ok(&self.plans[&table.name])
    }

    /// `ops` in order: runs of inserts into one table as multi-row upserts, the rest one by one.
    fn apply_ops(&mut self, ops: &[RowOp]) -> TargetResult<()> {
        let mut rest = ops;
        while let Some(first) = rest.first() {
            let run = match first {
                RowOp::Insert { table, .. } => rest
                    .iter()
                    .position(|op| !matches!(op, RowOp::Insert { table: t, .. } if Arc::ptr_eq(t, table)))
                    .unwrap_or(rest.len()),
                _ => 1,
            };
            if run > 1 {
                self.upsert_run(&rest[..run])?;
            } else {
                self.apply_op(first)?;
            }
            rest = &rest[run..];
        }
        Ok(())
    }

    /// Inserts (upserts) of one table: whole statements of `upsert_many`, the rest one by one.
    fn upsert_run(&mut self, ops: &[RowOp]) -> TargetResult<()> {
        let RowOp::Insert { table, .. } = &ops[0] else {
            unreachable!("upsert_run is given inserts only")
        };
        self.plan(table)?;
        let plan = &self.plans[&table.name];
        let name = plan.table.name.as_str();
        let (per_statement, many_sql) = &plan.upsert_many;
        let mut values = Vec::with_capacity(per_statement * plan.table.columns.len());
        let mut many = None;
        let mut one = None;
        for statement in ops.chunks(*per_statement) {
            let whole = statement.len() == *per_statement && *per_statement > 1;
            for op in statement {
                let RowOp::Insert { row, .. } = op else {
                    unreachable!("upsert_run is given inserts only")
                };
                plan.check_len(row)?;
                for (i, v) in row.iter().enumerate() {
                    values.push(plan.bind(i, v)?);
                }
                if !whole {
                    let st = match &mut one {
                        Some(st) => st,
                        None => one.insert(self.conn.prepare_cached(&plan.upsert).map_err(db_err("upsert", name))?),
                    };
                    st.execute(rusqlite::params_from_iter(values.iter()))
                        .map_err(db_err("upsert", name))?;
                    values.clear();
                }
            }
            if whole {
                let st = match &mut many {
                    Some(st) => st,
                    None => many.insert(self.conn.prepare_cached(many_sql).map_err(db_err("upsert", name))?),
                };
                st.execute(rusqlite::params_from_iter(values.iter()))
                    .map_err(db_err("upsert", name))?;
                values.clear();
            }
        }
        Ok(())
    }

    fn apply_op(&mut self, op: &RowOp) -> TargetResult<()> {
        let table = op.table();
        self.plan(table)?;
        let plan = &self.plans[&table.name];
        let conn = &self.conn;
        let name = plan.table.name.as_str();
        let upsert = |row: &[Value]| -> TargetResult<()> {
            let values = plan.bind_row(row)?;
            conn.prepare_cached(&plan.upsert)
                .and_then(|mut st| st.execute(rusqlite::params_from_iter(values.iter())))
                .map_err(db_err("upsert", name))?;
            Ok(())
        };
        let delete = |row: &[Value]| -> TargetResult<()> {
            let key = plan.bind_key(row)?;
            conn.prepare_cached(&plan.delete)
                .and_then(|mut st| st.execute(rusqlite::params_from_iter(key.iter())))
                .map_err(db_err("delete", name))?;
            Ok(())
        };
        match op {
            RowOp::Insert { row, .. } => upsert(row),
            RowOp::Delete { row, .. } => delete(row),
            RowOp::Update { before, after, .. } => {
                plan.check_len(before)?;
                plan.check_len(after)?;
                let key_unchanged = plan.table.key.iter().all(|&k| before[k] == after[k]);
                match (&plan.update, key_unchanged) {
                    (Some(update), true) => {
                        let values = plan.bind_row(after)?;
                        let changed = conn
                            .prepare_cached(update)
                            .and_then(|mut st| st.execute(rusqlite::params_from_iter(values.iter())))
                            .map_err(db_err("update", name))?;
                        if changed == 0 {
                            // The target lacks the row: write it whole (idempotency net).
                            upsert(after)?;
                        }
                        Ok(())
                    }
                    // Every column is a key column: the row exists or is inserted.
                    (None, true) => upsert(after),
                    (_, false) => {
                        delete(before)?;
                        upsert(after)
                    }
                }
            }
        }
    }

    fn prepare_in_tx(&mut self, tables: &[Arc<TargetTable>]) -> TargetResult<()> {
        self.conn
            .execute_batch(CREATE_BOOKKEEPING)
            .map_err(db_err("create bookkeeping tables", "_sluice_*"))?;
        let has_detail: bool = self
            .conn
            .query_row(
                r#"SELECT count(*) FROM pragma_table_info('_sluice_backfill') WHERE name = 'detail'"#,
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(db_err("inspect table", BACKFILL_TABLE))?
            > 0;
        if !has_detail {
            // Targets created before `detail` existed.
            self.conn
                .execute_batch(r#"ALTER TABLE "_sluice_backfill" ADD COLUMN "detail" TEXT"#)
                .map_err(db_err("add column detail", BACKFILL_TABLE))?;
        }
        let now = unix_now();
        for table in tables {
            self.plan(table)?;
            let plan = &self.plans[&table.name];
            let name = plan.table.name.as_str();
            let existing = self.existing_columns(name)?;
            if existing.is_empty() {
                self.conn
                    .execute(&plan.create_sql(), [])
                    .map_err(db_err("create table", name))?;
            } else {
                for c in missing_columns(&plan.table, &existing)? {
                    // Nullable: existing rows hold NULL until the column-only backfill.
                    let sql = format!(
                        "ALTER TABLE {} ADD COLUMN {} {}",
                        quote_ident(name),
                        quote_ident(&plan.table.columns[c].name),
                        plan.types[c].as_sql()
                    );
                    self.conn.execute(&sql, []).map_err(db_err("add column", name))?;
                }
            }
            let definition = plan.definition_json()?;
            self.conn
                .prepare_cached(
                    r#"INSERT INTO "_sluice_tables" ("name", "source_name", "definition", "created_at_unix") VALUES (?1, ?2, ?3, ?4) ON CONFLICT ("name") DO NOTHING"#,
                )
                .and_then(|mut st| st.execute(params![name, plan.table.source_name, definition, now]))
                .map_err(db_err("record table", name))?;
        }
        Ok(())
    }

    /// The table's column names, in order; empty when it does not exist.
    fn existing_columns(&self, name: &str) -> TargetResult<Vec<String>> {
        self.conn
            .prepare_cached("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
            .and_then(|mut st| {
                st.query_map([name], |row| row.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db_err("inspect table", name))
    }

    fn write_backfill(&mut self, progress: &BackfillProgress) -> TargetResult<()> {
        let rows_copied = rows_copied_to_db(progress)?;
        self.conn
            .prepare_cached(UPSERT_BACKFILL)
            .and_then(|mut st| {
                st.execute(params![
                    progress.table,
                    progress.done,
                    progress.last_key,
                    rows_copied,
                    unix_now(),
                    backfill_detail_to_db(progress)
                ])
            })
            .map_err(db_err("record backfill", &progress.table))?;
        Ok(())
    }

    /// This connection's turn at the file's write gate, unless it holds it already; `true`
    /// when it was taken here.
    fn take_turn(&mut self) -> bool {
        let taken = self.turn.is_none();
        if taken {
            self.turn = Some(self.gate.enter(self.background));
        }
        taken
    }

    /// `BEGIN IMMEDIATE` in this connection's turn at the file's write gate.
    fn begin_immediate(&mut self) -> TargetResult<()> {
        self.take_turn();
        let begun = self
            .conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut st| st.execute([]))
            .map_err(db_err("begin", "(transaction)"));
        if begun.is_err() {
            self.turn = None;
        }
        begun.map(|_| ())
    }

    /// `COMMIT`, ending this connection's turn when the transaction is over.
    fn commit_now(&mut self) -> TargetResult<()> {
        let result = self
            .conn
            .prepare_cached("COMMIT")
            .and_then(|mut st| st.execute([]))
            .map_err(db_err("commit", "(transaction)"));
        if self.conn.is_autocommit() {
            self.turn = None;
        }
        result.map(|_| ())
    }
}

impl SqliteTarget {
    /// Whether one of sluice's own tables exists (loads of a table never created read as empty).
    fn bookkeeping_table_exists(&self, operation: &'static str, table: &str) -> TargetResult<bool> {
        self.conn
            .query_row(
                "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                [table],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
            .map_err(db_err(operation, table))
    }
}

impl TxProtocol for SqliteTarget {
    fn tx_state(&mut self) -> &mut TxState {
        &mut self.state
    }

    fn rollback_now(&mut self) -> TargetResult<()> {
        let result = if self.conn.is_autocommit() {
            Ok(())
        } else {
            self.conn
                .execute_batch("ROLLBACK")
                .map_err(db_err("rollback", "(transaction)"))
        };
        if self.conn.is_autocommit() {
            self.turn = None;
        }
        result
    }
}

impl Target for SqliteTarget {
    fn single_writer(&self) -> bool {
        true
    }

    fn prepare(&mut self, tables: &[Arc<TargetTable>]) -> TargetResult<()> {
        if self.state == TxState::Open {
            // Inside an open transaction the new tables commit or roll back with its rows
            // (SQLite DDL is transactional).
            let result = self.prepare_in_tx(tables);
            return self.abandon_on_error(result);
        }
        self.begin_immediate()?;
        match self.prepare_in_tx(tables) {
            Ok(()) => {
                if let Err(e) = self.commit_now() {
                    let _ = self.rollback_now();
                    return Err(e);
                }
                Ok(())
            }
            Err(e) => {
                let _ = self.rollback_now();
                Err(e)
            }
        }
    }

    fn load_checkpoint(&mut self) -> TargetResult<Option<Checkpoint>> {
        if !self.bookkeeping_table_exists("load checkpoint", "_sluice_checkpoint")? {
            return Ok(None);
        }
        let rows: Vec<(String, String, i64)> = self
            .conn
            .prepare_cached(SELECT_CHECKPOINT)
            .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
            .map_err(db_err("load checkpoint", "_sluice_checkpoint"))?;
        checkpoint_from_rows(rows)
    }

    fn begin(&mut self) -> TargetResult<()> {
        if self.state == TxState::Open {
            return Err(TargetError::Other("begin called while a transaction is open".into()));
        }
        self.begin_immediate()?;
        self.state = TxState::Open;
        Ok(())
    }

    fn set_background(&mut self) {
        self.background = true;
    }

    fn apply_all(&mut self, ops: &[RowOp]) -> TargetResult<()> {
        self.state.require_open("apply")?;
        let result = self.apply_ops(ops);
        self.abandon_on_error(result)
    }

    fn apply(&mut self, op: &RowOp) -> TargetResult<()> {
        self.apply_all(std::slice::from_ref(op))
    }

    fn commit(&mut self, checkpoint: &Checkpoint) -> TargetResult<()> {
        self.state.require_open_for_commit()?;
        let position = checkpoint.position.to_string();
        let applied = checkpoint.applied_text();
        let result = self
            .conn
            .prepare_cached(UPSERT_CHECKPOINT)
            .and_then(|mut st| {
                st.execute(params![
                    i64::from(checkpoint.writer),
                    position,
                    applied,
                    i64::from(checkpoint.source_commit_unix),
                    unix_now()
                ])
            })
            .map_err(db_err("write checkpoint", "_sluice_checkpoint"))
            .and_then(|_| self.commit_now());
        self.finish_commit(result)
    }

    fn rollback(&mut self) -> TargetResult<()> {
        self.state = TxState::Idle;
        self.rollback_now()
    }

    fn record_backfill(&mut self, progress: &BackfillProgress) -> TargetResult<()> {
        self.state.require_open("record_backfill")?;
        let result = self.write_backfill(progress);
        self.abandon_on_error(result)
    }

    fn record_lag(&mut self, report: &crate::ops::lag::LagReport) -> TargetResult<()> {
        self.state.require_open("record_lag")?;
        let [p50, p99, p999, max, samples, window, at] = super::lag_columns(report);
        let result = self
            .conn
            .prepare_cached(UPSERT_LAG)
            .and_then(|mut st| st.execute(params![report.source, p50, p99, p999, max, samples, window, at]))
            .map(|_| ())
            .map_err(db_err("record lag", "_sluice_lag"));
        self.abandon_on_error(result)
    }

    fn load_lag(&mut self) -> TargetResult<Option<crate::ops::lag::LagReport>> {
        if !self.bookkeeping_table_exists("load lag", "_sluice_lag")? {
            return Ok(None);
        }
        self.conn
            .query_row(SELECT_LAG, [], |r| {
                let source: String = r.get(0)?;
                let mut v = [0i64; 7];
                for (i, slot) in v.iter_mut().enumerate() {
                    *slot = r.get(i + 1)?;
                }
                Ok(super::lag_from_columns(&source, v))
            })
            .optional()
            .map_err(db_err("load lag", "_sluice_lag"))
    }

    fn recorded_tables(&mut self) -> TargetResult<Vec<String>> {
        if !self.bookkeeping_table_exists("list tables", "_sluice_tables")? {
            return Ok(Vec::new());
        }
        self.conn
            .prepare_cached(
                r#"SELECT t."name" FROM "_sluice_tables" t WHERE EXISTS (SELECT 1 FROM sqlite_schema s WHERE s.type = 'table' AND s.name = t."name") ORDER BY t."name""#,
            )
            .and_then(|mut st| st.query_map([], |r| r.get::<_, String>(0))?.collect())
            .map_err(db_err("list tables", "_sluice_tables"))
    }

    fn recorded_rules(&mut self) -> TargetResult<std::collections::HashMap<String, Option<String>>> {
        if !self.bookkeeping_table_exists("list tables", "_sluice_tables")? {
            return Ok(Default::default());
        }
        self.conn
            .prepare_cached(r#"SELECT "name", "definition" FROM "_sluice_tables""#)
            .and_then(|mut st| {
                st.query_map([], |r| {
                    let definition: String = r.get(1)?;
                    Ok((r.get::<_, String>(0)?, super::common::rules_of_definition(&definition)))
                })?
                .collect()
            })
            .map_err(db_err("list tables", "_sluice_tables"))
    }

    fn empty_table(&mut self, table: &Arc<TargetTable>) -> TargetResult<()> {
        self.state.require_open("empty_table")?;
        let result = self
            .conn
            .execute_batch(&format!("DELETE FROM {}", quote_ident(&table.name)))
            .map_err(db_err("empty table", &table.name));
        self.abandon_on_error(result)
    }

    fn drop_table(&mut self, name: &str) -> TargetResult<()> {
        if self.state == TxState::Open {
            return Err(TargetError::Other(format!(
                "drop_table {name} called inside a transaction"
            )));
        }
        self.begin_immediate()?;
        let result = self
            .conn
            .execute_batch(&format!("DROP TABLE IF EXISTS {}", quote_ident(name)))
            .and_then(|()| {
                self.conn
                    .execute(r#"DELETE FROM "_sluice_tables" WHERE "name" = ?1"#, [name])
            })
            .and_then(|_| {
                self.conn
                    .execute(r#"DELETE FROM "_sluice_backfill" WHERE "name" = ?1"#, [name])
            })
            .and_then(|_| self.conn.execute(DELETE_READINESS, [name]))
            .map_err(db_err("drop table", name))
            .and_then(|_| self.commit_now());
        if result.is_err() {
            let _ = self.rollback_now();
        }
        self.plans.remove(name);
        result
    }

    fn record_readiness(&mut self, table: &str, rows: &[Readiness], replace: bool) -> TargetResult<()> {
        self.state.require_open("record_readiness")?;
        let now = unix_now();
        let result = (|| {
            if replace {
                self.conn.prepare_cached(DELETE_READINESS)?.execute([table])?;
            }
            let mut st = self.conn.prepare_cached(UPSERT_READINESS)?;
            for r in rows {
                st.execute(params![table, r.column, r.state.as_str(), now])?;
            }
            Ok(())
        })()
        .map_err(db_err("record readiness", table));
        self.abandon_on_error(result)
    }

    fn readiness_copied(&mut self, table: &str) -> TargetResult<()> {
        self.state.require_open("readiness_copied")?;
        let sql = format!(
            r#"UPDATE "{READINESS_TABLE}" SET "state" = ?1, "updated_at_unix" = ?2 WHERE "table_name" = ?3 AND {}"#,
            super::copy_states_sql(r#""state""#)
        );
        let result = self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut st| st.execute(params![ReadinessState::Ready.as_str(), unix_now(), table]))
            .map(|_| ())
            .map_err(db_err("record readiness", table));
        self.abandon_on_error(result)
    }

    fn load_readiness(&mut self) -> TargetResult<Vec<ReadinessRow>> {
        if !self.bookkeeping_table_exists("load readiness", READINESS_TABLE)? {
            return Ok(Vec::new());
        }
        self.conn
            .prepare_cached(SELECT_READINESS)
            .and_then(|mut st| {
                st.query_map([], |r| {
                    Ok(ReadinessRow {
                        table: r.get(0)?,
                        column: r.get(1)?,
                        state: r.get(2)?,
                        updated_at_unix: r.get(3)?,
                    })
                })?
                .collect()
            })
            .map_err(db_err("load readiness", READINESS_TABLE))
    }

    fn load_backfill(&mut self) -> TargetResult<Vec<BackfillProgress>> {
        if !self.bookkeeping_table_exists("load backfill", BACKFILL_TABLE)? {
            return Ok(Vec::new());
        }
        type Row = (String, i64, Option<String>, i64, Option<String>);
        let rows: Vec<Row> = self
            .conn
            .prepare_cached(SELECT_BACKFILL)
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
                    .collect()
            })
            .map_err(db_err("load backfill", BACKFILL_TABLE))?;
        rows.into_iter().map(backfill_from_row).collect()
    }

    fn column_gaps(&mut self, tables: &[Arc<TargetTable>]) -> TargetResult<Vec<(String, Vec<usize>)>> {
        let mut gaps = Vec::new();
        for table in tables {
            let existing = self.existing_columns(&table.name)?;
            if existing.is_empty() {
                continue;
            }
            let missing = missing_columns(table, &existing)?;
            if !missing.is_empty() {
                gaps.push((table.name.clone(), missing));
            }
        }
        Ok(gaps)
    }

    fn fill_columns(&mut self, table: &Arc<TargetTable>, columns: &[usize], row: &[Value]) -> TargetResult<()> {
        self.state.require_open("fill_columns")?;
        let result = (|| {
            check_fill_columns(table, columns)?;
            self.plan(table)?;
            let plan = &self.plans[&table.name];
            plan.check_len(row)?;
            let mut values = Vec::with_capacity(columns.len() + plan.table.key.len());
            for &c in columns {
                values.push(plan.bind(c, &row[c])?);
            }
            values.extend(plan.bind_key(row)?);
            let sql = fill_columns_sql(&plan.table, &quote_ident(&table.name), columns, quote_ident, |n| {
                format!("?{n}")
            });
            self.conn
                .prepare_cached(&sql)
                .and_then(|mut st| st.execute(rusqlite::params_from_iter(values.iter())))
                .map_err(db_err("fill columns", &table.name))?;
            Ok(())
        })();
        self.abandon_on_error(result)
    }

    fn read_rows(&mut self, table: &Arc<TargetTable>, selection: RowSelection<'_>) -> TargetResult<Vec<Vec<Value>>> {
        self.plan(table)?;
        let plan = &self.plans[&table.name];
        let cols: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let keys: Vec<String> = table.key.iter().map(|&k| cols[k].clone()).collect();
        let read_row = |row: &rusqlite::Row<'_>| {
            table
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| Ok(read_value(&c.source, row.get_ref(i)?)))
                .collect::<rusqlite::Result<Vec<Value>>>()
        };
        if let RowSelection::Keys(list) = selection {
            // In-process point lookups through one cached statement beat one long OR chain
            // (whose text, and so its prepared statement, changes with the number of keys).
            let where_key: Vec<String> = keys
                .iter()
                .enumerate()
                .map(|(n, k)| format!("{k} = ?{}", n + 1))
                .collect();
            let sql = format!(
                "SELECT {} FROM {} WHERE {}",
                cols.join(", "),
                quote_ident(&table.name),
                where_key.join(" AND ")
            );
            let mut st = self
                .conn
                .prepare_cached(&sql)
                .map_err(db_err("verify read", &table.name))?;
            let mut rows = Vec::with_capacity(list.len());
            for key in list {
                let params = key
                    .iter()
                    .enumerate()
                    .map(|(n, v)| bind_read(plan, table.key[n], v))
                    .collect::<TargetResult<Vec<_>>>()?;
                let mut found = st
                    .query_map(rusqlite::params_from_iter(params), read_row)
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                    .map_err(db_err("verify read", &table.name))?;
                rows.append(&mut found);
            }
            return Ok(rows);
        }
        let (condition, binds) = selection_condition(&keys, &selection);
        let mut sql = format!(
            "SELECT {} FROM {} WHERE {}",
            cols.join(", "),
            quote_ident(&table.name),
            number_placeholders(&condition, |n| format!("?{n}"))
        );
        if let RowSelection::KeyRange { limit, .. } = selection {
            sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", keys.join(", ")));
        }
        let params = binds
            .iter()
            .map(|&(tuple, k)| bind_read(plan, table.key[k], selection_value(&selection, (tuple, k))))
            .collect::<TargetResult<Vec<_>>>()?;
        let mut st = self
            .conn
            .prepare_cached(&sql)
            .map_err(db_err("verify read", &table.name))?;
        let rows = st
            .query_map(rusqlite::params_from_iter(params), read_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(db_err("verify read", &table.name))?;
        Ok(rows)
    }

    fn record_verified(&mut self, record: &VerifiedRecord) -> TargetResult<()> {
        let position = record.position.to_string();
        // A write of its own (autocommit) when outside a transaction: it takes a turn at the
        // gate too, or the writers handing the lock to each other could starve it.
        let own_turn = self.take_turn();
        let result = self
            .conn
            .execute_batch(
                r#"CREATE TABLE IF NOT EXISTS "_sluice_verified" ("id" INTEGER PRIMARY KEY, "position" TEXT NOT NULL, "mismatches" INTEGER NOT NULL, "unchecked_txns" INTEGER NOT NULL, "updated_at_unix" INTEGER NOT NULL) STRICT"#,
            )
            .and_then(|_| {
                self.conn.prepare_cached(r#"INSERT INTO "_sluice_verified" ("id", "position", "mismatches", "unchecked_txns", "updated_at_unix") VALUES (0, ?1, ?2, ?3, ?4) ON CONFLICT ("id") DO UPDATE SET "position" = excluded."position", "mismatches" = excluded."mismatches", "unchecked_txns" = excluded."unchecked_txns", "updated_at_unix" = excluded."updated_at_unix""#)?
                    .execute(params![position, record.mismatches as i64, record.unchecked_txns as i64, unix_now()])
            })
            .map_err(db_err("record verified", "_sluice_verified"));
        if own_turn {
            self.turn = None;
        }
        result.map(|_| ())
    }

    fn load_verified(&mut self) -> TargetResult<Option<VerifiedRecord>> {
        if !self.bookkeeping_table_exists("load verified", "_sluice_verified")? {
            return Ok(None);
        }
        let row: Option<(String, i64, i64)> = self
            .conn
            .query_row(
                r#"SELECT "position", "mismatches", "unchecked_txns" FROM "_sluice_verified" WHERE "id" = 0"#,
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(db_err("load verified", "_sluice_verified"))?;
        row.map(verified_from_row).transpose()
    }

    fn commit_without_checkpoint(&mut self) -> TargetResult<()> {
        self.state.require_open_for_commit()?;
        let result = self.commit_now();
        self.finish_commit(result)
    }
}

/// Reads every row of `table` from the database at `path` through a separate read-only
/// connection, ordered by key (for tests and verification tools).
///
/// Keys in an `ANY` column sort integers before text, so BIGINT UNSIGNED keys above
/// `i64::MAX` come last, in text order.
pub fn read_rows(path: &Path, table: &TargetTable) -> TargetResult<Vec<Vec<SqlValue>>> {
    let plan = TablePlan::new(Arc::new(table.clone()))?;
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(db_err("open", &table.name))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(db_err("configure", &table.name))?;
    let n = table.columns.len();
    let mut st = conn.prepare(&plan.select).map_err(db_err("read rows", &table.name))?;
    let rows = st
        .query_map([], |row| (0..n).map(|i| row.get::<_, SqlValue>(i)).collect())
        .and_then(|rows| rows.collect::<Result<Vec<Vec<SqlValue>>, _>>())
        .map_err(db_err("read rows", &table.name))?;
    Ok(rows)
}
