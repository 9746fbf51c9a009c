//! Table definitions: what a row image's bytes mean.
//!
//! A [`TableDef`] is built from a TABLE_MAP event (column types and their binlog metadata,
//! plus the optional metadata that `binlog_row_metadata=FULL` adds: names, signedness,
//! charsets, ENUM/SET labels, primary key). Where the binlog lacks a piece (older servers,
//! `binlog_row_metadata=MINIMAL`), the caller completes it from `information_schema`.

use std::sync::Arc;

/// The column types sluice knows how to decode and store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    TinyInt,
    SmallInt,
    MediumInt,
    Int,
    BigInt,
    Decimal,
    Float,
    Double,
    Date,
    Time,
    DateTime,
    Timestamp,
    Year,
    /// CHAR/VARCHAR/TEXT family (character data).
    Text,
    /// BINARY/VARBINARY/BLOB family (byte data).
    Binary,
    Enum,
    Set,
    Bit,
    Json,
    /// Geometry and other types stored as opaque bytes.
    Other,
}

impl ColumnKind {
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            ColumnKind::TinyInt | ColumnKind::SmallInt | ColumnKind::MediumInt | ColumnKind::Int | ColumnKind::BigInt
        )
    }
}

/// Character sets sluice decodes text from. Everything else is kept as bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Charset {
    Utf8,
    Latin1,
    Ascii,
    Binary,
    /// A charset sluice has no decoder for; the value is kept as bytes.
    Other(u16),
}

impl Charset {
    /// Maps a MySQL/MariaDB collation id to its character set.
    pub fn from_collation_id(id: u16) -> Charset {
        match id {
            63 => Charset::Binary,
            // latin1_* collations.
            5 | 8 | 15 | 31 | 47 | 48 | 49 | 94 => Charset::Latin1,
            11 | 65 => Charset::Ascii,
            // utf8mb3 and utf8mb4 collations (MySQL and MariaDB ranges).
            33 | 45 | 46 | 76 | 83 | 192..=247 | 255..=323 | 576..=578 | 608..=610 => Charset::Utf8,
            1024..=2047 => Charset::Utf8,
            other => Charset::Other(other),
        }
    }

    /// Maps a character set name as `information_schema` prints it.
    pub fn from_name(name: &str) -> Charset {
        match name {
            "utf8" | "utf8mb3" | "utf8mb4" => Charset::Utf8,
            "latin1" => Charset::Latin1,
            "ascii" => Charset::Ascii,
            "binary" => Charset::Binary,
            _ => Charset::Other(0),
        }
    }
}

/// One column of a source table.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ColumnDef {
    pub name: String,
    pub kind: ColumnKind,
    /// The binlog type byte (`MYSQL_TYPE_*`) the row image uses for this column.
    pub binlog_type: u8,
    /// The binlog type metadata (length, precision/scale, fsp, …) in decoded form.
    pub meta: u16,
    pub unsigned: bool,
    pub nullable: bool,
    pub charset: Charset,
    /// ENUM or SET labels in definition order.
    pub labels: Vec<String>,
    /// DECIMAL precision and scale.
    pub precision: u8,
    pub scale: u8,
    /// Fractional second precision for TIME/DATETIME/TIMESTAMP.
    pub fsp: u8,
    /// Declared length in characters or bytes where known (0 otherwise).
    pub length: u32,
}

/// A source table's definition as the binlog describes it at one position.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TableDef {
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnDef>,
    /// Column indexes of the primary key, in key order. Empty when the table has none.
    pub primary_key: Vec<usize>,
}

impl TableDef {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// `schema.table`, for messages.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

pub type SharedTableDef = Arc<TableDef>;
