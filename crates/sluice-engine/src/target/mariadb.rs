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
//!   (I/O error, server gone) is replaced on the next [`Target::begin`],
//!   [`Target::prepare`] or [`Target::load_checkpoint`]; the server has rolled back whatever
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
//! * **Checkpoint with the rows.** [`Target::begin`] is `START TRANSACTION`;
//!   [`Target::commit`] upserts the writer's row of `_sluice_checkpoint` (one row per
//!   parallel writer, merged by [`Target::load_checkpoint`]) and `COMMIT`s. Sessions run at
//!   `READ COMMITTED`, so parallel writers on disjoint rows don't block each other on InnoDB
//!   gap locks (a target server with `binlog_format=STATEMENT` refuses such writes; `MIXED`
//!   and `ROW` are fine). A failed
//!   write rolls the whole transaction back at once and marks it failed, so
//!   [`Target::commit`] refuses it. A connection dropped with an open transaction is rolled
//!   back by the server. [`Target::record_backfill`] upserts a table's row of
//!   `_sluice_backfill` (its backfill progress) inside the open transaction, so it commits
//!   with the copied rows it describes.
//! * **`prepare()` and implicit commits.** MariaDB DDL commits the open transaction
//!   implicitly, which would break atomicity if [`Target::prepare`] ran `CREATE TABLE` on the
//!   main connection between `begin` and `commit`. Instead, when a transaction is open,
//!   missing tables are created on a second, short-lived connection (`CREATE TABLE IF NOT
//!   EXISTS`, idempotent). The rows and the checkpoint still commit or roll back atomically
//!   on the main connection; the only difference from a transactional-DDL target is that a
//!   rolled-back transaction leaves the newly created tables behind, empty, which the next
//!   `prepare` accepts as matching tables. All checks (definitions, existing tables) run
//!   before any table is created, so a refused `prepare` creates nothing.
//!
//! Error messages name tables and columns, never row values (values may be personal data):
//! server messages that quote a value (`Duplicate entry '…'`, `Incorrect … value: '…'`)
//! have the value replaced by `'?'`.

use std::collections::HashMap;
use std::sync::Arc;

use mysql::prelude::FromRow;
use mysql::prelude::Queryable;
use mysql::{Conn, Params, Statement, Value as MyValue};
use sluice_binlog::value::civil_from_unix;
use sluice_binlog::{Charset, ColumnDef, ColumnKind, Value};

use super::batch::{chunk_sizes, key_identity, value_bytes, Pending, BATCH_SIZES};
use super::common::{
    backfill_detail_to_db, backfill_from_db, bit_width, check_fill_columns, check_row_len, check_table_shape,
    checkpoint_from_rows, definition_json, fill_columns_sql, int_fits, missing_columns, rows_copied_from_db,
    rows_copied_to_db, unix_now, verified_from_row, TxState, BACKFILL_TABLE,
};
use super::{
    number_placeholders, selection_condition, selection_value, BackfillProgress, Checkpoint, RowOp, RowSelection,
    SqlChecksum, Target, TargetError, TargetResult, TargetTable, VerifiedRecord,
};

pub use mysql::{Opts, OptsBuilder};

const CHECKPOINT_TABLE: &str = "_sluice_checkpoint";
const TABLES_TABLE: &str = "_sluice_tables";

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

const LAG_TABLE: &str = "_sluice_lag";

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

/// One row (`id` = 1): the lag percentiles writer 0 records (see `crate::ops::lag`).
const UPSERT_LAG: &str = "INSERT INTO `_sluice_lag` (`id`, `source`, `p50_us`, `p99_us`, `p999_us`, `max_us`, `samples`, `window_ms`, `updated_at_us`) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE `source` = VALUES(`source`), `p50_us` = VALUES(`p50_us`), `p99_us` = VALUES(`p99_us`), `p999_us` = VALUES(`p999_us`), `max_us` = VALUES(`max_us`), `samples` = VALUES(`samples`), `window_ms` = VALUES(`window_ms`), `updated_at_us` = VALUES(`updated_at_us`)";

const SELECT_LAG: &str = "SELECT `source`, `p50_us`, `p99_us`, `p999_us`, `max_us`, `samples`, `window_ms`, `updated_at_us` FROM `_sluice_lag` WHERE `id` = 1";

const UPSERT_CHECKPOINT: &str = "INSERT INTO `_sluice_checkpoint` (`writer`, `position`, `applied`, `source_commit_unix`, `updated_at_unix`) VALUES (?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE `position` = VALUES(`position`), `applied` = VALUES(`applied`), `source_commit_unix` = VALUES(`source_commit_unix`), `updated_at_unix` = VALUES(`updated_at_unix`)";

const SELECT_CHECKPOINT: &str = "SELECT `position`, `applied`, `source_commit_unix` FROM `_sluice_checkpoint`";

const UPSERT_BACKFILL: &str = "INSERT INTO `_sluice_backfill` (`name`, `done`, `last_key`, `rows_copied`, `updated_at_unix`, `detail`) VALUES (?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE `done` = VALUES(`done`), `last_key` = VALUES(`last_key`), `rows_copied` = VALUES(`rows_copied`), `updated_at_unix` = VALUES(`updated_at_unix`), `detail` = VALUES(`detail`)";

const SELECT_BACKFILL: &str =
    "SELECT `name`, `done`, `last_key`, `rows_copied`, `detail` FROM `_sluice_backfill` ORDER BY `name`";

const RECORD_TABLE: &str = "INSERT INTO `_sluice_tables` (`name`, `source_name`, `definition`, `created_at_unix`) VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE `name` = `name`";

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
    /// `INSERT INTO t (c1, c2, …) VALUES `
    upsert_head: String,
    /// `(?, ?, …)`: one row's placeholders.
    upsert_row: String,
    /// ` ON DUPLICATE KEY UPDATE …`
    upsert_tail: String,
    /// `DELETE FROM t WHERE `
    delete_head: String,
    /// The quoted key columns.
    key_cols: Vec<String>,
}

impl TablePlan {
    fn new(table: Arc<TargetTable>) -> TargetResult<TablePlan> {
        validate_table(&table)?;
        let types: Vec<String> = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| mariadb_type(&c.source, table.key.contains(&i)))
            .collect();
        let name = quote_ident(&table.name);
        let cols: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let non_key: Vec<usize> = (0..cols.len()).filter(|i| !table.key.contains(i)).collect();
        let sets: Vec<String> = if non_key.is_empty() {
            // Every column is a key column: the row exists or is inserted.
            let k = &cols[table.key[0]];
            vec![format!("{k} = {k}")]
        } else {
            non_key
                .iter()
                .map(|&i| format!("{c} = VALUES({c})", c = cols[i]))
                .collect()
        };
        let upsert_head = format!("INSERT INTO {name} ({}) VALUES ", cols.join(", "));
        let upsert_row = format!("({})", vec!["?"; cols.len()].join(", "));
        let upsert_tail = format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", "));
        let key_cols: Vec<String> = table.key.iter().map(|&k| cols[k].clone()).collect();
        Ok(TablePlan {
            table,
            types,
            upsert_head,
            upsert_row,
            upsert_tail,
            delete_head: format!("DELETE FROM {name} WHERE "),
            key_cols,
        })
    }

    /// Placeholders per row of statement `kind`.
    fn params_per_row(&self, kind: StmtKind) -> usize {
        match kind {
            StmtKind::Upsert => self.table.columns.len(),
            StmtKind::Delete => self.table.key.len(),
        }
    }

    /// The text of statement `kind` for `rows` rows: one multi-row upsert (MariaDB applies its
    /// rows in order), or a delete of `rows` keys (`k IN (?, …)`, or an OR of key equalities
    /// for a composite key).
    fn sql(&self, kind: StmtKind, rows: usize) -> String {
        match kind {
            StmtKind::Upsert => {
                let mut sql = self.upsert_head.clone();
                for i in 0..rows {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&self.upsert_row);
                }
                sql.push_str(&self.upsert_tail);
                sql
            }
            StmtKind::Delete if self.key_cols.len() == 1 => format!(
                "{}{} IN ({})",
                self.delete_head,
                self.key_cols[0],
                vec!["?"; rows].join(", ")
            ),
            StmtKind::Delete => {
                let term: Vec<String> = self.key_cols.iter().map(|c| format!("{c} = ?")).collect();
                let term = format!("({})", term.join(" AND "));
                format!("{}{}", self.delete_head, vec![term; rows].join(" OR "))
            }
        }
    }

    fn not_null(&self, i: usize) -> bool {
        !self.table.columns[i].source.nullable || self.table.key.contains(&i)
    }

    fn create_sql(&self) -> String {
        let t = &self.table;
        let mut defs: Vec<String> = t
            .columns
            .iter()
            .zip(&self.types)
            .enumerate()
            .map(|(i, (c, ty))| {
                let null = if self.not_null(i) { "NOT NULL" } else { "NULL" };
                format!("{} {ty} {null}", quote_ident(&c.name))
            })
            .collect();
        let key: Vec<String> = t.key.iter().map(|&k| quote_ident(&t.columns[k].name)).collect();
        defs.push(format!("PRIMARY KEY ({})", key.join(", ")));
        format!(
            "CREATE TABLE IF NOT EXISTS {} (\n    {}\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin",
            quote_ident(&t.name),
            defs.join(",\n    ")
        )
    }

    /// The JSON description stored in `_sluice_tables.definition`.
    fn definition_json(&self) -> TargetResult<String> {
        definition_json(&self.table, &self.types, &[])
    }

    /// Converts `value` for column `i`, or names the column when the value doesn't fit.
    fn bind(&self, i: usize, value: &Value) -> TargetResult<MyValue> {
        let column = &self.table.columns[i].source;
        to_mysql(value, column).ok_or_else(|| {
            TargetError::Other(format!(
                "table {}: column {} ({:?} stored as {}) cannot hold a {} value",
                self.table.name,
                self.table.columns[i].name,
                column.kind,
                self.types[i],
                value.kind()
            ))
        })
    }

    fn bind_row(&self, row: &[Value]) -> TargetResult<Vec<MyValue>> {
        self.check_len(row)?;
        row.iter().enumerate().map(|(i, v)| self.bind(i, v)).collect()
    }

    fn bind_key(&self, row: &[Value]) -> TargetResult<Vec<MyValue>> {
        self.check_len(row)?;
        self.table.key.iter().map(|&k| self.bind(k, &row[k])).collect()
    }

    fn check_len(&self, row: &[Value]) -> TargetResult<()> {
        check_row_len(&self.table, row)
    }
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
    match value {
        MyValue::Int(i) => u64::try_from(*i).ok(),
        MyValue::UInt(u) => Some(*u),
        MyValue::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
        _ => None,
    }
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
        other => other.to_string(),
    }
}

fn db_error(operation: &'static str, table: &str, e: &mysql::Error) -> TargetError {
    TargetError::Database {
        operation,
        table: table.to_owned(),
        message: error_message(e),
    }
}

/// A MariaDB database sluice replicates into.
pub struct MariaDbTarget {
    /// Connection options with the database selected and the session set up.
    opts: Opts,
    database: String,
    conn: Conn,
    /// The connection failed at the transport level and must be replaced.
    broken: bool,
    plans: HashMap<String, TablePlan>,
    /// Prepared row statements by (table, kind, rows per statement); at most
    /// `BATCH_SIZES.len()` per table and kind.
    statements: HashMap<(String, StmtKind, usize), Statement>,
    /// Row changes of the open transaction not yet sent (see `super::batch`).
    pending: Pending<Vec<MyValue>>,
    checkpoint_statement: Option<Statement>,
    backfill_statement: Option<Statement>,
    /// Prepared verification reads by SQL text (see [`Target::read_rows`]); bounded.
    read_statements: HashMap<String, Statement>,
    state: TxState,
}

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
        // Statements are cached per (table, operation, rows) here, not by the driver's LRU cache
        // (which would close statements this target still holds).
        let base = OptsBuilder::from_opts(opts.into())
            .db_name(None::<String>)
            .init(init)
            .stmt_cache_size(0);
        let mut conn = Conn::new(base.clone()).map_err(|e| db_error("connect", database, &e))?;
        let exists: Vec<String> = exec_once(
            &mut conn,
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (database,),
        )
        .map_err(|e| db_error("inspect database", database, &e))?;
        if !exists.iter().any(|name| name == database) {
            conn.query_drop(format!(
                "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin",
                quote_ident(database)
            ))
            .map_err(|e| db_error("create database", database, &e))?;
        }
        conn.query_drop(format!("USE {}", quote_ident(database)))
            .map_err(|e| db_error("use database", database, &e))?;
        let opts: Opts = base.db_name(Some(database)).into();
        Ok(MariaDbTarget {
            opts,
            database: database.to_owned(),
            conn,
            broken: false,
            plans: HashMap::new(),
            statements: HashMap::new(),
            pending: Pending::default(),
            checkpoint_statement: None,
            backfill_statement: None,
            read_statements: HashMap::new(),
            state: TxState::Idle,
        })
    }

    /// The database the target writes into.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Replaces a failed connection (only ever called with no transaction open).
    fn ensure_connected(&mut self) -> TargetResult<()> {
        if !self.broken {
            return Ok(());
        }
        let conn = Conn::new(self.opts.clone()).map_err(|e| db_error("reconnect", &self.database, &e))?;
        // The old connection's statements died with it.
        self.statements.clear();
        self.checkpoint_statement = None;
        self.backfill_statement = None;
        self.read_statements.clear();
        self.conn = conn;
        self.broken = false;
        Ok(())
    }

    /// Maps a driver error, remembering when the connection itself failed.
    fn fail(&mut self, operation: &'static str, table: &str, e: &mysql::Error) -> TargetError {
        if is_connectivity_error(e) {
            self.broken = true;
        }
        db_error(operation, table, e)
    }

    /// The plan for `table`, built on first use and rebuilt when the definition changes.
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
            let plan = TablePlan::new(Arc::clone(table))?;
            // Buffered rows were bound for the old definition: send them first.
            self.flush()?;
            for kind in [StmtKind::Upsert, StmtKind::Delete] {
                for size in BATCH_SIZES {
                    if let Some(stmt) = self.statements.remove(&(table.name.clone(), kind, size)) {
                        if !self.broken {
                            let _ = self.conn.close(stmt);
                        }
                    }
                }
            }
            self.plans.insert(table.name.clone(), plan);
        }
        Ok(())
    }

    /// Executes the table's prepared statement `kind` for `rows` rows with `params`.
    fn execute(&mut self, name: &str, kind: StmtKind, rows: usize, params: Vec<MyValue>) -> TargetResult<()> {
        let operation = match kind {
            StmtKind::Upsert => "upsert",
            StmtKind::Delete => "delete",
        };
        let cache_key = (name.to_owned(), kind, rows);
        let stmt = match self.statements.get(&cache_key) {
            Some(stmt) => stmt.clone(),
            None => {
                let sql = self.plans[name].sql(kind, rows);
                let stmt = match self.conn.prep(&sql) {
                    Ok(stmt) => stmt,
                    Err(e) => return Err(self.fail(operation, name, &e)),
                };
                self.statements.insert(cache_key, stmt.clone());
                stmt
            }
        };
        match self.conn.exec_drop(&stmt, Params::Positional(params)) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(operation, name, &e)),
        }
    }

    /// Buffers one row change (see `super::batch`), flushing when the buffer is full.
    fn apply_op(&mut self, op: &RowOp) -> TargetResult<()> {
        let table = match op {
            RowOp::Insert { table, .. } | RowOp::Update { table, .. } | RowOp::Delete { table, .. } => table,
        };
        self.plan(table)?;
        let plan = &self.plans[&table.name];
        let name = table.name.as_str();
        let key_of = |row: &[Value]| key_identity(plan.table.key.iter().map(|&k| &row[k]));
        let bytes = |row: &[Value]| row.iter().map(value_bytes).sum::<usize>();
        match op {
            RowOp::Insert { row, .. } => {
                let values = plan.bind_row(row)?;
                self.pending.upsert(name, key_of(row), values, bytes(row));
            }
            RowOp::Delete { row, .. } => {
                let key = plan.bind_key(row)?;
                self.pending.delete(name, key_of(row), key, 0);
            }
            RowOp::Update { before, after, .. } => {
                plan.check_len(before)?;
                let values = plan.bind_row(after)?;
                let key_unchanged = plan.table.key.iter().all(|&k| before[k] == after[k]);
                if !key_unchanged {
                    let old_key = plan.bind_key(before)?;
                    self.pending.delete(name, key_of(before), old_key, 0);
                }
                // Updates in place, or writes the row whole when the target lacks it.
                self.pending.upsert(name, key_of(after), values, bytes(after));
            }
        }
        if self.pending.is_full() {
            self.flush()?;
        }
        Ok(())
    }

    /// One row's column-only backfill write, after the buffered changes (per-key order).
    /// One statement per row: it must not insert a row the target lacks, which the
    /// multi-row upserts would.
    fn fill_columns_now(&mut self, table: &Arc<TargetTable>, columns: &[usize], row: &[Value]) -> TargetResult<()> {
        check_fill_columns(table, columns)?;
        self.flush()?;
        self.plan(table)?;
        let plan = &self.plans[&table.name];
        plan.check_len(row)?;
        let mut params = Vec::with_capacity(columns.len() + plan.table.key.len());
        for &c in columns {
            params.push(plan.bind(c, &row[c])?);
        }
        params.extend(plan.bind_key(row)?);
        let sql = fill_columns_sql(&plan.table, &quote_ident(&table.name), columns, quote_ident, |_| {
            "?".into()
        });
        match self.conn.exec_drop(sql, Params::Positional(params)) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail("fill columns", &table.name, &e)),
        }
    }

    /// Sends every buffered row change: per table, its deletes, then its upserts, as
    /// multi-row statements of the fixed sizes.
    fn flush(&mut self) -> TargetResult<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        for table in self.pending.take() {
            let plan = &self.plans[&table.name];
            let deletes = table.deletes;
            let upserts: Vec<Vec<MyValue>> = table.upserts.into_iter().flatten().collect();
            let runs = [
                (
                    StmtKind::Delete,
                    chunk_sizes(deletes.len(), plan.params_per_row(StmtKind::Delete)),
                    deletes,
                ),
                (
                    StmtKind::Upsert,
                    chunk_sizes(upserts.len(), plan.params_per_row(StmtKind::Upsert)),
                    upserts,
                ),
            ];
            for (kind, sizes, rows) in runs {
                let mut rows = rows.into_iter();
                for size in sizes {
                    let params: Vec<MyValue> = rows.by_ref().take(size).flatten().collect();
                    self.execute(&table.name, kind, size, params)?;
                }
            }
        }
        Ok(())
    }

    /// [`MariaDbTarget::flush`] inside the open transaction; a failure rolls it back whole.
    fn flush_or_abandon(&mut self) -> TargetResult<()> {
        let result = self.flush();
        if result.is_err() {
            self.pending.clear();
            self.state = TxState::Failed;
            let _ = self.rollback_now();
        }
        result
    }

    /// Column names of every table in the database, in order.
    fn existing_tables(&mut self) -> TargetResult<HashMap<String, Vec<String>>> {
        let rows: Result<Vec<(String, String)>, _> = self.conn.query(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME, ORDINAL_POSITION",
        );
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                let database = self.database.clone();
                return Err(self.fail("inspect tables", &database, &e));
            }
        };
        let mut tables: HashMap<String, Vec<String>> = HashMap::new();
        for (table, column) in rows {
            tables.entry(table).or_default().push(column);
        }
        Ok(tables)
    }

    fn prepare_tables(&mut self, tables: &[Arc<TargetTable>]) -> TargetResult<()> {
        // Every check first: a refused prepare creates nothing.
        for table in tables {
            self.plan(table)?;
        }
        let existing = self.existing_tables()?;
        let mut to_create: Vec<(String, String)> = Vec::new();
        for (name, sql) in [
            (CHECKPOINT_TABLE, CREATE_CHECKPOINT),
            (TABLES_TABLE, CREATE_TABLES),
            (BACKFILL_TABLE, CREATE_BACKFILL),
            (LAG_TABLE, CREATE_LAG),
        ] {
            if !existing.contains_key(name) {
                to_create.push((name.to_owned(), sql.to_owned()));
            }
        }
        if existing
            .get(BACKFILL_TABLE)
            .is_some_and(|columns| !columns.iter().any(|c| c == "detail"))
        {
            to_create.push((BACKFILL_TABLE.to_owned(), ADD_BACKFILL_DETAIL.to_owned()));
        }
        for table in tables {
            let plan = &self.plans[&table.name];
            match existing.get(&table.name) {
                Some(columns) => {
                    for c in missing_columns(&plan.table, columns)? {
                        // Nullable: existing rows hold NULL until the column-only backfill.
                        let sql = format!(
                            "ALTER TABLE {} ADD COLUMN {} {} NULL",
                            quote_ident(&table.name),
                            quote_ident(&plan.table.columns[c].name),
                            plan.types[c]
                        );
                        to_create.push((table.name.clone(), sql));
                    }
                }
                None => to_create.push((table.name.clone(), plan.create_sql())),
            }
        }

        if !to_create.is_empty() {
            if self.state == TxState::Open {
                // DDL would implicitly commit the open transaction: create the tables on a
                // separate connection instead (see the module documentation).
                let mut side = Conn::new(self.opts.clone()).map_err(|e| db_error("connect", &self.database, &e))?;
                side.query_drop(format!("SET SESSION lock_wait_timeout = {DDL_LOCK_WAIT_SECONDS}"))
                    .map_err(|e| db_error("configure", &self.database, &e))?;
                for (name, sql) in &to_create {
                    side.query_drop(sql).map_err(|e| db_error("create table", name, &e))?;
                }
            } else {
                for (name, sql) in &to_create {
                    if let Err(e) = self.conn.query_drop(sql) {
                        return Err(self.fail("create table", name, &e));
                    }
                }
            }
        }

        let now = unix_now();
        let record = match self.conn.prep(RECORD_TABLE) {
            Ok(stmt) => stmt,
            Err(e) => return Err(self.fail("record table", TABLES_TABLE, &e)),
        };
        let mut result = Ok(());
        for table in tables {
            let plan = &self.plans[&table.name];
            let definition = match plan.definition_json() {
                Ok(definition) => definition,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let params = (
                table.name.as_str(),
                plan.table.source_name.as_str(),
                definition.as_str(),
                now,
            );
            if let Err(e) = self.conn.exec_drop(&record, params) {
                result = Err(self.fail("record table", &table.name, &e));
                break;
            }
        }
        if !self.broken {
            let _ = self.conn.close(record);
        }
        result
    }

    fn rollback_now(&mut self) -> TargetResult<()> {
        self.pending.clear();
        if self.broken {
            // The server rolls back a transaction whose connection is gone.
            return Ok(());
        }
        match self.conn.query_drop("ROLLBACK") {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail("rollback", "(transaction)", &e)),
        }
    }

    fn write_checkpoint(&mut self, checkpoint: &Checkpoint) -> TargetResult<()> {
        let stmt = match &self.checkpoint_statement {
            Some(stmt) => stmt.clone(),
            None => match self.conn.prep(UPSERT_CHECKPOINT) {
                Ok(stmt) => {
                    self.checkpoint_statement = Some(stmt.clone());
                    stmt
                }
                Err(e) => return Err(self.fail("write checkpoint", CHECKPOINT_TABLE, &e)),
            },
        };
        let params = (
            checkpoint.writer,
            checkpoint.position.to_string(),
            checkpoint.applied_text(),
            i64::from(checkpoint.source_commit_unix),
            unix_now(),
        );
        if let Err(e) = self.conn.exec_drop(&stmt, params) {
            return Err(self.fail("write checkpoint", CHECKPOINT_TABLE, &e));
        }
        if let Err(e) = self.conn.query_drop("COMMIT") {
            return Err(self.fail("commit", "(transaction)", &e));
        }
        Ok(())
    }

    fn write_backfill(&mut self, progress: &BackfillProgress) -> TargetResult<()> {
        let rows_copied = rows_copied_to_db(progress)?;
        let stmt = match &self.backfill_statement {
            Some(stmt) => stmt.clone(),
            None => match self.conn.prep(UPSERT_BACKFILL) {
                Ok(stmt) => {
                    self.backfill_statement = Some(stmt.clone());
                    stmt
                }
                Err(e) => return Err(self.fail("record backfill", BACKFILL_TABLE, &e)),
            },
        };
        let params = (
            progress.table.as_str(),
            progress.done,
            progress.last_key.as_deref(),
            rows_copied,
            unix_now(),
            backfill_detail_to_db(progress),
        );
        if let Err(e) = self.conn.exec_drop(&stmt, params) {
            return Err(self.fail("record backfill", &progress.table, &e));
        }
        Ok(())
    }
}

impl Target for MariaDbTarget {
    fn prepare(&mut self, tables: &[Arc<TargetTable>]) -> TargetResult<()> {
        if self.state == TxState::Open {
            self.flush_or_abandon()?;
            return self.prepare_tables(tables).inspect_err(|_| {
                let _ = self.rollback_now();
                self.state = TxState::Failed;
            });
        }
        self.ensure_connected()?;
        self.prepare_tables(tables)
    }

    fn load_checkpoint(&mut self) -> TargetResult<Option<Checkpoint>> {
        if self.state != TxState::Open {
            self.ensure_connected()?;
        }
        let rows: Vec<(String, String, i64)> = match self.conn.query(SELECT_CHECKPOINT) {
            Ok(rows) => rows,
            Err(mysql::Error::MySqlError(e)) if e.code == ER_NO_SUCH_TABLE => return Ok(None),
            Err(e) => return Err(self.fail("load checkpoint", CHECKPOINT_TABLE, &e)),
        };
        checkpoint_from_rows(rows)
    }

    fn begin(&mut self) -> TargetResult<()> {
        if self.state == TxState::Open {
            return Err(TargetError::Other("begin called while a transaction is open".into()));
        }
        self.pending.clear();
        self.ensure_connected()?;
        if let Err(e) = self.conn.query_drop("START TRANSACTION") {
            let e = self.fail("begin", "(transaction)", &e);
            if !self.broken {
                return Err(e);
            }
            // The connection was gone (server restart, wait_timeout): nothing was open on
            // it, so reconnect and start over once.
            self.ensure_connected()?;
            if let Err(e) = self.conn.query_drop("START TRANSACTION") {
                return Err(self.fail("begin", "(transaction)", &e));
            }
        }
        self.state = TxState::Open;
        Ok(())
    }

    fn apply(&mut self, op: &RowOp) -> TargetResult<()> {
        self.state.require_open("apply")?;
        let result = self.apply_op(op);
        if result.is_err() {
            // No partial state: abandon the whole target transaction now.
            self.state = TxState::Failed;
            let _ = self.rollback_now();
        }
        result
    }

    fn commit(&mut self, checkpoint: &Checkpoint) -> TargetResult<()> {
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

    fn rollback(&mut self) -> TargetResult<()> {
        self.state = TxState::Idle;
        self.rollback_now()
    }

    fn record_backfill(&mut self, progress: &BackfillProgress) -> TargetResult<()> {
        self.state.require_open("record_backfill")?;
        let result = self.flush().and_then(|()| self.write_backfill(progress));
        if result.is_err() {
            // No partial state: abandon the whole target transaction now.
            self.state = TxState::Failed;
            let _ = self.rollback_now();
        }
        result
    }

    fn record_lag(&mut self, report: &crate::ops::lag::LagReport) -> TargetResult<()> {
        self.state.require_open("record_lag")?;
        self.flush_or_abandon()?;
        let [p50, p99, p999, max, samples, window, at] = super::lag_columns(report);
        let params = (report.source, p50, p99, p999, max, samples, window, at);
        if let Err(e) = self.conn.exec_drop(UPSERT_LAG, params) {
            // No partial state: abandon the whole target transaction now.
            let e = self.fail("record lag", LAG_TABLE, &e);
            self.state = TxState::Failed;
            let _ = self.rollback_now();
            return Err(e);
        }
        Ok(())
    }

    fn load_lag(&mut self) -> TargetResult<Option<crate::ops::lag::LagReport>> {
        if self.state != TxState::Open {
            self.ensure_connected()?;
        }
        type Row = (String, i64, i64, i64, i64, i64, i64, i64);
        let row: Option<Row> = match self.conn.query_first(SELECT_LAG) {
            Ok(row) => row,
            Err(mysql::Error::MySqlError(e)) if e.code == ER_NO_SUCH_TABLE => return Ok(None),
            Err(e) => return Err(self.fail("load lag", LAG_TABLE, &e)),
        };
        Ok(row.map(|(source, a, b, c, d, e, f, g)| super::lag_from_columns(&source, [a, b, c, d, e, f, g])))
    }

    fn recorded_tables(&mut self) -> TargetResult<Vec<String>> {
        if self.state != TxState::Open {
            self.ensure_connected()?;
        }
        let names: Vec<String> = match self.conn.query("SELECT `name` FROM `_sluice_tables` ORDER BY `name`") {
            Ok(rows) => rows,
            Err(mysql::Error::MySqlError(e)) if e.code == ER_NO_SUCH_TABLE => return Ok(Vec::new()),
            Err(e) => return Err(self.fail("list tables", TABLES_TABLE, &e)),
        };
        let existing = self.existing_tables()?;
        Ok(names.into_iter().filter(|n| existing.contains_key(n)).collect())
    }

    fn empty_table(&mut self, table: &Arc<TargetTable>) -> TargetResult<()> {
        self.state.require_open("empty_table")?;
        self.flush_or_abandon()?;
        // DELETE, not TRUNCATE: TRUNCATE would commit the open transaction.
        if let Err(e) = self
            .conn
            .query_drop(format!("DELETE FROM {}", quote_ident(&table.name)))
        {
            let e = self.fail("empty table", &table.name, &e);
            self.state = TxState::Failed;
            let _ = self.rollback_now();
            return Err(e);
        }
        Ok(())
    }

    fn drop_table(&mut self, name: &str) -> TargetResult<()> {
        if self.state == TxState::Open {
            return Err(TargetError::Other(format!(
                "drop_table {name} called inside a transaction"
            )));
        }
        self.ensure_connected()?;
        // DDL commits on its own here: the table goes first and its records after.
        let drop = format!("DROP TABLE IF EXISTS {}", quote_ident(name));
        let result = self
            .conn
            .query_drop(drop)
            .and_then(|()| {
                self.conn
                    .exec_drop("DELETE FROM `_sluice_tables` WHERE `name` = ?", (name,))
            })
            .and_then(|()| {
                self.conn
                    .exec_drop("DELETE FROM `_sluice_backfill` WHERE `name` = ?", (name,))
            });
        self.plans.remove(name);
        result.map_err(|e| self.fail("drop table", name, &e))
    }

    fn load_backfill(&mut self) -> TargetResult<Vec<BackfillProgress>> {
        if self.state != TxState::Open {
            self.ensure_connected()?;
        }
        type Row = (String, i64, Option<String>, i64, Option<String>);
        let rows: Vec<Row> = match self.conn.query(SELECT_BACKFILL) {
            Ok(rows) => rows,
            Err(mysql::Error::MySqlError(e)) if e.code == ER_NO_SUCH_TABLE => return Ok(Vec::new()),
            Err(e) => return Err(self.fail("load backfill", BACKFILL_TABLE, &e)),
        };
        rows.into_iter()
            .map(|(table, done, last_key, rows_copied, detail)| {
                let rows_copied = rows_copied_from_db(&table, rows_copied)?;
                Ok(backfill_from_db(
                    BackfillProgress {
                        table,
                        done: done != 0,
                        last_key,
                        rows_copied,
                        ..BackfillProgress::default()
                    },
                    detail.as_deref(),
                ))
            })
            .collect()
    }

    fn column_gaps(&mut self, tables: &[Arc<TargetTable>]) -> TargetResult<Vec<(String, Vec<usize>)>> {
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

    fn fill_columns(&mut self, table: &Arc<TargetTable>, columns: &[usize], row: &[Value]) -> TargetResult<()> {
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

    fn read_rows(&mut self, table: &Arc<TargetTable>, selection: RowSelection<'_>) -> TargetResult<Vec<Vec<Value>>> {
        if self.state == TxState::Open {
            // The read must see this transaction's own changes.
            self.flush_or_abandon()?;
        } else {
            self.ensure_connected()?;
        }
        self.plan(table)?;
        let plan = &self.plans[&table.name];
        let cols: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let keys: Vec<String> = table.key.iter().map(|&k| cols[k].clone()).collect();
        let (condition, binds) = selection_condition(&keys, &selection);
        let mut sql = format!(
            "SELECT {} FROM {} WHERE {}",
            cols.join(", "),
            quote_ident(&table.name),
            number_placeholders(&condition, |_| "?".to_owned())
        );
        if let RowSelection::KeyRange { limit, .. } = selection {
            sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", keys.join(", ")));
        }
        if self.state == TxState::Open {
            // A repair's read: lock the rows until the repair commits.
            sql.push_str(" FOR UPDATE");
        }
        let params = binds
            .iter()
            .map(|&(tuple, k)| plan.bind(table.key[k], selection_value(&selection, (tuple, k))))
            .collect::<TargetResult<Vec<_>>>()?;
        let stmt = match self.read_statements.get(&sql) {
            Some(stmt) => stmt.clone(),
            None => {
                if self.read_statements.len() >= 64 {
                    for (_, old) in self.read_statements.drain() {
                        let _ = self.conn.close(old);
                    }
                }
                let stmt = match self.conn.prep(&sql) {
                    Ok(stmt) => stmt,
                    Err(e) => return Err(self.fail("verify read", &table.name, &e)),
                };
                self.read_statements.insert(sql, stmt.clone());
                stmt
            }
        };
        let rows: Vec<mysql::Row> = match self.conn.exec(&stmt, Params::Positional(params)) {
            Ok(rows) => rows,
            Err(e) => return Err(self.fail("verify read", &table.name, &e)),
        };
        rows.into_iter()
            .map(|row| {
                row.unwrap()
                    .into_iter()
                    .zip(&table.columns)
                    .map(|(v, c)| {
                        crate::source_rows::convert(v, &c.source).ok_or_else(|| {
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

    fn record_verified(&mut self, record: &VerifiedRecord) -> TargetResult<()> {
        self.ensure_connected()?;
        let upsert =
            |conn: &mut Conn| {
                conn.exec_drop(
                "INSERT INTO `_sluice_verified` (`id`, `position`, `mismatches`, `unchecked_txns`, `updated_at_unix`) \
                 VALUES (0, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE `position` = VALUES(`position`), \
                 `mismatches` = VALUES(`mismatches`), `unchecked_txns` = VALUES(`unchecked_txns`), \
                 `updated_at_unix` = VALUES(`updated_at_unix`)",
                (record.position.to_string(), record.mismatches, record.unchecked_txns, unix_now()),
            )
            };
        let result = match upsert(&mut self.conn) {
            // Created on first use (DDL commits implicitly, so never inside a transaction).
            Err(mysql::Error::MySqlError(e)) if e.code == ER_NO_SUCH_TABLE => self
                .conn
                .query_drop(
                    "CREATE TABLE IF NOT EXISTS `_sluice_verified` (`id` INT NOT NULL PRIMARY KEY, `position` TEXT NOT NULL, \
                     `mismatches` BIGINT NOT NULL, `unchecked_txns` BIGINT NOT NULL, `updated_at_unix` BIGINT NOT NULL) ENGINE=InnoDB",
                )
                .and_then(|_| upsert(&mut self.conn)),
            other => other,
        };
        result.map_err(|e| self.fail("record verified", "_sluice_verified", &e))
    }

    fn load_verified(&mut self) -> TargetResult<Option<VerifiedRecord>> {
        if self.state != TxState::Open {
            self.ensure_connected()?;
        }
        let row: Option<(String, i64, i64)> = match self
            .conn
            .query_first("SELECT `position`, `mismatches`, `unchecked_txns` FROM `_sluice_verified` WHERE `id` = 0")
        {
            Ok(row) => row,
            Err(mysql::Error::MySqlError(e)) if e.code == ER_NO_SUCH_TABLE => return Ok(None),
            Err(e) => return Err(self.fail("load verified", "_sluice_verified", &e)),
        };
        row.map(verified_from_row).transpose()
    }

    fn sql_checksum(
        &mut self,
        table: &Arc<TargetTable>,
        after: Option<&[Value]>,
        upto: Option<&[Value]>,
    ) -> TargetResult<Option<SqlChecksum>> {
        if self.state == TxState::Open {
            // The checksum must cover this transaction's own changes.
            self.flush_or_abandon()?;
        } else {
            self.ensure_connected()?;
        }
        self.plan(table)?;
        let plan = &self.plans[&table.name];
        let keys: Vec<String> = table.key.iter().map(|&k| quote_ident(&table.columns[k].name)).collect();
        let selection = RowSelection::KeyRange { after, upto, limit: 0 };
        let (condition, binds) = selection_condition(&keys, &selection);
        let columns: Vec<(String, ColumnKind)> = table
            .columns
            .iter()
            .map(|c| (quote_ident(&c.name), c.source.kind))
            .collect();
        let sql = checksum_select(
            &columns,
            &quote_ident(&table.name),
            &number_placeholders(&condition, |_| "?".to_owned()),
        );
        let params = binds
            .iter()
            .map(|&(tuple, k)| plan.bind(table.key[k], selection_value(&selection, (tuple, k))))
            .collect::<TargetResult<Vec<_>>>()?;
        let row: Option<mysql::Row> = match self.conn.exec_first(&sql, Params::Positional(params)) {
            Ok(row) => row,
            Err(e) => return Err(self.fail("verify checksum", &table.name, &e)),
        };
        let values = row.map(|r| r.unwrap()).unwrap_or_default();
        let get = |i: usize| values.get(i).and_then(result_u64);
        match (get(0), get(1), get(2)) {
            (Some(rows), Some(xor), Some(sum)) => Ok(Some(SqlChecksum { rows, xor, sum })),
            _ => Err(TargetError::Other(format!(
                "table {}: the checksum query returned an unexpected result",
                table.name
            ))),
        }
    }

    fn commit_without_checkpoint(&mut self) -> TargetResult<()> {
        self.state.require_open_for_commit()?;
        self.flush_or_abandon()?;
        match self.conn.query_drop("COMMIT") {
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
