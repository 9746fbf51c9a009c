//! A chunk's read snapshot, proven to hold every transaction the stream had passed when the
//! chunk's window opened.
//!
//! Why this is needed: MariaDB hands a transaction to the binlog dump threads when it is
//! written to the binlog, *before* InnoDB makes it visible to other sessions (the engine
//! commit follows the binlog write). So the reader can pass a transaction T, open a chunk's
//! window (T is not among the window's touched keys: it came before), and the chunk's
//! `SELECT` can still read the rows as they were before T. Placed after T, such a chunk would
//! overwrite T's changes with older values: lost data, found by `verify` only.
//!
//! The fix (MariaDB): the reader tells the backfill where in the binlog the stream stood when the
//! window opened (the end of the last whole transaction it had passed, see
//! [`BinlogCoord`]), and the chunk is read in `START TRANSACTION WITH CONSISTENT SNAPSHOT`,
//! whose binlog position MariaDB reports (`Binlog_snapshot_file` / `Binlog_snapshot_position`,
//! taken under the same lock as the engine commits, so the snapshot holds exactly the
//! transactions up to it). A snapshot short of the stream's position is let go and taken
//! again a moment later, once the engine commits have caught up (usually microseconds).
//!
//! MySQL reports no snapshot position, but it adds a transaction to `gtid_executed` only once
//! the engine has committed it: the snapshot is taken after
//! `WAIT_FOR_EXECUTED_GTID_SET(<the stream's set when the window opened>)` returns.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

/// Give up on a snapshot that never reaches the stream's position after this long (the
/// engine commits of transactions already in the binlog normally take microseconds; this
/// many seconds means something is wrong at the source).
const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(120);

/// Longest pause between two snapshot attempts.
const SNAPSHOT_RETRY_MAX: Duration = Duration::from_millis(50);

/// A place in the source's binlog: the file's sequence number (the numeric extension every
/// MariaDB and MySQL binlog file name ends with) and a byte offset in it. Ordered as the
/// binlog is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BinlogCoord {
    pub file_seq: u64,
    pub offset: u64,
}

impl BinlogCoord {
    /// The sequence number of a binlog file name (`mariadb-bin.000042` → 42), a path or not.
    pub fn file_seq(file: &str) -> Option<u64> {
        file.rsplit_once('.')?.1.parse().ok()
    }
}

impl std::fmt::Display for BinlogCoord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "file #{} offset {}", self.file_seq, self.offset)
    }
}

/// Why no snapshot could be taken.
#[derive(Debug)]
pub enum SnapshotError {
    Sql(mysql_async::Error),
    /// The server did not report its snapshot's binlog position (binlog off, or a server
    /// that has no such status variable).
    NoPosition,
    /// Every snapshot until the deadline was short of where the stream stood.
    Behind {
        stream: BinlogCoord,
        snapshot: BinlogCoord,
    },
    /// MySQL's `gtid_executed` did not reach the stream's set before the deadline.
    GtidsNotExecuted,
}

impl From<mysql_async::Error> for SnapshotError {
    fn from(e: mysql_async::Error) -> Self {
        SnapshotError::Sql(e)
    }
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotError::Sql(e) => f.write_str(&crate::source_rows::error_text(e)),
            SnapshotError::NoPosition => f.write_str(
                "the source did not report Binlog_snapshot_file/Binlog_snapshot_position for a consistent snapshot \
                 (is the binlog on?); without it a chunk could miss transactions the stream already passed",
            ),
            SnapshotError::Behind { stream, snapshot } => write!(
                f,
                "the source's consistent snapshots stayed behind the binlog position the stream had passed \
                 ({snapshot} < {stream}) for {} s: transactions written to the binlog are not becoming visible \
                 (a stuck commit at the source?)",
                SNAPSHOT_DEADLINE.as_secs()
            ),
            SnapshotError::GtidsNotExecuted => write!(
                f,
                "the source's gtid_executed did not reach the transactions the stream had passed within {} s \
                 (a stuck commit at the source?)",
                SNAPSHOT_DEADLINE.as_secs()
            ),
        }
    }
}

/// Opens a read-only consistent-snapshot transaction on `conn` that holds every transaction
/// the stream had passed when `window` opened. The caller reads, then ends it with `COMMIT`.
pub async fn begin(
    conn: &mut mysql_async::Conn,
    flavor: sluice_binlog::SourceFlavor,
    window: &super::WindowStart,
) -> Result<(), SnapshotError> {
    match flavor {
        sluice_binlog::SourceFlavor::MariaDb => begin_at_binlog_position(conn, window.stream_at).await,
        sluice_binlog::SourceFlavor::Mysql => {
            if !window.passed.is_empty() {
                // Sent as text: the set is sluice's own GTID-set text (checked to hold nothing
                // but UUIDs, tags, numbers and separators), not data.
                let set = window.passed.to_string();
                if !set
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | ',' | '_'))
                {
                    return Err(SnapshotError::GtidsNotExecuted);
                }
                let waited: Option<i64> = conn
                    .query_first(format!(
                        "SELECT WAIT_FOR_EXECUTED_GTID_SET('{set}', {})",
                        SNAPSHOT_DEADLINE.as_secs()
                    ))
                    .await?;
                if waited != Some(0) {
                    return Err(SnapshotError::GtidsNotExecuted);
                }
            }
            start_snapshot(conn).await
        }
    }
}

async fn start_snapshot(conn: &mut mysql_async::Conn) -> Result<(), SnapshotError> {
    // The session reads in READ COMMITTED (no snapshot outlives its statement); this one
    // transaction needs REPEATABLE READ so that its statements share the snapshot.
    conn.query_drop("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await?;
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await?;
    Ok(())
}

/// MariaDB: a snapshot at or past `stream` (`None`: the stream has passed no transaction on
/// this connection yet, so any snapshot will do).
async fn begin_at_binlog_position(
    conn: &mut mysql_async::Conn,
    stream: Option<BinlogCoord>,
) -> Result<(), SnapshotError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        start_snapshot(conn).await?;
        let status: Vec<(String, String)> = conn.query("SHOW SESSION STATUS LIKE 'Binlog_snapshot_%'").await?;
        let Some(snapshot) = snapshot_position(&status) else {
            conn.query_drop("COMMIT").await?;
            return Err(SnapshotError::NoPosition);
        };
        let Some(stream) = stream else { return Ok(()) };
        if snapshot >= stream {
            return Ok(());
        }
        conn.query_drop("COMMIT").await?;
        if started.elapsed() > SNAPSHOT_DEADLINE {
            return Err(SnapshotError::Behind { stream, snapshot });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(SNAPSHOT_RETRY_MAX);
    }
}

/// The snapshot's binlog place from `SHOW STATUS LIKE 'Binlog_snapshot_%'` rows.
fn snapshot_position(status: &[(String, String)]) -> Option<BinlogCoord> {
    let value = |name: &str| {
        status
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    Some(BinlogCoord {
        file_seq: BinlogCoord::file_seq(value("Binlog_snapshot_file")?)?,
        offset: value("Binlog_snapshot_position")?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binlog_coordinates_order_by_file_then_offset() {
        assert_eq!(BinlogCoord::file_seq("mariadb-bin.000042"), Some(42));
        assert_eq!(BinlogCoord::file_seq("./data/my.bin.1000000"), Some(1_000_000));
        assert_eq!(BinlogCoord::file_seq("binlog"), None);
        assert_eq!(BinlogCoord::file_seq("binlog.idx"), None);
        let at = |file_seq, offset| BinlogCoord { file_seq, offset };
        assert!(at(2, 4) > at(1, 900_000));
        assert!(at(2, 400) > at(2, 399));
        assert!(at(2, 400) >= at(2, 400));
    }
}
