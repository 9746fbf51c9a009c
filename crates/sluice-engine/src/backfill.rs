//! Backfill: copying a table's existing rows while the stream runs, exactly, without locks,
//! long transactions or writes on the source (DBLog's watermark algorithm, read-only).
//!
//! For each chunk of a table, in primary-key order (keyset pagination):
//!
//! 1. read the source's GTID position (`low`),
//! 2. `SELECT` the next rows after the last copied key (one statement, so one consistent
//!    snapshot taken somewhere between the two reads),
//! 3. read the position again (`high`).
//!
//! The chunk goes to the source reader, which holds it while the stream catches up: every
//! row of the chunk that a transaction in the window (in `high`, not in `low`) changes is
//! dropped, because the stream carries a version at least as new. Once the stream has passed
//! `high`, the remaining rows are placed into the stream right there, as upserts, with the
//! copy progress recorded in the same target transaction. The scheduler then orders them
//! against stream transactions on the same keys like any other transaction, so per-key order
//! holds and a restart resumes after the last committed chunk.
//!
//! Rows the stream changes before the backfill reaches them are applied as upserts of their
//! full row image (sluice requires `binlog_row_image=FULL`); the later chunk then carries a
//! snapshot at least as new, or drops the row if it changes again inside its window.

use std::collections::HashSet;
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use sluice_binlog::{ColumnDef, ColumnKind, GtidPosition, TableDef, Value};

use crate::filter::TablePlan;
use crate::schedule::{key_hash, KeyHash};
use crate::target::{BackfillProgress, RowOp};

/// Rows per chunk unless configured otherwise.
pub const DEFAULT_CHUNK_ROWS: usize = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("backfill of {table}: source query failed: {message}")]
    Query { table: String, message: String },
    #[error("backfill of {table}: the stored progress is unreadable; delete its row from _sluice_backfill to restart the copy")]
    BadProgress { table: String },
    #[error("backfill of {table}: column {column} came back as an unexpected kind of value")]
    Value { table: String, column: String },
}

/// Messages from a backfill task to the source reader.
#[derive(Debug)]
pub enum BackfillMsg {
    /// Open the watermark window for the next chunk of a table: from now on the reader notes
    /// which of the table's keys the stream changes. Replied to once the window is open; the
    /// chunk's `SELECT` starts after that, so the window's start is before its snapshot.
    Open {
        plan: Arc<TablePlan>,
        reply: tokio::sync::oneshot::Sender<()>,
    },
    /// The chunk read inside the open window.
    Chunk(Chunk),
}

/// A chunk of source rows and the source position read right after its `SELECT` (the end of
/// its watermark window; the window started when the reader opened it).
#[derive(Debug)]
pub struct Chunk {
    pub plan: Arc<TablePlan>,
    pub high: GtidPosition,
    /// Full source row images, in key order.
    pub rows: Vec<Vec<Value>>,
    /// The key of the last row read (progress), encoded.
    pub last_key: Option<String>,
    /// No rows follow this chunk.
    pub done: bool,
    /// Rows read so far for this table, this chunk included.
    pub rows_copied: u64,
}

impl Chunk {
    /// Drops the rows whose source key is in `touched`.
    pub fn drop_touched(&mut self, touched: &HashSet<KeyHash>) {
        let table = self.plan.source.qualified_name();
        let key = &self.plan.source.primary_key;
        self.rows.retain(|r| !touched.contains(&key_hash(&table, key, r)));
    }
}

impl Chunk {
    /// The chunk as target row changes (through the table's filter and transforms) and the
    /// progress to record with them.
    pub fn into_apply(self) -> (Vec<RowOp>, BackfillProgress) {
        let plan = self.plan;
        let ops = self
            .rows
            .into_iter()
            .filter(|r| plan.passes(r))
            .map(|r| RowOp::Insert {
                table: plan.target.clone(),
                row: plan.project(r),
            })
            .collect();
        let progress = BackfillProgress {
            table: plan.target.name.clone(),
            done: self.done,
            last_key: self.last_key,
            rows_copied: self.rows_copied,
        };
        (ops, progress)
    }
}

/// Where a table's copy starts.
#[derive(Debug, Clone)]
pub struct BackfillJob {
    pub plan: Arc<TablePlan>,
    pub last_key: Option<String>,
    pub rows_copied: u64,
}

pub(crate) fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The keyset condition `(k1, k2, …) > (?, ?, …)` spelt out so that MariaDB uses the key's
/// index: `k1 > ? OR (k1 = ? AND k2 > ?) OR …`. Returns the SQL and the order the last key's
/// values must be bound in.
pub(crate) fn after_key(keys: &[String]) -> (String, Vec<usize>) {
    let mut terms = Vec::new();
    let mut order = Vec::new();
    for i in 0..keys.len() {
        let mut parts = Vec::new();
        for (j, k) in keys.iter().enumerate().take(i) {
            parts.push(format!("{k} = ?"));
            order.push(j);
        }
        parts.push(format!("{} > ?", keys[i]));
        order.push(i);
        terms.push(format!("({})", parts.join(" AND ")));
    }
    (terms.join(" OR "), order)
}

/// Encodes a key for the progress record: a JSON array of numbers, strings and `{"hex": …}`.
pub fn encode_key(values: &[mysql_async::Value]) -> String {
    use mysql_async::Value as M;
    let items: Vec<serde_json::Value> = values
        .iter()
        .map(|v| match v {
            M::Int(i) => serde_json::json!(i),
            M::UInt(u) => serde_json::json!(u),
            M::Bytes(b) => serde_json::json!({ "hex": hex::encode(b) }),
            other => serde_json::json!(other.as_sql(true).trim_matches('\'').to_owned()),
        })
        .collect();
    serde_json::Value::Array(items).to_string()
}

pub fn decode_key(text: &str) -> Option<Vec<mysql_async::Value>> {
    use mysql_async::Value as M;
    let parsed: serde_json::Value = serde_json::from_str(text).ok()?;
    parsed
        .as_array()?
        .iter()
        .map(|v| match v {
            serde_json::Value::Number(n) if n.is_i64() => n.as_i64().map(M::Int),
            serde_json::Value::Number(n) => n.as_u64().map(M::UInt),
            serde_json::Value::String(s) => Some(M::Bytes(s.clone().into_bytes())),
            serde_json::Value::Object(o) => o.get("hex")?.as_str().and_then(|h| hex::decode(h).ok()).map(M::Bytes),
            _ => None,
        })
        .collect()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Converts a value of the binary protocol into sluice's value for `column`, the same value
/// the binlog decoder produces for it. The session runs with `time_zone = '+00:00'`, so
/// TIMESTAMPs arrive in UTC.
pub(crate) fn convert(v: mysql_async::Value, column: &ColumnDef) -> Option<Value> {
    use mysql_async::Value as M;
    Some(match (v, column.kind) {
        (M::NULL, _) => Value::Null,
        (M::Int(i), ColumnKind::Year) => Value::Year(i as u16),
        (M::UInt(u), ColumnKind::Year) => Value::Year(u as u16),
        (M::Int(i), k) if k.is_integer() => {
            if column.unsigned {
                Value::UInt(i as u64)
            } else {
                Value::Int(i)
            }
        }
        (M::UInt(u), k) if k.is_integer() => {
            if column.unsigned {
                Value::UInt(u)
            } else {
                Value::Int(u as i64)
            }
        }
        (M::Int(i), ColumnKind::Bit) => Value::Bit(i as u64),
        (M::UInt(u), ColumnKind::Bit) => Value::Bit(u),
        (M::Bytes(b), ColumnKind::Bit) => Value::Bit(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x))),
        (M::Float(f), ColumnKind::Float) => Value::Float(f),
        (M::Double(d), ColumnKind::Float) => Value::Float(d as f32),
        (M::Double(d), ColumnKind::Double) => Value::Double(d),
        (M::Float(f), ColumnKind::Double) => Value::Double(f64::from(f)),
        (M::Bytes(b), ColumnKind::Decimal) => Value::Decimal(String::from_utf8(b).ok()?),
        (M::Bytes(b), ColumnKind::Text | ColumnKind::Json) => match String::from_utf8(b) {
            Ok(s) => Value::Text(s),
            Err(e) => Value::Bytes(e.into_bytes()),
        },
        (M::Bytes(b), ColumnKind::Enum) => Value::Enum(String::from_utf8(b).ok()?),
        (M::Bytes(b), ColumnKind::Set) => Value::Set(String::from_utf8(b).ok()?),
        (M::Bytes(b), ColumnKind::Binary | ColumnKind::Other) => Value::Bytes(b),
        (M::Date(y, mo, d, _, _, _, _), ColumnKind::Date) => Value::Date {
            year: y,
            month: mo,
            day: d,
        },
        (M::Date(y, mo, d, h, mi, s, us), ColumnKind::DateTime) => Value::DateTime {
            year: y,
            month: mo,
            day: d,
            hour: h,
            minute: mi,
            second: s,
            micros: us,
        },
        (M::Date(y, mo, d, h, mi, s, us), ColumnKind::Timestamp) => {
            if y == 0 {
                Value::Timestamp { seconds: 0, micros: 0 }
            } else {
                let days = days_from_civil(i64::from(y), i64::from(mo), i64::from(d));
                let seconds = days * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s);
                Value::Timestamp { seconds, micros: us }
            }
        }
        (M::Time(neg, days, h, mi, s, us), ColumnKind::Time) => Value::Time {
            negative: neg,
            hours: days * 24 + u32::from(h),
            minutes: mi,
            seconds: s,
            micros: us,
        },
        _ => return None,
    })
}

/// Session settings for reading source rows (backfill and verification): UTC for
/// TIMESTAMPs; READ COMMITTED so that no snapshot outlives its statement.
pub(crate) const READ_SESSION: [&str; 3] = [
    "SET NAMES utf8mb4",
    "SET time_zone = '+00:00'",
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
];

/// A table's keyset-paginated chunk query (primary-key order), shared by backfill and
/// verification.
pub(crate) struct KeysetQuery {
    /// Every column, quoted and joined.
    pub columns: String,
    /// The quoted primary key columns, in key order.
    pub keys: Vec<String>,
    /// `schema`.`table`, quoted.
    pub from: String,
    /// The first chunk.
    first: String,
    /// The chunk after a key, bound in `bind_order`.
    next: String,
    bind_order: Vec<usize>,
}

impl KeysetQuery {
    pub(crate) fn new(def: &TableDef, chunk_rows: usize) -> Self {
        let columns = def
            .columns
            .iter()
            .map(|c| quote(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let keys: Vec<String> = def.primary_key.iter().map(|&i| quote(&def.columns[i].name)).collect();
        let from = format!("{}.{}", quote(&def.schema), quote(&def.name));
        let order = keys.join(", ");
        let first = format!("SELECT {columns} FROM {from} ORDER BY {order} LIMIT {chunk_rows}");
        let (condition, bind_order) = after_key(&keys);
        let next = format!("SELECT {columns} FROM {from} WHERE {condition} ORDER BY {order} LIMIT {chunk_rows}");
        KeysetQuery {
            columns,
            keys,
            from,
            first,
            next,
            bind_order,
        }
    }

    /// The rows of the chunk after `after` (from the first row when `None`).
    pub(crate) async fn chunk(
        &self,
        conn: &mut mysql_async::Conn,
        after: Option<&[mysql_async::Value]>,
    ) -> Result<Vec<mysql_async::Row>, mysql_async::Error> {
        match after {
            None => conn.exec(self.first.as_str(), ()).await,
            Some(k) => {
                let params: Vec<mysql_async::Value> = self.bind_order.iter().map(|&i| k[i].clone()).collect();
                conn.exec(self.next.as_str(), params).await
            }
        }
    }
}

/// A source row of the binary protocol as sluice values (the same the binlog decoder gives),
/// with its primary key as the source binds it; `Err` names the column that came back as an
/// unexpected kind of value.
pub(crate) fn convert_row(
    def: &TableDef,
    row: mysql_async::Row,
) -> Result<(Vec<mysql_async::Value>, Vec<Value>), String> {
    let values = row.unwrap();
    let key = def.primary_key.iter().map(|&i| values[i].clone()).collect();
    let converted = values
        .into_iter()
        .zip(&def.columns)
        .map(|(v, c)| convert(v, c).ok_or_else(|| c.name.clone()))
        .collect::<Result<Vec<Value>, String>>()?;
    Ok((key, converted))
}

/// Reads one table chunk by chunk and hands each to the reader. Returns when the table is
/// copied, or the reader went away.
pub async fn copy_table(
    pool: &mysql_async::Pool,
    job: BackfillJob,
    chunk_rows: usize,
    tx: &tokio::sync::mpsc::Sender<BackfillMsg>,
) -> Result<(), BackfillError> {
    let def = &job.plan.source;
    let table = def.qualified_name();
    let query_err = |e: mysql_async::Error| BackfillError::Query {
        table: table.clone(),
        message: e.to_string(),
    };
    let mut conn = pool.get_conn().await.map_err(query_err)?;
    for setting in READ_SESSION {
        conn.query_drop(setting).await.map_err(query_err)?;
    }
    let query = KeysetQuery::new(def, chunk_rows);
    let mut last_key: Option<Vec<mysql_async::Value>> = match &job.last_key {
        Some(text) => Some(decode_key(text).ok_or(BackfillError::BadProgress { table: table.clone() })?),
        None => None,
    };
    let mut rows_copied = job.rows_copied;
    loop {
        let (reply, opened) = tokio::sync::oneshot::channel();
        if tx
            .send(BackfillMsg::Open {
                plan: job.plan.clone(),
                reply,
            })
            .await
            .is_err()
            || opened.await.is_err()
        {
            return Ok(());
        }
        let raw = query.chunk(&mut conn, last_key.as_deref()).await.map_err(query_err)?;
        let high: String = conn
            .query_first("SELECT @@global.gtid_binlog_pos")
            .await
            .map_err(query_err)?
            .unwrap_or_default();
        let done = raw.len() < chunk_rows;
        let mut rows = Vec::with_capacity(raw.len());
        for row in raw {
            let (key, converted) = convert_row(def, row).map_err(|column| BackfillError::Value {
                table: table.clone(),
                column,
            })?;
            last_key = Some(key);
            rows.push(converted);
        }
        rows_copied += rows.len() as u64;
        let chunk = Chunk {
            plan: job.plan.clone(),
            high: high.parse().map_err(|_| BackfillError::Query {
                table: table.clone(),
                message: "bad gtid_binlog_pos".into(),
            })?,
            rows,
            last_key: last_key.as_deref().map(encode_key),
            done,
            rows_copied,
        };
        if tx.send(BackfillMsg::Chunk(chunk)).await.is_err() || done {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyset_condition_for_composite_keys() {
        let (sql, order) = after_key(&["`a`".into(), "`b`".into(), "`c`".into()]);
        assert_eq!(
            sql,
            "(`a` > ?) OR (`a` = ? AND `b` > ?) OR (`a` = ? AND `b` = ? AND `c` > ?)"
        );
        assert_eq!(order, vec![0, 0, 1, 0, 1, 2]);
    }

    #[test]
    fn keys_round_trip_through_progress_text() {
        use mysql_async::Value as M;
        let key = vec![M::Int(-5), M::UInt(u64::MAX), M::Bytes(b"it's \\ \"q\" \xff".to_vec())];
        let text = encode_key(&key);
        let back = decode_key(&text).unwrap();
        assert_eq!(back[0], M::Int(-5));
        assert_eq!(back[1], M::UInt(u64::MAX));
        assert_eq!(back[2], M::Bytes(b"it's \\ \"q\" \xff".to_vec()));
    }

    #[test]
    fn timestamps_convert_to_unix_seconds() {
        let mut c = ColumnDef {
            name: "t".into(),
            kind: ColumnKind::Timestamp,
            binlog_type: 17,
            meta: 0,
            unsigned: false,
            nullable: true,
            charset: sluice_binlog::Charset::Binary,
            labels: vec![],
            precision: 0,
            scale: 0,
            fsp: 0,
            length: 0,
        };
        let v = convert(mysql_async::Value::Date(2023, 11, 14, 22, 13, 20, 120), &c).unwrap();
        assert_eq!(
            v,
            Value::Timestamp {
                seconds: 1_700_000_000,
                micros: 120
            }
        );
        c.kind = ColumnKind::DateTime;
        let v = convert(mysql_async::Value::Date(0, 0, 0, 0, 0, 0, 0), &c).unwrap();
        assert_eq!(v.to_string(), "0000-00-00 00:00:00");
    }
}
