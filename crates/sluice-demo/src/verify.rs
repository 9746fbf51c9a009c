//! Source vs target comparison, computed independently on each side.
//!
//! Each side is read in primary-key order and every value is turned into a canonical form:
//! a storage class (`i` integer, `r` real, `t` text, `b` blob) and its text, NULL kept
//! apart from every text. The source side starts from MariaDB's own text output (session
//! `time_zone = '+00:00'`, so TIMESTAMPs are UTC) and the storage class that
//! docs/type-mapping.md promises for the column's type; the only conversion applied is the
//! documented temporal format (the fraction of a second printed with 6 digits, and only when
//! non-zero). The target side is SQLite's values as stored, unconverted. A SHA-256 over the
//! canonical rows is the table's checksum.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use rusqlite::types::ValueRef;
use sha2::{Digest, Sha256};

use crate::shop::{TableSpec, SCHEMA};

/// One value in canonical form; `None` is SQL NULL.
type Canon = Option<(u8, Vec<u8>)>;
type CanonRow = Vec<Canon>;

pub struct TableReport {
    pub table: String,
    pub source_columns: usize,
    pub columns: Vec<String>,
    pub excluded: Vec<String>,
    pub source_rows: usize,
    pub target_rows: Option<usize>,
    pub source_sum: String,
    pub target_sum: Option<String>,
    /// Why the table is not equal; `None` when it is.
    pub problem: Option<String>,
}

struct SourceColumn {
    name: String,
    data_type: String,
}

fn quote_mysql(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn quote_sqlite(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The storage class docs/type-mapping.md gives a source type.
fn storage_class(data_type: &str) -> u8 {
    match data_type {
        "tinyint" | "smallint" | "mediumint" | "int" | "bigint" | "year" | "bit" => b'i',
        "float" | "double" => b'r',
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => b'b',
        _ => b't',
    }
}

/// MariaDB prints DATETIME(6) as `...:SS.ffffff` and TIMESTAMP(3) as `...:SS.fff` (always);
/// the documented target form prints 6 digits, and only when the fraction is non-zero.
fn canonical_temporal(text: &str) -> String {
    match text.split_once('.') {
        Some((whole, frac)) if frac.bytes().all(|b| b == b'0') => whole.to_owned(),
        Some((whole, frac)) => format!("{whole}.{frac:0<6}"),
        None => text.to_owned(),
    }
}

fn source_value(value: mysql_async::Value, data_type: &str) -> anyhow::Result<Canon> {
    let bytes = match value {
        mysql_async::Value::NULL => return Ok(None),
        mysql_async::Value::Bytes(bytes) => bytes,
        // The text protocol sends everything as bytes; anything else would be a surprise.
        other => bail!("unexpected value kind from the source: {other:?}"),
    };
    let class = storage_class(data_type);
    let bytes = match data_type {
        "datetime" | "timestamp" | "time" => {
            let text = String::from_utf8(bytes).context("temporal value is not UTF-8")?;
            canonical_temporal(&text).into_bytes()
        }
        _ => bytes,
    };
    Ok(Some((class, bytes)))
}

fn target_value(value: ValueRef<'_>) -> Canon {
    match value {
        ValueRef::Null => None,
        ValueRef::Integer(v) => Some((b'i', v.to_string().into_bytes())),
        ValueRef::Real(v) => Some((b'r', v.to_string().into_bytes())),
        ValueRef::Text(t) => Some((b't', t.to_vec())),
        ValueRef::Blob(b) => Some((b'b', b.to_vec())),
    }
}

fn checksum(rows: &[CanonRow]) -> String {
    let mut hash = Sha256::new();
    for row in rows {
        for value in row {
            match value {
                None => hash.update([0u8]),
                Some((class, bytes)) => {
                    hash.update([1u8, *class]);
                    hash.update((bytes.len() as u64).to_le_bytes());
                    hash.update(bytes);
                }
            }
        }
        hash.update([0xFFu8]);
    }
    hex::encode(hash.finalize())
}

fn show(value: &Canon) -> String {
    match value {
        None => "NULL".to_owned(),
        Some((class, bytes)) => {
            let text = String::from_utf8_lossy(bytes);
            let text: String = text.chars().take(40).collect();
            format!("{}{:?}", char::from(*class), text)
        }
    }
}

/// Names the differences between two row sets, keyed by the key columns at `key`.
fn describe_differences(columns: &[String], key: &[usize], source: &[CanonRow], target: &[CanonRow]) -> String {
    let key_of = |row: &CanonRow| -> Vec<Canon> { key.iter().map(|&k| row[k].clone()).collect() };
    let key_text = |row: &CanonRow| -> String {
        key.iter()
            .map(|&k| format!("{}={}", columns[k], show(&row[k])))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let target_by_key: HashMap<Vec<Canon>, &CanonRow> = target.iter().map(|r| (key_of(r), r)).collect();
    let source_keys: std::collections::HashSet<Vec<Canon>> = source.iter().map(key_of).collect();
    let (mut missing, mut differ, mut first) = (0usize, 0usize, None);
    for row in source {
        match target_by_key.get(&key_of(row)) {
            None => {
                missing += 1;
                first.get_or_insert_with(|| format!("missing at target: ({})", key_text(row)));
            }
            Some(other) if *other != row => {
                differ += 1;
                first.get_or_insert_with(|| {
                    let cols: Vec<String> = (0..columns.len())
                        .filter(|&i| row[i] != other[i])
                        .map(|i| format!("{} source {} target {}", columns[i], show(&row[i]), show(&other[i])))
                        .collect();
                    format!("({}): {}", key_text(row), cols.join("; "))
                });
            }
            Some(_) => {}
        }
    }
    let extra: Vec<&CanonRow> = target.iter().filter(|r| !source_keys.contains(&key_of(r))).collect();
    if let Some(row) = extra.first() {
        first.get_or_insert_with(|| format!("extra at target: ({})", key_text(row)));
    }
    if missing + differ + extra.len() == 0 {
        return "same rows, different order".to_owned();
    }
    format!(
        "{missing} missing at target, {} extra, {differ} different; first: {}",
        extra.len(),
        first.unwrap_or_default()
    )
}

/// Compares one replicated table. `source` must have `time_zone = '+00:00'`.
pub async fn compare_table(
    source: &mut Conn,
    target: &rusqlite::Connection,
    spec: &TableSpec,
) -> anyhow::Result<TableReport> {
    let all: Vec<(String, String)> = source
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (SCHEMA, spec.name),
        )
        .await?;
    let key_names: Vec<String> = source
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
            (SCHEMA, spec.name),
        )
        .await?;
    let columns: Vec<SourceColumn> = all
        .iter()
        .filter(|(name, _)| !spec.excluded.iter().any(|x| x.eq_ignore_ascii_case(name)))
        .map(|(name, data_type)| SourceColumn {
            name: name.clone(),
            data_type: data_type.to_ascii_lowercase(),
        })
        .collect();
    let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    let key: Vec<usize> = key_names
        .iter()
        .map(|k| names.iter().position(|n| n == k).context("key column is replicated"))
        .collect::<anyhow::Result<_>>()?;

    // Source: MariaDB's text protocol, in key order.
    let select_list = names
        .iter()
        .map(
            |n| match spec.truncated.iter().find(|(c, _)| c.eq_ignore_ascii_case(n)) {
                Some((_, chars)) => format!("LEFT({}, {chars})", quote_mysql(n)),
                None => quote_mysql(n),
            },
        )
        .collect::<Vec<_>>()
        .join(", ");
    let order_by = key_names.iter().map(|n| quote_mysql(n)).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT {select_list} FROM {}.{} {} ORDER BY {order_by}",
        quote_mysql(SCHEMA),
        quote_mysql(spec.name),
        spec.source_where.map_or(String::new(), |w| format!("WHERE {w}"))
    );
    let rows: Vec<Row> = source.query(sql).await?;
    let source_rows: Vec<CanonRow> = rows
        .into_iter()
        .map(|row| {
            row.unwrap()
                .into_iter()
                .zip(&columns)
                .map(|(v, c)| source_value(v, &c.data_type))
                .collect()
        })
        .collect::<anyhow::Result<_>>()?;
    let source_sum = checksum(&source_rows);

    let mut report = TableReport {
        table: spec.name.to_owned(),
        source_columns: all.len(),
        columns: names.clone(),
        excluded: spec.excluded.iter().map(|s| (*s).to_owned()).collect(),
        source_rows: source_rows.len(),
        target_rows: None,
        source_sum,
        target_sum: None,
        problem: None,
    };

    // Target: SQLite as stored, in key order.
    let exists: bool = target.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        [spec.name],
        |r| r.get(0),
    )?;
    if !exists {
        report.problem = Some("table missing at target".to_owned());
        return Ok(report);
    }
    let target_columns: Vec<String> = target
        .prepare(&format!(
            "SELECT name FROM pragma_table_info({})",
            sql_literal(spec.name)
        ))?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if target_columns != names {
        report.problem = Some(format!(
            "columns differ: expected {names:?}, target has {target_columns:?}"
        ));
        return Ok(report);
    }
    let sql = format!(
        "SELECT {} FROM {} ORDER BY {}",
        names.iter().map(|n| quote_sqlite(n)).collect::<Vec<_>>().join(", "),
        quote_sqlite(spec.name),
        key_names.iter().map(|n| quote_sqlite(n)).collect::<Vec<_>>().join(", ")
    );
    let mut statement = target.prepare(&sql)?;
    let width = names.len();
    let target_rows: Vec<CanonRow> = statement
        .query_map([], |row| {
            (0..width)
                .map(|i| row.get_ref(i).map(target_value))
                .collect::<Result<CanonRow, _>>()
        })?
        .collect::<Result<_, _>>()?;
    let target_sum = checksum(&target_rows);
    report.target_rows = Some(target_rows.len());
    if target_sum != report.source_sum {
        report.problem = Some(describe_differences(&names, &key, &source_rows, &target_rows));
    }
    report.target_sum = Some(target_sum);
    Ok(report)
}

fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Target tables that are not sluice's bookkeeping tables.
pub fn target_tables(target: &rusqlite::Connection) -> anyhow::Result<Vec<String>> {
    let tables = target
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE '\\_sluice\\_%' ESCAPE '\\' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(tables)
}

/// The checkpoint sluice committed (its writers' records merged: the low-water mark), as text.
pub fn target_checkpoint(target: &rusqlite::Connection) -> anyhow::Result<Option<String>> {
    use sluice_engine::target::Checkpoint;
    let mut statement = target.prepare(r#"SELECT "position", "applied" FROM "_sluice_checkpoint""#)?;
    let rows: Vec<(String, String)> = statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut records = Vec::new();
    for (position, applied) in rows {
        records.push(Checkpoint {
            position: position
                .parse()
                .map_err(|e| anyhow::anyhow!("checkpoint position: {e}"))?,
            applied: Checkpoint::parse_applied(&applied)
                .map_err(|e| anyhow::anyhow!("checkpoint applied list: {e}"))?,
            ..Checkpoint::default()
        });
    }
    Ok(Checkpoint::merge(records).map(|c| c.position.to_string()))
}

/// Occurrences of `needle` in the target database's files (main file, and WAL if present).
pub fn count_in_files(target: &Path, needle: &str) -> anyhow::Result<usize> {
    let mut count = 0;
    for suffix in ["", "-wal"] {
        let mut path = target.as_os_str().to_owned();
        path.push(suffix);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", Path::new(&path).display())),
        };
        count += bytes.windows(needle.len()).filter(|w| *w == needle.as_bytes()).count();
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporal_fractions_follow_the_mapping_doc() {
        assert_eq!(canonical_temporal("2024-01-02 03:04:05.000"), "2024-01-02 03:04:05");
        assert_eq!(
            canonical_temporal("2024-01-02 03:04:05.120"),
            "2024-01-02 03:04:05.120000"
        );
        assert_eq!(
            canonical_temporal("2024-01-02 03:04:05.000001"),
            "2024-01-02 03:04:05.000001"
        );
        assert_eq!(canonical_temporal("2024-01-02 03:04:05"), "2024-01-02 03:04:05");
    }

    #[test]
    fn null_differs_from_the_text_null_and_the_empty_string() {
        let null = checksum(&[vec![None]]);
        let text = checksum(&[vec![Some((b't', b"NULL".to_vec()))]]);
        let empty = checksum(&[vec![Some((b't', Vec::new()))]]);
        assert!(null != text && text != empty && null != empty);
    }
}
