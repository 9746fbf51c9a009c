//! PostgreSQL target: replicates into one schema of a PostgreSQL database.
//!
//! # Design
//!
//! * **Sync client.** The target uses the synchronous `postgres` crate (a blocking wrapper
//!   around `tokio-postgres` that drives its own small tokio runtime). Such a runtime cannot
//!   be started on a thread that is already running one, so every call that reaches the
//!   server is moved to a short-lived scoped thread when the caller is inside a tokio
//!   runtime; on plain threads (sluice's writer threads) calls run directly. Sessions use
//!   `TimeZone = 'UTC'`, `DateStyle = 'ISO, YMD'` and `IntervalStyle = 'postgres'`. A closed
//!   connection is replaced on the next [`Target::begin`], [`Target::prepare`] or
//!   [`Target::load_checkpoint`]; the server has rolled back whatever was open on it.
//! * **Types.** Each source type maps to the closest exact PostgreSQL type (integers widened
//!   where the unsigned range needs it, `BIGINT UNSIGNED` as `numeric(20,0)`, `DECIMAL(p,s)`
//!   as `numeric(p,s)`, `TIME` as `interval`, `DATETIME` as `timestamp`, `TIMESTAMP` as
//!   `timestamptz`, text as `text`, bytes as `bytea`, JSON as `json`); see
//!   `docs/type-mapping.md`. Values PostgreSQL cannot represent are refused with an error
//!   naming the table and column: zero and partial dates (`0000-00-00`, `2024-00-15`), the
//!   zero TIMESTAMP, and text containing NUL characters. Identifiers longer than PostgreSQL's
//!   63 bytes are refused too (PostgreSQL would silently truncate them).
//! * **Exact parameters.** Values are bound as parameters in PostgreSQL's *text* format
//!   (bytes in binary format), and the server parses them with the column's own input
//!   function: decimals, 64-bit unsigned integers, dates and intervals arrive digit for digit,
//!   floats in their shortest round-tripping form (exact for both `real` and
//!   `double precision`).
//! * **Upserts.** An insert is `INSERT … ON CONFLICT (key) DO UPDATE SET` every non-key
//!   column (`DO NOTHING` when every column is a key column), so re-applying it replaces the
//!   row. An update whose key is unchanged is the same upsert of the new row; an update that
//!   changes the key deletes the old key and upserts the new row. A delete of a missing row
//!   changes nothing. Identifiers are always quoted and schema-qualified.
//! * **Multi-row statements.** Row changes are buffered inside the open transaction and sent
//!   per table as `INSERT … VALUES (…), (…) … ON CONFLICT … DO UPDATE` and `DELETE … WHERE k
//!   IN (…)` (an OR of key equalities for a composite key), keeping per-key order exactly
//!   and never two rows of one key in one upsert (see `super::batch`). Statements are
//!   prepared once per (table, operation, rows per statement: 1, 8, 64 or 256) and kept for
//!   the life of the connection.
//! * **Checkpoint with the rows.** [`Target::begin`] is `BEGIN`; [`Target::commit`] upserts
//!   the writer's row of `_sluice_checkpoint` and `COMMIT`s; [`Target::record_backfill`]
//!   upserts a table's backfill progress (`_sluice_backfill`) in the open transaction.
//!   PostgreSQL DDL is transactional, so [`Target::prepare`] inside an open transaction
//!   creates the tables in it: they commit or roll back with its rows. Outside a transaction `prepare` runs in its own transaction
//!   (all or nothing). A failed statement aborts a PostgreSQL transaction anyway; the target
//!   rolls it back at once, marks it failed and refuses to commit it.
//!
//! Error messages name tables and columns, never row values (values may be personal data):
//! PostgreSQL's `DETAIL` (which quotes rows and keys) is never included, and for data
//! exceptions (SQLSTATE class 22, whose messages end with the offending input) only the text
//! before the value is kept.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytes::BytesMut;
use postgres::types::{to_sql_checked, Format, IsNull, ToSql, Type};
use postgres::{Client, NoTls, Statement};
use sluice_binlog::{Charset, ColumnDef, ColumnKind, Value};

use super::batch::{chunk_sizes, key_identity, value_bytes, Pending};
use super::common::{
    backfill_detail_to_db, backfill_from_db, check_fill_columns, check_row_len, check_table_shape,
    checkpoint_from_rows, definition_json, fill_columns_sql, int_fits, missing_columns, rows_copied_from_db,
    rows_copied_to_db, unix_now, verified_from_row, TxState, BACKFILL_TABLE,
};
use super::{
    number_placeholders, selection_condition, selection_value, BackfillProgress, Checkpoint, RowOp, RowSelection,
    Target, TargetError, TargetResult, TargetTable, VerifiedRecord,
};

const CHECKPOINT_TABLE: &str = "_sluice_checkpoint";
const TABLES_TABLE: &str = "_sluice_tables";

/// PostgreSQL truncates identifiers to `NAMEDATALEN - 1` bytes.
const MAX_IDENTIFIER_BYTES: usize = 63;

const SESSION_INIT: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'";

/// The target column type for a source column (docs/type-mapping.md).
pub fn postgres_type(column: &ColumnDef) -> String {
    let unsigned = column.unsigned;
    let ty = match column.kind {
        ColumnKind::TinyInt | ColumnKind::Year => "smallint",
        ColumnKind::SmallInt if unsigned => "integer",
        ColumnKind::SmallInt => "smallint",
        ColumnKind::MediumInt => "integer",
        ColumnKind::Int if unsigned => "bigint",
        ColumnKind::Int => "integer",
        ColumnKind::BigInt if unsigned => "numeric(20,0)",
        ColumnKind::BigInt => "bigint",
        // BIT(n) is an unsigned n-bit number; BIT(64) (or unknown width) can exceed bigint.
        ColumnKind::Bit if (1..=63).contains(&column.length) => "bigint",
        ColumnKind::Bit => "numeric(20,0)",
        ColumnKind::Float => "real",
        ColumnKind::Double => "double precision",
        ColumnKind::Decimal if decimal_known(column) => {
            return format!("numeric({},{})", column.precision, column.scale)
        }
        // Unknown precision: unconstrained numeric keeps the value and its scale exactly.
        ColumnKind::Decimal => "numeric",
        ColumnKind::Date => "date",
        // TIME ranges over ±838:59:59, beyond PostgreSQL's time of day.
        ColumnKind::Time => "interval",
        ColumnKind::DateTime => return format!("timestamp({}) without time zone", column.fsp.min(6)),
        ColumnKind::Timestamp => return format!("timestamp({}) with time zone", column.fsp.min(6)),
        ColumnKind::Text if is_undecoded(column) => "bytea",
        ColumnKind::Text | ColumnKind::Enum | ColumnKind::Set => "text",
        ColumnKind::Binary | ColumnKind::Other => "bytea",
        // `json` keeps the text exactly as written (jsonb would reorder keys, drop duplicates
        // and normalize numbers), and still validates it and supports the JSON operators.
        ColumnKind::Json => "json",
    };
    ty.to_owned()
}

fn decimal_known(column: &ColumnDef) -> bool {
    (1..=65).contains(&column.precision) && column.scale <= column.precision
}

/// Character data in a charset sluice doesn't decode arrives as bytes.
fn is_undecoded(column: &ColumnDef) -> bool {
    column.kind == ColumnKind::Text && matches!(column.charset, Charset::Binary | Charset::Other(_))
}

/// Quotes an identifier: wrapped in double quotes, embedded double quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn check_identifier(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("empty {what} name"));
    }
    if name.contains('\0') {
        return Err(format!("{what} name {name} contains a NUL character"));
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(format!(
            "{what} name {name} is {} bytes long, but PostgreSQL identifiers hold at most {MAX_IDENTIFIER_BYTES} bytes",
            name.len()
        ));
    }
    Ok(())
}

fn validate_table(table: &TargetTable) -> TargetResult<()> {
    let fail = |why: String| Err(TargetError::Other(format!("table {}: {why}", table.name)));
    if let Err(why) = check_identifier("table", &table.name) {
        return fail(why);
    }
    for column in &table.columns {
        if let Err(why) = check_identifier("column", &column.name) {
            return fail(why);
        }
    }
    check_table_shape(table)
}

/// One bound parameter: text format (parsed by the column type's input function) or raw
/// bytes in binary format (for `bytea`).
#[derive(Debug)]
enum Param<'a> {
    Null,
    Text(Cow<'a, str>),
    Bytes(&'a [u8]),
}

impl ToSql for Param<'_> {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Param::Null => Ok(IsNull::Yes),
            Param::Text(s) => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            Param::Bytes(b) => {
                out.extend_from_slice(b);
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        // The server parses text-format values with the column's input function.
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        match self {
            Param::Bytes(_) => Format::Binary,
            Param::Null | Param::Text(_) => Format::Text,
        }
    }

    to_sql_checked!();
}

/// Why a value can't be bound.
enum Refusal {
    /// The value's variant doesn't belong in the column.
    WrongKind,
    /// The value is valid for the source but PostgreSQL can't represent it.
    Unrepresentable(&'static str),
}

fn no_nul(s: &str) -> Result<Param<'_>, Refusal> {
    if s.contains('\0') {
        Err(Refusal::Unrepresentable(
            "text containing a NUL character (PostgreSQL text cannot hold U+0000)",
        ))
    } else {
        Ok(Param::Text(Cow::Borrowed(s)))
    }
}

const ZERO_DATE: &str = "a zero or partial date (PostgreSQL has no year 0, month 0 or day 0)";

/// Converts a value for a column (the accepted variants are those of the SQLite target,
/// docs/type-mapping.md).
fn to_param<'a>(value: &'a Value, column: &ColumnDef) -> Result<Param<'a>, Refusal> {
    let kind = column.kind;
    let integer = kind.is_integer() || matches!(kind, ColumnKind::Year | ColumnKind::Bit);
    let owned = |s: String| Ok(Param::Text(Cow::Owned(s)));
    match value {
        Value::Null => Ok(Param::Null),
        Value::Int(v) if integer && int_fits(column, i128::from(*v)) => owned(v.to_string()),
        Value::Year(v) if integer && int_fits(column, i128::from(*v)) => owned(v.to_string()),
        Value::UInt(v) | Value::Bit(v) if integer && int_fits(column, i128::from(*v)) => owned(v.to_string()),
        // Shortest round-tripping forms; the server's float parsers are correctly rounded.
        Value::Float(v) if matches!(kind, ColumnKind::Float | ColumnKind::Double) => owned(format!("{v:e}")),
        Value::Double(v) if matches!(kind, ColumnKind::Float | ColumnKind::Double) => owned(format!("{v:e}")),
        Value::Decimal(s) if kind == ColumnKind::Decimal => Ok(Param::Text(Cow::Borrowed(s))),
        Value::Date { year, month, day } if kind == ColumnKind::Date => {
            if *year == 0 || *month == 0 || *day == 0 {
                return Err(Refusal::Unrepresentable(ZERO_DATE));
            }
            owned(value.to_string())
        }
        Value::Time { .. } if kind == ColumnKind::Time => owned(value.to_string()),
        Value::DateTime { year, month, day, .. } if kind == ColumnKind::DateTime => {
            if *year == 0 || *month == 0 || *day == 0 {
                return Err(Refusal::Unrepresentable(ZERO_DATE));
            }
            owned(value.to_string())
        }
        Value::Timestamp { seconds, micros } if kind == ColumnKind::Timestamp => {
            if *seconds == 0 && *micros == 0 {
                return Err(Refusal::Unrepresentable(
                    "the zero TIMESTAMP 0000-00-00 00:00:00 (PostgreSQL has no such instant)",
                ));
            }
            // Printed in UTC; the offset makes the instant independent of the session.
            owned(format!("{value}+00"))
        }
        Value::Text(s) if matches!(kind, ColumnKind::Enum | ColumnKind::Set | ColumnKind::Json) => no_nul(s),
        Value::Text(s) if kind == ColumnKind::Text && is_undecoded(column) => Ok(Param::Bytes(s.as_bytes())),
        Value::Text(s) if kind == ColumnKind::Text => no_nul(s),
        Value::Enum(s) if kind == ColumnKind::Enum => no_nul(s),
        Value::Set(s) if kind == ColumnKind::Set => no_nul(s),
        Value::Json(s) if kind == ColumnKind::Json => no_nul(s),
        Value::Bytes(b) if matches!(kind, ColumnKind::Binary | ColumnKind::Other) || is_undecoded(column) => {
            Ok(Param::Bytes(b))
        }
        _ => Err(Refusal::WrongKind),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum StmtKind {
    Upsert,
    Delete,
}

/// Everything sluice derives once per target table: column types and the pieces of its
/// statement texts.
struct TablePlan {
    table: Arc<TargetTable>,
    types: Vec<String>,
    /// `INSERT INTO s.t (c1, c2, …) VALUES `
    upsert_head: String,
    /// ` ON CONFLICT (k…) DO …`
    upsert_tail: String,
    /// `DELETE FROM s.t WHERE `
    delete_head: String,
    /// The quoted key columns.
    key_cols: Vec<String>,
}

impl TablePlan {
    fn new(table: Arc<TargetTable>, schema: &str) -> TargetResult<TablePlan> {
        validate_table(&table)?;
        let types: Vec<String> = table.columns.iter().map(|c| postgres_type(&c.source)).collect();
        let name = format!("{}.{}", quote_ident(schema), quote_ident(&table.name));
        let cols: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let key_cols: Vec<String> = table.key.iter().map(|&k| cols[k].clone()).collect();
        let non_key: Vec<usize> = (0..cols.len()).filter(|i| !table.key.contains(i)).collect();
        let conflict_action = if non_key.is_empty() {
            "NOTHING".to_owned()
        } else {
            let sets: Vec<String> = non_key
                .iter()
                .map(|&i| format!("{c} = EXCLUDED.{c}", c = cols[i]))
                .collect();
            format!("UPDATE SET {}", sets.join(", "))
        };
        let upsert_head = format!("INSERT INTO {name} ({}) VALUES ", cols.join(", "));
        let upsert_tail = format!(" ON CONFLICT ({}) DO {conflict_action}", key_cols.join(", "));
        Ok(TablePlan {
            table,
            types,
            upsert_head,
            upsert_tail,
            delete_head: format!("DELETE FROM {name} WHERE "),
            key_cols,
        })
    }

    /// Parameters per row of statement `kind`.
    fn params_per_row(&self, kind: StmtKind) -> usize {
        match kind {
            StmtKind::Upsert => self.table.columns.len(),
            StmtKind::Delete => self.table.key.len(),
        }
    }

    /// The text of statement `kind` for `rows` rows: one multi-row upsert (never two rows of
    /// one key, see `super::batch`), or a delete of `rows` keys (`k IN ($1, …)`, or an OR of
    /// key equalities for a composite key).
    fn sql(&self, kind: StmtKind, rows: usize) -> String {
        let per_row = self.params_per_row(kind);
        let tuple = |r: usize, sep: &str, f: &dyn Fn(usize, usize) -> String| {
            (0..per_row)
                .map(|i| f(i, r * per_row + i + 1))
                .collect::<Vec<_>>()
                .join(sep)
        };
        match kind {
            StmtKind::Upsert => {
                let values: Vec<String> = (0..rows)
                    .map(|r| format!("({})", tuple(r, ", ", &|_, n| format!("${n}"))))
                    .collect();
                format!("{}{}{}", self.upsert_head, values.join(", "), self.upsert_tail)
            }
            StmtKind::Delete if per_row == 1 => {
                let list: Vec<String> = (1..=rows).map(|n| format!("${n}")).collect();
                format!("{}{} IN ({})", self.delete_head, self.key_cols[0], list.join(", "))
            }
            StmtKind::Delete => {
                let terms: Vec<String> = (0..rows)
                    .map(|r| {
                        format!(
                            "({})",
                            tuple(r, " AND ", &|i, n| format!("{} = ${n}", self.key_cols[i]))
                        )
                    })
                    .collect();
                format!("{}{}", self.delete_head, terms.join(" OR "))
            }
        }
    }

    fn not_null(&self, i: usize) -> bool {
        !self.table.columns[i].source.nullable || self.table.key.contains(&i)
    }

    fn create_sql(&self, schema: &str) -> String {
        let t = &self.table;
        let mut defs: Vec<String> = t
            .columns
            .iter()
            .zip(&self.types)
            .enumerate()
            .map(|(i, (c, ty))| {
                let not_null = if self.not_null(i) { " NOT NULL" } else { "" };
                format!("{} {ty}{not_null}", quote_ident(&c.name))
            })
            .collect();
        let key: Vec<String> = t.key.iter().map(|&k| quote_ident(&t.columns[k].name)).collect();
        defs.push(format!("PRIMARY KEY ({})", key.join(", ")));
        format!(
            "CREATE TABLE {}.{} (\n    {}\n)",
            quote_ident(schema),
            quote_ident(&t.name),
            defs.join(",\n    ")
        )
    }

    /// The JSON description stored in `_sluice_tables.definition`.
    fn definition_json(&self) -> TargetResult<String> {
        definition_json(&self.table, &self.types, &[])
    }

    /// Converts `value` for column `i`, or names the column when the value doesn't fit.
    fn bind<'a>(&self, i: usize, value: &'a Value) -> TargetResult<Param<'a>> {
        let column = &self.table.columns[i].source;
        to_param(value, column).map_err(|refusal| {
            let prefix = format!(
                "table {}: column {} ({:?} stored as {})",
                self.table.name, self.table.columns[i].name, column.kind, self.types[i],
            );
            TargetError::Other(match refusal {
                Refusal::WrongKind => format!("{prefix} cannot hold a {} value", value.kind()),
                Refusal::Unrepresentable(what) => format!("{prefix} cannot store {what}"),
            })
        })
    }

    fn bind_row<'a>(&self, row: &'a [Value]) -> TargetResult<Vec<Param<'a>>> {
        self.check_len(row)?;
        row.iter().enumerate().map(|(i, v)| self.bind(i, v)).collect()
    }

    fn bind_key<'a>(&self, row: &'a [Value]) -> TargetResult<Vec<Param<'a>>> {
        self.check_len(row)?;
        self.table.key.iter().map(|&k| self.bind(k, &row[k])).collect()
    }

    fn check_len(&self, row: &[Value]) -> TargetResult<()> {
        check_row_len(&self.table, row)
    }

    /// The column names a statement's `$n` parameters stand for (`rows` rows).
    fn param_columns(&self, kind: StmtKind, rows: usize) -> Vec<&str> {
        let one: Vec<&str> = match kind {
            StmtKind::Upsert => self.table.columns.iter().map(|c| c.name.as_str()).collect(),
            StmtKind::Delete => self
                .table
                .key
                .iter()
                .map(|&k| self.table.columns[k].name.as_str())
                .collect(),
        };
        one.repeat(rows)
    }
}

/// A message without row values: severity, SQLSTATE and message, for data exceptions cut
/// before the quoted input, plus the column when PostgreSQL names one (or a parameter
/// number maps to one).
fn error_message(e: &postgres::Error, params: &[&str]) -> String {
    let Some(db) = e.as_db_error() else {
        return e.to_string();
    };
    let code = db.code().code();
    let mut message = db.message().to_owned();
    if code.starts_with("22") {
        if let Some(i) = message.find(": ") {
            message.truncate(i);
        }
    }
    let mut out = format!("{} {code}: {message}", db.severity());
    let column = db.column().map(str::to_owned).or_else(|| {
        // "unnamed portal parameter $3 = '…'": the parameter number, never the value.
        let context = db.where_()?;
        let digits: String = context
            .split("parameter $")
            .nth(1)?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let n: usize = digits.parse().ok()?;
        params.get(n.checked_sub(1)?).map(|c| (*c).to_owned())
    });
    if let Some(column) = column {
        out.push_str(&format!(" (column {column})"));
    }
    out
}

/// Whether the connection is gone after `e` (closed, I/O failure, or a server error that
/// ends the session: FATAL/PANIC, connection exceptions, administrator shutdown).
fn connection_lost(e: &postgres::Error) -> bool {
    if e.is_closed() || e.source().is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some()) {
        return true;
    }
    e.as_db_error().is_some_and(|db| {
        let code = db.code().code();
        matches!(db.severity(), "FATAL" | "PANIC") || code.starts_with("08") || code.starts_with("57P")
    })
}

fn db_error(operation: &'static str, table: &str, e: &postgres::Error) -> TargetError {
    TargetError::Database {
        operation,
        table: table.to_owned(),
        message: error_message(e, &[]),
    }
}

/// Runs `f` directly, or on a scoped thread when the caller is inside a tokio runtime (the
/// sync client's own runtime can't be started there).
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|scope| {
        scope
            .spawn(f)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The client, closed off any tokio runtime when dropped (closing blocks on the client's own
/// runtime, which can't run inside another).
struct Conn(Option<Client>);

impl Deref for Conn {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.0.as_ref().expect("the client is only taken when dropped")
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        self.0.as_mut().expect("the client is only taken when dropped")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            off_runtime(move || drop(client));
        }
    }
}

/// A PostgreSQL schema sluice replicates into.
pub struct PostgresTarget {
    conn_str: String,
    schema: String,
    client: Conn,
    plans: HashMap<String, TablePlan>,
    /// Prepared row statements by (table, kind, rows per statement); at most
    /// `BATCH_SIZES.len()` per table and kind.
    statements: HashMap<(String, StmtKind, usize), Statement>,
    /// Row changes of the open transaction not yet sent (see `super::batch`): whole rows to
    /// upsert, key values to delete.
    pending: Pending<Vec<Value>>,
    checkpoint_statement: Option<Statement>,
    backfill_statement: Option<Statement>,
    /// Prepared verification reads by SQL text (see [`Target::read_rows`]); bounded.
    read_statements: HashMap<String, Statement>,
    state: TxState,
    /// The connection failed and must be replaced (set from error paths that only have `&self`).
    lost: Cell<bool>,
}

impl PostgresTarget {
    /// Connects with a libpq-style connection string or URL
    /// (`host=… port=… user=… dbname=…` or `postgresql://user@host:port/db`; no TLS) and
    /// writes into `schema`, which [`Target::prepare`] creates when missing.
    pub fn connect(conn_str: &str, schema: &str) -> TargetResult<PostgresTarget> {
        check_identifier("schema", schema).map_err(|why| TargetError::Other(format!("target {why}")))?;
        let client = off_runtime(|| open_client(conn_str)).map_err(|e| db_error("connect", schema, &e))?;
        Ok(PostgresTarget {
            conn_str: conn_str.to_owned(),
            schema: schema.to_owned(),
            client: Conn(Some(client)),
            plans: HashMap::new(),
            statements: HashMap::new(),
            pending: Pending::default(),
            checkpoint_statement: None,
            backfill_statement: None,
            read_statements: HashMap::new(),
            state: TxState::Idle,
            lost: Cell::new(false),
        })
    }

    /// The schema the target writes into.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    fn qualified(&self, table: &str) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(table))
    }

    /// Maps a client error, remembering when the connection itself failed.
    fn fail(&self, operation: &'static str, table: &str, e: &postgres::Error) -> TargetError {
        if connection_lost(e) {
            self.lost.set(true);
        }
        db_error(operation, table, e)
    }

    /// Replaces a failed connection (only ever called with no transaction open).
    fn ensure_connected(&mut self) -> TargetResult<()> {
        if !self.lost.get() && !self.client.is_closed() {
            return Ok(());
        }
        let client = open_client(&self.conn_str).map_err(|e| db_error("reconnect", &self.schema, &e))?;
        self.statements.clear();
        self.checkpoint_statement = None;
        self.backfill_statement = None;
        self.read_statements.clear();
        self.client = Conn(Some(client));
        self.lost.set(false);
        Ok(())
    }

    fn plan(&mut self, table: &Arc<TargetTable>) -> TargetResult<()> {
        let fresh = match self.plans.get_mut(&table.name) {
            Some(plan) if Arc::ptr_eq(&plan.table, table) => false,
            Some(plan) if *plan.table == **table => {
                plan.table = Arc::clone(table);
                false
            }
            _ => true,
        };
        if fresh {
            let plan = TablePlan::new(Arc::clone(table), &self.schema)?;
            // Buffered rows were checked against the old definition: send them first.
            self.flush()?;
            // Dropping a statement closes it on the server.
            self.statements.retain(|(t, _, _), _| *t != table.name);
            self.plans.insert(table.name.clone(), plan);
        }
        Ok(())
    }

    /// Executes the table's prepared statement `kind` for `rows` rows with `params`.
    fn execute(&mut self, name: &str, kind: StmtKind, rows: usize, params: &[Param<'_>]) -> TargetResult<()> {
        let operation = match kind {
            StmtKind::Upsert => "upsert",
            StmtKind::Delete => "delete",
        };
        let plan = &self.plans[name];
        let cache_key = (name.to_owned(), kind, rows);
        if !self.statements.contains_key(&cache_key) {
            let sql = plan.sql(kind, rows);
            let stmt = self.client.prepare(&sql).map_err(|e| self.fail(operation, name, &e))?;
            self.statements.insert(cache_key.clone(), stmt);
        }
        let stmt = &self.statements[&cache_key];
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        self.client.execute(stmt, &refs).map_err(|e| {
            if connection_lost(&e) {
                self.lost.set(true);
            }
            TargetError::Database {
                operation,
                table: name.to_owned(),
                message: error_message(&e, &plan.param_columns(kind, rows)),
            }
        })?;
        Ok(())
    }

    /// Buffers one row change (see `super::batch`), flushing when the buffer is full. Values
    /// are checked (bound) now, so a value the column can't hold fails here, and bound again
    /// from the buffered copy when sent.
    fn apply_op(&mut self, op: &RowOp) -> TargetResult<()> {
        let table = match op {
            RowOp::Insert { table, .. } | RowOp::Update { table, .. } | RowOp::Delete { table, .. } => table,
        };
        self.plan(table)?;
        let name = table.name.as_str();
        let plan = &self.plans[name];
        let key_of = |row: &[Value]| key_identity(plan.table.key.iter().map(|&k| &row[k]));
        let key_values = |row: &[Value]| plan.table.key.iter().map(|&k| row[k].clone()).collect::<Vec<_>>();
        let bytes = |row: &[Value]| row.iter().map(value_bytes).sum::<usize>();
        match op {
            RowOp::Insert { row, .. } => {
                plan.bind_row(row)?;
                self.pending.upsert(name, key_of(row), row.clone(), bytes(row));
            }
            RowOp::Delete { row, .. } => {
                plan.bind_key(row)?;
                self.pending.delete(name, key_of(row), key_values(row), 0);
            }
            RowOp::Update { before, after, .. } => {
                plan.check_len(before)?;
                plan.bind_row(after)?;
                if !plan.table.key.iter().all(|&k| before[k] == after[k]) {
                    plan.bind_key(before)?;
                    self.pending.delete(name, key_of(before), key_values(before), 0);
                }
                self.pending.upsert(name, key_of(after), after.clone(), bytes(after));
            }
        }
        if self.pending.is_full() {
            self.flush()?;
        }
        Ok(())
    }

    fn column_gaps_impl(&mut self, tables: &[Arc<TargetTable>]) -> TargetResult<Vec<(String, Vec<usize>)>> {
        if self.state != TxState::Open {
            self.ensure_connected()?;
        }
        let existing = self.existing_tables()?;
        let mut gaps = Vec::new();
        for table in tables {
            if let Some(columns) = existing.get(&table.name) {
                let missing = missing_columns(table, columns)?;
                if !missing.is_empty() {
                    gaps.push((table.name.clone(), missing));
                }
            }
        }
        Ok(gaps)
    }

    fn fill_columns_impl(&mut self, table: &Arc<TargetTable>, columns: &[usize], row: &[Value]) -> TargetResult<()> {
        self.state.require_open("fill_columns")?;
        let result = self.fill_columns_now(table, columns, row);
        if result.is_err() {
            // No partial state: abandon the whole target transaction now.
            self.pending.clear();
            self.state = TxState::Failed;
            let _ = self.rollback_now();
        }
        result
    }

    /// One row's column-only backfill write, after the buffered changes (per-key order).
    /// One statement per row: it must not insert a row the target lacks, which the
    /// multi-row upserts would.
    fn fill_columns_now(&mut self, table: &Arc<TargetTable>, columns: &[usize], row: &[Value]) -> TargetResult<()> {
        check_fill_columns(table, columns)?;
        self.flush()?;
        self.plan(table)?;
        let qualified = self.qualified(&table.name);
        let plan = &self.plans[table.name.as_str()];
        plan.check_len(row)?;
        let mut params = Vec::with_capacity(columns.len() + plan.table.key.len());
        for &c in columns {
            params.push(plan.bind(c, &row[c])?);
        }
        params.extend(plan.bind_key(row)?);
        let sql = fill_columns_sql(&plan.table, &qualified, columns, quote_ident, |n| format!("${n}"));
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let result = self.client.execute(sql.as_str(), &refs);
        result
            .map(|_| ())
            .map_err(|e| self.fail("fill columns", &table.name, &e))
    }

    /// Sends every buffered row change: per table, its deletes, then its upserts, as
    /// multi-row statements of the fixed sizes.
    fn flush(&mut self) -> TargetResult<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        for table in self.pending.take() {
            let name = table.name.as_str();
            let upserts: Vec<&Vec<Value>> = table.upsert_rows().collect();
            let deletes: Vec<&Vec<Value>> = table.deletes.iter().collect();
            for (kind, rows) in [(StmtKind::Delete, deletes), (StmtKind::Upsert, upserts)] {
                let plan = &self.plans[name];
                let sizes = chunk_sizes(rows.len(), plan.params_per_row(kind));
                let mut start = 0;
                for size in sizes {
                    let plan = &self.plans[name];
                    let mut params = Vec::with_capacity(size * plan.params_per_row(kind));
                    for row in &rows[start..start + size] {
                        match kind {
                            StmtKind::Upsert => params.extend(plan.bind_row(row)?),
                            StmtKind::Delete => {
                                for (i, &k) in plan.table.key.iter().enumerate() {
                                    params.push(plan.bind(k, &row[i])?);
                                }
                            }
                        }
                    }
                    start += size;
                    self.execute(name, kind, size, &params)?;
                }
            }
        }
        Ok(())
    }

    /// [`PostgresTarget::flush`] inside the open transaction; a failure rolls it back whole.
    fn flush_or_abandon(&mut self) -> TargetResult<()> {
        let result = self.flush();
        if result.is_err() {
            self.state = TxState::Failed;
            let _ = self.rollback_now();
        }
        result
    }

    /// Column names of every relation in the schema, in order.
    fn existing_tables(&mut self) -> TargetResult<HashMap<String, Vec<String>>> {
        let rows = self
            .client
            .query(
                "SELECT c.relname::text, a.attname::text \
                 FROM pg_catalog.pg_attribute a \
                 JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
                   AND a.attnum > 0 AND NOT a.attisdropped \
                 ORDER BY c.relname, a.attnum",
                &[&self.schema],
            )
            .map_err(|e| self.fail("inspect tables", &self.schema, &e))?;
        let mut tables: HashMap<String, Vec<String>> = HashMap::new();
        for row in rows {
            tables.entry(row.get(0)).or_default().push(row.get(1));
        }
        Ok(tables)
    }

    /// Creates the schema, the bookkeeping tables and the missing tables, inside the open
    /// transaction.
    fn prepare_in_tx(&mut self, tables: &[Arc<TargetTable>]) -> TargetResult<()> {
        for table in tables {
            self.plan(table)?;
        }
        let schema_exists = !self
            .client
            .query(
                "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1",
                &[&self.schema],
            )
            .map_err(|e| self.fail("inspect schema", &self.schema, &e))?
            .is_empty();
        if !schema_exists {
            self.client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(&self.schema)))
                .map_err(|e| self.fail("create schema", &self.schema, &e))?;
        }
        let bookkeeping = format!(
            "CREATE TABLE IF NOT EXISTS {checkpoint} (
                \"writer\" integer PRIMARY KEY,
                \"position\" text NOT NULL,
                \"applied\" text NOT NULL,
                \"source_commit_unix\" bigint NOT NULL,
                \"updated_at_unix\" bigint NOT NULL
            );
            CREATE TABLE IF NOT EXISTS {tables} (
                \"name\" text PRIMARY KEY,
                \"source_name\" text NOT NULL,
                \"definition\" text NOT NULL,
                \"created_at_unix\" bigint NOT NULL
            );
            CREATE TABLE IF NOT EXISTS {backfill} (
                \"name\" text PRIMARY KEY,
                \"done\" boolean NOT NULL,
                \"last_key\" text,
                \"rows_copied\" bigint NOT NULL,
                \"updated_at_unix\" bigint NOT NULL,
                \"detail\" text
            );
            CREATE TABLE IF NOT EXISTS {lag} (
                \"id\" smallint PRIMARY KEY,
                \"source\" text NOT NULL,
                \"p50_us\" bigint NOT NULL,
                \"p99_us\" bigint NOT NULL,
                \"p999_us\" bigint NOT NULL,
                \"max_us\" bigint NOT NULL,
                \"samples\" bigint NOT NULL,
                \"window_ms\" bigint NOT NULL,
                \"updated_at_us\" bigint NOT NULL
            )",
            checkpoint = self.qualified(CHECKPOINT_TABLE),
            tables = self.qualified(TABLES_TABLE),
            backfill = self.qualified(BACKFILL_TABLE),
            lag = self.qualified(LAG_TABLE),
        );
        let existing = self.existing_tables()?;
        if [CHECKPOINT_TABLE, TABLES_TABLE, BACKFILL_TABLE, LAG_TABLE]
            .iter()
            .any(|name| !existing.contains_key(*name))
        {
            self.client
                .batch_execute(&bookkeeping)
                .map_err(|e| self.fail("create bookkeeping tables", "_sluice_*", &e))?;
        }
        if existing
            .get(BACKFILL_TABLE)
            .is_some_and(|columns| !columns.iter().any(|c| c == "detail"))
        {
            // Targets created before `detail` existed.
            let sql = format!(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS \"detail\" text",
                self.qualified(BACKFILL_TABLE)
            );
            self.client
                .batch_execute(&sql)
                .map_err(|e| self.fail("add column detail", BACKFILL_TABLE, &e))?;
        }
        for table in tables {
            let plan = &self.plans[&table.name];
            match existing.get(&table.name) {
                Some(columns) => {
                    for c in missing_columns(&plan.table, columns)? {
                        // Nullable: existing rows hold NULL until the column-only backfill.
                        let sql = format!(
                            "ALTER TABLE {} ADD COLUMN {} {}",
                            self.qualified(&table.name),
                            quote_ident(&plan.table.columns[c].name),
                            plan.types[c]
                        );
                        self.client
                            .batch_execute(&sql)
                            .map_err(|e| self.fail("add column", &table.name, &e))?;
                    }
                }
                None => {
                    let sql = plan.create_sql(&self.schema);
                    self.client
                        .batch_execute(&sql)
                        .map_err(|e| self.fail("create table", &table.name, &e))?;
                }
            }
        }
        let record = format!(
            "INSERT INTO {} (\"name\", \"source_name\", \"definition\", \"created_at_unix\") \
             VALUES ($1, $2, $3, $4) ON CONFLICT (\"name\") DO NOTHING",
            self.qualified(TABLES_TABLE)
        );
        let record = self
            .client
            .prepare(&record)
            .map_err(|e| self.fail("record table", TABLES_TABLE, &e))?;
        let now = unix_now();
        for table in tables {
            let plan = &self.plans[&table.name];
            let definition = plan.definition_json()?;
            self.client
                .execute(&record, &[&table.name, &plan.table.source_name, &definition, &now])
                .map_err(|e| self.fail("record table", &table.name, &e))?;
        }
        Ok(())
    }

    fn rollback_now(&mut self) -> TargetResult<()> {
        self.pending.clear();
        if self.lost.get() || self.client.is_closed() {
            // The server rolls back a transaction whose connection is gone.
            return Ok(());
        }
        match self.client.batch_execute("ROLLBACK") {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = self.fail("rollback", "(transaction)", &e);
                if self.lost.get() {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    fn prepare_impl(&mut self, tables: &[Arc<TargetTable>]) -> TargetResult<()> {
        if self.state == TxState::Open {
            self.flush_or_abandon()?;
            return self.prepare_in_tx(tables).inspect_err(|_| {
                let _ = self.rollback_now();
                self.state = TxState::Failed;
            });
        }
        self.ensure_connected()?;
        self.client
            .batch_execute("BEGIN")
            .map_err(|e| self.fail("begin", "(transaction)", &e))?;
        let result = self.prepare_in_tx(tables).and_then(|()| {
            self.client
                .batch_execute("COMMIT")
                .map_err(|e| self.fail("commit", "(transaction)", &e))
        });
        if result.is_err() {
            let _ = self.rollback_now();
        }
        result
    }

    /// Whether one of sluice's own tables exists in the target schema (loads of a table never
    /// created read as empty).
    fn bookkeeping_table_exists(&mut self, operation: &'static str, table: &str) -> TargetResult<bool> {
        let rows = self
            .client
            .query(
                "SELECT 1 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&self.schema, &table],
            )
            .map_err(|e| self.fail(operation, table, &e))?;
        Ok(!rows.is_empty())
    }

    fn load_checkpoint_impl(&mut self) -> TargetResult<Option<Checkpoint>> {
        if self.state != TxState::Open {
            self.ensure_connected()?;
        }
        if !self.bookkeeping_table_exists("load checkpoint", CHECKPOINT_TABLE)? {
            return Ok(None);
        }
        let sql = format!(
            "SELECT \"position\", \"applied\", \"source_commit_unix\" FROM {}",
            self.qualified(CHECKPOINT_TABLE)
        );
        let rows = self
            .client
            .query(&sql, &[])
            .map_err(|e| self.fail("load checkpoint", CHECKPOINT_TABLE, &e))?;
        let rows: Vec<(String, String, i64)> = rows.iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect();
        checkpoint_from_rows(rows)
    }

    fn begin_impl(&mut self) -> TargetResult<()> {
        if self.state == TxState::Open {
            return Err(TargetError::Other("begin called while a transaction is open".into()));
        }
        self.pending.clear();
        self.ensure_connected()?;
        if let Err(e) = self.client.batch_execute("BEGIN") {
            let err = self.fail("begin", "(transaction)", &e);
            if !self.lost.get() && !self.client.is_closed() {
                return Err(err);
            }
            // The connection was gone (server restart, idle timeout): nothing was open on
            // it, so reconnect and start over once.
            self.ensure_connected()?;
            self.client
                .batch_execute("BEGIN")
                .map_err(|e| self.fail("begin", "(transaction)", &e))?;
        }
        self.state = TxState::Open;
        Ok(())
    }

    fn apply_impl(&mut self, op: &RowOp) -> TargetResult<()> {
        self.state.require_open("apply")?;
        let result = self.apply_op(op);
        if result.is_err() {
            // No partial state: abandon the whole target transaction now.
            self.state = TxState::Failed;
            let _ = self.rollback_now();
        }
        result
    }

    fn write_checkpoint(&mut self, checkpoint: &Checkpoint) -> TargetResult<()> {
        if self.checkpoint_statement.is_none() {
            let sql = format!(
                "INSERT INTO {} (\"writer\", \"position\", \"applied\", \"source_commit_unix\", \"updated_at_unix\") \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (\"writer\") DO UPDATE SET \
                 \"position\" = EXCLUDED.\"position\", \"applied\" = EXCLUDED.\"applied\", \
                 \"source_commit_unix\" = EXCLUDED.\"source_commit_unix\", \"updated_at_unix\" = EXCLUDED.\"updated_at_unix\"",
                self.qualified(CHECKPOINT_TABLE)
            );
            let stmt = self
                .client
                .prepare(&sql)
                .map_err(|e| self.fail("write checkpoint", CHECKPOINT_TABLE, &e))?;
            self.checkpoint_statement = Some(stmt);
        }
        let stmt = self.checkpoint_statement.as_ref().expect("prepared above");
        let writer = i32::from(checkpoint.writer);
        let position = checkpoint.position.to_string();
        let applied = checkpoint.applied_text();
        let commit_unix = i64::from(checkpoint.source_commit_unix);
        let now = unix_now();
        self.client
            .execute(stmt, &[&writer, &position, &applied, &commit_unix, &now])
            .map_err(|e| self.fail("write checkpoint", CHECKPOINT_TABLE, &e))?;
        self.client
            .batch_execute("COMMIT")
            .map_err(|e| self.fail("commit", "(transaction)", &e))
    }

    fn write_backfill(&mut self, progress: &BackfillProgress) -> TargetResult<()> {
        let table = progress.table.as_str();
        let rows_copied = rows_copied_to_db(progress)?;
        if progress.last_key.as_deref().is_some_and(|k| k.contains('\0')) {
            return Err(TargetError::Other(format!(
                "table {table}: the backfill key contains a NUL character, which PostgreSQL text cannot hold"
            )));
        }
        if self.backfill_statement.is_none() {
            let sql = format!(
                "INSERT INTO {} (\"name\", \"done\", \"last_key\", \"rows_copied\", \"updated_at_unix\", \"detail\") \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (\"name\") DO UPDATE SET \
                 \"done\" = EXCLUDED.\"done\", \"last_key\" = EXCLUDED.\"last_key\", \
                 \"rows_copied\" = EXCLUDED.\"rows_copied\", \"updated_at_unix\" = EXCLUDED.\"updated_at_unix\", \
                 \"detail\" = EXCLUDED.\"detail\"",
                self.qualified(BACKFILL_TABLE)
            );
            let stmt = self
                .client
                .prepare(&sql)
                .map_err(|e| self.fail("record backfill", BACKFILL_TABLE, &e))?;
            self.backfill_statement = Some(stmt);
        }
        let stmt = self.backfill_statement.as_ref().expect("prepared above");
        let last_key = progress.last_key.as_deref();
        let now = unix_now();
        // NUL cannot be stored in PostgreSQL text; the detail is informational.
        let detail = backfill_detail_to_db(progress).replace('\0', "");
        self.client
            .execute(stmt, &[&table, &progress.done, &last_key, &rows_copied, &now, &detail])
            .map_err(|e| self.fail("record backfill", table, &e))?;
        Ok(())
    }

    fn record_backfill_impl(&mut self, progress: &BackfillProgress) -> TargetResult<()> {
        self.state.require_open("record_backfill")?;
        let result = self.flush().and_then(|()| self.write_backfill(progress));
        if result.is_err() {
            // No partial state: abandon the whole target transaction now.
            self.state = TxState::Failed;
            let _ = self.rollback_now();
        }
        result
    }

    fn recorded_tables_impl(&mut self) -> TargetResult<Vec<String>> {
        if self.state != TxState::Open {
            self.ensure_connected()?;
        }
        if !self.bookkeeping_table_exists("list tables", TABLES_TABLE)? {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT t.\"name\" FROM {} t WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = t.\"name\") \
             ORDER BY t.\"name\" COLLATE \"C\"",
            self.qualified(TABLES_TABLE)
        );
        let rows = self
            .client
            .query(&sql, &[&self.schema])
            .map_err(|e| self.fail("list tables", TABLES_TABLE, &e))?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    fn empty_table_impl(&mut self, table: &Arc<TargetTable>) -> TargetResult<()> {
        self.state.require_open("empty_table")?;
        self.flush_or_abandon()?;
        let sql = format!("DELETE FROM {}", self.qualified(&table.name));
        if let Err(e) = self.client.batch_execute(&sql) {
            let e = self.fail("empty table", &table.name, &e);
            self.state = TxState::Failed;
            let _ = self.rollback_now();
            return Err(e);
        }
        Ok(())
    }

    fn drop_table_impl(&mut self, name: &str) -> TargetResult<()> {
        self.begin_impl()?;
        let drop = format!("DROP TABLE IF EXISTS {}", self.qualified(name));
        let forget_table = format!("DELETE FROM {} WHERE \"name\" = $1", self.qualified(TABLES_TABLE));
        let forget_copy = format!("DELETE FROM {} WHERE \"name\" = $1", self.qualified(BACKFILL_TABLE));
        let result = self
            .client
            .batch_execute(&drop)
            .and_then(|()| self.client.execute(&forget_table, &[&name]))
            .and_then(|_| self.client.execute(&forget_copy, &[&name]))
            .map(|_| ())
            .map_err(|e| self.fail("drop table", name, &e));
        self.plans.remove(name);
        self.statements.retain(|(t, _, _), _| t != name);
        match result {
            Ok(()) => self.commit_without_checkpoint_impl(),
            Err(e) => {
                self.state = TxState::Failed;
                let _ = self.rollback_now();
                Err(e)
            }
        }
    }

    fn load_backfill_impl(&mut self) -> TargetResult<Vec<BackfillProgress>> {
        if self.state != TxState::Open {
            self.ensure_connected()?;
        }
        if !self.bookkeeping_table_exists("load backfill", BACKFILL_TABLE)? {
            return Ok(Vec::new());
        }
        // Byte order of the names, whatever the database's collation.
        let sql = format!(
            "SELECT \"name\", \"done\", \"last_key\", \"rows_copied\", \"detail\" FROM {} ORDER BY \"name\" COLLATE \"C\"",
            self.qualified(BACKFILL_TABLE)
        );
        let rows = self
            .client
            .query(&sql, &[])
            .map_err(|e| self.fail("load backfill", BACKFILL_TABLE, &e))?;
        rows.into_iter()
            .map(|row| {
                let table: String = row.get(0);
                let rows_copied: i64 = row.get(3);
                let rows_copied = rows_copied_from_db(&table, rows_copied)?;
                let detail: Option<String> = row.get(4);
                Ok(backfill_from_db(
                    BackfillProgress {
                        table,
                        done: row.get(1),
                        last_key: row.get(2),
                        rows_copied,
                        ..BackfillProgress::default()
                    },
                    detail.as_deref(),
                ))
            })
            .collect()
    }

    fn read_rows_impl(
        &mut self,
        table: &Arc<TargetTable>,
        selection: RowSelection<'_>,
    ) -> TargetResult<Vec<Vec<Value>>> {
        if self.state == TxState::Open {
            // The read must see this transaction's own changes.
            self.flush_or_abandon()?;
        } else {
            self.ensure_connected()?;
        }
        self.plan(table)?;
        let cols: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let keys: Vec<String> = table.key.iter().map(|&k| cols[k].clone()).collect();
        let (condition, binds) = selection_condition(&keys, &selection);
        let select: Vec<String> = table
            .columns
            .iter()
            .zip(&cols)
            .map(|(c, name)| verify_select_expr(&c.source, name))
            .collect();
        let mut sql = format!(
            "SELECT {} FROM {} WHERE {}",
            select.join(", "),
            self.qualified(&table.name),
            number_placeholders(&condition, |n| format!("${n}"))
        );
        if let RowSelection::KeyRange { limit, .. } = selection {
            sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", keys.join(", ")));
        }
        if self.state == TxState::Open {
            // A repair's read: lock the rows until the repair commits.
            sql.push_str(" FOR UPDATE");
        }
        let plan = &self.plans[&table.name];
        let params = binds
            .iter()
            .map(|&(tuple, k)| match selection_value(&selection, (tuple, k)) {
                // A key read back from this target (integers and temporal values come back as
                // text); every parameter is sent as text anyway.
                Value::Text(s) => Ok(Param::Text(Cow::Borrowed(s.as_str()))),
                v => plan.bind(table.key[k], v),
            })
            .collect::<TargetResult<Vec<_>>>()?;
        if !self.read_statements.contains_key(&sql) {
            if self.read_statements.len() >= 64 {
                self.read_statements.clear();
            }
            let stmt = self
                .client
                .prepare(&sql)
                .map_err(|e| self.fail("verify read", &table.name, &e))?;
            self.read_statements.insert(sql.clone(), stmt);
        }
        let stmt = &self.read_statements[&sql];
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let rows = self.client.query(stmt, &refs).map_err(|e| {
            if connection_lost(&e) {
                self.lost.set(true);
            }
            db_error("verify read", &table.name, &e)
        })?;
        rows.iter()
            .map(|row| {
                table
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        verify_read_value(&c.source, row, i).ok_or_else(|| {
                            TargetError::Other(format!(
                                "table {}: column {} came back as an unexpected kind of value",
                                table.name, c.name
                            ))
                        })
                    })
                    .collect()
            })
            .collect()
    }

    fn record_verified_impl(&mut self, record: &VerifiedRecord) -> TargetResult<()> {
        self.ensure_connected()?;
        let table = self.qualified("_sluice_verified");
        let upsert = format!(
            "INSERT INTO {table} (\"id\", \"position\", \"mismatches\", \"unchecked_txns\", \"updated_at_unix\") VALUES (0, $1, $2, $3, $4) \
             ON CONFLICT (\"id\") DO UPDATE SET \"position\" = excluded.\"position\", \"mismatches\" = excluded.\"mismatches\", \
             \"unchecked_txns\" = excluded.\"unchecked_txns\", \"updated_at_unix\" = excluded.\"updated_at_unix\""
        );
        let position = record.position.to_string();
        let (mismatches, unchecked, now) = (record.mismatches as i64, record.unchecked_txns as i64, unix_now());
        let params: [&(dyn ToSql + Sync); 4] = [&position, &mismatches, &unchecked, &now];
        match self.client.execute(&upsert, &params) {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == Some(&postgres::error::SqlState::UNDEFINED_TABLE) => {}
            Err(e) => return Err(self.fail("record verified", "_sluice_verified", &e)),
        }
        // Created on first use.
        let create = format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {table} (\"id\" integer PRIMARY KEY, \"position\" text NOT NULL, \"mismatches\" bigint NOT NULL, \"unchecked_txns\" bigint NOT NULL, \"updated_at_unix\" bigint NOT NULL)",
            schema = quote_ident(&self.schema)
        );
        self.client
            .batch_execute(&create)
            .map_err(|e| self.fail("record verified", "_sluice_verified", &e))?;
        self.client
            .execute(&upsert, &params)
            .map_err(|e| self.fail("record verified", "_sluice_verified", &e))?;
        Ok(())
    }

    fn load_verified_impl(&mut self) -> TargetResult<Option<VerifiedRecord>> {
        if self.state != TxState::Open {
            self.ensure_connected()?;
        }
        if !self.bookkeeping_table_exists("load verified", "_sluice_verified")? {
            return Ok(None);
        }
        let sql = format!(
            "SELECT \"position\", \"mismatches\", \"unchecked_txns\" FROM {} WHERE \"id\" = 0",
            self.qualified("_sluice_verified")
        );
        let rows = self
            .client
            .query(&sql, &[])
            .map_err(|e| self.fail("load verified", "_sluice_verified", &e))?;
        rows.first()
            .map(|r| verified_from_row((r.get(0), r.get(1), r.get(2))))
            .transpose()
    }

    fn commit_without_checkpoint_impl(&mut self) -> TargetResult<()> {
        self.state.require_open_for_commit()?;
        self.flush_or_abandon()?;
        match self.client.batch_execute("COMMIT") {
            Ok(()) => {
                self.state = TxState::Idle;
                Ok(())
            }
            Err(e) => {
                let e = self.fail("commit", "(transaction)", &e);
                self.state = TxState::Failed;
                let _ = self.rollback_now();
                Err(e)
            }
        }
    }

    fn commit_impl(&mut self, checkpoint: &Checkpoint) -> TargetResult<()> {
        self.state.require_open_for_commit()?;
        match self.flush().and_then(|()| self.write_checkpoint(checkpoint)) {
            Ok(()) => {
                self.state = TxState::Idle;
                Ok(())
            }
            Err(e) => {
                self.state = TxState::Failed;
                let _ = self.rollback_now();
                Err(e)
            }
        }
    }
}

/// The select expression that reads a column for verification: FLOAT, DOUBLE and binary data
/// as they are, everything else as text in the canonical form of `crate::verify::canonical`
/// (the session runs with `TimeZone = 'UTC'` and `DateStyle = 'ISO, YMD'`).
fn verify_select_expr(column: &ColumnDef, name: &str) -> String {
    match column.kind {
        ColumnKind::Float | ColumnKind::Double | ColumnKind::Binary | ColumnKind::Other => name.to_owned(),
        ColumnKind::Text if is_undecoded(column) => name.to_owned(),
        // Always 6 fraction digits here; trimmed to MySQL's form in `verify_read_value`.
        ColumnKind::DateTime => format!("to_char({name}, 'YYYY-MM-DD HH24:MI:SS.US')"),
        ColumnKind::Timestamp => format!("to_char({name} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"),
        // TIME is stored as an interval of hours, minutes and seconds: its length in seconds.
        ColumnKind::Time => format!("extract(epoch from {name})::text"),
        _ => format!("{name}::text"),
    }
}

/// Column `i` of a row selected with [`verify_select_expr`] as a [`Value`].
fn verify_read_value(column: &ColumnDef, row: &postgres::Row, i: usize) -> Option<Value> {
    let value = match column.kind {
        ColumnKind::Float => row.try_get::<_, Option<f32>>(i).ok()?.map(Value::Float),
        ColumnKind::Double => row.try_get::<_, Option<f64>>(i).ok()?.map(Value::Double),
        ColumnKind::Binary | ColumnKind::Other => row.try_get::<_, Option<Vec<u8>>>(i).ok()?.map(Value::Bytes),
        ColumnKind::Text if is_undecoded(column) => row.try_get::<_, Option<Vec<u8>>>(i).ok()?.map(Value::Bytes),
        kind => match row.try_get::<_, Option<String>>(i).ok()? {
            None => None,
            Some(text) => Some(Value::Text(match kind {
                ColumnKind::DateTime | ColumnKind::Timestamp => match text.strip_suffix(".000000") {
                    Some(whole) => whole.to_owned(),
                    None => text,
                },
                ColumnKind::Time => interval_text(&text)?,
                _ => text,
            })),
        },
    };
    Some(value.unwrap_or(Value::Null))
}

/// `-45000.500000` (seconds) as MySQL prints a TIME: `-12:30:00.500000`.
fn interval_text(seconds: &str) -> Option<String> {
    let (negative, digits) = match seconds.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, seconds),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let whole: u64 = whole.parse().ok()?;
    let mut micros = String::from(fraction);
    micros.truncate(6);
    while micros.len() < 6 {
        micros.push('0');
    }
    let micros: u32 = micros.parse().ok()?;
    let time = Value::Time {
        negative: negative && (whole > 0 || micros > 0),
        hours: u32::try_from(whole / 3600).ok()?,
        minutes: (whole % 3600 / 60) as u8,
        seconds: (whole % 60) as u8,
        micros,
    };
    Some(time.to_string())
}

fn open_client(conn_str: &str) -> Result<Client, postgres::Error> {
    let mut client = Client::connect(conn_str, NoTls)?;
    client.batch_execute(SESSION_INIT)?;
    Ok(client)
}

impl Target for PostgresTarget {
    fn prepare(&mut self, tables: &[Arc<TargetTable>]) -> TargetResult<()> {
        off_runtime(|| self.prepare_impl(tables))
    }

    fn load_checkpoint(&mut self) -> TargetResult<Option<Checkpoint>> {
        off_runtime(|| self.load_checkpoint_impl())
    }

    fn begin(&mut self) -> TargetResult<()> {
        off_runtime(|| self.begin_impl())
    }

    fn apply(&mut self, op: &RowOp) -> TargetResult<()> {
        off_runtime(|| self.apply_impl(op))
    }

    fn commit(&mut self, checkpoint: &Checkpoint) -> TargetResult<()> {
        off_runtime(|| self.commit_impl(checkpoint))
    }

    fn rollback(&mut self) -> TargetResult<()> {
        off_runtime(|| {
            self.state = TxState::Idle;
            self.rollback_now()
        })
    }

    fn record_backfill(&mut self, progress: &BackfillProgress) -> TargetResult<()> {
        off_runtime(|| self.record_backfill_impl(progress))
    }

    fn load_backfill(&mut self) -> TargetResult<Vec<BackfillProgress>> {
        off_runtime(|| self.load_backfill_impl())
    }

    fn recorded_tables(&mut self) -> TargetResult<Vec<String>> {
        off_runtime(|| self.recorded_tables_impl())
    }

    fn drop_table(&mut self, name: &str) -> TargetResult<()> {
        off_runtime(|| self.drop_table_impl(name))
    }

    fn empty_table(&mut self, table: &Arc<TargetTable>) -> TargetResult<()> {
        off_runtime(|| self.empty_table_impl(table))
    }

    fn column_gaps(&mut self, tables: &[Arc<TargetTable>]) -> TargetResult<Vec<(String, Vec<usize>)>> {
        off_runtime(|| self.column_gaps_impl(tables))
    }

    fn fill_columns(&mut self, table: &Arc<TargetTable>, columns: &[usize], row: &[Value]) -> TargetResult<()> {
        off_runtime(|| self.fill_columns_impl(table, columns, row))
    }

    fn read_rows(&mut self, table: &Arc<TargetTable>, selection: RowSelection<'_>) -> TargetResult<Vec<Vec<Value>>> {
        off_runtime(|| self.read_rows_impl(table, selection))
    }

    fn commit_without_checkpoint(&mut self) -> TargetResult<()> {
        off_runtime(|| self.commit_without_checkpoint_impl())
    }

    fn record_verified(&mut self, record: &VerifiedRecord) -> TargetResult<()> {
        off_runtime(|| self.record_verified_impl(record))
    }

    fn load_verified(&mut self) -> TargetResult<Option<VerifiedRecord>> {
        off_runtime(|| self.load_verified_impl())
    }

    fn record_lag(&mut self, report: &crate::ops::lag::LagReport) -> TargetResult<()> {
        off_runtime(|| self.record_lag_impl(report))
    }

    fn load_lag(&mut self) -> TargetResult<Option<crate::ops::lag::LagReport>> {
        off_runtime(|| self.load_lag_impl())
    }
}

const LAG_TABLE: &str = "_sluice_lag";

/// The lag percentiles (see `crate::ops::lag`): one row, `id` = 1, recorded by writer 0.
impl PostgresTarget {
    fn record_lag_impl(&mut self, report: &crate::ops::lag::LagReport) -> TargetResult<()> {
        self.state.require_open("record_lag")?;
        self.flush_or_abandon()?;
        let [p50, p99, p999, max, samples, window, at] = super::lag_columns(report);
        let sql = format!(
            "INSERT INTO {} (\"id\", \"source\", \"p50_us\", \"p99_us\", \"p999_us\", \"max_us\", \"samples\", \"window_ms\", \"updated_at_us\") \
             VALUES (1, $1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (\"id\") DO UPDATE SET \
             \"source\" = EXCLUDED.\"source\", \"p50_us\" = EXCLUDED.\"p50_us\", \"p99_us\" = EXCLUDED.\"p99_us\", \
             \"p999_us\" = EXCLUDED.\"p999_us\", \"max_us\" = EXCLUDED.\"max_us\", \"samples\" = EXCLUDED.\"samples\", \
             \"window_ms\" = EXCLUDED.\"window_ms\", \"updated_at_us\" = EXCLUDED.\"updated_at_us\"",
            self.qualified(LAG_TABLE)
        );
        let result = self
            .client
            .execute(&sql, &[&report.source, &p50, &p99, &p999, &max, &samples, &window, &at])
            .map(|_| ())
            .map_err(|e| self.fail("record lag", LAG_TABLE, &e));
        if result.is_err() {
            // No partial state: abandon the whole target transaction now.
            self.state = TxState::Failed;
            let _ = self.rollback_now();
        }
        result
    }

    fn load_lag_impl(&mut self) -> TargetResult<Option<crate::ops::lag::LagReport>> {
        if self.state != TxState::Open {
            self.ensure_connected()?;
        }
        if !self.bookkeeping_table_exists("load lag", LAG_TABLE)? {
            return Ok(None);
        }
        let sql = format!(
            "SELECT \"source\", \"p50_us\", \"p99_us\", \"p999_us\", \"max_us\", \"samples\", \"window_ms\", \"updated_at_us\" FROM {} WHERE \"id\" = 1",
            self.qualified(LAG_TABLE)
        );
        let rows = self
            .client
            .query(&sql, &[])
            .map_err(|e| self.fail("load lag", LAG_TABLE, &e))?;
        Ok(rows.first().map(|row| {
            let source: String = row.get(0);
            let mut v = [0i64; 7];
            for (i, slot) in v.iter_mut().enumerate() {
                *slot = row.get(i + 1);
            }
            super::lag_from_columns(&source, v)
        }))
    }
}
