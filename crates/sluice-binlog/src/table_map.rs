//! TABLE_MAP events: the column types of the table that following row events change, and
//! (with `binlog_row_metadata=FULL`) names, signedness, charsets, ENUM/SET labels and the
//! primary key.
//!
//! Hand-written rather than taken from `mysql_common` because sluice needs every parse to be
//! bounds-checked (corrupt input must be an error, not a panic) and wants the optional
//! metadata as plain per-column vectors.

use crate::bytes::Cursor;
use crate::error::DecodeError;
use crate::table::{Charset, ColumnDef, ColumnKind, TableDef};

/// `MYSQL_TYPE_*` codes as they appear in TABLE_MAP events.
pub mod column_type {
    pub const DECIMAL: u8 = 0;
    pub const TINY: u8 = 1;
    pub const SHORT: u8 = 2;
    pub const LONG: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const NULL: u8 = 6;
    pub const TIMESTAMP: u8 = 7;
    pub const LONGLONG: u8 = 8;
    pub const INT24: u8 = 9;
    pub const DATE: u8 = 10;
    pub const TIME: u8 = 11;
    pub const DATETIME: u8 = 12;
    pub const YEAR: u8 = 13;
    pub const NEWDATE: u8 = 14;
    pub const VARCHAR: u8 = 15;
    pub const BIT: u8 = 16;
    pub const TIMESTAMP2: u8 = 17;
    pub const DATETIME2: u8 = 18;
    pub const TIME2: u8 = 19;
    pub const VECTOR: u8 = 242;
    pub const JSON: u8 = 245;
    pub const NEWDECIMAL: u8 = 246;
    pub const ENUM: u8 = 247;
    pub const SET: u8 = 248;
    pub const TINY_BLOB: u8 = 249;
    pub const MEDIUM_BLOB: u8 = 250;
    pub const LONG_BLOB: u8 = 251;
    pub const BLOB: u8 = 252;
    pub const VAR_STRING: u8 = 253;
    pub const STRING: u8 = 254;
    pub const GEOMETRY: u8 = 255;
}
use column_type as ct;

/// One column as the TABLE_MAP event describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct MappedColumn {
    /// The type byte row images use (for `STRING` columns holding ENUM/SET this is the real
    /// type, `ENUM` or `SET`, taken from the metadata).
    pub binlog_type: u8,
    /// The type metadata, two bytes in event order (`meta[0]`, `meta[1]`), zero-padded.
    pub meta: [u8; 2],
    pub nullable: bool,
}

/// A decoded TABLE_MAP event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableMap {
    pub table_id: u64,
    pub schema: String,
    pub table: String,
    pub columns: Vec<MappedColumn>,
    /// Per column, from the optional metadata; `None` where the binlog does not carry it.
    pub names: Option<Vec<String>>,
    /// Per column: `Some(true)` for unsigned numeric columns; `None` for non-numeric columns
    /// or when signedness is missing.
    pub unsigned: Option<Vec<Option<bool>>>,
    /// Per column: collation id of character, ENUM and SET columns.
    pub collations: Option<Vec<Option<u16>>>,
    /// Per column: labels of ENUM and SET columns.
    pub labels: Option<Vec<Vec<String>>>,
    pub primary_key: Option<Vec<usize>>,
    /// Per column: `false` for an INVISIBLE column (MySQL 8.0.23+ with
    /// `binlog_row_metadata=FULL`); `None` where the binlog does not say. Invisible columns
    /// are in the row images like any other, so this changes nothing about decoding.
    pub visible: Option<Vec<bool>>,
}

impl MappedColumn {
    fn is_numeric(&self) -> bool {
        matches!(
            self.binlog_type,
            ct::TINY
                | ct::SHORT
                | ct::INT24
                | ct::LONG
                | ct::LONGLONG
                | ct::NEWDECIMAL
                | ct::DECIMAL
                | ct::FLOAT
                | ct::DOUBLE
        )
    }

    /// Whether the column has an entry in the charset metadata. MySQL 9 counts VECTOR among
    /// them (it is stored like a BLOB, always with the binary collation), so a TEXT column
    /// after a VECTOR has the next index.
    fn is_character(&self) -> bool {
        matches!(
            self.binlog_type,
            ct::STRING
                | ct::VAR_STRING
                | ct::VARCHAR
                | ct::BLOB
                | ct::TINY_BLOB
                | ct::MEDIUM_BLOB
                | ct::LONG_BLOB
                | ct::VECTOR
        )
    }

    fn is_enum_or_set(&self) -> bool {
        matches!(self.binlog_type, ct::ENUM | ct::SET)
    }

    /// The column kind implied by the binlog type and charset.
    pub fn kind(&self, collation: Option<u16>) -> ColumnKind {
        match self.binlog_type {
            ct::TINY => ColumnKind::TinyInt,
            ct::SHORT => ColumnKind::SmallInt,
            ct::INT24 => ColumnKind::MediumInt,
            ct::LONG => ColumnKind::Int,
            ct::LONGLONG => ColumnKind::BigInt,
            ct::DECIMAL | ct::NEWDECIMAL => ColumnKind::Decimal,
            ct::FLOAT => ColumnKind::Float,
            ct::DOUBLE => ColumnKind::Double,
            ct::DATE | ct::NEWDATE => ColumnKind::Date,
            ct::TIME | ct::TIME2 => ColumnKind::Time,
            ct::DATETIME | ct::DATETIME2 => ColumnKind::DateTime,
            ct::TIMESTAMP | ct::TIMESTAMP2 => ColumnKind::Timestamp,
            ct::YEAR => ColumnKind::Year,
            ct::ENUM => ColumnKind::Enum,
            ct::SET => ColumnKind::Set,
            ct::BIT => ColumnKind::Bit,
            ct::JSON => ColumnKind::Json,
            ct::STRING | ct::VAR_STRING | ct::VARCHAR | ct::BLOB | ct::TINY_BLOB | ct::MEDIUM_BLOB | ct::LONG_BLOB => {
                if collation == Some(63) {
                    ColumnKind::Binary
                } else {
                    ColumnKind::Text
                }
            }
            _ => ColumnKind::Other,
        }
    }
}

/// Reads the per-column type metadata block.
fn read_column_meta(types: &[u8], block: &[u8]) -> Result<Vec<MappedColumn>, DecodeError> {
    let mut cur = Cursor::new(block, "TABLE_MAP column metadata");
    let mut columns = Vec::with_capacity(types.len());
    for &ty in types {
        let (binlog_type, meta) = match ty {
            ct::FLOAT
            | ct::DOUBLE
            | ct::BLOB
            | ct::TINY_BLOB
            | ct::MEDIUM_BLOB
            | ct::LONG_BLOB
            | ct::GEOMETRY
            | ct::JSON
            | ct::VECTOR
            | ct::TIMESTAMP2
            | ct::DATETIME2
            | ct::TIME2 => (ty, [cur.u8()?, 0]),
            ct::VARCHAR | ct::VAR_STRING | ct::BIT | ct::NEWDECIMAL | ct::DECIMAL => {
                let b = cur.take(2)?;
                (ty, [b[0], b[1]])
            }
            ct::STRING | ct::ENUM | ct::SET => {
                let b = cur.take(2)?;
                // The first byte is the real type: ENUM and SET columns are logged as STRING.
                let real = match b[0] {
                    ct::ENUM => ct::ENUM,
                    ct::SET => ct::SET,
                    _ => ty,
                };
                (real, [b[0], b[1]])
            }
            _ => (ty, [0, 0]),
        };
        columns.push(MappedColumn {
            binlog_type,
            meta,
            nullable: true,
        });
    }
    Ok(columns)
}

/// Optional metadata field types (`enum_optional_metadata_field_type`).
mod optional_field {
    pub const SIGNEDNESS: u8 = 1;
    pub const DEFAULT_CHARSET: u8 = 2;
    pub const COLUMN_CHARSET: u8 = 3;
    pub const COLUMN_NAME: u8 = 4;
    pub const SET_STR_VALUE: u8 = 5;
    pub const ENUM_STR_VALUE: u8 = 6;
    pub const SIMPLE_PRIMARY_KEY: u8 = 8;
    pub const PRIMARY_KEY_WITH_PREFIX: u8 = 9;
    pub const ENUM_AND_SET_DEFAULT_CHARSET: u8 = 10;
    pub const ENUM_AND_SET_COLUMN_CHARSET: u8 = 11;
    pub const COLUMN_VISIBILITY: u8 = 12;
}

/// Reads COLUMN_VISIBILITY: one bit per column, the first column in the most significant bit
/// of the first byte, a set bit meaning visible. Layout from MySQL's
/// `parse_column_visibility` (libs/mysql/binlog/event/rows_event.cpp, which walks each byte
/// from mask 0x80 down) and `Optional_metadata_field_type::COLUMN_VISIBILITY` = 12 in
/// libs/mysql/binlog/event/rows_event.h ("Flag to indicate column visibility attribute").
fn read_column_visibility(data: &[u8], column_count: usize) -> Result<Vec<bool>, DecodeError> {
    let mut cur = Cursor::new(data, "TABLE_MAP column visibility");
    let bitmap = cur.take(column_count.div_ceil(8))?;
    Ok((0..column_count)
        .map(|i| bitmap[i / 8] & (0x80 >> (i % 8)) != 0)
        .collect())
}

/// Expands DEFAULT_CHARSET-style data (a default collation, then `(index, collation)` pairs
/// for the exceptions) into one collation per column of the group.
fn expand_default_charset(data: &[u8], group_len: usize) -> Result<Vec<u16>, DecodeError> {
    let mut cur = Cursor::new(data, "TABLE_MAP default charset");
    let default = cur.lenenc()? as u16;
    let mut out = vec![default; group_len];
    while !cur.is_empty() {
        let index = cur.lenenc()? as usize;
        let collation = cur.lenenc()? as u16;
        *out.get_mut(index)
            .ok_or_else(|| DecodeError::invalid("TABLE_MAP default charset", "column index out of range"))? = collation;
    }
    Ok(out)
}

fn read_per_column_charsets(data: &[u8]) -> Result<Vec<u16>, DecodeError> {
    let mut cur = Cursor::new(data, "TABLE_MAP column charset");
    let mut out = Vec::new();
    while !cur.is_empty() {
        out.push(cur.lenenc()? as u16);
    }
    Ok(out)
}

/// Label lists as raw bytes: they are in the column's character set, known only once the
/// charset fields (which may come later) have been read.
fn read_label_lists(data: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, DecodeError> {
    let mut cur = Cursor::new(data, "TABLE_MAP ENUM/SET labels");
    let mut out = Vec::new();
    while !cur.is_empty() {
        let count = cur.lenenc()? as usize;
        let mut labels = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            labels.push(cur.lenenc_bytes()?.to_vec());
        }
        out.push(labels);
    }
    Ok(out)
}

/// Scatters `values` (one per column of a group selected by `in_group`) to per-column slots.
fn scatter<T: Clone>(
    columns: &[MappedColumn],
    in_group: impl Fn(&MappedColumn) -> bool,
    values: &[T],
) -> Vec<Option<T>> {
    let mut it = values.iter();
    columns
        .iter()
        .map(|c| if in_group(c) { it.next().cloned() } else { None })
        .collect()
}

/// Decodes a TABLE_MAP event body (after the common header, without checksum).
///
/// `mariadb` selects the server flavour's signedness bitmap: MariaDB gives YEAR a bit (it is
/// a TINYINT inside the server), MySQL does not.
pub fn decode_table_map(body: &[u8], post_header_len: u8, mariadb: bool) -> Result<TableMap, DecodeError> {
    let mut cur = Cursor::new(body, "TABLE_MAP event");
    let table_id = if post_header_len == 6 {
        u64::from(cur.u32()?)
    } else {
        cur.uint_le(6)?
    };
    let _flags = cur.u16()?;
    let schema_len = cur.u8()? as usize;
    let schema = String::from_utf8_lossy(cur.take(schema_len)?).into_owned();
    cur.skip(1)?;
    let table_len = cur.u8()? as usize;
    let table = String::from_utf8_lossy(cur.take(table_len)?).into_owned();
    cur.skip(1)?;
    let column_count = cur.lenenc()? as usize;
    if column_count > 4096 {
        return Err(DecodeError::invalid(
            "TABLE_MAP event",
            format!("{column_count} columns"),
        ));
    }
    let types = cur.take(column_count)?;
    let meta_block = cur.lenenc_bytes()?;
    let mut columns = read_column_meta(types, meta_block)?;
    let null_bits = cur.take(column_count.div_ceil(8))?;
    for (i, col) in columns.iter_mut().enumerate() {
        col.nullable = null_bits[i / 8] & (1 << (i % 8)) != 0;
    }

    let mut map = TableMap {
        table_id,
        schema,
        table,
        columns,
        names: None,
        unsigned: None,
        collations: None,
        labels: None,
        primary_key: None,
        visible: None,
    };
    let mut char_collations: Option<Vec<u16>> = None;
    let mut enum_set_collations: Option<Vec<u16>> = None;
    let mut enum_labels: Option<Vec<Vec<Vec<u8>>>> = None;
    let mut set_labels: Option<Vec<Vec<Vec<u8>>>> = None;
    let n_char = map.columns.iter().filter(|c| c.is_character()).count();
    let n_enum_set = map.columns.iter().filter(|c| c.is_enum_or_set()).count();

    while !cur.is_empty() {
        let field = cur.u8()?;
        let data = cur.lenenc_bytes()?;
        match field {
            optional_field::SIGNEDNESS => {
                let mut flags = Vec::new();
                let mut bit = 0usize;
                for col in &map.columns {
                    let has_bit = col.is_numeric() || (mariadb && col.binlog_type == ct::YEAR);
                    if has_bit {
                        let byte = *data
                            .get(bit / 8)
                            .ok_or_else(|| DecodeError::invalid("TABLE_MAP signedness", "bitmap too short"))?;
                        bit += 1;
                        // YEAR's bit is skipped over, not used: YEAR is never "unsigned" in the
                        // catalog's sense.
                        flags.push(col.is_numeric().then_some(byte & (0x80 >> ((bit - 1) % 8)) != 0));
                    } else {
                        flags.push(None);
                    }
                }
                map.unsigned = Some(flags);
            }
            optional_field::DEFAULT_CHARSET => char_collations = Some(expand_default_charset(data, n_char)?),
            optional_field::COLUMN_CHARSET => char_collations = Some(read_per_column_charsets(data)?),
            optional_field::ENUM_AND_SET_DEFAULT_CHARSET => {
                enum_set_collations = Some(expand_default_charset(data, n_enum_set)?)
            }
            optional_field::ENUM_AND_SET_COLUMN_CHARSET => enum_set_collations = Some(read_per_column_charsets(data)?),
            optional_field::COLUMN_NAME => {
                let mut c = Cursor::new(data, "TABLE_MAP column names");
                let mut names = Vec::with_capacity(map.columns.len());
                while !c.is_empty() {
                    names.push(String::from_utf8_lossy(c.lenenc_bytes()?).into_owned());
                }
                if names.len() != map.columns.len() {
                    return Err(DecodeError::invalid(
                        "TABLE_MAP column names",
                        format!("{} names for {} columns", names.len(), map.columns.len()),
                    ));
                }
                map.names = Some(names);
            }
            optional_field::ENUM_STR_VALUE => enum_labels = Some(read_label_lists(data)?),
            optional_field::SET_STR_VALUE => set_labels = Some(read_label_lists(data)?),
            optional_field::SIMPLE_PRIMARY_KEY => {
                let mut c = Cursor::new(data, "TABLE_MAP primary key");
                let mut key = Vec::new();
                while !c.is_empty() {
                    key.push(c.lenenc()? as usize);
                }
                map.primary_key = Some(key);
            }
            optional_field::PRIMARY_KEY_WITH_PREFIX => {
                let mut c = Cursor::new(data, "TABLE_MAP primary key");
                let mut key = Vec::new();
                while !c.is_empty() {
                    key.push(c.lenenc()? as usize);
                    let _prefix = c.lenenc()?;
                }
                map.primary_key = Some(key);
            }
            optional_field::COLUMN_VISIBILITY => map.visible = Some(read_column_visibility(data, map.columns.len())?),
            // Geometry types, vector dimensions and unknown future fields do not change how
            // sluice decodes rows.
            _ => {}
        }
    }
    if let Some(key) = &map.primary_key {
        if key.iter().any(|&i| i >= map.columns.len()) {
            return Err(DecodeError::invalid(
                "TABLE_MAP primary key",
                "column index out of range",
            ));
        }
    }

    if char_collations.is_some() || enum_set_collations.is_some() {
        let chars = scatter(
            &map.columns,
            MappedColumn::is_character,
            char_collations.as_deref().unwrap_or(&[]),
        );
        let enums = scatter(
            &map.columns,
            MappedColumn::is_enum_or_set,
            enum_set_collations.as_deref().unwrap_or(&[]),
        );
        map.collations = Some(chars.into_iter().zip(enums).map(|(a, b)| a.or(b)).collect());
    }
    if enum_labels.is_some() || set_labels.is_some() {
        let enums = scatter(
            &map.columns,
            |c| c.binlog_type == ct::ENUM,
            enum_labels.as_deref().unwrap_or(&[]),
        );
        let sets = scatter(
            &map.columns,
            |c| c.binlog_type == ct::SET,
            set_labels.as_deref().unwrap_or(&[]),
        );
        let collations = map.collations.clone();
        map.labels = Some(
            enums
                .into_iter()
                .zip(sets)
                .enumerate()
                .map(|(i, (a, b))| {
                    let charset = collations
                        .as_ref()
                        .and_then(|c| c[i])
                        .map_or(Charset::Utf8, Charset::from_collation_id);
                    a.or(b)
                        .unwrap_or_default()
                        .iter()
                        .map(|label| {
                            charset
                                .decode(label)
                                .unwrap_or_else(|| String::from_utf8_lossy(label).into_owned())
                        })
                        .collect()
                })
                .collect(),
        );
    }
    Ok(map)
}

impl TableMap {
    /// Whether the event carries everything a [`TableDef`] needs (names, signedness,
    /// charsets, labels and the primary key), i.e. whether `binlog_row_metadata=FULL` wrote it.
    pub fn has_full_metadata(&self) -> bool {
        let needs_labels = self.columns.iter().any(MappedColumn::is_enum_or_set);
        // VECTOR has a charset entry but is always binary: it does not need one to decode.
        let needs_charsets = self
            .columns
            .iter()
            .any(|c| (c.is_character() && c.binlog_type != ct::VECTOR) || c.is_enum_or_set());
        let needs_sign = self.columns.iter().any(MappedColumn::is_numeric);
        self.names.is_some()
            && (!needs_sign || self.unsigned.is_some())
            && (!needs_charsets || self.collations.is_some())
            && (!needs_labels || self.labels.is_some())
    }

    /// Builds the table definition from this event alone. Missing optional metadata leaves
    /// placeholders (`col{N}` names, signed, unknown charset, no key); use
    /// [`TableMap::has_full_metadata`] to know whether to complete it from the catalog.
    pub fn to_table_def(&self) -> TableDef {
        let columns = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let collation = self.collations.as_ref().and_then(|v| v[i]);
                let kind = c.kind(collation);
                let (precision, scale) = if kind == ColumnKind::Decimal {
                    (c.meta[0], c.meta[1])
                } else {
                    (0, 0)
                };
                let fsp = match c.binlog_type {
                    ct::TIME2 | ct::DATETIME2 | ct::TIMESTAMP2 => c.meta[0],
                    _ => 0,
                };
                ColumnDef {
                    name: self
                        .names
                        .as_ref()
                        .map(|n| n[i].clone())
                        .unwrap_or_else(|| format!("col{i}")),
                    kind,
                    binlog_type: c.binlog_type,
                    meta: u16::from_le_bytes(c.meta),
                    unsigned: self.unsigned.as_ref().and_then(|v| v[i]).unwrap_or(false),
                    nullable: c.nullable,
                    charset: match (kind, collation) {
                        (ColumnKind::Binary, _) => Charset::Binary,
                        (_, Some(id)) => Charset::from_collation_id(id),
                        (ColumnKind::Text | ColumnKind::Enum | ColumnKind::Set | ColumnKind::Json, None) => {
                            Charset::Utf8
                        }
                        _ => Charset::Binary,
                    },
                    labels: self.labels.as_ref().map(|l| l[i].clone()).unwrap_or_default(),
                    precision,
                    scale,
                    fsp,
                    // BIT width in bits; other lengths are not in the binlog.
                    length: if c.binlog_type == ct::BIT {
                        u32::from(c.meta[1]) * 8 + u32::from(c.meta[0])
                    } else {
                        0
                    },
                }
            })
            .collect();
        TableDef {
            schema: self.schema.clone(),
            name: self.table.clone(),
            columns,
            primary_key: self.primary_key.clone().unwrap_or_default(),
        }
    }
}

/// A hasher for table ids: a multiply (Fibonacci hashing) instead of SipHash. Table ids are
/// small server-assigned counters, not attacker-chosen keys, and hashing them sits on every
/// row event's path.
#[derive(Default, Clone, Copy)]
pub struct TableIdHasher(u64);

impl std::hash::Hasher for TableIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        // The high bits matter most to `HashMap` (hashbrown): the multiply spreads the low
        // bits of a counter into them.
        self.0 = (self.0 ^ id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A map keyed by table id, with [`TableIdHasher`].
pub type TableIdMap<V> = std::collections::HashMap<u64, V, std::hash::BuildHasherDefault<TableIdHasher>>;

/// Remembers, per table id, the last TABLE_MAP body and what it decoded to.
///
/// MariaDB (and MySQL) write a TABLE_MAP before every rows event, and it is nearly always
/// byte-for-byte the previous one for its table id. Decoding it again (names, charsets,
/// labels) was 42% of the decoder's instructions on a sysbench binlog (bench/README.md); an
/// identical body now costs a lookup and a `memcmp`, and hands back the same `Arc` so callers
/// can recognise an unchanged table with [`Arc::ptr_eq`].
#[derive(Debug, Default)]
pub(crate) struct TableMapCache {
    entries: TableIdMap<(Vec<u8>, std::sync::Arc<TableMap>)>,
}

/// Table ids are reassigned as tables leave and re-enter the server's table cache, so a long
/// stream sees ever new ids: past this many, the cache starts again rather than grow.
const MAX_CACHED_TABLE_MAPS: usize = 4096;

impl TableMapCache {
    /// The TABLE_MAP `body` decodes to (see [`decode_table_map`]), from the cache when the
    /// last body seen for its table id is identical.
    pub(crate) fn decode(
        &mut self,
        body: &[u8],
        post_header_len: u8,
        mariadb: bool,
    ) -> Result<std::sync::Arc<TableMap>, DecodeError> {
        let id_len = if post_header_len == 6 { 4 } else { 6 };
        let table_id = Cursor::new(body, "TABLE_MAP event").uint_le(id_len)?;
        if let Some((cached_body, map)) = self.entries.get(&table_id) {
            if cached_body.as_slice() == body {
                return Ok(map.clone());
            }
        }
        let map = std::sync::Arc::new(decode_table_map(body, post_header_len, mariadb)?);
        if self.entries.len() >= MAX_CACHED_TABLE_MAPS && !self.entries.contains_key(&table_id) {
            self.entries.clear();
        }
        let (cached_body, cached_map) = self.entries.entry(table_id).or_default();
        cached_body.clear();
        cached_body.extend_from_slice(body);
        *cached_map = map.clone();
        Ok(map)
    }

    /// Forgets everything: a new FORMAT_DESCRIPTION (a new file) may change how bodies decode.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TABLE_MAP body (MySQL, 6-byte table id) for `db.t (id INT, v VECTOR(2) INVISIBLE,
    /// h INT INVISIBLE)` as `binlog_row_metadata=FULL` writes it, built from the layout in
    /// libs/mysql/binlog/event/rows_event.h (post-header, body, then TLV optional metadata).
    fn body(optional: &[u8]) -> Vec<u8> {
        let mut b = vec![7, 0, 0, 0, 0, 0, 0, 0]; // table id 7, flags 0
        b.extend([2, b'd', b'b', 0, 1, b't', 0]); // schema "db", table "t", NUL-terminated
        b.push(3); // column count
        b.extend([ct::LONG, ct::VECTOR, ct::LONG]); // column types
        b.extend([1, 4]); // metadata block: 1 byte, VECTOR's 4-byte length prefix
        b.push(0b110); // null bits: v and h nullable
        b.extend_from_slice(optional);
        b
    }

    #[test]
    fn column_visibility_is_one_bit_per_column_msb_first() {
        let mut optional = vec![optional_field::COLUMN_NAME, 7, 2, b'i', b'd', 1, b'v', 1, b'h'];
        optional.extend([optional_field::SIGNEDNESS, 1, 0b0000_0000]);
        // COLUMN_VISIBILITY: 1 byte, bit 0x80 = id (visible), 0x40 = v, 0x20 = h (invisible).
        optional.extend([optional_field::COLUMN_VISIBILITY, 1, 0b1000_0000]);
        let map = decode_table_map(&body(&optional), 8, false).unwrap();
        assert_eq!(map.visible, Some(vec![true, false, false]));
        assert_eq!(map.columns[1].binlog_type, ct::VECTOR);
        assert_eq!(map.columns[1].meta, [4, 0]);
        assert!(map.has_full_metadata());
        let def = map.to_table_def();
        assert_eq!(def.columns[1].kind, ColumnKind::Other);
        assert_eq!(def.columns[2].name, "h");

        // Without the field the binlog says nothing about visibility.
        let map = decode_table_map(&body(&[]), 8, false).unwrap();
        assert_eq!(map.visible, None);
    }

    /// Found on a real MySQL 9 binlog: `t (id INT, v VECTOR(2), note TEXT)` with a default
    /// charset of binary and an exception for `note`, at index 1 of the character columns
    /// because VECTOR is index 0. Counting only string and blob types put index 1 out of range.
    #[test]
    fn vector_columns_count_among_the_charset_columns() {
        let mut b = vec![7, 0, 0, 0, 0, 0, 0, 0, 2, b'd', b'b', 0, 1, b't', 0, 3];
        b.extend([ct::LONG, ct::VECTOR, ct::BLOB]);
        b.extend([2, 4, 2]); // metadata: VECTOR's and BLOB's length-prefix sizes
        b.push(0b110);
        let mut optional = vec![optional_field::COLUMN_NAME, 10, 2, b'i', b'd', 1, b'v', 4];
        optional.extend(b"note");
        optional.extend([optional_field::SIGNEDNESS, 1, 0]);
        // Default collation 63 (binary), column 1 of the charset columns: 255 (utf8mb4_0900_ai_ci).
        optional.extend([optional_field::DEFAULT_CHARSET, 5, 63, 1, 0xfc, 0xff, 0x00]);
        b.extend(optional);
        let map = decode_table_map(&b, 8, false).unwrap();
        assert_eq!(map.collations, Some(vec![None, Some(63), Some(255)]));
        let def = map.to_table_def();
        assert_eq!(def.columns[2].kind, ColumnKind::Text);
        assert_eq!(def.columns[1].kind, ColumnKind::Other);
    }

    #[test]
    fn column_visibility_spans_bytes() {
        // 9 columns need 2 bytes; the ninth column is 0x80 of the second byte.
        let mut b = vec![1, 0, 0, 0, 0, 0, 0, 0, 1, b'd', 0, 1, b't', 0, 9];
        b.extend([ct::TINY; 9]);
        b.extend([0]); // empty metadata block
        b.extend([0, 0]); // null bits
        b.extend([optional_field::COLUMN_VISIBILITY, 2, 0b1111_1110, 0b1000_0000]);
        let map = decode_table_map(&b, 8, false).unwrap();
        let mut expected = vec![true; 9];
        expected[7] = false;
        assert_eq!(map.visible, Some(expected));
    }

    #[test]
    fn a_short_visibility_bitmap_is_an_error() {
        // Three columns need one byte; the field is empty.
        let err = decode_table_map(&body(&[optional_field::COLUMN_VISIBILITY, 0]), 8, false).unwrap_err();
        assert!(err.to_string().contains("visibility"), "{err}");
        // The field's length runs past the event.
        assert!(decode_table_map(&body(&[optional_field::COLUMN_VISIBILITY, 5, 0xff]), 8, false).is_err());
    }
}
