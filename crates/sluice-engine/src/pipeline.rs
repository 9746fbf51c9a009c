//! The replication pipeline: preflight, target preparation, then source reader and applier
//! running together until shutdown or a fatal error.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sluice_binlog::SourcePosition;
use tokio::sync::{mpsc, oneshot};

use crate::apply::{run_applier, BatchPolicy, Progress};
use crate::backfill::BackfillJob;
use crate::config::{Config, ConfigError, StartPosition, TargetConfig};
use crate::log::nats::NatsLog;
use crate::log::{LogError, TransactionLog};
use crate::ops::preflight::{self, PreflightError, SourceInfo};
use crate::select::rules::{PlanError, TableFilter, TablePlan};
use crate::stream::catalog::{self, CatalogError};
use crate::stream::reader::{SourceError, SourceReader};
use crate::stream::schema::SchemaTracker;
use crate::target::fence::WriterFence;
use crate::target::mariadb::MariaDbTarget;
use crate::target::postgres::PostgresTarget;
use crate::target::sqlite::SqliteTarget;
use crate::target::{Checkpoint, Target, TargetError};

/// Capacity of the source → applier channel, in messages (each at most
/// [`crate::apply::ROWS_PER_MESSAGE`] rows): bounds memory for any transaction size.
pub const CHANNEL_CAPACITY: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// How the process should treat an error: the one retry policy of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A person must change something (config, grants, server settings, schema).
    NeedsOperator,
    /// The data or the target is in a state sluice cannot continue from safely.
    Fatal,
    /// The target went away (restart, network): run again, after a pause, from the target's
    /// own checkpoint, exactly as after a restart.
    Transient,
}

impl RunError {
    /// Whether this run ended only to be started again at once, with the same config, from
    /// the target's checkpoint: an online schema change swap that added replicated columns
    /// (the new run's start adds them at the target and copies their values).
    pub fn runs_again(&self) -> bool {
        matches!(
            self,
            RunError::Source(SourceError::Schema(
                crate::stream::schema::SchemaError::SwapAddsColumns { .. }
                    | crate::stream::schema::SchemaError::AddsColumns { .. }
            ))
        )
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            RunError::Config(_)
            | RunError::Preflight(_)
            | RunError::Plan(_)
            | RunError::Source(
                SourceError::Schema(_)
                | SourceError::AccessDenied(_)
                | SourceError::PositionUnavailable { .. }
                | SourceError::Diverged { .. },
            )
            | RunError::Log(
                LogError::Connect { .. }
                | LogError::NoStream { .. }
                | LogError::UnknownVersion { .. }
                | LogError::RowTooLarge { .. }
                | LogError::Truncated { .. },
            ) => ErrorKind::NeedsOperator,
            RunError::Target(TargetError::Unreachable { .. }) => ErrorKind::Transient,
            _ => ErrorKind::Fatal,
        }
    }
}

/// Opens a connection pool to the source with the config's credentials.
pub fn source_pool(config: &Config) -> Result<mysql_async::Pool, ConfigError> {
    let opts = crate::source_rows::source_opts(config)?.pool_opts(
        mysql_async::PoolOpts::default().with_constraints(mysql_async::PoolConstraints::new(0, 2).expect("0 <= 2")),
    );
    Ok(mysql_async::Pool::new(opts))
}

async fn source_conn(pool: &mysql_async::Pool, config: &Config) -> Result<mysql_async::Conn, PreflightError> {
    pool.get_conn().await.map_err(|e| {
        let mut message = crate::source_rows::error_text(&e);
        // An account that requires TLS is refused like a bad password.
        if !config.source.tls().enabled() && matches!(&e, mysql_async::Error::Server(s) if s.code == 1045) {
            message.push_str(
                " (the connection is not encrypted: tls_mode is \"disabled\"; if the account requires TLS, \
                 REQUIRE SSL, set [source] tls_mode)",
            );
        }
        PreflightError::Connect {
            addr: format!("{}:{}", config.source.host, config.source.port),
            user: config.source.user.clone(),
            message,
        }
    })
}

/// `sluice check`: validates the config and the source; never writes anything.
pub async fn check(config: &Config) -> Result<(SourceInfo, Vec<Arc<TablePlan>>), RunError> {
    let pool = source_pool(config)?;
    let checkpoint = read_checkpoint(config)?;
    let mut conn = source_conn(&pool, config).await?;
    let info = preflight::check_source(&mut conn, config, checkpoint.as_ref()).await?;
    let plans = initial_plans(&mut conn, config).await?;
    drop(conn);
    pool.disconnect().await.ok();
    Ok((info, plans))
}

/// The config's table rules with the HMAC key they need.
fn table_filter(config: &Config) -> Result<TableFilter, ConfigError> {
    let mut filter = TableFilter::new(config.selectors(), config.hmac_key()?);
    if let TargetConfig::Postgres(_) = config.target {
        // NAMEDATALEN - 1; MySQL allows 64 characters (up to 256 bytes).
        filter = filter.limiting_identifiers(crate::select::rules::IdentifierLimit {
            bytes: 63,
            target: "PostgreSQL",
        });
    }
    // The heartbeat table is sluice's own: never replicated, whatever the rules say.
    Ok(match config.lag.heartbeat {
        true => filter.excluding(&config.lag.database, &config.lag.table),
        false => filter,
    })
}

/// Opens one connection to the configured target.
pub fn open_target(config: &Config) -> Result<Box<dyn Target>, RunError> {
    let named = |e: TargetError| RunError::from(e.naming_target(&config.target_description()));
    Ok(match &config.target {
        TargetConfig::Sqlite { path } => Box::new(SqliteTarget::open(path).map_err(named)?),
        TargetConfig::Mariadb(t) => {
            Box::new(MariaDbTarget::connect_with(mariadb_opts(config, t)?, &t.database).map_err(named)?)
        }
        TargetConfig::Postgres(t) => Box::new(
            PostgresTarget::connect_tls(
                &postgres_conn_str(config, t)?,
                t.schema.as_deref().unwrap_or("public"),
                &t.tls(),
            )
            .map_err(named)?,
        ),
        TargetConfig::Nats(_) => return Err(published_not_run()),
    })
}

/// A NATS target is the fan-out log, which `sluice publish` writes.
fn published_not_run() -> RunError {
    ConfigError::Invalid {
        key: "target.kind".into(),
        message: "a NATS target is the fan-out log: run `sluice publish` with this config (`sluice run`, `status` \
                  and `verify` work on the edges, whose [source] kind is \"nats\")"
            .into(),
    }
    .into()
}

fn mariadb_opts(
    config: &Config,
    t: &crate::config::ServerTarget,
) -> Result<crate::target::mariadb::OptsBuilder, RunError> {
    let password = config.target_password()?;
    Ok(crate::target::mariadb::OptsBuilder::new()
        .ip_or_hostname(Some(t.host.clone()))
        .tcp_port(t.port.unwrap_or(3306))
        .user(Some(t.user.clone()))
        .pass(Some(password.expose().to_owned()))
        .prefer_socket(false)
        .ssl_opts(crate::target::mariadb::tls_opts(&t.tls())))
}

fn postgres_conn_str(config: &Config, t: &crate::config::ServerTarget) -> Result<String, RunError> {
    let password = config.target_password()?;
    let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    Ok(format!(
        "host={} port={} user={} password={} dbname={} connect_timeout=10",
        quote(&t.host),
        t.port.unwrap_or(5432),
        quote(&t.user),
        quote(password.expose()),
        quote(&t.database)
    ))
}

/// Takes the target's one-writer lock (see `target::fence`) for as long as it is held.
pub fn fence_target(config: &Config) -> Result<WriterFence, RunError> {
    let named = |e: TargetError| RunError::from(e.naming_target(&config.target_description()));
    Ok(match &config.target {
        TargetConfig::Sqlite { path } => WriterFence::sqlite(path).map_err(named)?,
        TargetConfig::Mariadb(t) => {
            // The lock needs no database of its own: the session connects without one.
            WriterFence::mariadb(mariadb_opts(config, t)?.db_name(None::<String>).into(), &t.database).map_err(named)?
        }
        TargetConfig::Postgres(t) => {
            let conn = postgres_conn_str(config, t)?;
            let tls = t.tls();
            WriterFence::postgres(
                move || crate::target::postgres::session(&conn, &tls),
                t.schema.as_deref().unwrap_or("public"),
            )
            .map_err(named)?
        }
        TargetConfig::Nats(_) => return Err(published_not_run()),
    })
}

/// Who writes the target now (the holder of its writer lock, see `target::fence`), without
/// taking the lock; `None` when no `sluice run` does. Its connection gives up after
/// `timeout` (a frozen server must not hang `sluice status`).
pub fn fence_holder(config: &Config, timeout: Duration) -> Result<Option<String>, RunError> {
    use crate::target::fence;
    Ok(match &config.target {
        TargetConfig::Sqlite { path } => fence::sqlite_holder(path)?,
        TargetConfig::Mariadb(t) => {
            let opts = mariadb_opts(config, t)?
                .db_name(None::<String>)
                .tcp_connect_timeout(Some(timeout))
                .read_timeout(Some(timeout))
                .write_timeout(Some(timeout));
            let mut conn = mysql::Conn::new(opts).map_err(|e| TargetError::Unreachable {
                operation: "ask who writes",
                message: e.to_string(),
            })?;
            fence::mariadb_holder(&mut conn, &t.database)?
        }
        TargetConfig::Postgres(t) => {
            let conn = postgres_conn_str(config, t)?;
            let tls = t.tls();
            fence::postgres_holder(
                move || crate::target::postgres::session(&conn, &tls),
                t.schema.as_deref().unwrap_or("public"),
            )?
        }
        TargetConfig::Nats(_) => return Err(published_not_run()),
    })
}

/// Reads the target's checkpoint without creating anything.
pub fn read_checkpoint(config: &Config) -> Result<Option<Checkpoint>, RunError> {
    if let TargetConfig::Sqlite { path } = &config.target {
        if !path.exists() {
            return Ok(None);
        }
    }
    Ok(open_target(config)?.load_checkpoint()?)
}

/// Plans every existing source table the config selects, as the source defines it now,
/// after checking that the source user may read them (the grants, then every table).
pub async fn current_plans(pool: &mysql_async::Pool, config: &Config) -> Result<Vec<Arc<TablePlan>>, RunError> {
    let mut conn = source_conn(pool, config).await?;
    preflight::check_source(&mut conn, config, None).await?;
    initial_plans(&mut conn, config).await
}

/// Plans every existing source table the config selects.
async fn initial_plans(conn: &mut mysql_async::Conn, config: &Config) -> Result<Vec<Arc<TablePlan>>, RunError> {
    let filter = table_filter(config)?;
    let mut plans: Vec<Arc<TablePlan>> = Vec::new();
    let mut refused = Vec::new();
    for (schema, table) in catalog::list_tables(conn).await? {
        if !filter.is_selected(&schema, &table) {
            continue;
        }
        let Some(def) = catalog::load_table(conn, &schema, &table).await? else {
            continue;
        };
        let plan = match filter.plan(&def).expect("selected") {
            Ok(plan) => plan,
            Err(e) => {
                refused.push(e);
                continue;
            }
        };
        if let Some(other) = plans.iter().find(|p| p.target.name == plan.target.name) {
            refused.push(PlanError::TargetNameClash {
                first: other.target.source_name.clone(),
                second: plan.target.source_name.clone(),
                target: plan.target.name.clone(),
            });
            continue;
        }
        plans.push(Arc::new(plan));
    }
    if let Some(e) = PlanError::all(refused) {
        return Err(e.into());
    }
    preflight::probe_tables(conn, &plans).await?;
    Ok(plans)
}

/// `plans` (every column the rules select) planned again, against the target's columns, for
/// each table whose target table lacks some of them: the columns a rule holds back
/// (`new_columns = "hold"`, not released) are left out and listed in `TablePlan::held`.
pub fn hold_new_columns(
    config: &Config,
    target: &mut dyn Target,
    plans: Vec<Arc<TablePlan>>,
) -> Result<Vec<Arc<TablePlan>>, RunError> {
    let known = crate::schema_manager::known_columns(target, &plans)?;
    if known.is_empty() {
        return Ok(plans);
    }
    let filter = table_filter(config)?;
    let mut refused = Vec::new();
    let mut out = Vec::with_capacity(plans.len());
    for plan in plans {
        match known.get(&plan.target.name) {
            None => out.push(plan),
            Some(columns) => match filter.plan_known(&plan.source, Some(columns)).expect("selected") {
                Ok(held) => out.push(Arc::new(held)),
                Err(e) => refused.push(e),
            },
        }
    }
    match PlanError::all(refused) {
        Some(e) => Err(e.into()),
        None => Ok(out),
    }
}

/// How long a clean stop waits to apply what the source holds (see [`drain_to_source_position`]).
pub const STOP_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits, at most [`STOP_DRAIN_TIMEOUT`], until the heartbeat writer has stopped (no write in
/// flight) and the applied position covers the source's binlog position as it is then. Runs
/// beside the reader and the applier, which keep working meanwhile; a source that cannot be
/// asked, or never gets there, ends the wait with a warning (the next start resumes from the
/// checkpoint as always).
async fn drain_to_source_position(
    pool: &mysql_async::Pool,
    flavor: sluice_binlog::SourceFlavor,
    heartbeat: &mut crate::ops::lag::AbortOnDrop,
    progress: &Progress,
) {
    let drain = async {
        // The writer returns between writes once told to stop; its end is all that is awaited.
        let _ = (&mut heartbeat.0).await;
        let mut conn = pool.get_conn().await?;
        let Ok(position) = crate::source_rows::read_position(&mut conn, flavor).await? else {
            return Ok::<_, mysql_async::Error>(());
        };
        loop {
            if progress
                .applied_position
                .lock()
                .expect("progress lock")
                .covers(&position)
            {
                tracing::debug!(%position, "stopping: applied up to the source's position");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    match tokio::time::timeout(STOP_DRAIN_TIMEOUT, drain).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("stopping without applying up to the source's position: cannot read it ({e})"),
        Err(_) => tracing::warn!(
            timeout_s = STOP_DRAIN_TIMEOUT.as_secs(),
            "stopping without applying up to the source's position: not reached in time"
        ),
    }
}

/// Where a target without a checkpoint starts (`[source] start`), in the source's flavour.
fn start_position(config: &Config, info: &preflight::SourceInfo) -> Result<SourcePosition, RunError> {
    let position = match config.start_position()? {
        StartPosition::Current => info.binlog_position.clone(),
        StartPosition::Earliest => SourcePosition::new(),
        StartPosition::At(p) => p,
    };
    in_flavor(position, info)
}

/// `position` as one of the source's flavour (an empty one takes it; preflight has refused a
/// checkpoint of the other flavour, and a `start` of the other flavour is refused here).
fn in_flavor(position: SourcePosition, info: &preflight::SourceInfo) -> Result<SourcePosition, RunError> {
    position
        .for_flavor(info.flavor)
        .map_err(|e| preflight::PreflightError::Setting(e.to_string()).into())
}

/// Options for [`run`] beyond the config.
pub struct RunOptions {
    pub progress: Arc<Progress>,
    /// Fires once the source stream is connected.
    pub connected: Option<oneshot::Sender<()>>,
}

/// Runs replication until `shutdown` completes (clean stop: complete source transactions
/// are committed, an incomplete one is rolled back) or a fatal error.
pub async fn run(config: &Config, options: RunOptions, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    if let Some(log) = config.log_source() {
        return run_from_log(config, &log, options, shutdown).await;
    }
    let password = config.source_password()?;
    // Before anything is written, and held until this function returns.
    let _fence = fence_target(config)?;
    let pool = source_pool(config)?;
    let mut target = open_target(config)?;
    let checkpoint = target.load_checkpoint()?;

    let mut conn = source_conn(&pool, config).await?;
    let info = preflight::check_source(&mut conn, config, checkpoint.as_ref()).await?;
    for w in &info.warnings {
        tracing::warn!("{w}");
    }
    let plans = initial_plans(&mut conn, config).await?;
    drop(conn);
    // Bookkeeping first: columns newly replicated are recorded as to be copied before the
    // target gains them, so a crash in between cannot leave them empty and forgotten.
    target.prepare(&[])?;
    crate::schema_manager::reconcile_tables(target.as_mut(), &plans)?;
    let plans = hold_new_columns(config, target.as_mut(), plans)?;
    let tables: Vec<_> = plans.iter().map(|p| p.target.clone()).collect();
    crate::schema_manager::plan_column_copies(target.as_mut(), &plans)?;
    target.prepare(&tables)?;
    crate::schema_manager::record_start_readiness(target.as_mut(), &plans, config.backfill.enabled)?;
    let first_progress = target.load_backfill()?;
    tracing::info!(tables = tables.len(), "target tables ready");

    let checkpoint = match checkpoint {
        Some(cp) => Checkpoint {
            position: in_flavor(cp.position, &info)?,
            ..cp
        },
        None => {
            let position = start_position(config, &info)?;
            // Record the start at once: a restart before the first transaction must resume
            // here, not at a newer "current" position.
            let cp = Checkpoint {
                position,
                ..Checkpoint::default()
            };
            target.begin()?;
            target.commit(&cp)?;
            cp
        }
    };
    tracing::info!(position = %checkpoint.position, "starting replication");
    *options.progress.applied_position.lock().expect("progress lock") = checkpoint.position.clone();

    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let final_progress = options.progress.clone();
    // Tables whose existing rows are not (fully) copied yet.
    let copied: std::collections::HashMap<String, crate::target::BackfillProgress> =
        first_progress.into_iter().map(|p| (p.table.clone(), p)).collect();
    let jobs: Vec<BackfillJob> = if config.backfill.enabled {
        plans
            .iter()
            .filter_map(|plan| match copied.get(&plan.target.name) {
                Some(p) if p.done => None,
                Some(p) => Some(BackfillJob {
                    plan: plan.clone(),
                    last_key: p.last_key.clone(),
                    rows_copied: p.rows_copied,
                    fill_columns: p
                        .columns
                        .iter()
                        .filter_map(|name| plan.target.columns.iter().position(|c| &c.name == name))
                        .collect(),
                }),
                None => Some(BackfillJob {
                    plan: plan.clone(),
                    last_key: None,
                    rows_copied: 0,
                    fill_columns: Vec::new(),
                }),
            })
            .collect()
    } else {
        Vec::new()
    };
    let backfill_writers = if jobs.is_empty() { 0 } else { config.backfill_writers() };
    let mut applier = Applier::start(
        config,
        target,
        backfill_writers,
        rx,
        checkpoint.clone(),
        &options.progress,
    )?;

    // Two messages per table copied at once: a chunk waiting for the stream and the next
    // window's opening.
    let (backfill_tx, backfill_rx) = mpsc::channel(2 * config.backfill.parallel_tables);
    let has_jobs = !jobs.is_empty();
    let settings = crate::backfill::BackfillSettings {
        chunk_rows: config.backfill.chunk_rows,
        parallel_tables: config.backfill.parallel_tables,
        // Per table one chunk being read and one converted or waiting for its window, and
        // per backfill writer one being written and one queued.
        chunks_in_flight: 2 * (config.backfill.parallel_tables + config.backfill_writers()),
        max_lag: (config.backfill.max_lag_ms > 0).then(|| Duration::from_millis(config.backfill.max_lag_ms)),
        heartbeat_interval: Duration::from_millis(config.lag.interval_ms),
        flavor: info.flavor,
    };
    let backfill = crate::backfill::run_backfills(
        pool.clone(),
        jobs,
        settings,
        backfill_tx,
        options.progress.backfill.clone(),
        options.progress.lag.clone(),
    );
    let backfill = async move {
        backfill.await;
        Ok::<(), SourceError>(())
    };
    // Lag: heartbeats are written only here, by `run` (never by `check` or `status`).
    options
        .progress
        .lag
        .set_window(Duration::from_secs(config.lag.window_s));
    let (stop_heartbeat, heartbeat_stop) = tokio::sync::watch::channel(false);
    let heartbeat =
        tokio::spawn(crate::ops::lag::HeartbeatWriter::new(config).run(options.progress.lag.clone(), heartbeat_stop));
    let mut heartbeat = crate::ops::lag::AbortOnDrop(heartbeat);
    let mut reader = SourceReader::new(
        config,
        &password,
        SchemaTracker::new(table_filter(config)?, pool.clone(), plans)
            .fills_new_columns(config.backfill.enabled)
            .holds_new_columns(true),
        tx,
        options.connected,
        options.progress.clone(),
    );
    reader.backfill = has_jobs.then_some(backfill_rx);
    let start = checkpoint.clone();
    // Boxed rather than pinned on the stack, so that it can be dropped below.
    let mut source = Box::pin(async move { tokio::try_join!(reader.run(start), backfill).map(|_| ()) });
    let source_result = {
        let applier_gone = applier.gone();
        tokio::pin!(applier_gone);
        tokio::select! {
            r = &mut source => r,
            () = shutdown => {
                // A clean stop applies everything already written to the source when the stop
                // came, sluice's own last heartbeat included; without this, the heartbeat written
                // just before the stop would leave the checkpoint behind the source for good.
                stop_heartbeat.send_replace(true);
                tokio::select! {
                    r = &mut source => r,
                    () = &mut applier_gone => Ok(()),
                    () = drain_to_source_position(&pool, info.flavor, &mut heartbeat, &options.progress) => Ok(()),
                }
            }
            () = &mut applier_gone => Ok(()),
        }
    };
    drop(source);
    // The reader (and its sender) is dropped above; the applier drains and stops.
    let apply_result = applier.join().await;
    pool.disconnect().await.ok();
    log_stopped(&final_progress);
    match (source_result, apply_result) {
        (_, Err(e)) => Err(e.into()),
        (Err(e), Ok(())) => Err(e.into()),
        (Ok(()), Ok(())) => Ok(()),
    }
}

fn log_stopped(progress: &Progress) {
    tracing::info!(
        source_txns = progress.source_txns_applied.load(std::sync::atomic::Ordering::Relaxed),
        rows = progress.rows_applied.load(std::sync::atomic::Ordering::Relaxed),
        position = %progress.applied_position.lock().map(|p| p.to_string()).unwrap_or_default(),
        "stopped"
    );
}

/// The applier's thread and the signals of its end.
struct Applier {
    thread: std::thread::JoinHandle<Result<(), TargetError>>,
    /// Fires when the thread ends.
    done: oneshot::Receiver<()>,
    /// Notified when a writer fails, so that a failed target write stops the pipeline even
    /// while the source is idle (the reader would otherwise only notice on its next send).
    failed: Arc<tokio::sync::Notify>,
}

impl Applier {
    /// Opens the writers' (and the verifier's) target connections beside `target` and starts
    /// applying what `rx` brings from `start`.
    fn start(
        config: &Config,
        target: Box<dyn Target>,
        backfill_writers: usize,
        rx: mpsc::Receiver<crate::apply::ApplyMsg>,
        start: Checkpoint,
        progress: &Arc<Progress>,
    ) -> Result<Applier, RunError> {
        let policy = BatchPolicy {
            max_rows: config.apply.batch_max_rows,
            max_delay: Duration::from_millis(config.apply.batch_max_delay_ms),
            commit_order: config.apply.commit_order,
        };
        let mut targets: Vec<Box<dyn Target>> = vec![target];
        for _ in 1..config.writers() {
            targets.push(open_target(config)?);
        }
        let verifier = if config.verify.incremental {
            let policy = crate::verify::incremental::IncrementalPolicy {
                on_mismatch: config.verify.on_mismatch,
                max_rows_per_group: config.verify.max_rows_per_transaction.max(1),
            };
            Some((open_target(config)?, policy))
        } else {
            None
        };
        tracing::info!(
            writers = targets.len(),
            incremental_verification = verifier.is_some(),
            "applier ready"
        );
        let mut backfill_targets: Vec<Box<dyn Target>> = Vec::new();
        for _ in 0..backfill_writers {
            backfill_targets.push(open_target(config)?);
        }
        let (done_tx, done) = oneshot::channel::<()>();
        let failed = Arc::new(tokio::sync::Notify::new());
        let writer_failed = failed.clone();
        let progress = progress.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-apply".into())
            .spawn(move || {
                let connections = crate::apply::Connections {
                    writers: targets,
                    backfill_writers: backfill_targets,
                    verifier,
                };
                let result = run_applier(connections, rx, policy, start, &progress, &writer_failed);
                let _ = done_tx.send(());
                result
            })
            .expect("spawn applier thread");
        Ok(Applier { thread, done, failed })
    }

    /// Completes once the applier has ended or a writer failed.
    async fn gone(&mut self) {
        tokio::select! {
            _ = &mut self.done => {}
            () = self.failed.notified() => {}
        }
    }

    /// Waits for the thread (its sender must be dropped first: it drains and stops).
    async fn join(self) -> Result<(), TargetError> {
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("join applier")
            .unwrap_or_else(|_| Err(TargetError::Other("the applier thread panicked".into())))
    }
}

/// `sluice run` of an edge behind the fan-out log (`[source] kind = "nats"`): the log's entries
/// from the target's checkpoint on, into the same applier (atomic source transactions,
/// parallel writers, the checkpoint with the rows, incremental verification of what the log
/// says). Tables are created at the edge as the log first names them.
async fn run_from_log(
    config: &Config,
    log_config: &crate::config::NatsLogConfig,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let _fence = fence_target(config)?;
    let mut target = open_target(config)?;
    let checkpoint = target.load_checkpoint()?;
    let log = NatsLog::connect(log_config, false).await?;
    target.prepare(&[])?;
    let checkpoint = match checkpoint {
        Some(cp) => cp,
        None => {
            // A fresh edge starts at the log's beginning.
            let cp = Checkpoint::default();
            target.begin()?;
            target.commit(&cp)?;
            cp
        }
    };
    tracing::info!(position = %checkpoint.position, stream = %log_config.stream, "starting replication from the log");
    *options.progress.applied_position.lock().expect("progress lock") = checkpoint.position.clone();
    options
        .progress
        .lag
        .set_window(Duration::from_secs(config.lag.window_s));
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let mut applier = Applier::start(config, target, 0, rx, checkpoint.clone(), &options.progress)?;
    let mut source = Box::pin(crate::log::consume::consume(log, checkpoint, tx, options.connected));
    let source_result = {
        let applier_gone = applier.gone();
        tokio::pin!(applier_gone);
        tokio::select! {
            r = &mut source => r,
            // A clean stop: the applier commits the whole transactions it has, and the next
            // start reads on from its checkpoint.
            () = shutdown => Ok(()),
            () = &mut applier_gone => Ok(()),
        }
    };
    drop(source);
    let apply_result = applier.join().await;
    log_stopped(&options.progress);
    match (source_result, apply_result) {
        (_, Err(e)) => Err(e.into()),
        (Err(e), Ok(())) => Err(e.into()),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// `sluice check` of an edge behind the fan-out log: the stream exists and can be read. Returns
/// its number of entries and its last offset.
pub async fn check_log(log_config: &crate::config::NatsLogConfig) -> Result<(u64, u64), RunError> {
    Ok(NatsLog::connect(log_config, false).await?.entries().await?)
}

/// `sluice publish`: reads the binlog as `run` does (same filters, transforms, schema at
/// position, heartbeats) and appends each source transaction to the fan-out log named by
/// `[target] kind = "nats"`, resuming after the last transaction the log holds.
pub async fn publish(config: &Config, options: RunOptions, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let TargetConfig::Nats(log_config) = &config.target else {
        return Err(ConfigError::Invalid {
            key: "target.kind".into(),
            message: "`sluice publish` appends to a fan-out log: set [target] kind = \"nats\" with url and stream \
                      (docs/fan-out.md)"
                .into(),
        }
        .into());
    };
    if config.backfill.enabled {
        return Err(ConfigError::Invalid {
            key: "backfill.enabled".into(),
            message: "`sluice publish` does not copy existing rows into the log: set [backfill] enabled = false, and \
                      fill edges as docs/fan-out.md describes (\"Existing rows\")"
                .into(),
        }
        .into());
    }
    let password = config.source_password()?;
    let pool = source_pool(config)?;
    let log = NatsLog::connect(log_config, true).await?;
    let resume = log.resume_point().await?;
    let mut conn = source_conn(&pool, config).await?;
    let resume_checkpoint = resume.as_ref().map(|r| Checkpoint {
        position: r.position.clone(),
        ..Checkpoint::default()
    });
    let info = preflight::check_source(&mut conn, config, resume_checkpoint.as_ref()).await?;
    for w in &info.warnings {
        tracing::warn!("{w}");
    }
    let plans = initial_plans(&mut conn, config).await?;
    drop(conn);
    let (position, parts_held) = match resume {
        Some(r) => (r.position, r.partial),
        None => (start_position(config, &info)?, None),
    };
    tracing::info!(%position, stream = %log_config.stream, "publishing");
    *options.progress.applied_position.lock().expect("progress lock") = position.clone();
    options
        .progress
        .lag
        .set_window(Duration::from_secs(config.lag.window_s));
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (stop_heartbeat, heartbeat_stop) = tokio::sync::watch::channel(false);
    let heartbeat =
        tokio::spawn(crate::ops::lag::HeartbeatWriter::new(config).run(options.progress.lag.clone(), heartbeat_stop));
    let mut heartbeat = crate::ops::lag::AbortOnDrop(heartbeat);
    let reader = SourceReader::new(
        config,
        &password,
        SchemaTracker::new(table_filter(config)?, pool.clone(), plans),
        tx,
        options.connected,
        options.progress.clone(),
    );
    let publisher = crate::log::publish::Publisher::new(log, position.clone(), parts_held, options.progress.clone());
    let mut source = Box::pin(reader.run(Checkpoint {
        position,
        ..Checkpoint::default()
    }));
    let mut sink = Box::pin(publisher.run(rx));
    let result: Result<(), RunError> = tokio::select! {
        r = &mut source => r.map_err(Into::into),
        r = &mut sink => r.map_err(Into::into),
        () = shutdown => {
            // As `run`: append what the source holds when the stop came, then stop.
            stop_heartbeat.send_replace(true);
            tokio::select! {
                r = &mut source => r.map_err(Into::into),
                r = &mut sink => r.map_err(Into::into),
                () = drain_to_source_position(&pool, info.flavor, &mut heartbeat, &options.progress) => Ok(()),
            }
        }
    };
    drop(source);
    drop(sink);
    pool.disconnect().await.ok();
    log_stopped(&options.progress);
    result
}
