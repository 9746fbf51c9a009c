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
//!   connection is replaced on the next [`Target::begin`](super::Target::begin), [`Target::prepare`](super::Target::prepare) or
//!   [`Target::load_checkpoint`](super::Target::load_checkpoint); the server has rolled back whatever was open on it.
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
//! * **Checkpoint with the rows.** [`Target::begin`](super::Target::begin) is `BEGIN`; [`Target::commit`](super::Target::commit) upserts
//!   the writer's row of `_sluice_checkpoint` and `COMMIT`s; [`Target::record_backfill`](super::Target::record_backfill)
//!   upserts a table's backfill progress (`_sluice_backfill`) in the open transaction.
//!   PostgreSQL DDL is transactional, so [`Target::prepare`](super::Target::prepare) inside an open transaction
//!   creates the tables in it: they commit or roll back with its rows. Outside a transaction `prepare` runs in its own transaction
//!   (all or nothing). A failed statement aborts a PostgreSQL transaction anyway; the target
//!   rolls it back at once, marks it failed and refuses to commit it.
//!
//! The statements, buffering, bookkeeping and transaction handling are shared with the
//! MariaDB target in `super::server`; this file holds the PostgreSQL side of them ([`Postgres`]).
//!
//! Error messages name tables and columns, never row values (values may be personal data):
//! PostgreSQL's `DETAIL` (which quotes rows and keys) is never included, and for data
//! exceptions (SQLSTATE class 22, whose messages end with the offending input) only the text
//! before the value is kept.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::ops::{Deref, DerefMut};

use postgres::types::ToSql;
use postgres::{NoTls, Statement};
use sluice_binlog::{Charset, ColumnDef, ColumnKind, Value};

use super::common::int_fits;
use super::server::{Bookkeeping, Client, Dialect, Plain, Refusal, ServerTarget};
use super::{TargetColumn, TargetError, TargetResult};

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

/// Bound values. A module of its own so that [`Param`] is `pub` for the [`Client`] impl while
/// nothing outside this file can name it.
mod param {
    use std::error::Error as StdError;

    use bytes::BytesMut;
    use postgres::types::{to_sql_checked, Format, IsNull, ToSql, Type};

    /// One bound parameter: text format (parsed by the column type's input function) or raw
    /// bytes in binary format (for `bytea`).
    #[derive(Debug)]
    pub enum Param {
        Null,
        Text(String),
        Bytes(Vec<u8>),
    }

    impl ToSql for Param {
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
}

use param::Param;

fn no_nul(s: &str) -> Result<Param, Refusal> {
    if s.contains('\0') {
        Err(Refusal::Unrepresentable(
            "text containing a NUL character (PostgreSQL text cannot hold U+0000)",
        ))
    } else {
        Ok(Param::Text(s.to_owned()))
    }
}

const ZERO_DATE: &str = "a zero or partial date (PostgreSQL has no year 0, month 0 or day 0)";

/// Converts a value for a column (the accepted variants are those of the SQLite target,
/// docs/type-mapping.md).
fn to_param(value: &Value, column: &ColumnDef) -> Result<Param, Refusal> {
    let kind = column.kind;
    let integer = kind.is_integer() || matches!(kind, ColumnKind::Year | ColumnKind::Bit);
    let owned = |s: String| Ok(Param::Text(s));
    match value {
        Value::Null => Ok(Param::Null),
        Value::Int(v) if integer && int_fits(column, i128::from(*v)) => owned(v.to_string()),
        Value::Year(v) if integer && int_fits(column, i128::from(*v)) => owned(v.to_string()),
        Value::UInt(v) | Value::Bit(v) if integer && int_fits(column, i128::from(*v)) => owned(v.to_string()),
        // Shortest round-tripping forms; the server's float parsers are correctly rounded.
        Value::Float(v) if matches!(kind, ColumnKind::Float | ColumnKind::Double) => owned(format!("{v:e}")),
        Value::Double(v) if matches!(kind, ColumnKind::Float | ColumnKind::Double) => owned(format!("{v:e}")),
        Value::Decimal(s) if kind == ColumnKind::Decimal => Ok(Param::Text(s.clone())),
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
        Value::Text(s) if kind == ColumnKind::Text && is_undecoded(column) => Ok(Param::Bytes(s.as_bytes().to_vec())),
        Value::Text(s) if kind == ColumnKind::Text => no_nul(s),
        Value::Enum(s) if kind == ColumnKind::Enum => no_nul(s),
        Value::Set(s) if kind == ColumnKind::Set => no_nul(s),
        Value::Json(s) if kind == ColumnKind::Json => no_nul(s),
        Value::Bytes(b) if matches!(kind, ColumnKind::Binary | ColumnKind::Other) || is_undecoded(column) => {
            Ok(Param::Bytes(b.clone()))
        }
        _ => Err(Refusal::WrongKind),
    }
}

/// A message without row values: severity, SQLSTATE and message, for data exceptions cut
/// before the quoted input, plus the column when PostgreSQL names one (or a parameter
/// number maps to one).
fn error_message(e: &postgres::Error, params: &[&str]) -> String {
    let Some(db) = e.as_db_error() else {
        // "error connecting to server" alone does not say why: add the innermost cause
        // (e.g. "Connection refused (os error 111)").
        let mut cause: Option<&dyn std::error::Error> = e.source();
        while let Some(inner) = cause.and_then(|c| c.source()) {
            cause = Some(inner);
        }
        return match cause {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        };
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
        // Refused logins and missing databases are FATAL too, but no retry mends them.
        let refused = code.starts_with("28") || code.starts_with("3D");
        !refused && (matches!(db.severity(), "FATAL" | "PANIC") || code.starts_with("08") || code.starts_with("57P"))
    })
}

fn session_error(operation: &'static str, what: String, e: &postgres::Error) -> TargetError {
    TargetError::from_session(operation, what, error_message(e, &[]), connection_lost(e))
}

/// Runs `f` directly, or on a scoped thread when the caller is inside a tokio runtime (the
/// sync client's own runtime can't be started there).
pub(super) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
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
struct Conn(Option<postgres::Client>);

impl Deref for Conn {
    type Target = postgres::Client;

    fn deref(&self) -> &postgres::Client {
        self.0.as_ref().expect("the client is only taken when dropped")
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut postgres::Client {
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

fn open_client(
    conn_str: &str,
    tls: Option<&tokio_postgres_rustls::MakeRustlsConnect>,
) -> Result<postgres::Client, postgres::Error> {
    let mut config: postgres::Config = conn_str.parse()?;
    let mut client = match tls {
        Some(tls) => config
            .ssl_mode(postgres::config::SslMode::Require)
            .connect(tls.clone())?,
        None => config.ssl_mode(postgres::config::SslMode::Disable).connect(NoTls)?,
    };
    client.batch_execute(SESSION_INIT)?;
    Ok(client)
}

/// A session to the target database with the target's TLS, for the writer fence.
pub(crate) fn session(conn_str: &str, tls: &sluice_binlog::tls::TlsSettings) -> TargetResult<postgres::Client> {
    let tls = match tls.enabled() {
        false => None,
        true => Some(tokio_postgres_rustls::MakeRustlsConnect::new(
            (*sluice_binlog::tls::client_config(tls).map_err(|e| TargetError::Other(format!("target TLS: {e}")))?)
                .clone(),
        )),
    };
    open_client(conn_str, tls.as_ref()).map_err(|e| session_error("connect", "the writer lock's session".into(), &e))
}

/// The PostgreSQL side of a `ServerTarget` (`super::server`): the connection to the target database, the
/// schema written into, and how PostgreSQL spells, binds and reads values.
pub struct Postgres {
    conn_str: String,
    /// TLS for every (re)connection; `None`: plaintext.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    schema: String,
    client: Conn,
}

/// A PostgreSQL schema sluice replicates into.
pub type PostgresTarget = ServerTarget<Postgres>;

impl PostgresTarget {
    /// Connects with a libpq-style connection string or URL
    /// (`host=… port=… user=… dbname=…` or `postgresql://user@host:port/db`; no TLS) and
    /// writes into `schema`, which [`Target::prepare`](super::Target::prepare) creates when missing.
    pub fn connect(conn_str: &str, schema: &str) -> TargetResult<PostgresTarget> {
        Self::connect_tls(conn_str, schema, &sluice_binlog::tls::TlsSettings::disabled())
    }

    /// Like [`PostgresTarget::connect`], over TLS unless `tls` is disabled. With TLS the
    /// connection's `sslmode` is `require` (never `prefer`: no plaintext fallback), and the
    /// server's certificate is checked as `tls.mode` says.
    pub fn connect_tls(
        conn_str: &str,
        schema: &str,
        tls: &sluice_binlog::tls::TlsSettings,
    ) -> TargetResult<PostgresTarget> {
        check_identifier("schema", schema).map_err(|why| TargetError::Other(format!("target {why}")))?;
        let tls = match tls.enabled() {
            false => None,
            true => {
                let config = sluice_binlog::tls::client_config(tls)
                    .map_err(|e| TargetError::Other(format!("target TLS: {e}")))?;
                Some(tokio_postgres_rustls::MakeRustlsConnect::new((*config).clone()))
            }
        };
        let client = off_runtime(|| open_client(conn_str, tls.as_ref()))
            .map_err(|e| session_error("connect", format!("schema {schema}"), &e))?;
        Ok(ServerTarget::new(Postgres {
            conn_str: conn_str.to_owned(),
            tls,
            schema: schema.to_owned(),
            client: Conn(Some(client)),
        }))
    }

    /// The schema the target writes into.
    pub fn schema(&self) -> &str {
        &self.client.schema
    }
}

impl Dialect for Postgres {
    const PRODUCT: &'static str = "PostgreSQL";
    const BEGIN: &'static str = "BEGIN";
    const CREATE_TABLE: &'static str = "CREATE TABLE";
    const TABLE_OPTIONS: &'static str = "";
    const NULLABLE: &'static str = "";
    const BYTE_ORDER: &'static str = " COLLATE \"C\"";

    fn quote(name: &str) -> String {
        quote_ident(name)
    }

    fn placeholder(n: usize) -> String {
        format!("${n}")
    }

    /// `DO NOTHING` when every column is a key column.
    fn upsert_clause(key: &[String], others: &[String]) -> String {
        let action = if others.is_empty() {
            "NOTHING".to_owned()
        } else {
            let sets: Vec<String> = others.iter().map(|c| format!("{c} = EXCLUDED.{c}")).collect();
            format!("UPDATE SET {}", sets.join(", "))
        };
        format!(" ON CONFLICT ({}) DO {action}", key.join(", "))
    }

    fn check_identifier(what: &str, name: &str) -> Result<(), String> {
        check_identifier(what, name)
    }

    fn column_type(column: &ColumnDef, _key: bool) -> String {
        postgres_type(column)
    }

    fn verify_select(column: &ColumnDef, quoted: &str) -> String {
        verify_select_expr(column, quoted)
    }
}

impl Client for Postgres {
    type Param = Param;
    type Statement = Statement;
    type Row = postgres::Row;
    type Error = postgres::Error;

    const TRANSACTIONAL_DDL: bool = true;
    const TEXT_HOLDS_NUL: bool = false;

    fn run<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        off_runtime(f)
    }

    fn namespace(&self) -> &str {
        &self.schema
    }

    /// Identifiers are always schema-qualified.
    fn qualified(&self, table: &str) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(table))
    }

    fn reconnect(&mut self) -> Result<(), postgres::Error> {
        self.client = Conn(Some(open_client(&self.conn_str, self.tls.as_ref())?));
        Ok(())
    }

    fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    fn batch(&mut self, sql: &str) -> Result<(), postgres::Error> {
        self.client.batch_execute(sql)
    }

    /// Dropping the statement closes it on the server.
    fn prepare(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        self.client.prepare(sql)
    }

    fn exec(&mut self, statement: &Statement, params: Vec<Param>) -> Result<Vec<postgres::Row>, postgres::Error> {
        self.client.query(statement, &param_refs(&params))
    }

    fn exec_once(&mut self, sql: &str, params: Vec<Param>) -> Result<Vec<postgres::Row>, postgres::Error> {
        self.client.query(sql, &param_refs(&params))
    }

    /// Column names of every relation in the schema, in order.
    fn existing_columns(&mut self) -> Result<HashMap<String, Vec<String>>, postgres::Error> {
        let rows = self.client.query(
            "SELECT c.relname::text, a.attname::text \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
               AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY c.relname, a.attnum",
            &[&self.schema],
        )?;
        let mut tables: HashMap<String, Vec<String>> = HashMap::new();
        for row in rows {
            tables.entry(row.get(0)).or_default().push(row.get(1));
        }
        Ok(tables)
    }

    /// Only when missing: `CREATE SCHEMA IF NOT EXISTS` needs the CREATE privilege on the
    /// database even when the schema exists.
    fn create_namespace(&mut self) -> Result<(), postgres::Error> {
        let exists = !self
            .client
            .query(
                "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1",
                &[&self.schema],
            )?
            .is_empty();
        if !exists {
            self.client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(&self.schema)))?;
        }
        Ok(())
    }

    /// Never needed: PostgreSQL DDL is transactional.
    fn open_beside(&self) -> Result<Postgres, postgres::Error> {
        Ok(Postgres {
            conn_str: self.conn_str.clone(),
            tls: self.tls.clone(),
            schema: self.schema.clone(),
            client: Conn(Some(open_client(&self.conn_str, self.tls.as_ref())?)),
        })
    }

    /// Asked first: a failed statement would abort the open transaction.
    fn may_have_table(&mut self, table: &str) -> Result<bool, postgres::Error> {
        let rows = self.client.query(
            "SELECT 1 FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&self.schema, &table],
        )?;
        Ok(!rows.is_empty())
    }

    fn bookkeeping_ddl(&self, table: Bookkeeping) -> String {
        let columns = match table {
            Bookkeeping::Checkpoint => {
                "\"writer\" integer PRIMARY KEY,
                \"position\" text NOT NULL,
                \"applied\" text NOT NULL,
                \"source_commit_unix\" bigint NOT NULL,
                \"updated_at_unix\" bigint NOT NULL"
            }
            Bookkeeping::Tables => {
                "\"name\" text PRIMARY KEY,
                \"source_name\" text NOT NULL,
                \"definition\" text NOT NULL,
                \"created_at_unix\" bigint NOT NULL"
            }
            Bookkeeping::Backfill => {
                "\"name\" text PRIMARY KEY,
                \"done\" boolean NOT NULL,
                \"last_key\" text,
                \"rows_copied\" bigint NOT NULL,
                \"updated_at_unix\" bigint NOT NULL,
                \"detail\" text"
            }
            Bookkeeping::Lag => {
                "\"id\" smallint PRIMARY KEY,
                \"source\" text NOT NULL,
                \"p50_us\" bigint NOT NULL,
                \"p99_us\" bigint NOT NULL,
                \"p999_us\" bigint NOT NULL,
                \"max_us\" bigint NOT NULL,
                \"samples\" bigint NOT NULL,
                \"window_ms\" bigint NOT NULL,
                \"updated_at_us\" bigint NOT NULL"
            }
            Bookkeeping::Readiness => {
                "\"table_name\" text NOT NULL,
                \"column_name\" text NOT NULL,
                \"state\" text NOT NULL,
                \"updated_at_unix\" bigint NOT NULL,
                PRIMARY KEY (\"table_name\", \"column_name\")"
            }
            Bookkeeping::Verified => {
                "\"id\" integer PRIMARY KEY, \"position\" text NOT NULL, \"mismatches\" bigint NOT NULL, \
                 \"unchecked_txns\" bigint NOT NULL, \"updated_at_unix\" bigint NOT NULL"
            }
        };
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {} ({columns})",
            self.qualified(table.table())
        );
        if table == Bookkeeping::Verified {
            // Created on first use, maybe before `prepare` created the schema.
            format!("CREATE SCHEMA IF NOT EXISTS {}; {create}", quote_ident(&self.schema))
        } else {
            create
        }
    }

    fn add_backfill_detail(&self) -> String {
        format!(
            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS \"detail\" text",
            self.qualified(Bookkeeping::Backfill.table())
        )
    }

    fn to_param(value: &Value, column: &ColumnDef) -> Result<Param, Refusal> {
        to_param(value, column)
    }

    /// A key read back from this target (integers and temporal values come back as text);
    /// every parameter is sent as text anyway.
    fn read_back_key(value: &Value) -> Option<Param> {
        match value {
            Value::Text(s) => Some(Param::Text(s.clone())),
            _ => None,
        }
    }

    fn plain_param(value: Plain<'_>) -> Param {
        match value {
            Plain::Null => Param::Null,
            Plain::Int(i) => Param::Text(i.to_string()),
            Plain::Text(s) => Param::Text(s.to_owned()),
        }
    }

    fn decode_row(row: postgres::Row, columns: &[TargetColumn]) -> Vec<Option<Value>> {
        columns
            .iter()
            .enumerate()
            .map(|(i, c)| verify_read_value(&c.source, &row, i))
            .collect()
    }

    fn text_at(row: &postgres::Row, i: usize) -> Option<Option<String>> {
        row.try_get(i).ok()
    }

    fn int_at(row: &postgres::Row, i: usize) -> Option<i128> {
        match row.try_get::<_, i64>(i) {
            Ok(v) => Some(i128::from(v)),
            Err(_) => row.try_get::<_, bool>(i).ok().map(i128::from),
        }
    }

    fn is_missing_table(e: &postgres::Error) -> bool {
        e.code() == Some(&postgres::error::SqlState::UNDEFINED_TABLE)
    }

    fn is_connection_lost(e: &postgres::Error) -> bool {
        connection_lost(e)
    }

    fn describe(e: &postgres::Error, params: &[&str]) -> String {
        error_message(e, params)
    }
}

fn param_refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}
