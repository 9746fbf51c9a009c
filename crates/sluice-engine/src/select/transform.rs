//! Column transforms: deterministic, stateless rewrites of one column's values, for scrubbing
//! PII before it reaches the target.
//!
//! A transform spec comes from the config as a string ([`parse_transform`]) and is compiled
//! once per column definition ([`compile`]), which checks it applies to the column's kind and
//! prepares everything per-row work needs (the constant value, the HMAC key schedule).
//! [`CompiledTransform::apply`] then rewrites one value, and
//! [`CompiledTransform::output_column`] tells what the target column looks like afterwards.
//!
//! | spec | effect on a value | NULL input |
//! | --- | --- | --- |
//! | `null` | NULL | NULL |
//! | `const:<value>` | the constant, parsed as the column's type | the constant |
//! | `hmac` | lowercase hex HMAC-SHA256 of the value's canonical bytes (64 characters) | NULL |
//! | `mask:N` | all but the last N characters replaced by `*` | NULL |
//! | `truncate:N` | the first N characters | NULL |
//!
//! Transforms never put a row value into an error: errors are about the spec and the column
//! definition only.

use std::borrow::Cow;
use std::fmt;

use sha2::{Digest, Sha256};
use sluice_binlog::{Charset, ColumnDef, ColumnKind, Value};

use crate::select::rowfilter::{is_label, parse_civil, parse_time, Dec};

/// The shortest HMAC key [`compile`] accepts, in bytes. 32 random bytes are recommended.
pub const MIN_HMAC_KEY_LEN: usize = 16;

/// Length in characters of an `hmac` output (SHA-256 in hex).
pub const HMAC_HEX_LEN: u32 = 64;

/// A parsed transform spec, not yet bound to a column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransformSpec {
    /// `null`: every value becomes NULL.
    Null,
    /// `const:<value>`: every value (NULL included) becomes this constant, given as text and
    /// parsed as the column's type by [`compile`].
    Const(String),
    /// `hmac`: keyed SHA-256 of the value, as 64 lowercase hex characters.
    Hmac,
    /// `mask:N`: keep the last N characters, replace the others with `*`.
    Mask(usize),
    /// `truncate:N`: keep the first N characters.
    Truncate(usize),
}

const VALID_SPECS: &str = "null, const:<value>, hmac, mask:<N>, truncate:<N>";

impl TransformSpec {
    /// Whether distinct inputs stay distinct (with overwhelming probability), so the transform
    /// may be applied to a primary key column. True only for `hmac`.
    pub fn keeps_values_distinct(&self) -> bool {
        matches!(self, TransformSpec::Hmac)
    }
}

impl fmt::Display for TransformSpec {
    /// The spec as it is written in the config.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransformSpec::Null => f.write_str("null"),
            TransformSpec::Const(v) => write!(f, "const:{v}"),
            TransformSpec::Hmac => f.write_str("hmac"),
            TransformSpec::Mask(n) => write!(f, "mask:{n}"),
            TransformSpec::Truncate(n) => write!(f, "truncate:{n}"),
        }
    }
}

/// Parses a transform spec: `null`, `const:<value>`, `hmac`, `mask:<N>` or `truncate:<N>`.
/// Names are case-insensitive; everything after `const:` is the value, verbatim.
pub fn parse_transform(spec: &str) -> Result<TransformSpec, String> {
    let (name, arg) = match spec.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (spec, None),
    };
    let count = |what: &str, arg: Option<&str>| -> Result<usize, String> {
        let arg = arg.ok_or_else(|| format!("{what} needs a number of characters, e.g. {what}:4"))?;
        arg.parse::<usize>()
            .map_err(|_| format!("{what}:<N> needs a whole number of characters, not '{arg}'"))
    };
    match (name.to_ascii_lowercase().as_str(), arg) {
        ("null", None) => Ok(TransformSpec::Null),
        ("hmac", None) => Ok(TransformSpec::Hmac),
        ("null" | "hmac", Some(_)) => Err(format!(
            "'{name}' takes no argument; valid transforms are {VALID_SPECS}"
        )),
        ("const", Some(v)) => Ok(TransformSpec::Const(v.to_string())),
        ("const", None) => Err("const needs a value, e.g. const:REDACTED or const:0".into()),
        ("mask", a) => count("mask", a).map(TransformSpec::Mask),
        ("truncate", a) => count("truncate", a).map(TransformSpec::Truncate),
        _ => Err(format!(
            "unknown transform '{spec}'; valid transforms are {VALID_SPECS}"
        )),
    }
}

/// A transform bound to one source column. `Debug` never shows the HMAC key.
#[derive(Clone)]
pub struct CompiledTransform {
    op: Op,
}

#[derive(Clone)]
enum Op {
    Null,
    Const(Value),
    Hmac(Box<HmacKey>),
    Mask(usize),
    Truncate(usize),
}

impl fmt::Debug for CompiledTransform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            Op::Null => f.write_str("Null"),
            Op::Const(v) => f.debug_tuple("Const").field(&v.kind()).finish(),
            Op::Hmac(_) => f.write_str("Hmac(<key redacted>)"),
            Op::Mask(n) => f.debug_tuple("Mask").field(n).finish(),
            Op::Truncate(n) => f.debug_tuple("Truncate").field(n).finish(),
        }
    }
}

fn kind_label(column: &ColumnDef) -> String {
    format!("{:?}", column.kind).to_ascii_uppercase()
}

/// Binds a spec to a column: checks that the transform applies to the column's kind, parses a
/// `const` value as that kind, and prepares the HMAC key (`hmac_key` is required for `hmac`,
/// at least [`MIN_HMAC_KEY_LEN`] bytes, and ignored otherwise).
///
/// `mask` and `truncate` apply to text-like kinds (Text, Enum, Set, Json), where they count
/// characters (Unicode scalar values), and to Binary, where they count bytes.
pub fn compile(spec: &TransformSpec, column: &ColumnDef, hmac_key: Option<&[u8]>) -> Result<CompiledTransform, String> {
    let op = match spec {
        TransformSpec::Null => Op::Null,
        TransformSpec::Const(text) => Op::Const(const_value(text, column)?),
        TransformSpec::Hmac => {
            let key = hmac_key.ok_or_else(|| {
                format!(
                    "column `{}`: hmac needs a key; set [transforms] hmac_key_env or hmac_key_file",
                    column.name
                )
            })?;
            if key.len() < MIN_HMAC_KEY_LEN {
                return Err(format!(
                    "the hmac key is too short ({} bytes); use at least {MIN_HMAC_KEY_LEN} random bytes (32 recommended)",
                    key.len()
                ));
            }
            Op::Hmac(Box::new(HmacKey::new(key)))
        }
        TransformSpec::Mask(n) | TransformSpec::Truncate(n) => {
            let applies = matches!(
                column.kind,
                ColumnKind::Text | ColumnKind::Enum | ColumnKind::Set | ColumnKind::Json | ColumnKind::Binary
            );
            if !applies {
                return Err(format!(
                    "column `{}` is {}; {} applies to text columns (CHAR, VARCHAR, TEXT, ENUM, SET, JSON) and \
                     binary columns only; use hmac, const:<value> or null instead",
                    column.name,
                    kind_label(column),
                    spec
                ));
            }
            match spec {
                TransformSpec::Mask(_) => Op::Mask(*n),
                _ => Op::Truncate(*n),
            }
        }
    };
    Ok(CompiledTransform { op })
}

impl CompiledTransform {
    /// Rewrites one value of the column.
    ///
    /// NULL stays NULL for `hmac`, `mask` and `truncate`; `const` replaces NULL too (so the
    /// target doesn't reveal which rows had a value). A `mask`/`truncate` input of a variant
    /// that isn't text or bytes (not produced for the kinds [`compile`] accepts) becomes NULL
    /// rather than passing through unscrubbed.
    pub fn apply(&self, v: Value) -> Value {
        match &self.op {
            Op::Null => Value::Null,
            Op::Const(c) => c.clone(),
            Op::Hmac(key) => {
                if v.is_null() {
                    Value::Null
                } else {
                    Value::Text(lower_hex(&key.mac(&canonical_bytes(&v))))
                }
            }
            Op::Mask(n) => map_text(v, |s| mask_str(s, *n), |b| mask_bytes(b, *n)),
            Op::Truncate(n) => map_text(
                v,
                |mut s| {
                    if let Some((i, _)) = s.char_indices().nth(*n) {
                        s.truncate(i);
                    }
                    s
                },
                |mut b| {
                    b.truncate(*n);
                    b
                },
            ),
        }
    }

    /// The target column that results from transforming `source` (the column this transform
    /// was compiled for): `hmac` gives a utf8 text column of length 64 (nullable as the
    /// source), `const` the source type as NOT NULL, `null` the source type as nullable, and
    /// `mask`/`truncate` the source type (`truncate:N` lowers the declared length to N).
    pub fn output_column(&self, source: &ColumnDef) -> ColumnDef {
        let mut out = source.clone();
        match &self.op {
            Op::Null => out.nullable = true,
            Op::Const(v) => {
                out.nullable = false;
                if let Value::Text(s) | Value::Enum(s) | Value::Set(s) | Value::Json(s) = v {
                    let chars = s.chars().count() as u32;
                    if out.length > 0 && chars > out.length {
                        out.length = chars;
                    }
                }
            }
            Op::Hmac(_) => {
                out = ColumnDef {
                    name: source.name.clone(),
                    kind: ColumnKind::Text,
                    // MYSQL_TYPE_VARCHAR, 64 characters of up to 4 bytes.
                    binlog_type: 15,
                    meta: (HMAC_HEX_LEN * 4) as u16,
                    unsigned: false,
                    nullable: source.nullable,
                    charset: Charset::Utf8,
                    labels: Vec::new(),
                    precision: 0,
                    scale: 0,
                    fsp: 0,
                    length: HMAC_HEX_LEN,
                }
            }
            Op::Mask(_) => {}
            Op::Truncate(n) => {
                let n = u32::try_from(*n).unwrap_or(u32::MAX);
                if out.length == 0 || out.length > n {
                    out.length = n;
                }
            }
        }
        out
    }
}

/// Applies a string or byte rewrite, keeping the value's variant.
fn map_text(v: Value, text: impl FnOnce(String) -> String, bytes: impl FnOnce(Vec<u8>) -> Vec<u8>) -> Value {
    match v {
        Value::Text(s) => Value::Text(text(s)),
        Value::Enum(s) => Value::Enum(text(s)),
        Value::Set(s) => Value::Set(text(s)),
        Value::Json(s) => Value::Json(text(s)),
        Value::Bytes(b) => Value::Bytes(bytes(b)),
        _ => Value::Null,
    }
}

/// Lowercase hex of a digest. On the per-row path of `hmac`, so written out with a table
/// rather than through a formatter.
fn lower_hex(digest: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn mask_str(s: String, keep: usize) -> String {
    if s.is_ascii() {
        // One byte per character: mask in place, without a second string.
        if s.len() <= keep {
            return s;
        }
        let hidden = s.len() - keep;
        let mut bytes = s.into_bytes();
        bytes[..hidden].fill(b'*');
        return String::from_utf8(bytes).expect("ASCII stays valid UTF-8");
    }
    let count = s.chars().count();
    if count <= keep {
        return s;
    }
    let hidden = count - keep;
    let tail = s.char_indices().nth(hidden).map_or(s.len(), |(i, _)| i);
    let mut out = String::with_capacity(hidden + s.len() - tail);
    for _ in 0..hidden {
        out.push('*');
    }
    out.push_str(&s[tail..]);
    out
}

fn mask_bytes(mut b: Vec<u8>, keep: usize) -> Vec<u8> {
    let hidden = b.len().saturating_sub(keep);
    b[..hidden].fill(b'*');
    b
}

/// The bytes `hmac` hashes: text-like values as their UTF-8, DECIMAL as its exact text, bytes
/// raw, everything else as its `Display` text (integers in decimal, temporal values as
/// `YYYY-MM-DD HH:MM:SS[.ffffff]` etc., TIMESTAMP in UTC).
fn canonical_bytes(v: &Value) -> Cow<'_, [u8]> {
    match v {
        Value::Text(s) | Value::Enum(s) | Value::Set(s) | Value::Json(s) | Value::Decimal(s) => {
            Cow::Borrowed(s.as_bytes())
        }
        Value::Bytes(b) => Cow::Borrowed(b),
        other => Cow::Owned(other.to_string().into_bytes()),
    }
}

/// HMAC-SHA256 (RFC 2104) with the key's inner and outer pads absorbed once.
#[derive(Clone)]
struct HmacKey {
    inner: Sha256,
    outer: Sha256,
}

impl HmacKey {
    fn new(key: &[u8]) -> HmacKey {
        const BLOCK: usize = 64;
        let mut block = [0u8; BLOCK];
        if key.len() > BLOCK {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut inner = Sha256::new();
        inner.update(block.map(|b| b ^ 0x36));
        let mut outer = Sha256::new();
        outer.update(block.map(|b| b ^ 0x5c));
        block.fill(0);
        HmacKey { inner, outer }
    }

    fn mac(&self, message: &[u8]) -> [u8; 32] {
        let mut inner = self.inner.clone();
        inner.update(message);
        let mut outer = self.outer.clone();
        outer.update(inner.finalize());
        outer.finalize().into()
    }
}

/// Parses a `const:` value as a value of the column's kind.
fn const_value(text: &str, column: &ColumnDef) -> Result<Value, String> {
    let bad = |expected: &str| {
        format!(
            "column `{}` is {}; const value '{text}' is not {expected}",
            column.name,
            kind_label(column)
        )
    };
    let kind = column.kind;
    Ok(match kind {
        k if k.is_integer() => {
            let (min, max): (i128, i128) = match (k, column.unsigned) {
                (ColumnKind::TinyInt, false) => (-128, 127),
                (ColumnKind::TinyInt, true) => (0, 255),
                (ColumnKind::SmallInt, false) => (-32_768, 32_767),
                (ColumnKind::SmallInt, true) => (0, 65_535),
                (ColumnKind::MediumInt, false) => (-8_388_608, 8_388_607),
                (ColumnKind::MediumInt, true) => (0, 16_777_215),
                (ColumnKind::Int, false) => (i32::MIN.into(), i32::MAX.into()),
                (ColumnKind::Int, true) => (0, u32::MAX.into()),
                (_, false) => (i64::MIN.into(), i64::MAX.into()),
                (_, true) => (0, u64::MAX.into()),
            };
            let expected = format!("an integer between {min} and {max}");
            let v: i128 = text.parse().map_err(|_| bad(&expected))?;
            if !(min..=max).contains(&v) {
                return Err(bad(&expected));
            }
            if column.unsigned {
                Value::UInt(v as u64)
            } else {
                Value::Int(v as i64)
            }
        }
        ColumnKind::Year => match text.parse::<u16>() {
            Ok(y) if y == 0 || (1901..=2155).contains(&y) => Value::Year(y),
            _ => return Err(bad("a year between 1901 and 2155 (or 0)")),
        },
        ColumnKind::Bit => {
            let bits = column.length;
            let v: u64 = text.parse().map_err(|_| bad("an unsigned integer"))?;
            if (1..64).contains(&bits) && v >> bits != 0 {
                return Err(bad(&format!("an unsigned integer of at most {bits} bits")));
            }
            Value::Bit(v)
        }
        ColumnKind::Decimal => {
            let expected = if column.precision > 0 {
                format!("a DECIMAL({},{}) number", column.precision, column.scale)
            } else {
                "a decimal number".into()
            };
            let d = Dec::parse_literal(text).map_err(|_| bad(&expected))?;
            let scale = usize::from(column.scale);
            let int_digits = usize::from(column.precision.saturating_sub(column.scale));
            if d.frac.len() > scale || (column.precision > 0 && d.int.len() > int_digits) {
                return Err(bad(&expected));
            }
            let mut s = String::new();
            if d.negative {
                s.push('-');
            }
            s.push_str(if d.int.is_empty() { "0" } else { &d.int });
            if scale > 0 {
                s.push('.');
                s.push_str(&d.frac);
                for _ in d.frac.len()..scale {
                    s.push('0');
                }
            }
            Value::Decimal(s)
        }
        ColumnKind::Float => match text.parse::<f32>() {
            Ok(f) if f.is_finite() => Value::Float(f),
            _ => return Err(bad("a finite FLOAT number")),
        },
        ColumnKind::Double => match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Value::Double(f),
            _ => return Err(bad("a finite DOUBLE number")),
        },
        ColumnKind::Date => match parse_civil(text) {
            Some(c) if !c.has_time => Value::Date {
                year: c.year,
                month: c.month,
                day: c.day,
            },
            _ => return Err(bad("a date 'YYYY-MM-DD'")),
        },
        ColumnKind::DateTime => match parse_civil(text) {
            Some(c) => Value::DateTime {
                year: c.year,
                month: c.month,
                day: c.day,
                hour: c.hour,
                minute: c.minute,
                second: c.second,
                micros: c.micros,
            },
            None => return Err(bad("a datetime 'YYYY-MM-DD HH:MM:SS[.ffffff]'")),
        },
        ColumnKind::Timestamp => match parse_civil(text).and_then(|c| c.to_unix_utc()) {
            Some((seconds, micros)) => Value::Timestamp { seconds, micros },
            None => return Err(bad("a UTC datetime 'YYYY-MM-DD HH:MM:SS[.ffffff]'")),
        },
        ColumnKind::Time => match parse_time(text) {
            Some(t) => Value::Time {
                negative: t.negative,
                hours: t.hours,
                minutes: t.minutes,
                seconds: t.seconds,
                micros: t.micros,
            },
            None => return Err(bad("a time '[-]HH:MM:SS[.ffffff]'")),
        },
        ColumnKind::Text => Value::Text(text.to_string()),
        ColumnKind::Binary => Value::Bytes(text.as_bytes().to_vec()),
        ColumnKind::Enum => {
            if !text.is_empty() && !column.labels.is_empty() && !is_label(&column.labels, text) {
                return Err(bad(&format!("one of its labels ({})", quoted_labels(column))));
            }
            Value::Enum(text.to_string())
        }
        ColumnKind::Set => {
            if text.is_empty() || column.labels.is_empty() {
                Value::Set(text.to_string())
            } else {
                let parts: Vec<&str> = text.split(',').collect();
                if let Some(p) = parts.iter().find(|p| !is_label(&column.labels, p)) {
                    return Err(bad(&format!(
                        "a comma-separated list of its labels ({}); '{p}' is not one",
                        quoted_labels(column)
                    )));
                }
                // In definition order, each label once, as the decoder produces SET values.
                let ordered: Vec<&str> = column
                    .labels
                    .iter()
                    .filter_map(|l| parts.iter().find(|p| is_label(std::slice::from_ref(l), p)).copied())
                    .collect();
                Value::Set(ordered.join(","))
            }
        }
        ColumnKind::Json => {
            serde_json::from_str::<serde_json::Value>(text).map_err(|_| bad("valid JSON"))?;
            Value::Json(text.to_string())
        }
        ColumnKind::Other => {
            return Err(format!(
            "column `{}` has an opaque type (GEOMETRY or similar); const can't produce its values, use null instead",
            column.name
        ))
        }
        // Integer kinds are handled by the first arm.
        _ => unreachable!("integer kinds are matched above"),
    })
}

fn quoted_labels(column: &ColumnDef) -> String {
    column
        .labels
        .iter()
        .take(20)
        .map(|l| format!("'{l}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn col(name: &str, kind: ColumnKind) -> ColumnDef {
        ColumnDef {
            name: name.into(),
            kind,
            binlog_type: 0,
            meta: 0,
            unsigned: false,
            nullable: true,
            charset: Charset::Utf8,
            labels: Vec::new(),
            precision: 0,
            scale: 0,
            fsp: 0,
            length: 0,
        }
    }

    fn t(spec: &str, column: &ColumnDef) -> CompiledTransform {
        let spec = parse_transform(spec).unwrap();
        compile(&spec, column, Some(KEY)).unwrap()
    }

    fn const_err(spec: &str, column: &ColumnDef) -> String {
        compile(&parse_transform(spec).unwrap(), column, None).expect_err(spec)
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn parses_specs() {
        assert_eq!(parse_transform("null"), Ok(TransformSpec::Null));
        assert_eq!(parse_transform("NULL"), Ok(TransformSpec::Null));
        assert_eq!(parse_transform("hmac"), Ok(TransformSpec::Hmac));
        assert_eq!(parse_transform("mask:4"), Ok(TransformSpec::Mask(4)));
        assert_eq!(parse_transform("truncate:100"), Ok(TransformSpec::Truncate(100)));
        assert_eq!(
            parse_transform("const:REDACTED"),
            Ok(TransformSpec::Const("REDACTED".into()))
        );
        assert_eq!(parse_transform("const:"), Ok(TransformSpec::Const("".into())));
        assert_eq!(parse_transform("const:a:b "), Ok(TransformSpec::Const("a:b ".into())));
        for spec in ["null", "hmac", "mask:4", "truncate:0", "const:x:y"] {
            assert_eq!(parse_transform(spec).unwrap().to_string(), spec);
        }
        for (spec, msg) in [
            (
                "sha256",
                "unknown transform 'sha256'; valid transforms are null, const:<value>, hmac, mask:<N>, truncate:<N>",
            ),
            ("", "unknown transform"),
            ("mask", "mask needs a number of characters, e.g. mask:4"),
            ("mask:x", "mask:<N> needs a whole number of characters, not 'x'"),
            ("mask:-1", "whole number"),
            ("truncate:", "whole number"),
            ("hmac:sha1", "'hmac' takes no argument"),
            ("null:1", "takes no argument"),
            ("const", "const needs a value"),
        ] {
            let e = parse_transform(spec).expect_err(spec);
            assert!(e.contains(msg), "{spec}: {e}");
        }
        assert!(TransformSpec::Hmac.keeps_values_distinct());
        assert!(!TransformSpec::Mask(4).keeps_values_distinct());
        assert!(!TransformSpec::Const("x".into()).keeps_values_distinct());
    }

    #[test]
    fn null_transform() {
        let mut c = col("note", ColumnKind::Text);
        c.nullable = false;
        let n = t("null", &c);
        assert_eq!(n.apply(text("secret")), Value::Null);
        assert_eq!(n.apply(Value::Null), Value::Null);
        let out = n.output_column(&c);
        assert!(out.nullable);
        assert_eq!(out.kind, ColumnKind::Text);
        // Applies to every kind.
        t("null", &col("g", ColumnKind::Other));
    }

    #[test]
    fn const_values_follow_the_column_kind() {
        let mut tiny = col("age", ColumnKind::TinyInt);
        let c = t("const:0", &tiny);
        assert_eq!(c.apply(Value::Int(42)), Value::Int(0));
        // NULL input becomes the constant too, and the target column is NOT NULL.
        assert_eq!(c.apply(Value::Null), Value::Int(0));
        assert!(!c.output_column(&tiny).nullable);
        assert_eq!(t("const:-128", &tiny).apply(Value::Null), Value::Int(-128));
        tiny.unsigned = true;
        assert_eq!(t("const:255", &tiny).apply(Value::Null), Value::UInt(255));
        let mut big = col("id", ColumnKind::BigInt);
        big.unsigned = true;
        assert_eq!(
            t("const:18446744073709551615", &big).apply(Value::Null),
            Value::UInt(u64::MAX)
        );

        let mut price = col("price", ColumnKind::Decimal);
        price.precision = 5;
        price.scale = 2;
        assert_eq!(t("const:1.5", &price).apply(Value::Null), Value::Decimal("1.50".into()));
        assert_eq!(t("const:-0", &price).apply(Value::Null), Value::Decimal("0.00".into()));
        assert_eq!(
            t("const:-999.99", &price).apply(Value::Null),
            Value::Decimal("-999.99".into())
        );
        price.scale = 0;
        price.precision = 3;
        assert_eq!(t("const:7", &price).apply(Value::Null), Value::Decimal("7".into()));

        assert_eq!(
            t("const:0.5", &col("f", ColumnKind::Float)).apply(Value::Null),
            Value::Float(0.5)
        );
        assert_eq!(
            t("const:1e3", &col("d", ColumnKind::Double)).apply(Value::Null),
            Value::Double(1000.0)
        );
        assert_eq!(
            t("const:1900-01-01", &col("born", ColumnKind::Date)).apply(Value::Null),
            Value::Date {
                year: 1900,
                month: 1,
                day: 1
            }
        );
        assert_eq!(
            t("const:2024-01-01 10:00:00.5", &col("at", ColumnKind::DateTime)).apply(Value::Null),
            Value::DateTime {
                year: 2024,
                month: 1,
                day: 1,
                hour: 10,
                minute: 0,
                second: 0,
                micros: 500_000
            }
        );
        assert_eq!(
            t("const:2023-11-14 22:13:20", &col("ts", ColumnKind::Timestamp)).apply(Value::Null),
            Value::Timestamp {
                seconds: 1_700_000_000,
                micros: 0
            }
        );
        assert_eq!(
            t("const:-01:30", &col("dur", ColumnKind::Time)).apply(Value::Null),
            Value::Time {
                negative: true,
                hours: 1,
                minutes: 30,
                seconds: 0,
                micros: 0
            }
        );
        assert_eq!(
            t("const:2000", &col("y", ColumnKind::Year)).apply(Value::Null),
            Value::Year(2000)
        );
        let mut bit = col("b", ColumnKind::Bit);
        bit.length = 4;
        assert_eq!(t("const:15", &bit).apply(Value::Null), Value::Bit(15));

        let mut name = col("name", ColumnKind::Text);
        name.length = 4;
        let c = t("const:REDACTED", &name);
        assert_eq!(c.apply(text("Alice")), text("REDACTED"));
        assert_eq!(c.output_column(&name).length, 8);
        assert_eq!(t("const:", &name).apply(text("Alice")), text(""));
        assert_eq!(
            t("const:xx", &col("bin", ColumnKind::Binary)).apply(Value::Null),
            Value::Bytes(b"xx".to_vec())
        );
        let mut status = col("status", ColumnKind::Enum);
        status.labels = vec!["a".into(), "b".into()];
        assert_eq!(t("const:b", &status).apply(Value::Null), Value::Enum("b".into()));
        let mut set = col("tags", ColumnKind::Set);
        set.labels = vec!["x".into(), "y".into(), "z".into()];
        // Put in definition order, each label once.
        assert_eq!(t("const:z,x,z", &set).apply(Value::Null), Value::Set("x,z".into()));
        assert_eq!(t("const:", &set).apply(Value::Null), Value::Set("".into()));
        // '?' in labels from information_schema stands for a character outside the BMP.
        set.labels = vec!["x".into(), "?".into()];
        assert_eq!(t("const:🔥,x", &set).apply(Value::Null), Value::Set("x,🔥".into()));
        assert_eq!(
            t(r#"const:{"redacted":true}"#, &col("doc", ColumnKind::Json)).apply(Value::Null),
            Value::Json(r#"{"redacted":true}"#.into())
        );
    }

    #[test]
    fn const_type_errors() {
        let mut tiny = col("age", ColumnKind::TinyInt);
        let e = const_err("const:abc", &col("age", ColumnKind::Int));
        assert_eq!(
            e,
            "column `age` is INT; const value 'abc' is not an integer between -2147483648 and 2147483647"
        );
        assert!(const_err("const:128", &tiny).contains("between -128 and 127"));
        assert!(const_err("const:1.5", &tiny).contains("integer"));
        tiny.unsigned = true;
        assert!(const_err("const:-1", &tiny).contains("between 0 and 255"));
        let mut price = col("price", ColumnKind::Decimal);
        price.precision = 5;
        price.scale = 2;
        assert!(const_err("const:1.234", &price).contains("DECIMAL(5,2)"));
        assert!(const_err("const:1234", &price).contains("DECIMAL(5,2)"));
        assert!(const_err("const:cheap", &price).contains("DECIMAL(5,2)"));
        assert!(const_err("const:x", &col("f", ColumnKind::Double)).contains("DOUBLE"));
        assert!(const_err("const:1e39", &col("f", ColumnKind::Float)).contains("finite FLOAT"));
        assert!(const_err("const:2024-02-30", &col("d", ColumnKind::Date)).contains("date 'YYYY-MM-DD'"));
        assert!(const_err("const:2024-01-01 10:00", &col("d", ColumnKind::Date)).contains("date"));
        assert!(const_err("const:2024-00-01", &col("t", ColumnKind::Timestamp)).contains("UTC datetime"));
        assert!(const_err("const:yesterday", &col("dt", ColumnKind::DateTime)).contains("datetime"));
        assert!(const_err("const:1:2:3", &col("tm", ColumnKind::Time)).contains("time"));
        assert!(const_err("const:1800", &col("y", ColumnKind::Year)).contains("1901 and 2155"));
        let mut bit = col("b", ColumnKind::Bit);
        bit.length = 4;
        assert!(const_err("const:16", &bit).contains("at most 4 bits"));
        let mut status = col("status", ColumnKind::Enum);
        status.labels = vec!["a".into(), "b".into()];
        assert!(const_err("const:c", &status).contains("one of its labels ('a', 'b')"));
        let mut set = col("tags", ColumnKind::Set);
        set.labels = vec!["x".into()];
        assert!(const_err("const:x,w", &set).contains("'w' is not one"));
        assert!(const_err("const:{oops", &col("doc", ColumnKind::Json)).contains("valid JSON"));
        assert!(const_err("const:x", &col("g", ColumnKind::Other)).contains("use null instead"));
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        let hex = |key: &[u8], msg: &[u8]| hex::encode(HmacKey::new(key).mac(msg));
        assert_eq!(
            hex(&[0x0b; 20], b"Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&[0xaa; 20], &[0xdd; 50]),
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"
        );
        // A key longer than the block size is hashed first.
        assert_eq!(
            hex(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First"),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn hmac_is_deterministic_and_keyed() {
        let email = col("email", ColumnKind::Text);
        let h = t("hmac", &email);
        let a = h.apply(text("alice@example.com"));
        let Value::Text(hex_a) = &a else { panic!("{a:?}") };
        assert_eq!(hex_a.len(), 64);
        assert!(hex_a.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(hex_a, &hex::encode(HmacKey::new(KEY).mac(b"alice@example.com")));
        // Equal inputs, equal outputs, across compilations; different inputs or keys differ.
        assert_eq!(t("hmac", &email).apply(text("alice@example.com")), a);
        assert_ne!(h.apply(text("bob@example.com")), a);
        let other_key = compile(&TransformSpec::Hmac, &email, Some(b"another key, 16+ bytes")).unwrap();
        assert_ne!(other_key.apply(text("alice@example.com")), a);
        assert_eq!(h.apply(Value::Null), Value::Null);
        // Canonical forms: integers as decimal text, bytes raw, temporal values as displayed.
        let id = col("id", ColumnKind::BigInt);
        assert_eq!(t("hmac", &id).apply(Value::Int(-42)), h.apply(text("-42")));
        assert_eq!(
            t("hmac", &id).apply(Value::UInt(u64::MAX)),
            h.apply(text("18446744073709551615"))
        );
        let bin = col("b", ColumnKind::Binary);
        assert_eq!(
            t("hmac", &bin).apply(Value::Bytes(b"abc".to_vec())),
            h.apply(text("abc"))
        );
        let day = col("d", ColumnKind::Date);
        assert_eq!(
            t("hmac", &day).apply(Value::Date {
                year: 2024,
                month: 1,
                day: 2
            }),
            h.apply(text("2024-01-02"))
        );
        let price = col("p", ColumnKind::Decimal);
        assert_eq!(
            t("hmac", &price).apply(Value::Decimal("10.50".into())),
            h.apply(text("10.50"))
        );
        // Output column: utf8 text of 64 characters, nullable as the source.
        let mut key_col = col("id", ColumnKind::BigInt);
        key_col.nullable = false;
        key_col.unsigned = true;
        let out = t("hmac", &key_col).output_column(&key_col);
        assert_eq!(out.name, "id");
        assert_eq!(out.kind, ColumnKind::Text);
        assert_eq!(out.charset, Charset::Utf8);
        assert_eq!(out.length, 64);
        assert!(!out.nullable && !out.unsigned);
        assert!(t("hmac", &email).output_column(&email).nullable);
    }

    #[test]
    fn hmac_needs_a_key() {
        let email = col("email", ColumnKind::Text);
        let e = compile(&TransformSpec::Hmac, &email, None).unwrap_err();
        assert!(e.contains("hmac needs a key"), "{e}");
        let e = compile(&TransformSpec::Hmac, &email, Some(b"short")).unwrap_err();
        assert!(e.contains("too short (5 bytes)"), "{e}");
        assert!(!e.contains("short)"));
        // The key never shows in Debug.
        let h = t("hmac", &email);
        assert_eq!(format!("{h:?}"), "Hmac(<key redacted>)");
        // Other transforms ignore the key.
        compile(&TransformSpec::Mask(2), &email, None).unwrap();
    }

    #[test]
    fn mask_keeps_the_last_characters() {
        let phone = col("phone", ColumnKind::Text);
        let m4 = t("mask:4", &phone);
        assert_eq!(m4.apply(text("+1 555-123-4567")), text("***********4567"));
        assert_eq!(m4.apply(text("4567")), text("4567"));
        assert_eq!(m4.apply(text("67")), text("67"));
        assert_eq!(m4.apply(text("")), text(""));
        assert_eq!(m4.apply(Value::Null), Value::Null);
        assert_eq!(t("mask:0", &phone).apply(text("abc")), text("***"));
        // Characters, not bytes: multi-byte characters stay whole.
        assert_eq!(t("mask:2", &phone).apply(text("héllo😀")), text("****o😀"));
        assert_eq!(t("mask:1", &phone).apply(text("😀👍🏽x")), text("***x"));
        assert_eq!(t("mask:3", &phone).apply(text("Zürich")), text("***ich"));
        // Text-like variants keep their variant; binary masks bytes.
        let mut status = col("s", ColumnKind::Enum);
        status.labels = vec!["pending".into()];
        assert_eq!(
            t("mask:2", &status).apply(Value::Enum("pending".into())),
            Value::Enum("*****ng".into())
        );
        let bin = col("b", ColumnKind::Binary);
        assert_eq!(
            t("mask:1", &bin).apply(Value::Bytes(vec![1, 2, 3])),
            Value::Bytes(vec![b'*', b'*', 3])
        );
        // Undecoded text arrives as bytes.
        assert_eq!(
            m4.apply(Value::Bytes(b"123456".to_vec())),
            Value::Bytes(b"**3456".to_vec())
        );
        // Unexpected variants are dropped, not passed through.
        assert_eq!(m4.apply(Value::Int(5)), Value::Null);
        let out = m4.output_column(&phone);
        assert_eq!(out, phone);
    }

    #[test]
    fn truncate_keeps_the_first_characters() {
        let mut note = col("note", ColumnKind::Text);
        let t5 = t("truncate:5", &note);
        assert_eq!(t5.apply(text("héllo😀 world")), text("héllo"));
        assert_eq!(t("truncate:6", &note).apply(text("héllo😀 world")), text("héllo😀"));
        assert_eq!(t5.apply(text("hi")), text("hi"));
        assert_eq!(t5.apply(Value::Null), Value::Null);
        assert_eq!(t("truncate:0", &note).apply(text("abc")), text(""));
        assert_eq!(
            t("truncate:2", &col("j", ColumnKind::Json)).apply(Value::Json("[1,2]".into())),
            Value::Json("[1".into())
        );
        let bin = col("b", ColumnKind::Binary);
        assert_eq!(
            t("truncate:2", &bin).apply(Value::Bytes(vec![1, 2, 3])),
            Value::Bytes(vec![1, 2])
        );
        // The declared length follows.
        assert_eq!(t5.output_column(&note).length, 5);
        note.length = 3;
        assert_eq!(t5.output_column(&note).length, 3);
        assert_eq!(t5.output_column(&note).nullable, note.nullable);
    }

    #[test]
    fn mask_and_truncate_only_apply_to_text_and_binary() {
        for kind in [
            ColumnKind::Int,
            ColumnKind::Decimal,
            ColumnKind::Date,
            ColumnKind::Timestamp,
            ColumnKind::Other,
        ] {
            for spec in [TransformSpec::Mask(4), TransformSpec::Truncate(4)] {
                let e = compile(&spec, &col("x", kind), Some(KEY)).unwrap_err();
                assert!(e.contains("applies to text columns"), "{e}");
                assert!(e.contains(&spec.to_string()), "{e}");
            }
        }
        for kind in [
            ColumnKind::Text,
            ColumnKind::Enum,
            ColumnKind::Set,
            ColumnKind::Json,
            ColumnKind::Binary,
        ] {
            compile(&TransformSpec::Truncate(1), &col("x", kind), None).unwrap();
        }
    }
}
