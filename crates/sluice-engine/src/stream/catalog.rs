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
    #[error("reading information_schema for {table}: {}", crate::source_rows::error_text(.source))]
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
    // Every unique index, in the server's key order, with the server's own choice of key
    // (COLUMN_KEY = 'PRI': the primary key or, without one, the unique key it promotes).
    let unique_indexes: Vec<(String, String, String)> = conn
        .exec(
            "SELECT S.INDEX_NAME, S.COLUMN_NAME, C.COLUMN_KEY \
             FROM information_schema.STATISTICS S JOIN information_schema.COLUMNS C \
               ON C.TABLE_SCHEMA = S.TABLE_SCHEMA AND C.TABLE_NAME = S.TABLE_NAME AND C.COLUMN_NAME = S.COLUMN_NAME \
             WHERE S.TABLE_SCHEMA = ? AND S.TABLE_NAME = ? AND S.NON_UNIQUE = 0 \
             ORDER BY S.INDEX_NAME = 'PRIMARY' DESC, S.INDEX_NAME, S.SEQ_IN_INDEX",
            (schema, table),
        )
        .await
        .map_err(|source| CatalogError::Query {
            table: qualified.clone(),
            source,
        })?;
    let key_columns = choose_key(&unique_indexes);

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

/// The columns sluice keys a table by: its primary key or, without one, the unique key whose
/// columns are all NOT NULL that the server itself treats as the primary key (InnoDB clusters
/// by it, `information_schema` marks its columns `PRI`, and `binlog_row_metadata=FULL` names it
/// as the key). Rows are `(index, column, COLUMN_KEY)`, `PRIMARY` first, then by index name,
/// each index's columns in order. Empty when there is no usable key: a unique key with a
/// nullable column may hold several rows with NULL, so it does not identify a row.
fn choose_key(unique_indexes: &[(String, String, String)]) -> Vec<String> {
    let mut indexes: Vec<(&str, Vec<(&str, &str)>)> = Vec::new();
    for (index, column, column_key) in unique_indexes {
        match indexes.last_mut() {
            Some((name, columns)) if name == index => columns.push((column, column_key)),
            _ => indexes.push((index, vec![(column, column_key)])),
        }
    }
    let chosen = indexes.iter().find(|(name, _)| *name == "PRIMARY").or_else(|| {
        // The promoted key's columns are exactly those marked PRI (another unique key may
        // share some of them).
        let marked: std::collections::BTreeSet<&str> = unique_indexes
            .iter()
            .filter(|(_, _, key)| key.eq_ignore_ascii_case("PRI"))
            .map(|(_, column, _)| column.as_str())
            .collect();
        indexes.iter().find(|(_, columns)| {
            !marked.is_empty()
                && columns.len() == marked.len()
                && columns.iter().all(|(column, _)| marked.contains(column))
        })
    });
    chosen
        .map(|(_, columns)| columns.iter().map(|(c, _)| (*c).to_owned()).collect())
        .unwrap_or_default()
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

    fn rows(rows: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
        rows.iter()
            .map(|(i, c, k)| ((*i).to_owned(), (*c).to_owned(), (*k).to_owned()))
            .collect()
    }

    #[test]
    fn the_key_is_the_primary_key_or_the_promoted_unique_key() {
        let with_primary = rows(&[("PRIMARY", "id", "PRI"), ("email", "email", "UNI")]);
        assert_eq!(choose_key(&with_primary), ["id"]);
        // No primary key: the unique key the server promotes (all its columns NOT NULL, marked
        // PRI), in its own column order, not a nullable unique key sorted before it.
        let promoted = rows(&[
            ("a_nullable", "a", "UNI"),
            ("c_and_a", "c", "PRI"),
            ("c_and_a", "a", "UNI"),
            ("yy", "c", "PRI"),
            ("yy", "b", "PRI"),
        ]);
        assert_eq!(choose_key(&promoted), ["c", "b"]);
        // Only nullable unique keys: none identifies a row.
        let nullable = rows(&[("zz", "a", "UNI"), ("xx", "v", "MUL")]);
        assert!(choose_key(&nullable).is_empty());
        assert!(choose_key(&[]).is_empty());
    }

    #[test]
    fn labels_with_quotes_and_commas() {
        assert_eq!(parse_labels("enum('a','b''c','d,e','')"), vec!["a", "b'c", "d,e", ""]);
        assert_eq!(parse_labels("set('x')"), vec!["x"]);
    }
}
