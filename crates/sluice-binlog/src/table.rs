//! Table definitions: what a row image's bytes mean.
//!
//! A [`TableDef`] is built from a TABLE_MAP event (column types and their binlog metadata,
//! plus the optional metadata that `binlog_row_metadata=FULL` adds: names, signedness,
//! charsets, ENUM/SET labels, primary key). Where the binlog lacks a piece (older servers,
//! `binlog_row_metadata=MINIMAL`), the caller completes it from `information_schema`.

/// The column types sluice knows how to decode and store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
            // MariaDB's NO PAD collations are their PAD SPACE sibling's id + 1024.
            1024..=2047 => Charset::from_collation_id(id - 1024),
            // MariaDB 10.10+ UCA 14.0.0 collations of utf8mb3 and utf8mb4.
            2048..=2559 => Charset::Utf8,
            63 => Charset::Binary,
            // latin1_* collations.
            5 | 8 | 15 | 31 | 47 | 48 | 49 | 94 => Charset::Latin1,
            11 | 65 => Charset::Ascii,
            // utf8mb3 and utf8mb4 collations (MySQL and MariaDB ranges).
            33 | 45 | 46 | 76 | 83 | 192..=247 | 255..=323 | 576..=578 | 608..=610 => Charset::Utf8,
            other => Charset::Other(other),
        }
    }

    /// Decodes character data to UTF-8; `None` when the bytes are not valid in this charset
    /// or sluice has no decoder for it (callers keep such values as bytes).
    pub fn decode(self, bytes: &[u8]) -> Option<String> {
        match self {
            Charset::Utf8 | Charset::Ascii => std::str::from_utf8(bytes).ok().map(str::to_owned),
            Charset::Latin1 => Some(bytes.iter().map(|&b| cp1252_char(b)).collect()),
            Charset::Binary | Charset::Other(_) => None,
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

/// MySQL's `latin1` is Windows-1252, with the five code points cp1252 leaves undefined
/// mapped straight through to U+0081 etc., as MySQL does.
pub(crate) fn cp1252_char(b: u8) -> char {
    const HIGH: [u16; 32] = [
        0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008D,
        0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A,
        0x0153, 0x009D, 0x017E, 0x0178,
    ];
    match b {
        0x80..=0x9f => char::from_u32(u32::from(HIGH[usize::from(b - 0x80)])).unwrap_or('\u{fffd}'),
        _ => char::from(b),
    }
}

/// One column of a source table.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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
