//! The `sluice` command line.

mod dump;
mod progress;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice_engine::apply::Progress;
use sluice_engine::config::Config;
use sluice_engine::ops::status::{LiveStatus, Liveness, StatusReport};
use sluice_engine::pipeline::{self, RunOptions};
use tokio::signal::unix::{signal, SignalKind};

/// Pauses before running again after the target went away, doubling up to the maximum.
const TARGET_BACKOFF_START: std::time::Duration = std::time::Duration::from_millis(500);
const TARGET_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(15);
#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Replicate a filtered, scrubbed slice of MariaDB/MySQL into edge databases",
    after_help = "\
Environment:
  SLUICE_CONFIG  the config file, when -c/--config is not given
  SLUICE_LOG     log filter on stderr (default \"info\"), e.g. \"debug\", \"trace\",
                 \"info,sluice_engine::apply=debug\"

Exit status: 0 success; 1 error (the last line says what is wrong and what to do);
  verify also: 3 some table not ready yet, 4 differences found.

Every config key, its default and an example: docs/config.md in sluice's repository
(README.md there has a walk-through)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the config and the source, then replicate until stopped (Ctrl-C / SIGTERM).
    /// SIGHUP reloads the config: complete transactions are committed, then replication goes
    /// on with the new table rules (tables added are copied while the others stream).
    Run {
        /// The config file (TOML; see docs/config.md).
        #[arg(short, long, env = "SLUICE_CONFIG")]
        config: PathBuf,
    },
    /// Read the binlog as `run` does (same filters and transforms) and append each source
    /// transaction to the fan-out log the config's `[target] kind = "nats"` names, until
    /// stopped; edges read it with `[source] kind = "nats"` (docs/fan-out.md).
    Publish {
        /// The config file (TOML; see docs/config.md and docs/fan-out.md).
        #[arg(short, long, env = "SLUICE_CONFIG")]
        config: PathBuf,
    },
    /// Validate the config (no network), then the source's settings, grants and binlog retention.
    Check {
        /// The config file (TOML; see docs/config.md).
        #[arg(short, long, env = "SLUICE_CONFIG")]
        config: PathBuf,
    },
    /// Print what `run` with this config would do to the target at its start (tables
    /// created, recreated or left stale, columns added or held, copies), without doing it.
    /// Reads the source's catalog and the target; writes nothing.
    Plan {
        /// The config file (TOML; see docs/config.md).
        #[arg(short, long, env = "SLUICE_CONFIG")]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show the checkpoint, the replicated tables and the lag.
    Status {
        /// The config file (TOML; see docs/config.md).
        #[arg(short, long, env = "SLUICE_CONFIG")]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Compare every replicated table (or --table) of the target with the source, through the
    /// same filters and transforms, while replication runs. Exit status: 0 all equal (or
    /// repaired), 3 some table not ready (backfill still copying), 4 differences found,
    /// 1 error.
    Verify {
        /// The config file (TOML; see docs/config.md).
        #[arg(short, long, env = "SLUICE_CONFIG")]
        config: PathBuf,
        /// Only tables whose target name or source `schema.table` matches this glob.
        #[arg(long)]
        table: Option<String>,
        /// Rewrite differing rows from the source through the target's normal write path.
        #[arg(long)]
        repair: bool,
        /// Source rows per chunk.
        #[arg(long, default_value_t = sluice_engine::verify::full::DEFAULT_CHUNK_ROWS)]
        chunk_rows: usize,
        /// How many times a differing key is re-read on both sides before it counts.
        #[arg(long, default_value_t = 5)]
        rechecks: u32,
        /// Seconds to wait for the target to catch up with a source position.
        #[arg(long, default_value_t = 120)]
        catch_up_timeout: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Read binlogs.
    Binlog {
        #[command(subcommand)]
        command: BinlogCommand,
    },
}

#[derive(Subcommand)]
enum BinlogCommand {
    /// Print events as JSON lines (one event per line, rows decoded), from a file or a server.
    Dump {
        /// A binlog file to read.
        file: Option<PathBuf>,
        /// Read from the source in this config instead of a file (SLUICE_CONFIG is not used
        /// here: a file argument or -c must be given).
        #[arg(short, long, conflicts_with = "file")]
        config: Option<PathBuf>,
        /// With --config: the GTID position (MariaDB) or GTID set (MySQL) to start after (default: the source's current position).
        #[arg(long, requires = "config")]
        from: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
        /// With --config: show every table's rows with every column as the source holds it.
        /// Without it, rows are shown as the config sends them to the target (selected tables
        /// and columns, row filter and transforms applied), so no scrubbed value is printed.
        #[arg(long, requires = "config")]
        raw: bool,
    },
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(execute(cli.command));
    // A read stuck on a frozen server (abandoned after its deadline) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Writes `text` to stdout; a reader that has gone (`sluice status | head -1`) ends the
/// output quietly instead of a panic.
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other.context("writing to stdout")?),
    }
}

async fn execute(command: Command) -> anyhow::Result<ExitCode> {
    if let Command::Verify {
        config,
        table,
        repair,
        chunk_rows,
        rechecks,
        catch_up_timeout,
        json,
    } = command
    {
        let config = Config::load(&config)?;
        let options = sluice_engine::verify::full::VerifyOptions {
            table,
            chunk_rows,
            repair,
            rechecks,
            catch_up_timeout: Duration::from_secs(catch_up_timeout),
            progress: Default::default(),
        };
        return verify::run(&config, &options, json).await;
    }
    execute_other(command).await.map(|()| ExitCode::SUCCESS)
}

async fn execute_other(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Check { config } => {
            let config = Config::load(&config)?;
            config.check_local_resources()?;
            if let Some(log) = config.log_source() {
                println!("config: ok (an edge of the fan-out log)");
                let (entries, last) = pipeline::check_log(&log).await?;
                println!(
                    "source: ok (NATS stream {}: {entries} entries, last offset {last})",
                    log.stream
                );
                return Ok(());
            }
            println!("config: ok ({} table rule(s))", config.tables.len());
            let (info, plans) = pipeline::check(&config).await?;
            println!(
                "source: ok ({}, binlog position {})",
                info.version, info.binlog_position
            );
            for w in &info.warnings {
                println!("warning: {w}");
            }
            for plan in &plans {
                println!(
                    "table: {} -> {} ({} of {} columns)",
                    plan.target.source_name,
                    plan.target.name,
                    plan.target.columns.len(),
                    plan.source.columns.len()
                );
            }
            if plans.is_empty() {
                println!("warning: no existing source table matches the config's rules yet");
            }
            Ok(())
        }
        Command::Run { config: path } => {
            let mut config = Arc::new(Config::load(&path)?);
            config.check_local_resources()?;
            let progress = Arc::new(Progress::default());
            let live = LiveStatus::new(config.clone(), progress.clone());
            // Bound before anything else starts, so a taken port fails the start at once. It
            // serves the whole process: a SIGHUP reload keeps the first config's address.
            let metrics = match config.metrics.listen_addr()? {
                Some(addr) => Some(sluice_engine::ops::metrics::serve(addr, live.clone()).await?),
                None => None,
            };
            let reporter = tokio::spawn(report_progress(progress.clone()));
            // Live bars for copies of existing rows, on a terminal only (logs stay plain).
            let bars = progress::BackfillBars::start(progress.backfill.clone());
            let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
            // The key this process hashes with, for good: see `validated_reload`.
            let hmac_key = hmac_key_digest(&config);
            let mut target_backoff = TARGET_BACKOFF_START;
            let mut unreachable_since: Option<std::time::SystemTime> = None;
            let result = loop {
                // Filled by a SIGHUP whose config is valid: this run then stops cleanly and
                // the next one goes on with it. An invalid one stops nothing.
                let next_config: Arc<std::sync::Mutex<Option<Config>>> = Arc::default();
                let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let stop = {
                    let next_config = next_config.clone();
                    let stopping = stopping.clone();
                    let hangup = &mut hangup;
                    let (running, path, hmac_key) = (&config, &path, &hmac_key);
                    async move {
                        let shutdown = shutdown_signal();
                        tokio::pin!(shutdown);
                        loop {
                            tokio::select! {
                                () = &mut shutdown => {
                                    stopping.store(true, Ordering::SeqCst);
                                    return;
                                }
                                _ = hangup.recv() => match validated_reload(running, path, hmac_key) {
                                    Ok(new) => {
                                        tracing::info!(
                                            rules = new.tables.len(),
                                            "SIGHUP: config reloaded; committing complete transactions, then going on with the new config"
                                        );
                                        *next_config.lock().expect("not poisoned") = Some(new);
                                        return;
                                    }
                                    Err(why) => tracing::error!(
                                        "SIGHUP: config not reloaded: {why}; replication goes on untouched with the running config"
                                    ),
                                },
                            }
                        }
                    }
                };
                // Once this run streams, the target is back (if it was away).
                let (connected, streaming) = tokio::sync::oneshot::channel();
                let back = {
                    let progress = progress.clone();
                    tokio::spawn(async move {
                        if streaming.await.is_ok() {
                            progress.health.set_target_unreachable(None);
                        }
                    })
                };
                let options = RunOptions {
                    progress: progress.clone(),
                    connected: Some(connected),
                };
                let started = std::time::Instant::now();
                // Every run (a reload's, or one after a target outage) reads the key file again.
                if hmac_key_digest(&config) != hmac_key {
                    break Err(sluice_engine::config::ConfigError::Invalid {
                        key: "transforms.hmac_key_file".into(),
                        message:
                            "the HMAC key's contents changed since sluice started; hashed columns would no longer \
                                  match the rows already copied. Put the old key back, or rebuild the target with the \
                                  new one"
                                .into(),
                    }
                    .into());
                }
                let result = pipeline::run(&config, options, stop).await;
                back.abort();
                if progress.health.target_unreachable_since().is_none() {
                    // Reachable again since the last failure: a new outage has a new start.
                    unreachable_since = None;
                }
                if let Err(e) = &result {
                    if e.runs_again() && !stopping.load(Ordering::SeqCst) {
                        tracing::info!("{e}");
                        if let Some(next) = next_config.lock().expect("not poisoned").take() {
                            config = Arc::new(next);
                            live.set_config(config.clone());
                        }
                        continue;
                    }
                    if e.runs_again() {
                        tracing::info!("{e}; stopped as asked: the next start goes on from past the swap");
                        break Ok(());
                    }
                    if e.kind() == sluice_engine::pipeline::ErrorKind::Transient && stopping.load(Ordering::SeqCst) {
                        // Asked to stop while the target is away: what is not committed there
                        // is read again from the target's checkpoint at the next start.
                        tracing::warn!("{e}; stopped as asked: the next start resumes from the target's checkpoint");
                        break Ok(());
                    }
                    if e.kind() == sluice_engine::pipeline::ErrorKind::Transient {
                        // A run that went well for a while starts the backoff afresh.
                        if started.elapsed() > TARGET_BACKOFF_MAX * 2 {
                            target_backoff = TARGET_BACKOFF_START;
                        }
                        let since = *unreachable_since.get_or_insert_with(std::time::SystemTime::now);
                        progress.health.set_target_unreachable(Some(since));
                        tracing::warn!(
                            retry_in_ms = target_backoff.as_millis() as u64,
                            unreachable_since_unix =
                                since.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                            "{e}; running again from the target's checkpoint once it is back"
                        );
                        tokio::select! {
                            () = shutdown_signal() => break Ok(()),
                            () = tokio::time::sleep(target_backoff) => {}
                        }
                        target_backoff = (target_backoff * 2).min(TARGET_BACKOFF_MAX);
                        continue;
                    }
                }
                unreachable_since = None;
                progress.health.set_target_unreachable(None);
                let next = next_config.lock().expect("not poisoned").take();
                match (result, next) {
                    (Ok(()), Some(next)) => {
                        config = Arc::new(next);
                        live.set_config(config.clone());
                    }
                    (result, _) => break result,
                }
            };
            reporter.abort();
            drop(bars);
            drop(metrics);
            // `main` prints the error once, as the last line.
            Ok(result?)
        }
        Command::Publish { config: path } => {
            let config = Config::load(&path)?;
            config.check_local_resources()?;
            let progress = Arc::new(Progress::default());
            let reporter = tokio::spawn(report_progress(progress.clone()));
            let result = loop {
                let options = RunOptions {
                    progress: progress.clone(),
                    connected: None,
                };
                match pipeline::publish(&config, options, shutdown_signal()).await {
                    // A schema change the reader follows by starting again (as `run` does).
                    Err(e) if e.runs_again() => tracing::info!("{e}"),
                    other => break other,
                }
            };
            reporter.abort();
            Ok(result?)
        }
        Command::Plan { config, json } => {
            let config = Config::load(&config)?;
            let tables = sluice_engine::ops::plan::plan(&config).await?;
            match json {
                true => print_out(&(serde_json::to_string_pretty(&tables).expect("plain data") + "\n")),
                false => print_out(&sluice_engine::ops::plan::to_text(&tables)),
            }
        }
        Command::Status { config, json } => {
            let config = Arc::new(Config::load(&config)?);
            let report = sluice_engine::ops::status::status(config).await?;
            match json {
                true => print_out(&(sluice_engine::ops::status::to_json(&report) + "\n")),
                false => print_out(&status_text(&report)),
            }
        }
        Command::Binlog {
            command:
                BinlogCommand::Dump {
                    file,
                    config,
                    from,
                    limit,
                    raw,
                },
        } => match (file, config) {
            (Some(file), None) => dump::dump_file(&file, limit),
            (None, Some(config)) => {
                let config = Config::load(&config)?;
                dump::dump_server(&config, from.as_deref(), limit, raw).await
            }
            _ => anyhow::bail!("give a binlog FILE or --config to read from the source"),
        },
        Command::Verify { .. } => unreachable!("handled in execute"),
    }
}

/// A digest of the HMAC key the config names, as it reads now (`None` without one): sluice
/// keeps this, not the key, to notice a key file whose contents changed.
fn hmac_key_digest(config: &Config) -> Option<[u8; 32]> {
    use sha2::Digest;
    let key = config.hmac_key().ok().flatten()?;
    Some(sha2::Sha256::digest(key.expose().as_bytes()).into())
}

/// The config file as it is now, if it is valid, can be used (secrets readable) and changes
/// only what a reload may change; otherwise why not.
fn validated_reload(running: &Config, path: &std::path::Path, hmac_key: &Option<[u8; 32]>) -> Result<Config, String> {
    let new = Config::load(path).map_err(|e| e.to_string())?;
    new.check_local_resources().map_err(|e| e.to_string())?;
    // The same key file or variable may hold another key now: every hmac value would
    // change while the rows already at the target keep the old ones.
    if hmac_key_digest(&new) != *hmac_key {
        return Err(
            "the HMAC key changed; hashed columns would no longer match the rows already copied. \
                    Restart sluice with the new key and rebuild the target (a full copy) to change it"
                .into(),
        );
    }
    match running.reload_refusal(&new) {
        None => Ok(new),
        Some(why) => Err(why.to_string()),
    }
}

/// `sluice status` as text.
fn status_text(report: &StatusReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let age = |s: Option<u64>| {
        s.map_or("unknown".to_owned(), |s| {
            format!("{} ago", progress::format_eta(Duration::from_secs(s)))
        })
    };
    let _ = writeln!(out, "target:     {}", report.target);
    let _ = match (report.liveness, &report.writer, &report.target_error) {
        (Liveness::Running, Some(w), _) => writeln!(out, "state:      running ({w})"),
        (Liveness::Unreachable, _, Some(e)) => writeln!(out, "state:      unknown: target unreachable: {e}"),
        (Liveness::Stopped, ..) => writeln!(out, "state:      stopped (no sluice run writes this target)"),
        (l, ..) => writeln!(out, "state:      {l:?}"),
    };
    let _ = writeln!(
        out,
        "checkpoint: {}",
        report.checkpoint.as_deref().unwrap_or(match report.liveness {
            Liveness::Unreachable => "(unknown: target unreachable)",
            _ => "(none: never started)",
        })
    );
    if !report.applied_beyond.is_empty() {
        let _ = writeln!(out, "applied beyond it: {}", report.applied_beyond.join(","));
    }
    if report.checkpoint.is_some() {
        let _ = writeln!(
            out,
            "last commit: {} (source commit time of the newest applied transaction); last heartbeat written: {}",
            age(report.last_commit_age_s),
            age(report.last_heartbeat_age_s)
        );
    }
    if let Some(verified) = &report.verified {
        let _ = writeln!(
            out,
            "verified:   {verified} (read back and checked; {} mismatching row(s){})",
            report.verify_mismatches,
            if report.verify_unchecked_txns > 0 {
                format!(
                    "; {} stretch(es) not read back: restarts after a crash or transactions too large to read \
                     whole, run `sluice verify`",
                    report.verify_unchecked_txns
                )
            } else {
                String::new()
            }
        );
    }
    match (&report.source_position, &report.source_error) {
        (Some(p), _) => {
            let _ = writeln!(out, "source:     {p}");
        }
        (None, Some(e)) => {
            let _ = writeln!(out, "source:     unreachable: {e}");
        }
        _ => {}
    }
    let ms = |us: u64| us as f64 / 1000.0;
    match (report.at_source_position, report.caught_up, &report.lag) {
        (Some(false), ..) => {
            let _ = writeln!(out, "lag:        behind ({}s)", report.lag_seconds.unwrap_or(0));
        }
        (Some(true), Some(true), _) => {
            let _ = writeln!(out, "lag:        caught up");
        }
        (Some(true), _, Some(lag)) => {
            let _ = writeln!(
                out,
                "lag:        at the source's position now, but not caught up over the last {:.0}s: p99 {:.1} ms",
                lag.window_ms as f64 / 1000.0,
                ms(lag.p99_us)
            );
        }
        _ => {}
    }
    if let Some(lag) = &report.lag {
        let _ = writeln!(
            out,
            "lag p50/p99/p99.9: {:.1} / {:.1} / {:.1} ms (max {:.1} ms; {} samples over {:.0}s; from {}{})",
            ms(lag.p50_us),
            ms(lag.p99_us),
            ms(lag.p999_us),
            ms(lag.max_us),
            lag.samples,
            lag.window_ms as f64 / 1000.0,
            lag.source,
            if lag.source == "heartbeat" {
                ""
            } else {
                ", 1 s resolution: no heartbeat grant?"
            }
        );
    }
    for t in &report.tables {
        let mut backfill = format!("backfill {}, {} source rows read", t.backfill, t.backfill_rows_copied);
        if t.backfill != "ready" && t.backfill_rows_estimate > 0 {
            backfill.push_str(&format!(" of ~{}", t.backfill_rows_estimate));
        }
        backfill.push_str(" (before the row filter)");
        if !t.backfill_columns.is_empty() {
            backfill.push_str(&format!(" (columns not ready: {})", t.backfill_columns.join(", ")));
        }
        if t.backfill_rows_per_s > 0 && t.backfill != "ready" {
            backfill.push_str(&format!(", {} rows/s", t.backfill_rows_per_s));
        }
        if let Some(eta) = t.backfill_eta_s {
            backfill.push_str(&format!(", ETA {}", progress::format_eta(Duration::from_secs(eta))));
        }
        if let Some(e) = &t.backfill_error {
            backfill.push_str(&format!("; failed: {e} (restart sluice to retry)"));
        }
        let _ = writeln!(
            out,
            "table:      {} <- {} ({} rows; {backfill})",
            t.target,
            if t.source.is_empty() { "?" } else { &t.source },
            t.rows.map_or("?".to_owned(), |r| r.to_string()),
        );
        if let Some(state) = &t.readiness {
            // Only the columns whose state differs from the table's: the rest follow it.
            let odd: Vec<String> = t
                .columns
                .iter()
                .filter(|c| &c.state != state)
                .map(|c| format!("{} {}", c.name, c.state))
                .collect();
            let _ = writeln!(
                out,
                "  readiness: {state}{}",
                if odd.is_empty() {
                    String::new()
                } else {
                    format!("; columns: {}", odd.join(", "))
                }
            );
        }
        if !t.held_columns.is_empty() {
            let _ = writeln!(
                out,
                "  held:      {} (not replicated: name them in the rule's release_columns to replicate them)",
                t.held_columns.join(", ")
            );
        }
    }
    out
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping: committing complete transactions");
}

async fn report_progress(progress: Arc<Progress>) {
    let mut last_rows = 0;
    let mut last_backfilled = 0;
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let rows = progress.rows_applied.load(Ordering::Relaxed);
        let txns = progress.source_txns_applied.load(Ordering::Relaxed);
        let position = progress
            .applied_position
            .lock()
            .map(|p| p.to_string())
            .unwrap_or_default();
        // Rows copied by the backfill (committed at the target, this run and earlier ones)
        // beside the stream's; copies still going are counted too.
        let copies = progress.backfill.snapshot();
        let backfilled: u64 = copies.iter().map(|(_, c)| c.rows_copied).sum();
        let copying = copies
            .iter()
            .filter(|(_, c)| {
                matches!(
                    c.state,
                    sluice_engine::backfill::CopyState::Copying
                        | sluice_engine::backfill::CopyState::Throttled
                        | sluice_engine::backfill::CopyState::Pending
                )
            })
            .count();
        tracing::info!(
            rows_per_s = (rows - last_rows) / 5,
            rows,
            txns,
            backfilled_rows = backfilled,
            backfilled_per_s = backfilled.saturating_sub(last_backfilled) / 5,
            tables_copying = copying,
            position = %position,
            "progress"
        );
        last_rows = rows;
        last_backfilled = backfilled;
    }
}
