//! MariaDB target: replicates into one database (schema) of a MariaDB server.
//!
//! # Design
//!
//! * **Sync client, one connection.** The target talks to the server through the synchronous
//!   `mysql` crate (the sibling of the `mysql_async` crate the source side uses; both share
//!   `mysql_common`). Every session is set up the same way on (re)connect: `utf8mb4`,
//!   `time_zone = '+00:00'` and a strict `sql_mode`
//!   (`STRICT_ALL_TABLES,ALLOW_INVALID_DATES,NO_ENGINE_SUBSTITUTION`): values that don't fit
//!   are errors instead of silently truncated warnings, while zero dates (`0000-00-00`),
//!   partial dates (`2024-00-15`) and dates the source accepted under `ALLOW_INVALID_DATES`
//!   are stored as they are, because the source holds them. A connection that fails
//!   (I/O error, server gone) is replaced on the next [`Target::begin`](super::Target::begin),
//!   [`Target::prepare`](super::Target::prepare) or [`Target::load_checkpoint`](super::Target::load_checkpoint); the server has rolled back whatever
//!   was open on it.
//! * **InnoDB tables, near-identity types.** Target tables are InnoDB, `utf8mb4`, with the
//!   source's own types where MariaDB has them (`DECIMAL(p,s)`, `BIGINT UNSIGNED`, `BIT(n)`,
//!   `DATETIME(fsp)`, `ENUM`/`SET` with the source labels, …); see `docs/type-mapping.md`.
//!   Text columns use the `utf8mb4_nopad_bin` collation, so two keys the source tells apart
//!   are never merged by a case- or accent-insensitive target collation. TIMESTAMP is stored
//!   as `DATETIME(fsp)` holding the UTC wall-clock time: no session time zone is involved
//!   in writing or reading it, its range is not limited to 2038, and MariaDB's implicit
//!   TIMESTAMP defaults (`ON UPDATE CURRENT_TIMESTAMP` on the first TIMESTAMP column) never
//!   apply.
//! * **Upserts.** An insert is `INSERT … ON DUPLICATE KEY UPDATE` every non-key column, so
//!   re-applying it (or inserting over a row that is already there) replaces the row. An
//!   update whose key is unchanged is the same upsert of the new row (updating in place, or
//!   writing the row whole when the target missed it); an update that changes the key
//!   deletes the old key and upserts the new row. A delete of a missing row changes nothing.
//!   Values are always bound as parameters (binary protocol, exact for every type) and
//!   identifiers always quoted.
//! * **Multi-row statements.** Row changes are buffered inside the open transaction and sent
//!   per table as one multi-row `INSERT … VALUES (…), (…) … ON DUPLICATE KEY UPDATE` and one
//!   `DELETE … WHERE k IN (…)` (an OR of key equalities for a composite key), keeping
//!   per-key order exactly (see `super::batch`); a refused row fails the statement, which
//!   names the table. Statements are prepared once per (table, operation, rows per
//!   statement: 1, 8, 64 or 256) and kept for the life of the connection.
//! * **Checkpoint with the rows.** [`Target::begin`](super::Target::begin) is `START TRANSACTION`;
//!   [`Target::commit`](super::Target::commit) upserts the writer's row of `_sluice_checkpoint` (one row per
//!   parallel writer, merged by [`Target::load_checkpoint`](super::Target::load_checkpoint)) and `COMMIT`s. Sessions run at
//!   `READ COMMITTED`, so parallel writers on disjoint rows don't block each other on InnoDB
//!   gap locks (a target server with `binlog_format=STATEMENT` refuses such writes; `MIXED`
//!   and `ROW` are fine). A failed
//!   write rolls the whole transaction back at once and marks it failed, so
//!   [`Target::commit`](super::Target::commit) refuses it. A connection dropped with an open transaction is rolled
//!   back by the server. [`Target::record_backfill`](super::Target::record_backfill) upserts a table's row of
//!   `_sluice_backfill` (its backfill progress) inside the open transaction, so it commits
//!   with the copied rows it describes.
//! * **`prepare()` and implicit commits.** MariaDB DDL commits the open transaction
//!   implicitly, which would break atomicity if [`Target::prepare`](super::Target::prepare) ran `CREATE TABLE` on the
//!   main connection between `begin` and `commit`. Instead, when a transaction is open,
//!   missing tables are created on a second, short-lived connection (`CREATE TABLE IF NOT
//!   EXISTS`, idempotent). The rows and the checkpoint still commit or roll back atomically
//!   on the main connection; the only difference from a transactional-DDL target is that a
//!   rolled-back transaction leaves the newly created tables behind, empty, which the next
//!   `prepare` accepts as matching tables. All checks (definitions, existing tables) run
//!   before any table is created, so a refused `prepare` creates nothing.
//!
//! The statements, buffering, bookkeeping and transaction handling are shared with the
//! PostgreSQL target in `super::server`; this file holds the MariaDB side of them ([`MariaDb`]).
//!
//! Error messages name tables and columns, never row values (values may be personal data):
//! server messages that quote a value (`Duplicate entry '…'`, `Incorrect … value: '…'`)
//! have the value replaced by `'?'`.

use std::collections::HashMap;

use mysql::prelude::FromRow;
use mysql::prelude::Queryable;
use mysql::{Conn, Params, Statement, Value as MyValue};
use sluice_binlog::value::civil_from_unix;
use sluice_binlog::{Charset, ColumnDef, ColumnKind, Value};

use super::common::{bit_width, int_fits};
use super::server::{Bookkeeping, Client, Dialect, Plain, Refusal, ServerTarget};
use super::{TargetColumn, TargetError, TargetResult};

pub use mysql::{Opts, OptsBuilder};

/// The TLS settings as the `mysql` client takes them (`None`: plaintext).
pub fn tls_opts(tls: &sluice_binlog::tls::TlsSettings) -> Option<mysql::SslOpts> {
    use sluice_binlog::tls::TlsMode;
    if !tls.enabled() {
        return None;
    }
    let mut opts = mysql::SslOpts::default();
    if let Some(ca) = &tls.ca_file {
        opts = opts.with_root_cert_path(Some(ca.clone()));
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        opts = opts.with_client_identity(Some(mysql::ClientIdentity::new(cert.clone(), key.clone())));
    }
    Some(match tls.mode {
        TlsMode::Required => opts.with_danger_accept_invalid_certs(true),
        // `verify_ca` checks the host name too on these connections: the client crate's
        // "skip domain validation" looks for rustls's old `NotValidForName` error and misses
        // the `NotValidForNameContext` rustls 0.23 now returns, so it cannot skip only the
        // name. Stricter, never weaker; the replication stream and PostgreSQL check the chain
        // only (`sluice_binlog::tls`).
        TlsMode::VerifyCa | TlsMode::VerifyIdentity | TlsMode::Disabled => opts,
    })
}

/// MariaDB identifiers (database, table, column names) are at most 64 characters.
const MAX_IDENTIFIER_CHARS: usize = 64;

/// Collation of every text column: binary and NO PAD, so distinct source strings stay distinct.
const TEXT_CHARSET: &str = "CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin";
/// ENUM/SET labels compare exactly (MariaDB strips trailing spaces from labels anyway).
const LABEL_CHARSET: &str = "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin";

/// Session settings applied on every (re)connect.
const SESSION_INIT: &[&str] = &[
    "SET NAMES utf8mb4",
    "SET SESSION time_zone = '+00:00'",
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,ALLOW_INVALID_DATES,NO_ENGINE_SUBSTITUTION'",
    // Parallel writers touch disjoint rows; READ COMMITTED spares them InnoDB's gap locks
    // (taken by upserts and deletes of missing rows under REPEATABLE READ), which would make
    // writers wait for, or deadlock with, each other on neighbouring keys.
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
];

/// How long the side connection's DDL waits for a metadata lock before failing.
const DDL_LOCK_WAIT_SECONDS: u32 = 30;

/// MariaDB `ER_NO_SUCH_TABLE`.
const ER_NO_SUCH_TABLE: u16 = 1146;

const CREATE_CHECKPOINT: &str = "CREATE TABLE IF NOT EXISTS `_sluice_checkpoint` (
    `writer` SMALLINT UNSIGNED NOT NULL,
    `position` MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    `applied` MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    `source_commit_unix` BIGINT NOT NULL,
    `updated_at_unix` BIGINT NOT NULL,
    PRIMARY KEY (`writer`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

const CREATE_TABLES: &str = "CREATE TABLE IF NOT EXISTS `_sluice_tables` (
    `name` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    `source_name` TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    `definition` LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    `created_at_unix` BIGINT NOT NULL,
    PRIMARY KEY (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

const CREATE_BACKFILL: &str = "CREATE TABLE IF NOT EXISTS `_sluice_backfill` (
    `name` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    `done` BOOLEAN NOT NULL,
    `last_key` LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    `rows_copied` BIGINT NOT NULL,
    `updated_at_unix` BIGINT NOT NULL,
    `detail` LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    PRIMARY KEY (`name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

/// Targets created before `detail` existed get it on their next start.
const ADD_BACKFILL_DETAIL: &str =
    "ALTER TABLE `_sluice_backfill` ADD COLUMN IF NOT EXISTS `detail` LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL";

const CREATE_LAG: &str = "CREATE TABLE IF NOT EXISTS `_sluice_lag` (
    `id` TINYINT UNSIGNED NOT NULL,
    `source` VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    `p50_us` BIGINT NOT NULL,
    `p99_us` BIGINT NOT NULL,
    `p999_us` BIGINT NOT NULL,
    `max_us` BIGINT NOT NULL,
    `samples` BIGINT NOT NULL,
    `window_ms` BIGINT NOT NULL,
    `updated_at_us` BIGINT NOT NULL,
    PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

const CREATE_READINESS: &str = "CREATE TABLE IF NOT EXISTS `_sluice_readiness` (
    `table_name` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    `column_name` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL,
    `state` VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    `updated_at_unix` BIGINT NOT NULL,
    PRIMARY KEY (`table_name`, `column_name`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

const CREATE_VERIFIED: &str =
    "CREATE TABLE IF NOT EXISTS `_sluice_verified` (`id` INT NOT NULL PRIMARY KEY, `position` TEXT NOT NULL, \
     `mismatches` BIGINT NOT NULL, `unchecked_txns` BIGINT NOT NULL, `updated_at_unix` BIGINT NOT NULL) ENGINE=InnoDB";

/// The target column type for a source column (docs/type-mapping.md). `key` columns get a
/// bounded type, since InnoDB cannot index unbounded TEXT/BLOB columns.
pub fn mariadb_type(column: &ColumnDef, key: bool) -> String {
    let unsigned = if column.unsigned { " UNSIGNED" } else { "" };
    let int = |name: &str| format!("{name}{unsigned}");
    let fsp = column.fsp.min(6);
    match column.kind {
        ColumnKind::TinyInt => int("TINYINT"),
        ColumnKind::SmallInt => int("SMALLINT"),
        ColumnKind::MediumInt => int("MEDIUMINT"),
        ColumnKind::Int => int("INT"),
        ColumnKind::BigInt => int("BIGINT"),
        ColumnKind::Year => "YEAR".to_owned(),
        // `length` is the declared width in bits; when unknown (0), the widest.
        ColumnKind::Bit => format!("BIT({})", bit_width(column)),
        ColumnKind::Float => "FLOAT".to_owned(),
        ColumnKind::Double => "DOUBLE".to_owned(),
        ColumnKind::Decimal if decimal_known(column) => format!("DECIMAL({},{})", column.precision, column.scale),
        // Unknown precision: keep the exact text (65 digits, sign and point).
        ColumnKind::Decimal => "VARCHAR(67) CHARACTER SET ascii COLLATE ascii_bin".to_owned(),
        ColumnKind::Date => "DATE".to_owned(),
        ColumnKind::Time => format!("TIME({fsp})"),
        ColumnKind::DateTime | ColumnKind::Timestamp => format!("DATETIME({fsp})"),
        ColumnKind::Text if is_undecoded(column) => binary_type(column.length, key),
        ColumnKind::Text => text_type(column.length, key, TEXT_CHARSET),
        ColumnKind::Binary | ColumnKind::Other => binary_type(column.length, key),
        ColumnKind::Enum if !column.labels.is_empty() => {
            let mut labels: Vec<String> = column.labels.iter().map(|l| quote_string(l)).collect();
            // The invalid value 0 reads as '' in the source; strict mode would refuse '' for an
            // ENUM without such a label, so '' is an extra label after the source's.
            if !column.labels.iter().any(String::is_empty) {
                labels.push("''".to_owned());
            }
            format!("ENUM({}) {LABEL_CHARSET}", labels.join(","))
        }
        ColumnKind::Set if !column.labels.is_empty() && column.labels.len() <= 64 => {
            let labels: Vec<String> = column.labels.iter().map(|l| quote_string(l)).collect();
            format!("SET({}) {LABEL_CHARSET}", labels.join(","))
        }
        // Labels unknown: the label text.
        ColumnKind::Enum => format!("VARCHAR(255) {LABEL_CHARSET}"),
        ColumnKind::Set => text_type(0, key, LABEL_CHARSET),
        // MariaDB's own JSON type is LONGTEXT (with a JSON_VALID check); the text is kept
        // exactly as the source wrote it.
        ColumnKind::Json => text_type(0, key, "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"),
    }
}

fn decimal_known(column: &ColumnDef) -> bool {
    (1..=65).contains(&column.precision) && column.scale <= column.precision.min(38)
}

/// Character data in a charset sluice doesn't decode arrives as bytes.
fn is_undecoded(column: &ColumnDef) -> bool {
    column.kind == ColumnKind::Text && matches!(column.charset, Charset::Binary | Charset::Other(_))
}

/// Text of at most `length` characters (0: unknown). Short texts stay VARCHAR; longer ones
/// use the TEXT family, which doesn't count against MariaDB's 65,535-byte row limit.
fn text_type(length: u32, key: bool, charset: &str) -> String {
    let ty = match (key, length) {
        // InnoDB keys are limited to 3072 bytes: 768 utf8mb4 characters.
        (true, 1..=768) => format!("VARCHAR({length})"),
        (true, 0) => "VARCHAR(255)".to_owned(),
        (true, _) => "VARCHAR(768)".to_owned(),
        (false, 1..=255) => format!("VARCHAR({length})"),
        (false, 256..=16_383) => "TEXT".to_owned(),
        (false, 16_384..=4_194_303) => "MEDIUMTEXT".to_owned(),
        (false, _) => "LONGTEXT".to_owned(),
    };
    format!("{ty} {charset}")
}

fn binary_type(length: u32, key: bool) -> String {
    match (key, length) {
        (true, 1..=3072) => format!("VARBINARY({length})"),
        (true, 0) => "VARBINARY(255)".to_owned(),
        (true, _) => "VARBINARY(3072)".to_owned(),
        (false, 1..=255) => format!("VARBINARY({length})"),
        (false, 256..=65_535) => "BLOB".to_owned(),
        (false, 65_536..=16_777_215) => "MEDIUMBLOB".to_owned(),
        (false, _) => "LONGBLOB".to_owned(),
    }
}

/// Quotes an identifier: wrapped in backticks, embedded backticks doubled.
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quotes a string literal for DDL (ENUM/SET labels), whatever `NO_BACKSLASH_ESCAPES` says.
fn quote_string(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Checks a database, table or column name against MariaDB's identifier rules.
fn check_identifier(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("empty {what} name"));
    }
    if name.contains('\0') {
        return Err(format!("{what} name {name} contains a NUL character"));
    }
    if name.chars().count() > MAX_IDENTIFIER_CHARS {
        return Err(format!(
            "{what} name {name} is longer than MariaDB's {MAX_IDENTIFIER_CHARS} characters"
        ));
    }
    if name.ends_with(' ') {
        return Err(format!(
            "{what} name {name} ends with a space, which MariaDB does not allow"
        ));
    }
    if name.chars().any(|c| u32::from(c) > 0xFFFF) {
        return Err(format!(
            "{what} name {name} contains a character outside the Basic Multilingual Plane, which MariaDB identifiers cannot hold"
        ));
    }
    Ok(())
}

/// Converts a value for a column, or `None` when the value's variant doesn't belong in such a
/// column (the accepted variants are those of the SQLite target, docs/type-mapping.md).
fn to_mysql(value: &Value, column: &ColumnDef) -> Option<MyValue> {
    let kind = column.kind;
    let integer = kind.is_integer() || matches!(kind, ColumnKind::Year | ColumnKind::Bit);
    let text = |s: &str| MyValue::Bytes(s.as_bytes().to_vec());
    let out = match value {
        Value::Null => MyValue::NULL,
        Value::Int(v) if integer && int_fits(column, i128::from(*v)) => MyValue::Int(*v),
        Value::Year(v) if integer && int_fits(column, i128::from(*v)) => MyValue::Int(i64::from(*v)),
        Value::UInt(v) | Value::Bit(v) if integer && int_fits(column, i128::from(*v)) => MyValue::UInt(*v),
        Value::Float(v) if matches!(kind, ColumnKind::Float | ColumnKind::Double) => MyValue::Float(*v),
        Value::Double(v) if matches!(kind, ColumnKind::Float | ColumnKind::Double) => MyValue::Double(*v),
        Value::Decimal(s) if kind == ColumnKind::Decimal => text(s),
        Value::Date { year, month, day } if kind == ColumnKind::Date => MyValue::Date(*year, *month, *day, 0, 0, 0, 0),
        Value::Time {
            negative,
            hours,
            minutes,
            seconds,
            micros,
        } if kind == ColumnKind::Time => MyValue::Time(
            *negative,
            hours / 24,
            u8::try_from(hours % 24).ok()?,
            *minutes,
            *seconds,
            *micros,
        ),
        Value::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
        } if kind == ColumnKind::DateTime => MyValue::Date(*year, *month, *day, *hour, *minute, *second, *micros),
        Value::Timestamp { seconds, micros } if kind == ColumnKind::Timestamp => {
            if *seconds == 0 && *micros == 0 {
                // The zero timestamp.
                MyValue::Date(0, 0, 0, 0, 0, 0, 0)
            } else {
                let (y, mo, d, h, mi, s) = civil_from_unix(*seconds);
                let as_u8 = |v: u32| u8::try_from(v).ok();
                MyValue::Date(
                    u16::try_from(y).ok()?,
                    as_u8(mo)?,
                    as_u8(d)?,
                    as_u8(h)?,
                    as_u8(mi)?,
                    as_u8(s)?,
                    *micros,
                )
            }
        }
        Value::Text(s)
            if kind == ColumnKind::Text || matches!(kind, ColumnKind::Enum | ColumnKind::Set | ColumnKind::Json) =>
        {
            text(s)
        }
        Value::Enum(s) if kind == ColumnKind::Enum => text(s),
        Value::Set(s) if kind == ColumnKind::Set => text(s),
        Value::Json(s) if kind == ColumnKind::Json => text(s),
        Value::Bytes(b) if matches!(kind, ColumnKind::Binary | ColumnKind::Other) || is_undecoded(column) => {
            MyValue::Bytes(b.clone())
        }
        _ => return None,
    };
    Some(out)
}

/// `SELECT COUNT(*), BIT_XOR(crc), SUM(crc)` over the rows of `from` matching `condition`,
/// where `crc` is the CRC32 of the row's columns joined as text (as pt-table-checksum does):
/// `columns` are quoted names with their kinds, in the same order on both sides. Text is
/// converted to utf8mb4 first, so a latin1 source column and its utf8mb4 copy checksum alike;
/// NULL is told apart from `''` by a trailing list of ISNULL flags.
pub fn checksum_select(columns: &[(String, ColumnKind)], from: &str, condition: &str) -> String {
    let values: Vec<String> = columns
        .iter()
        .map(|(name, kind)| match kind {
            ColumnKind::Text | ColumnKind::Enum | ColumnKind::Set | ColumnKind::Json => {
                format!("CONVERT({name} USING utf8mb4)")
            }
            _ => name.clone(),
        })
        .collect();
    let nulls: Vec<String> = columns.iter().map(|(name, _)| format!("ISNULL({name})")).collect();
    format!(
        "SELECT COUNT(*), COALESCE(BIT_XOR(c.crc), 0), COALESCE(SUM(c.crc), 0) FROM \
         (SELECT CRC32(CONCAT_WS('#', {}, CONCAT({}))) AS crc FROM {from} WHERE {condition}) AS c",
        values.join(", "),
        nulls.join(", ")
    )
}

/// An unsigned integer result (COUNT, BIT_XOR, or SUM's DECIMAL digits).
pub fn result_u64(value: &MyValue) -> Option<u64> {
    int_value(value).and_then(|v| u64::try_from(v).ok())
}

/// Replaces quoted values in a server message with `'?'`, keeping quoted identifiers (those
/// after `column`, `key`, `table`, `database`, `constraint`, and backquoted names).
fn scrub_message(message: &str) -> String {
    const KEEP_AFTER: [&str; 6] = ["column", "key", "table", "database", "constraint", "index"];
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find('\'') {
        let (before, after_open) = rest.split_at(open);
        out.push_str(before);
        let after_open = &after_open[1..];
        let previous_word = out
            .trim_end()
            .rsplit(|c: char| c.is_whitespace())
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let keep = KEEP_AFTER.contains(&previous_word.as_str());
        match after_open.find('\'') {
            Some(close) => {
                if keep {
                    out.push('\'');
                    out.push_str(&after_open[..close]);
                    out.push('\'');
                } else {
                    out.push_str("'?'");
                }
                rest = &after_open[close + 1..];
            }
            None => {
                // Unbalanced: drop the rest rather than risk printing a value.
                out.push_str("'?'");
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Prepares, executes and closes a one-off statement (the driver's statement cache is off, so
/// a statement that isn't closed would stay allocated on the server until disconnect).
fn exec_once<T: FromRow>(conn: &mut Conn, sql: &str, params: impl Into<Params>) -> mysql::Result<Vec<T>> {
    let stmt = conn.prep(sql)?;
    let rows = conn.exec(&stmt, params);
    let closed = conn.close(stmt);
    let rows = rows?;
    closed?;
    Ok(rows)
}

/// Server errors that end the session: `ER_SERVER_SHUTDOWN`, `ER_CONNECTION_KILLED`,
/// `ER_CLIENT_INTERACTION_TIMEOUT`.
const SESSION_ENDING_CODES: [u16; 3] = [1053, 1927, 4031];

/// Whether the connection is unusable after `e` and must be replaced.
fn is_connectivity_error(e: &mysql::Error) -> bool {
    match e {
        mysql::Error::IoError(_) | mysql::Error::DriverError(_) | mysql::Error::CodecError(_) => true,
        mysql::Error::MySqlError(err) => SESSION_ENDING_CODES.contains(&err.code),
        _ => false,
    }
}

fn error_message(e: &mysql::Error) -> String {
    match e {
        mysql::Error::MySqlError(err) => format!("ERROR {} ({}): {}", err.code, err.state, scrub_message(&err.message)),
        // These carry values; never print them.
        mysql::Error::FromValueError(_) | mysql::Error::FromRowError(_) => "unexpected value in a result".to_owned(),
        // The driver's own text for these is its Debug output.
        mysql::Error::DriverError(d) => d.to_string(),
        mysql::Error::IoError(io) => io.to_string(),
        other => other.to_string(),
    }
}

pub(crate) fn session_error(operation: &'static str, database: &str, e: &mysql::Error) -> TargetError {
    TargetError::from_session(
        operation,
        format!("database {database}"),
        error_message(e),
        is_connectivity_error(e),
    )
}

/// A MariaDB integer result (binary or text protocol) as a number.
fn int_value(value: &MyValue) -> Option<i128> {
    match value {
        MyValue::Int(i) => Some(i128::from(*i)),
        MyValue::UInt(u) => Some(i128::from(*u)),
        MyValue::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// Bound values as the driver takes them (a statement without placeholders takes none).
fn positional(params: Vec<MyValue>) -> Params {
    if params.is_empty() {
        Params::Empty
    } else {
        Params::Positional(params)
    }
}

/// The MariaDB side of a `ServerTarget` (`super::server`): the connection to the target database, and how
/// MariaDB spells, binds and reads values.
pub struct MariaDb {
    /// Connection options with the database selected and the session set up.
    opts: Opts,
    database: String,
    conn: Conn,
}

/// A MariaDB database sluice replicates into.
pub type MariaDbTarget = ServerTarget<MariaDb>;

impl MariaDbTarget {
    /// Connects with a `mysql://user:password@host:port/` URL and uses `database`, creating it
    /// (`utf8mb4`) when missing. A database named in the URL is ignored.
    pub fn connect(url: &str, database: &str) -> TargetResult<MariaDbTarget> {
        let opts = Opts::from_url(url).map_err(|e| TargetError::Other(format!("invalid MariaDB URL: {e}")))?;
        MariaDbTarget::connect_with(opts, database)
    }

    /// Like [`MariaDbTarget::connect`], with connection options built in code. The options'
    /// database, init statements and statement cache size are replaced by the target's own.
    pub fn connect_with(opts: impl Into<Opts>, database: &str) -> TargetResult<MariaDbTarget> {
        check_identifier("database", database).map_err(|why| TargetError::Other(format!("target {why}")))?;
        let init: Vec<String> = SESSION_INIT.iter().map(|s| (*s).to_owned()).collect();
        // Statements are cached per (table, operation, rows) by the target, not by the
        // driver's LRU cache (which would close statements the target still holds).
        let base = OptsBuilder::from_opts(opts.into())
            .db_name(None::<String>)
            .init(init)
            .stmt_cache_size(0);
        let mut conn = Conn::new(base.clone()).map_err(|e| session_error("connect", database, &e))?;
        let exists: Vec<String> = exec_once(
            &mut conn,
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (database,),
        )
        .map_err(|e| session_error("inspect database", database, &e))?;
        if !exists.iter().any(|name| name == database) {
            conn.query_drop(format!(
                "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin",
                quote_ident(database)
            ))
            .map_err(|e| session_error("create database", database, &e))?;
        }
        conn.query_drop(format!("USE {}", quote_ident(database)))
            .map_err(|e| session_error("use database", database, &e))?;
        let opts: Opts = base.db_name(Some(database)).into();
        Ok(ServerTarget::new(MariaDb {
            opts,
            database: database.to_owned(),
            conn,
        }))
    }

    /// The database the target writes into.
    pub fn database(&self) -> &str {
        &self.client.database
    }
}

impl Dialect for MariaDb {
    const PRODUCT: &'static str = "MariaDB";
    const BEGIN: &'static str = "START TRANSACTION";
    const CREATE_TABLE: &'static str = "CREATE TABLE IF NOT EXISTS";
    const TABLE_OPTIONS: &'static str = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin";
    const NULLABLE: &'static str = " NULL";
    /// Bookkeeping names use a binary collation already.
    const BYTE_ORDER: &'static str = "";

    fn quote(name: &str) -> String {
        quote_ident(name)
    }

    fn placeholder(_n: usize) -> String {
        "?".to_owned()
    }

    fn upsert_clause(key: &[String], others: &[String]) -> String {
        let sets: Vec<String> = if others.is_empty() {
            // Every column is a key column: the row exists or is inserted.
            vec![format!("{k} = {k}", k = key[0])]
        } else {
            others.iter().map(|c| format!("{c} = VALUES({c})")).collect()
        };
        format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", "))
    }

    fn check_identifier(what: &str, name: &str) -> Result<(), String> {
        check_identifier(what, name)
    }

    fn column_type(column: &ColumnDef, key: bool) -> String {
        mariadb_type(column, key)
    }

    fn checksum_select(columns: &[(String, ColumnKind)], from: &str, condition: &str) -> Option<String> {
        Some(checksum_select(columns, from, condition))
    }
}

impl Client for MariaDb {
    /// Binary protocol values, exact for every type.
    type Param = MyValue;
    type Statement = Statement;
    type Row = mysql::Row;
    type Error = mysql::Error;

    const TRANSACTIONAL_DDL: bool = false;
    const TEXT_HOLDS_NUL: bool = true;

    fn namespace(&self) -> &str {
        &self.database
    }

    /// The session uses the target database.
    fn qualified(&self, table: &str) -> String {
        quote_ident(table)
    }

    fn reconnect(&mut self) -> Result<(), mysql::Error> {
        self.conn = Conn::new(self.opts.clone())?;
        Ok(())
    }

    fn batch(&mut self, sql: &str) -> Result<(), mysql::Error> {
        self.conn.query_drop(sql)
    }

    fn prepare(&mut self, sql: &str) -> Result<Statement, mysql::Error> {
        self.conn.prep(sql)
    }

    /// The driver's statement cache is off, so a statement stays allocated on the server
    /// until it is closed.
    fn close(&mut self, statement: Statement) {
        let _ = self.conn.close(statement);
    }

    fn exec(&mut self, statement: &Statement, params: Vec<MyValue>) -> Result<Vec<mysql::Row>, mysql::Error> {
        self.conn.exec(statement, positional(params))
    }

    fn exec_once(&mut self, sql: &str, params: Vec<MyValue>) -> Result<Vec<mysql::Row>, mysql::Error> {
        exec_once(&mut self.conn, sql, positional(params))
    }

    fn existing_columns(&mut self) -> Result<HashMap<String, Vec<String>>, mysql::Error> {
        let rows: Vec<(String, String)> = self.conn.query(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME, ORDINAL_POSITION",
        )?;
        let mut tables: HashMap<String, Vec<String>> = HashMap::new();
        for (table, column) in rows {
            tables.entry(table).or_default().push(column);
        }
        Ok(tables)
    }

    /// A short-lived connection for `prepare`'s DDL inside a transaction (see the module
    /// documentation), with a bounded wait for metadata locks.
    fn open_beside(&self) -> Result<MariaDb, mysql::Error> {
        let mut conn = Conn::new(self.opts.clone())?;
        conn.query_drop(format!("SET SESSION lock_wait_timeout = {DDL_LOCK_WAIT_SECONDS}"))?;
        Ok(MariaDb {
            opts: self.opts.clone(),
            database: self.database.clone(),
            conn,
        })
    }

    /// A statement on a missing table fails without harming the open transaction, so the
    /// read itself finds out.
    fn may_have_table(&mut self, _table: &str) -> Result<bool, mysql::Error> {
        Ok(true)
    }

    fn bookkeeping_ddl(&self, table: Bookkeeping) -> String {
        match table {
            Bookkeeping::Checkpoint => CREATE_CHECKPOINT,
            Bookkeeping::Tables => CREATE_TABLES,
            Bookkeeping::Backfill => CREATE_BACKFILL,
            Bookkeeping::Lag => CREATE_LAG,
            Bookkeeping::Verified => CREATE_VERIFIED,
            Bookkeeping::Readiness => CREATE_READINESS,
        }
        .to_owned()
    }

    fn add_backfill_detail(&self) -> String {
        ADD_BACKFILL_DETAIL.to_owned()
    }

    fn to_param(value: &Value, column: &ColumnDef) -> Result<MyValue, Refusal> {
        to_mysql(value, column).ok_or(Refusal::WrongKind)
    }

    fn plain_param(value: Plain<'_>) -> MyValue {
        match value {
            Plain::Null => MyValue::NULL,
            Plain::Int(i) => MyValue::Int(i),
            Plain::Text(s) => MyValue::Bytes(s.as_bytes().to_vec()),
        }
    }

    fn decode_row(row: mysql::Row, columns: &[TargetColumn]) -> Vec<Option<Value>> {
        row.unwrap()
            .into_iter()
            .zip(columns)
            .map(|(v, c)| crate::source_rows::convert(v, &c.source))
            .collect()
    }

    fn text_at(row: &mysql::Row, i: usize) -> Option<Option<String>> {
        match row.as_ref(i)? {
            MyValue::NULL => Some(None),
            MyValue::Bytes(b) => String::from_utf8(b.clone()).ok().map(Some),
            _ => None,
        }
    }

    fn int_at(row: &mysql::Row, i: usize) -> Option<i128> {
        int_value(row.as_ref(i)?)
    }

    fn is_missing_table(e: &mysql::Error) -> bool {
        matches!(e, mysql::Error::MySqlError(e) if e.code == ER_NO_SUCH_TABLE)
    }

    fn is_connection_lost(e: &mysql::Error) -> bool {
        is_connectivity_error(e)
    }

    fn describe(e: &mysql::Error, _params: &[&str]) -> String {
        error_message(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbing_keeps_identifiers_and_drops_values() {
        assert_eq!(
            scrub_message("Duplicate entry 'secret-1' for key 'PRIMARY'"),
            "Duplicate entry '?' for key 'PRIMARY'"
        );
        assert_eq!(
            scrub_message("Incorrect datetime value: '2023-02-30 secret' for column `db`.`t`.`c` at row 1"),
            "Incorrect datetime value: '?' for column `db`.`t`.`c` at row 1"
        );
        assert_eq!(
            scrub_message("Column 'required' cannot be null"),
            "Column 'required' cannot be null"
        );
        assert_eq!(
            scrub_message("Data too long for column 'x' at row 1"),
            "Data too long for column 'x' at row 1"
        );
        assert_eq!(scrub_message("odd 'unbalanced secret"), "odd '?'");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a`b"), "`a``b`");
        assert_eq!(quote_string("it's a \\ test"), "'it''s a \\\\ test'");
    }
}
