//! The source reader: streams the binlog as a replica, keeps the schema at position, filters
//! and projects rows, and hands complete source transactions to the applier.
//!
//! On a lost connection it tells the applier to abort whatever is not committed, learns the
//! committed checkpoint, and reconnects from there with exponential backoff, so a
//! transaction cut in half by a network failure is never applied in part.

use std::time::Duration;

use sluice_binlog::replica::{BinlogStream, ReplicaConfig, ReplicaError};
use sluice_binlog::{DecodeError, EventBody, EventDecoder, RowChange, SourceGtid, SourcePosition};
use tokio::sync::{mpsc, oneshot};

use std::collections::HashSet;

use crate::apply::schedule::{key_hash, KeyHash};
use crate::apply::{ApplyMsg, ROWS_PER_MESSAGE};
use crate::backfill::snapshot::BinlogCoord;
use crate::backfill::{BackfillMsg, Chunk, WindowStart};
use crate::stream::schema::{MappedTable, SchemaError, SchemaTracker};
use crate::target::{Checkpoint, RowOp};

const BACKOFF_START: Duration = Duration::from_millis(200);
/// Short, so a source back from an outage is streamed from within seconds (a connection
/// attempt costs the source little).
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "the source no longer has the binlog for position {position}: {message}. \
         The transactions after sluice's checkpoint were purged (or never existed on this server); \
         sluice will not skip them silently. Rebuild the target from a fresh start, or restore the binlogs"
    )]
    PositionUnavailable { position: String, message: String },
    #[error(
        "the source's history has diverged from sluice's checkpoint {position}: {message}. The target holds \
         transactions this server never had (typically a replica promoted before it received everything the old \
         primary wrote). Point sluice at a server that holds the checkpoint, or rebuild the target for a full copy \
         (`sluice check` names the transaction)"
    )]
    Diverged { position: String, message: String },
    #[error("the source refused access: {0}. Check the replication user's grants (REPLICATION SLAVE, and BINLOG MONITOR on MariaDB or REPLICATION CLIENT on MySQL) and password")]
    AccessDenied(ReplicaError),
    #[error("corrupt or unsupported binlog data at GTID {gtid} (after source offset {log_pos}): {source}")]
    Decode {
        gtid: String,
        log_pos: u32,
        source: DecodeError,
    },
    #[error("row decode failed for table {table} at GTID {gtid}: {source}")]
    Rows {
        table: String,
        gtid: String,
        source: DecodeError,
    },
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("the applier stopped")]
    ApplierGone,
    #[error("the source connection was lost during a backfill ({0}); restart sluice: the copy resumes from its last committed chunk")]
    LostDuringBackfill(ReplicaError),
    #[error(transparent)]
    Backfill(#[from] crate::backfill::BackfillError),
}

/// Errors that end one connection attempt.
enum StreamEnd {
    /// Worth reconnecting (network failure, timeout, server restart).
    Retry(ReplicaError),
    Fatal(SourceError),
}

impl From<SourceError> for StreamEnd {
    fn from(e: SourceError) -> Self {
        StreamEnd::Fatal(e)
    }
}

impl From<SchemaError> for StreamEnd {
    fn from(e: SchemaError) -> Self {
        StreamEnd::Fatal(e.into())
    }
}

pub struct SourceReader {
    pub replica: ReplicaConfig,
    pub schema: SchemaTracker,
    pub tx: mpsc::Sender<ApplyMsg>,
    /// Set once the first connection succeeded; tests and the demo wait on it.
    pub connected: Option<oneshot::Sender<()>>,
    /// Chunks of tables being backfilled (see [`crate::backfill`]).
    pub backfill: Option<mpsc::Receiver<BackfillMsg>>,
    /// Open backfill windows, oldest first (the backfill opens the next chunk's window while
    /// the previous chunk waits for the stream to pass its high mark; several tables copy at
    /// once).
    pub windows: std::collections::VecDeque<Window>,
    /// The id of the next window.
    pub next_window: u64,
    /// sluice's heartbeat table, recognised in the stream though never replicated
    /// (see [`crate::ops::lag`]); `None` when heartbeats are off.
    pub heartbeat: Option<crate::ops::lag::HeartbeatTable>,
    /// Per-table counts of row changes received and filtered out (for `/metrics`).
    pub progress: std::sync::Arc<crate::apply::Progress>,
    /// Where the stream stands in the source's binlog files (for the backfill's snapshots).
    binlog: BinlogPlace,
}

/// The reader's place in the source's binlog files, as backfill snapshots need it.
#[derive(Default)]
struct BinlogPlace {
    /// The sequence number of the file being streamed (from the ROTATE events).
    file_seq: Option<u64>,
    /// The end offset of the last event read.
    event_end: u64,
    /// The end of the last whole transaction passed on this connection.
    last_txn_end: Option<BinlogCoord>,
    /// Windows opened while a transaction was half read: answered at its end, so that the
    /// chunk's snapshot must hold all of it (its first rows went by untouched).
    waiting: Vec<(u64, oneshot::Sender<WindowStart>)>,
}

impl BinlogPlace {
    /// A source transaction ended at the last event read (`passed`: the stream's position
    /// with it): answer the windows waiting for it.
    fn transaction_ended(&mut self, passed: &SourcePosition) {
        if let Some(file_seq) = self.file_seq {
            self.last_txn_end = Some(BinlogCoord {
                file_seq,
                offset: self.event_end,
            });
        }
        for (id, reply) in self.waiting.drain(..) {
            let _ = reply.send(WindowStart {
                id,
                stream_at: self.last_txn_end,
                passed: passed.clone(),
            });
        }
    }
}

/// The reader's side of a backfill chunk: the keys the stream changed since the window
/// opened, and the chunk once it is read.
pub struct Window {
    id: u64,
    table: String,
    touched: HashSet<KeyHash>,
    /// The stream emptied or dropped the table inside the window (TRUNCATE, DROP TABLE,
    /// which carry no row events): none of the chunk's rows may be written.
    emptied: bool,
    chunk: Option<Chunk>,
}

/// Events buffered between the socket reader task and the decoder.
const EVENT_QUEUE: usize = 1_024;

struct OpenTxn {
    gtid: SourceGtid,
    commit_unix: u32,
    standalone: bool,
    /// Already applied before (the checkpoint covers it): skip its events.
    duplicate: bool,
    /// Too large to buffer: its first rows went out as `LargeStart`.
    large: bool,
    pending: Vec<RowOp>,
    /// The timestamp of this sluice's heartbeat row, when the transaction carries one.
    heartbeat_us: Option<u64>,
    /// What its DDL does to target tables.
    changes: Vec<crate::apply::EdgeChange>,
}

impl SourceReader {
    /// A reader for `config`'s source; `schema` follows the tables it selects.
    pub fn new(
        config: &crate::config::Config,
        password: &crate::config::Secret,
        schema: SchemaTracker,
        tx: mpsc::Sender<ApplyMsg>,
        connected: Option<oneshot::Sender<()>>,
        progress: std::sync::Arc<crate::apply::Progress>,
    ) -> Self {
        SourceReader {
            replica: replica_config(config, password),
            schema,
            tx,
            connected,
            backfill: None,
            windows: Default::default(),
            next_window: 0,
            heartbeat: crate::ops::lag::HeartbeatTable::new(config),
            progress,
            binlog: BinlogPlace::default(),
        }
    }

    /// Streams from the checkpoint's low-water mark (skipping transactions it says are
    /// applied) until the applier goes away or a fatal error.
    pub async fn run(mut self, mut position: Checkpoint) -> Result<(), SourceError> {
        let mut backoff = BACKOFF_START;
        loop {
            let mut connected = false;
            match self.stream_once(&mut position, &mut connected).await {
                StreamEnd::Fatal(e) => return Err(e),
                StreamEnd::Retry(e) if e.is_access_denied() => return Err(SourceError::AccessDenied(e)),
                StreamEnd::Retry(e) if e.is_position_unavailable() => {
                    let message = match &e {
                        ReplicaError::Server { message, .. } => message.clone(),
                        other => other.to_string(),
                    };
                    let position = position.position.to_string();
                    // MariaDB's ER_GTID_POSITION_NOT_FOUND_IN_BINLOG2, sent as error 1236 with
                    // only its text to tell it from a purge: the GTID is missing although the
                    // server wrote higher sequence numbers in its domain.
                    return Err(if message.contains("diverged") {
                        SourceError::Diverged { position, message }
                    } else {
                        SourceError::PositionUnavailable { position, message }
                    });
                }
                StreamEnd::Retry(e) if self.backfill.is_some() => {
                    // A chunk handed to the applier but not committed would be lost with the
                    // abort while the copy moved past it; a restart resumes from the chunk
                    // progress the target holds.
                    return Err(SourceError::LostDuringBackfill(e));
                }
                StreamEnd::Retry(e) => {
                    // The delay grows only while attempts keep failing to connect.
                    if connected {
                        backoff = BACKOFF_START;
                    }
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "source connection lost; reconnecting");
                    let (reply, committed) = oneshot::channel();
                    if self.tx.send(ApplyMsg::Abort(reply)).await.is_err() {
                        return Err(SourceError::ApplierGone);
                    }
                    let committed: Checkpoint = committed.await.map_err(|_| SourceError::ApplierGone)?;
                    position = committed;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            if self.tx.is_closed() {
                return Ok(());
            }
        }
    }

    async fn send(&self, msg: ApplyMsg) -> Result<(), StreamEnd> {
        self.tx
            .send(msg)
            .await
            .map_err(|_| StreamEnd::Fatal(SourceError::ApplierGone))
    }

    /// One connection: streams until it ends; `connected` tells whether it got as far as
    /// streaming.
    async fn stream_once(&mut self, position: &mut Checkpoint, connected: &mut bool) -> StreamEnd {
        let start = position.resume_from();
        // For MySQL, GTIDs applied beyond the mark join the set the stream is compared with
        // (for MariaDB this changes nothing), so a backfill high mark holding them is passed.
        position.position = start.clone();
        let mut stream = match BinlogStream::connect_from(&self.replica, start.dump_start()).await {
            Ok(s) => s,
            Err(e) => return StreamEnd::Retry(e),
        };
        *connected = true;
        tracing::info!(position = %position.position, server = %stream.server_version, "streaming binlog");
        if let Some(tx) = self.connected.take() {
            let _ = tx.send(());
        }
        self.schema.reset_table_ids();
        // Positions are learnt again from this connection's events (a window is never open
        // across connections: a lost connection during a backfill ends the run).
        self.binlog = BinlogPlace::default();
        if let Some(hb) = self.heartbeat.as_mut() {
            hb.reset();
        }
        let mut decoder = EventDecoder::new();
        let mut txn: Option<OpenTxn> = None;
        // Reading the socket is not cancel-safe, so it runs in its own task; the loop below
        // selects over channels, which are.
        let (event_tx, mut events) = mpsc::channel(EVENT_QUEUE);
        let pump = tokio::spawn(async move {
            loop {
                let next = stream.next_event().await;
                let failed = next.is_err();
                if event_tx.send(next).await.is_err() || failed {
                    return;
                }
            }
        });
        let _stop_pump = AbortOnDrop(pump);
        loop {
            let backfill_open = self.backfill.is_some();
            tokio::select! {
                next = events.recv() => {
                    let raw = match next {
                        Some(Ok(raw)) => raw,
                        Some(Err(e)) => return StreamEnd::Retry(e),
                        None => return StreamEnd::Fatal(SourceError::ApplierGone),
                    };
                    if let Err(end) = self.handle_event(&mut decoder, &raw, &mut txn, position).await {
                        return end;
                    }
                }
                msg = async { self.backfill.as_mut().expect("open").recv().await }, if backfill_open => {
                    match msg {
                        Some(msg) => {
                            if let Err(end) = self.on_backfill(msg, position, txn.is_some()).await {
                                return end;
                            }
                        }
                        None => self.backfill = None,
                    }
                }
            }
        }
    }

    /// `in_transaction`: a source transaction is half read.
    async fn on_backfill(
        &mut self,
        msg: BackfillMsg,
        position: &Checkpoint,
        in_transaction: bool,
    ) -> Result<(), StreamEnd> {
        match msg {
            BackfillMsg::Open { table, reply } => {
                self.next_window += 1;
                self.windows.push_back(Window {
                    id: self.next_window,
                    table,
                    touched: HashSet::new(),
                    emptied: false,
                    chunk: None,
                });
                if in_transaction {
                    self.binlog.waiting.push((self.next_window, reply));
                } else {
                    let _ = reply.send(WindowStart {
                        id: self.next_window,
                        stream_at: self.binlog.last_txn_end,
                        passed: position.position.clone(),
                    });
                }
            }
            BackfillMsg::Chunk(chunk) => {
                if let Some(w) = self.windows.iter_mut().find(|w| w.id == chunk.window) {
                    w.chunk = Some(chunk);
                }
                self.emit_ready_chunk(position).await?;
            }
            BackfillMsg::Failed(record) => {
                // The window of the read that failed gets no chunk. The record queues behind
                // the table's chunks already read (its empty high mark is passed at once).
                let table = record.plan.source.qualified_name();
                self.windows.retain(|w| w.table != table || w.chunk.is_some());
                self.next_window += 1;
                self.windows.push_back(Window {
                    id: self.next_window,
                    table,
                    touched: HashSet::new(),
                    emptied: false,
                    chunk: Some(record),
                });
                self.emit_ready_chunk(position).await?;
            }
        }
        Ok(())
    }

    /// Hands each window's chunk to the applier once the stream has passed its high mark,
    /// without the rows the stream changed inside the window. A table's chunks go in key
    /// order (a window waits for the table's earlier ones); tables do not wait for each other.
    async fn emit_ready_chunk(&mut self, position: &Checkpoint) -> Result<(), StreamEnd> {
        while let Some(at) = self.windows.iter().enumerate().position(|(i, w)| {
            w.chunk.as_ref().is_some_and(|c| position.position.covers(&c.high))
                && !self.windows.iter().take(i).any(|earlier| earlier.table == w.table)
        }) {
            let window = self.windows.remove(at).expect("present");
            let mut chunk = window.chunk.expect("ready");
            chunk.drop_touched(&window.touched);
            if window.emptied {
                chunk.rows.clear();
            }
            tracing::debug!(table = %chunk.progress.table, rows = chunk.rows.len(), done = chunk.progress.done, "backfill chunk");
            self.send(ApplyMsg::from(chunk)).await?;
        }
        Ok(())
    }

    async fn handle_event(
        &mut self,
        decoder: &mut EventDecoder,
        raw: &[u8],
        txn: &mut Option<OpenTxn>,
        position: &mut Checkpoint,
    ) -> Result<(), StreamEnd> {
        let gtid_text = || {
            txn.as_ref()
                .map(|t| t.gtid.to_string())
                .unwrap_or_else(|| "(between transactions)".into())
        };
        let event = decoder.decode(raw).map_err(|source| SourceError::Decode {
            gtid: gtid_text(),
            log_pos: sluice_binlog::EventHeader::parse(raw).map(|h| h.log_pos).unwrap_or(0),
            source,
        })?;
        if event.header.log_pos != 0 {
            // Zero in the events the server makes up for the stream (a ROTATE naming the file).
            self.binlog.event_end = u64::from(event.header.log_pos);
        }
        if let Some(gtid) = event.body.source_gtid() {
            *txn = Some(OpenTxn {
                gtid,
                commit_unix: event.header.timestamp,
                // MariaDB flags a transaction without BEGIN/COMMIT (DDL); MySQL does not, so
                // its transactions count as standalone until a BEGIN says otherwise.
                standalone: match &event.body {
                    EventBody::Gtid(g) => g.is_standalone(),
                    _ => true,
                },
                duplicate: position.covers(gtid),
                large: false,
                pending: Vec::new(),
                heartbeat_us: None,
                changes: Vec::new(),
            });
            return Ok(());
        }
        match event.body {
            EventBody::Rotate { next_file, .. } => {
                let Some(seq) = BinlogCoord::file_seq(&next_file) else {
                    return Err(SourceError::Decode {
                        gtid: gtid_text(),
                        log_pos: event.header.log_pos,
                        source: DecodeError::Unsupported(format!(
                            "binlog file name {next_file:?} has no numeric extension (backfill snapshots need it)"
                        )),
                    }
                    .into());
                };
                self.binlog.file_seq = Some(seq);
            }
            EventBody::MysqlGtid(_) => {
                // ANONYMOUS_GTID: the source wrote a transaction without a GTID (gtid_mode is
                // not ON), which no checkpoint could cover; never apply it unrecorded.
                return Err(SourceError::Decode {
                    gtid: "(anonymous)".into(),
                    log_pos: event.header.log_pos,
                    source: DecodeError::Unsupported(
                        "a MySQL transaction without a GTID (ANONYMOUS_GTID): the source's gtid_mode must be ON".into(),
                    ),
                }
                .into());
            }
            EventBody::TableMap(map) => {
                let Some(t) = txn.as_mut() else { return Ok(()) };
                if t.duplicate {
                    return Ok(());
                }
                if self.heartbeat.as_mut().is_some_and(|hb| hb.on_table_map(&map)) {
                    return Ok(());
                }
                let gtid = t.gtid;
                if let MappedTable::New(plan) = self.schema.on_table_map(&map, Some(gtid)).await? {
                    self.send(ApplyMsg::PrepareTable(plan.target.clone())).await?;
                }
            }
            EventBody::Rows(rows) => {
                let Some(t) = txn.as_mut() else { return Ok(()) };
                if t.duplicate {
                    return Ok(());
                }
                if let Some(seen) = self.heartbeat.as_ref().and_then(|hb| hb.on_rows(&rows)) {
                    t.heartbeat_us = seen.or(t.heartbeat_us);
                    return Ok(());
                }
                // Unselected tables: skipped here without decoding a single row.
                let Some(plan) = self.schema.plan_for(rows.table_id).cloned() else {
                    return Ok(());
                };
                let rows_err = |source| SourceError::Rows {
                    table: plan.source.qualified_name(),
                    gtid: t.gtid.to_string(),
                    source,
                };
                let iter = rows.rows(&plan.source).map_err(|e| StreamEnd::Fatal(rows_err(e)))?;
                // The table's name is only needed (and built) while a backfill window is open.
                let window_table = if self.windows.is_empty() {
                    None
                } else {
                    Some(plan.source.qualified_name()).filter(|name| self.windows.iter().any(|w| &w.table == name))
                };
                let (mut received, mut filtered) = (0u64, 0u64);
                for change in iter {
                    let change = change.map_err(|e| StreamEnd::Fatal(rows_err(e)))?;
                    received += 1;
                    if let Some(table_name) = &window_table {
                        // Keys changed inside an open backfill window (filtered or not): the
                        // chunk must not overwrite the stream's version of these rows.
                        let key = &plan.source.primary_key;
                        let (first, second) = match &change {
                            RowChange::Insert(r) | RowChange::Delete(r) => (key_hash(table_name, key, r), None),
                            RowChange::Update { before, after } => (
                                key_hash(table_name, key, before),
                                Some(key_hash(table_name, key, after)),
                            ),
                        };
                        for w in self.windows.iter_mut().filter(|w| &w.table == table_name) {
                            w.touched.insert(first);
                            w.touched.extend(second);
                        }
                    }
                    let Some(op) = plan.target_op(change) else {
                        filtered += 1;
                        continue;
                    };
                    t.pending.push(op);
                    if t.pending.len() >= ROWS_PER_MESSAGE {
                        // Too large to buffer whole: stream it (the applier treats it as a barrier).
                        let ops = std::mem::take(&mut t.pending);
                        let msg = if t.large {
                            ApplyMsg::LargeRows(ops)
                        } else {
                            t.large = true;
                            ApplyMsg::LargeStart {
                                gtid: t.gtid,
                                commit_unix: t.commit_unix,
                                ops,
                            }
                        };
                        self.tx
                            .send(msg)
                            .await
                            .map_err(|_| StreamEnd::Fatal(SourceError::ApplierGone))?;
                    }
                }
                self.progress.count_stream_rows(&plan.target.name, received, filtered);
            }
            EventBody::TransactionPayload(_) => {
                // MySQL's compressed transactions: the stream reader follows MariaDB sources,
                // so refuse rather than skip a transaction's rows.
                return Err(SourceError::Decode {
                    gtid: gtid_text(),
                    log_pos: event.header.log_pos,
                    source: DecodeError::Unsupported(
                        "TRANSACTION_PAYLOAD event (MySQL binlog_transaction_compression=ON) in the replication stream"
                            .into(),
                    ),
                }
                .into());
            }
            EventBody::Xid { .. } => self.finish(txn, position).await?,
            EventBody::Query { sql, schema, .. } => {
                let Some(t) = txn.as_ref() else { return Ok(()) };
                let (gtid, duplicate, standalone) = (t.gtid, t.duplicate, t.standalone);
                match crate::stream::ddl::classify(&sql, &schema) {
                    crate::stream::ddl::Statement::Begin => {
                        if let Some(t) = txn.as_mut() {
                            t.standalone = false;
                        }
                    }
                    crate::stream::ddl::Statement::Commit | crate::stream::ddl::Statement::Rollback => {
                        self.finish(txn, position).await?
                    }
                    _ => {
                        if !duplicate {
                            let changes = match self.schema.on_statement(&sql, &schema, gtid) {
                                Ok(changes) => changes,
                                Err(e @ (SchemaError::SwapAddsColumns { .. } | SchemaError::AddsColumns { .. })) => {
                                    // Followed by running again from just past the swap or ALTER:
                                    // its GTID is committed (nothing else to apply) before the run ends.
                                    if let Some(t) = txn.take() {
                                        self.send(ApplyMsg::Txn {
                                            gtid: t.gtid,
                                            commit_unix: t.commit_unix,
                                            ops: Vec::new(),
                                        })
                                        .await?;
                                        position.position.advance(t.gtid);
                                    }
                                    return Err(e.into());
                                }
                                Err(e) => return Err(e.into()),
                            };
                            for change in &changes {
                                let (crate::apply::EdgeChange::Truncate(table) | crate::apply::EdgeChange::Drop(table)) =
                                    change
                                else {
                                    continue;
                                };
                                for w in self.windows.iter_mut().filter(|w| w.table == table.source_name) {
                                    w.emptied = true;
                                }
                            }
                            if let Some(t) = txn.as_mut() {
                                t.changes.extend(changes);
                            }
                        }
                        if standalone {
                            self.finish(txn, position).await?;
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A source transaction ends (also one already applied, or an empty one).
    async fn finish(&mut self, txn: &mut Option<OpenTxn>, position: &mut Checkpoint) -> Result<(), StreamEnd> {
        let ended = self.end_transaction(txn, position).await;
        self.binlog.transaction_ended(&position.position);
        ended
    }

    async fn end_transaction(&mut self, txn: &mut Option<OpenTxn>, position: &mut Checkpoint) -> Result<(), StreamEnd> {
        let Some(t) = txn.take() else { return Ok(()) };
        if t.duplicate {
            return Ok(());
        }
        if !t.changes.is_empty() {
            if t.large || !t.pending.is_empty() {
                // DDL is logged in a transaction of its own; rows beside it are not expected.
                return Err(StreamEnd::Fatal(SourceError::Schema(SchemaError::DdlWithRows {
                    gtid: t.gtid.to_string(),
                })));
            }
            self.send(ApplyMsg::Ddl {
                gtid: t.gtid,
                commit_unix: t.commit_unix,
                changes: t.changes,
            })
            .await?;
        } else if t.large {
            if !t.pending.is_empty() {
                self.send(ApplyMsg::LargeRows(t.pending)).await?;
            }
            self.send(ApplyMsg::LargeEnd).await?;
        } else {
            self.send(ApplyMsg::Txn {
                gtid: t.gtid,
                commit_unix: t.commit_unix,
                ops: t.pending,
            })
            .await?;
            if let Some(sent_us) = t.heartbeat_us {
                // Follows its transaction: the applier samples the lag once that commits.
                self.send(ApplyMsg::Heartbeat { sent_us }).await?;
            }
        }
        position.position.advance(t.gtid);
        self.emit_ready_chunk(position).await
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Shared by the pipeline for building the replica config.
pub fn replica_config(config: &crate::config::Config, password: &crate::config::Secret) -> ReplicaConfig {
    ReplicaConfig {
        host: config.source.host.clone(),
        port: config.source.port,
        user: config.source.user.clone(),
        password: password.expose().to_owned(),
        server_id: config.source.server_id,
        heartbeat: config.heartbeat(),
        connect_timeout: Duration::from_secs(10),
        tls: config.source.tls(),
    }
}
