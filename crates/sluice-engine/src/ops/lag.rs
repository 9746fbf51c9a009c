//! Replication lag, measured with a heartbeat row.
//!
//! Binlog event headers carry their commit time in whole seconds, which is too coarse for a
//! sub-second lag goal. So, when the source user may, sluice writes a heartbeat row
//! (`INSERT … ON DUPLICATE KEY UPDATE` of `(id, ts_us)`, keyed by sluice's replica
//! `server_id`) into a small table on the source every `[lag] interval_ms`. The reader
//! recognises that table's row events in the stream (the table is never replicated: it is
//! excluded from every `[[tables]]` rule), and the applier takes a sample when the low-water
//! mark passes the transaction that carried the row, i.e. once it and everything before it is
//! committed on the target:
//!
//! ```text
//! lag = (time the heartbeat's transaction is committed on the target) − ts_us
//! ```
//!
//! **Clock.** `ts_us` is taken from sluice's own clock just before the statement is sent,
//! not from the source's (`NOW(6)`): both ends of the measurement then read the same clock in
//! the same process, so clock skew between the source host and sluice's host cannot enter the
//! figure. The price is that the source's own commit time (network round trip, fsync) is
//! counted as lag too, which makes the figure an upper bound.
//!
//! When the heartbeat cannot be written (no `CREATE`/`INSERT`/`UPDATE` grant on the
//! heartbeat table, read-only source, …) sluice says so in its log and falls back to event
//! timestamps: a sample per applied source transaction of `now − commit second`, so values
//! have 1-second resolution. Status shows which source the figures came from
//! (`lag.source`).
//!
//! Samples go into an HDR histogram over a rolling window; writer 0 persists p50/p99/p99.9,
//! the maximum, the sample count and the window to the target's `_sluice_lag` table about
//! once a second, inside one of its ordinary transactions, and `sluice status` reads it back.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use mysql_async::prelude::Queryable;
use sluice_binlog::{RowChange, RowsEvent, TableDef, TableMap, Value};

use crate::config::{Config, LagConfig};

/// How often writer 0 writes the current percentiles to the target.
pub const PERSIST_EVERY: Duration = Duration::from_secs(1);

/// Samples above this are clamped (an hour: nothing useful is lost, the histogram stays small).
const MAX_TRACKABLE_US: u64 = 3_600_000_000;

/// Aborts a task when dropped (the heartbeat stops with the pipeline, whatever way it ends).
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// MariaDB `ER_NO_SUCH_TABLE` and `ER_BAD_DB_ERROR`: the heartbeat table must be created first.
const ER_NO_SUCH_TABLE: u16 = 1146;
const ER_BAD_DB_ERROR: u16 = 1049;

/// Where the lag figures come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LagSource {
    /// Microsecond heartbeat rows written by sluice on the source.
    Heartbeat,
    /// Commit seconds of the binlog event headers (1-second resolution).
    EventTimestamps,
}

impl LagSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LagSource::Heartbeat => "heartbeat",
            LagSource::EventTimestamps => "event-timestamps",
        }
    }

    pub fn parse(text: &str) -> Option<LagSource> {
        match text {
            "heartbeat" => Some(LagSource::Heartbeat),
            "event-timestamps" => Some(LagSource::EventTimestamps),
            _ => None,
        }
    }
}

/// The lag percentiles over a window, as persisted in the target and shown by status.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LagReport {
    /// `heartbeat` or `event-timestamps`.
    pub source: &'static str,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Samples in the window (0: no heartbeat or transaction was applied in it).
    pub samples: u64,
    /// The span the samples cover, in milliseconds.
    pub window_ms: u64,
    /// When the report was taken (Unix microseconds, sluice's clock).
    pub updated_at_us: u64,
}

/// How long an event-timestamp lag sample describes the current lag (see
/// [`LagMeter::recent_lag_us`]).
pub const EVENT_SAMPLE_FRESH: Duration = Duration::from_secs(2);

/// sluice's clock in Unix microseconds.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn new_histogram() -> Histogram<u64> {
    // 3 significant digits: 0.1% relative error, a few tens of KiB.
    Histogram::new_with_bounds(1, MAX_TRACKABLE_US, 3).expect("valid histogram bounds")
}

/// The lag histogram, shared by the heartbeat writer (which decides the source), the applier
/// (which records samples) and writer 0 (which persists reports).
#[derive(Debug)]
pub struct LagMeter {
    source: AtomicU8,
    inner: Mutex<Window>,
    /// The newest sample (µs) and when it was taken (Unix µs), for backfill throttling.
    last_lag_us: AtomicU64,
    last_sample_at_us: AtomicU64,
    /// Every sample since the process started, in seconds, for `/metrics`
    /// (`sluice_apply_lag_seconds`; cumulative, unlike the rolling window).
    exported: prometheus_client::metrics::histogram::Histogram,
}

/// `sluice_apply_lag_seconds` bucket bounds: fine below the 1 s goal, coarse up to a minute.
pub const EXPORTED_LAG_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The status page's lag chart: the samples of each `HISTORY_INTERVAL` summarised as p50/p99
/// and kept for the last `HISTORY_POINTS` intervals (five minutes), so the memory is fixed: one
/// histogram for the open interval and a few thousand bytes of points.
pub const HISTORY_INTERVAL: Duration = Duration::from_secs(2);
pub const HISTORY_POINTS: usize = 150;

/// One interval of the lag chart.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LagPoint {
    /// When the interval ended (Unix milliseconds, sluice's clock).
    pub at_unix_ms: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// Samples in the interval (intervals without any are not kept).
    pub samples: u64,
}

#[derive(Debug)]
struct Window {
    /// Samples since `current_start`; rotated into `previous` every `span`, so a report
    /// covers between one and two spans of the most recent samples.
    current: Histogram<u64>,
    current_start: Instant,
    previous: Option<(Histogram<u64>, Instant)>,
    span: Duration,
    last_persist: Option<Instant>,
    persisted_source: Option<LagSource>,
    /// Samples since `interval_start`, summarised into `history` every `HISTORY_INTERVAL`.
    interval: Histogram<u64>,
    interval_start: Instant,
    history: std::collections::VecDeque<LagPoint>,
}

impl Default for LagMeter {
    fn default() -> Self {
        LagMeter::new(Duration::from_secs(crate::config::DEFAULT_LAG_WINDOW_S))
    }
}

impl LagMeter {
    pub fn new(span: Duration) -> Self {
        LagMeter {
            source: AtomicU8::new(0),
            last_lag_us: AtomicU64::new(0),
            last_sample_at_us: AtomicU64::new(0),
            exported: prometheus_client::metrics::histogram::Histogram::new(EXPORTED_LAG_BUCKETS),
            inner: Mutex::new(Window {
                current: new_histogram(),
                current_start: Instant::now(),
                previous: None,
                span,
                last_persist: None,
                persisted_source: None,
                interval: new_histogram(),
                interval_start: Instant::now(),
                history: std::collections::VecDeque::with_capacity(HISTORY_POINTS),
            }),
        }
    }

    /// Sets the rolling window's span (from the config, before samples arrive).
    pub fn set_window(&self, span: Duration) {
        self.inner.lock().expect("lag lock").span = span;
    }

    pub fn set_source(&self, source: LagSource) {
        self.source.store(
            match source {
                LagSource::EventTimestamps => 0,
                LagSource::Heartbeat => 1,
            },
            Ordering::Relaxed,
        );
    }

    pub fn source(&self) -> LagSource {
        match self.source.load(Ordering::Relaxed) {
            1 => LagSource::Heartbeat,
            _ => LagSource::EventTimestamps,
        }
    }

    /// A heartbeat written at `sent_us` is now committed on the target.
    pub fn record_heartbeat(&self, sent_us: u64) {
        self.record(now_us().saturating_sub(sent_us));
    }

    /// A source transaction committed at `commit_unix` (seconds) is now committed on the
    /// target. Only sampled while the heartbeat is unavailable.
    pub fn record_event(&self, commit_unix: u32) {
        if commit_unix == 0 || self.source() != LagSource::EventTimestamps {
            return;
        }
        self.record(now_us().saturating_sub(u64::from(commit_unix) * 1_000_000));
    }

    /// The stream's lag now, as far as it can be told. With heartbeats, which arrive every
    /// `interval`: the newest sample, or at least the time since it beyond that interval (a
    /// stalled stream delivers no samples at all). With event timestamps, samples only come
    /// with source transactions, so a sample older than [`EVENT_SAMPLE_FRESH`] says nothing
    /// about now (an idle source). `None` when nothing can be told.
    pub fn recent_lag_us(&self, interval: Duration) -> Option<u64> {
        let at = self.last_sample_at_us.load(Ordering::Relaxed);
        if at == 0 {
            return None;
        }
        let last = self.last_lag_us.load(Ordering::Relaxed);
        let age = now_us().saturating_sub(at);
        if self.source() != LagSource::Heartbeat {
            return (age <= EVENT_SAMPLE_FRESH.as_micros() as u64).then_some(last);
        }
        Some(last.max(age.saturating_sub(interval.as_micros() as u64)))
    }

    fn record(&self, lag_us: u64) {
        self.last_lag_us.store(lag_us, Ordering::Relaxed);
        self.last_sample_at_us.store(now_us(), Ordering::Relaxed);
        self.exported.observe(lag_us as f64 / 1e6);
        let mut w = self.inner.lock().expect("lag lock");
        w.rotate();
        w.current.saturating_record(lag_us.clamp(1, MAX_TRACKABLE_US));
        w.interval.saturating_record(lag_us.clamp(1, MAX_TRACKABLE_US));
    }

    /// The lag chart's points, oldest first (see [`HISTORY_INTERVAL`]).
    pub fn history(&self) -> Vec<LagPoint> {
        let mut w = self.inner.lock().expect("lag lock");
        w.rotate();
        w.history.iter().cloned().collect()
    }

    /// The cumulative histogram of every sample (seconds), shared with `/metrics`.
    pub fn exported_histogram(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.exported.clone()
    }

    /// The percentiles over the current window.
    pub fn report(&self) -> LagReport {
        let mut w = self.inner.lock().expect("lag lock");
        w.rotate();
        let mut all = w.current.clone();
        let start = match &w.previous {
            Some((h, start)) => {
                all.add(h).expect("same bounds");
                *start
            }
            None => w.current_start,
        };
        let samples = all.len();
        let q = |q: f64| if samples == 0 { 0 } else { all.value_at_quantile(q) };
        LagReport {
            source: self.source().as_str(),
            p50_us: q(0.50),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if samples == 0 { 0 } else { all.max() },
            samples,
            window_ms: start.elapsed().as_millis() as u64,
            updated_at_us: now_us(),
        }
    }

    /// A report to persist, at most once per `every` (and at once when the source changed).
    pub fn due_report(&self, every: Duration) -> Option<LagReport> {
        {
            let w = self.inner.lock().expect("lag lock");
            let source_changed = w.persisted_source != Some(self.source());
            if !source_changed && w.last_persist.is_some_and(|t| t.elapsed() < every) {
                return None;
            }
        }
        let report = self.report();
        let mut w = self.inner.lock().expect("lag lock");
        w.last_persist = Some(Instant::now());
        w.persisted_source = LagSource::parse(report.source);
        Some(report)
    }
}

impl Window {
    fn rotate(&mut self) {
        if self.interval_start.elapsed() >= HISTORY_INTERVAL {
            if !self.interval.is_empty() {
                if self.history.len() == HISTORY_POINTS {
                    self.history.pop_front();
                }
                self.history.push_back(LagPoint {
                    at_unix_ms: now_us() / 1000,
                    p50_us: self.interval.value_at_quantile(0.50),
                    p99_us: self.interval.value_at_quantile(0.99),
                    samples: self.interval.len(),
                });
                self.interval.reset();
            }
            self.interval_start = Instant::now();
        }
        if self.current_start.elapsed() >= self.span {
            let old = std::mem::replace(&mut self.current, new_histogram());
            self.previous = Some((old, self.current_start));
            self.current_start = Instant::now();
        }
    }
}

/// The heartbeat table's identity in the stream, and the row sluice reads from it.
#[derive(Debug, Clone)]
pub struct HeartbeatTable {
    pub database: String,
    pub table: String,
    /// The row id this sluice writes (its replica server id); other instances' rows are
    /// ignored (their timestamps come from other clocks).
    pub id: u32,
    /// Table id → its definition, from the last TABLE_MAP of the heartbeat table.
    mapped: Option<(u64, TableDef, usize, usize)>,
}

impl HeartbeatTable {
    pub fn new(config: &Config) -> Option<HeartbeatTable> {
        let lag = &config.lag;
        lag.heartbeat.then(|| HeartbeatTable {
            database: lag.database.clone(),
            table: lag.table.clone(),
            id: config.source.server_id,
            mapped: None,
        })
    }

    /// Whether the TABLE_MAP is the heartbeat table's (then it is remembered and must not be
    /// handed to the schema tracker).
    pub fn on_table_map(&mut self, map: &TableMap) -> bool {
        if map.schema != self.database || map.table != self.table {
            if self.mapped.as_ref().is_some_and(|(id, ..)| *id == map.table_id) {
                self.mapped = None;
            }
            return false;
        }
        let def = map.to_table_def();
        // With full row metadata the columns are found by name; without it, by the order
        // sluice creates them in.
        let find = |name: &str, fallback: usize| {
            map.names
                .as_ref()
                .and_then(|n| n.iter().position(|c| c == name))
                .unwrap_or(fallback)
        };
        let (id_col, ts_col) = (find("id", 0), find("ts_us", 1));
        self.mapped =
            (id_col < def.columns.len() && ts_col < def.columns.len()).then_some((map.table_id, def, id_col, ts_col));
        true
    }

    /// Whether the rows event is the heartbeat table's; `Some(Some(ts))` carries the newest
    /// timestamp of this sluice's row in it.
    pub fn on_rows(&self, rows: &RowsEvent<'_>) -> Option<Option<u64>> {
        let (table_id, def, id_col, ts_col) = self.mapped.as_ref()?;
        if rows.table_id != *table_id {
            return None;
        }
        let mut newest = None;
        // A heartbeat row that does not decode is not worth stopping replication for: the
        // table is not replicated, it only yields no sample.
        if let Ok(iter) = rows.rows(def) {
            for change in iter.flatten() {
                let row = match change {
                    RowChange::Insert(r) => r,
                    RowChange::Update { after, .. } => after,
                    RowChange::Delete(_) => continue,
                };
                if row.get(*id_col).is_some_and(|v| id_matches(v, self.id)) {
                    newest = row.get(*ts_col).and_then(as_u64).or(newest);
                }
            }
        }
        Some(newest)
    }

    /// Forgets the table id (ids are only valid within one connection).
    pub fn reset(&mut self) {
        self.mapped = None;
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::UInt(u) => Some(*u),
        _ => None,
    }
}

/// Without signedness metadata an `INT UNSIGNED` id above 2^31 decodes as a negative `Int`.
fn id_matches(v: &Value, id: u32) -> bool {
    match v {
        Value::Int(i) => *i == i64::from(id) || (*i < 0 && *i as i32 as u32 == id),
        Value::UInt(u) => *u == u64::from(id),
        _ => false,
    }
}

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn source_opts(config: &Config) -> Result<mysql_async::Opts, crate::config::ConfigError> {
    Ok(crate::source_rows::source_opts(config)?.into())
}

/// What the heartbeat task needs, taken from the config before it is spawned.
pub struct HeartbeatWriter {
    lag: LagConfig,
    server_id: u32,
    /// `Err`: the source password could not be read (the message, without the secret).
    opts: Result<mysql_async::Opts, String>,
}

impl HeartbeatWriter {
    pub fn new(config: &Config) -> HeartbeatWriter {
        HeartbeatWriter {
            lag: config.lag.clone(),
            server_id: config.source.server_id,
            opts: source_opts(config).map_err(|e| e.to_string()),
        }
    }

    /// Writes heartbeats until `stop` turns true or the task is aborted (only `sluice run`
    /// starts it: `check` and `status` never write to the source). Decides the meter's source:
    /// `heartbeat` once the first heartbeat is written, `event-timestamps` if it cannot be.
    ///
    /// `stop` is only looked at between writes, so once this returns no heartbeat is in flight:
    /// a clean stop can then read the source's position and apply up to it, the last heartbeat
    /// included (otherwise the target stays one heartbeat behind the source for good).
    pub async fn run(self, meter: Arc<LagMeter>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let lag = &self.lag;
        meter.set_source(LagSource::EventTimestamps);
        if !lag.heartbeat {
            tracing::info!(
                "lag: heartbeat disabled ([lag] heartbeat = false); lag from event timestamps (1 s resolution)"
            );
            return;
        }
        let opts = match self.opts {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!("lag: heartbeat unavailable ({e}); lag from event timestamps (1 s resolution)");
                return;
            }
        };
        let table = format!("{}.{}", quote_ident(&lag.database), quote_ident(&lag.table));
        // Chosen once the server's version is known (the first connection).
        let mut upsert: Option<String> = None;
        let id = self.server_id;
        let mut conn: Option<mysql_async::Conn> = None;
        let mut interval = tokio::time::interval(Duration::from_millis(lag.interval_ms));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut established = false;
        let mut failures: u64 = 0;
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            let result: Result<(), mysql_async::Error> = async {
                if conn.is_none() {
                    let mut c = mysql_async::Conn::new(opts.clone()).await?;
                    if upsert.is_none() {
                        let version: String = c.query_first("SELECT @@version").await?.unwrap_or_default();
                        upsert = Some(heartbeat_upsert(&table, &version));
                    }
                    conn = Some(c);
                }
                let c = conn.as_mut().expect("connected");
                let upsert = upsert.as_deref().expect("chosen on connecting");
                let write = c.exec_drop(upsert, (id, now_us())).await;
                match write {
                    Err(mysql_async::Error::Server(e))
                        if !established && (e.code == ER_NO_SUCH_TABLE || e.code == ER_BAD_DB_ERROR) =>
                    {
                        create_table(c, lag).await?;
                        c.exec_drop(upsert, (id, now_us())).await
                    }
                    other => other,
                }
            }
            .await;
            match result {
                Ok(()) => {
                    if !established {
                        established = true;
                        meter.set_source(LagSource::Heartbeat);
                        tracing::info!(table = %format!("{}.{}", lag.database, lag.table), interval_ms = lag.interval_ms, "lag: heartbeat written; lag measured from heartbeats (microseconds)");
                    }
                    failures = 0;
                }
                Err(mysql_async::Error::Server(e)) if !established => {
                    // Missing grants or a read-only source: measure what can be measured, and say
                    // what would make the heartbeat work. (Network errors are retried below.)
                    tracing::warn!(
                        "lag: cannot write the heartbeat to {}.{} ({e}); lag falls back to event timestamps (1 s resolution). \
                         To measure lag in microseconds: GRANT CREATE, INSERT, UPDATE ON {}.* TO the source user, or set [lag] heartbeat = false",
                        lag.database,
                        lag.table,
                        quote_ident(&lag.database)
                    );
                    return;
                }
                Err(e) => {
                    // Transient (the source restarting, a network failure): reconnect next tick;
                    // the reader reconnects on its own.
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(failures, "lag: heartbeat write failed ({e}); retrying");
                    }
                    conn = None;
                }
            }
        }
    }
}

/// The heartbeat's upsert for a source of `version`. MySQL deprecates `VALUES(col)` in
/// `ON DUPLICATE KEY UPDATE` since 8.0.20 (a warning on every write) in favour of a row alias,
/// which it accepts since 8.0.19; MariaDB accepts only `VALUES(col)`.
fn heartbeat_upsert(table: &str, version: &str) -> String {
    let insert = format!("INSERT INTO {table} (`id`, `ts_us`) VALUES (?, ?)");
    let numbers: Vec<u32> = version
        .split(|c: char| !c.is_ascii_digit())
        .take(3)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    let row_alias = sluice_binlog::SourceFlavor::from_server_version(version) == sluice_binlog::SourceFlavor::Mysql
        && numbers.as_slice() >= [8, 0, 19].as_slice();
    if row_alias {
        format!("{insert} AS `new` ON DUPLICATE KEY UPDATE `ts_us` = `new`.`ts_us`")
    } else {
        format!("{insert} ON DUPLICATE KEY UPDATE `ts_us` = VALUES(`ts_us`)")
    }
}

async fn create_table(conn: &mut mysql_async::Conn, lag: &LagConfig) -> Result<(), mysql_async::Error> {
    let db = quote_ident(&lag.database);
    conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS {db}")).await?;
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {db}.{} (`id` INT UNSIGNED NOT NULL PRIMARY KEY, `ts_us` BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB",
        quote_ident(&lag.table)
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_upsert_in_each_dialect() {
        let mariadb = heartbeat_upsert("`d`.`t`", "11.4.5-MariaDB-log");
        assert!(
            mariadb.ends_with("ON DUPLICATE KEY UPDATE `ts_us` = VALUES(`ts_us`)"),
            "{mariadb}"
        );
        // Sent by MariaDB to old clients with a 5.5.5- prefix: still MariaDB.
        assert_eq!(heartbeat_upsert("`d`.`t`", "5.5.5-10.11.9-MariaDB"), mariadb);
        for version in ["8.0.19", "8.0.40", "8.4.3", "9.1.0-commercial"] {
            let mysql = heartbeat_upsert("`d`.`t`", version);
            assert_eq!(
                mysql,
                "INSERT INTO `d`.`t` (`id`, `ts_us`) VALUES (?, ?) AS `new` ON DUPLICATE KEY UPDATE `ts_us` = `new`.`ts_us`",
                "{version}"
            );
        }
        // Before the row alias existed.
        assert_eq!(heartbeat_upsert("`d`.`t`", "8.0.18"), mariadb);
    }

    #[test]
    fn percentiles_over_samples() {
        let meter = LagMeter::new(Duration::from_secs(60));
        meter.set_source(LagSource::Heartbeat);
        for ms in 1..=1000u64 {
            meter.record(ms * 1000);
        }
        let r = meter.report();
        assert_eq!(r.samples, 1000);
        assert_eq!(r.source, "heartbeat");
        // 3 significant digits: within 0.1%.
        assert!((499_000..=501_000).contains(&r.p50_us), "{r:?}");
        assert!((989_000..=991_000).contains(&r.p99_us), "{r:?}");
        assert!((998_000..=1_000_500).contains(&r.p999_us), "{r:?}");
        assert!(r.max_us >= 999_000);
    }

    #[test]
    fn event_samples_only_without_heartbeat() {
        let meter = LagMeter::new(Duration::from_secs(60));
        meter.set_source(LagSource::Heartbeat);
        meter.record_event((now_us() / 1_000_000) as u32);
        assert_eq!(meter.report().samples, 0);
        meter.set_source(LagSource::EventTimestamps);
        meter.record_event((now_us() / 1_000_000) as u32);
        let r = meter.report();
        assert_eq!(r.samples, 1);
        assert!(r.p50_us <= 2_000_000, "{r:?}");
        assert_eq!(r.source, "event-timestamps");
    }

    #[test]
    fn history_keeps_one_point_per_interval_with_samples_and_is_bounded() {
        let meter = LagMeter::new(Duration::from_secs(60));
        for ms in 1..=100u64 {
            meter.record(ms * 1000);
        }
        assert!(meter.history().is_empty(), "the open interval is not a point yet");
        meter.inner.lock().unwrap().interval_start -= HISTORY_INTERVAL;
        let points = meter.history();
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].samples, 100);
        assert!((49_000..=51_000).contains(&points[0].p50_us), "{points:?}");
        assert!((98_000..=100_000).contains(&points[0].p99_us), "{points:?}");
        // Idle intervals add nothing; the ring never grows past its bound.
        meter.inner.lock().unwrap().interval_start -= HISTORY_INTERVAL;
        assert_eq!(meter.history().len(), 1);
        for _ in 0..HISTORY_POINTS + 10 {
            meter.record(5_000);
            meter.inner.lock().unwrap().interval_start -= HISTORY_INTERVAL;
        }
        let points = meter.history();
        assert_eq!(points.len(), HISTORY_POINTS);
        assert!(points.iter().all(|p| p.samples == 1 && p.p50_us >= 4_990));
    }

    #[test]
    fn window_rotates() {
        let meter = LagMeter::new(Duration::from_millis(30));
        meter.record(5_000);
        std::thread::sleep(Duration::from_millis(40));
        meter.record(7_000);
        // Rotated once: both samples still count.
        assert_eq!(meter.report().samples, 2);
        std::thread::sleep(Duration::from_millis(40));
        meter.record(9_000);
        // Rotated again: the first sample left the window.
        assert_eq!(meter.report().samples, 2);
    }

    #[test]
    fn reports_are_rate_limited_but_source_changes_are_not() {
        let meter = LagMeter::new(Duration::from_secs(60));
        assert!(meter.due_report(Duration::from_secs(60)).is_some());
        assert!(meter.due_report(Duration::from_secs(60)).is_none());
        meter.set_source(LagSource::Heartbeat);
        let r = meter.due_report(Duration::from_secs(60)).expect("source changed");
        assert_eq!(r.source, "heartbeat");
        assert!(meter.due_report(Duration::from_secs(60)).is_none());
    }

    #[test]
    fn recent_lag_counts_a_missing_heartbeat_and_forgets_stale_event_samples() {
        let meter = LagMeter::new(Duration::from_secs(60));
        let interval = Duration::from_millis(500);
        assert_eq!(meter.recent_lag_us(interval), None, "nothing known yet");
        meter.set_source(LagSource::Heartbeat);
        meter.record_heartbeat(now_us() - 40_000);
        let lag = meter.recent_lag_us(interval).unwrap();
        assert!((40_000..1_000_000).contains(&lag), "{lag}");
        // A heartbeat overdue by more than the interval counts as lag.
        meter.last_sample_at_us.store(now_us() - 5_000_000, Ordering::Relaxed);
        let lag = meter.recent_lag_us(interval).unwrap();
        assert!(lag >= 4_400_000, "{lag}");
        // Event timestamps: an old sample says nothing about now (an idle source).
        meter.set_source(LagSource::EventTimestamps);
        assert_eq!(meter.recent_lag_us(interval), None);
        meter.record_event((now_us() / 1_000_000) as u32 - 3);
        assert!(meter.recent_lag_us(interval).unwrap() >= 2_000_000);
    }
}
