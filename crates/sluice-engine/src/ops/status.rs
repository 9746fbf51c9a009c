//! `sluice status`, and the live status of a running `sluice run` (`GET /status` and the page
//! at `GET /`, served beside `/metrics`): where replication stands, read from the target (the
//! checkpoint lives there) and compared with the source. Both produce the same
//! [`StatusReport`] with the same code; the running process adds what only it knows (the lag
//! chart, since when a server has been unreachable).
//!
//! Status never hangs: every read of the source and of the target has a deadline
//! ([`STATUS_TIMEOUT`]), and what cannot be read in time is reported as unreachable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mysql_async::prelude::Queryable;
use sluice_binlog::SourcePosition;

use crate::apply::Progress;
use crate::config::{Config, TargetConfig};
use crate::ops::lag::{LagPoint, LagReport};
use crate::pipeline::{read_checkpoint, source_pool, RunError};
use crate::target::{Checkpoint, VerifiedRecord};

/// How long status waits for the source, and separately for the target.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// The lag goal (p99.9 under a second): above it, status does not call the target caught up.
pub const LAG_GOAL: Duration = Duration::from_secs(1);

/// Whether a `sluice run` writes the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    /// A `sluice run` holds the target's writer lock (see `target::fence`).
    Running,
    /// Nobody does.
    Stopped,
    /// The target could not be asked (see `target_error`).
    Unreachable,
}

#[derive(Debug, serde::Serialize)]
pub struct StatusReport {
    pub target: String,
    pub liveness: Liveness,
    /// Who holds the target's writer lock (host, pid, since when), while running.
    pub writer: Option<String>,
    /// Why the target could not be read.
    pub target_error: Option<String>,
    /// Live status only: since when (Unix seconds) `sluice run` has been reconnecting to the
    /// target, while it is.
    pub target_unreachable_since_unix: Option<u64>,
    /// Live status only: since when (Unix seconds) the source has not answered, while it does not.
    pub source_unreachable_since_unix: Option<u64>,
    /// The applied checkpoint's low-water mark (GTID position), `None` before the first start.
    pub checkpoint: Option<String>,
    /// GTIDs applied beyond the low-water mark (parallel writers commit out of order).
    pub applied_beyond: Vec<String>,
    /// Seconds since the source committed the newest transaction applied to the target.
    /// Heartbeats are source transactions too, so while a `sluice run` with heartbeats is
    /// caught up this stays near the heartbeat interval; it grows once nothing is applied.
    pub last_commit_age_s: Option<u64>,
    /// Seconds since this sluice (its `server_id`) last wrote its heartbeat row on the source;
    /// `None` without heartbeats (or without the grant to read the heartbeat table).
    pub last_heartbeat_age_s: Option<u64>,
    /// Incremental verification: every transaction at or before this position is applied
    /// and its rows were read back and found as written. `None` when it never ran.
    pub verified: Option<String>,
    /// Rows read back different from what sluice wrote (since the target was created).
    pub verify_mismatches: u64,
    /// Stretches of applied transactions the incremental verifier could not read back, left
    /// to `sluice verify`: one per start after an unclean stop (kill -9, crash, power loss:
    /// what was committed just before it was never read back), plus one per transaction too
    /// large to read back whole (`[verify] max_rows_per_transaction`).
    pub verify_unchecked_txns: u64,
    pub tables: Vec<TableStatus>,
    /// The source's current binlog position, when it could be reached.
    pub source_position: Option<String>,
    pub source_error: Option<String>,
    /// Whether the checkpoint covers everything in the source's binlog.
    pub at_source_position: Option<bool>,
    /// At the source's position, and the lag over the running sluice's last window (when it
    /// reported one recently) within the goal ([`LAG_GOAL`]): never `true` beside a p99 over it.
    pub caught_up: Option<bool>,
    /// Seconds between now and the commit time of the last applied source transaction, when
    /// behind; 0 when at the source's position. Event timestamps have 1-second resolution.
    pub lag_seconds: Option<u64>,
    /// Lag percentiles over the last window, as recorded by the running sluice; `lag.source`
    /// says where they come from: `heartbeat` (microsecond heartbeat rows) or
    /// `event-timestamps` (the fallback, 1-second resolution).
    pub lag: Option<LagReport>,
    /// Live status only: p50/p99 per 2-second interval over the last minutes, oldest first.
    pub lag_history: Vec<LagPoint>,
}

#[derive(Debug, serde::Serialize)]
pub struct TableStatus {
    pub target: String,
    /// Source `schema.table`, when the target records it (SQLite).
    pub source: String,
    /// Rows in the target table (counted on SQLite targets only, where it is cheap).
    pub rows: Option<u64>,
    /// Copy of the existing rows: `pending`, `copying`, `copying-columns` (a column-only
    /// copy: `backfill_columns` are not ready yet), `failed` (see `backfill_error`), `stale`
    /// (left the config) or `ready` (copied; the table streams).
    pub backfill: String,
    /// Source rows the copy has read so far, counted before the row filter (rows the filter
    /// keeps from the target count too).
    pub backfill_rows_copied: u64,
    /// The source's row estimate when the copy started (before the row filter).
    pub backfill_rows_estimate: u64,
    /// Copy speed as last recorded by the running sluice.
    pub backfill_rows_per_s: u64,
    /// Estimated seconds to finish at that speed (while copying).
    pub backfill_eta_s: Option<u64>,
    /// Columns being filled by a column-only copy (not ready until it is done).
    pub backfill_columns: Vec<String>,
    /// Why the copy failed (the live status over HTTP says only that it did: the reason may
    /// quote row data).
    pub backfill_error: Option<String>,
    /// The table's state in the edge's `_sluice_readiness` (`copying`, `ready`, `stale`; see
    /// docs/readiness.md); `None` when the target records none for it.
    pub readiness: Option<String>,
    /// Each column's state in `_sluice_readiness` (`copying`, `backfilling_column`, `ready`,
    /// `held`), by column name.
    pub columns: Vec<ColumnStatus>,
    /// Columns the source table has that the rule holds back (`new_columns = "hold"`): not at
    /// the edge until released.
    pub held_columns: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
pub struct ColumnStatus {
    pub name: String,
    pub state: String,
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
            readiness: None,
            columns: Vec::new(),
            held_columns: Vec::new(),
        }
    }

    /// Takes this table's rows of `_sluice_readiness`.
    fn set_readiness(&mut self, rows: &[crate::target::ReadinessRow]) {
        for r in rows.iter().filter(|r| r.table == self.target) {
            if r.column.is_empty() {
                self.readiness = Some(r.state.clone());
                continue;
            }
            if r.state == crate::target::ReadinessState::Held.as_str() {
                self.held_columns.push(r.column.clone());
            }
            self.columns.push(ColumnStatus {
                name: r.column.clone(),
                state: r.state.clone(),
            });
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

/// Source and target reachability as the running process sees it. The run loop marks the
/// target (it reconnects with backoff); the live status marks the source each time it asks it.
#[derive(Debug, Default)]
pub struct Health {
    /// Unix seconds; 0 while reachable.
    target_unreachable_since: AtomicU64,
    source_unreachable_since: AtomicU64,
}

impl Health {
    /// `Some(since)` while the run loop is reconnecting to the target, `None` once it is back.
    pub fn set_target_unreachable(&self, since: Option<SystemTime>) {
        self.target_unreachable_since
            .store(since.map_or(0, unix_seconds), Ordering::Relaxed);
    }

    /// Since when (Unix seconds) the run loop has been reconnecting to the target.
    pub fn target_unreachable_since(&self) -> Option<u64> {
        Health::since(&self.target_unreachable_since)
    }

    fn note_source(&self, reachable: bool) {
        if reachable {
            self.source_unreachable_since.store(0, Ordering::Relaxed);
        } else {
            let _ = self.source_unreachable_since.compare_exchange(
                0,
                unix_seconds(SystemTime::now()),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn since(value: &AtomicU64) -> Option<u64> {
        Some(value.load(Ordering::Relaxed)).filter(|&s| s != 0)
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What the status page and `GET /status` of a running `sluice run` read.
pub struct LiveStatus {
    /// The config running now (replaced on a SIGHUP reload).
    pub config: RwLock<Arc<Config>>,
    pub progress: Arc<Progress>,
    /// The last JSON, when it was made and how long that took: one computation at a time,
    /// reused for a second (or four times as long as it took: counting a big SQLite table's
    /// rows is a scan), so that open pages never cost the servers more than a fifth of their
    /// time, however many there are.
    cache: tokio::sync::Mutex<Option<(Instant, Duration, String)>>,
}

impl LiveStatus {
    pub fn new(config: Arc<Config>, progress: Arc<Progress>) -> Arc<LiveStatus> {
        Arc::new(LiveStatus {
            config: RwLock::new(config),
            progress,
            cache: tokio::sync::Mutex::new(None),
        })
    }

    pub fn set_config(&self, config: Arc<Config>) {
        *self.config.write().expect("config lock") = config;
    }

    /// The status JSON, exactly as `sluice status --json` prints it.
    pub async fn json(&self) -> String {
        let mut cache = self.cache.lock().await;
        if let Some((at, took, json)) = cache.as_ref() {
            if at.elapsed() < (*took * 4).max(Duration::from_secs(1)) {
                return json.clone();
            }
        }
        let config = self.config.read().expect("config lock").clone();
        let started = Instant::now();
        let json = match report(config, Some(&self.progress)).await {
            Ok(mut report) => {
                // A copy's failure can quote row data (a refused key, say): over HTTP only
                // that it failed, the reason stays with `sluice status` on the host.
                for t in &mut report.tables {
                    if t.backfill_error.is_some() {
                        t.backfill_error = Some(REDACTED_COPY_ERROR.into());
                    }
                }
                to_json(&report)
            }
            Err(e) => serde_json::json!({ "error": e.to_string() }).to_string(),
        };
        *cache = Some((Instant::now(), started.elapsed(), json.clone()));
        json
    }
}

/// What the live status says in place of a copy's failure reason.
pub const REDACTED_COPY_ERROR: &str = "the copy failed; `sluice status` on the host says why";

/// The one JSON form of a report (`sluice status --json` and `GET /status`).
pub fn to_json(report: &StatusReport) -> String {
    serde_json::to_string_pretty(report).expect("a status report serializes")
}

/// `sluice status`.
pub async fn status(config: Arc<Config>) -> Result<StatusReport, RunError> {
    report(config, None).await
}

/// What is read from the target for a report.
#[derive(Default)]
struct TargetSnapshot {
    checkpoint: Option<Checkpoint>,
    verified: Option<VerifiedRecord>,
    tables: Vec<TableStatus>,
    lag: Option<LagReport>,
    writer: Option<String>,
}

/// A report; `live` is the running process's own state (then it is `running` by definition
/// and the lag chart is added).
async fn report(config: Arc<Config>, live: Option<&Progress>) -> Result<StatusReport, RunError> {
    let target_down_since = live.and_then(|p| Health::since(&p.health.target_unreachable_since));
    let target = if target_down_since.is_some() {
        // The run loop already knows: asking again would only stack up stuck connections.
        Err("the target is unreachable; sluice run is reconnecting".to_owned())
    } else {
        let config = config.clone();
        let probe_writer = live.is_none();
        let read = tokio::task::spawn_blocking(move || read_target(&config, probe_writer));
        match tokio::time::timeout(STATUS_TIMEOUT, read).await {
            Ok(Ok(Ok(snapshot))) => Ok(snapshot),
            Ok(Ok(Err(e))) if e.kind() == crate::pipeline::ErrorKind::Transient || live.is_some() => Err(e.to_string()),
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(join)) => Err(format!("reading the target failed: {join}")),
            Err(_) => Err(format!(
                "no answer from the target within {} s",
                STATUS_TIMEOUT.as_secs()
            )),
        }
    };
    let (snapshot, target_error) = match target {
        Ok(s) => (s, None),
        Err(e) => (TargetSnapshot::default(), Some(e)),
    };
    let liveness = match (live, &target_error, &snapshot.writer) {
        (Some(_), ..) => Liveness::Running,
        (None, Some(_), _) => Liveness::Unreachable,
        (None, None, Some(_)) => Liveness::Running,
        (None, None, None) => Liveness::Stopped,
    };
    let writer = match live {
        Some(_) => Some(format!("this process (pid {})", std::process::id())),
        None => snapshot.writer,
    };
    let checkpoint = snapshot.checkpoint;
    let now = SystemTime::now();
    let mut report = StatusReport {
        target: config.target_description(),
        liveness,
        writer,
        target_error,
        target_unreachable_since_unix: target_down_since,
        source_unreachable_since_unix: None,
        checkpoint: checkpoint.as_ref().map(|c| c.position.to_string()),
        applied_beyond: checkpoint
            .as_ref()
            .map(|c| c.applied.iter().map(|g| g.to_string()).collect())
            .unwrap_or_default(),
        last_commit_age_s: checkpoint
            .as_ref()
            .filter(|c| c.source_commit_unix != 0)
            .map(|c| unix_seconds(now).saturating_sub(u64::from(c.source_commit_unix))),
        last_heartbeat_age_s: None,
        verified: snapshot.verified.as_ref().map(|v| v.position.to_string()),
        verify_mismatches: snapshot.verified.as_ref().map_or(0, |v| v.mismatches),
        verify_unchecked_txns: snapshot.verified.as_ref().map_or(0, |v| v.unchecked_txns),
        tables: snapshot.tables,
        source_position: None,
        source_error: None,
        at_source_position: None,
        caught_up: None,
        lag_seconds: None,
        lag: snapshot.lag,
        lag_history: live.map(|p| p.lag.history()).unwrap_or_default(),
    };
    if let Some(p) = live {
        // The running process's own figures are newer than what writer 0 last stored.
        report.lag = Some(p.lag.report());
    }
    match read_source(&config).await {
        Ok((pos, heartbeat_us)) => {
            report.last_heartbeat_age_s =
                heartbeat_us.map(|us| (crate::ops::lag::now_us().saturating_sub(us)) / 1_000_000);
            report.source_position = Some(pos.to_string());
            if let Some(cp) = &checkpoint {
                // Everything applied (for MySQL, the GTIDs beyond the low-water mark count).
                let at = cp.resume_from().covers(&pos);
                report.at_source_position = Some(at);
                report.caught_up = Some(at && !recent_lag_over_goal(report.lag.as_ref()));
                report.lag_seconds = Some(if at || cp.source_commit_unix == 0 {
                    0
                } else {
                    unix_seconds(now).saturating_sub(u64::from(cp.source_commit_unix))
                });
            }
        }
        Err(e) => report.source_error = Some(e),
    }
    if let Some(p) = live {
        p.health.note_source(report.source_error.is_none());
        report.source_unreachable_since_unix = Health::since(&p.health.source_unreachable_since);
    }
    Ok(report)
}

/// Whether a running sluice reported, within its last window, a p99 lag over the goal (with
/// event timestamps, over the goal plus their one second of resolution: a sample of an
/// instant copy can read up to a second).
fn recent_lag_over_goal(lag: Option<&LagReport>) -> bool {
    let Some(lag) = lag else { return false };
    let age_ms = crate::ops::lag::now_us().saturating_sub(lag.updated_at_us) / 1000;
    let goal_us = match lag.source {
        "heartbeat" => LAG_GOAL.as_micros() as u64,
        _ => LAG_GOAL.as_micros() as u64 + 1_000_000,
    };
    lag.samples > 0 && age_ms <= lag.window_ms.max(10_000) && lag.p99_us > goal_us
}

/// The source's binlog position and this sluice's newest heartbeat (Unix µs), within
/// [`STATUS_TIMEOUT`]; the error says why not.
async fn read_source(config: &Config) -> Result<(SourcePosition, Option<u64>), String> {
    if let Some(log) = config.log_source() {
        return Err(format!(
            "this edge reads the fan-out log (NATS stream {}), not a database: the source's position is the \
             publisher's (`sluice status` with the publisher's source settings shows it)",
            log.stream
        ));
    }
    let pool = source_pool(config).map_err(|e| e.to_string())?;
    let read = async {
        let mut conn = pool.get_conn().await?;
        let flavor = crate::source_rows::source_flavor(&mut conn).await?;
        let pos = crate::source_rows::read_position(&mut conn, flavor).await?;
        let heartbeat = match config.lag.heartbeat {
            true => {
                let quote = |n: &str| format!("`{}`", n.replace('`', "``"));
                let sql = format!(
                    "SELECT ts_us FROM {}.{} WHERE id = ?",
                    quote(&config.lag.database),
                    quote(&config.lag.table)
                );
                // Without the table (or the grant to read it) there is simply no figure.
                conn.exec_first::<u64, _, _>(sql, (config.source.server_id,))
                    .await
                    .ok()
                    .flatten()
            }
            false => None,
        };
        Ok::<_, mysql_async::Error>((pos, heartbeat))
    };
    let result = match tokio::time::timeout(STATUS_TIMEOUT, read).await {
        Ok(Ok((Ok(position), heartbeat))) => Ok((position, heartbeat)),
        Ok(Ok((Err(unreadable), _))) => Err(format!("{}:{}: {unreadable}", config.source.host, config.source.port)),
        Ok(Err(e)) => Err(format!(
            "{}:{}: {}",
            config.source.host,
            config.source.port,
            crate::source_rows::error_text(&e)
        )),
        Err(_) => Err(format!(
            "{}:{}: no answer within {} s (server stopped or frozen, or the network is down)",
            config.source.host,
            config.source.port,
            STATUS_TIMEOUT.as_secs()
        )),
    };
    // A frozen server would hold the disconnect too; the pool is dropped after a short wait.
    let _ = tokio::time::timeout(Duration::from_millis(500), pool.disconnect()).await;
    result
}

/// Everything status reads from the target (blocking; run with a deadline by the caller).
/// `probe_writer`: ask who holds the writer lock (the running process knows it holds it).
fn read_target(config: &Config, probe_writer: bool) -> Result<TargetSnapshot, RunError> {
    let mut snapshot = TargetSnapshot {
        writer: match probe_writer {
            true => crate::pipeline::fence_holder(config, STATUS_TIMEOUT)?,
            false => None,
        },
        checkpoint: read_checkpoint(config)?,
        ..TargetSnapshot::default()
    };
    snapshot.tables = read_tables(config)?;
    if snapshot.checkpoint.is_none() {
        return Ok(snapshot);
    }
    let mut target = crate::pipeline::open_target(config)?;
    snapshot.verified = target.load_verified()?;
    let progress = target.load_backfill()?;
    if snapshot.tables.is_empty() && !matches!(config.target, TargetConfig::Sqlite { .. }) {
        // Server targets: the tables that have backfill records.
        snapshot.tables = progress
            .iter()
            .map(|p| TableStatus::new(p.table.clone(), String::new(), None))
            .collect();
    }
    let readiness = target.load_readiness()?;
    for r in &readiness {
        // Tables without a copy record (backfill off) still have their readiness.
        if !snapshot.tables.iter().any(|t| t.target == r.table) {
            snapshot
                .tables
                .push(TableStatus::new(r.table.clone(), String::new(), None));
        }
    }
    for t in &mut snapshot.tables {
        t.set_backfill(progress.iter().find(|p| p.table == t.target));
        t.set_readiness(&readiness);
    }
    snapshot.lag = target.load_lag()?;
    Ok(snapshot)
}

fn read_tables(config: &Config) -> Result<Vec<TableStatus>, RunError> {
    // Row counts are read from SQLite targets only, for now.
    let TargetConfig::Sqlite { path } = &config.target else {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn report(source: &'static str, p99_us: u64, age_s: u64) -> LagReport {
        LagReport {
            source,
            p50_us: p99_us / 2,
            p99_us,
            p999_us: p99_us,
            max_us: p99_us,
            samples: 100,
            window_ms: 60_000,
            updated_at_us: crate::ops::lag::now_us() - age_s * 1_000_000,
        }
    }

    #[test]
    fn a_recent_p99_over_the_goal_is_not_caught_up() {
        assert!(!recent_lag_over_goal(None));
        assert!(!recent_lag_over_goal(Some(&report("heartbeat", 3_000, 1))));
        // The case: p99 1.7 s beside "caught up".
        assert!(recent_lag_over_goal(Some(&report("heartbeat", 1_700_000, 1))));
        // Event timestamps read up to a second more for an instant copy.
        assert!(!recent_lag_over_goal(Some(&report("event-timestamps", 1_700_000, 1))));
        assert!(recent_lag_over_goal(Some(&report("event-timestamps", 2_500_000, 1))));
        // A report from long ago describes no recent window.
        assert!(!recent_lag_over_goal(Some(&report("heartbeat", 1_700_000, 3600))));
    }
}
