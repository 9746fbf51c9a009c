//! Reading the source with SQL (preflight, backfill, verification, the lag heartbeat): the
//! connection options, the read session, the keyset-paginated chunk query, and the
//! conversion of binary-protocol values into the same [`Value`]s the binlog decoder gives.
//! The MariaDB target reads its own rows back through the same conversion.

use mysql_async::prelude::Queryable;
use sluice_binlog::tls::{TlsMode, TlsSettings};

use crate::config::{Config, ConfigError};
use sluice_binlog::value::days_from_civil;
use sluice_binlog::{ColumnDef, ColumnKind, SourceFlavor, SourcePosition, TableDef, Value};

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
                let days = days_from_civil(i64::from(y), u32::from(mo), u32::from(d));
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

/// The source's flavour, from its version string (`SELECT @@version`).
pub async fn source_flavor(conn: &mut mysql_async::Conn) -> Result<SourceFlavor, mysql_async::Error> {
    let version: String = conn.query_first("SELECT @@version").await?.unwrap_or_default();
    Ok(SourceFlavor::from_server_version(&version))
}

/// The variable holding what the source has committed: MariaDB's `gtid_binlog_pos` (the last
/// GTID per domain), MySQL's `gtid_executed` (the set of every transaction).
pub fn position_variable(flavor: SourceFlavor) -> &'static str {
    match flavor {
        SourceFlavor::MariaDb => "gtid_binlog_pos",
        SourceFlavor::Mysql => "gtid_executed",
    }
}

/// The source's position now ([`position_variable`]). `Ok(Err(text))` when the server answered
/// with a text that is not a position of its flavour (the caller names it in its own error).
pub async fn read_position(
    conn: &mut mysql_async::Conn,
    flavor: SourceFlavor,
) -> Result<Result<SourcePosition, String>, mysql_async::Error> {
    let text: String = conn
        .query_first(format!("SELECT @@global.{}", position_variable(flavor)))
        .await?
        .unwrap_or_default();
    Ok(parse_position(&text, flavor))
}

/// A position read from the source, in its flavour (MySQL prints long sets over several
/// lines).
pub fn parse_position(text: &str, flavor: SourceFlavor) -> Result<SourcePosition, String> {
    let text = text.replace('\n', "");
    text.parse::<SourcePosition>()
        .ok()
        .and_then(|p| p.for_flavor(flavor).ok())
        .ok_or_else(|| format!("unreadable @@global.{} {text:?}", position_variable(flavor)))
}

/// A source SQL error as one plain sentence: the server's message with its error code, or
/// the operating system's reason for a network failure. `mysql_async`'s own text repeats
/// its prefixes ("Input/output error: Input/output error: Connection refused") and quotes
/// server messages in backticks.
pub fn error_text(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => format!("{} (error {})", s.message, s.code),
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => io.to_string(),
        mysql_async::Error::Io(mysql_async::IoError::Tls(tls)) => format!("TLS: {tls}"),
        mysql_async::Error::Driver(d) => d.to_string(),
        mysql_async::Error::Other(o) => o.to_string(),
        mysql_async::Error::Url(u) => u.to_string(),
    }
}

/// Connection options for the source's SQL connections, with the config's credentials and
/// TLS.
pub fn source_opts(config: &Config) -> Result<mysql_async::OptsBuilder, ConfigError> {
    let password = config.source_password()?;
    Ok(mysql_async::OptsBuilder::default()
        .ip_or_hostname(config.source.host.clone())
        .tcp_port(config.source.port)
        .user(Some(config.source.user.clone()))
        .pass(Some(password.expose().to_owned()))
        .prefer_socket(false)
        .ssl_opts(mysql_async_tls(&config.source.tls())))
}

/// The TLS settings as `mysql_async` takes them (`None`: plaintext).
fn mysql_async_tls(tls: &TlsSettings) -> Option<mysql_async::SslOpts> {
    if !tls.enabled() {
        return None;
    }
    let mut opts = mysql_async::SslOpts::default();
    if let Some(ca) = &tls.ca_file {
        opts = opts.with_root_certs(vec![ca.clone().into()]);
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        opts = opts.with_client_identity(Some(mysql_async::ClientIdentity::new(
            cert.clone().into(),
            key.clone().into(),
        )));
    }
    Some(match tls.mode {
        TlsMode::Required => opts.with_danger_accept_invalid_certs(true),
        // `verify_ca` checks the host name too on these connections: the client crate's
        // "skip domain validation" looks for rustls's old `NotValidForName` error and misses
        // the `NotValidForNameContext` rustls 0.23 now returns, so it cannot skip only the
        // name. Stricter, never weaker; the replication stream and PostgreSQL check the chain
        // only (`sluice_binlog::tls`).
        TlsMode::VerifyCa | TlsMode::VerifyIdentity | TlsMode::Disabled => opts,
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
    let key = source_key(def, &row);
    Ok((key, convert_values(def, row)?))
}

/// A source row's primary key as the source binds it (for the next keyset read).
pub(crate) fn source_key(def: &TableDef, row: &mysql_async::Row) -> Vec<mysql_async::Value> {
    def.primary_key
        .iter()
        .map(|&i| row.as_ref(i).cloned().unwrap_or(mysql_async::Value::NULL))
        .collect()
}

/// A source row of the binary protocol as sluice values; `Err` names the column that came
/// back as an unexpected kind of value.
pub(crate) fn convert_values(def: &TableDef, row: mysql_async::Row) -> Result<Vec<Value>, String> {
    row.unwrap()
        .into_iter()
        .zip(&def.columns)
        .map(|(v, c)| convert(v, c).ok_or_else(|| c.name.clone()))
        .collect()
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
