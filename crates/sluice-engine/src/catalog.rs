//! The source's own description of its tables, from `information_schema`.
//!
//! Used to create target tables before the first row event arrives, and to complete
//! TABLE_MAP events that lack full row metadata (older servers or
//! `binlog_row_metadata=MINIMAL`). Note that `information_schema` describes the table *now*,
//! not at the binlog position being read; with `binlog_row_metadata=FULL` (which preflight
//! recommends) the binlog itself says what each row event means.

use mysql_async::prelude::Queryable;
use sluice_binlog::table_map::column_type as ct;
use sluice_binlog::{Charset, ColumnDef, ColumnKind, TableDef};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("reading information_schema for {table}: {source}")]
    Query { table: String, source: mysql_async::Error },
    #[error("table {table} has a column type sluice does not know: {column_type} (column {column})")]
    UnknownType {
        table: String,
        column: String,
        column_type: String,
    },
}

/// Lists `(schema, table)` of every base table the user can see, except system schemas.
pub async fn list_tables(conn: &mut mysql_async::Conn) -> Result<Vec<(String, String)>, CatalogError> {
    conn.query(
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
         WHERE TABLE_TYPE = 'BASE TABLE' \
         AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') \
         ORDER BY TABLE_SCHEMA, TABLE_NAME",
    )
    .await
    .map_err(|source| CatalogError::Query {
        table: "*".into(),
        source,
    })
}

type ColumnRow = (
    String,
    String,
    String,
    String,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    Option<String>,
    Option<u64>,
);

/// Loads one table's definition. `None` when the table does not exist.
pub async fn load_table(
    conn: &mut mysql_async::Conn,
    schema: &str,
    table: &str,
) -> Result<Option<TableDef>, CatalogError> {
    let qualified = format!("{schema}.{table}");
    let rows: Vec<ColumnRow> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, NUMERIC_PRECISION, NUMERIC_SCALE, \
                    DATETIME_PRECISION, CHARACTER_SET_NAME, CHARACTER_MAXIMUM_LENGTH \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (schema, table),
        )
        .await
        .map_err(|source| CatalogError::Query {
            table: qualified.clone(),
            source,
        })?;
    if rows.is_empty() {
        return Ok(None);
    }
    let key_columns: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
            (schema, table),
        )
        .await
        .map_err(|source| CatalogError::Query {
            table: qualified.clone(),
            source,
        })?;

    let mut columns = Vec::with_capacity(rows.len());
    for (name, data_type, column_type, nullable, precision, scale, dt_precision, charset, max_len) in rows {
        let unsigned = column_type.to_ascii_lowercase().contains("unsigned");
        let (kind, binlog_type) = match data_type.to_ascii_lowercase().as_str() {
            "tinyint" => (ColumnKind::TinyInt, ct::TINY),
            "smallint" => (ColumnKind::SmallInt, ct::SHORT),
            "mediumint" => (ColumnKind::MediumInt, ct::INT24),
            "int" | "integer" => (ColumnKind::Int, ct::LONG),
            "bigint" => (ColumnKind::BigInt, ct::LONGLONG),
            "decimal" | "numeric" => (ColumnKind::Decimal, ct::NEWDECIMAL),
            "float" => (ColumnKind::Float, ct::FLOAT),
            "double" | "real" => (ColumnKind::Double, ct::DOUBLE),
            "date" => (ColumnKind::Date, ct::DATE),
            "time" => (ColumnKind::Time, ct::TIME2),
            "datetime" => (ColumnKind::DateTime, ct::DATETIME2),
            "timestamp" => (ColumnKind::Timestamp, ct::TIMESTAMP2),
            "year" => (ColumnKind::Year, ct::YEAR),
            "char" | "varchar" => (
                if charset.is_some() {
                    ColumnKind::Text
                } else {
                    ColumnKind::Binary
                },
                ct::VARCHAR,
            ),
            "tinytext" | "text" | "mediumtext" | "longtext" | "json" => (ColumnKind::Text, ct::BLOB),
            "binary" | "varbinary" => (ColumnKind::Binary, ct::VARCHAR),
            "tinyblob" | "blob" | "mediumblob" | "longblob" => (ColumnKind::Binary, ct::BLOB),
            "enum" => (ColumnKind::Enum, ct::ENUM),
            "set" => (ColumnKind::Set, ct::SET),
            "bit" => (ColumnKind::Bit, ct::BIT),
            "inet6" | "uuid" | "inet4" => (ColumnKind::Binary, ct::STRING),
            "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring" | "multipolygon"
            | "geometrycollection" => (ColumnKind::Other, ct::GEOMETRY),
            _ => {
                return Err(CatalogError::UnknownType {
                    table: qualified,
                    column: name,
                    column_type,
                })
            }
        };
        let labels = if matches!(kind, ColumnKind::Enum | ColumnKind::Set) {
            parse_labels(&column_type)
        } else {
            Vec::new()
        };
        let is_decimal = kind == ColumnKind::Decimal;
        columns.push(ColumnDef {
            name,
            kind,
            binlog_type,
            meta: 0,
            unsigned,
            nullable: nullable.eq_ignore_ascii_case("YES"),
            charset: match (&charset, kind) {
                (_, ColumnKind::Binary) => Charset::Binary,
                (Some(cs), _) => Charset::from_name(cs),
                (None, ColumnKind::Text | ColumnKind::Enum | ColumnKind::Set) => Charset::Utf8,
                (None, _) => Charset::Binary,
            },
            labels,
            precision: if is_decimal { precision.unwrap_or(0) as u8 } else { 0 },
            scale: if is_decimal { scale.unwrap_or(0) as u8 } else { 0 },
            fsp: dt_precision.unwrap_or(0) as u8,
            // BIT's width is its numeric precision; other types have a character length.
            length: if kind == ColumnKind::Bit {
                precision.unwrap_or(0)
            } else {
                max_len.unwrap_or(0)
            }
            .min(u64::from(u32::MAX)) as u32,
        });
    }
    let primary_key = key_columns
        .iter()
        .filter_map(|k| columns.iter().position(|c| c.name.eq_ignore_ascii_case(k)))
        .collect();
    Ok(Some(TableDef {
        schema: schema.to_owned(),
        name: table.to_owned(),
        columns,
        primary_key,
    }))
}

/// Whether `text` is the ENUM/SET label `label` as `information_schema` prints it: its
/// COLUMN_TYPE is utf8mb3, so characters outside the Basic Multilingual Plane come out as `?`,
/// and a `?` in `label` matches any one character.
pub fn label_matches(label: &str, text: &str) -> bool {
    label == text
        || (label.contains('?')
            && label.chars().count() == text.chars().count()
            && label.chars().zip(text.chars()).all(|(a, b)| a == b || a == '?'))
}

/// Parses the labels of `enum('a','b''c')` / `set(...)`.
pub fn parse_labels(column_type: &str) -> Vec<String> {
    let Some(start) = column_type.find('(') else {
        return Vec::new();
    };
    let body = &column_type[start + 1..column_type.rfind(')').unwrap_or(column_type.len())];
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(n) = chars.next() {
                        label.push(n);
                    }
                }
                other => label.push(other),
            }
        }
        labels.push(label);
    }
    labels
}

/// Completes a TABLE_MAP-derived definition with what the catalog knows (names, key,
/// signedness, charsets, labels), matching columns by position. Errors if the column counts
/// differ, because then the catalog no longer describes the binlog's table.
pub fn complete_from_catalog(binlog: &TableDef, catalog: &TableDef) -> Option<TableDef> {
    if binlog.columns.len() != catalog.columns.len() {
        return None;
    }
    let mut def = binlog.clone();
    for (col, cat) in def.columns.iter_mut().zip(&catalog.columns) {
        col.name = cat.name.clone();
        col.unsigned = cat.unsigned;
        col.labels = cat.labels.clone();
        col.length = cat.length;
        if matches!(col.kind, ColumnKind::Text | ColumnKind::Binary) {
            col.kind = cat.kind;
            col.charset = cat.charset;
        }
    }
    def.primary_key = catalog.primary_key.clone();
    Some(def)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_with_quotes_and_commas() {
        assert_eq!(parse_labels("enum('a','b''c','d,e','')"), vec!["a", "b'c", "d,e", ""]);
        assert_eq!(parse_labels("set('x')"), vec!["x"]);
    }
}
