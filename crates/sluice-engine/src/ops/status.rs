//! `sluice status`: where replication stands, read from the target (the checkpoint lives
//! there) and compared with the source.

use std::time::{SystemTime, UNIX_EPOCH};

use mysql_async::prelude::Queryable;
use sluice_binlog::GtidPosition;

use crate::config::Config;
use crate::pipeline::{read_checkpoint, source_pool, RunError};

#[derive(Debug, serde::Serialize)]
pub struct StatusReport {
    pub target: String,
    /// The applied checkpoint's low-water mark (GTID position), `None` before the first start.
    pub checkpoint: Option<String>,
    /// GTIDs applied beyond the low-water mark (parallel writers commit out of order).
    pub applied_beyond: Vec<String>,
    /// Incremental verification: every transaction at or before this position is applied
    /// and its rows were read back and found as written. `None` when it never ran.
    pub verified: Option<String>,
    /// Rows read back different from what sluice wrote (since the target was created).
    pub verify_mismatches: u64,
    /// Transactions too large to be read back whole (left to `sluice verify`).
    pub verify_unchecked_txns: u64,
    pub tables: Vec<TableStatus>,
    /// The source's current binlog position, when it could be reached.
    pub source_position: Option<String>,
    pub source_error: Option<String>,
    /// Whether the checkpoint covers everything in the source's binlog.
    pub caught_up: Option<bool>,
    /// Seconds between now and the commit time of the last applied source transaction, when
    /// behind; 0 when caught up. Event timestamps have 1-second resolution.
    pub lag_seconds: Option<u64>,
    /// Where the lag percentiles come from: `heartbeat` (microsecond heartbeat rows) or
    /// `event-timestamps` (the fallback, 1-second resolution); `None` before any was recorded.
    pub lag_source: Option<&'static str>,
    /// Lag percentiles over the last window, as recorded by the running sluice.
    pub lag: Option<crate::ops::lag::LagReport>,
}

#[derive(Debug, serde::Serialize)]
pub struct TableStatus {
    pub target: String,
    /// Source `schema.table`, when the target records it (SQLite).
    pub source: String,
    /// Rows in the target table (counted on SQLite targets only, where it is cheap).
    pub rows: Option<u64>,
    /// Copy of the existing rows: `pending`, `copying`, `copying-columns` (a column-only
    /// copy: `backfill_columns` are not ready yet), `failed` (see `backfill_error`) or `ready`.
    pub backfill: String,
    pub backfill_rows_copied: u64,
    /// The source's row estimate when the copy started.
    pub backfill_rows_estimate: u64,
    /// Copy speed as last recorded by the running sluice.
    pub backfill_rows_per_s: u64,
    /// Estimated seconds to finish at that speed (while copying).
    pub backfill_eta_s: Option<u64>,
    /// Columns being filled by a column-only copy (not ready until it is done).
    pub backfill_columns: Vec<String>,
    /// Why the copy failed.
    pub backfill_error: Option<String>,
}

impl TableStatus {
    fn new(target: String, source: String, rows: Option<u64>) -> Self {
        TableStatus {
            target,
            source,
            rows,
            backfill: String::new(),
            backfill_rows_copied: 0,
            backfill_rows_estimate: 0,
            backfill_rows_per_s: 0,
            backfill_eta_s: None,
            backfill_columns: Vec::new(),
            backfill_error: None,
        }
    }

    fn set_backfill(&mut self, progress: Option<&crate::target::BackfillProgress>) {
        let Some(p) = progress else {
            self.backfill = "pending".into();
            return;
        };
        self.backfill = match (p.done, &p.error, p.columns.is_empty()) {
            // Left the config: no longer updated (copied afresh if it comes back).
            _ if p.stale => "stale",
            (true, _, _) => "ready",
            (false, Some(_), _) => "failed",
            (false, None, true) => "copying",
            (false, None, false) => "copying-columns",
        }
        .into();
        self.backfill_rows_copied = p.rows_copied;
        self.backfill_rows_estimate = p.rows_estimate;
        self.backfill_rows_per_s = p.rows_per_s;
        self.backfill_error = p.error.clone();
        if !p.done {
            self.backfill_columns = p.columns.clone();
            self.backfill_eta_s = (p.error.is_none() && p.rows_per_s > 0)
                .then(|| p.rows_estimate.saturating_sub(p.rows_copied) / p.rows_per_s);
        }
    }
}

pub async fn status(config: &Config) -> Result<StatusReport, RunError> {
    let checkpoint = read_checkpoint(config)?;
    let mut tables = read_tables(config)?;
    let verified = if checkpoint.is_some() {
        crate::pipeline::open_target(config)?.load_verified()?
    } else {
        None
    };
    if tables.is_empty() && checkpoint.is_some() && !matches!(config.target, crate::config::TargetConfig::Sqlite { .. })
    {
        // Server targets: the tables that have backfill records.
        tables = crate::pipeline::open_target(config)?
            .load_backfill()?
            .into_iter()
            .map(|p| TableStatus::new(p.table, String::new(), None))
            .collect();
    }
    if !tables.is_empty() {
        let progress = crate::pipeline::open_target(config)?.load_backfill()?;
        for t in &mut tables {
            t.set_backfill(progress.iter().find(|p| p.table == t.target));
        }
    }
    let mut report = StatusReport {
        target: config.target_description(),
        checkpoint: checkpoint.as_ref().map(|c| c.position.to_string()),
        applied_beyond: checkpoint
            .as_ref()
            .map(|c| c.applied.iter().map(|g| g.to_string()).collect())
            .unwrap_or_default(),
        verified: verified.as_ref().map(|v| v.position.to_string()),
        verify_mismatches: verified.as_ref().map_or(0, |v| v.mismatches),
        verify_unchecked_txns: verified.as_ref().map_or(0, |v| v.unchecked_txns),
        tables,
        source_position: None,
        source_error: None,
        caught_up: None,
        lag_seconds: None,
        lag_source: None,
        lag: None,
    };
    if checkpoint.is_some() {
        report.lag = crate::pipeline::open_target(config)?.load_lag()?;
        report.lag_source = report.lag.as_ref().map(|l| l.source);
    }
    let pool = source_pool(config)?;
    let source: Result<String, mysql_async::Error> = async {
        let mut conn = pool.get_conn().await?;
        Ok(conn
            .query_first("SELECT @@global.gtid_binlog_pos")
            .await?
            .unwrap_or_default())
    }
    .await;
    pool.disconnect().await.ok();
    match source {
        Ok(pos) => {
            report.source_position = Some(pos.clone());
            if let (Some(cp), Ok(source_pos)) = (&checkpoint, pos.parse::<GtidPosition>()) {
                let caught_up = cp.position.covers(&source_pos);
                report.caught_up = Some(caught_up);
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                report.lag_seconds = Some(if caught_up || cp.source_commit_unix == 0 {
                    0
                } else {
                    now.saturating_sub(u64::from(cp.source_commit_unix))
                });
            }
        }
        Err(e) => report.source_error = Some(e.to_string()),
    }
    Ok(report)
}

fn read_tables(config: &Config) -> Result<Vec<TableStatus>, RunError> {
    // Row counts are read from SQLite targets only, for now.
    let crate::config::TargetConfig::Sqlite { path } = &config.target else {
        return Ok(Vec::new());
    };
    if !path.exists() {
        return Ok(Vec::new());
    }
    let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| crate::target::TargetError::Other(format!("open {}: {e}", path.display())))?;
    let db = |e: rusqlite::Error| crate::target::TargetError::Other(format!("read {}: {e}", path.display()));
    let has_tables: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = '_sluice_tables'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(db)?
        > 0;
    if !has_tables {
        return Ok(Vec::new());
    }
    let mut stmt = conn
        .prepare("SELECT name, source_name FROM _sluice_tables ORDER BY name")
        .map_err(db)?;
    let names: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(db)?
        .collect::<Result<_, _>>()
        .map_err(db)?;
    let mut out = Vec::new();
    for (target, source) in names {
        let quoted = format!("\"{}\"", target.replace('"', "\"\""));
        let rows: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {quoted}"), [], |r| r.get(0))
            .map_err(db)?;
        out.push(TableStatus::new(target, source, Some(rows as u64)));
    }
    Ok(out)
}
