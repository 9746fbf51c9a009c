//! Backfill: copying a table's existing rows while the stream runs, exactly, without locks,
//! long transactions or writes on the source (DBLog's watermark algorithm, read-only).
//!
//! For each chunk of a table, in primary-key order (keyset pagination):
//!
//! 1. open a watermark window at the source reader: from then on the reader notes every key of
//!    the table the stream changes, and it replies with where in the binlog the stream stood,
//! 2. `SELECT` the next rows after the last copied key in a consistent snapshot that holds
//!    every transaction up to that binlog position (see [`snapshot`]: MariaDB sends a
//!    transaction to the reader before the engine makes it visible, so an ordinary read could
//!    miss a transaction the window did not see),
//! 3. read the source's GTID position (`high`).
//!
//! The chunk goes to the source reader, which holds it while the stream catches up: every
//! row of the chunk that a transaction in the window (seen after it opened, up to `high`)
//! changes is dropped, because the stream carries a version at least as new. Once the stream has passed
//! `high`, the remaining rows are placed into the stream right there, as upserts, with the
//! copy progress recorded in the same target transaction. The scheduler then orders them
//! against stream transactions on the same keys like any other transaction, so per-key order
//! holds and a restart resumes after the last committed chunk.
//!
//! Rows the stream changes before the backfill reaches them are applied as upserts of their
//! full row image (sluice requires `binlog_row_image=FULL`); the later chunk then carries a
//! snapshot at least as new, or drops the row if it changes again inside its window.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use sluice_binlog::{SourcePosition, Value};

use crate::apply::schedule::{key_hash, KeyHash};
use crate::ops::lag::LagMeter;
use crate::select::rules::TablePlan;
use crate::source_rows::{convert_values, source_key, KeysetQuery, READ_SESSION};
use crate::target::BackfillProgress;

pub mod snapshot;
use snapshot::BinlogCoord;

/// Attempts at a chunk's source reads before the table's copy is marked failed (a lost
/// connection or a server restart is worth retrying; the reads hold no state).
const READ_ATTEMPTS: u32 = 4;

/// How often a throttled copy looks at the stream's lag again.
const THROTTLE_POLL: Duration = Duration::from_millis(100);

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
    /// which of the table's keys the stream changes. Replied to once it is open, between two
    /// whole source transactions; the chunk's snapshot is taken after that and holds every
    /// transaction the stream passed before.
    Open {
        table: String,
        reply: tokio::sync::oneshot::Sender<WindowStart>,
    },
    /// The chunk read inside the window it names.
    Chunk(Chunk),
    /// A table's copy failed: record why, after the chunks of it already handed over.
    Failed(Chunk),
}

/// An open window, as the reader reports it.
#[derive(Debug, Clone)]
pub struct WindowStart {
    pub id: u64,
    /// The end of the last source transaction the stream passed before the window opened
    /// (`None`: none on this connection yet, so any snapshot holds all it passed).
    pub stream_at: Option<BinlogCoord>,
    /// The stream's position then (what a MySQL source's snapshot must hold).
    pub passed: sluice_binlog::SourcePosition,
}

/// A chunk of source rows and the source position read right after its `SELECT` (the end of
/// its watermark window; the window started when the reader opened it).
#[derive(Debug)]
pub struct Chunk {
    /// The reader's window this chunk was read in.
    pub window: u64,
    pub plan: Arc<TablePlan>,
    pub high: SourcePosition,
    /// The rows that pass the table's filter, projected to target rows, each with the hash of
    /// its source key (what the stream's changes are matched against), in key order.
    pub rows: Vec<(KeyHash, Vec<Value>)>,
    /// The target columns a column-only copy fills (`None`: whole rows).
    pub fill: Option<Arc<Vec<usize>>>,
    /// The progress to record with the rows.
    pub progress: BackfillProgress,
    /// Its place among the chunks in flight (`None`: a failure record).
    pub in_flight: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Chunk {
    /// Drops the rows whose source key is in `touched`.
    pub fn drop_touched(&mut self, touched: &HashSet<KeyHash>) {
        if !touched.is_empty() {
            self.rows.retain(|(key, _)| !touched.contains(key));
        }
    }
}

/// Where a table's copy starts.
#[derive(Debug, Clone)]
pub struct BackfillJob {
    pub plan: Arc<TablePlan>,
    pub last_key: Option<String>,
    pub rows_copied: u64,
    /// Target columns to fill in existing rows (a column-only copy), or empty for whole rows.
    pub fill_columns: Vec<usize>,
}

/// How the copies run (from `[backfill]`).
#[derive(Debug, Clone)]
pub struct BackfillSettings {
    pub chunk_rows: usize,
    pub parallel_tables: usize,
    /// Chunks read but not yet committed, at most (all tables together).
    pub chunks_in_flight: usize,
    /// Pause while the stream's lag is above this; `None` never pauses.
    pub max_lag: Option<Duration>,
    /// The heartbeat interval (a missing heartbeat counts as lag after it).
    pub heartbeat_interval: Duration,
    /// MariaDB or MySQL: which variable holds the source's position (the chunks' high marks).
    pub flavor: sluice_binlog::SourceFlavor,
}

/// A table's copy as the progress display and logs see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyState {
    Pending,
    Copying,
    /// Paused because the stream's lag is above `[backfill] max_lag_ms`.
    Throttled,
    Ready,
    Failed(String),
}

/// One table's live copy figures.
#[derive(Debug, Clone)]
pub struct TableCopy {
    pub state: CopyState,
    /// Rows committed at the target (stored progress).
    pub rows_copied: u64,
    pub rows_estimate: u64,
    /// Column-only copy: the columns it fills.
    pub columns: Vec<String>,
    started: Instant,
    rows_at_start: u64,
}

impl TableCopy {
    /// Rows per second committed since this process started the copy.
    pub fn rows_per_s(&self) -> u64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs < 0.001 {
            return 0;
        }
        (self.rows_copied.saturating_sub(self.rows_at_start) as f64 / secs) as u64
    }

    /// Estimated time to finish, from the rate so far and the source's row estimate.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.rows_per_s();
        if rate == 0 || self.state == CopyState::Ready {
            return None;
        }
        Some(Duration::from_secs(
            self.rows_estimate.saturating_sub(self.rows_copied) / rate,
        ))
    }
}

/// Every table's copy in this process: written by the copy tasks and the backfill writers,
/// read by the progress bars.
#[derive(Debug, Default)]
pub struct CopyBoard {
    tables: Mutex<BTreeMap<String, TableCopy>>,
}

impl CopyBoard {
    fn with_table(&self, table: &str, f: impl FnOnce(&mut TableCopy)) {
        if let Some(t) = self.tables.lock().expect("copy board lock").get_mut(table) {
            f(t);
        }
    }

    /// A copy is planned (shown as pending until it starts).
    pub fn planned(&self, job: &BackfillJob) {
        self.tables.lock().expect("copy board lock").insert(
            job.plan.target.name.clone(),
            TableCopy {
                state: CopyState::Pending,
                rows_copied: job.rows_copied,
                rows_estimate: 0,
                columns: fill_names(&job.plan, &job.fill_columns),
                started: Instant::now(),
                rows_at_start: job.rows_copied,
            },
        );
    }

    fn started(&self, table: &str, rows_estimate: u64) {
        self.with_table(table, |t| {
            t.state = CopyState::Copying;
            t.rows_estimate = rows_estimate.max(t.rows_copied);
            t.started = Instant::now();
            t.rows_at_start = t.rows_copied;
        });
    }

    fn set_throttled(&self, table: &str, throttled: bool) {
        self.with_table(table, |t| {
            if matches!(t.state, CopyState::Copying | CopyState::Throttled) {
                t.state = if throttled {
                    CopyState::Throttled
                } else {
                    CopyState::Copying
                };
            }
        });
    }

    /// A chunk (with `progress`) committed at the target.
    pub fn committed(&self, progress: &BackfillProgress) {
        self.with_table(&progress.table, |t| {
            t.rows_copied = progress.rows_copied;
            t.rows_estimate = t.rows_estimate.max(progress.rows_copied);
            if let Some(e) = &progress.error {
                t.state = CopyState::Failed(e.clone());
            } else if progress.done {
                t.state = CopyState::Ready;
            }
        });
    }

    fn failed(&self, table: &str, reason: &str) {
        self.with_table(table, |t| t.state = CopyState::Failed(reason.to_owned()));
    }

    /// The table's figures now, by target table name.
    pub fn snapshot(&self) -> Vec<(String, TableCopy)> {
        self.tables
            .lock()
            .expect("copy board lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// The target column names of a column-only copy.
fn fill_names(plan: &TablePlan, fill: &[usize]) -> Vec<String> {
    fill.iter().map(|&i| plan.target.columns[i].name.clone()).collect()
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

/// Copies every job's table, `parallel_tables` at a time, handing chunks to the reader.
/// A table whose copy fails is recorded as failed (with the reason, in the target and on the
/// board) and the others go on; the stream is never stopped by a copy. Returns when every
/// copy has ended or the reader went away.
pub async fn run_backfills(
    pool: mysql_async::Pool,
    jobs: Vec<BackfillJob>,
    settings: BackfillSettings,
    tx: tokio::sync::mpsc::Sender<BackfillMsg>,
    board: Arc<CopyBoard>,
    lag: Arc<LagMeter>,
) {
    for job in &jobs {
        board.planned(job);
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(settings.parallel_tables.max(1)));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(settings.chunks_in_flight.max(1)));
    let mut copies = tokio::task::JoinSet::new();
    for job in jobs {
        let (pool, settings, tx, board, lag) = (pool.clone(), settings.clone(), tx.clone(), board.clone(), lag.clone());
        let (permits, in_flight) = (permits.clone(), in_flight.clone());
        copies.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let table = job.plan.source.qualified_name();
            let target = job.plan.target.name.clone();
            tracing::info!(
                table = %table,
                resume = job.last_key.is_some(),
                columns = ?fill_names(&job.plan, &job.fill_columns),
                "backfill started"
            );
            let mut copy = TableCopier::new(job, &settings);
            match copy.run(&pool, &tx, &board, &lag, &in_flight).await {
                Ok(()) => {}
                Err(e) => {
                    let reason = e.to_string();
                    tracing::error!(table = %table, "{reason}; the table stays not ready (restart sluice to retry)");
                    board.failed(&target, &reason);
                    let _ = tx.send(BackfillMsg::Failed(copy.failure(reason))).await;
                }
            }
        });
    }
    while copies.join_next().await.is_some() {}
}

/// One table's copy: where it stands, and the chunk loop.
struct TableCopier {
    plan: Arc<TablePlan>,
    fill: Option<Arc<Vec<usize>>>,
    chunk_rows: usize,
    max_lag: Option<Duration>,
    heartbeat_interval: Duration,
    flavor: sluice_binlog::SourceFlavor,
    /// The stored-progress form of the last key read, and the rows read so far.
    last_key_text: Option<String>,
    rows_copied: u64,
    /// The same two as of the last chunk handed over (what a failure record may say: a chunk
    /// read but not handed over must be read again after a restart).
    handed_over: (Option<String>, u64),
    rows_estimate: u64,
    started: Instant,
    rows_at_start: u64,
}

impl TableCopier {
    fn new(job: BackfillJob, settings: &BackfillSettings) -> Self {
        TableCopier {
            fill: (!job.fill_columns.is_empty()).then(|| Arc::new(job.fill_columns)),
            plan: job.plan,
            chunk_rows: settings.chunk_rows,
            max_lag: settings.max_lag,
            heartbeat_interval: settings.heartbeat_interval,
            flavor: settings.flavor,
            handed_over: (job.last_key.clone(), job.rows_copied),
            last_key_text: job.last_key,
            rows_copied: job.rows_copied,
            rows_estimate: 0,
            started: Instant::now(),
            rows_at_start: job.rows_copied,
        }
    }

    fn progress(&self, done: bool, error: Option<String>) -> BackfillProgress {
        let secs = self.started.elapsed().as_secs_f64();
        BackfillProgress {
            table: self.plan.target.name.clone(),
            done,
            last_key: self.last_key_text.clone(),
            rows_copied: self.rows_copied,
            rows_estimate: self.rows_estimate.max(self.rows_copied),
            rows_per_s: if secs > 0.001 {
                (self.rows_copied.saturating_sub(self.rows_at_start) as f64 / secs) as u64
            } else {
                0
            },
            error,
            columns: self
                .fill
                .as_deref()
                .map(|f| fill_names(&self.plan, f))
                .unwrap_or_default(),
            stale: false,
        }
    }

    /// The record of a failed copy: the progress of the last chunk handed over, and why.
    fn failure(&self, reason: String) -> Chunk {
        let mut progress = self.progress(false, Some(reason));
        (progress.last_key, progress.rows_copied) = self.handed_over.clone();
        Chunk {
            window: 0,
            plan: self.plan.clone(),
            high: SourcePosition::new(),
            rows: Vec::new(),
            fill: self.fill.clone(),
            progress,
            in_flight: None,
        }
    }

    /// Hands the chunk being converted (if any) to the reader once its conversion is done.
    /// `Ok(false)`: the reader has gone.
    async fn hand_over(
        &mut self,
        converting: &mut Option<tokio::task::JoinHandle<Result<Chunk, BackfillError>>>,
        tx: &tokio::sync::mpsc::Sender<BackfillMsg>,
    ) -> Result<bool, BackfillError> {
        let Some(handle) = converting.take() else {
            return Ok(true);
        };
        let chunk = handle.await.map_err(|e| BackfillError::Query {
            table: self.plan.source.qualified_name(),
            message: format!("converting a chunk failed: {e}"),
        })??;
        let handed_over = (chunk.progress.last_key.clone(), chunk.progress.rows_copied);
        if tx.send(BackfillMsg::Chunk(chunk)).await.is_err() {
            return Ok(false);
        }
        self.handed_over = handed_over;
        Ok(true)
    }

    fn query_err(&self, e: mysql_async::Error) -> BackfillError {
        BackfillError::Query {
            table: self.plan.source.qualified_name(),
            message: crate::source_rows::error_text(&e),
        }
    }

    async fn connect(&self, pool: &mysql_async::Pool) -> Result<mysql_async::Conn, BackfillError> {
        let mut conn = pool.get_conn().await.map_err(|e| self.query_err(e))?;
        for setting in READ_SESSION {
            conn.query_drop(setting).await.map_err(|e| self.query_err(e))?;
        }
        Ok(conn)
    }

    /// Waits while the stream's lag is above the bound (never while the stream has no
    /// figure yet).
    async fn throttle(&self, board: &CopyBoard, lag: &LagMeter) {
        let Some(max) = self.max_lag else { return };
        let max_us = max.as_micros() as u64;
        let mut throttled = false;
        while lag.recent_lag_us(self.heartbeat_interval).is_some_and(|l| l > max_us) {
            if !throttled {
                tracing::info!(table = %self.plan.source.qualified_name(), max_lag_ms = max.as_millis() as u64, "backfill paused: the stream is lagging");
                board.set_throttled(&self.plan.target.name, true);
                throttled = true;
            }
            tokio::time::sleep(THROTTLE_POLL).await;
        }
        if throttled {
            board.set_throttled(&self.plan.target.name, false);
        }
    }

    async fn run(
        &mut self,
        pool: &mysql_async::Pool,
        tx: &tokio::sync::mpsc::Sender<BackfillMsg>,
        board: &CopyBoard,
        lag: &LagMeter,
        in_flight: &Arc<tokio::sync::Semaphore>,
    ) -> Result<(), BackfillError> {
        let def = self.plan.source.clone();
        let table = def.qualified_name();
        let mut last_key: Option<Vec<mysql_async::Value>> = match &self.last_key_text {
            Some(text) => Some(decode_key(text).ok_or(BackfillError::BadProgress { table: table.clone() })?),
            None => None,
        };
        let mut conn = self.connect(pool).await?;
        self.rows_estimate = conn
            .exec_first::<Option<u64>, _, _>(
                "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&def.schema, &def.name),
            )
            .await
            .map_err(|e| self.query_err(e))?
            .flatten()
            .unwrap_or(0);
        board.started(&self.plan.target.name, self.rows_estimate);
        self.started = Instant::now();
        self.rows_at_start = self.rows_copied;
        let query = KeysetQuery::new(&def, self.chunk_rows);
        // Chunk N is converted (filter, projection, key hashes) on a blocking thread while
        // chunk N+1 is read; chunks are handed over in order.
        let mut converting = None;
        loop {
            self.throttle(board, lag).await;
            // Read no further ahead than the backfill writers can take.
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                return Ok(());
            };
            let (reply, opened) = tokio::sync::oneshot::channel();
            if tx
                .send(BackfillMsg::Open {
                    table: table.clone(),
                    reply,
                })
                .await
                .is_err()
            {
                return Ok(());
            }
            let Ok(window) = opened.await else { return Ok(()) };
            let mut attempt = 1;
            let (raw, high) = loop {
                let read = async {
                    snapshot::begin(&mut conn, self.flavor, &window).await?;
                    let raw = query.chunk(&mut conn, last_key.as_deref()).await?;
                    let high = crate::source_rows::read_position(&mut conn, self.flavor).await?;
                    conn.query_drop("COMMIT").await?;
                    Ok::<_, snapshot::SnapshotError>((raw, high))
                };
                match read.await {
                    Ok(read) => break read,
                    Err(snapshot::SnapshotError::Sql(e)) if attempt < READ_ATTEMPTS => {
                        // The window stays open: a retry's snapshot is still inside it.
                        tracing::warn!(table = %table, attempt, error = %e, "backfill read failed; retrying");
                        tokio::time::sleep(Duration::from_millis(250) * 2u32.pow(attempt)).await;
                        attempt += 1;
                        conn = match self.connect(pool).await {
                            Ok(c) => c,
                            Err(_) if attempt < READ_ATTEMPTS => continue,
                            Err(e) => {
                                self.hand_over(&mut converting, tx).await?;
                                return Err(e);
                            }
                        };
                    }
                    Err(e) => {
                        self.hand_over(&mut converting, tx).await?;
                        return Err(BackfillError::Query {
                            table: table.clone(),
                            message: e.to_string(),
                        });
                    }
                }
            };
            let high: SourcePosition = high.map_err(|message| BackfillError::Query {
                table: table.clone(),
                message: format!("the source returned an {message}"),
            })?;
            let done = raw.len() < self.chunk_rows;
            // The next read starts after this chunk's last key: take it now, the rest of the
            // conversion runs beside that read.
            if let Some(last) = raw.last() {
                last_key = Some(source_key(&def, last));
            }
            self.rows_copied += raw.len() as u64;
            self.last_key_text = last_key.as_deref().map(encode_key);
            let progress = self.progress(done, None);
            let (plan, fill) = (self.plan.clone(), self.fill.clone());
            let next =
                tokio::task::spawn_blocking(move || convert_chunk(plan, raw, window.id, high, fill, progress, permit));
            if !self.hand_over(&mut converting, tx).await? {
                return Ok(());
            }
            converting = Some(next);
            if done {
                self.hand_over(&mut converting, tx).await?;
                return Ok(());
            }
        }
    }
}

/// A chunk's source rows as the chunk handed to the reader: converted, filtered by the
/// table's `where`, projected to target rows, each with its source key's hash.
fn convert_chunk(
    plan: Arc<TablePlan>,
    raw: Vec<mysql_async::Row>,
    window: u64,
    high: SourcePosition,
    fill: Option<Arc<Vec<usize>>>,
    progress: BackfillProgress,
    in_flight: tokio::sync::OwnedSemaphorePermit,
) -> Result<Chunk, BackfillError> {
    let def = &plan.source;
    let table = def.qualified_name();
    let mut rows = Vec::with_capacity(raw.len());
    for row in raw {
        let converted = convert_values(def, row).map_err(|column| BackfillError::Value {
            table: table.clone(),
            column,
        })?;
        if plan.passes(&converted) {
            let hash = key_hash(&table, &def.primary_key, &converted);
            rows.push((hash, plan.project(converted)));
        }
    }
    Ok(Chunk {
        window,
        plan,
        high,
        rows,
        fill,
        progress,
        in_flight: Some(in_flight),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
