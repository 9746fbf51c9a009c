//! Row events (WRITE/UPDATE/DELETE, v1 and v2) and the decoding of row images into typed
//! [`Value`]s.
//!
//! Row images are decoded lazily: a [`RowsEvent`] only parses its header, and the caller asks
//! for rows with a [`TableDef`]. Events of tables nobody replicates are never decoded.

use std::borrow::Cow;

use crate::bytes::{be_uint, le_uint, Cursor};
use crate::error::DecodeError;
use crate::table::{Charset, ColumnDef, TableDef};
use crate::table_map::column_type as ct;
use crate::value::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowsKind {
    Write,
    Update,
    Delete,
}

/// The `STMT_END_F` flag: the last row event of a statement.
pub const STMT_END_FLAG: u16 = 0x0001;

/// A row event whose rows have not been decoded yet.
#[derive(Clone, Debug)]
pub struct RowsEvent<'a> {
    pub kind: RowsKind,
    pub table_id: u64,
    pub flags: u16,
    pub column_count: usize,
    /// Columns present in the (before) image.
    present: &'a [u8],
    /// Columns present in the after image of an update.
    present_after: &'a [u8],
    /// The row images: borrowed from the event, or decompressed from a MariaDB compressed
    /// rows event (`log_bin_compress`).
    rows: Cow<'a, [u8]>,
}

/// One changed row. Images hold one value per table column.
#[derive(Clone, Debug, PartialEq)]
pub enum RowChange {
    Insert(Vec<Value>),
    Update { before: Vec<Value>, after: Vec<Value> },
    Delete(Vec<Value>),
}

fn bit(bitmap: &[u8], i: usize) -> bool {
    bitmap[i / 8] & (1 << (i % 8)) != 0
}

impl<'a> RowsEvent<'a> {
    /// Parses the header of a rows event body. `v2` is true for the MySQL 5.6+ v2 events that
    /// carry an extra-data block.
    pub fn parse(kind: RowsKind, body: &'a [u8], post_header_len: u8, v2: bool) -> Result<Self, DecodeError> {
        Self::parse_maybe_compressed(kind, body, post_header_len, v2, false)
    }

    /// Parses a MariaDB compressed rows event (`WRITE_ROWS_COMPRESSED_EVENT[_V1]` and its
    /// siblings): the same layout, except that the row images after the column bitmaps are one
    /// compressed block (see [`crate::compressed::mariadb_uncompress`]).
    pub fn parse_compressed(
        kind: RowsKind,
        body: &'a [u8],
        post_header_len: u8,
        v2: bool,
    ) -> Result<Self, DecodeError> {
        Self::parse_maybe_compressed(kind, body, post_header_len, v2, true)
    }

    fn parse_maybe_compressed(
        kind: RowsKind,
        body: &'a [u8],
        post_header_len: u8,
        v2: bool,
        compressed: bool,
    ) -> Result<Self, DecodeError> {
        let mut cur = Cursor::new(body, "rows event");
        let table_id = if post_header_len == 6 {
            u64::from(cur.u32()?)
        } else {
            cur.uint_le(6)?
        };
        let flags = cur.u16()?;
        if v2 {
            let extra_len = cur.u16()? as usize;
            if extra_len < 2 {
                return Err(DecodeError::invalid("rows event", "extra data length below 2"));
            }
            cur.skip(extra_len - 2)?;
        }
        let column_count = cur.lenenc()? as usize;
        if column_count > 4096 {
            return Err(DecodeError::invalid("rows event", format!("{column_count} columns")));
        }
        let bitmap_len = column_count.div_ceil(8);
        let present = cur.take(bitmap_len)?;
        let present_after = if kind == RowsKind::Update {
            cur.take(bitmap_len)?
        } else {
            present
        };
        Ok(RowsEvent {
            kind,
            table_id,
            flags,
            column_count,
            present,
            present_after,
            rows: if compressed {
                Cow::Owned(crate::compressed::mariadb_uncompress(
                    cur.rest(),
                    "compressed rows event",
                )?)
            } else {
                Cow::Borrowed(cur.rest())
            },
        })
    }

    pub fn is_statement_end(&self) -> bool {
        self.flags & STMT_END_FLAG != 0
    }

    /// Whether both images carry every column (`binlog_row_image=FULL`).
    pub fn has_full_images(&self) -> bool {
        (0..self.column_count).all(|i| bit(self.present, i) && bit(self.present_after, i))
    }

    /// Decodes the rows against `table`, which must describe the table id of this event.
    pub fn rows<'t>(&self, table: &'t TableDef) -> Result<RowIter<'_, 't>, DecodeError> {
        if table.columns.len() != self.column_count {
            return Err(DecodeError::invalid(
                "rows event",
                format!(
                    "{} columns in row event, {} in table map of {}",
                    self.column_count,
                    table.columns.len(),
                    table.qualified_name()
                ),
            ));
        }
        // Found by fuzzing: with no columns a row image is zero bytes long, so the iterator
        // would yield empty rows forever without consuming input. Real tables have columns.
        if self.column_count == 0 && !self.rows.is_empty() {
            return Err(DecodeError::invalid(
                "rows event",
                format!("row data for {}, which has no columns", table.qualified_name()),
            ));
        }
        if !self.has_full_images() {
            return Err(DecodeError::Unsupported(format!(
                "row event for {} does not carry full row images; sluice needs binlog_row_image=FULL",
                table.qualified_name()
            )));
        }
        Ok(RowIter {
            kind: self.kind,
            cur: Cursor::new(&self.rows, "row image"),
            table,
        })
    }
}

pub struct RowIter<'a, 't> {
    kind: RowsKind,
    cur: Cursor<'a>,
    table: &'t TableDef,
}

impl Iterator for RowIter<'_, '_> {
    type Item = Result<RowChange, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.cur.is_empty() {
            return None;
        }
        let result = (|| {
            let first = decode_image(&mut self.cur, self.table)?;
            Ok(match self.kind {
                RowsKind::Write => RowChange::Insert(first),
                RowsKind::Delete => RowChange::Delete(first),
                RowsKind::Update => RowChange::Update {
                    before: first,
                    after: decode_image(&mut self.cur, self.table)?,
                },
            })
        })();
        if result.is_err() {
            // Stop after the first error: the rest of the buffer cannot be trusted.
            self.cur = Cursor::new(&[], "row image");
        }
        Some(result)
    }
}

/// Decodes one full row image (null bitmap, then the non-null values).
fn decode_image(cur: &mut Cursor<'_>, table: &TableDef) -> Result<Vec<Value>, DecodeError> {
    let n = table.columns.len();
    let nulls = cur.take(n.div_ceil(8))?;
    let mut values = Vec::with_capacity(n);
    for (i, col) in table.columns.iter().enumerate() {
        if bit(nulls, i) {
            values.push(Value::Null);
        } else {
            values.push(decode_value(cur, col)?);
        }
    }
    Ok(values)
}

fn text(bytes: &[u8], charset: Charset) -> Value {
    match charset.decode(bytes) {
        Some(text) => Value::Text(text),
        None => Value::Bytes(bytes.to_vec()),
    }
}

fn frac_micros(cur: &mut Cursor<'_>, fsp: u8) -> Result<u32, DecodeError> {
    Ok(match fsp {
        0 => 0,
        1 | 2 => cur.u8()? as u32 * 10_000,
        3 | 4 => be_uint(cur.take(2)?) as u32 * 100,
        5 | 6 => be_uint(cur.take(3)?) as u32,
        _ => {
            return Err(DecodeError::invalid(
                "temporal value",
                format!("fractional precision {fsp}"),
            ))
        }
    })
}

fn decode_value(cur: &mut Cursor<'_>, col: &ColumnDef) -> Result<Value, DecodeError> {
    let meta = col.meta.to_le_bytes();
    Ok(match col.binlog_type {
        ct::TINY => int_value(cur.take(1)?, col.unsigned),
        ct::SHORT => int_value(cur.take(2)?, col.unsigned),
        ct::INT24 => int_value(cur.take(3)?, col.unsigned),
        ct::LONG => int_value(cur.take(4)?, col.unsigned),
        ct::LONGLONG => int_value(cur.take(8)?, col.unsigned),
        ct::FLOAT => Value::Float(f32::from_le_bytes(cur.take(4)?.try_into().expect("4 bytes"))),
        ct::DOUBLE => Value::Double(f64::from_le_bytes(cur.take(8)?.try_into().expect("8 bytes"))),
        ct::NEWDECIMAL => {
            let (precision, scale) = (meta[0] as usize, meta[1] as usize);
            if precision == 0 || precision > 65 || scale > 30 || scale > precision {
                return Err(DecodeError::invalid(
                    "DECIMAL value",
                    format!("precision {precision} scale {scale}"),
                ));
            }
            let size = mysql_common::binlog::decimal::decimal_bin_size(precision, scale);
            let bytes = cur.take(size)?;
            check_decimal_groups(bytes, precision, scale)?;
            let dec = mysql_common::binlog::decimal::Decimal::read_bin(bytes, precision, scale, false)
                .map_err(|e| DecodeError::invalid("DECIMAL value", e.to_string()))?;
            Value::Decimal(dec.to_string())
        }
        ct::DATE | ct::NEWDATE => {
            let v = le_uint(cur.take(3)?) as u32;
            Value::Date {
                year: (v >> 9) as u16,
                month: ((v >> 5) & 15) as u8,
                day: (v & 31) as u8,
            }
        }
        ct::TIME => {
            // Old TIME: HHMMSS as a signed 3-byte integer.
            let raw = le_uint(cur.take(3)?) as i32;
            let raw = (raw << 8) >> 8;
            let v = raw.unsigned_abs();
            Value::Time {
                negative: raw < 0,
                hours: v / 10_000,
                minutes: (v / 100 % 100) as u8,
                seconds: (v % 100) as u8,
                micros: 0,
            }
        }
        ct::TIME2 => decode_time2(cur, meta[0])?,
        ct::DATETIME => {
            let v = cur.u64()?;
            let (date, time) = (v / 1_000_000, v % 1_000_000);
            Value::DateTime {
                year: (date / 10_000) as u16,
                month: (date / 100 % 100) as u8,
                day: (date % 100) as u8,
                hour: (time / 10_000) as u8,
                minute: (time / 100 % 100) as u8,
                second: (time % 100) as u8,
                micros: 0,
            }
        }
        ct::DATETIME2 => {
            let packed = be_uint(cur.take(5)?) as i64 - 0x80_0000_0000;
            let micros = frac_micros(cur, meta[0])?;
            let packed = packed.unsigned_abs();
            let ymd = packed >> 17;
            let ym = ymd >> 5;
            let hms = packed % (1 << 17);
            Value::DateTime {
                year: (ym / 13) as u16,
                month: (ym % 13) as u8,
                day: (ymd % 32) as u8,
                hour: (hms >> 12) as u8,
                minute: ((hms >> 6) % 64) as u8,
                second: (hms % 64) as u8,
                micros,
            }
        }
        ct::TIMESTAMP => Value::Timestamp {
            seconds: i64::from(cur.u32()?),
            micros: 0,
        },
        ct::TIMESTAMP2 => {
            let seconds = be_uint(cur.take(4)?) as i64;
            let micros = frac_micros(cur, meta[0])?;
            Value::Timestamp { seconds, micros }
        }
        ct::YEAR => {
            let y = cur.u8()?;
            Value::Year(if y == 0 { 0 } else { 1900 + u16::from(y) })
        }
        ct::VARCHAR | ct::VAR_STRING => {
            let max_len = col.meta;
            let len = if max_len < 256 {
                cur.u8()? as usize
            } else {
                cur.u16()? as usize
            };
            text(cur.take(len)?, col.charset)
        }
        ct::STRING => {
            // meta[0] is the real type with the high bits of the length folded in.
            let (real, low) = (meta[0], meta[1]);
            let max_len = if real & 0x30 != 0x30 {
                u16::from(low) | (u16::from((real & 0x30) ^ 0x30) << 4)
            } else {
                u16::from(low)
            };
            let len = if max_len > 255 {
                cur.u16()? as usize
            } else {
                cur.u8()? as usize
            };
            let bytes = cur.take(len)?;
            if col.charset == Charset::Binary && len < usize::from(max_len) {
                // BINARY(n) is logged without its trailing 0x00 padding; the stored value has it.
                let mut padded = bytes.to_vec();
                padded.resize(usize::from(max_len), 0);
                Value::Bytes(padded)
            } else {
                text(bytes, col.charset)
            }
        }
        ct::ENUM => {
            let index = cur.uint_le(meta[1].clamp(1, 2) as usize)? as usize;
            Value::Enum(enum_label(col, index)?)
        }
        ct::SET => {
            let bytes = meta[1].clamp(1, 8) as usize;
            let bits = cur.uint_le(bytes)?;
            Value::Set(set_labels(col, bits)?)
        }
        ct::BIT => {
            let (rem_bits, whole_bytes) = (meta[0] as usize, meta[1] as usize);
            let len = whole_bytes + usize::from(rem_bits > 0);
            if len > 8 {
                return Err(DecodeError::invalid("BIT value", format!("{len} bytes")));
            }
            Value::Bit(be_uint(cur.take(len)?))
        }
        ct::BLOB | ct::TINY_BLOB | ct::MEDIUM_BLOB | ct::LONG_BLOB | ct::GEOMETRY => {
            let len_bytes = meta[0].clamp(1, 4) as usize;
            let len = cur.uint_le(len_bytes)? as usize;
            let bytes = cur.take(len)?;
            match col.binlog_type {
                ct::GEOMETRY => Value::Bytes(bytes.to_vec()),
                _ => text(bytes, col.charset),
            }
        }
        ct::VECTOR => Value::Bytes(decode_vector(cur, meta[0])?.to_vec()),
        ct::JSON => {
            let len_bytes = meta[0].clamp(1, 4) as usize;
            let len = cur.uint_le(len_bytes)? as usize;
            Value::Json(mysql_json_to_text(cur.take(len)?)?)
        }
        other => {
            return Err(DecodeError::Unsupported(format!(
                "column type {other} in column {}",
                col.name
            )))
        }
    })
}

/// A MySQL 9 `VECTOR` value: the raw bytes of its 4-byte little-endian floats.
///
/// Layout, from MySQL's `calc_field_size` (libs/mysql/binlog/event/binary_log_funcs.cpp, where
/// `MYSQL_TYPE_VECTOR` shares the BLOB case): the TABLE_MAP metadata is one byte, the number of
/// bytes (1–4) of the little-endian length that precedes the value in the row image; the value
/// is that many bytes. The MySQL manual (VECTOR type, "The VECTOR Type") defines a vector as a
/// list of 4-byte single-precision floats, so a length that is not a multiple of 4 is corrupt.
/// Hand-written: `mysql_common` has no VECTOR type, and sluice keeps the value as bytes.
fn decode_vector<'a>(cur: &mut Cursor<'a>, len_bytes: u8) -> Result<&'a [u8], DecodeError> {
    if !(1..=4).contains(&len_bytes) {
        return Err(DecodeError::invalid(
            "VECTOR value",
            format!("length prefix of {len_bytes} bytes (metadata must be 1 to 4)"),
        ));
    }
    let len = cur.uint_le(usize::from(len_bytes))? as usize;
    if !len.is_multiple_of(4) {
        return Err(DecodeError::invalid(
            "VECTOR value",
            format!("{len} bytes is not a whole number of 4-byte floats"),
        ));
    }
    cur.take(len)
}

/// Found by fuzzing: `Decimal::read_bin` trusts every digit group of a binary DECIMAL to
/// hold no more digits than the group is for; a corrupt group overflowed an `i32`
/// multiplication inside `mysql_common` (a panic with overflow checks, a wrong value
/// without). MySQL's own `bin2decimal` refuses such input (`E_DEC_BAD_NUM`); so does this.
///
/// `bytes` is exactly `decimal_bin_size(precision, scale)` long. Groups are big-endian, the
/// first bit of the value is its sign flipped, and negative values have every bit inverted.
fn check_decimal_groups(bytes: &[u8], precision: usize, scale: usize) -> Result<(), DecodeError> {
    const DIG_PER_DEC: usize = 9;
    const DIG_TO_BYTES: [usize; DIG_PER_DEC + 1] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    let intg = precision - scale;
    // Digits per group in storage order: partial leading integer group, full integer
    // groups, full fraction groups, partial trailing fraction group.
    let mut groups = vec![intg % DIG_PER_DEC];
    groups.resize(1 + intg / DIG_PER_DEC + scale / DIG_PER_DEC, DIG_PER_DEC);
    groups.push(scale % DIG_PER_DEC);
    let invert = if bytes.first().is_some_and(|b| b & 0x80 == 0) {
        0xff
    } else {
        0
    };
    let mut at = 0;
    for digits in groups.into_iter().filter(|&digits| digits > 0) {
        let len = DIG_TO_BYTES[digits];
        let mut value = 0u64;
        for (i, &b) in bytes.get(at..at + len).unwrap_or_default().iter().enumerate() {
            let b = if at + i == 0 { b ^ 0x80 } else { b };
            value = value << 8 | u64::from(b ^ invert);
        }
        at += len;
        if value >= 10u64.pow(digits as u32) {
            return Err(DecodeError::invalid(
                "DECIMAL value",
                format!("a {digits}-digit group holds {value}"),
            ));
        }
    }
    Ok(())
}

fn int_value(bytes: &[u8], unsigned: bool) -> Value {
    let raw = le_uint(bytes);
    if unsigned {
        Value::UInt(raw)
    } else {
        let shift = 64 - 8 * bytes.len() as u32;
        Value::Int(((raw << shift) as i64) >> shift)
    }
}

fn decode_time2(cur: &mut Cursor<'_>, fsp: u8) -> Result<Value, DecodeError> {
    // MySQL's my_time_packed_from_binary: a 3-byte integer part offset by 0x800000, then a
    // fractional part whose sign follows the integer part.
    let int_part = be_uint(cur.take(3)?) as i64 - 0x80_0000;
    let packed: i64 = match fsp {
        0 => int_part << 24,
        1 | 2 => {
            let (mut i, mut f) = (int_part, i64::from(cur.u8()?));
            if i < 0 && f != 0 {
                i += 1;
                f -= 0x100;
            }
            (i << 24) + f * 10_000
        }
        3 | 4 => {
            let (mut i, mut f) = (int_part, be_uint(cur.take(2)?) as i64);
            if i < 0 && f != 0 {
                i += 1;
                f -= 0x10000;
            }
            (i << 24) + f * 100
        }
        5 | 6 => {
            let f = be_uint(cur.take(3)?) as i64;
            (int_part << 24) + f
        }
        _ => {
            return Err(DecodeError::invalid(
                "TIME value",
                format!("fractional precision {fsp}"),
            ))
        }
    };
    let negative = packed < 0;
    let abs = packed.unsigned_abs();
    let hms = abs >> 24;
    Ok(Value::Time {
        negative,
        hours: ((hms >> 12) % (1 << 10)) as u32,
        minutes: ((hms >> 6) % (1 << 6)) as u8,
        seconds: (hms % (1 << 6)) as u8,
        micros: (abs % (1 << 24)) as u32,
    })
}

fn enum_label(col: &ColumnDef, index: usize) -> Result<String, DecodeError> {
    if index == 0 {
        return Ok(String::new());
    }
    col.labels.get(index - 1).cloned().ok_or_else(|| {
        DecodeError::invalid(
            "ENUM value",
            format!(
                "index {index} beyond the {} labels of column {}",
                col.labels.len(),
                col.name
            ),
        )
    })
}

fn set_labels(col: &ColumnDef, bits: u64) -> Result<String, DecodeError> {
    let mut out = String::new();
    for i in 0..64 {
        if bits & (1 << i) != 0 {
            let label = col.labels.get(i).ok_or_else(|| {
                DecodeError::invalid(
                    "SET value",
                    format!("bit {i} beyond the {} labels of column {}", col.labels.len(), col.name),
                )
            })?;
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(label);
        }
    }
    Ok(out)
}

/// Converts MySQL's binary JSON to compact JSON text.
fn mysql_json_to_text(bytes: &[u8]) -> Result<String, DecodeError> {
    use mysql_common::binlog::jsonb;
    use mysql_common::io::ParseBuf;
    let value: jsonb::Value<'_> = ParseBuf(bytes)
        .parse(())
        .map_err(|e| DecodeError::invalid("JSON value", e.to_string()))?;
    let json = serde_json::Value::try_from(value).map_err(|e| DecodeError::invalid("JSON value", e.to_string()))?;
    Ok(json.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_is_cp1252() {
        assert_eq!(text(&[0x80, 0xe9], Charset::Latin1), Value::Text("€é".into()));
        assert_eq!(text(&[0xff, 0xfe], Charset::Utf8), Value::Bytes(vec![0xff, 0xfe]));
    }

    #[test]
    fn decimal_digit_groups_are_checked() {
        // DECIMAL(10,4): a 6-digit integer group (3 bytes), a 4-digit fraction group (2 bytes).
        use mysql_common::binlog::decimal::Decimal;
        let positive = [0x80, 0x04, 0xd2, 0x16, 0x2e];
        let negative = positive.map(|b| !b);
        assert_eq!(
            Decimal::read_bin(&positive[..], 10, 4, false).unwrap().to_string(),
            "1234.5678"
        );
        assert_eq!(
            Decimal::read_bin(&negative[..], 10, 4, false).unwrap().to_string(),
            "-1234.5678"
        );
        assert!(check_decimal_groups(&positive, 10, 4).is_ok());
        assert!(check_decimal_groups(&negative, 10, 4).is_ok());
        // Fraction group 65535, positive and negative; integer group 1000000.
        assert!(check_decimal_groups(&[0x80, 0x04, 0xd2, 0xff, 0xff], 10, 4).is_err());
        assert!(check_decimal_groups(&[0x7f, 0xfb, 0x2d, 0x00, 0x00], 10, 4).is_err());
        assert!(check_decimal_groups(&[0x8f, 0x42, 0x40, 0x00, 0x00], 10, 4).is_err());
    }

    fn vector_column(meta: u8) -> ColumnDef {
        let map = crate::table_map::TableMap {
            columns: vec![crate::table_map::MappedColumn {
                binlog_type: ct::VECTOR,
                meta: [meta, 0],
                nullable: true,
            }],
            ..Default::default()
        };
        map.to_table_def().columns.remove(0)
    }

    #[test]
    fn vector_values_are_bytes() {
        // Built from MySQL's layout (binary_log_funcs.cpp, `calc_field_size`, VECTOR shares
        // the BLOB case): metadata 4 → a 4-byte little-endian length, then the value; the
        // value is 4-byte little-endian floats (MySQL manual, "The VECTOR Type").
        // string_to_vector('[1.5,-2]') = 0x3fc00000, 0xc0000000.
        let col = vector_column(4);
        assert_eq!(col.kind, crate::table::ColumnKind::Other);
        let image = [8, 0, 0, 0, 0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x00, 0xc0];
        let mut cur = Cursor::new(&image, "row");
        assert_eq!(
            decode_value(&mut cur, &col).unwrap(),
            Value::Bytes(vec![0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x00, 0xc0])
        );
        assert!(cur.is_empty());
        // A 1-byte length prefix works the same way; an empty vector is 0 bytes.
        let mut cur = Cursor::new(&[0], "row");
        assert_eq!(decode_value(&mut cur, &vector_column(1)).unwrap(), Value::Bytes(vec![]));
    }

    #[test]
    fn corrupt_vector_lengths_are_errors() {
        let value = [8, 0, 0, 0, 0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x00, 0xc0];
        // Metadata outside 1..=4.
        for meta in [0, 5, 255] {
            let mut cur = Cursor::new(&value, "row");
            assert!(decode_value(&mut cur, &vector_column(meta)).is_err(), "meta {meta}");
        }
        // Not a whole number of floats.
        let mut cur = Cursor::new(&[3, 0, 0, 0, 1, 2, 3], "row");
        assert!(decode_value(&mut cur, &vector_column(4)).is_err());
        // Longer than the image, and a truncated length prefix.
        let mut cur = Cursor::new(&[12, 0, 0, 0, 1, 2, 3, 4], "row");
        assert!(decode_value(&mut cur, &vector_column(4)).is_err());
        let mut cur = Cursor::new(&[0xff, 0xff], "row");
        assert!(decode_value(&mut cur, &vector_column(4)).is_err());
        let mut cur = Cursor::new(&[0xfc, 0xff, 0xff, 0xff], "row");
        assert!(decode_value(&mut cur, &vector_column(4)).is_err());
    }

    #[test]
    fn signed_ints_sign_extend() {
        assert_eq!(int_value(&[0xff], false), Value::Int(-1));
        assert_eq!(int_value(&[0xff], true), Value::UInt(255));
        assert_eq!(int_value(&[0xff; 8], true), Value::UInt(u64::MAX));
        assert_eq!(int_value(&[0, 0, 0x80], false), Value::Int(-8_388_608));
    }
}
