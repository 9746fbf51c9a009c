//! Typed column values as decoded from row images.
//!
//! The representation is engine-neutral: temporal values keep their calendar fields (no time
//! zone is applied to DATETIME; TIMESTAMP is an instant since the Unix epoch in UTC), DECIMAL
//! keeps its exact text, and text is valid UTF-8 regardless of the source character set.

use std::fmt;

/// One column value of a row image. Serializable for logs that carry rows between
/// processes (sluice's fan-out log).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Value {
    Null,
    /// Any signed integer type (TINYINT … BIGINT).
    Int(i64),
    /// Any unsigned integer type (TINYINT UNSIGNED … BIGINT UNSIGNED).
    UInt(u64),
    Float(f32),
    Double(f64),
    /// DECIMAL as exact text, with exactly `scale` digits after the point (e.g. `-12.340`).
    Decimal(String),
    /// DATE; zero dates (`0000-00-00`) and partial zero dates are kept as they are.
    Date {
        year: u16,
        month: u8,
        day: u8,
    },
    /// TIME, a signed duration that may exceed 24 hours (-838:59:59 … 838:59:59).
    Time {
        negative: bool,
        hours: u32,
        minutes: u8,
        seconds: u8,
        micros: u32,
    },
    /// DATETIME: wall-clock fields, no time zone.
    DateTime {
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
        micros: u32,
    },
    /// TIMESTAMP: seconds and microseconds since 1970-01-01 00:00:00 UTC. `0` is the zero
    /// timestamp `0000-00-00 00:00:00`.
    Timestamp {
        seconds: i64,
        micros: u32,
    },
    Year(u16),
    /// Character data decoded to UTF-8 from its column character set.
    Text(String),
    /// Binary strings and BLOBs, and character data whose charset sluice does not decode.
    Bytes(Vec<u8>),
    /// ENUM label ('' for the invalid value 0).
    Enum(String),
    /// SET labels in definition order, joined with ','.
    Set(String),
    /// BIT(n) as an unsigned integer.
    Bit(u64),
    /// JSON as compact text (MySQL binary JSON is converted; MariaDB stores JSON as text).
    Json(String),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A short name of the value's kind, safe to log: it never contains the value itself.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Int(_) => "int",
            Value::UInt(_) => "uint",
            Value::Float(_) => "float",
            Value::Double(_) => "double",
            Value::Decimal(_) => "decimal",
            Value::Date { .. } => "date",
            Value::Time { .. } => "time",
            Value::DateTime { .. } => "datetime",
            Value::Timestamp { .. } => "timestamp",
            Value::Year(_) => "year",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
            Value::Enum(_) => "enum",
            Value::Set(_) => "set",
            Value::Bit(_) => "bit",
            Value::Json(_) => "json",
        }
    }
}

fn write_micros(f: &mut fmt::Formatter<'_>, micros: u32) -> fmt::Result {
    if micros != 0 {
        write!(f, ".{micros:06}")?;
    }
    Ok(())
}

/// Canonical text form, as MySQL prints the value (used for SQLite storage of temporal types
/// and for JSON output). Fractional seconds are printed only when non-zero.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Int(v) => write!(f, "{v}"),
            Value::UInt(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v}"),
            Value::Double(v) => write!(f, "{v}"),
            Value::Decimal(v) => f.write_str(v),
            Value::Date { year, month, day } => write!(f, "{year:04}-{month:02}-{day:02}"),
            Value::Time {
                negative,
                hours,
                minutes,
                seconds,
                micros,
            } => {
                if *negative {
                    f.write_str("-")?;
                }
                write!(f, "{hours:02}:{minutes:02}:{seconds:02}")?;
                write_micros(f, *micros)
            }
            Value::DateTime {
                year,
                month,
                day,
                hour,
                minute,
                second,
                micros,
            } => {
                write!(f, "{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}")?;
                write_micros(f, *micros)
            }
            Value::Timestamp { seconds, micros } => {
                if *seconds == 0 && *micros == 0 {
                    return f.write_str("0000-00-00 00:00:00");
                }
                let (y, mo, d, h, mi, s) = civil_from_unix(*seconds);
                write!(f, "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")?;
                write_micros(f, *micros)
            }
            Value::Year(v) => write!(f, "{v:04}"),
            Value::Text(v) | Value::Enum(v) | Value::Set(v) | Value::Json(v) => f.write_str(v),
            Value::Bytes(v) => {
                for b in v {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
            Value::Bit(v) => write!(f, "{v}"),
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date, after Howard Hinnant's
/// `days_from_civil` (the inverse of [`civil_from_unix`]'s date part).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Converts Unix seconds to a UTC civil date and time (proleptic Gregorian), after
/// Howard Hinnant's `civil_from_days`.
pub fn civil_from_unix(seconds: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = seconds.div_euclid(86_400);
    let secs_of_day = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (secs_of_day / 3600) as u32,
        (secs_of_day % 3600 / 60) as u32,
        (secs_of_day % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_prints_in_utc() {
        let v = Value::Timestamp {
            seconds: 1_700_000_000,
            micros: 120,
        };
        assert_eq!(v.to_string(), "2023-11-14 22:13:20.000120");
        assert_eq!(
            Value::Timestamp { seconds: 0, micros: 0 }.to_string(),
            "0000-00-00 00:00:00"
        );
        assert_eq!(
            Value::Timestamp {
                seconds: 951_782_400,
                micros: 0
            }
            .to_string(),
            "2000-02-29 00:00:00"
        );
    }

    #[test]
    fn time_prints_sign_and_hours_beyond_a_day() {
        let v = Value::Time {
            negative: true,
            hours: 838,
            minutes: 59,
            seconds: 59,
            micros: 0,
        };
        assert_eq!(v.to_string(), "-838:59:59");
    }
}
