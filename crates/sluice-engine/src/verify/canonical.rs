//! The canonical row encoding: one engine-neutral byte form of a row's replicated values, so
//! that a source row and its SQLite, MariaDB or PostgreSQL copy encode (and hash) the same
//! exactly when they hold the same data.
//!
//! Every target stores some types differently from the source (docs/type-mapping.md): SQLite
//! keeps DECIMAL and temporal values as text and FLOAT as a double, PostgreSQL keeps TIME as an
//! interval, BIGINT UNSIGNED above `i64::MAX` is text in SQLite and `numeric` in PostgreSQL.
//! Each target reads its values back into [`Value`]s (`Target::read_rows`); this module then
//! encodes them per *source column kind*, so the storage differences vanish:
//!
//! | column kind | canonical form |
//! |---|---|
//! | integers, YEAR, BIT | the integer's decimal digits (`Int`, `UInt`, `Year`, `Bit` alike) |
//! | FLOAT | the double sluice stores for it ([`widen_f32`]), as IEEE bits; DOUBLE: its bits |
//! | DECIMAL | the exact decimal text (`-12.340`), negative zero made positive |
//! | DATE, TIME, DATETIME, TIMESTAMP | MySQL's text form (`Value`'s `Display`): TIMESTAMP in UTC, the fraction only when non-zero, 6 digits. Targets that keep temporal values as text hand that text back as `Value::Text`. |
//! | JSON (MySQL's JSON type) | compact JSON with object keys sorted (whitespace and key order are not data) |
//! | text, ENUM, SET, binary | the bytes (UTF-8 for decoded text): collation-independent |
//! | NULL | its own tag, distinct from every value (`''` and `'NULL'` included) |
//!
//! Each value is written as a tag byte, a length and the bytes, so no two different rows can
//! concatenate to the same encoding.

use sluice_binlog::{ColumnDef, ColumnKind, Value};

use crate::target::TargetTable;

/// A 128-bit digest of a canonical row (or key) encoding.
pub type RowDigest = u128;

const TAG_NULL: u8 = 0;
const TAG_INTEGER: u8 = b'i';
const TAG_FLOAT: u8 = b'f';
const TAG_DECIMAL: u8 = b'd';
const TAG_TEMPORAL: u8 = b't';
const TAG_JSON: u8 = b'j';
const TAG_BYTES: u8 = b's';

/// Why a value has no canonical form for its column (a value of the wrong kind: a bug or a
/// target column changed behind sluice's back). Never carries the value.
#[derive(Debug, thiserror::Error)]
#[error("column {column}: a {kind} value does not belong in a {column_kind:?} column")]
pub struct CanonicalError {
    pub column: String,
    pub kind: &'static str,
    pub column_kind: ColumnKind,
}

/// Widens a FLOAT the way every target stores it: through its shortest decimal form, so FLOAT
/// 0.1 becomes the double 0.1. When that double would not round back to the same f32 (about
/// one f32 in 10^8) the exact widening is used, so the source value is always recoverable.
pub fn widen_f32(v: f32) -> f64 {
    let exact = f64::from(v);
    match v.to_string().parse::<f64>() {
        Ok(d) if (d as f32).to_bits() == v.to_bits() => d,
        _ => exact,
    }
}

fn put(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// An integer's decimal digits, written without allocating (this runs for every value of
/// every row verified).
fn put_integer(out: &mut Vec<u8>, v: impl std::fmt::Display) {
    use std::io::Write;
    let mut digits = [0u8; 48];
    let mut cursor = std::io::Cursor::new(&mut digits[..]);
    write!(cursor, "{v}").expect("an integer fits 48 bytes");
    let n = cursor.position() as usize;
    put(out, TAG_INTEGER, &digits[..n]);
}

/// Appends the canonical encoding of `value` for `column` to `out`.
pub fn encode_value(column: &ColumnDef, value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    let wrong = || CanonicalError {
        column: column.name.clone(),
        kind: value.kind(),
        column_kind: column.kind,
    };
    let kind = column.kind;
    let integer_column = kind.is_integer() || matches!(kind, ColumnKind::Year | ColumnKind::Bit);
    match value {
        Value::Null => put(out, TAG_NULL, &[]),
        Value::Int(v) if integer_column => put_integer(out, v),
        Value::UInt(v) | Value::Bit(v) if integer_column => put_integer(out, v),
        Value::Year(v) if integer_column => put_integer(out, v),
        // A text form of an integer (SQLite's BIGINT UNSIGNED above i64::MAX, PostgreSQL numeric).
        Value::Text(s) if integer_column => {
            let n: i128 = s.trim().parse().map_err(|_| wrong())?;
            put_integer(out, n)
        }
        Value::Float(v) if matches!(kind, ColumnKind::Float | ColumnKind::Double) => {
            put(out, TAG_FLOAT, &widen_f32(*v).to_bits().to_be_bytes())
        }
        Value::Double(v) if matches!(kind, ColumnKind::Float | ColumnKind::Double) => {
            put(out, TAG_FLOAT, &v.to_bits().to_be_bytes())
        }
        Value::Decimal(s) | Value::Text(s) if kind == ColumnKind::Decimal => {
            put(out, TAG_DECIMAL, canonical_decimal(s).as_bytes())
        }
        Value::Date { .. } if kind == ColumnKind::Date => put(out, TAG_TEMPORAL, value.to_string().as_bytes()),
        Value::Time { .. } if kind == ColumnKind::Time => put(out, TAG_TEMPORAL, value.to_string().as_bytes()),
        Value::DateTime { .. } if kind == ColumnKind::DateTime => put(out, TAG_TEMPORAL, value.to_string().as_bytes()),
        Value::Timestamp { .. } if kind == ColumnKind::Timestamp => {
            put(out, TAG_TEMPORAL, value.to_string().as_bytes())
        }
        Value::Text(s)
            if matches!(
                kind,
                ColumnKind::Date | ColumnKind::Time | ColumnKind::DateTime | ColumnKind::Timestamp
            ) =>
        {
            put(out, TAG_TEMPORAL, s.as_bytes())
        }
        Value::Json(s) | Value::Text(s) if kind == ColumnKind::Json => match canonical_json(s) {
            Some(json) => put(out, TAG_JSON, json.as_bytes()),
            // Not parseable JSON (MySQL never writes such a value): compare the text as is.
            None => put(out, TAG_BYTES, s.as_bytes()),
        },
        Value::Text(s) | Value::Enum(s) | Value::Set(s) | Value::Json(s)
            if matches!(
                kind,
                ColumnKind::Text | ColumnKind::Enum | ColumnKind::Set | ColumnKind::Binary | ColumnKind::Other
            ) =>
        {
            put(out, TAG_BYTES, s.as_bytes())
        }
        Value::Bytes(b)
            if matches!(
                kind,
                ColumnKind::Text | ColumnKind::Binary | ColumnKind::Other | ColumnKind::Enum | ColumnKind::Set
            ) =>
        {
            put(out, TAG_BYTES, b)
        }
        _ => return Err(wrong()),
    }
    Ok(())
}

/// DECIMAL text with negative zero made positive (`-0.00` → `0.00`); otherwise unchanged,
/// because every target keeps the column's scale (`12.340` stays `12.340`).
fn canonical_decimal(s: &str) -> std::borrow::Cow<'_, str> {
    let s = s.trim();
    match s.strip_prefix('-') {
        Some(rest) if rest.bytes().all(|b| b == b'0' || b == b'.') => rest.into(),
        _ => s.into(),
    }
}

/// Compact JSON with object keys in byte order, or `None` when `text` is not JSON.
pub fn canonical_json(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let mut out = String::with_capacity(text.len());
    write_json(&value, &mut out);
    Some(out)
}

fn write_json(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value as J;
    match value {
        J::Object(map) => {
            let mut entries: Vec<(&String, &J)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&J::String(k.clone()).to_string());
                out.push(':');
                write_json(v, out);
            }
            out.push('}');
        }
        J::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The canonical encoding of a whole target row (one value per [`TargetTable::columns`]).
pub fn encode_row(table: &TargetTable, row: &[Value], out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    for (column, value) in table.columns.iter().zip(row) {
        encode_value(&column.source, value, out)?;
    }
    Ok(())
}

/// The canonical encoding of a row's key columns (in key order).
pub fn encode_key(table: &TargetTable, row: &[Value]) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(16 * table.key.len());
    for &k in &table.key {
        encode_value(&table.columns[k].source, &row[k], &mut out)?;
    }
    Ok(out)
}

/// The digest of a row's canonical encoding.
pub fn row_digest(table: &TargetTable, row: &[Value], scratch: &mut Vec<u8>) -> Result<RowDigest, CanonicalError> {
    scratch.clear();
    encode_row(table, row, scratch)?;
    Ok(xxhash_rust::xxh3::xxh3_128(scratch))
}

/// A value read back from a target in its stored form, typed again for the write path:
/// temporal text parsed into its `Value` variant, integer text into an integer, a FLOAT's
/// double back into the f32. `None` when the text is not a value of the column's kind.
pub fn typed(column: &ColumnDef, value: &Value) -> Option<Value> {
    let kind = column.kind;
    Some(match value {
        Value::Text(s) if kind.is_integer() || matches!(kind, ColumnKind::Year | ColumnKind::Bit) => {
            if let Ok(v) = s.parse::<i64>() {
                match kind {
                    ColumnKind::Year => Value::Year(u16::try_from(v).ok()?),
                    ColumnKind::Bit => Value::Bit(u64::try_from(v).ok()?),
                    _ if column.unsigned => Value::UInt(u64::try_from(v).ok()?),
                    _ => Value::Int(v),
                }
            } else if kind == ColumnKind::Bit {
                Value::Bit(s.parse().ok()?)
            } else {
                Value::UInt(s.parse().ok()?)
            }
        }
        Value::Text(s) if kind == ColumnKind::Decimal => Value::Decimal(s.clone()),
        Value::Text(s) if kind == ColumnKind::Date => {
            let (year, month, day) = parse_date(s)?;
            Value::Date { year, month, day }
        }
        Value::Text(s) if matches!(kind, ColumnKind::DateTime | ColumnKind::Timestamp) => {
            let (date, time) = s.split_once(' ')?;
            let (year, month, day) = parse_date(date)?;
            let (negative, hours, minute, second, micros) = parse_time(time)?;
            if negative || hours > 23 {
                return None;
            }
            let hour = hours as u8;
            if kind == ColumnKind::DateTime {
                Value::DateTime {
                    year,
                    month,
                    day,
                    hour,
                    minute,
                    second,
                    micros,
                }
            } else if year == 0 {
                Value::Timestamp { seconds: 0, micros: 0 }
            } else {
                let days = sluice_binlog::value::days_from_civil(i64::from(year), u32::from(month), u32::from(day));
                let seconds = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
                Value::Timestamp { seconds, micros }
            }
        }
        Value::Text(s) if kind == ColumnKind::Time => {
            let (negative, hours, minutes, seconds, micros) = parse_time(s)?;
            Value::Time {
                negative,
                hours,
                minutes,
                seconds,
                micros,
            }
        }
        Value::Text(s) if kind == ColumnKind::Enum => Value::Enum(s.clone()),
        Value::Text(s) if kind == ColumnKind::Set => Value::Set(s.clone()),
        Value::Double(d) if kind == ColumnKind::Float => Value::Float(*d as f32),
        other => other.clone(),
    })
}

fn parse_date(s: &str) -> Option<(u16, u8, u8)> {
    let mut parts = s.splitn(3, '-');
    Some((
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    ))
}

/// `[-]H+:MM:SS[.ffffff]` → (negative, hours, minutes, seconds, micros).
fn parse_time(s: &str) -> Option<(bool, u32, u8, u8, u32)> {
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    let mut parts = whole.splitn(3, ':');
    let hours = parts.next()?.parse().ok()?;
    let minutes = parts.next()?.parse().ok()?;
    let seconds = parts.next()?.parse().ok()?;
    if fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<6}").parse().ok()?
    };
    Some((negative, hours, minutes, seconds, micros))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_binlog::Charset;

    fn column(kind: ColumnKind) -> ColumnDef {
        ColumnDef {
            name: "c".into(),
            kind,
            binlog_type: 0,
            meta: 0,
            unsigned: false,
            nullable: true,
            charset: Charset::Utf8,
            labels: vec![],
            precision: 0,
            scale: 0,
            fsp: 0,
            length: 0,
        }
    }

    fn enc(kind: ColumnKind, v: Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode_value(&column(kind), &v, &mut out).unwrap();
        out
    }

    #[test]
    fn storage_differences_encode_the_same() {
        // BIGINT UNSIGNED: an integer at the source, text in SQLite, numeric text in PostgreSQL.
        assert_eq!(
            enc(ColumnKind::BigInt, Value::UInt(u64::MAX)),
            enc(ColumnKind::BigInt, Value::Text("18446744073709551615".into()))
        );
        assert_eq!(
            enc(ColumnKind::Int, Value::Int(7)),
            enc(ColumnKind::Int, Value::UInt(7))
        );
        assert_eq!(
            enc(ColumnKind::Year, Value::Year(2024)),
            enc(ColumnKind::Year, Value::Int(2024))
        );
        // FLOAT: an f32 at the source, the widened double in SQLite.
        assert_eq!(
            enc(ColumnKind::Float, Value::Float(0.1)),
            enc(ColumnKind::Float, Value::Double(0.1))
        );
        // Temporal values: typed at the source, text in SQLite.
        let ts = Value::Timestamp {
            seconds: 1_700_000_000,
            micros: 500_000,
        };
        assert_eq!(
            enc(ColumnKind::Timestamp, ts),
            enc(ColumnKind::Timestamp, Value::Text("2023-11-14 22:13:20.500000".into()))
        );
        // ENUM as a label or as text.
        assert_eq!(
            enc(ColumnKind::Enum, Value::Enum("red".into())),
            enc(ColumnKind::Enum, Value::Text("red".into()))
        );
        // JSON: key order and whitespace are not data.
        assert_eq!(
            enc(ColumnKind::Json, Value::Json(r#"{"b":1,"a":[1,2]}"#.into())),
            enc(ColumnKind::Json, Value::Text(r#"{ "a": [1, 2], "b": 1 }"#.into()))
        );
        assert_eq!(
            enc(ColumnKind::Decimal, Value::Decimal("-0.00".into())),
            enc(ColumnKind::Decimal, Value::Text("0.00".into()))
        );
    }

    #[test]
    fn different_data_encodes_differently() {
        let null = enc(ColumnKind::Text, Value::Null);
        assert_ne!(null, enc(ColumnKind::Text, Value::Text(String::new())));
        assert_ne!(null, enc(ColumnKind::Text, Value::Text("NULL".into())));
        // Collation-independent: case and trailing spaces are data.
        assert_ne!(
            enc(ColumnKind::Text, Value::Text("a".into())),
            enc(ColumnKind::Text, Value::Text("A".into()))
        );
        assert_ne!(
            enc(ColumnKind::Text, Value::Text("a".into())),
            enc(ColumnKind::Text, Value::Text("a ".into()))
        );
        assert_ne!(
            enc(ColumnKind::Decimal, Value::Decimal("1.10".into())),
            enc(ColumnKind::Decimal, Value::Decimal("1.100".into()))
        );
        assert_ne!(
            enc(ColumnKind::DateTime, Value::Text("2024-01-01 00:00:00".into())),
            enc(ColumnKind::DateTime, Value::Text("2024-01-01 00:00:00.000001".into()))
        );
        assert_ne!(
            enc(ColumnKind::Json, Value::Json("[1,2]".into())),
            enc(ColumnKind::Json, Value::Json("[2,1]".into()))
        );
        // Concatenation cannot collide: ("ab", "c") vs ("a", "bc").
        let mut one = Vec::new();
        let mut two = Vec::new();
        let c = column(ColumnKind::Text);
        encode_value(&c, &Value::Text("ab".into()), &mut one).unwrap();
        encode_value(&c, &Value::Text("c".into()), &mut one).unwrap();
        encode_value(&c, &Value::Text("a".into()), &mut two).unwrap();
        encode_value(&c, &Value::Text("bc".into()), &mut two).unwrap();
        assert_ne!(one, two);
    }

    #[test]
    fn stored_text_types_back_to_the_written_value() {
        let cases = [
            (
                ColumnKind::Date,
                Value::Date {
                    year: 2024,
                    month: 2,
                    day: 29,
                },
            ),
            (
                ColumnKind::DateTime,
                Value::DateTime {
                    year: 2024,
                    month: 2,
                    day: 29,
                    hour: 23,
                    minute: 5,
                    second: 9,
                    micros: 120,
                },
            ),
            (
                ColumnKind::Timestamp,
                Value::Timestamp {
                    seconds: 1_700_000_000,
                    micros: 500_000,
                },
            ),
            (
                ColumnKind::Time,
                Value::Time {
                    negative: true,
                    hours: 838,
                    minutes: 59,
                    seconds: 59,
                    micros: 1,
                },
            ),
        ];
        for (kind, value) in cases {
            let stored = Value::Text(value.to_string());
            assert_eq!(typed(&column(kind), &stored), Some(value), "{kind:?}");
        }
        let mut big = column(ColumnKind::BigInt);
        big.unsigned = true;
        assert_eq!(
            typed(&big, &Value::Text("18446744073709551615".into())),
            Some(Value::UInt(u64::MAX))
        );
        assert_eq!(typed(&column(ColumnKind::Date), &Value::Text("garbage".into())), None);
    }

    #[test]
    fn a_value_of_the_wrong_kind_is_an_error_without_the_value() {
        let mut out = Vec::new();
        let err = encode_value(&column(ColumnKind::Int), &Value::Text("secret".into()), &mut out).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
